import { xxh64 } from '@dunix/proto';
import { isBrickKey, KeyKind, keys } from '../store/keys.js';
import type { KvEntry } from '../store/kv.js';

/**
 * What a scrub compares between the copies of a PG, free of I/O: the rows
 * of a key range (every record kind but the op log, never a brick key), a
 * hash per row and a digest per range, and the difference of two copies'
 * rows. Hashes are xxhash64 as 16 hex digits (like a block record's sums).
 */

/** A row as the scrub sees it: its key and the hash of key and value. */
export interface ScrubRow {
  key: Buffer;
  hash: string;
}

/** The digest of a range of rows. */
export interface RangeDigest {
  digest: string;
  keys: number;
  /** Key and value bytes. */
  bytes: number;
}

function hex(v: bigint): string {
  return v.toString(16).padStart(16, '0');
}

/**
 * The key ranges of a PG a scrub compares, in key order: every record kind
 * before the log's and after it, up to the brick keys (kind 0xff).
 */
export function scrubSegments(pg: number): { from: Buffer; to: Buffer }[] {
  const at = (kind: number) => Buffer.concat([keys.pgPrefix(pg), Buffer.from([kind])]);
  return [
    { from: at(0), to: at(KeyKind.log) },
    { from: at(KeyKind.log + 1), to: at(0xff) },
  ];
}

/** Whether a key takes part in the scrub's comparison (log entries and brick keys do not). */
export function scrubbedKey(key: Uint8Array): boolean {
  return key.length >= 3 && key[2] !== KeyKind.log && !isBrickKey(key);
}

/** Hash of one row: length-prefixed key, then the value (so no two rows hash alike by shifting bytes). */
export function rowHash(key: Uint8Array, value: Uint8Array): string {
  const buf = Buffer.allocUnsafe(4 + key.length + value.length);
  buf.writeUInt32LE(key.length, 0);
  buf.set(key, 4);
  buf.set(value, 4 + key.length);
  return hex(xxh64(buf));
}

/** The rows of `entries` the scrub compares, with their hashes, in the order given (key order). */
export function scrubRows(entries: readonly KvEntry[]): ScrubRow[] {
  const out: ScrubRow[] = [];
  for (const e of entries) if (scrubbedKey(e.key)) out.push({ key: e.key, hash: rowHash(e.key, e.value) });
  return out;
}

/** Digest of rows in key order: xxhash64 over the row count and every row hash. */
export function digestOf(rows: readonly ScrubRow[], bytes: number): RangeDigest {
  const buf = Buffer.allocUnsafe(8 + 8 * rows.length);
  buf.writeBigUInt64LE(BigInt(rows.length), 0);
  rows.forEach((r, i) => buf.write(r.hash, 8 + 8 * i, 8, 'hex'));
  return { digest: hex(xxh64(buf)), keys: rows.length, bytes };
}

/** How a replica's rows differ from the primary's (keys as given, in key order). */
export interface RowDiff {
  /** On both, with other values. */
  differ: Buffer[];
  /** On the primary only. */
  missing: Buffer[];
  /** On the replica only. */
  extra: Buffer[];
}

/** Compares two sorted row lists (the primary's first). */
export function diffRows(primary: readonly ScrubRow[], replica: readonly ScrubRow[]): RowDiff {
  const out: RowDiff = { differ: [], missing: [], extra: [] };
  let i = 0;
  let j = 0;
  while (i < primary.length || j < replica.length) {
    const a = primary[i];
    const b = replica[j];
    const c = !a ? 1 : !b ? -1 : Buffer.compare(a.key, b.key);
    if (c === 0) {
      if (a!.hash !== b!.hash) out.differ.push(a!.key);
      i++;
      j++;
    } else if (c < 0) {
      out.missing.push(a!.key);
      i++;
    } else {
      out.extra.push(b!.key);
      j++;
    }
  }
  return out;
}

/** A one-line account of a difference, for logs and reports. */
export function describeDiff(d: RowDiff): string {
  const parts: string[] = [];
  if (d.differ.length) parts.push(`${d.differ.length} with other values`);
  if (d.missing.length) parts.push(`${d.missing.length} missing`);
  if (d.extra.length) parts.push(`${d.extra.length} extra`);
  return parts.join(', ') || 'none';
}
