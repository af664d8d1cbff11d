/**
 * fallocate(2) in every mode and holes on a real mount of a replica-3
 * volume: preallocation (mode 0, KEEP_SIZE) extends the size and counts in
 * st_blocks; PUNCH_HOLE zeroes the range and frees its blocks on every
 * replica (the block files are gone from all three bricks); ZERO_RANGE with
 * and without KEEP_SIZE; COLLAPSE/INSERT answer EOPNOTSUPP; bad input gets
 * EINVAL/EFBIG; SEEK_DATA/SEEK_HOLE at block granularity (finer at a
 * block's stored end); inline files; ranges past EOF; a punch concurrent
 * with another process's writes; a punch after the inode's primary is
 * SIGKILLed.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pgOfIno, blockPg } from '@dunix/proto';
import t from 'tap';
import { run, startCluster, type BrickProc, type Cluster } from '../src/cluster.js';

const MiB = 1024 * 1024;
const tool = fileURLToPath(new URL('../../cluster/falloc-tool.py', import.meta.url));
const KEEP = 0x01;
const PUNCH = 0x02;
const COLLAPSE = 0x08;
const ZERO = 0x10;
const INSERT = 0x20;

function falloc(path: string, mode: number, offset: number, length: number): string {
  return run('python3', [tool, 'falloc', path, String(mode), String(offset), String(length)]).stdout.trim();
}
function seek(path: string, whence: 'data' | 'hole', offset: number): string {
  return run('python3', [tool, 'seek', path, whence, String(offset)]).stdout.trim();
}
const blocksOf = (path: string) => statSync(path).blocks;

/** A block file of a brick (BlockStore.pathOf). */
function blockPath(b: BrickProc, pg: number, ino: bigint, index: bigint): string {
  return join(
    b.dir,
    'blocks',
    pg.toString(16).padStart(4, '0'),
    `${ino.toString(16).padStart(16, '0')}.${index.toString(16)}`,
  );
}

/** Sizes of block `index` of `path`'s inode on every brick (-1: no file). */
function blockSizes(c: Cluster, path: string, index: number): number[] {
  const ino = statSync(path, { bigint: true }).ino;
  const pg = blockPg(ino, BigInt(index), c.pgs);
  return c.bricks.map((b) => {
    const p = blockPath(b, pg, ino, BigInt(index));
    return existsSync(p) ? statSync(p).size : -1;
  });
}

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = ((i * 7 + seed) % 251) + 1;
  return b;
}

