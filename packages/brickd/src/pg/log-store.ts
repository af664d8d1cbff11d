import { FsError } from '@dunix/proto';
import type { BlockFiles } from '../store/block-files.js';
import { syncEachWrite, type Durability } from '../store/group-commit.js';
import { isBrickKey, KeyKind, keys, kindOfKey, pgOfKey } from '../store/keys.js';
import { prefixEnd, type KvStore, type KvWrite } from '../store/kv.js';
import { decodeRecord, encodeRecord, type BlockRecord } from '../store/records.js';
import {
  decodeStoredEntry,
  encodeStoredEntry,
  type BlockOp,
  type LogEntry,
  type LogPosition,
} from './log-entry.js';
import type { PgState } from './pg-state.js';

/** Record kinds the recovery sweep finishes (see PgState.sweepGen). */
const SWEPT_KINDS = new Set<number>([KeyKind.decision, KeyKind.trim, KeyKind.orphan, KeyKind.punch]);

/**
 * The storage side of a PG's log: the only code that writes a PG's key
 * range. An entry's writes and the entry itself go to the store in one
 * synced batch; the sequence advances only once that batch is written.
 */
export class LogStore {
  constructor(
    private readonly kv: KvStore,
    private readonly blocks: BlockFiles,
    private readonly blockSizeBytes: number,
    private readonly durability: Durability = syncEachWrite,
  ) {}

  /**
   * Writes an entry whose block writes are already made (the primary's path);
   * blocks the entry deletes go once their records are gone.
   */
  async write(st: PgState, e: LogEntry): Promise<void> {
    this.checkNext(st, e);
    await this.kv.write(
      [...e.writes, { key: keys.log(st.pg, e.seq), value: encodeStoredEntry(e) }],
      this.durability.syncEach,
    );
    this.durability.written();
    for (const op of e.blocks) if (op.kind === 'DELETE') await this.blocks.delete(st.pg, op.ino, op.index);
    this.advance(st, e);
  }

  /**
   * Applies an entry received from the primary: block file changes first
   * (each checked against the record the primary computed), then the writes
   * and the entry in one synced batch, then block deletions.
   */
  async apply(st: PgState, e: LogEntry): Promise<void> {
    this.checkNext(st, e);
    const pg = st.pg;
    const extra: KvWrite[] = [];
    // Several WRITE ops of one block (a client's ranges sent together): each starts from the
    // record the one before left, and only the block's last op must match the entry's record.
    const current = new Map<string, BlockRecord | undefined>();
    const recordNow = async (key: Buffer) => {
      const k = key.toString('latin1');
      return current.has(k) ? current.get(k) : this.blockRecord(key);
    };
    const lastOpOf = new Map<string, BlockOp>();
    for (const op of e.blocks) lastOpOf.set(keys.block(pg, op.ino, op.index).toString('latin1'), op);
    const settle = (key: Buffer, op: BlockOp, rec: BlockRecord | undefined) => {
      const k = key.toString('latin1');
      current.set(k, rec);
      if (lastOpOf.get(k) === op) this.expectRecord(e, key, rec);
    };
    for (const op of e.blocks) {
      const key = keys.block(pg, op.ino, op.index);
      if (op.kind === 'WRITE') {
        if (!op.data) throw new FsError('INVALID_ARGUMENT', `entry ${e.seq}: block write without bytes`);
        const rec = await this.blocks.write(
          pg,
          op.ino,
          op.index,
          op.offset,
          op.data,
          await recordNow(key),
          this.blockSizeBytes,
        );
        settle(key, op, rec);
      } else if (op.kind === 'TRUNCATE') {
        const rec = await this.blocks.truncate(pg, op.ino, op.index, op.length, await recordNow(key));
        settle(key, op, rec);
      } else if (op.kind === 'SYNC') {
        // The block's whole current content on the sender: replace ours.
        await this.blocks.delete(pg, op.ino, op.index);
        if (op.record && op.data && op.data.length > 0) {
          const rec = await this.blocks.write(
            pg,
            op.ino,
            op.index,
            0,
            op.data,
            undefined,
            this.blockSizeBytes,
          );
          const want = decodeRecord<BlockRecord>(op.record);
          if (!sameRecord(rec, want))
            throw new FsError(
              'DIVERGED',
              `entry ${e.seq}: synced block ${op.ino}/${op.index} does not match`,
            );
        }
        extra.push({ key, value: op.record });
        current.set(key.toString('latin1'), op.record && decodeRecord<BlockRecord>(op.record));
      } else if (op.kind === 'CLONE') {
        // Our own copy of the source, when it holds the very bytes: no byte travels.
        const want = decodeRecord<BlockRecord>(op.record!);
        const done = await this.blocks.clone?.(op.src!, want, { pg, ino: op.ino, index: op.index });
        if (!done)
          throw new FsError(
            'NO_CLONE_SOURCE',
            `entry ${e.seq}: block ${op.src!.ino}/${op.src!.index} of pg ${op.src!.pg} is not here as recorded`,
          );
        this.expectRecord(e, key, want);
      }
    }
    for (const w of e.writes)
      if (pgOfKey(w.key) !== pg)
        throw new FsError('INVALID_ARGUMENT', `entry ${e.seq} writes another PG's key`);
    await this.kv.write(
      [...e.writes, ...extra, { key: keys.log(pg, e.seq), value: encodeStoredEntry(e) }],
      this.durability.syncEach,
    );
    this.durability.written();
    for (const op of e.blocks) if (op.kind === 'DELETE') await this.blocks.delete(pg, op.ino, op.index);
    this.advance(st, e);
  }

