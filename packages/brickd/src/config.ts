/**
 * Brick knobs: every bound the daemon applies, with defaults and the
 * cross-field rules (docs/LIMITS.md, "brickd").
 */
export interface BrickKnobs {
  /** Liveness lease in etcd. */
  leaseTtlMs: number;
  /** Sequences reserved per persisted allocation step. */
  seqReserveBatch: number;
  /** Op log entries kept per PG (with their request ids, for retries). */
  opLogRetain: number;
  /** Deadline of brick-to-brick calls. */
  peerCallTimeoutMs: number;
  /** How long a mutation waits for conflicting transactions before giving up. */
  conflictWaitMaxMs: number;
  /** Cross-PG transaction attempts before CONFLICT is returned. */
  txAttemptsMax: number;
  /** Age after which a prepared transaction asks its coordinator for the outcome. */
  txResolveAfterMs: number;
  /** Interval of the recovery sweep (prepared and decided transactions, orphan directories, catch-up). */
  recoveryIntervalMs: number;
  /**
   * An O_TMPFILE inode whose owning mount has no session record is reclaimed
   * once it is this old (covers a mount record not yet visible in etcd).
   */
  orphanOwnerGraceMs: number;
  /** A replica that has not taken an entry within this is dropped from the in-sync set. */
  replicateTimeoutMs: number;
  /**
   * Entries a PG's primary may have written and sent but not yet had
   * acknowledged by every in-sync replica (pipelined appends); also the most
   * entries one live Replicate carries. 1: one entry at a time.
   */
  replicateInflightMax: number;
  /** Block bytes one live Replicate carries (an entry with more goes alone). */
  replicateBatchBytesMax: number;
  /** Entries per Replicate call while catching a replica up. */
  catchUpBatchEntries: number;
  /** Catch-up sends the last this-many entries with appends held, then adds the replica to the set. */
  catchUpFinalEntries: number;
  /** Keys per backfill chunk, and block bytes per chunk. */
  backfillChunkKeys: number;
  backfillChunkBytes: number;
  /** A primary stops acknowledging this long before its lease could have expired in etcd. */
  leaseFenceMarginMs: number;
  /**
   * Group commit window: writes are synced to disk within this many ms
   * (fsync-family calls sync at once); 0 syncs every entry before it is
   * acknowledged. See store/group-commit.ts.
   */
  groupCommitMs: number;
  /**
   * Unsynced store writes go to a journal with a synchronous append and reach
   * LevelDB behind the caller (store/journal-kv.ts); off: each waits for its
   * LevelDB batch. Only with group commit (groupCommitMs > 0).
   */
  kvJournal: boolean;
  /** LevelDB point reads on the main thread (store/leveldb-kv.ts `get`); off: through the thread pool. */
  kvSyncReads: boolean;
  /**
   * Aligned block writes of 64 KiB or more bypass the page cache (O_DIRECT,
   * store/direct-io.ts); off, or on a filesystem that refuses it: buffered.
   */
  directIo: boolean;
  /** Scrub: keys per compared range, and block bytes per range (read with the PG's appends held). */
  scrubChunkKeys: number;
  scrubChunkBytes: number;
  /** Scrub reads of the PGs this brick leads, bytes per second, when the scrub job sets no limit (0: none). */
  scrubBytesPerS: number;
  /** While a scrub job runs: how often the brick looks again for PGs it leads that are not scrubbed yet. */
  scrubRescanMs: number;
  /** How often the brick measures its space and publishes it (dunixctl df, the full threshold). */
  usageIntervalMs: number;
  /** Longest a SetLock call waits at the brick before answering `waiting` (the client calls again). */
  lockWaitSliceMaxMs: number;
  /** A waiter between two of its calls keeps its place in line this long. */
  lockWaitKeepMs: number;
  /** Locks one inode may carry (more: ENOLCK). */
  locksPerInodeMax: number;
  /** How often the primary looks for locks of sessions whose mount record is gone. */
  lockSessionCheckMs: number;
  /**
   * Lifetime of a block grant (rpc/block-grants.ts): how long an Open's
   * permission check stands for the file's block RPCs. The client renews
   * a grant (a new Open) once half of it has passed.
   */
  blockGrantTtlMs: number;
  /** Grants remembered, each kind: issued (reused for the same open) and verified (no second RSA check). */
  blockGrantCacheMax: number;
}

