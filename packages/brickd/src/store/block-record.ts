import { CHECKSUM_CHUNK_BYTES, FsError, xxh64 } from '@dunix/proto';
import type { BlockRecord } from './records.js';

/** What a block's index record means, shared by BlockStore and MemoryBlockFiles. */

const CHUNK = CHECKSUM_CHUNK_BYTES;

/** Checksum of one chunk as stored in a BlockRecord: xxhash64, 16 hex digits. */
export function chunkSum(chunk: Uint8Array): string {
  return xxh64(chunk).toString(16).padStart(16, '0');
}

export function chunkCount(length: number): number {
  return Math.ceil(length / CHUNK);
}

/** A record's sums match its length (a broken one is a bug of its writer). */
export function checkRecord(rec: BlockRecord | undefined, where: string): void {
  if (!rec) return;
  if (!(Number.isSafeInteger(rec.length) && rec.length >= 0 && rec.sums.length === chunkCount(rec.length)))
    throw new Error(`block invariant: ${where}: record of length ${rec.length} has ${rec.sums.length} sums`);
}

export function checkUint(name: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new FsError('INVALID_ARGUMENT', `${name} ${v}`);
}
