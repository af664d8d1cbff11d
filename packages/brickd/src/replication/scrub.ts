import { errorTable, FsError, giveBack } from '@dunix/proto';
import type { BlockOp } from '../pg/log-entry.js';
import type { PgState } from '../pg/pg-state.js';
import type { BlockFiles } from '../store/block-files.js';
import { KeyKind, keys } from '../store/keys.js';
import type { KvEntry, KvStore, KvWrite } from '../store/kv.js';
import { decodeRecord, type BlockRecord } from '../store/records.js';
import type { ReplicationDeps, ScrubBadBlock, ScrubDigestReply, ScrubDigestRequest } from './deps.js';
import type { AppendOp, Replication } from './replication.js';
import {
  describeDiff,
  diffRows,
  digestOf,
  scrubRows,
  scrubSegments,
  type RowDiff,
  type ScrubRow,
} from './scrub-digest.js';

/**
 * Scrub of the PGs a brick leads (ARCHITECTURE.md, "Scrub"). For each PG,
 * one key range at a time and holding the PG's append queue (so no entry
 * interleaves and every in-sync replica is at the same log sequence), the
 * primary reads its rows and verifies its block files, and asks every other
 * in-sync member for the digest of the same range and the blocks there that
 * fail their checksums. Then:
 *
 * - a primary block that fails is healed from a replica whose copy
 *   verifies against the same record; none: the block is unrecoverable and
 *   nothing overwrites any copy of it;
 * - a replica whose digest differs gets the primary's rows of the range
 *   (the keys that differ, deletions of the ones it alone has), and a
 *   replica block that fails (or whose record differs) the primary's
 *   verified bytes: one log entry ("scrub-repair", SYNC block ops) through
 *   the ordinary append path, so every copy applies it in sequence;
 * - the replica is asked again; what now matches is repaired.
 *
 * The primary's keys are what it acknowledged (every replica applied the
 * same log), yet a key is set to the primary's value only when another copy
 * has that value too (or the primary has one other copy only): a key no
 * replica agrees with the primary on is reported unrecoverable and left as
 * it is everywhere. Block bytes count only when they verify.
 * Reads are paced by a bytes-per-second limit. Free of I/O and time but
 * through `ReplicationDeps`.
 */

/** What a scrub found wrong with one copy. */
export interface ScrubProblem {
  kind: 'block-corrupt' | 'block-missing' | 'keys-differ';
  /** The brick whose copy was wrong. */
  brick: string;
  ino?: bigint;
  index?: bigint;
  /** keys-differ: rows that differed. */
  keys?: number;
  detail: string;
  /**
   * repaired: the copy matches again; unrecoverable: no copy verifies, none
   * was changed; unrepaired: the repair failed (a replica unreachable, the
   * PG read-only): the next scrub tries again.
   */
  state: 'repaired' | 'unrecoverable' | 'unrepaired';
}

export interface ScrubOutcome {
  pg: number;
  epoch: number;
  /** Every range compared (false: cancelled, or the PG changed hands meanwhile). */
  complete: boolean;
  keys: number;
  blocks: number;
  /** Bytes this brick read: keys, values, block files. */
  bytes: number;
  /** In-sync replicas compared, and those that could not be (with why). */
  replicas: string[];
  skipped: { brick: string; err: string }[];
  problems: ScrubProblem[];
}

export interface ScrubOptions {
  /** Checked before each range: true ends the scrub (complete false). */
  cancelled?: () => boolean;
}

/** Rows a replica returns in one reply at most. */
const ROWS_REPLY_MAX = 16_384;
/** Tries of a range when a replica does not answer (timeout, not at the primary's sequence yet). */
const RANGE_ATTEMPTS = 3;
const RANGE_RETRY_MS = 100;
/** Why copies were left as they are. */
const DISPUTED = "no replica agrees with the primary's value: every copy left as it is";
/** Repair rounds per range before the rest is left unrepaired. */
const REPAIR_ROUNDS_MAX = 3;

function blockOf(key: Buffer): { ino: bigint; index: bigint } {
  return { ino: key.readBigUInt64BE(3), index: key.readBigUInt64BE(11) };
}