  private checkNext(st: PgState, e: LogEntry): void {
    if (e.seq !== st.opSeq + 1n)
      throw new Error(`invariant: pg ${st.pg} appends seq ${e.seq} after ${st.opSeq}`);
    if (e.epoch < st.lastEpoch)
      throw new Error(
        `invariant: pg ${st.pg} entry ${e.seq} of epoch ${e.epoch} after epoch ${st.lastEpoch}`,
      );
  }

  private advance(st: PgState, e: LogEntry): void {
    if (st.firstSeq > st.opSeq) st.firstSeq = e.seq; // the log was empty
    st.opSeq = e.seq;
    st.lastEpoch = e.epoch;
    for (const w of e.writes) {
      const kind = kindOfKey(w.key);
      // Trims written by the entry move the start of the log.
      if (w.value === undefined && kind === KeyKind.log) {
        const trimmed = w.key.readBigUInt64BE(3);
        if (trimmed + 1n > st.firstSeq) st.firstSeq = trimmed + 1n;
      }
      if (w.value !== undefined && SWEPT_KINDS.has(kind)) st.sweepGen++;
    }
  }

  private expectRecord(e: LogEntry, key: Buffer, rec: BlockRecord | undefined): void {
    const w = e.writes.find((x) => x.key.equals(key));
    const want = w?.value && decodeRecord<BlockRecord>(w.value);
    if (!sameRecord(rec, want)) {
      throw new FsError('DIVERGED', `entry ${e.seq}: block file does not match the primary's record`);
    }
  }

  async blockRecord(key: Buffer): Promise<BlockRecord | undefined> {
    const v = await this.kv.get(key);
    return v && decodeRecord<BlockRecord>(v);
  }

  /** Starts a copy's log at `base`, the primary's entry the backfilled state reflects. */
  async writeBase(st: PgState, base: LogEntry): Promise<void> {
    await this.kv.write([{ key: keys.log(st.pg, base.seq), value: encodeStoredEntry(base) }], true);
    st.opSeq = base.seq;
    st.firstSeq = base.seq;
    st.lastEpoch = base.epoch;
  }

  /** Loads the log position of a PG copy from the store. */
  async loadPosition(pg: number): Promise<LogPosition> {
    const prefix = keys.kindPrefix(pg, KeyKind.log);
    const [last] = await this.kv.range({ gte: prefix, lt: prefixEnd(prefix), reverse: true, limit: 1 });
    if (!last) return { lastSeq: 0n, lastEpoch: 0, firstSeq: 1n };
    const [first] = await this.kv.range({ gte: prefix, lt: prefixEnd(prefix), limit: 1 });
    return {
      lastSeq: last.key.readBigUInt64BE(3),
      lastEpoch: decodeStoredEntry(last.value).epoch,
      firstSeq: first!.key.readBigUInt64BE(3),
    };
  }

