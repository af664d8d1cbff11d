import { FALLOC_FL, SEEK_DATA, SEEK_HOLE } from '@dunix/proto';
import t from 'tap';
import { blocksOf } from '../../src/namespace/alloc-map.js';
import { alice, Fixture, ROOT } from './harness.js';

/** The allocation map through the engine (block size 64 KiB in the fixture). */

const B = 65536n;
const { KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE } = FALLOC_FL;

async function blockFile(): Promise<{ f: Fixture; ino: bigint }> {
  const f = await Fixture.make();
  const ino = await f.create(ROOT, 'f');
  const st = await f.stat(ino);
  await f.run((tx) => f.engine.convertInline(tx, ino, st.dataVersion));
  return { f, ino };
}

const seek = (f: Fixture, ino: bigint, off: bigint, whence: number) =>
  f.read((tx) => f.engine.seek(tx, ino, off, whence));

t.test('written blocks count in st_blocks; SEEK_DATA/SEEK_HOLE follow them', async (t) => {
  const { f, ino } = await blockFile();
  t.equal(blocksOf(await f.stat(ino)), 0n, 'a new file has nothing allocated');
  // Blocks 0 (full) and 2 (first 100 bytes) written, file size 2B + 100.
  await f.run((tx) =>
    f.engine.extend(tx, alice, ino, 2n * B + 100n, false, [
      { index: 0n, end: Number(B) },
      { index: 2n, end: 100 },
    ]),
  );
  const st = await f.stat(ino);
  t.equal(st.allocBytes, B + 4096n, 'block 0 whole, block 2 rounded up to 4 KiB');
  t.equal(blocksOf(st), (B + 4096n) / 512n);
  t.equal(await seek(f, ino, 0n, SEEK_DATA), 0n);
  t.equal(await seek(f, ino, 0n, SEEK_HOLE), B, 'block 1 is a hole');
  t.equal(await seek(f, ino, B, SEEK_DATA), 2n * B);
  t.equal(await seek(f, ino, 2n * B, SEEK_HOLE), 2n * B + 100n, 'the end of the file');
  t.equal(await f.code((tx) => f.engine.seek(tx, ino, 2n * B + 100n, SEEK_DATA)), 'NO_DATA_AT_OFFSET');
  t.equal(
    await f.code((tx) => f.engine.seek(tx, ino, 0n, 2)),
    'INVALID_ARGUMENT',
    "SEEK_END is the kernel's",
  );
  // Rewriting a block does not count it twice.
  await f.run((tx) => f.engine.extend(tx, alice, ino, 0n, false, [{ index: 0n, end: 10 }]));
  t.equal((await f.stat(ino)).allocBytes, B + 4096n);
  t.equal(
    await f.code((tx) => f.engine.extend(tx, alice, ino, 0n, false, [{ index: 0n, end: Number(B) + 1 }])),
    'INVALID_ARGUMENT',
    'an extent past the block',
  );
});

