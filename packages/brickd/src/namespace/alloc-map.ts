import { FALLOC_FL, FsError, limits, SEEK_DATA, SEEK_HOLE } from '@dunix/proto';
import { isReg, type AllocRecord, type InodeRecord } from '../store/records.js';
import type { MetaTxn } from './txn.js';

/**
 * A file's allocation map, kept on its inode's PG (pure: reads and writes
 * through MetaTxn). One `alloc` record per block that holds bytes: written
 * data (reported by the client with the Extend that publishes it) or a
 * preallocation (fallocate). The map gives st_blocks and SEEK_DATA /
 * SEEK_HOLE in one PG; the block files themselves live in the blocks' PGs.
 *
 * It may claim more than the blocks hold (a write whose publish failed still
 * counts, a zeroed range stays data), never less for data that was
 * published: SEEK_DATA never skips a published byte.
 */

/** Allocation is counted in these units (a local filesystem's block). */
export const ALLOC_UNIT_BYTES = 4096;
/** Past every block index. */
const INDEX_END = 0xffff_ffff_ffff_ffffn;
/** Map records read per range scan. */
const SCAN_BATCH = 1024;

const counted = (len: number): bigint => BigInt(Math.ceil(len / ALLOC_UNIT_BYTES) * ALLOC_UNIT_BYTES);

/** A file whose allocation the map describes (regular, block-stored, created with a map). */
export const hasAllocMap = (inode: InodeRecord): boolean =>
  isReg(inode.mode) && inode.allocTracked === true && !inode.inline;

/** st_blocks (512-byte units): the map's count, or the size for files without one. */
export function blocksOf(inode: InodeRecord): bigint {
  const bytes = hasAllocMap(inode) ? (inode.allocBytes ?? 0n) : inode.size;
  return (bytes + 511n) / 512n;
}

function account(
  inode: InodeRecord | undefined,
  before: AllocRecord | undefined,
  after: AllocRecord | undefined,
) {
  if (!inode || !inode.allocTracked) return;
  const next = (inode.allocBytes ?? 0n) - counted(before?.len ?? 0) + counted(after?.len ?? 0);
  if (next < 0n) throw new Error(`invariant: allocBytes of inode ${inode.ino} would be ${next}`);
  inode.allocBytes = next;
}

function put(
  t: MetaTxn,
  inode: InodeRecord,
  index: bigint,
  before: AllocRecord | undefined,
  after: AllocRecord | undefined,
) {
  if (after && (!Number.isInteger(after.len) || after.len <= 0))
    throw new Error(`invariant: alloc record of ${inode.ino}/${index} has length ${after.len}`);
  account(inode, before, after);
  t.putAlloc(inode.ino, index, after);
}

function checkSpan(firstIndex: bigint, lastIndex: bigint): void {
  if (lastIndex - firstIndex + 1n > BigInt(limits.allocExtentsPerCallMax))
    throw new FsError(
      'INVALID_ARGUMENT',
      `range of ${lastIndex - firstIndex + 1n} blocks, at most ${limits.allocExtentsPerCallMax} per call`,
    );
}

/**
 * Blocks written: block `index` now holds [0, end) (and is data, no longer
 * only preallocated). `reported` false: the writer does not report its
 * blocks (a client from before the map), so the map can no longer be
 * trusted and is dropped: the file counts its size and is all data.
 */
export async function recordWritten(
  t: MetaTxn,
  inode: InodeRecord,
  extents: readonly { index: bigint; end: number }[],
  blockSizeBytes: number,
  reported = true,
): Promise<void> {
  if (!reported) {
    delete inode.allocTracked;
    delete inode.allocBytes;
    return;
  }
  if (extents.length > limits.allocExtentsPerCallMax)
    throw new FsError(
      'INVALID_ARGUMENT',
      `${extents.length} extents, at most ${limits.allocExtentsPerCallMax}`,
    );
  for (const e of extents) {
    if (!Number.isInteger(e.end) || e.end <= 0 || e.end > blockSizeBytes)
      throw new FsError('INVALID_ARGUMENT', `extent end ${e.end} of block ${e.index}`);
    if (e.index * BigInt(blockSizeBytes) >= BigInt(limits.fileSizeMaxBytes))
      throw new FsError('FILE_TOO_LARGE', `block ${e.index}`);
  }
  if (!hasAllocMap(inode)) return;
  for (const e of extents) {
    const old = await t.getAlloc(inode.ino, e.index);
    const len = Math.max(old?.len ?? 0, e.end);
    if (old && !old.pre && old.len === len) continue;
    put(t, inode, e.index, old, { len });
  }
}

/** Preallocates [from, to): blocks without a record get a preallocated one; shorter ones grow. */
async function preallocate(
  t: MetaTxn,
  inode: InodeRecord,
  from: bigint,
  to: bigint,
  bs: bigint,
): Promise<void> {
  for (let index = from / bs; index * bs < to; index++) {
    const end = Number(to - index * bs < bs ? to - index * bs : bs);
    const old = await t.getAlloc(inode.ino, index);
    if (old && old.len >= end) continue;
    put(t, inode, index, old, old ? { ...old, len: end } : { len: end, pre: true });
  }
}

/**
 * Drops [from, to) from the map: blocks wholly inside go; a block whose
 * recorded end the range covers is cut back to `from`; other partial blocks
 * keep their (now partly zero) length.
 */
