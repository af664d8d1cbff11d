/**
 * File handles (FUSE export support): name_to_handle_at / open_by_handle_at
 * on a real mount of a replica-3 volume, while the kernel knows the inodes,
 * after it dropped them (drop_caches: LOOKUP of "." by node id), after a
 * remount (a new FUSE connection that never saw them; a directory is
 * reconnected through LOOKUP of ".."), and ESTALE for a removed file and a
 * forged handle.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { run, startCluster } from '../src/cluster.js';

const tool = fileURLToPath(new URL('../../cluster/falloc-tool.py', import.meta.url));
const py = (...args: string[]) => run('python3', [tool, ...args]).stdout.trim();
const hex = (s: string) => Buffer.from(s).toString('hex');

t.test('name_to_handle_at / open_by_handle_at survive the kernel forgetting the inode', async (t) => {
  const c = await startCluster(t, { pgs: 16, replicas: 3 });
  mkdirSync(c.path('d', 'e', 'f'), { recursive: true });
  writeFileSync(c.path('d', 'e', 'file'), 'hello handles');
  writeFileSync(c.path('d', 'e', 'f', 'g'), 'deep');
  const big = Buffer.alloc(3 * 1024 * 1024, 7);
  writeFileSync(c.path('big'), big);
  const handles = {
    file: py('handle', c.path('d', 'e', 'file')),
    dir: py('handle', c.path('d', 'e')),
    deep: py('handle', c.path('d', 'e', 'f')),
    big: py('handle', c.path('big')),
  };
  for (const [k, h] of Object.entries(handles)) t.match(h, /^\d+:[0-9a-f]+$/, `a handle for ${k}`);

  const check = (when: string) => {
    t.equal(
      py('openh', c.mountpoint, handles.file),
      hex('hello handles'),
      `${when}: the file opens by handle`,
    );
    t.equal(py('openh', c.mountpoint, handles.dir), 'f file', `${when}: the directory opens by handle`);
    t.equal(py('openh', c.mountpoint, handles.deep), 'g', `${when}: a nested directory too`);
    t.equal(
      py('openh', c.mountpoint, handles.big),
      big.subarray(0, 64).toString('hex'),
      `${when}: a block file`,
    );
  };
  check('cached');
  run('sync', []);
  writeFileSync('/proc/sys/vm/drop_caches', '2');
  check('after drop_caches');
  await c.unmount();
  await c.mount();
  check('after a remount');

  rmSync(c.path('d', 'e', 'file'));
  t.equal(py('openh', c.mountpoint, handles.file), 'ESTALE', 'a removed file: ESTALE');
  // A handle naming an inode of a PG the volume does not have, and one never handed out.
  const [type, raw] = handles.file.split(':') as [string, string];
  const forged = (ino: bigint) => {
    // fuse_encode_fh: u32 words, the node id's high half first, then its low half, then the generation.
    const b = Buffer.from(raw, 'hex');
    b.writeUInt32LE(Number(ino >> 32n), 0);
    b.writeUInt32LE(Number(ino & 0xffffffffn), 4);
    return `${type}:${b.toString('hex')}`;
  };
  t.equal(py('openh', c.mountpoint, forged(0xfff0n << 48n)), 'ESTALE', 'an inode of no PG: ESTALE');
  t.equal(py('openh', c.mountpoint, forged((1n << 48n) | 0xfffffn)), 'ESTALE', 'an inode never made: ESTALE');
});