export const brickDefaults: BrickKnobs = {
  leaseTtlMs: 2000,
  seqReserveBatch: 4096,
  opLogRetain: 1024,
  peerCallTimeoutMs: 10_000,
  conflictWaitMaxMs: 10_000,
  txAttemptsMax: 50,
  txResolveAfterMs: 2000,
  recoveryIntervalMs: 1000,
  orphanOwnerGraceMs: 30_000,
  replicateTimeoutMs: 2000,
  replicateInflightMax: 32,
  replicateBatchBytesMax: 8 * 1024 * 1024,
  catchUpBatchEntries: 256,
  catchUpFinalEntries: 64,
  backfillChunkKeys: 1024,
  backfillChunkBytes: 8 * 1024 * 1024,
  leaseFenceMarginMs: 600,
  groupCommitMs: 10,
  kvJournal: true,
  kvSyncReads: true,
  directIo: true,
  scrubChunkKeys: 1024,
  scrubChunkBytes: 4 * 1024 * 1024,
  scrubBytesPerS: 16 * 1024 * 1024,
  scrubRescanMs: 5000,
  usageIntervalMs: 5000,
  lockWaitSliceMaxMs: 5000,
  lockWaitKeepMs: 10_000,
  locksPerInodeMax: 4096,
  lockSessionCheckMs: 1000,
  blockGrantTtlMs: 3_600_000,
  blockGrantCacheMax: 65_536,
};

export function validateBrickKnobs(k: BrickKnobs): BrickKnobs {
  const bad: string[] = [];
  const positive = (
    name: Exclude<keyof BrickKnobs, 'kvJournal' | 'kvSyncReads' | 'directIo'>,
    max: number,
  ) => {
    const v = k[name];
    if (!Number.isInteger(v) || v < 1 || v > max) bad.push(`${name} ${v} must be 1..${max}`);
  };
  positive('leaseTtlMs', 600_000);
  positive('seqReserveBatch', 1 << 20);
  positive('opLogRetain', 1 << 20);
  positive('peerCallTimeoutMs', 600_000);
  positive('conflictWaitMaxMs', 600_000);
  positive('txAttemptsMax', 1000);
  positive('txResolveAfterMs', 600_000);
  positive('recoveryIntervalMs', 600_000);
  positive('orphanOwnerGraceMs', 86_400_000);
  positive('replicateTimeoutMs', 600_000);
  positive('replicateInflightMax', 4096);
  positive('replicateBatchBytesMax', 1 << 30);
  positive('catchUpBatchEntries', 65_536);
  positive('catchUpFinalEntries', 65_536);
  positive('backfillChunkKeys', 1 << 20);
  positive('backfillChunkBytes', 1 << 30);
  positive('leaseFenceMarginMs', 600_000);
  positive('scrubChunkKeys', 65_536);
  positive('scrubChunkBytes', 64 * 1024 * 1024);
  positive('scrubRescanMs', 3_600_000);
  positive('usageIntervalMs', 3_600_000);
  positive('lockWaitSliceMaxMs', 600_000);
  positive('lockWaitKeepMs', 600_000);
  positive('locksPerInodeMax', 1 << 20);
  positive('lockSessionCheckMs', 600_000);
  positive('blockGrantTtlMs', 7 * 86_400_000);
  positive('blockGrantCacheMax', 1 << 22);
  if (k.blockGrantTtlMs < 60_000) bad.push('blockGrantTtlMs must be >= 60000 (clocks of hosts differ)');
  if (!Number.isInteger(k.scrubBytesPerS) || k.scrubBytesPerS < 0 || k.scrubBytesPerS > 2 ** 40)
    bad.push(`scrubBytesPerS ${k.scrubBytesPerS} must be 0..2^40`);
  if (!Number.isInteger(k.groupCommitMs) || k.groupCommitMs < 0 || k.groupCommitMs > 1000)
    bad.push(`groupCommitMs ${k.groupCommitMs} must be 0..1000`);
  if (typeof k.kvJournal !== 'boolean') bad.push(`kvJournal ${String(k.kvJournal)} must be true or false`);
  if (typeof k.kvSyncReads !== 'boolean')
    bad.push(`kvSyncReads ${String(k.kvSyncReads)} must be true or false`);
  if (typeof k.directIo !== 'boolean') bad.push(`directIo ${String(k.directIo)} must be true or false`);
  if (k.leaseFenceMarginMs * 2 > k.leaseTtlMs) bad.push('leaseFenceMarginMs must be <= leaseTtlMs / 2');
  if (k.catchUpFinalEntries > k.opLogRetain) bad.push('catchUpFinalEntries must be <= opLogRetain');
  // The log is trimmed opLogRetain entries back: never past one still on its way to a replica.
  if (k.replicateInflightMax * 2 > k.opLogRetain) bad.push('replicateInflightMax must be <= opLogRetain / 2');
  if (k.lockWaitKeepMs <= k.lockWaitSliceMaxMs) bad.push('lockWaitKeepMs must be > lockWaitSliceMaxMs');
  if (k.leaseTtlMs < 2000) bad.push('leaseTtlMs must be >= 2000 (etcd keepalive granularity)');
  if (k.txResolveAfterMs >= k.peerCallTimeoutMs * 10)
    bad.push('txResolveAfterMs must be < 10 x peerCallTimeoutMs');
  if (bad.length) throw new RangeError(`invalid brick knobs: ${bad.join('; ')}`);
  return k;
}
