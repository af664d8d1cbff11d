import { blockPg, FsError, limits, type wire } from '@dunix/proto';
import type { ErrorMark, FileData } from './file-data.js';
import { GRANT_READ, GRANT_WRITE } from './grant-holder.js';

/** Bytes one copy_file_range call copies at most (the program loops for more, as with write). */
export const COPY_CALL_MAX_BYTES = 1024 * 1024 * 1024;
/** CopyBlock calls of one copy in flight at once. */
export const COPIES_INFLIGHT_MAX = 8;

/** One CopyBlock: a range inside one source block and one destination block. */
export interface CopyPiece {
  dstIndex: bigint;
  dstOffset: number;
  srcIndex: bigint;
  srcOffset: number;
  length: number;
}

/** Cuts [offIn, offIn + n) -> [offOut, ...) at every source and destination block boundary (pure). */
export function copyPieces(offIn: bigint, offOut: bigint, n: bigint, blockSizeBytes: number): CopyPiece[] {
  const bs = BigInt(blockSizeBytes);
  const out: CopyPiece[] = [];
  for (let pos = 0n; pos < n;) {
    const d = offOut + pos;
    const s = offIn + pos;
    const dstOffset = Number(d % bs);
    const srcOffset = Number(s % bs);
    const left = n - pos;
    const room = Math.min(blockSizeBytes - dstOffset, blockSizeBytes - srcOffset);
    const length = left < BigInt(room) ? Number(left) : room;
    out.push({ dstIndex: d / bs, dstOffset, srcIndex: s / bs, srcOffset, length });
    pos += BigInt(length);
  }
  return out;
}

/**
 * copy_file_range between two files of the volume: both are published
 * first, then each destination block's primary fetches the bytes from the
 * source block's primary and writes them through its log (no data through
 * this client), then the destination's size and allocation are published.
 * Returns the bytes copied: short at the source's end, at most
 * COPY_CALL_MAX_BYTES. An inline source: NOT_SUPPORTED, which the kernel
 * answers by copying itself; an inline destination becomes a block file.
 */
export async function copyRange(
  src: FileData,
  dst: FileData,
  offIn: bigint,
  offOut: bigint,
  length: bigint,
  writer: wire.Caller,
  mark: ErrorMark,
): Promise<number> {
  await src.publishForReader();
  await dst.flush(mark);
  // A small (inline) source is the kernel's to copy; a destination (new files start inline) turns block file.
  if (src.attr.inline) throw new FsError('NOT_SUPPORTED', 'copy_file_range from an inline file');
  await dst.toBlocks(mark);
  const size = src.size;
  if (offIn >= size || length === 0n) return 0;
  let n = size - offIn < length ? size - offIn : length;
  if (n > BigInt(COPY_CALL_MAX_BYTES)) n = BigInt(COPY_CALL_MAX_BYTES);
  if (offOut + n > BigInt(limits.fileSizeMaxBytes))
    throw new FsError('FILE_TOO_LARGE', `copy to ${offOut + n}`);
  const api = dst.api;
  const [dstGrant, srcGrant] = await Promise.all([dst.grants.get(GRANT_WRITE), src.grants.get(GRANT_READ)]);
  const pieces = copyPieces(offIn, offOut, n, dst.blockSize);
  const extents = new Map<bigint, number>();
  let next = 0;
  const worker = async () => {
    while (next < pieces.length) {
      const p = pieces[next++]!;
      const pg = blockPg(dst.ino, p.dstIndex, api.pgCount);
      api.changed(pg);
      await api.read(pg, 'CopyBlock', {
        dstIno: dst.ino.toString(),
        dstIndex: p.dstIndex.toString(),
        dstOffset: p.dstOffset,
        srcIno: src.ino.toString(),
        srcIndex: p.srcIndex.toString(),
        srcOffset: p.srcOffset,
        length: p.length,
        dstGrant,
        srcGrant,
      });
      const end = p.dstOffset + p.length;
      extents.set(p.dstIndex, Math.max(extents.get(p.dstIndex) ?? 0, end));
    }
  };
  await Promise.all(Array.from({ length: Math.min(COPIES_INFLIGHT_MAX, pieces.length) }, worker));
  dst.noteCopied(extents, offOut + n, writer);
  await dst.flush(mark);
  return Number(n);
}
