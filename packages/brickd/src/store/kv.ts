/**
 * The brick's key-value store: ordered byte keys, atomic batches. One store
 * per brick holds every PG it serves, each PG under its own key prefix (see
 * keys.ts). Implemented by LevelDB (leveldb-kv.ts) and memory (memory-kv.ts),
 * both checked by the same compliance suite.
 */
export interface KvWrite {
  key: Buffer;
  /** undefined deletes the key. */
  value: Buffer | undefined;
}

export interface KvEntry {
  key: Buffer;
  value: Buffer;
}

export interface KvRangeOptions {
  /** Keys >= gte (or > gt). */
  gte?: Buffer;
  gt?: Buffer;
  /** Keys < lt. */
  lt: Buffer;
  limit?: number;
  reverse?: boolean;
}

export interface KvStore {
  open(): Promise<void>;
  close(): Promise<void>;
  get(key: Buffer): Promise<Buffer | undefined>;
  getMany(keys: Buffer[]): Promise<(Buffer | undefined)[]>;
  range(opts: KvRangeOptions): Promise<KvEntry[]>;
  /** Applies all writes atomically; with sync, durable on return. */
  write(batch: KvWrite[], sync: boolean): Promise<void>;
}

/**
 * The smallest key greater than every key starting with prefix. An all-0xff
 * prefix has no such key; brick keys never are one (a PG prefix is followed
 * by a kind byte below 0xff), so asking is a bug.
 */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return end.subarray(0, i + 1);
    }
  }
  throw new RangeError(`prefix ${prefix.toString('hex')} has no finite end`);
}
