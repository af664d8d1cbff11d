import { closeSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import type { KvEntry, KvRangeOptions, KvStore, KvWrite } from './kv.js';

/**
 * Why this layer exists: an unsynced LevelDB batch from Node is a round trip
 * through libuv's thread pool, 140 µs on an idle core of this machine and
 * 0.5-0.8 ms inside a busy brick (the completion waits for the main thread),
 * and every replicated entry waits for one on the primary and one on each
 * replica before it is acknowledged. An unsynced batch promises only that a
 * killed process loses nothing (the OS holds the bytes); a synchronous
 * `write(2)` to an append-only journal promises the same in ~5 µs.
 *
 * So an unsynced write is appended to the journal synchronously, kept in an
 * in-memory overlay that every read consults, and resolved at once; the
 * batches reach LevelDB behind it, in order, merged into one batch per
 * thread-pool trip. On open, the journal's records are written to LevelDB
 * again (a record already there is rewritten with the same values: replaying
 * a suffix of batches in order ends in the same state) and the journal is
 * emptied. A synced write (and so the group commit's sync) first waits until
 * every earlier batch is in LevelDB, whose log is one file: syncing it makes
 * them durable too, so the journal itself is never synced.
 *
 * Journal record: u32 payload length, u32 CRC-32 of the payload, payload =
 * u32 write count, then per write u32 key length, key, i32 value length
 * (-1: delete), value. A torn tail (a machine crash during an unsynced
 * append) fails its check and ends the replay: nothing synced is in it.
 */
export interface JournalKvOptions {
  /** Unflushed writes kept in memory before write() waits for LevelDB (backpressure). */
  overlayMaxEntries: number;
  /** The journal is emptied once it is this big and everything in it is in LevelDB. */
  journalMaxBytes: number;
  /**
   * How long unsynced batches wait before going to LevelDB, so that several
   * share one batch (a synced write, a drain or a full overlay go at once).
   */
  flushDelayMs: number;
}

export const journalKvDefaults: Readonly<JournalKvOptions> = {
  overlayMaxEntries: 20_000,
  journalMaxBytes: 16 * 1024 * 1024,
  flushDelayMs: 0,
};

const RECORD_HEADER_BYTES = 8;
const DELETED = -1;

interface Pending {
  /** Generation of the write: the overlay entry is dropped only by the flush of its own write. */
  gen: number;
  value: Buffer | null;
}

interface QueuedBatch {
  writes: KvWrite[];
  gens: number[];
  /** A synced write's caller, answered once its LevelDB batch is synced. */
  sync?: { resolve: () => void; reject: (err: Error) => void };
}

export class JournalKv implements KvStore {
  private fd: number | undefined;
  private journalBytes = 0;
  /** Latest unflushed value per key (latin1 string of the key). */
  private readonly overlay = new Map<string, Pending>();
  /** Batches appended to the journal, not yet handed to LevelDB. */
  private queue: QueuedBatch[] = [];
  private flushing: Promise<void> | undefined;
  private gen = 0;
  private failure: Error | undefined;
  private readonly o: JournalKvOptions;

  constructor(
    private readonly inner: KvStore,
    readonly journalPath: string,
    options: Partial<JournalKvOptions> = {},
  ) {
    this.o = { ...journalKvDefaults, ...options };
    if (!(this.o.overlayMaxEntries >= 1)) throw new RangeError('overlayMaxEntries must be >= 1');
    if (!(this.o.journalMaxBytes >= 1)) throw new RangeError('journalMaxBytes must be >= 1');
    if (!(this.o.flushDelayMs >= 0 && this.o.flushDelayMs <= 10_000))
      throw new RangeError('flushDelayMs must be 0..10000');
  }

  /** Records replayed by the last open (tests, logs). */
  replayedRecords = 0;

  async open(): Promise<void> {
    if (this.fd !== undefined) return;
    await this.inner.open();
    const batches = readJournal(this.journalPath);
    for (const batch of batches) await this.inner.write(batch, false);
    this.replayedRecords = batches.length;
    // Every replayed batch is in LevelDB's log now (as safe against a kill as the journal was).
    this.fd = openSync(this.journalPath, 'a', 0o600);
    ftruncateSync(this.fd, 0);
    this.journalBytes = 0;
    this.failure = undefined;
  }

  async close(): Promise<void> {
    if (this.fd === undefined) return this.inner.close();
    await this.drain().catch(() => {});
    const fd = this.fd;
    this.fd = undefined;
    // Everything is in LevelDB, which flushes its log on close.
    if (!this.failure) ftruncateSync(fd, 0);
    closeSync(fd);
    this.overlay.clear();
    await this.inner.close();
  }

  private live(): number {
    if (this.failure) throw this.failure;
    if (this.fd === undefined) throw new Error(`JournalKv ${this.journalPath} is not open`);
    return this.fd;
  }

  async get(key: Buffer): Promise<Buffer | undefined> {
    this.live();
    const p = this.overlay.get(key.toString('latin1'));
    if (p) return p.value === null ? undefined : Buffer.from(p.value);
    return this.inner.get(key);
  }

  async getMany(keys: Buffer[]): Promise<(Buffer | undefined)[]> {
    this.live();
    const out: (Buffer | undefined)[] = new Array(keys.length);
    const missing: number[] = [];
    keys.forEach((k, i) => {
      const p = this.overlay.get(k.toString('latin1'));
      if (p) out[i] = p.value === null ? undefined : Buffer.from(p.value);
      else missing.push(i);
    });
    if (missing.length > 0) {
      const got = await this.inner.getMany(missing.map((i) => keys[i]!));
      missing.forEach((i, j) => (out[i] = got[j]));
    }
    return out;
  }

  async range(opts: KvRangeOptions): Promise<KvEntry[]> {
    this.live();
    if (opts.limit !== undefined && opts.limit <= 0) return [];
    // The overlay's keys in the range, as they are now (a write during the inner read is concurrent).
    const mine: [Buffer, Buffer | null][] = [];
    for (const [k, p] of this.overlay) {
      const key = Buffer.from(k, 'latin1');
      if (inRange(key, opts)) mine.push([key, p.value === null ? null : Buffer.from(p.value)]);
    }
    if (mine.length === 0) return this.inner.range(opts);
    // Each overlay key can hide at most one stored key: ask for that many more.
    const want = opts.limit === undefined ? undefined : opts.limit + mine.length;
    const stored = await this.inner.range(want === undefined ? opts : { ...opts, limit: want });
    const reverse = opts.reverse ?? false;
    // Past the last stored key read, unread stored keys may come before overlay keys: stop there.
    const edge = want !== undefined && stored.length === want ? stored[stored.length - 1]!.key : undefined;
    const merged = new Map<string, KvEntry | null>();
    for (const e of stored) merged.set(e.key.toString('latin1'), e);
    for (const [key, value] of mine)
      merged.set(key.toString('latin1'), value === null ? null : { key, value });
    let out = [...merged.values()].filter((e): e is KvEntry => e !== null);
    if (edge)
      out = out.filter((e) =>
        reverse ? Buffer.compare(e.key, edge) >= 0 : Buffer.compare(e.key, edge) <= 0,
      );
    out.sort((a, b) => (reverse ? Buffer.compare(b.key, a.key) : Buffer.compare(a.key, b.key)));
    return opts.limit === undefined ? out : out.slice(0, opts.limit);
  }

  async write(batch: KvWrite[], sync: boolean): Promise<void> {
    const fd = this.live();
    if (batch.length === 0) {
      if (sync) await this.drain();
      return this.inner.write(batch, sync);
    }
    // Every batch, synced or not, is journaled and goes to LevelDB through the
    // one queue, so LevelDB and a replay see the batches in the order they were made.
    // One copy of the caller's bytes, which the overlay and the LevelDB batch share.
    const { record, writes } = encodeRecord(batch);
    writeSync(fd, record);
    this.journalBytes += record.length;
    const gens: number[] = [];
    for (const w of writes) {
      const gen = ++this.gen;
      gens.push(gen);
      this.overlay.set(w.key.toString('latin1'), { gen, value: w.value ?? null });
    }
    if (!sync) {
      this.queue.push({ writes, gens });
      if (this.overlay.size > this.o.overlayMaxEntries) await this.startFlush();
      else if (this.overlay.size * 2 > this.o.overlayMaxEntries) void this.startFlush();
      else this.scheduleFlush();
      return;
    }
    await new Promise<void>((resolve, reject) => {
      this.queue.push({ writes, gens, sync: { resolve, reject } });
      void this.startFlush();
    });
  }

  /** Resolves once every write made before the call is in LevelDB. */
  async drain(): Promise<void> {
    if (this.queue.length > 0) void this.startFlush();
    while (this.flushing) await this.flushing;
    if (this.failure) throw this.failure;
  }

  private flushTimer: NodeJS.Timeout | undefined;

  private scheduleFlush(): void {
    if (this.o.flushDelayMs === 0) {
      void this.startFlush();
      return;
    }
    if (this.flushing || this.flushTimer) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      void this.startFlush();
    }, this.o.flushDelayMs);
  }

  private startFlush(): Promise<void> {
    if (this.flushTimer) {
      clearTimeout(this.flushTimer);
      this.flushTimer = undefined;
    }
    // A failed flush is reported to synced writers and to every later call (live()).
    this.flushing ??= this.flushLoop().catch(() => {});
    return this.flushing;
  }

  private async flushLoop(): Promise<void> {
    try {
      await this.flushQueued();
    } finally {
      // Cleared in the same turn as the loop saw the queue empty: a batch queued
      // after it starts a new loop (a later clear would strand it).
      this.flushing = undefined;
    }
  }

  private async flushQueued(): Promise<void> {
    // After this turn's I/O callbacks: a reply the caller sends once its write
    // resolved leaves before the LevelDB call (~20 µs idle, far more in a busy
    // brick) runs, and writes made meanwhile share its batch.
    await new Promise<void>((resolve) => setImmediate(resolve));
    while (this.queue.length > 0) {
      const taken = this.queue;
      this.queue = [];
      const writes = taken.flatMap((b) => b.writes);
      const sync = taken.some((b) => b.sync);
      try {
        if (this.failure) throw this.failure;
        await this.inner.write(writes, sync);
      } catch (err) {
        // The journal holds these batches; LevelDB refused them. Nothing more is
        // acknowledged by this store: the brick must stop (a restart replays).
        this.failure ??= new Error(`JournalKv: LevelDB write failed: ${String(err)}`);
        for (const b of [...taken, ...this.queue]) b.sync?.reject(this.failure);
        this.queue = [];
        return;
      }
      for (const b of taken) {
        b.writes.forEach((w, i) => {
          const k = w.key.toString('latin1');
          if (this.overlay.get(k)?.gen === b.gens[i]) this.overlay.delete(k);
        });
      }
      for (const b of taken) b.sync?.resolve();
    }
    if (this.journalBytes >= this.o.journalMaxBytes && this.fd !== undefined) {
      // Everything journaled is in LevelDB (the queue is empty): start the journal again.
      ftruncateSync(this.fd, 0);
      this.journalBytes = 0;
    }
  }

  /** Unflushed keys (tests, metrics). */
  get overlaySize(): number {
    return this.overlay.size;
  }
}

