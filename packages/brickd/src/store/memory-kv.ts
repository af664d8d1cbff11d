import type { KvEntry, KvRangeOptions, KvStore, KvWrite } from './kv.js';

/** In-memory KvStore for unit tests and simulation; same contract as LevelDB. */
export class MemoryKv implements KvStore {
  private readonly map = new Map<string, Buffer>();
  private sorted: string[] | undefined;
  /** Batches written, for tests that check atomicity and sync. */
  writes = 0;

  async open(): Promise<void> {}
  async close(): Promise<void> {}

  async get(key: Buffer): Promise<Buffer | undefined> {
    const v = this.map.get(key.toString('latin1'));
    return v && Buffer.from(v);
  }

  async getMany(keys: Buffer[]): Promise<(Buffer | undefined)[]> {
    return Promise.all(keys.map((k) => this.get(k)));
  }

  async range(opts: KvRangeOptions): Promise<KvEntry[]> {
    this.sorted ??= [...this.map.keys()].sort((a, b) =>
      Buffer.compare(Buffer.from(a, 'latin1'), Buffer.from(b, 'latin1')),
    );
    const out: KvEntry[] = [];
    const keys = opts.reverse ? [...this.sorted].reverse() : this.sorted;
    for (const k of keys) {
      const key = Buffer.from(k, 'latin1');
      if (opts.gte && Buffer.compare(key, opts.gte) < 0) continue;
      if (opts.gt && Buffer.compare(key, opts.gt) <= 0) continue;
      if (Buffer.compare(key, opts.lt) >= 0) continue;
      if (opts.limit !== undefined && out.length >= opts.limit) break;
      out.push({ key, value: Buffer.from(this.map.get(k)!) });
    }
    return out;
  }

  async write(batch: KvWrite[], _sync: boolean): Promise<void> {
    for (const w of batch) {
      const k = w.key.toString('latin1');
      if (w.value === undefined) this.map.delete(k);
      else this.map.set(k, Buffer.from(w.value));
    }
    this.sorted = undefined;
    this.writes++;
  }
}
