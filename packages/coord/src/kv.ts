/**
 * The small slice of etcd the coordinator needs. EtcdKv maps it onto etcd's
 * KV, Lease and Watch services; MemoryKv implements it in memory with the
 * same semantics (revisions, leases that expire, prefix watches), so one
 * coordinator implementation runs on both.
 */
export interface KvEntry {
  key: string;
  value: string;
  /** Revision of the last change to this key. */
  modRevision: number;
  /** Lease id the key is bound to, or undefined. */
  lease: string | undefined;
}

export interface KvPut {
  key: string;
  value: string;
  lease?: string;
}

/**
 * Key form: holds when the key's mod revision equals `modRevision`; 0 means
 * "the key does not exist". Prefix form: holds when no key under `prefix`
 * was written after revision `notWrittenAfter` (deleted keys are not seen).
 */
export type KvCompare = { key: string; modRevision: number } | { prefix: string; notWrittenAfter: number };

export interface KvRange {
  /** Sorted by key. */
  entries: KvEntry[];
  /** Store revision the range was read at. */
  revision: number;
}

export interface KvBackend {
  /** Fails if the store does not answer within the deadline. */
  probe(timeoutMs: number): Promise<void>;
  range(prefix: string): Promise<KvRange>;
  get(key: string): Promise<KvEntry | undefined>;
  /** The smallest key >= `from` that starts with `prefix`, or undefined. */
  next(from: string, prefix: string): Promise<string | undefined>;
  put(p: KvPut): Promise<void>;
  /**
   * All puts and deletes if every compare holds, else nothing; true when
   * applied. `deletePrefixes`: every key under each prefix is deleted too
   * (one range delete each, however many keys). No put or named delete may
   * fall under a deleted prefix (etcd refuses overlapping operations).
   */
  txn(compares: KvCompare[], puts: KvPut[], deletes?: string[], deletePrefixes?: string[]): Promise<boolean>;
  grantLease(ttlMs: number): Promise<string>;
  /** Renews the lease; false when the store no longer has it (expired or revoked). */
  keepalive(lease: string, timeoutMs: number): Promise<boolean>;
  /** Ends the lease and deletes its keys; any session's lease, and a no-op for one already gone. */
  revokeLease(lease: string): Promise<void>;
  /**
   * Calls `onEvent` with the changed keys after any change under `prefix`,
   * or with undefined after the watch reconnects (changes may have been
   * missed). Resolves once the watch is established; the returned function
   * cancels it.
   */
  watchPrefix(prefix: string, onEvent: (changed: string[] | undefined) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}