const isBlockKey = (key: Buffer) => key[2] === KeyKind.block && key.length === 19;
const blockId = (ino: bigint, index: bigint) => `${ino}/${index}`;

/** Reads a block whole against its record: the failure's text, or undefined when it verifies. */
async function verifyBlock(
  blocks: BlockFiles,
  pg: number,
  ino: bigint,
  index: bigint,
  rec: BlockRecord,
): Promise<string | undefined> {
  try {
    const data = await blocks.read(pg, ino, index, 0, rec.length, rec);
    giveBack(data);
    return undefined;
  } catch (err) {
    // Without the code's summary and the brick's data dir: "block file 0005/<ino>.<index> chunk 2: ...".
    if (err instanceof FsError && err.code === 'CORRUPT')
      return err.message.replace(`${errorTable.CORRUPT.summary}: `, '').replace(/\S*\/blocks\//, '');
    throw err;
  }
}

function problemKind(detail: string): 'block-corrupt' | 'block-missing' {
  return /missing/.test(detail) ? 'block-missing' : 'block-corrupt';
}

/** Every row of [fromKey, toKey), read in pages. */
async function readRange(kv: KvStore, fromKey: Buffer, toKey: Buffer): Promise<KvEntry[]> {
  const out: KvEntry[] = [];
  let after: Buffer | undefined;
  for (;;) {
    const rows = await kv.range(
      after ? { gt: after, lt: toKey, limit: 4096 } : { gte: fromKey, lt: toKey, limit: 4096 },
    );
    out.push(...rows);
    if (rows.length < 4096) return out;
    after = rows[rows.length - 1]!.key;
  }
}

/**
 * A copy's answer to ScrubDigest: the digest of its rows in the range and,
 * if asked, its blocks there that fail their own records. The caller holds
 * the PG's append queue and has checked the log position.
 */
export async function digestCopy(
  kv: KvStore,
  blocks: BlockFiles,
  pg: number,
  req: ScrubDigestRequest,
): Promise<ScrubDigestReply> {
  const entries = await readRange(kv, req.fromKey, req.toKey);
  const rows = scrubRows(entries);
  let bytes = 0;
  const badBlocks: ScrubBadBlock[] = [];
  for (const e of entries) {
    bytes += e.key.length + e.value.length;
    if (!req.verifyBlocks || !isBlockKey(e.key)) continue;
    const { ino, index } = blockOf(e.key);
    const rec = decodeRecord<BlockRecord>(e.value);
    bytes += rec.length;
    const bad = await verifyBlock(blocks, pg, ino, index, rec);
    if (bad !== undefined) badBlocks.push({ ino, index, detail: bad });
  }
  const d = digestOf(rows, bytes);
  return {
    digest: d.digest,
    keys: d.keys,
    bytes,
    badBlocks,
    rows: req.rows ? rows.slice(0, ROWS_REPLY_MAX) : [],
    rowsTruncated: req.rows && rows.length > ROWS_REPLY_MAX,
  };
}

/** The primary's side of a scrub (one per brick; see the comment at the top). */
export class Scrubber {
  /** Scrub bytes per second this brick reads over all its scrubs (0: no limit). */
  private bytesPerS = 0;
  /** When the pacing lets the next range go (clock ms). */
  private freeAtMs = 0;

  constructor(
    private readonly d: ReplicationDeps,
    private readonly repl: Replication,
  ) {}

  /** Sets the read limit (the scrub job's, or the brick's knob); 0 lifts it. */
  setLimit(bytesPerS: number): void {
    if (!Number.isFinite(bytesPerS) || bytesPerS < 0) throw new RangeError(`scrub limit ${bytesPerS}`);
    this.bytesPerS = bytesPerS;
  }

  private async pace(bytes: number): Promise<void> {
    if (this.bytesPerS <= 0) return;
    const now = this.d.clock.nowMs();
    const start = Math.max(now, this.freeAtMs);
    this.freeAtMs = start + (bytes / this.bytesPerS) * 1000;
    if (this.freeAtMs > now) await this.d.clock.sleep(this.freeAtMs - now);
  }

  /**
   * Scrubs the PG this brick leads: every range of its keys, on every
   * in-sync copy. Throws NOT_PRIMARY if the brick stops leading it at the
   * start; later the outcome says complete: false.
   */
  async scrubPg(st: PgState, o: ScrubOptions = {}): Promise<ScrubOutcome> {
    this.checkPrimary(st, st.epoch);
    const epoch = st.epoch;
    const out: ScrubOutcome = {
      pg: st.pg,
      epoch,
      complete: false,
      keys: 0,
      blocks: 0,
      bytes: 0,
      replicas: st.isr.filter((b) => b !== this.d.brickId),
      skipped: [],
      problems: [],
    };
    let attempt = 0;
    for (const seg of scrubSegments(st.pg)) {
      let from: Buffer | undefined = seg.from;
      while (from) {
        if (o.cancelled?.()) return out;
        if (!this.stillPrimary(st, epoch)) return out;
        const at: Buffer = from;
        const tries = attempt;
        const r = await st.hold(() => this.scrubRange(st, epoch, at, seg.to, out, tries));
        await this.pace(r.bytes);
        if (r.retry) {
          // A replica did not answer: the range again shortly, with the queue let go meanwhile.
          attempt++;
          await this.d.clock.sleep(RANGE_RETRY_MS * attempt);
          continue;
        }
        attempt = 0;
        from = r.next;
      }
    }
    out.complete = true;
    return out;
  }

  private stillPrimary(st: PgState, epoch: number): boolean {
    return st.role === 'primary' && st.ready && st.epoch === epoch;
  }

  private checkPrimary(st: PgState, epoch: number): void {
    if (!this.stillPrimary(st, epoch))
      throw new FsError('NOT_PRIMARY', `pg ${st.pg}: not the serving primary at epoch ${epoch}`);
  }

  /** The primary's rows from `from`: up to scrubChunkKeys keys and scrubChunkBytes block bytes. */
  private async readChunk(
    from: Buffer,
    segEnd: Buffer,
  ): Promise<{ entries: KvEntry[]; to: Buffer; last: boolean }> {
    const max = this.d.knobs.scrubChunkKeys;
    const rows = await this.d.kv.range({ gte: from, lt: segEnd, limit: max + 1 });
    let taken = 0;
    let blockBytes = 0;
    while (taken < rows.length && taken < max) {
      const r = rows[taken++]!;
      if (isBlockKey(r.key)) blockBytes += decodeRecord<BlockRecord>(r.value).length;
      if (blockBytes >= this.d.knobs.scrubChunkBytes) break;
    }
    if (taken < rows.length) return { entries: rows.slice(0, taken), to: rows[taken]!.key, last: false };
    return { entries: rows, to: segEnd, last: true };
  }

  /** One range, holding the append queue. */
  private async scrubRange(
    st: PgState,
    epoch: number,
    from: Buffer,
    segEnd: Buffer,
    out: ScrubOutcome,
    attempt: number,
  ): Promise<{ next: Buffer | undefined; bytes: number; retry: boolean }> {
    this.checkPrimary(st, epoch);
    const pg = st.pg;
    const me = this.d.brickId;
    const { entries, to, last } = await this.readChunk(from, segEnd);
    const values = new Map<string, Buffer>();
    let bytes = 0;
    for (const e of entries) {
      values.set(e.key.toString('latin1'), e.value);
      bytes += e.key.length + e.value.length;
    }
    let mine = scrubRows(entries);
    let blockCount = 0;

    // The primary's own blocks: verify; heal a bad one from a replica that has it right.
    /** Primary blocks that fail and could not be healed: what their other copies count as. */
    const lost = new Map<string, 'unrecoverable' | 'unrepaired'>();
    const ownProblems: ScrubProblem[] = [];
    for (const e of entries) {
      if (!isBlockKey(e.key)) continue;
      const { ino, index } = blockOf(e.key);
      const rec = decodeRecord<BlockRecord>(e.value);
      blockCount++;
      bytes += rec.length;
      const bad = await verifyBlock(this.d.blocks, pg, ino, index, rec);
      if (bad === undefined) continue;
      const heal = await this.repl.healBlockHeld(st, ino, index);
      const state = heal.from ? 'repaired' : heal.answered === heal.asked ? 'unrecoverable' : 'unrepaired';
      if (state !== 'repaired') lost.set(blockId(ino, index), state);
      // A healed block is reported now (it verifies on a retry of the range); the rest once the range is done.
      (state === 'repaired' ? out.problems : ownProblems).push({
        kind: problemKind(bad),
        brick: me,
        ino,
        index,
        detail: heal.from
          ? `${bad}; healed from ${heal.from}`
          : state === 'unrecoverable'
            ? `${bad}; no replica has a copy that verifies`
            : `${bad}; no replica that answered has a copy that verifies`,
        state,
      });
      this.d.log.warn('scrub: a block of the primary fails its checksums', {
        pg,
        ino: ino.toString(),
        index: index.toString(),
        healedFrom: heal.from,
        state,
      });
    }

    // Every other in-sync copy of the same range, at the same log sequence.
    const others = st.isr.filter((b) => b !== me);
    const req = { seq: st.opSeq, fromKey: from, toKey: to, verifyBlocks: true, rows: false };
    const replies = await Promise.allSettled(
      others.map((b) => this.d.transport.scrubDigest(b, pg, epoch, req)),
    );
    if (attempt < RANGE_ATTEMPTS - 1 && replies.some((r) => r.status === 'rejected'))
      return { next: from, bytes, retry: true };
    out.problems.push(...ownProblems);
    out.keys += mine.length;
    out.blocks += blockCount;
    let digest = digestOf(mine, 0).digest;
    // Each answering replica: its reply, and its rows when its digest differs.
    const copies = new Map<string, { reply: ScrubDigestReply; rows?: Map<string, string>; diff?: RowDiff }>();
    for (let i = 0; i < others.length; i++) {
      const b = others[i]!;
      const r = replies[i]!;
      if (r.status === 'rejected') {
        this.skip(out, b, r.reason);
        continue;
      }
      if (r.value.digest === digest) {
        copies.set(b, { reply: r.value });
        continue;
      }
      try {
        const theirs = await this.d.transport.scrubDigest(b, pg, epoch, {
          ...req,
          verifyBlocks: false,
          rows: true,
        });
        copies.set(b, {
          reply: r.value,
          rows: new Map(theirs.rows.map((x) => [x.key.toString('latin1'), x.hash])),
          diff: rowDiff(mine, theirs),
        });
      } catch (err) {
        this.skip(out, b, err);
      }
    }
    // The primary's keys are what it acknowledged, but not taken on trust alone: a key that
    // differs is set to the primary's value only if another copy has that value too (or the
    // primary has one other copy only). Otherwise no copy is known good: all are left as they are.
    const myHash = new Map(mine.map((x) => [x.key.toString('latin1'), x.hash]));
    const disputed = (k: string): boolean => {
      if (copies.size <= 1) return false;
      for (const c of copies.values()) if (!c.rows || c.rows.get(k) === myHash.get(k)) return false;
      return true;
    };
    // Problems per replica waiting for the repair's outcome, and the keys each one covers.
    const pending = new Map<string, ScrubProblem[]>();
    const keysOf = new Map<ScrubProblem, Set<string>>();
    const writes = new Map<string, KvWrite>();
    const syncs = new Map<string, { ino: bigint; index: bigint }>();
    const deletes = new Map<string, { ino: bigint; index: bigint }>();
    for (const [b, c] of copies) {
      const problems: ScrubProblem[] = [];
      for (const bad of c.reply.badBlocks) {
        const id = blockId(bad.ino, bad.index);
        const key = blockKeyOf(pg, bad.ino, bad.index);
        const p: ScrubProblem = {
          kind: problemKind(bad.detail),
          brick: b,
          ino: bad.ino,
          index: bad.index,
          detail: bad.detail,
          state: lost.get(id) ?? 'unrepaired',
        };
        if (lost.has(id)) out.problems.push(p);
        else if (disputed(key))
          out.problems.push({ ...p, state: 'unrecoverable', detail: `${p.detail}; ${DISPUTED}` });
        else {
          problems.push(p);
          // The primary's bytes (and record); a block only the replica has goes with its record below.
          if (values.has(key)) syncs.set(id, { ino: bad.ino, index: bad.index });
        }
      }
      if (c.diff) {
        const all = [...c.diff.differ, ...c.diff.missing, ...c.diff.extra];
        const bad = new Set(all.map((k) => k.toString('latin1')).filter(disputed));
        const keep = (k: Buffer) => !bad.has(k.toString('latin1'));
        const ok: RowDiff = {
          differ: c.diff.differ.filter(keep),
          missing: c.diff.missing.filter(keep),
          extra: c.diff.extra.filter(keep),
        };
        const where = `keys ${hexKey(from)}..${hexKey(to)}`;
        if (bad.size > 0)
          out.problems.push({
            kind: 'keys-differ',
            brick: b,
            keys: bad.size,
            detail: `${where}: ${bad.size} no other copy agrees on; ${DISPUTED}`,
            state: 'unrecoverable',
          });
        const n = ok.differ.length + ok.missing.length + ok.extra.length;
        if (n > 0) {
          const p: ScrubProblem = {
            kind: 'keys-differ',
            brick: b,
            keys: n,
            detail: `${where}: ${describeDiff(ok)}`,
            state: 'unrepaired',
          };
          problems.push(p);
          keysOf.set(p, new Set([...ok.differ, ...ok.missing, ...ok.extra].map((k) => k.toString('latin1'))));
          this.planRows(ok, values, lost, writes, syncs, deletes);
        }
      }
      if (problems.length) pending.set(b, problems);
    }

    // Repairs: one entry (or a few, by bytes) through the append path, then ask again.
    for (let round = 0; pending.size > 0 && round < REPAIR_ROUNDS_MAX; round++) {
      try {
        await this.repair(st, pg, values, writes, syncs, deletes, lost);
      } catch (err) {
        if (!(err instanceof FsError)) throw err;
        this.d.log.warn('scrub: repair failed', { pg, err: err.message });
        break;
      }
      writes.clear();
      syncs.clear();
      deletes.clear();
      // The entry may have trimmed the log's oldest stored reply out of the range: read again.
      const again = await this.readChunk(from, segEnd);
      mine = scrubRows(again.entries);
      values.clear();
      for (const e of again.entries) values.set(e.key.toString('latin1'), e.value);
      digest = digestOf(mine, 0).digest;
      const check = { seq: st.opSeq, fromKey: from, toKey: to, verifyBlocks: true, rows: true };
      for (const [b, problems] of [...pending]) {
        let r: ScrubDigestReply;
        try {
          r = await this.d.transport.scrubDigest(b, pg, epoch, check);
        } catch (err) {
          this.skip(out, b, err);
          out.problems.push(...problems);
          pending.delete(b);
          continue;
        }
        const stillBad = new Set(r.badBlocks.map((x) => blockId(x.ino, x.index)));
        const diff = rowDiff(mine, r);
        const differing = new Set(
          [...diff.differ, ...diff.missing, ...diff.extra].map((k) => k.toString('latin1')),
        );
        const retry: RowDiff = { differ: [], missing: [], extra: [] };
        for (const p of problems) {
          if (p.state === 'repaired') continue;
          let ok: boolean;
          if (p.kind === 'keys-differ') {
            const mineKeys = keysOf.get(p)!;
            ok = ![...mineKeys].some((k) => differing.has(k));
            if (!ok) {
              const inP = (k: Buffer) => mineKeys.has(k.toString('latin1'));
              retry.differ.push(...diff.differ.filter(inP));
              retry.missing.push(...diff.missing.filter(inP));
              retry.extra.push(...diff.extra.filter(inP));
            }
          } else {
            ok = !stillBad.has(blockId(p.ino!, p.index!));
            if (!ok && values.has(blockKeyOf(pg, p.ino!, p.index!)))
              syncs.set(blockId(p.ino!, p.index!), { ino: p.ino!, index: p.index! });
          }
          if (!ok) continue;
          p.state = 'repaired';
          this.d.log.warn('scrub: repaired a replica', {
            pg,
            brick: b,
            kind: p.kind,
            ino: p.ino?.toString(),
            index: p.index?.toString(),
            detail: p.detail,
          });
        }
        if (problems.every((p) => p.state === 'repaired')) {
          out.problems.push(...problems);
          pending.delete(b);
          continue;
        }
        // Another round for what is still wrong.
        this.planRows(retry, values, lost, writes, syncs, deletes);
      }
    }
    for (const problems of pending.values()) out.problems.push(...problems);
    out.bytes += bytes;
    return { next: last ? undefined : to, bytes, retry: false };
  }

  private skip(out: ScrubOutcome, brick: string, err: unknown): void {
    if (!out.skipped.some((s) => s.brick === brick)) out.skipped.push({ brick, err: String(err) });
    this.d.log.info('scrub: a replica could not be compared', { brick, err: String(err) });
  }

  /** What a row difference needs: the primary's values (block records as SYNC of the verified bytes). */
  private planRows(
    diff: RowDiff,
    values: Map<string, Buffer>,
    lost: ReadonlyMap<string, unknown>,
    writes: Map<string, KvWrite>,
    syncs: Map<string, { ino: bigint; index: bigint }>,
    deletes: Map<string, { ino: bigint; index: bigint }>,
  ): void {
    for (const key of [...diff.differ, ...diff.missing]) {
      const k = key.toString('latin1');
      if (isBlockKey(key)) {
        const { ino, index } = blockOf(key);
        // A block no copy verifies keeps its records everywhere: never overwritten by a guess.
        if (!lost.has(blockId(ino, index))) syncs.set(blockId(ino, index), { ino, index });
      } else writes.set(k, { key: Buffer.from(key), value: values.get(k) });
    }
    for (const key of diff.extra) {
      const k = key.toString('latin1');
      writes.set(k, { key: Buffer.from(key), value: undefined });
      if (isBlockKey(key)) {
        const { ino, index } = blockOf(key);
        deletes.set(blockId(ino, index), { ino, index });
      }
    }
  }

  /** Appends the repair entries: key writes first, block SYNCs split by bytes. */
  private async repair(
    st: PgState,
    pg: number,
    values: Map<string, Buffer>,
    writes: Map<string, KvWrite>,
    syncs: Map<string, { ino: bigint; index: bigint }>,
    deletes: Map<string, { ino: bigint; index: bigint }>,
    lost: ReadonlyMap<string, unknown>,
  ): Promise<void> {
    const ops: BlockOp[] = [];
    for (const [id, b] of syncs) {
      if (lost.has(id) || !values.has(blockKeyOf(pg, b.ino, b.index))) continue;
      // Verified on the way out (the primary's copy, healed above if it had to be).
      ops.push(await this.repl.logs.syncOp(pg, b.ino, b.index));
    }
    const batches: { writes: KvWrite[]; blocks: BlockOp[] }[] = [
      {
        writes: [...writes.values()],
        blocks: [...deletes.values()].map((b) => ({ ...b, kind: 'DELETE' as const, offset: 0, length: 0 })),
      },
    ];
    let bytes = 0;
    for (const op of ops) {
      const size = op.data?.length ?? 0;
      if (bytes > 0 && bytes + size > this.d.knobs.scrubChunkBytes) {
        batches.push({ writes: [], blocks: [] });
        bytes = 0;
      }
      batches.at(-1)!.blocks.push(op);
      bytes += size;
    }
    for (const batch of batches) {
      if (batch.writes.length === 0 && batch.blocks.length === 0) continue;
      const op: AppendOp = batch;
      await this.repl.appendHeld(st, '', 'scrub-repair', async () => op);
    }
  }
}

function blockKeyOf(pg: number, ino: bigint, index: bigint): string {
  return keys.block(pg, ino, index).toString('latin1');
}

/** The difference of a replica's rows from the primary's; a truncated reply counts up to its last row. */
function rowDiff(mine: readonly ScrubRow[], theirs: ScrubDigestReply): RowDiff {
  const diff = diffRows(mine, theirs.rows);
  const lastKey = theirs.rows.at(-1)?.key;
  if (theirs.rowsTruncated && lastKey) {
    const upTo = (k: Buffer) => Buffer.compare(k, lastKey) <= 0;
    diff.differ = diff.differ.filter(upTo);
    diff.missing = diff.missing.filter(upTo);
    diff.extra = diff.extra.filter(upTo);
  }
  return diff;
}

function hexKey(k: Buffer): string {
  const h = k.toString('hex');
  return h.length > 40 ? `${h.slice(0, 40)}..` : h;
}

export type { ScrubRow };