  async entry(pg: number, seq: bigint): Promise<LogEntry | undefined> {
    const v = await this.kv.get(keys.log(pg, seq));
    return v && decodeStoredEntry(v);
  }

  /** Stored entries from `fromSeq` (at most `max`), without block bytes. */
  async entries(pg: number, fromSeq: bigint, max: number): Promise<LogEntry[]> {
    const prefix = keys.kindPrefix(pg, KeyKind.log);
    const rows = await this.kv.range({ gte: keys.log(pg, fromSeq), lt: prefixEnd(prefix), limit: max });
    const out = rows.map((r) => decodeStoredEntry(r.value));
    // The log is contiguous from firstSeq: a hole is a bug.
    out.forEach((e, i) => {
      if (e.seq !== fromSeq + BigInt(i))
        throw new Error(`invariant: pg ${pg} log has a hole before ${e.seq}`);
    });
    return out;
  }

  /**
   * The block's current content and record as a SYNC op (no record: the
   * block is gone). The caller holds the PG's append queue, so no block
   * change is half made.
   */
  async syncOp(pg: number, ino: bigint, index: bigint): Promise<BlockOp> {
    const rec = await this.blockRecord(keys.block(pg, ino, index));
    if (!rec) return { ino, index, kind: 'SYNC', offset: 0, length: 0 };
    const data = Buffer.from(await this.blocks.read(pg, ino, index, 0, rec.length, rec));
    return { ino, index, kind: 'SYNC', offset: 0, length: data.length, data, record: encodeRecord(rec) };
  }

  /** Whether this store holds any record of the PG (brick-level keys aside). */
  async holdsCopy(pg: number): Promise<boolean> {
    const prefix = keys.pgPrefix(pg);
    const rows = await this.kv.range({ gte: prefix, lt: prefixEnd(prefix), limit: 16 });
    return rows.some((r) => !isBrickKey(r.key));
  }

  /** Bytes a backfill of the PG copies: its records and its blocks (from their records). */
  async copyBytes(pg: number): Promise<number> {
    const prefix = keys.pgPrefix(pg);
    const end = prefixEnd(prefix);
    let after: Buffer | undefined;
    let total = 0;
    for (;;) {
      const rows = await this.kv.range(
        after ? { gt: after, lt: end, limit: 4096 } : { gte: prefix, lt: end, limit: 4096 },
      );
      if (rows.length === 0) return total;
      for (const r of rows) {
        after = r.key;
        if (r.key[2] === KeyKind.log || isBrickKey(r.key)) continue;
        total += r.key.length + r.value.length;
        if (r.key[2] === KeyKind.block) total += decodeRecord<BlockRecord>(r.value).length;
      }
    }
  }

  /** Removes every record of a PG copy and its block files (backfill starts from nothing). */
  async wipe(pg: number): Promise<void> {
    const prefix = keys.pgPrefix(pg);
    const blockPrefix = keys.kindPrefix(pg, KeyKind.block);
    for (;;) {
      const rows = await this.kv.range({ gte: prefix, lt: prefixEnd(prefix), limit: 1024 });
      if (rows.length === 0) return;
      const mine = rows.filter((r) => !isBrickKey(r.key));
      if (mine.length === 0) return;
      for (const r of mine) {
        if (r.key.subarray(0, 3).equals(blockPrefix))
          await this.blocks.delete(pg, r.key.readBigUInt64BE(3), r.key.readBigUInt64BE(11));
      }
      await this.kv.write(
        mine.map((r) => ({ key: r.key, value: undefined })),
        false,
      );
      this.durability.written();
    }
  }
}

export function sameRecord(a: BlockRecord | undefined, b: BlockRecord | undefined): boolean {
  if (!a || !b) return a === b;
  return a.length === b.length && a.sums.length === b.sums.length && a.sums.every((s, i) => s === b.sums[i]);
}