t.test('fallocate: preallocation, KEEP_SIZE, punch, zero range', async (t) => {
  const { f, ino } = await blockFile();
  const fa = (mode: number, off: bigint, len: bigint) =>
    f.run((tx) => f.engine.fallocate(tx, ino, mode, off, len));
  let r = await fa(0, 0n, 3n * B);
  t.equal(r.inode.size, 3n * B, 'mode 0 grows the size');
  t.equal(r.inode.allocBytes, 3n * B, 'and counts the range');
  t.equal(r.punch, undefined);
  t.equal(
    await f.code((tx) => f.engine.seek(tx, ino, 0n, SEEK_DATA)),
    'NO_DATA_AT_OFFSET',
    'preallocated: a hole',
  );
  r = await fa(KEEP_SIZE, 3n * B, 2n * B);
  t.equal(r.inode.size, 3n * B, 'KEEP_SIZE keeps it');
  t.equal(r.inode.allocBytes, 5n * B);
  // Data in block 1, then punch [B/2, 2B + 10).
  await f.run((tx) => f.engine.extend(tx, alice, ino, 0n, false, [{ index: 1n, end: Number(B) }]));
  t.equal(await seek(f, ino, 0n, SEEK_DATA), B, 'written: data');
  r = await fa(PUNCH_HOLE | KEEP_SIZE, B / 2n, B + B / 2n + 10n);
  t.same(r.punch, { from: B / 2n, to: 2n * B + 10n }, 'the blocks to zero');
  t.equal(r.inode.size, 3n * B);
  // Block 0 cut to B/2, block 1 gone, block 2 (range ends inside) kept.
  t.equal(r.inode.allocBytes, B / 2n + B + 2n * B);
  t.equal(await f.read((tx) => tx.getAlloc(ino, 1n)), undefined);
  t.same(await f.read((tx) => tx.getAlloc(ino, 0n)), { len: Number(B / 2n), pre: true });
  // ZERO_RANGE without KEEP_SIZE past the end.
  r = await fa(ZERO_RANGE, 5n * B, 10n);
  t.equal(r.inode.size, 5n * B + 10n);
  t.same(r.punch, { from: 5n * B, to: 5n * B + 10n });
  t.same(await f.read((tx) => tx.getAlloc(ino, 5n)), { len: 10, pre: true });
  // Bounds and modes.
  t.equal(await f.code((tx) => f.engine.fallocate(tx, ino, 0x08, 0n, B)), 'NOT_SUPPORTED', 'COLLAPSE_RANGE');
  t.equal(await f.code((tx) => f.engine.fallocate(tx, ino, 0x20, 0n, B)), 'NOT_SUPPORTED', 'INSERT_RANGE');
  t.equal(await f.code((tx) => f.engine.fallocate(tx, ino, PUNCH_HOLE, 0n, B)), 'NOT_SUPPORTED');
  t.equal(await f.code((tx) => f.engine.fallocate(tx, ino, 0, 0n, 0n)), 'INVALID_ARGUMENT');
  t.equal(await f.code((tx) => f.engine.fallocate(tx, ino, 0, 2n ** 52n, 1n)), 'FILE_TOO_LARGE');
  t.equal(
    await f.code((tx) => f.engine.fallocate(tx, ino, 0, 0n, 4097n * B)),
    'INVALID_ARGUMENT',
    'more blocks than one call may change',
  );
});

t.test('seek on files without a map, and a dense map', async (t) => {
  const f = await Fixture.make();
  const ino = await f.create(ROOT, 'inline');
  await f.run((tx) => f.engine.extend(tx, alice, ino, 100n, false));
  t.equal(await seek(f, ino, 5n, SEEK_DATA), 5n, 'inline: all data');
  t.equal(await seek(f, ino, 5n, SEEK_HOLE), 100n);
  const { f: g, ino: d } = await blockFile();
  const extents = Array.from({ length: 3000 }, (_v, i) => ({ index: BigInt(i), end: Number(B) }));
  await g.run((tx) => g.engine.extend(tx, alice, d, 3000n * B, false, extents));
  t.equal(await seek(g, d, 7n, SEEK_HOLE), 3000n * B, 'a hole only at the end (walks several scans)');
  t.equal(await seek(g, d, 2999n * B, SEEK_DATA), 2999n * B);
});

t.test('a writer that does not report its blocks (an older client) drops the map', async (t) => {
  const { f, ino } = await blockFile();
  await f.run((tx) => f.engine.extend(tx, alice, ino, 3n * B, false, [{ index: 0n, end: 10 }]));
  t.equal(
    await f.code((tx) => f.engine.seek(tx, ino, B, SEEK_DATA)),
    'NO_DATA_AT_OFFSET',
    'tracked: only block 0 is data',
  );
  await f.run((tx) => f.engine.extend(tx, alice, ino, 3n * B, false, [], false));
  const st = await f.stat(ino);
  t.equal(st.allocTracked, undefined, 'no longer tracked');
  t.equal(blocksOf(st), (3n * B) / 512n, 'st_blocks from the size');
  t.equal(await seek(f, ino, B, SEEK_DATA), B, 'all data: SEEK_DATA skips nothing');
  t.equal(await seek(f, ino, B, SEEK_HOLE), 3n * B);
});