async function punchMap(t: MetaTxn, inode: InodeRecord, from: bigint, to: bigint, bs: bigint): Promise<void> {
  const rows = await t.listAlloc(
    inode.ino,
    from / bs,
    (to + bs - 1n) / bs,
    limits.allocExtentsPerCallMax + 1,
  );
  for (const { index, rec } of rows) {
    const start = index * bs;
    const cutFrom = from > start ? Number(from - start) : 0;
    if (cutFrom >= rec.len) continue; // the range starts past the recorded bytes
    if (to < start + BigInt(rec.len)) continue; // it ends inside them: zeroed, still allocated
    put(t, inode, index, rec, cutFrom === 0 ? undefined : { ...rec, len: cutFrom });
  }
}

/**
 * fallocate(2) on the map and the inode (mode validated by
 * validateFallocate). Returns the bytes whose blocks must be zeroed or freed
 * on the blocks' PGs (PUNCH_HOLE, ZERO_RANGE), recorded by the caller in the
 * same entry.
 */
export async function fallocate(
  t: MetaTxn,
  inode: InodeRecord,
  mode: number,
  offset: bigint,
  length: bigint,
  blockSizeBytes: number,
): Promise<{ punch?: { from: bigint; to: bigint } }> {
  if (!isReg(inode.mode))
    throw new FsError('INVALID_ARGUMENT', `fallocate of non-regular inode ${inode.ino}`);
  if (inode.inline) throw new FsError('NOT_INLINE', `fallocate of inline inode ${inode.ino}`);
  const bs = BigInt(blockSizeBytes);
  const end = offset + length;
  checkSpan(offset / bs, (end - 1n) / bs);
  const tracked = hasAllocMap(inode);
  const keepSize = (mode & FALLOC_FL.KEEP_SIZE) !== 0;
  const zeroes = (mode & (FALLOC_FL.PUNCH_HOLE | FALLOC_FL.ZERO_RANGE)) !== 0;
  if (tracked && zeroes) await punchMap(t, inode, offset, end, bs);
  if (tracked && !(mode & FALLOC_FL.PUNCH_HOLE)) await preallocate(t, inode, offset, end, bs);
  const now = t.nowNs;
  inode.ctimeNs = now;
  if (!keepSize && end > inode.size) {
    inode.size = end;
    inode.mtimeNs = now;
    inode.dataVersion += 1n;
  }
  if (!zeroes) return {};
  inode.mtimeNs = now;
  inode.dataVersion += 1n;
  return { punch: { from: offset, to: end } };
}

/** After a shrink to `size`: map records past it go, the one across it is cut. Whether more remain. */
export async function clipAfterTruncate(
  t: MetaTxn,
  ino: bigint,
  inode: InodeRecord | undefined,
  size: bigint,
  blockSizeBytes: number,
): Promise<boolean> {
  const bs = BigInt(blockSizeBytes);
  const limit = limits.allocExtentsPerCallMax;
  const rows = await t.listAlloc(ino, size / bs, INDEX_END, limit + 1);
  for (const { index, rec } of rows.slice(0, limit)) {
    const start = index * bs;
    const keep = start >= size ? 0 : Number(size - start);
    if (keep >= rec.len) continue;
    const next = keep === 0 ? undefined : { ...rec, len: keep };
    if (inode) put(t, inode, index, rec, next);
    else t.putAlloc(ino, index, next);
  }
  return rows.length > limit;
}

/** lseek(2) SEEK_DATA / SEEK_HOLE from the map; a file without one is all data up to its size. */
export async function seek(
  t: MetaTxn,
  inode: InodeRecord,
  offset: bigint,
  whence: number,
  blockSizeBytes: number,
): Promise<bigint> {
  if (whence !== SEEK_DATA && whence !== SEEK_HOLE) throw new FsError('INVALID_ARGUMENT', `whence ${whence}`);
  const size = inode.size;
  if (offset < 0n) throw new FsError('INVALID_ARGUMENT', `offset ${offset}`);
  if (offset >= size) throw new FsError('NO_DATA_AT_OFFSET', `offset ${offset} at or past the size ${size}`);
  if (!hasAllocMap(inode)) return whence === SEEK_DATA ? offset : size;
  const bs = BigInt(blockSizeBytes);
  let pos = offset;
  for (let from = offset / bs; ;) {
    const rows = await t.listAlloc(inode.ino, from, INDEX_END, SCAN_BATCH);
    for (const { index, rec } of rows) {
      const start = index * bs;
      if (start >= size) break;
      const dataEnd = start + BigInt(rec.len);
      if (whence === SEEK_DATA) {
        if (!rec.pre && dataEnd > pos) return start > pos ? start : pos;
        continue;
      }
      if (start > pos || rec.pre) return pos < size ? pos : size;
      if (dataEnd > pos) pos = dataEnd;
      if (pos >= size) return size;
    }
    if (rows.length < SCAN_BATCH || rows[rows.length - 1]!.index * bs >= size) break;
    from = rows[rows.length - 1]!.index + 1n;
  }
  if (whence === SEEK_DATA) throw new FsError('NO_DATA_AT_OFFSET', `no data past ${offset}`);
  return pos < size ? pos : size;
}
