import { FsError } from '@dunix/proto';
import { type Clock, realClock } from './clock.js';
import type { KvBackend, KvCompare, KvEntry, KvPut, KvRange } from './kv.js';

interface StoredLease {
  ttlMs: number;
  keys: Set<string>;
  timer: unknown;
}

/**
 * An in-memory stand-in for etcd with the semantics the coordinator relies
 * on: a revision per change, all-or-nothing transactions with mod-revision
 * compares, leases that expire after their TTL and delete their keys, and
 * prefix watches notified after each change. One MemoryKv is one cluster;
 * any number of MemoryCoordinators share it. Lease TTLs are exact
 * milliseconds (etcd rounds to seconds).
 */
export class MemoryKv implements KvBackend {
  private readonly data = new Map<
    string,
    { value: string; modRevision: number; lease: string | undefined }
  >();
  private readonly leases = new Map<string, StoredLease>();
  private readonly watchers = new Set<{ prefix: string; fn: (changed: string[] | undefined) => void }>();
  private revision = 1;
  private nextLease = 0x7a11;
  private available = true;

  constructor(private readonly clock: Clock = realClock) {}

  /** Fault injection: while unavailable, every call fails with UNAVAILABLE. */
  setAvailable(available: boolean): void {
    this.available = available;
  }

  private check(): void {
    if (!this.available) throw new FsError('UNAVAILABLE', 'control plane unreachable');
  }

  async probe(_timeoutMs: number): Promise<void> {
    this.check();
  }

  async range(prefix: string): Promise<KvRange> {
    this.check();
    const entries: KvEntry[] = [];
    for (const [key, v] of this.data) if (key.startsWith(prefix)) entries.push({ key, ...v });
    entries.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return { entries, revision: this.revision };
  }

  async get(key: string): Promise<KvEntry | undefined> {
    this.check();
    const v = this.data.get(key);
    return v ? { key, ...v } : undefined;
  }

  async next(from: string, prefix: string): Promise<string | undefined> {
    this.check();
    let best: string | undefined;
    for (const key of this.data.keys()) {
      if (key >= from && key.startsWith(prefix) && (best === undefined || key < best)) best = key;
    }
    return best;
  }

  async put(p: KvPut): Promise<void> {
    await this.txn([], [p]);
  }

  async txn(
    compares: KvCompare[],
    puts: KvPut[],
    deletes: string[] = [],
    deletePrefixes: string[] = [],
  ): Promise<boolean> {
    this.check();
    for (const c of compares) {
      if ('prefix' in c) {
        for (const [k, e] of this.data)
          if (k.startsWith(c.prefix) && e.modRevision > c.notWrittenAfter) return false;
      } else if ((this.data.get(c.key)?.modRevision ?? 0) !== c.modRevision) return false;
    }
    for (const p of puts)
      if (p.lease !== undefined && !this.leases.has(p.lease))
        throw new FsError('NOT_FOUND', `lease ${p.lease}`);
    const named = new Set(deletes);
    const gone = [...this.data.keys()].filter(
      (k) => named.has(k) || deletePrefixes.some((p) => k.startsWith(p)),
    );
    if (puts.length === 0 && gone.length === 0) return true;
    this.revision++;
    for (const k of gone) {
      const old = this.data.get(k)!;
      if (old.lease !== undefined) this.leases.get(old.lease)?.keys.delete(k);
      this.data.delete(k);
    }
    for (const p of puts) {
      const old = this.data.get(p.key);
      if (old?.lease !== undefined) this.leases.get(old.lease)?.keys.delete(p.key);
      this.data.set(p.key, { value: p.value, modRevision: this.revision, lease: p.lease });
      if (p.lease !== undefined) this.leases.get(p.lease)!.keys.add(p.key);
    }
    this.notify([...gone, ...puts.map((p) => p.key)]);
    return true;
  }

  async grantLease(ttlMs: number): Promise<string> {
    this.check();
    const id = (this.nextLease++).toString();
    const lease: StoredLease = { ttlMs, keys: new Set(), timer: undefined };
    this.leases.set(id, lease);
    this.arm(id, lease);
    return id;
  }

  private arm(id: string, lease: StoredLease): void {
    if (lease.timer !== undefined) this.clock.clearTimeout(lease.timer);
    lease.timer = this.clock.setTimeout(() => this.expire(id), lease.ttlMs);
  }

  /** Deletes the lease and every key bound to it (expiry or revoke). */
  private expire(id: string): void {
    const lease = this.leases.get(id);
    if (!lease) return;
    this.leases.delete(id);
    if (lease.timer !== undefined) this.clock.clearTimeout(lease.timer);
    const gone = [...lease.keys];
    if (gone.length === 0) return;
    this.revision++;
    for (const k of gone) this.data.delete(k);
    this.notify(gone);
  }

  async keepalive(lease: string, _timeoutMs: number): Promise<boolean> {
    this.check();
    const l = this.leases.get(lease);
    if (!l) return false;
    this.arm(lease, l);
    return true;
  }

  async revokeLease(lease: string): Promise<void> {
    this.check();
    this.expire(lease);
  }

  /** Lease ids currently held (for tests that revoke one behind its owner's back). */
  leaseOf(key: string): string | undefined {
    return this.data.get(key)?.lease;
  }

  async watchPrefix(
    prefix: string,
    onEvent: (changed: string[] | undefined) => void,
  ): Promise<() => Promise<void>> {
    this.check();
    const w = { prefix, fn: onEvent };
    this.watchers.add(w);
    return async () => {
      this.watchers.delete(w);
    };
  }

  private notify(changed: string[]): void {
    for (const w of this.watchers) {
      const mine = changed.filter((k) => k.startsWith(w.prefix));
      if (mine.length) queueMicrotask(() => this.watchers.has(w) && w.fn(mine));
    }
  }

  /** The cluster outlives its sessions: closing a session closes nothing. */
  async close(): Promise<void> {}
}
