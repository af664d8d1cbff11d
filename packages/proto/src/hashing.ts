import xxhash from 'xxhash-wasm';

/**
 * xxhash64 (xxhash-wasm), used for block placement, directory placement,
 * rendezvous scores and block checksums. The wasm module is instantiated
 * once: call `initHashing()` before any other function here.
 */
type H64Raw = (input: Uint8Array, seed?: bigint) => bigint;
let h64Raw: H64Raw | undefined;

export async function initHashing(): Promise<void> {
  if (!h64Raw) h64Raw = (await xxhash()).h64Raw;
}

function h64(): H64Raw {
  if (!h64Raw) throw new Error('initHashing() was not awaited');
  return h64Raw;
}

export function xxh64(data: Uint8Array, seed = 0n): bigint {
  return h64()(data, seed);
}

const scratch = Buffer.alloc(16);

/** PG of block `index` of inode `ino`: xxhash64(ino LE64 ‖ index LE64) mod pgCount. */
export function blockPg(ino: bigint, index: bigint, pgCount: number): number {
  scratch.writeBigUInt64LE(ino, 0);
  scratch.writeBigUInt64LE(index, 8);
  return Number(h64()(scratch, 0n) % BigInt(pgCount));
}

/** PG of a new directory's inode: xxhash64(parent LE64 ‖ name) mod pgCount. */
export function directoryPg(parent: bigint, name: Uint8Array, pgCount: number): number {
  const buf = Buffer.allocUnsafe(8 + name.length);
  buf.writeBigUInt64LE(parent, 0);
  buf.set(name, 8);
  return Number(h64()(buf, 0n) % BigInt(pgCount));
}

/** Checksum granularity of block data: one xxhash64 per chunk. */
export const CHECKSUM_CHUNK_BYTES = 64 * 1024;

/** xxhash64 of each 64 KiB chunk of `data` (the last chunk may be short). */
export function chunkChecksums(data: Uint8Array): bigint[] {
  const out: bigint[] = [];
  for (let off = 0; off < data.length; off += CHECKSUM_CHUNK_BYTES) {
    out.push(h64()(data.subarray(off, Math.min(data.length, off + CHECKSUM_CHUNK_BYTES)), 0n));
  }
  return out;
}

/** Blocks [first, last] of a file, as the set of PGs holding them (all PGs past a bound). */
export function pgsOfBlocks(ino: bigint, first: bigint, last: bigint, pgCount: number): number[] {
  if (last < first) return [];
  if (last - first + 1n >= BigInt(pgCount) * 4n) return Array.from({ length: pgCount }, (_v, i) => i);
  const out = new Set<number>();
  for (let i = first; i <= last; i++) out.add(blockPg(ino, i, pgCount));
  return [...out].sort((a, b) => a - b);
}