t.test('fallocate modes, holes and SEEK_DATA/SEEK_HOLE on replicas 3', async (t) => {
  const c = await startCluster(t, { pgs: 16, replicas: 3 });

  // Mode 0: size and allocation; the range reads zeros and is a hole for SEEK_DATA (unwritten, as on ext4).
  const a = c.path('alloc');
  t.equal(falloc(a, 0, 0, 3 * MiB + 5), 'ok', 'fallocate -l 3M+5');
  t.equal(statSync(a).size, 3 * MiB + 5);
  t.ok(blocksOf(a) * 512 >= 3 * MiB, `st_blocks ${blocksOf(a)} counts the preallocation`);
  t.ok(readFileSync(a).equals(Buffer.alloc(3 * MiB + 5)), 'reads zeros');
  t.equal(seek(a, 'data', 0), 'ENXIO', 'preallocated space is no data');
  t.equal(seek(a, 'hole', 0), '0');

  // KEEP_SIZE: allocation without size.
  const k = c.path('keep');
  t.equal(falloc(k, KEEP, 0, 2 * MiB), 'ok');
  t.equal(statSync(k).size, 0, 'KEEP_SIZE keeps the size');
  t.ok(blocksOf(k) * 512 >= 2 * MiB, 'and counts the space');
  writeFileSync(k, 'x');
  t.equal(readFileSync(k, 'utf8'), 'x');

  // Data in 4 blocks, then a punch across a block boundary: [1.5M, 3M).
  const h = c.path('punch');
  const data = pattern(4 * MiB, 3);
  writeFileSync(h, data);
  const full = blocksOf(h);
  t.ok(full * 512 >= 4 * MiB, 'written blocks count');
  t.same(blockSizes(c, h, 2), [MiB, MiB, MiB], 'block 2 on all three bricks');
  t.equal(falloc(h, PUNCH | KEEP, 1.5 * MiB, 1.5 * MiB), 'ok', 'punch [1.5M, 3M)');
  const after = readFileSync(h);
  t.equal(after.length, 4 * MiB, 'size kept');
  t.ok(after.subarray(0, 1.5 * MiB).equals(data.subarray(0, 1.5 * MiB)), 'bytes before the hole kept');
  t.ok(after.subarray(1.5 * MiB, 3 * MiB).equals(Buffer.alloc(1.5 * MiB)), 'the hole reads zeros');
  t.ok(after.subarray(3 * MiB).equals(data.subarray(3 * MiB)), 'bytes after the hole kept');
  t.same(blockSizes(c, h, 2), [-1, -1, -1], 'block 2 freed on every replica');
  t.same(blockSizes(c, h, 1), [MiB / 2, MiB / 2, MiB / 2], 'block 1 cut back to its data on every replica');
  t.equal(blocksOf(h), full - (1.5 * MiB) / 512, 'st_blocks drops by the freed 1.5 MiB');
  t.equal(seek(h, 'hole', 0), String(1.5 * MiB), 'SEEK_HOLE finds the hole at 1.5M');
  t.equal(seek(h, 'data', 1.5 * MiB), String(3 * MiB), 'SEEK_DATA skips it');
  t.equal(seek(h, 'data', 100), '100');
  t.equal(seek(h, 'hole', 3 * MiB), String(4 * MiB), 'the end of the file is a hole');
  t.equal(seek(h, 'data', 4 * MiB), 'ENXIO', 'at the size: ENXIO');

  // A punch inside one block zeroes it in place (still allocated).
  t.equal(falloc(h, PUNCH | KEEP, 3 * MiB + 100, 1000), 'ok');
  const inside = readFileSync(h);
  t.ok(inside.subarray(3 * MiB + 100, 3 * MiB + 1100).equals(Buffer.alloc(1000)), 'zeroed inside a block');
  t.equal(inside[3 * MiB + 99], data[3 * MiB + 99]);
  t.equal(inside[3 * MiB + 1100], data[3 * MiB + 1100]);
  t.same(blockSizes(c, h, 3), [MiB, MiB, MiB], 'that block stays whole on every replica');

  // Past EOF: a punch changes nothing; ZERO_RANGE without KEEP_SIZE extends, with it does not.
  t.equal(falloc(h, PUNCH | KEEP, 10 * MiB, MiB), 'ok', 'punch past EOF');
  t.equal(statSync(h).size, 4 * MiB);
  t.equal(falloc(h, ZERO | KEEP, 4 * MiB - 10, 2 * MiB), 'ok', 'ZERO_RANGE|KEEP_SIZE across EOF');
  t.equal(statSync(h).size, 4 * MiB, 'keeps the size');
  const z = readFileSync(h);
  t.ok(z.subarray(4 * MiB - 10).equals(Buffer.alloc(10)), 'zeroed up to EOF');
  t.equal(falloc(h, ZERO, 0.5 * MiB, MiB), 'ok', 'ZERO_RANGE across a block boundary');
  const z2 = readFileSync(h);
  t.ok(z2.subarray(0.5 * MiB, 1.5 * MiB).equals(Buffer.alloc(MiB)), 'reads zeros');
  t.ok(z2.subarray(0, 0.5 * MiB).equals(data.subarray(0, 0.5 * MiB)), 'before it kept');
  t.equal(falloc(h, ZERO, 5 * MiB, 100), 'ok', 'ZERO_RANGE past EOF');
  t.equal(statSync(h).size, 5 * MiB + 100, 'extends the size');

  // Unsupported and bad input.
  t.equal(falloc(h, COLLAPSE, 0, MiB), 'EOPNOTSUPP', 'COLLAPSE_RANGE');
  t.equal(falloc(h, INSERT, 0, MiB), 'EOPNOTSUPP', 'INSERT_RANGE');
  t.equal(falloc(h, PUNCH, 0, MiB), 'EOPNOTSUPP', 'PUNCH_HOLE without KEEP_SIZE (the kernel refuses)');
  t.equal(falloc(h, 0, 0, 0), 'EINVAL', 'zero length');
  t.equal(falloc(h, 0, 2 ** 52, MiB), 'EFBIG', 'past the largest file');
  t.equal(falloc(h, KEEP, 2 ** 40, 8 * MiB), 'ok', 'KEEP_SIZE far past EOF');
  t.equal(statSync(h).size, 5 * MiB + 100);

  // Inline files: punch, zero, preallocate.
  const s = c.path('small');
  writeFileSync(s, pattern(100, 9));
  t.equal(falloc(s, PUNCH | KEEP, 10, 10), 'ok', 'punch in an inline file');
  const sm = readFileSync(s);
  t.ok(sm.subarray(10, 20).equals(Buffer.alloc(10)) && sm[9] === pattern(100, 9)[9], 'zeroed there only');
  t.equal(falloc(s, 0, 0, 3 * MiB), 'ok', 'preallocate an inline file');
  t.equal(statSync(s).size, 3 * MiB);
  t.ok(readFileSync(s).subarray(20, 100).equals(pattern(100, 9).subarray(20)), 'its bytes kept');

  // A sparse file: du, cp --sparse=always, SEEK_DATA.
  const sp = c.path('sparse');
  run('truncate', ['-s', String(100 * MiB), sp]);
  writeFileSync(sp, 'x', { flag: 'r+' });
  const fd = run('dd', [
    'if=/dev/urandom',
    `of=${sp}`,
    'bs=4096',
    'count=1',
    `seek=${(50 * MiB) / 4096}`,
    'conv=notrunc',
  ]);
  t.equal(fd.status, 0);
  t.ok(
    blocksOf(sp) * 512 <= 2 * 4096 + 8192,
    `st_blocks ${blocksOf(sp)} of a 100 MiB file with 8 KiB of data`,
  );
  t.equal(seek(sp, 'data', 4096), String(50 * MiB), 'SEEK_DATA jumps to the next data');
  t.equal(seek(sp, 'hole', 0), '1', "finer than a block: the hole starts at the first block's stored end");
  const cp = run('cp', ['--sparse=always', sp, c.path('sparse-copy')]);
  t.equal(cp.status, 0, cp.stderr);
  t.ok(readFileSync(sp).equals(readFileSync(c.path('sparse-copy'))), 'cp --sparse=always copies it exactly');
  t.ok(blocksOf(c.path('sparse-copy')) * 512 <= 4 * MiB, 'and the copy is sparse');
});

