/**
 * Restart: a tree written through the mount survives stopping every brick
 * (SIGTERM) and starting them again, with every attribute (mode, size, mtime
 * in ns, nlink, inode number) and every byte; an operation issued while the
 * bricks are down completes once they are back; and it all survives an
 * unmount and a fresh mount.
 */
import { createHash } from 'node:crypto';
import {
  chmodSync,
  linkSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { ok, runAsync, startCluster, type Cluster } from '../src/cluster.js';

interface Snap {
  ino: bigint;
  mode: bigint;
  size: bigint;
  mtimeNs: bigint;
  nlink: bigint;
  uid: bigint;
  gid: bigint;
  sha?: string;
  target?: string;
}

function content(i: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let k = 0; k < size; k++) b[k] = (k * 2654435761 + i * 7 + (k >> 10)) & 0xff;
  return b;
}

function snapshot(root: string): Map<string, Snap> {
  const out = new Map<string, Snap>();
  const visit = (rel: string) => {
    const p = join(root, rel);
    const st = lstatSync(p, { bigint: true });
    const s: Snap = {
      ino: st.ino,
      mode: st.mode,
      size: st.isDirectory() ? 0n : st.size,
      mtimeNs: st.mtimeNs,
      nlink: st.nlink,
      uid: st.uid,
      gid: st.gid,
    };
    if (st.isFile()) s.sha = createHash('sha256').update(readFileSync(p)).digest('hex');
    if (st.isSymbolicLink()) s.target = readlinkSync(p);
    out.set(rel || '.', s);
    if (st.isDirectory()) for (const n of readdirSync(p).sort()) visit(rel ? join(rel, n) : n);
  };
  visit('');
  return out;
}

function compare(t: Test, got: Map<string, Snap>, want: Map<string, Snap>, when: string): void {
  t.same([...got.keys()].sort(), [...want.keys()].sort(), `${when}: the same entries`);
  const bad: string[] = [];
  for (const [k, w] of want) {
    const g = got.get(k);
    if (!g) continue;
    for (const f of Object.keys(w) as (keyof Snap)[]) {
      if (String(g[f]) !== String(w[f])) bad.push(`${k}.${f}: ${String(g[f])} != ${String(w[f])}`);
    }
  }
  t.same(bad.slice(0, 20), [], `${when}: every attribute and byte`);
}

function writeTree(c: Cluster): void {
  const root = c.path('tree');
  mkdirSync(root);
  const sizes = [0, 1, 100, 4096, 4097, 70_000, 1024 * 1024 + 1, 2 * 1024 * 1024 + 123];
  for (let d = 0; d < 6; d++) {
    const dir = join(root, `dir${d}`);
    mkdirSync(dir);
    mkdirSync(join(dir, 'sub'));
    // Multi-block files in two directories only (they cost the most to write).
    sizes.forEach((size, i) =>
      writeFileSync(join(dir, `f${i}`), content(d * 100 + i, d < 2 ? size : size % 65536)),
    );
  }
  chmodSync(join(root, 'dir0', 'f1'), 0o600);
  chmodSync(join(root, 'dir0', 'f2'), 0o4755);
  chmodSync(join(root, 'dir1'), 0o1777);
  symlinkSync('../dir0/f3', join(root, 'dir1', 'link'));
  linkSync(join(root, 'dir2', 'f2'), join(root, 'dir3', 'hard'));
  ok('mkfifo', [join(root, 'dir4', 'fifo')]);
  // mtimes with nanoseconds, set explicitly.
  ok('touch', ['-m', '-d', '2001-02-03 04:05:06.123456789', join(root, 'dir5', 'f6')]);
  ok('touch', ['-h', '-m', '-d', '1999-12-31 23:59:59.000000001', join(root, 'dir1', 'link')]);
  ok('sync', ['-f', root]);
}

t.test('stop and restart every brick, then remount', async (t) => {
  const c = await startCluster(t);
  writeTree(c);
  const before = snapshot(c.path('tree'));
  t.equal(
    lstatSync(c.path('tree', 'dir5', 'f6'), { bigint: true }).mtimeNs % 1_000_000_000n,
    123456789n,
    'ns mtime set',
  );
  t.equal(before.get('dir2/f2')!.nlink, 2n, 'hard link counted');

  for (const b of c.bricks) await b.stop();
  for (const b of c.bricks) t.notOk(b.alive(), `brick${b.index} stopped`);
  // Past the attribute and entry TTLs, so the kernel must ask the (absent) bricks.
  await new Promise((r) => setTimeout(r, 1500));
  const pending = runAsync(
    'sh',
    ['-c', `cat ${c.path('tree', 'dir1', 'f7')} | sha256sum; stat -c %s ${c.path('tree', 'dir0', 'f6')}`],
    {
      timeoutMs: 90_000,
    },
  );
  await new Promise((r) => setTimeout(r, 1000));
  t.equal(pending.child.exitCode, null, 'a read waits while the bricks are down');

  for (const b of c.bricks) await b.restart();
  const p = await pending.done;
  t.equal(p.status, 0, `the read issued while the bricks were down completed ${p.stderr}`);
  t.equal(p.stdout.split(' ')[0], before.get('dir1/f7')!.sha, 'with the right content');
  t.match(p.stdout, new RegExp(`\\n${1024 * 1024 + 1}\\n$`), 'and the right size');
  compare(t, snapshot(c.path('tree')), before, 'after restarting the bricks');

  await c.unmount();
  await c.mount();
  compare(t, snapshot(c.path('tree')), before, 'after remounting');

  // Still writable after all that.
  writeFileSync(c.path('tree', 'after'), 'written after the restart');
  t.equal(readFileSync(c.path('tree', 'after'), 'utf8'), 'written after the restart');
});
