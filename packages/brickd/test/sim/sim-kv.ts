import type { KvEntry, KvRangeOptions, KvStore, KvWrite } from '../../src/store/kv.js';

/**
 * A brick's key-value store in the simulation: MemoryKv's contract (ordered
 * byte keys, atomic batches, values copied in and out; nothing is lost by a
 * crash) with a sorted index, so a range costs O(log n + results). MemoryKv
 * re-sorts and scans every key on each range, and the recovery sweep ranges
 * every PG several times a second: over a run's few thousand keys per brick
 * that was most of a seed's time. sim-kv.test.ts checks both agree.
 *
 * Keys are held as latin1 strings: one UTF-16 unit per byte, so string order
 * is byte order.
 */
export class SimKv implements KvStore {
  private readonly map = new Map<string, Buffer>();
  private readonly sorted: string[] = [];
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

  /** First index whose key is >= k (or > k when `after`). */
  private bound(k: string, after: boolean): number {
    let lo = 0;
    let hi = this.sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const m = this.sorted[mid]!;
      if (m < k || (after && m === k)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  async range(opts: KvRangeOptions): Promise<KvEntry[]> {
    let from = 0;
    if (opts.gte) from = Math.max(from, this.bound(opts.gte.toString('latin1'), false));
    if (opts.gt) from = Math.max(from, this.bound(opts.gt.toString('latin1'), true));
    const to = this.bound(opts.lt.toString('latin1'), false);
    const limit = opts.limit ?? Infinity;
    const out: KvEntry[] = [];
    const take = (i: number) =>
      out.push({
        key: Buffer.from(this.sorted[i]!, 'latin1'),
        value: Buffer.from(this.map.get(this.sorted[i]!)!),
      });
    if (opts.reverse) for (let i = to - 1; i >= from && out.length < limit; i--) take(i);
    else for (let i = from; i < to && out.length < limit; i++) take(i);
    return out;
  }

  async write(batch: KvWrite[], _sync: boolean): Promise<void> {
    for (const w of batch) {
      const k = w.key.toString('latin1');
      if (w.value === undefined) {
        if (this.map.delete(k)) this.sorted.splice(this.bound(k, false), 1);
      } else {
        if (!this.map.has(k)) this.sorted.splice(this.bound(k, false), 0, k);
        this.map.set(k, Buffer.from(w.value));
      }
    }
    this.writes++;
  }
}
