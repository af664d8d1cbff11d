/**
 * copy_file_range on a real mount of a replica-3 volume: the bricks copy
 * (the client process reads next to none of the bytes), aligned and
 * unaligned ranges across blocks, into the middle of a file, past the
 * source's end (short count), from a sparse file, inline files (the kernel
 * copies them itself), the same file; `cp` uses it. Prints cp against a
 * read+write copy through the mount (DUNIX_COPY_MIB, default 128).
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { run, startCluster, type Cluster } from '../src/cluster.js';

const MiB = 1024 * 1024;
const tool = fileURLToPath(new URL('../../cluster/falloc-tool.py', import.meta.url));
const copy = (src: string, dst: string, offIn: number, offOut: number, len: number) =>
  JSON.parse(run('python3', [tool, 'copy', src, dst, String(offIn), String(offOut), String(len)]).stdout) as {
    copied: number;
  };

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = ((i * 13 + seed) % 253) + 1;
  return b;
}

/** Bytes the client process has read from sockets and /dev/fuse so far. */
const clientReadBytes = (c: Cluster) =>
  Number(/rchar: (\d+)/.exec(readFileSync(`/proc/${c.mountPid}/io`, 'utf8'))![1]);

t.test('copy_file_range: the bricks copy, every alignment, holes, inline files', async (t) => {
  const c = await startCluster(t, { pgs: 16, replicas: 3 });
  const src = c.path('src');
  const data = pattern(10 * MiB + 123, 1);
  writeFileSync(src, data);

  const before = clientReadBytes(c);
  t.same(copy(src, c.path('whole'), 0, 0, 64 * MiB).copied, data.length, 'short count at the source end');
  const through = clientReadBytes(c) - before;
  t.ok(readFileSync(c.path('whole')).equals(data), 'an exact copy');
  t.ok(through < MiB, `the client read ${through} bytes for a ${data.length}-byte copy`);
  t.equal(statSync(c.path('whole')).size, data.length);

  // Unaligned source and destination, across blocks, into the middle of a file.
  const dst = c.path('dst');
  const base = pattern(6 * MiB, 2);
  writeFileSync(dst, base);
  t.equal(copy(src, dst, 12345, MiB + 777, 3 * MiB + 5).copied, 3 * MiB + 5);
  const want = Buffer.from(base);
  data.copy(want, MiB + 777, 12345, 12345 + 3 * MiB + 5);
  t.ok(readFileSync(dst).equals(want), 'unaligned copy into the middle');
  t.equal(copy(src, dst, data.length, 0, 100).copied, 0, 'at the source end: 0');
  t.equal(copy(src, dst, data.length - 10, 8 * MiB, 100).copied, 10, 'extends the destination');
  t.equal(statSync(dst).size, 8 * MiB + 10);
  t.ok(
    readFileSync(dst)
      .subarray(6 * MiB, 8 * MiB)
      .equals(Buffer.alloc(2 * MiB)),
    'the gap reads zeros',
  );

  // A sparse source: holes copy as zeros.
  const sparse = c.path('sparse');
  run('truncate', ['-s', String(5 * MiB), sparse]);
  writeFileSync(sparse, 'tail', { flag: 'r+', encoding: 'utf8' });
  t.equal(copy(sparse, dst, 0, 0, 5 * MiB).copied, 5 * MiB);
  const d2 = readFileSync(dst);
  t.equal(d2.subarray(0, 4).toString(), 'tail');
  t.ok(d2.subarray(4, 5 * MiB).equals(Buffer.alloc(5 * MiB - 4)), 'holes copied as zeros over data');

  // Inline files: the kernel copies itself (EOPNOTSUPP from us).
  writeFileSync(c.path('small'), 'small file');
  t.equal(copy(c.path('small'), c.path('small-copy'), 0, 0, 100).copied, 10);
  t.equal(readFileSync(c.path('small-copy'), 'utf8'), 'small file');
  t.equal(copy(src, c.path('small'), 0, 2, 5000).copied, 5000, 'into an inline file');
  t.ok(readFileSync(c.path('small')).subarray(2).equals(data.subarray(0, 5000)));

  // The same file, ranges apart.
  t.equal(copy(src, src, 0, 20 * MiB, MiB + 1).copied, MiB + 1);
  t.ok(
    readFileSync(src)
      .subarray(20 * MiB)
      .equals(data.subarray(0, MiB + 1)),
    'within one file',
  );

  // cp uses it.
  const cp = run('cp', [c.path('whole'), c.path('cp-copy')]);
  t.equal(cp.status, 0, cp.stderr);
  t.ok(readFileSync(c.path('cp-copy')).equals(data), 'cp copies exactly');
});

t.test('cp (server-side) against a read+write copy through the mount', async (t) => {
  const c = await startCluster(t, { pgs: 16, replicas: 3 });
  const mib = Number(process.env.DUNIX_COPY_MIB ?? 128);
  run('dd', ['if=/dev/urandom', `of=${c.path('big')}`, 'bs=1M', `count=${mib}`, 'conv=fsync'], {
    timeoutMs: 600_000,
  });
  const timed = (args: string[]) => {
    const t0 = process.hrtime.bigint();
    const r = run(args[0]!, args.slice(1), { timeoutMs: 600_000 });
    if (r.status !== 0) throw new Error(`${args.join(' ')}: ${r.stderr}`);
    return Number(process.hrtime.bigint() - t0) / 1e9;
  };
  run('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches']);
  const server = timed(['sh', '-c', `cp ${c.path('big')} ${c.path('by-cp')} && sync -f ${c.path('by-cp')}`]);
  run('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches']);
  const client = timed([
    'sh',
    '-c',
    `dd if=${c.path('big')} of=${c.path('by-dd')} bs=1M conv=fsync status=none`,
  ]);
  t.equal(run('cmp', [c.path('big'), c.path('by-cp')]).status, 0, 'cp copied exactly');
  t.equal(run('cmp', [c.path('big'), c.path('by-dd')]).status, 0, 'dd copied exactly');
  t.comment(
    `copy: ${mib} MiB cp (copy_file_range) ${server.toFixed(2)} s = ${(mib / server).toFixed(1)} MiB/s; ` +
      `read+write ${client.toFixed(2)} s = ${(mib / client).toFixed(1)} MiB/s; ratio ${(client / server).toFixed(2)}x`,
  );
});
