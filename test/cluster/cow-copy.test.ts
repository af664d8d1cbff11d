/**
 * Server-side copy by copy-on-write blocks on a real mount (3 bricks,
 * replicas 3): a whole-block copy_file_range makes each brick's block file
 * of the copy a second name of its file of the source (same inode on disk,
 * no byte written); overwriting, truncating or punching either file then
 * never changes the other; a brick whose copy of the source block is gone
 * gets the bytes instead; a brick SIGKILLed in the middle of a copy
 * leaves both files whole, and once it is back a scrub finds every copy
 * of every block matching.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { blockPg } from '@dunix/proto';
import t, { type Test } from 'tap';
import { run, startCluster, waitUntil, type BrickProc, type Cluster } from '../src/cluster.js';
import { keepLogs, waitFullRedundancy } from '../src/failover.js';

const MiB = 1024 * 1024;
const tool = fileURLToPath(new URL('../../cluster/falloc-tool.py', import.meta.url));
const PUNCH = 0x02 | 0x01;

function copy(src: string, dst: string, len: number): number {
  const r = run('python3', [tool, 'copy', src, dst, '0', '0', String(len)]);
  if (r.status !== 0) throw new Error(`copy ${src} ${dst}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { copied: number }).copied;
}

function falloc(path: string, mode: number, offset: number, length: number): string {
  return run('python3', [tool, 'falloc', path, String(mode), String(offset), String(length)]).stdout.trim();
}

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(Math.ceil(length / 4) * 4);
  let x = (seed + 1) * 2654435761;
  for (let i = 0; i < b.length; i += 4) {
    x = (x * 1103515245 + 12345) >>> 0;
    b.writeUInt32LE(x, i);
  }
  return b.subarray(0, length);
}

/** A block file of a brick (BlockStore.pathOf). */
function blockPath(c: Cluster, b: BrickProc, ino: bigint, index: number): string {
  const pg = blockPg(ino, BigInt(index), c.pgs);
  return join(
    b.dir,
    'blocks',
    pg.toString(16).padStart(4, '0'),
    `${ino.toString(16).padStart(16, '0')}.${index.toString(16)}`,
  );
}

const inoOf = (path: string) => statSync(path, { bigint: true }).ino;

/** Per brick, how many of the first `blocks` blocks of `b` are the same disk file as `a`'s. */
function shared(c: Cluster, a: string, b: string, blocks: number): number[] {
  const ia = inoOf(a);
  const ib = inoOf(b);
  return c.bricks.map((brick) => {
    let n = 0;
    for (let i = 0; i < blocks; i++) {
      const pa = blockPath(c, brick, ia, i);
      const pb = blockPath(c, brick, ib, i);
      if (existsSync(pa) && existsSync(pb) && statSync(pa).ino === statSync(pb).ino) n++;
    }
    return n;
  });
}

/** Fresh bytes through the mount (the kernel may hold pages of an earlier read). */
function readFresh(path: string): Buffer {
  run('sh', ['-c', `echo 1 > /proc/sys/vm/drop_caches`]);
  return readFileSync(path);
}

interface ScrubJson {
  job: { state: string; found: number; repaired: number; unrecoverable: number } | null;
  problems: unknown[];
}

async function scrub(t: Test, c: Cluster): Promise<ScrubJson> {
  const r = c.ctl(['volume', 'scrub', 'start', c.volume, '--max-mib-per-s', '0']);
  t.equal(r.status, 0, `scrub started: ${r.stderr}`);
  const status = () =>
    JSON.parse(c.ctl(['--json', 'volume', 'scrub', 'status', c.volume]).stdout) as ScrubJson;
  await waitUntil(() => status().job?.state === 'done', 'the scrub to finish', 120_000, 250);
  return status();
}