t.test('a punch concurrent with another process writing elsewhere; a punch after a failover', async (t) => {
  const c = await startCluster(t, { pgs: 16, replicas: 3 });
  const f = c.path('shared');
  writeFileSync(f, pattern(8 * MiB, 5));
  // Another process rewrites [4M, 8M) while this one punches [0, 3M) repeatedly.
  const writer = spawn(
    process.execPath,
    [
      '-e',
      `const fs=require('fs');const fd=fs.openSync(process.argv[1],'r+');const b=Buffer.alloc(${MiB},9);` +
        `for(let i=0;i<20;i++){fs.writeSync(fd,b,0,b.length,${4 * MiB}+(i%4)*${MiB});fs.fsyncSync(fd);}fs.closeSync(fd);`,
      f,
    ],
    { stdio: 'inherit' },
  );
  const done = new Promise<number | null>((r) => writer.on('exit', (code) => r(code)));
  for (let i = 0; i < 5; i++) t.equal(falloc(f, PUNCH | KEEP, 0, 3 * MiB), 'ok', `punch ${i}`);
  t.equal(await done, 0, 'the writer finished');
  const after = readFileSync(f);
  t.ok(after.subarray(0, 3 * MiB).equals(Buffer.alloc(3 * MiB)), 'the punched range is zero');
  t.ok(
    after.subarray(3 * MiB, 4 * MiB).equals(pattern(8 * MiB, 5).subarray(3 * MiB, 4 * MiB)),
    'untouched bytes kept',
  );
  t.ok(after.subarray(4 * MiB).equals(Buffer.alloc(4 * MiB, 9)), "the other process's writes all landed");

  // SIGKILL the primary of the file's inode PG; the next punch and preallocation ride the failover.
  const ino = statSync(f, { bigint: true }).ino;
  const primary = await c.brickOfPg(pgOfIno(ino));
  await primary.kill('SIGKILL');
  t.equal(falloc(f, PUNCH | KEEP, 4 * MiB, 2 * MiB), 'ok', 'punch after the failover');
  t.equal(falloc(f, 0, 0, 12 * MiB), 'ok', 'preallocate after the failover');
  const g = readFileSync(f);
  t.equal(g.length, 12 * MiB);
  t.ok(g.subarray(4 * MiB, 6 * MiB).equals(Buffer.alloc(2 * MiB)), 'punched');
  t.ok(g.subarray(6 * MiB, 8 * MiB).equals(Buffer.alloc(2 * MiB, 9)), 'the rest kept');
  t.equal(seek(f, 'data', 0), String(3 * MiB), 'SEEK_DATA after the failover');
  await primary.restart();
  // The returning brick catches up: its copies of the punched blocks go too.
  const pg = blockPg(ino, 4n, c.pgs);
  const path = blockPath(primary, pg, ino, 4n);
  const until = Date.now() + 60_000;
  while (existsSync(path) && Date.now() < until) await new Promise((r) => setTimeout(r, 200));
  t.notOk(existsSync(path), 'the restarted brick freed the punched block too');
});