function inRange(key: Buffer, o: KvRangeOptions): boolean {
  if (o.gte && Buffer.compare(key, o.gte) < 0) return false;
  if (o.gt && Buffer.compare(key, o.gt) <= 0) return false;
  return Buffer.compare(key, o.lt) < 0;
}

/** The record of `batch`, and its writes as views of the record (one copy of the caller's bytes). */
function encodeRecord(batch: KvWrite[]): { record: Buffer; writes: KvWrite[] } {
  let size = RECORD_HEADER_BYTES + 4;
  for (const w of batch) size += 8 + w.key.length + (w.value?.length ?? 0);
  const buf = Buffer.allocUnsafe(size);
  const writes: KvWrite[] = [];
  let at = RECORD_HEADER_BYTES;
  at = buf.writeUInt32LE(batch.length, at);
  for (const w of batch) {
    at = buf.writeUInt32LE(w.key.length, at);
    const key = buf.subarray(at, at + w.key.length);
    at += w.key.copy(buf, at);
    at = buf.writeInt32LE(w.value === undefined ? DELETED : w.value.length, at);
    let value: Buffer | undefined;
    if (w.value) {
      value = buf.subarray(at, at + w.value.length);
      at += w.value.copy(buf, at);
    }
    writes.push({ key, value });
  }
  buf.writeUInt32LE(size - RECORD_HEADER_BYTES, 0);
  buf.writeUInt32LE(crc32(buf.subarray(RECORD_HEADER_BYTES)), 4);
  return { record: buf, writes };
}