t.test('copy-on-write copies: shared on disk, independent through the mount', async (t) => {
  const c = await startCluster(t, { pgs: 16, replicas: 3 });
  keepLogs(t, c);

  const src = c.path('src');
  const data = pattern(8 * MiB + 4096 + 123, 1);
  writeFileSync(src, data);
  const blocks = 9;

  // A whole-file copy: every block, the short last one too, shared on every brick.
  t.equal(copy(src, c.path('copy'), 64 * MiB), data.length);
  t.ok(readFresh(c.path('copy')).equals(data), 'the copy reads the source bytes');
  t.same(
    shared(c, src, c.path('copy'), blocks),
    [blocks, blocks, blocks],
    'every block shared on every brick',
  );

  // Overwrite the source in place (two blocks) and the copy (another block): each keeps its own bytes.
  const patch = pattern(MiB, 2);
  writeFileSync(src, patch.subarray(0, 5000), { flag: 'r+' });
  const srcWant = Buffer.from(data);
  patch.copy(srcWant, 0, 0, 5000);
  const w = run('python3', [
    '-c',
    `import os,sys\nfd=os.open(sys.argv[1],os.O_WRONLY)\nos.pwrite(fd,b'x'*7000,${MiB * 3 - 100})\nos.fsync(fd)\nos.close(fd)`,
    src,
  ]);
  t.equal(w.status, 0, w.stderr);
  srcWant.fill('x', MiB * 3 - 100, MiB * 3 - 100 + 7000);
  const w2 = run('python3', [
    '-c',
    `import os,sys\nfd=os.open(sys.argv[1],os.O_WRONLY)\nos.pwrite(fd,b'y'*3000,${MiB * 5 + 10})\nos.fsync(fd)\nos.close(fd)`,
    c.path('copy'),
  ]);
  t.equal(w2.status, 0, w2.stderr);
  const copyWant = Buffer.from(data);
  copyWant.fill('y', MiB * 5 + 10, MiB * 5 + 10 + 3000);
  t.ok(readFresh(src).equals(srcWant), 'the source has its writes only');
  t.ok(readFresh(c.path('copy')).equals(copyWant), 'the copy has its write only');
  t.same(
    shared(c, src, c.path('copy'), blocks),
    [blocks - 4, blocks - 4, blocks - 4],
    'the four written blocks have files of their own, the rest stay shared',
  );

  // Copy, then truncate the copy and punch a hole in the source.
  const c2 = c.path('copy2');
  t.equal(copy(src, c2, 64 * MiB), data.length);
  run('truncate', ['-s', String(MiB + MiB / 2), c2]);
  t.equal(falloc(src, PUNCH, 6 * MiB, MiB), 'ok', 'punch a block of the source');
  const srcPunched = Buffer.from(srcWant);
  srcPunched.fill(0, 6 * MiB, 7 * MiB);
  t.ok(readFresh(c2).equals(srcWant.subarray(0, MiB + MiB / 2)), 'the truncated copy');
  t.ok(readFresh(src).equals(srcPunched), 'the punched source');
  // And the other way round: truncate the source, punch the copy.
  const c3 = c.path('copy3');
  t.equal(copy(src, c3, 64 * MiB), data.length);
  t.equal(falloc(c3, PUNCH, 0, 2 * MiB + 10), 'ok');
  run('truncate', ['-s', '100', src]);
  const c3Want = Buffer.from(srcPunched);
  c3Want.fill(0, 0, 2 * MiB + 10);
  t.ok(readFresh(c3).equals(c3Want), 'the punched copy keeps what the truncate cut from the source');
  t.ok(readFresh(src).equals(srcPunched.subarray(0, 100)), 'the truncated source');
  t.ok(readFresh(c2).equals(srcWant.subarray(0, MiB + MiB / 2)), 'the first copy is untouched');

  // Removing the source leaves the copies.
  run('rm', ['-f', src]);
  t.ok(readFresh(c.path('copy')).equals(copyWant), 'the copy outlives its source');

  // A brick whose file of the source block is gone gets the bytes instead of a link.
  const s2 = c.path('src2');
  const d2 = pattern(2 * MiB, 3);
  writeFileSync(s2, d2);
  const s2Ino = inoOf(s2);
  const primaries = new Set<string>();
  for (let i = 0; i < 2; i++) primaries.add((await c.brickOfPg(blockPg(s2Ino, BigInt(i), c.pgs))).id);
  const placement = await c.placement();
  const lacking =
    c.bricks.find((b) => !primaries.has(b.id) && placement.every((a) => a.isr.includes(b.id))) ??
    c.bricks.find((b) => !primaries.has(b.id));
  if (!lacking) {
    t.comment('every brick leads a block of src2: no brick lacking the source to check');
  } else {
    for (let i = 0; i < 2; i++) rmSync(blockPath(c, lacking, s2Ino, i), { force: true });
    const cp2 = c.path('copy-of-src2');
    t.equal(copy(s2, cp2, 64 * MiB), d2.length);
    t.ok(readFresh(cp2).equals(d2), 'the copy reads right');
    const cpIno = inoOf(cp2);
    for (let i = 0; i < 2; i++) {
      const p = blockPath(c, lacking, cpIno, i);
      t.ok(
        existsSync(p) && readFileSync(p).equals(d2.subarray(i * MiB, (i + 1) * MiB)),
        `brick ${lacking.index} holds block ${i} of the copy (bytes sent, not linked)`,
      );
    }
    const after = await c.placement();
    t.ok(
      after.every((a) => a.isr.length === 3),
      'no brick dropped from an in-sync set by the clone it could not make',
    );
    // The source goes (its records with it) before the scrub at the end would repair the files removed here.
    rmSync(s2);
    await waitUntil(
      () => c.bricks.every((b) => [0, 1].every((i) => !existsSync(blockPath(c, b, s2Ino, i)))),
      'the removed source reclaimed',
      30_000,
      100,
    );
  }

  // SIGKILL a brick (a replica of most PGs, primary of some) in the middle of a copy: the copy
  // completes and both files are whole.
  const big = c.path('big');
  const bigData = pattern(48 * MiB, 4);
  writeFileSync(big, bigData);
  const bigIno = inoOf(big);
  const leaders = new Set((await c.placement()).map((a) => a.bricks[0]));
  const victim = c.bricks.find((b) => !leaders.has(b.id)) ?? c.bricks[2]!;
  const child = spawn('python3', [tool, 'copy', big, c.path('big-copy'), '0', '0', String(64 * MiB)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  // Once the copy is under way (its first blocks exist on the victim), kill it.
  await waitUntil(() => existsSync(c.path('big-copy')), 'the copy to start', 30_000, 20);
  const copyIno = inoOf(c.path('big-copy'));
  await waitUntil(
    () => existsSync(blockPath(c, victim, copyIno, 0)) || child.exitCode !== null,
    'a first block on the victim',
    30_000,
    10,
  );
  await victim.kill('SIGKILL');
  const killedAt = Date.now();
  t.equal(await exited, 0, 'the copy finished');
  t.equal((JSON.parse(out) as { copied: number }).copied, bigData.length);
  t.ok(readFresh(c.path('big-copy')).equals(bigData), 'the copy is whole');
  t.ok(readFresh(big).equals(bigData), 'the source is whole');
  t.equal(bigIno, inoOf(big));
  await victim.restart();
  await waitFullRedundancy(c, killedAt, 120_000);
  t.ok(readFresh(c.path('big-copy')).equals(bigData), 'the copy is whole after the brick came back');

  // Every copy of every block matches the primaries' records.
  const s = await scrub(t, c);
  t.match(s.job, { found: 0, unrecoverable: 0 }, `the scrub finds nothing: ${JSON.stringify(s.problems)}`);
});
