/**
 * What zeroing the file bytes [from, to) does to one block file that holds
 * `length` bytes from the block's start (pure; the caller appends it as one
 * log entry): nothing when the range misses the stored bytes, DELETE when it
 * covers all of them, TRUNCATE when it covers their end, else a WRITE of
 * zeros over the part inside.
 */
export type PunchPlan =
  { kind: 'DELETE' } | { kind: 'TRUNCATE'; keep: number } | { kind: 'ZERO'; offset: number; length: number };

export function punchPlan(
  length: number,
  index: bigint,
  blockSizeBytes: number,
  from: bigint,
  to: bigint,
): PunchPlan | undefined {
  const start = index * BigInt(blockSizeBytes);
  const s = from > start ? Number(from - start) : 0;
  const toInBlock = to - start;
  const e = toInBlock >= BigInt(blockSizeBytes) ? blockSizeBytes : toInBlock <= 0n ? 0 : Number(toInBlock);
  if (s >= length || e <= s) return undefined;
  if (e >= length) return s === 0 ? { kind: 'DELETE' } : { kind: 'TRUNCATE', keep: s };
  return { kind: 'ZERO', offset: s, length: e - s };
}