/** The writes of a record's payload, as views of it. */
function decodePayload(p: Buffer): KvWrite[] {
  let at = 0;
  const need = (n: number) => {
    if (at + n > p.length) throw new Error('journal record is shorter than its writes');
  };
  need(4);
  const count = p.readUInt32LE(at);
  at += 4;
  const out: KvWrite[] = [];
  for (let i = 0; i < count; i++) {
    need(4);
    const kl = p.readUInt32LE(at);
    at += 4;
    need(kl + 4);
    const key = p.subarray(at, at + kl);
    at += kl;
    const vl = p.readInt32LE(at);
    at += 4;
    if (vl === DELETED) {
      out.push({ key, value: undefined });
      continue;
    }
    if (vl < 0) throw new Error(`journal record has value length ${vl}`);
    need(vl);
    out.push({ key, value: p.subarray(at, at + vl) });
    at += vl;
  }
  if (at !== p.length) throw new Error('journal record has bytes after its writes');
  return out;
}

/** The journal's whole records, in order; reading stops at the first torn or damaged one. */
export function readJournal(path: string): KvWrite[][] {
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const out: KvWrite[][] = [];
  let at = 0;
  while (at + RECORD_HEADER_BYTES <= data.length) {
    const len = data.readUInt32LE(at);
    const end = at + RECORD_HEADER_BYTES + len;
    if (end > data.length) break;
    const payload = data.subarray(at + RECORD_HEADER_BYTES, end);
    if (crc32(payload) !== data.readUInt32LE(at + 4)) break;
    try {
      out.push(decodePayload(payload));
    } catch {
      break;
    }
    at = end;
  }
  return out;
}
