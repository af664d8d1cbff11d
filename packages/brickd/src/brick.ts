import { randomBytes } from 'node:crypto';
import {
  blockPg,
  CHECKSUM_CHUNK_BYTES,
  FsError,
  firstSeq,
  giveBack,
  limits,
  makeIno,
  pgOfIno,
  pgsOfBlocks,
  takeBuffer,
  type Logger,
  type PgAssignment,
  type VolumeConfig,
} from '@dunix/proto';
import type { BrickKnobs } from './config.js';
import type { BlockFiles } from './store/block-files.js';
export type { BlockFiles } from './store/block-files.js';
import type { Cred, NamespaceOps, SessionContext } from './namespace/api.js';
import { KvTxn, RecordTxn, type KvReader, type MetaTxn } from './namespace/txn.js';
import { clipAfterTruncate } from './namespace/alloc-map.js';
import { PgState, type PreparedTx } from './pg/pg-state.js';
import { punchPlan } from './store/punch-plan.js';
import type { ReplicationDeps } from './replication/deps.js';
import { Replication } from './replication/replication.js';
import { KeyKind, keys, pgOfKey } from './store/keys.js';
import { prefixEnd, type KvEntry, type KvStore, type KvWrite } from './store/kv.js';
import {
  decodeRecord,
  encodeRecord,
  isReg,
  type AllocRecord,
  type BlockRecord,
  type OrphanRecord,
  type PgMetaRecord,
  type PunchRecord,
  type TrimRecord,
} from './store/records.js';

/** A key/value pair of a cross-PG transaction (value undefined: absent / delete). */
export interface TxKeyValue {
  key: Buffer;
  value: Buffer | undefined;
}

export type TxState = 'active' | 'committed' | 'aborted';

/**
 * How a brick reaches a PG for transactions: itself when it serves the PG,
 * a peer brick over gRPC otherwise.
 */
export interface PgEndpoint {
  txRead(pg: number, keys: Buffer[]): Promise<(Buffer | undefined)[]>;
  txPrepare(
    pg: number,
    txId: string,
    coordinatorPg: number,
    reads: TxKeyValue[],
    writes: TxKeyValue[],
  ): Promise<void>;
  txCommit(pg: number, txId: string): Promise<void>;
  txAbort(pg: number, txId: string): Promise<void>;
  txStatus(pg: number, txId: string): Promise<TxState>;
  allocIno(pg: number): Promise<bigint>;
  reclaim(pg: number, ino: bigint): Promise<void>;
  truncateBlocks(pg: number, ino: bigint, size: bigint): Promise<void>;
  punchBlocks(pg: number, ino: bigint, from: bigint, to: bigint): Promise<void>;
  readBlock(pg: number, ino: bigint, index: bigint, offset: number, length: number): Promise<Buffer>;
  /** The block's index record at its PG's primary (undefined: no bytes), for a clone. */
  readBlockRecord(pg: number, ino: bigint, index: bigint): Promise<BlockRecord | undefined>;
}

export interface BrickDeps {
  brickId: string;
  volume: VolumeConfig;
  kv: KvStore;
  blocks: BlockFiles;
  engine: NamespaceOps;
  knobs: BrickKnobs;
  log: Logger;
  /** Wall clock in ns (injected: simulation runs on a fake one). */
  clockNs: () => bigint;
  /** Peer access for PGs this brick does not serve. */
  remote: PgEndpoint;
  /** Crash points for fault-injection tests (DUNIX_FAULTS). */
  fault?: (point: string) => void;
  /** The replication protocol's world: peers, the placement map in etcd, the lease, a clock. */
  replication: Pick<
    ReplicationDeps,
    'transport' | 'placement' | 'lease' | 'clock' | 'recovery' | 'durability' | 'stages'
  >;
  /** The store was found empty under a known brick id (a replaced disk): no copy here is in sync. */
  storeLost?: boolean;
  /** Whether a brick holds its lease now (catch-up skips dead replicas). */
  brickAlive?: (brickId: string) => boolean;
  /**
   * Whether any of these bricks is full (usage.ts): a write that adds block
   * bytes to a PG with a full copy gets ENOSPC. Absent: never full.
   */
  anyFull?: (bricks: readonly string[]) => boolean;
  /**
   * The fewest bytes any of these bricks can take below the full threshold
   * (space.ts): what a preallocation may reserve. Absent: unlimited.
   */
  roomBytes?: (bricks: readonly string[]) => number;
  /**
   * The mount sessions alive now (their records in etcd), for reclaiming
   * O_TMPFILE inodes of a mount that died; undefined when unknown (etcd
   * unreachable: nothing is reclaimed). Absent: never reclaimed that way.
   */
  mountsAlive?: () => Promise<ReadonlySet<string> | undefined>;
}

function reusedRequestId(requestId: string, was: string, now: string): FsError {
  return new FsError('INVALID_ARGUMENT', `request id ${requestId} belongs to a ${was}, not a ${now}`);
}

/** Thrown inside a single-PG attempt that needs another PG: the op is rerun as a transaction. */
const NEEDS_REMOTE = Symbol('needs-remote');

type Attempt<T> =
  { kind: 'done'; reply: T; acked?: Promise<boolean> } | { kind: 'remote' } | { kind: 'wait' };

interface StoredReply {
  seq: string;
  reply: unknown;
  /** The op that stored it (absent in replies stored before it was recorded). */
  kind?: string;
}

interface DecisionRecord {
  participants: number[];
  createdAtMs: number;
}

interface PreparedRecord {
  coordinatorPg: number;
  writes: [string, string | null][];
  lockedKeys: string[];
  createdAtMs: number;
}

const latin1 = (b: Buffer) => b.toString('latin1');
const fromLatin1 = (s: string) => Buffer.from(s, 'latin1');
const sameValue = (a: Buffer | undefined, b: Buffer | undefined) =>
  a === undefined || b === undefined ? a === b : a.equals(b);

/**
 * One brick's PGs: the mutation path (single-PG batches and cross-PG
 * transactions), the transaction participant side, block I/O and recovery.
 * RPC decoding lives in rpc/server.ts; this class sees typed values only.
 */
export class Brick implements PgEndpoint {
  /** Every PG this brick holds a copy of, as primary or replica. */
  readonly pgs = new Map<number, PgState>();
  readonly repl: Replication;
  private readonly promoting = new Map<number, Promise<void>>();
  private txCounter = 0;
  private readonly txPrefix = randomBytes(4).toString('hex');
  private recoveryTimer: NodeJS.Timeout | undefined;
  private recovering = false;
  private readonly inflightRequests = new Map<string, { kind: string; p: Promise<unknown> }>();
  private stopped = false;

  constructor(private readonly d: BrickDeps) {
    this.repl = new Replication({
      brickId: d.brickId,
      volume: d.volume,
      kv: d.kv,
      blocks: d.blocks,
      knobs: d.knobs,
      log: d.log,
      ...d.replication,
    });
  }

  get volume(): VolumeConfig {
    return this.d.volume;
  }

  /**
   * Takes the options of a newer volume config that may change (`dunixctl
   * volume set`): min_insync and the down-out interval. The rest is fixed at
   * creation. The replication layer shares this config object.
   */
  adoptConfig(c: VolumeConfig): void {
    if (c.name !== this.d.volume.name || c.pgCount !== this.d.volume.pgCount)
      throw new Error(`invariant: config of ${c.name} (${c.pgCount} PGs) for volume ${this.d.volume.name}`);
    this.d.volume.minInsync = c.minInsync;
    if (c.downOutIntervalMs === undefined) delete this.d.volume.downOutIntervalMs;
    else this.d.volume.downOutIntervalMs = c.downOutIntervalMs;
  }

  get engine(): NamespaceOps {
    return this.d.engine;
  }

  // ---------------------------------------------------------------- placement

  /**
   * Takes the placement map: a copy of every PG listing this brick, as
   * primary for those it leads. A PG this brick becomes primary of is served
   * once its replicas are reconciled (peering, in the background).
   */
  async applyPlacement(assignments: readonly PgAssignment[]): Promise<void> {
    const mine = assignments.filter((a) => a.bricks.includes(this.d.brickId));
    const keep = new Set(mine.map((a) => a.pg));
    for (const [pg, st] of [...this.pgs]) {
      if (keep.has(pg)) continue;
      this.pgs.delete(pg);
      this.dropCopy(st);
    }
    if (!this.strayCopiesChecked) {
      this.strayCopiesChecked = true;
      void this.dropStrayCopies(assignments.length, keep);
    }
    for (const a of mine) {
      let st = this.pgs.get(a.pg);
      if (!st) {
        await this.wiping.get(a.pg);
        st = await this.loadPg(a.pg);
        st.lost = this.d.storeLost === true && a.isr.includes(this.d.brickId);
        this.pgs.set(a.pg, st);
      }
      this.repl.adopt(st, a);
      if (st.lost) {
        void this.leaveIsr(st);
        continue;
      }
      if (a.bricks[0] === this.d.brickId && st.role !== 'primary') {
        st.role = 'primary';
        st.ready = false;
        // A backfill may have brought records no entry announced: sweep once.
        st.sweepGen++;
      }
      if (st.role === 'primary' && !st.ready) void this.promote(st);
    }
  }

  /** A lost copy leaves the in-sync set; the primary then backfills it like any returning replica. */
  private async leaveIsr(st: PgState): Promise<void> {
    try {
      if (await this.repl.stepDown(st)) st.lost = false;
    } catch (err) {
      this.d.log.warn('leaving the in-sync set failed; the sweep retries', { pg: st.pg, err: String(err) });
    }
  }

  /** Peering, then the primary's in-memory state (allocator, prepared transactions) from the store. */
  private promote(st: PgState): Promise<void> {
    const running = this.promoting.get(st.pg);
    if (running || this.stopped) return running ?? Promise.resolve();
    const p = this.promoteOnce(st).finally(() => this.promoting.delete(st.pg));
    this.promoting.set(st.pg, p);
    return p;
  }

  /** Resolves once every PG this brick is taking over has finished (or failed) peering. */
  async settled(): Promise<void> {
    while (this.promoting.size > 0) await Promise.all([...this.promoting.values()]);
  }

  private async promoteOnce(st: PgState): Promise<void> {
    try {
      await this.repl.becomePrimary(st, () => this.loadPrimaryState(st));
      if (st.pg === 0 && st.ready) {
        await this.mutate(0, '', 'ensure-root', async (t) => {
          await this.d.engine.ensureRoot(t);
          return null;
        });
      }
    } catch (err) {
      // The recovery sweep tries again while this brick is still the PG's primary.
      if (err instanceof FsError)
        this.d.log.warn('taking over as primary failed', { pg: st.pg, err: err.message });
      else this.d.log.error('taking over as primary failed', { pg: st.pg, err: String(err) });
    }
  }

  /** PG copies being removed (a PG listed again waits for its old copy to go). */
  private readonly wiping = new Map<number, Promise<void>>();
  private strayCopiesChecked = false;

  /**
   * The map no longer lists this brick for the PG (a move dropped it): the
   * copy stops answering at once and its records and block files go, after
   * whatever its append queue still runs.
   */
  private dropCopy(st: PgState): void {
    st.role = 'replica';
    st.ready = false;
    const pg = st.pg;
    const p = st
      .hold(() => this.repl.logs.wipe(pg))
      .then(
        () => this.d.log.info('PG copy removed (no longer placed here)', { pg }),
        (err) => this.d.log.warn('PG copy not fully removed', { pg, err: String(err) }),
      )
      .finally(() => {
        if (this.wiping.get(pg) === p) this.wiping.delete(pg);
      });
    this.wiping.set(pg, p);
  }

  /** Copies of PGs dropped while this brick was down: found once, at the first map. */
  private async dropStrayCopies(pgCount: number, keep: ReadonlySet<number>): Promise<void> {
    for (let pg = 0; pg < pgCount && !this.stopped; pg++) {
      if (keep.has(pg) || this.pgs.has(pg) || this.wiping.has(pg)) continue;
      try {
        if (!(await this.repl.logs.holdsCopy(pg))) continue;
        if (this.pgs.has(pg)) continue;
        this.dropCopy(new PgState(pg, 0));
      } catch (err) {
        this.d.log.warn('stray PG copy check failed', { pg, err: String(err) });
      }
    }
  }

  private async loadPg(pg: number): Promise<PgState> {
    const st = new PgState(pg, 0);
    const pos = await this.repl.logs.loadPosition(pg);
    st.opSeq = pos.lastSeq;
    st.lastEpoch = pos.lastEpoch;
    st.firstSeq = pos.firstSeq;
    // A copy never takes entries older than the newest it holds.
    st.promisedEpoch = pos.lastEpoch;
    return st;
  }

  /** What only a primary keeps in memory, rebuilt from the (reconciled) store. */
  private async loadPrimaryState(st: PgState): Promise<void> {
    const pg = st.pg;
    const meta = await this.d.kv.get(keys.meta(pg));
    // Sequences up to the reservation may have been handed out before a crash: skip them.
    st.seqNext = meta ? decodeRecord<PgMetaRecord>(meta).seqReserved : firstSeq(pg);
    st.seqReserved = st.seqNext;
    for (const txId of [...st.prepared.keys()]) st.unlock(txId);
    const prefix = keys.kindPrefix(pg, KeyKind.prepared);
    for (const row of await this.d.kv.range({ gte: prefix, lt: prefixEnd(prefix) })) {
      const rec = JSON.parse(row.value.toString()) as PreparedRecord;
      st.lock({
        txId: row.key.subarray(prefix.length).toString(),
        coordinatorPg: rec.coordinatorPg,
        writes: rec.writes.map(([k, v]) => ({
          key: Buffer.from(k, 'base64'),
          value: v === null ? undefined : Buffer.from(v, 'base64'),
        })),
        lockedKeys: rec.lockedKeys,
        createdAtMs: rec.createdAtMs,
      });
    }
  }

  /**
   * The PG's state if this brick is its serving primary, else NOT_PRIMARY
   * (or UNAVAILABLE while it takes over). A request routed by a newer map
   * than ours gets STALE_EPOCH; an older map is fine while we lead.
   */
  serving(pg: number, epoch = 0): PgState {
    if (!Number.isInteger(pg) || pg < 0 || pg >= this.d.volume.pgCount) {
      throw new FsError('INVALID_ARGUMENT', `pg ${pg} is not a PG of volume ${this.d.volume.name}`);
    }
    const st = this.pgs.get(pg);
    if (!st) throw new FsError('NOT_PRIMARY', `brick ${this.d.brickId} does not serve pg ${pg}`);
    this.repl.checkServing(st);
    if (epoch > st.epoch) {
      throw new FsError('STALE_EPOCH', `pg ${pg} is at epoch ${st.epoch} here, request has ${epoch}`);
    }
    return st;
  }

  /** A copy of `pg` held here in any role (replication RPCs); NOT_FOUND otherwise. */
  copy(pg: number): PgState {
    if (!Number.isInteger(pg) || pg < 0 || pg >= this.d.volume.pgCount) {
      throw new FsError('INVALID_ARGUMENT', `pg ${pg} is not a PG of volume ${this.d.volume.name}`);
    }
    const st = this.pgs.get(pg);
    if (!st) throw new FsError('NOT_PRIMARY', `brick ${this.d.brickId} holds no copy of pg ${pg}`);
    return st;
  }

  start(): void {
    this.recoveryTimer = setInterval(() => void this.recoverySweep(), this.d.knobs.recoveryIntervalMs);
    this.recoveryTimer.unref();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.recoveryTimer);
  }

  // ---------------------------------------------------------------- mutations

  /**
   * Runs a namespace mutation homed at `pg`. It first runs inside the PG's
   * queue reading only this PG; if it turns out to touch another PG it is
   * rerun as a cross-PG transaction. `requestId` makes a retry return the
   * stored reply instead of applying again.
   */
  async mutate<T>(
    pg: number,
    requestId: string,
    kind: string,
    op: (t: MetaTxn) => Promise<T>,
    mayBeRetry = true,
  ): Promise<T> {
    // A retry that arrives while its first attempt still runs waits for it.
    const key = requestId && `${pg}/${requestId}`;
    const running = key ? this.inflightRequests.get(key) : undefined;
    if (running) {
      if (running.kind !== kind) return Promise.reject(reusedRequestId(requestId, running.kind, kind));
      return running.p as Promise<T>;
    }
    const p = this.mutateOnce(pg, requestId, kind, op, mayBeRetry);
    if (key) {
      this.inflightRequests.set(key, { kind, p });
      const done = () => this.inflightRequests.delete(key);
      p.then(done, done);
    }
    return p;
  }

  private async mutateOnce<T>(
    pg: number,
    requestId: string,
    kind: string,
    op: (t: MetaTxn) => Promise<T>,
    mayBeRetry: boolean,
  ): Promise<T> {
    const st = this.serving(pg);
    const deadline = Date.now() + this.d.knobs.conflictWaitMaxMs;
    const stages = this.d.replication.stages;
    for (;;) {
      const queuedMs = stages?.now() ?? 0;
      const attempt = await st.queue.run(async (): Promise<Attempt<T>> => {
        stages?.done('pg_queue', queuedMs);
        const engineMs = stages?.now() ?? 0;
        // A first attempt cannot have been applied before: no lookup.
        const dup = mayBeRetry ? await this.storedReply<T>(pg, requestId, kind) : undefined;
        if (dup) return { kind: 'done', reply: dup.reply };
        const kv = new KvTxn(this.singlePgReader(pg));
        const t = new RecordTxn(kv, this.d.clockNs(), (p) =>
          p === pg ? this.allocIno(p) : Promise.reject(NEEDS_REMOTE),
        );
        let reply: T;
        try {
          reply = await op(t);
        } catch (err) {
          if (err === NEEDS_REMOTE) return { kind: 'remote' };
          throw err;
        }
        stages?.done('engine', engineMs);
        const pgs = kv.pgs();
        if (pgs.size > 1 || (pgs.size === 1 && !pgs.has(pg))) return { kind: 'remote' };
        if (this.lockedKey(st, kv, undefined)) return { kind: 'wait' };
        // The PG's next op runs once this one is written here; its replicas
        // are waited for outside the queue (pipelined appends, Replication).
        const { acked } = await this.commitPipelined(st, kv.writeBatch(), requestId, kind, reply);
        return { kind: 'done', reply, acked };
      });
      if (attempt.kind === 'done') {
        await attempt.acked;
        return attempt.reply;
      }
      if (attempt.kind === 'remote') return this.crossMutate(pg, requestId, kind, op, mayBeRetry);
      if (Date.now() > deadline)
        throw new FsError('CONFLICT', `pg ${pg}: keys stayed locked by a transaction`);
      await st.waitUnlock(50);
    }
  }

  /** Reads of a read-only operation: local PGs directly, others from their primaries. */
  async read<T>(pg: number, op: (t: MetaTxn) => Promise<T>): Promise<T> {
    this.serving(pg);
    const t = new RecordTxn(new KvTxn(this.anyPgReader()), this.d.clockNs(), () =>
      Promise.reject(new Error('read-only operation allocated an inode')),
    );
    return op(t);
  }

  private singlePgReader(pg: number): KvReader {
    return {
      get: (key) => (pgOfKey(key) === pg ? this.d.kv.get(key) : Promise.reject(NEEDS_REMOTE)),
      range: (opts) => (pgOfKey(opts.lt) === pg ? this.d.kv.range(opts) : Promise.reject(NEEDS_REMOTE)),
    };
  }

  private anyPgReader(): KvReader {
    return {
      get: async (key) => {
        const pg = pgOfKey(key);
        if (this.leads(pg)) return this.d.kv.get(key);
        return (await this.d.remote.txRead(pg, [key]))[0];
      },
      range: (opts) => {
        if (!this.leads(pgOfKey(opts.lt)))
          throw new Error('invariant: range read of a PG this brick does not serve');
        return this.d.kv.range(opts);
      },
    };
  }

  private endpoint(pg: number): PgEndpoint {
    return this.leads(pg) ? this : this.d.remote;
  }

  /** This brick is the serving primary of `pg` (a replica copy answers nothing but replication). */
  leads(pg: number): boolean {
    const st = this.pgs.get(pg);
    return st !== undefined && st.role === 'primary' && st.ready;
  }

  /** A key of `kv` locked by a prepared transaction other than `ownTx`. */
  private lockedKey(st: PgState, kv: KvTxn, ownTx: string | undefined): string | undefined {
    if (st.locks.size === 0) return undefined;
    for (const k of [...kv.reads.keys(), ...kv.writes.keys()]) {
      const holder = st.lockedBy(k);
      if (holder !== undefined && holder !== ownTx && pgOfKey(fromLatin1(k)) === st.pg) return k;
    }
    return undefined;
  }

  /**
   * The reply stored for `requestId`, if an op ran under it. The id of an op
   * of another kind is refused: its reply has another shape (a client reusing
   * ids, or a forged request, must get an error, not that reply).
   */
  private async storedReply<T>(
    pg: number,
    requestId: string,
    kind: string,
  ): Promise<{ reply: T } | undefined> {
    if (!requestId) return undefined;
    const v = await this.d.kv.get(keys.request(pg, requestId));
    if (!v) return undefined;
    const stored = JSON.parse(v.toString(), reviveReply) as StoredReply;
    if (stored.kind !== undefined && stored.kind !== kind)
      throw reusedRequestId(requestId, stored.kind, kind);
    return { reply: stored.reply as T };
  }

  /**
   * Applies one op to a PG through its log: its writes and the stored reply
   * (so a retry, on this primary or its successor, gets the same answer).
   */
  private async commitLocal(
    st: PgState,
    writes: KvWrite[],
    requestId: string,
    kind: string,
    reply: unknown,
  ): Promise<void> {
    await (
      await this.commitPipelined(st, writes, requestId, kind, reply)
    ).acked;
  }

  /** commitLocal in two steps (Replication.appendPipelined): written here, then `acked`. */
  private commitPipelined(
    st: PgState,
    writes: KvWrite[],
    requestId: string,
    kind: string,
    reply: unknown,
  ): Promise<{ acked: Promise<boolean> }> {
    return this.repl.appendPipelined(st, requestId, kind, async () => {
      const all = [...writes];
      if (requestId) {
        const stored: StoredReply = { seq: (st.opSeq + 1n).toString(), reply, kind };
        all.push({
          key: keys.request(st.pg, requestId),
          value: Buffer.from(JSON.stringify(stored, replaceReply)),
        });
      }
      return { writes: all, blocks: [] };
    });
  }

  /**
   * A mutation that touches several PGs, as an intent (two-phase commit with
   * presumed abort): reads are taken from every PG, the engine computes the
   * writes, every other PG prepares (validates what was read, locks the keys,
   * persists its part), then the home PG commits its own part together with
   * the decision record (the commit point), then the others commit. A crash
   * before the decision aborts everywhere; after it, recovery finishes the
   * commit everywhere. No step leaves an orphan or a doubly visible entry.
   */
  private async crossMutate<T>(
    home: number,
    requestId: string,
    kind: string,
    op: (t: MetaTxn) => Promise<T>,
    mayBeRetry: boolean,
  ): Promise<T> {
    const st = this.serving(home);
    for (let attempt = 1; ; attempt++) {
      // Our own earlier attempts here never committed; only a client retry may find a reply.
      const dup = mayBeRetry && attempt === 1 ? await this.storedReply<T>(home, requestId, kind) : undefined;
      if (dup) return dup.reply;
      const txId = `${this.txPrefix}.${home}.${++this.txCounter}`;
      const kv = new KvTxn({
        get: async (key) => (await this.endpoint(pgOfKey(key)).txRead(pgOfKey(key), [key]))[0],
        range: () => Promise.reject(new Error('invariant: range read inside a cross-PG transaction')),
      });
      const t = new RecordTxn(kv, this.d.clockNs(), (p) => this.endpoint(p).allocIno(p));
      const reply = await op(t);

      const reads = new Map<number, TxKeyValue[]>();
      const writes = new Map<number, TxKeyValue[]>();
      for (const [k, v] of kv.reads) push(reads, pgOfKey(fromLatin1(k)), { key: fromLatin1(k), value: v });
      for (const [k, v] of kv.writes) push(writes, pgOfKey(fromLatin1(k)), { key: fromLatin1(k), value: v });
      const participants = [...new Set([...reads.keys(), ...writes.keys()])].filter((p) => p !== home);

      st.activeTx.add(txId);
      try {
        const prepared: number[] = [];
        const results = await Promise.allSettled(
          participants.map(async (p) => {
            await this.endpoint(p).txPrepare(p, txId, home, reads.get(p) ?? [], writes.get(p) ?? []);
            prepared.push(p);
          }),
        );
        const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failure) {
          await Promise.allSettled(prepared.map((p) => this.endpoint(p).txAbort(p, txId)));
          if (
            failure.reason instanceof FsError &&
            failure.reason.code === 'CONFLICT' &&
            attempt < this.d.knobs.txAttemptsMax
          ) {
            await backoff(attempt);
            continue;
          }
          throw failure.reason;
        }
        this.d.fault?.('tx-after-prepare');

        const homeReads = reads.get(home) ?? [];
        const homeWrites = writes.get(home) ?? [];
        const committed = await st.queue.run(async () => {
          for (const r of [...homeReads, ...homeWrites]) {
            const holder = st.lockedBy(latin1(r.key));
            if (holder !== undefined && holder !== txId) return false;
          }
          const current = await this.d.kv.getMany(homeReads.map((r) => r.key));
          if (homeReads.some((r, i) => !sameValue(r.value, current[i]))) return false;
          const decision: DecisionRecord = { participants, createdAtMs: Date.now() };
          await this.commitLocal(
            st,
            [...homeWrites, { key: keys.decision(home, txId), value: Buffer.from(JSON.stringify(decision)) }],
            requestId,
            kind,
            reply,
          );
          return true;
        });
        if (!committed) {
          await Promise.allSettled(participants.map((p) => this.endpoint(p).txAbort(p, txId)));
          if (attempt >= this.d.knobs.txAttemptsMax)
            throw new FsError('CONFLICT', `transaction on pg ${home} kept conflicting`);
          await backoff(attempt);
          continue;
        }
        this.d.fault?.('tx-after-decision');
        await this.finishDecision(home, txId, participants);
        return reply;
      } finally {
        st.activeTx.delete(txId);
      }
    }
  }

  /** Sends commit to every participant; drops the decision record once all have it. */
  private async finishDecision(home: number, txId: string, participants: number[]): Promise<boolean> {
    const [first, ...rest] = participants;
    try {
      if (first !== undefined) {
        await this.endpoint(first).txCommit(first, txId);
        this.d.fault?.('tx-after-first-commit');
      }
    } catch (err) {
      if (!(err instanceof FsError)) throw err;
      return false;
    }
    const results = await Promise.allSettled(rest.map((p) => this.endpoint(p).txCommit(p, txId)));
    if (results.some((r) => r.status === 'rejected')) return false;
    const st = this.pgs.get(home);
    if (!st) return false;
    await this.commitLocal(st, [{ key: keys.decision(home, txId), value: undefined }], '', 'tx-forget', null);
    return true;
  }

  // ------------------------------------------------------ participant side

  async txRead(pg: number, keyList: Buffer[]): Promise<(Buffer | undefined)[]> {
    this.serving(pg);
    for (const k of keyList)
      if (pgOfKey(k) !== pg)
        throw new FsError('INVALID_ARGUMENT', `key of pg ${pgOfKey(k)} sent to pg ${pg}`);
    return this.d.kv.getMany(keyList);
  }

  async txPrepare(
    pg: number,
    txId: string,
    coordinatorPg: number,
    reads: TxKeyValue[],
    writes: TxKeyValue[],
  ): Promise<void> {
    const st = this.serving(pg);
    for (const kv of [...reads, ...writes]) {
      if (pgOfKey(kv.key) !== pg)
        throw new FsError('INVALID_ARGUMENT', `key of pg ${pgOfKey(kv.key)} sent to pg ${pg}`);
    }
    await st.queue.run(async () => {
      if (st.prepared.has(txId)) return;
      const lockedKeys = [...new Set([...reads, ...writes].map((r) => latin1(r.key)))];
      for (const k of lockedKeys) {
        const holder = st.lockedBy(k);
        if (holder !== undefined && holder !== txId) throw new FsError('CONFLICT', `key locked by ${holder}`);
      }
      const current = await this.d.kv.getMany(reads.map((r) => r.key));
      if (reads.some((r, i) => !sameValue(r.value, current[i])))
        throw new FsError('CONFLICT', 'read set changed');
      const tx: PreparedTx = { txId, coordinatorPg, writes, lockedKeys, createdAtMs: Date.now() };
      const rec: PreparedRecord = {
        coordinatorPg,
        writes: writes.map((w) => [
          w.key.toString('base64'),
          w.value === undefined ? null : w.value.toString('base64'),
        ]),
        lockedKeys,
        createdAtMs: tx.createdAtMs,
      };
      await this.commitLocal(
        st,
        [{ key: keys.prepared(pg, txId), value: Buffer.from(JSON.stringify(rec)) }],
        '',
        'tx-prepare',
        null,
      );
      st.lock(tx);
    });
  }

  async txCommit(pg: number, txId: string): Promise<void> {
    const st = this.serving(pg);
    await st.queue.run(async () => {
      const tx = st.prepared.get(txId);
      if (!tx) return; // already committed (a retried commit) or never prepared here
      await this.commitLocal(
        st,
        [...tx.writes, { key: keys.prepared(pg, txId), value: undefined }],
        '',
        'tx-commit',
        null,
      );
      st.unlock(txId);
    });
  }

  async txAbort(pg: number, txId: string): Promise<void> {
    const st = this.serving(pg);
    await st.queue.run(async () => {
      if (!st.prepared.has(txId)) return;
      await this.commitLocal(st, [{ key: keys.prepared(pg, txId), value: undefined }], '', 'tx-abort', null);
      st.unlock(txId);
    });
  }

  async txStatus(pg: number, txId: string): Promise<TxState> {
    const st = this.serving(pg);
    if (await this.d.kv.get(keys.decision(pg, txId))) return 'committed';
    return st.activeTx.has(txId) ? 'active' : 'aborted';
  }

  /** A fresh inode number of `pg`; reservations are persisted ahead so none is ever handed out twice. */
  allocIno(pg: number): Promise<bigint> {
    const st = this.serving(pg);
    return st.allocQueue.run(async () => {
      if (st.seqNext >= st.seqReserved) {
        const reserved = st.seqNext + BigInt(this.d.knobs.seqReserveBatch);
        // The reservation is in the log: a successor primary resumes after it.
        await this.commitLocal(
          st,
          [{ key: keys.meta(pg), value: encodeRecord({ seqReserved: reserved } satisfies PgMetaRecord) }],
          '',
          'alloc',
          null,
        );
        st.seqReserved = reserved;
      }
      return makeIno(pg, st.seqNext++);
    });
  }

  /** Deletes an orphan inode; its blocks are trimmed by this PG's primary (recorded in the same entry). */
  async reclaim(pg: number, ino: bigint, unpublished = false): Promise<void> {
    if (pgOfIno(ino) !== pg) throw new FsError('INVALID_ARGUMENT', `inode ${ino} is not in pg ${pg}`);
    await this.mutate(pg, '', 'reclaim', async (t) => {
      await this.reclaimIn(t, ino, unpublished);
      return null;
    });
    await this.finishTrim(pg, ino);
  }

  /**
   * Reclaim as part of an op's transaction (the inode's PG must be the op's):
   * an orphan's records go, and a trim record for its blocks is written,
   * which finishTrim then carries out. Whether the inode was reclaimed.
   */
  async reclaimIn(t: MetaTxn, ino: bigint, unpublished = false): Promise<boolean> {
    const inode = await t.getInode(ino);
    await this.d.engine.reclaim(t, ino);
    if (!inode || inode.nlink !== 0 || (await t.getInode(ino))) return false;
    // Also a file of size 0 with preallocated space: its allocation map goes with the trim.
    // `unpublished`: its client died and may have written blocks past the size it published:
    // every PG is trimmed.
    if (isReg(inode.mode) && (unpublished || inode.size > 0n || (inode.allocBytes ?? 0n) > 0n))
      t.setTrim(ino, { size: 0n, oldSize: unpublished ? BigInt(limits.fileSizeMaxBytes) : inode.size });
    return true;
  }

  /** finishTrim in the background: a failure is left to the recovery sweep (the record stays). */
  finishTrimSoon(pg: number, ino: bigint): void {
    this.finishTrim(pg, ino).catch((err) =>
      this.d.log.warn('block trim deferred to the recovery sweep', { pg, ino, err: String(err) }),
    );
  }

  private readonly trimsRunning = new Map<string, Promise<void>>();

  /**
   * Drops the block bytes a truncate or reclaim left past the inode's size,
   * on every PG that may hold its blocks, then clears the record (unless a
   * newer one replaced it). Runs once per inode at a time.
   */
  finishTrim(pg: number, ino: bigint): Promise<void> {
    const key = `${pg}/${ino}`;
    const running = this.trimsRunning.get(key);
    if (running) return running;
    const p = (async () => {
      this.serving(pg);
      const v = await this.d.kv.get(keys.trim(pg, ino));
      if (!v) return;
      const rec = decodeRecord<TrimRecord>(v);
      const bs = BigInt(this.d.volume.blockSizeBytes);
      const last = (rec.oldSize + bs - 1n) / bs - 1n;
      const pgs = pgsOfBlocks(ino, rec.size / bs, last, this.d.volume.pgCount);
      await Promise.all(pgs.map((p) => this.endpoint(p).truncateBlocks(p, ino, rec.size)));
      // The allocation map past the size goes too (in bounded entries), then the record.
      let more = true;
      while (more) {
        more = await this.mutate(pg, '', 'trim-done', async (t) => {
          const inode = await t.getInode(ino);
          const left = await clipAfterTruncate(t, ino, inode, rec.size, this.d.volume.blockSizeBytes);
          if (inode) t.putInode(inode);
          const cur = await t.getTrim(ino);
          if (!left && cur && cur.size === rec.size && cur.oldSize === rec.oldSize) t.setTrim(ino, undefined);
          return left;
        });
      }
    })().finally(() => this.trimsRunning.delete(key));
    this.trimsRunning.set(key, p);
    return p;
  }

  private readonly punchesRunning = new Map<string, Promise<void>>();

  /**
   * Zeroes or frees the bytes a hole punch (or ZERO_RANGE) recorded, on
   * every PG that may hold the inode's blocks in that range (each change an
   * entry of that PG's log, so every replica frees them too), then clears
   * the record. Runs once per inode at a time; the sweep and Open finish one
   * a crash left.
   */
  finishPunch(pg: number, ino: bigint): Promise<void> {
    const key = `${pg}/${ino}`;
    const running = this.punchesRunning.get(key);
    if (running) return running;
    const p = (async () => {
      this.serving(pg);
      const v = await this.d.kv.get(keys.punch(pg, ino));
      if (!v) return;
      const rec = decodeRecord<PunchRecord>(v);
      const bs = BigInt(this.d.volume.blockSizeBytes);
      const pgs = pgsOfBlocks(ino, rec.from / bs, (rec.to - 1n) / bs, this.d.volume.pgCount);
      await Promise.all(pgs.map((p) => this.endpoint(p).punchBlocks(p, ino, rec.from, rec.to)));
      await this.mutate(pg, '', 'punch-done', async (t) => {
        const cur = await t.getPunch(ino);
        if (cur && cur.from === rec.from && cur.to === rec.to) t.setPunch(ino, undefined);
        return null;
      });
    })().finally(() => this.punchesRunning.delete(key));
    this.punchesRunning.set(key, p);
    return p;
  }

  // ------------------------------------------------------------------ blocks

  private checkBlockPg(pg: number, ino: bigint, index: bigint): void {
    const want = blockPg(ino, index, this.d.volume.pgCount);
    if (want !== pg)
      throw new FsError('INVALID_ARGUMENT', `block ${ino}/${index} belongs to pg ${want}, not ${pg}`);
  }

  private async blockRecord(pg: number, ino: bigint, index: bigint): Promise<BlockRecord | undefined> {
    const v = await this.d.kv.get(keys.block(pg, ino, index));
    return v && decodeRecord<BlockRecord>(v);
  }

  /** A block's bytes; a copy that fails its checksums is healed from an in-sync replica first. */
  async readBlock(pg: number, ino: bigint, index: bigint, offset: number, length: number): Promise<Buffer> {
    const st = this.serving(pg);
    this.checkBlockPg(pg, ino, index);
    try {
      return await this.d.blocks.read(pg, ino, index, offset, length, await this.blockRecord(pg, ino, index));
    } catch (err) {
      if (!(err instanceof FsError && err.code === 'CORRUPT') || !(await this.repl.healBlock(st, ino, index)))
        throw err;
      return this.d.blocks.read(pg, ino, index, offset, length, await this.blockRecord(pg, ino, index));
    }
  }

  /**
   * Block data is written and indexed on every in-sync replica before this
   * returns (durable by the group-commit rule): the bytes travel with the
   * entry. Resolves to whether nothing holds `data` any more (see append).
   */
  async writeBlock(pg: number, ino: bigint, index: bigint, offset: number, data: Buffer): Promise<boolean> {
    const st = this.serving(pg);
    this.checkBlockPg(pg, ino, index);
    return this.repl.append(st, '', 'write-block', async () => {
      const old = await this.blockRecord(pg, ino, index);
      // Overwrites go on when full (they need no new space), and so do writes
      // into a preallocated range (its space was reserved); other growth does not.
      const end = offset + data.length;
      if (end > (old?.length ?? 0) && this.d.anyFull?.(st.isr) && !(await this.allocatedTo(ino, index, end)))
        throw new FsError('NO_SPACE', `pg ${pg}: a brick holding it is full`);
      const rec = await this.d.blocks.write(pg, ino, index, offset, data, old, this.d.volume.blockSizeBytes);
      return {
        writes: [{ key: keys.block(pg, ino, index), value: encodeRecord(rec) }],
        blocks: [{ ino, index, kind: 'WRITE', offset, length: data.length, data }],
      };
    });
  }

  /**
   * Several ranges of one block (a client's buffered random writes): one
   * write of the span that holds them, its gaps filled with this copy's
   * current bytes read inside the PG's append queue (zeros past the block's
   * end), so the log holds one ordinary WRITE that replicas, whose copies
   * hold the same bytes, apply as any other. The span is widened to whole
   * checksum chunks (or the block's end), so the block store hashes and
   * writes it as it is, reading no edge chunk and copying nothing. (One WRITE
   * op per range instead cost a replica ~4 thread-pool trips per range:
   * fio's random writes timed Replicate out at 2 s.) Resolves to whether
   * every replica answered (then no send holds the span, which goes back to
   * the pool).
   */
  async writeBlockExtents(
    pg: number,
    ino: bigint,
    index: bigint,
    extents: readonly { offset: number; length: number }[],
    data: Buffer,
  ): Promise<void> {
    const st = this.serving(pg);
    this.checkBlockPg(pg, ino, index);
    const last = extents[extents.length - 1]!;
    const end = last.offset + last.length;
    let span: Buffer | undefined;
    let answered = false;
    try {
      answered = await this.repl.append(st, '', 'write-block', async () => {
        const old = await this.blockRecord(pg, ino, index);
        const oldLen = old?.length ?? 0;
        if (end > oldLen && this.d.anyFull?.(st.isr) && !(await this.allocatedTo(ino, index, end)))
          throw new FsError('NO_SPACE', `pg ${pg}: a brick holding it is full`);
        const chunk = CHECKSUM_CHUNK_BYTES;
        // From a chunk boundary at or before the old end (a gap past it is zeros anyway) ...
        const spanStart = Math.floor(Math.min(extents[0]!.offset, oldLen) / chunk) * chunk;
        // ... to a chunk boundary, or the block's (new) end.
        const spanEnd = Math.min(Math.ceil(end / chunk) * chunk, Math.max(oldLen, end));
        span = takeBuffer(spanEnd - spanStart).fill(0);
        if (oldLen > spanStart) {
          const current = await this.d.blocks.read(
            pg,
            ino,
            index,
            spanStart,
            Math.min(spanEnd, oldLen) - spanStart,
            old,
          );
          current.copy(span, 0);
        }
        let at = 0;
        for (const e of extents) {
          data.copy(span, e.offset - spanStart, at, at + e.length);
          at += e.length;
        }
        const rec = await this.d.blocks.write(
          pg,
          ino,
          index,
          spanStart,
          span,
          old,
          this.d.volume.blockSizeBytes,
        );
        return {
          writes: [{ key: keys.block(pg, ino, index), value: encodeRecord(rec) }],
          blocks: [{ ino, index, kind: 'WRITE', offset: spanStart, length: span.length, data: span }],
        };
      });
    } finally {
      if (answered && span) giveBack(span);
    }
  }

  /** The committed record of a block this brick leads (a cloning brick checks its copy against it). */
  async readBlockRecord(pg: number, ino: bigint, index: bigint): Promise<BlockRecord | undefined> {
    this.serving(pg);
    this.checkBlockPg(pg, ino, index);
    return this.blockRecord(pg, ino, index);
  }

  /**
   * Whether the allocation map (on the inode's PG) covers bytes [0, end) of
   * the block: preallocated, or written before. Asked only of a full PG.
   */
  private async allocatedTo(ino: bigint, index: bigint, end: number): Promise<boolean> {
    const inoPg = pgOfIno(ino);
    try {
      const [v] = await this.endpoint(inoPg).txRead(inoPg, [keys.alloc(inoPg, ino, index)]);
      return v !== undefined && decodeRecord<AllocRecord>(v).len >= end;
    } catch (err) {
      // Unknown: refused for space like any growth (the client may retry).
      this.d.log.warn('could not read the allocation map for a write into a full PG', { err: String(err) });
      return false;
    }
  }

  /** NO_SPACE unless every in-sync brick of `pg` can take `bytes` more below its full threshold. */
  checkRoom(pg: number, bytes: bigint): void {
    const st = this.serving(pg);
    const room = this.d.anyFull?.(st.isr) ? 0 : (this.d.roomBytes?.(st.isr) ?? Infinity);
    if (Number(bytes) > room)
      throw new FsError('NO_SPACE', `pg ${pg}: cannot reserve ${bytes} bytes (room for ${room})`);
  }

  /**
   * copy_file_range's unit: bytes of a source block written into a block of
   * this PG through its log, zeros where the source holds none. A piece
   * that replaces the whole destination block with the whole source block
   * is a CLONE (cloneBlock); any other reads the source bytes from its PG's
   * primary (this brick or a peer) and writes them. A hole copied onto a
   * hole writes nothing.
   */
  async copyBlock(
    pg: number,
    dst: { ino: bigint; index: bigint; offset: number },
    src: { ino: bigint; index: bigint; offset: number },
    length: number,
  ): Promise<void> {
    this.serving(pg);
    this.checkBlockPg(pg, dst.ino, dst.index);
    const srcPg = blockPg(src.ino, src.index, this.d.volume.pgCount);
    if (dst.offset === 0 && src.offset === 0 && !(dst.ino === src.ino && dst.index === src.index)) {
      const want = await this.endpoint(srcPg).readBlockRecord(srcPg, src.ino, src.index);
      if (
        want &&
        want.length > 0 &&
        want.length <= length &&
        (await this.cloneBlock(pg, dst, { pg: srcPg, ...src }, want, length))
      )
        return;
    }
    const bytes = await this.endpoint(srcPg).readBlock(srcPg, src.ino, src.index, src.offset, length);
    if (bytes.length === 0 && !(await this.blockRecord(pg, dst.ino, dst.index))) return;
    let data = bytes;
    if (bytes.length < length) {
      data = Buffer.alloc(length);
      bytes.copy(data);
    }
    await this.writeBlock(pg, dst.ino, dst.index, dst.offset, data);
  }

  /**
   * The destination block becomes the source's bytes as `want` (the source
   * primary's record) describes them, through one CLONE entry: each copy
   * links its own file of the source when it holds those bytes (no byte is
   * written or sent), a replica that does not gets them from here. False,
   * with nothing appended, when this brick's own copy of the source is not
   * `want` (the caller copies bytes), or when the destination holds bytes
   * past the copied range (they must stay).
   */
  private async cloneBlock(
    pg: number,
    dst: { ino: bigint; index: bigint },
    src: { pg: number; ino: bigint; index: bigint },
    want: BlockRecord,
    length: number,
  ): Promise<boolean> {
    const st = this.serving(pg);
    if (!this.d.blocks.clone) return false;
    let cloned = false;
    await this.repl.append(st, '', 'clone-block', async () => {
      const old = await this.blockRecord(pg, dst.ino, dst.index);
      if ((old?.length ?? 0) > length) return { writes: [], blocks: [] };
      if (want.length > (old?.length ?? 0) && this.d.anyFull?.(st.isr))
        throw new FsError('NO_SPACE', `pg ${pg}: a brick holding it is full`);
      if (!(await this.d.blocks.clone!(src, want, { pg, ino: dst.ino, index: dst.index })))
        return { writes: [], blocks: [] };
      cloned = true;
      const record = encodeRecord(want);
      return {
        writes: [{ key: keys.block(pg, dst.ino, dst.index), value: record }],
        blocks: [
          { ino: dst.ino, index: dst.index, kind: 'CLONE', offset: 0, length: want.length, record, src },
        ],
      };
    });
    return cloned;
  }

  /** Keeps the first `size` bytes of the inode's blocks held in this PG. */
  async truncateBlocks(pg: number, ino: bigint, size: bigint): Promise<void> {
    const st = this.serving(pg);
    const prefix = keys.blockPrefix(pg, ino);
    const bs = BigInt(this.d.volume.blockSizeBytes);
    for (const row of await this.d.kv.range({ gte: prefix, lt: prefixEnd(prefix) })) {
      const index = row.key.readBigUInt64BE(11);
      const start = index * bs;
      if (start + bs <= size) continue;
      await this.repl.append(st, '', 'truncate-block', async () => {
        const rec = await this.blockRecord(pg, ino, index);
        const keep = size <= start ? 0 : Number(size - start);
        if (!rec || keep >= rec.length) return { writes: [], blocks: [] };
        const key = keys.block(pg, ino, index);
        if (keep === 0)
          return {
            writes: [{ key, value: undefined }],
            blocks: [{ ino, index, kind: 'DELETE', offset: 0, length: 0 }],
          };
        const next = await this.d.blocks.truncate(pg, ino, index, keep, rec);
        return {
          writes: [{ key, value: next && encodeRecord(next) }],
          blocks: [{ ino, index, kind: 'TRUNCATE', offset: 0, length: keep }],
        };
      });
    }
  }

  /**
   * Zeroes the inode's bytes in [from, to) held in this PG (punchPlan): each
   * block changed by one entry of this PG's log, so every replica applies it.
   */
  async punchBlocks(pg: number, ino: bigint, from: bigint, to: bigint): Promise<void> {
    const st = this.serving(pg);
    const bs = this.d.volume.blockSizeBytes;
    const rows = await this.d.kv.range({
      gte: keys.block(pg, ino, from / BigInt(bs)),
      lt: keys.block(pg, ino, (to + BigInt(bs) - 1n) / BigInt(bs)),
    });
    for (const row of rows) {
      const index = row.key.readBigUInt64BE(11);
      await this.repl.append(st, '', 'punch-block', async () => {
        const rec = await this.blockRecord(pg, ino, index);
        const plan = rec && punchPlan(rec.length, index, bs, from, to);
        if (!rec || !plan) return { writes: [], blocks: [] };
        const key = keys.block(pg, ino, index);
        if (plan.kind === 'DELETE')
          return {
            writes: [{ key, value: undefined }],
            blocks: [{ ino, index, kind: 'DELETE', offset: 0, length: 0 }],
          };
        if (plan.kind === 'TRUNCATE') {
          const next = await this.d.blocks.truncate(pg, ino, index, plan.keep, rec);
          return {
            writes: [{ key, value: next && encodeRecord(next) }],
            blocks: [{ ino, index, kind: 'TRUNCATE', offset: 0, length: plan.keep }],
          };
        }
        const zeros = Buffer.alloc(plan.length);
        const next = await this.d.blocks.write(pg, ino, index, plan.offset, zeros, rec, bs);
        return {
          writes: [{ key, value: encodeRecord(next) }],
          blocks: [{ ino, index, kind: 'WRITE', offset: plan.offset, length: plan.length, data: zeros }],
        };
      });
    }
  }

  // ---------------------------------------------------------------- recovery

  /**
   * Finishes what a crash interrupted: decisions whose participants have not
   * all committed, and prepared transactions whose coordinator has decided
   * (or forgotten: presumed abort). Also reclaims removed directories.
   */
  async recoverySweep(): Promise<void> {
    if (this.recovering || this.stopped) return;
    this.recovering = true;
    try {
      for (const [pg, st] of this.pgs) {
        if (st.lost) {
          await this.leaveIsr(st);
          continue;
        }
        if (st.role !== 'primary') continue;
        if (!st.ready) {
          void this.promote(st);
          continue;
        }
        // Replicas outside the in-sync set are caught up in the background.
        this.repl.catchUpAll(st, (b) => this.d.brickAlive?.(b) ?? true);
        if (st.sweptGen === st.sweepGen && st.prepared.size === 0) continue;
        const gen = st.sweepGen;
        let found = 0;
        const dprefix = keys.kindPrefix(pg, KeyKind.decision);
        const decisions = await this.d.kv.range({ gte: dprefix, lt: prefixEnd(dprefix) });
        found += decisions.length;
        for (const row of decisions) {
          const txId = row.key.subarray(dprefix.length).toString();
          if (st.activeTx.has(txId)) continue;
          const rec = JSON.parse(row.value.toString()) as DecisionRecord;
          await this.finishDecision(pg, txId, rec.participants).catch((err) =>
            this.d.log.warn('tx commit resend failed', { txId, err: String(err) }),
          );
        }
        for (const tx of [...st.prepared.values()]) {
          if (Date.now() - tx.createdAtMs < this.d.knobs.txResolveAfterMs) continue;
          try {
            const state = await this.endpoint(tx.coordinatorPg).txStatus(tx.coordinatorPg, tx.txId);
            if (state === 'committed') await this.txCommit(pg, tx.txId);
            else if (state === 'aborted') await this.txAbort(pg, tx.txId);
          } catch (err) {
            this.d.log.warn('tx status unavailable', { txId: tx.txId, err: String(err) });
          }
        }
        const tprefix = keys.kindPrefix(pg, KeyKind.trim);
        const trims = await this.d.kv.range({ gte: tprefix, lt: prefixEnd(tprefix), limit: 256 });
        found += trims.length;
        for (const row of trims) {
          await this.finishTrim(pg, row.key.readBigUInt64BE(3)).catch((err) =>
            this.d.log.warn('block trim deferred', { pg, err: String(err) }),
          );
        }
        const hprefix = keys.kindPrefix(pg, KeyKind.punch);
        const punches = await this.d.kv.range({ gte: hprefix, lt: prefixEnd(hprefix), limit: 256 });
        found += punches.length;
        for (const row of punches) {
          await this.finishPunch(pg, row.key.readBigUInt64BE(3)).catch((err) =>
            this.d.log.warn('hole punch deferred', { pg, err: String(err) }),
          );
        }
        const oprefix = keys.kindPrefix(pg, KeyKind.orphan);
        const orphans = await this.d.kv.range({ gte: oprefix, lt: prefixEnd(oprefix), limit: 256 });
        found += orphans.length;
        for (const row of orphans) {
          const ino = row.key.readBigUInt64BE(3);
          const inode = await this.read(pg, (t) => t.getInode(ino));
          // Directories hold no data a process may still read; files wait for their last close,
          // or, with an owner (O_TMPFILE), until the owner's session is gone.
          if (!inode || (inode.mode & 0o170000) === 0o040000) await this.reclaim(pg, ino);
          else if (row.value.length > 0 && (await this.ownerGone(decodeRecord<OrphanRecord>(row.value))))
            await this.reclaim(pg, ino, true);
        }
        // Nothing was pending when the scans ran: skip the scans until an entry writes such a record.
        if (found === 0) st.sweptGen = gen;
      }
    } catch (err) {
      if (!(err instanceof FsError)) this.d.log.error('recovery sweep failed', { err: String(err) });
    } finally {
      this.recovering = false;
    }
  }

  /**
   * The caller's session and a check of others', for records a session
   * owns (dunix.listener): gone once its mount record is missing and the
   * record is older than orphanOwnerGraceMs; never gone while etcd does
   * not answer.
   */
  async sessionContext(owner: string): Promise<SessionContext> {
    const alive = await this.d.mountsAlive?.();
    const graceNs = BigInt(this.d.knobs.orphanOwnerGraceMs) * 1_000_000n;
    const nowNs = this.d.clockNs();
    return {
      owner,
      gone: (rec) => alive !== undefined && nowNs - rec.sinceNs >= graceNs && !alive.has(rec.owner),
    };
  }

  /** Whether an orphan's owning mount has no session and the orphan is past the grace period. */
  private async ownerGone(rec: OrphanRecord): Promise<boolean> {
    const graceNs = BigInt(this.d.knobs.orphanOwnerGraceMs) * 1_000_000n;
    if (this.d.clockNs() - rec.sinceNs < graceNs) return false;
    const alive = await this.d.mountsAlive?.();
    return alive !== undefined && !alive.has(rec.owner);
  }

  /** Reclaims a removed directory in the background (the recovery sweep retries failures). */
  reclaimSoon(ino: bigint): void {
    const pg = pgOfIno(ino);
    this.endpoint(pg)
      .reclaim(pg, ino)
      .catch((err) => this.d.log.warn('reclaim deferred to the recovery sweep', { ino, err: String(err) }));
  }

  private inodeCount = { value: 0, atMs: 0 };
  /** Inodes in the PGs served here, recounted at most every 10 s (for statfs). */
  async inodeCountCached(): Promise<number> {
    if (Date.now() - this.inodeCount.atMs > 10_000) {
      this.inodeCount = { value: (await this.counts()).inodes, atMs: Date.now() };
    }
    return this.inodeCount.value;
  }

  /**
   * Removes block files of `pg` that no record names: what a crash between a
   * block write and its entry's batch leaves when the op is never retried
   * (the file takes space nothing accounts for and nothing reads). With the
   * PG's append queue held, so no append is between the two; skipped while
   * the copy is being backfilled (it is rebuilt anyway). Returns how many.
   */
  async sweepOrphanBlocks(pg: number): Promise<number> {
    const st = this.pgs.get(pg);
    const list = this.d.blocks.list?.bind(this.d.blocks);
    if (!st || !list) return 0;
    return st.hold(async () => {
      if (st.backfilling || this.pgs.get(pg) !== st) return 0;
      let removed = 0;
      for (const { ino, index } of await list(pg)) {
        if (await this.d.kv.get(keys.block(pg, ino, index))) continue;
        this.d.log.warn('removing a block file no record names', { pg, ino, index });
        await this.d.blocks.delete(pg, ino, index);
        removed++;
      }
      return removed;
    });
  }

  /**
   * Bytes of block files of every PG copy held here, any role (from the
   * block records), and the bytes reserved by preallocation in the
   * allocation maps held here (`pre` records: never written, so no block
   * record counts them yet).
   */
  async blockBytesHeld(): Promise<number> {
    let total = 0;
    for (const pg of [...this.pgs.keys()]) {
      await this.scanRange(keys.kindPrefix(pg, KeyKind.block), (r) => {
        if (r.value) total += decodeRecord<BlockRecord>(r.value).length;
      });
      await this.scanRange(keys.kindPrefix(pg, KeyKind.alloc), (r) => {
        const a = r.value && decodeRecord<AllocRecord>(r.value);
        if (a && a.pre) total += a.len;
      });
    }
    return total;
  }

  /** Counts for BrickStatus. */
  async counts(): Promise<{ inodes: number; blocks: number }> {
    let inodes = 0;
    let blocks = 0;
    for (const [pg, st] of this.pgs) {
      if (st.role !== 'primary') continue; // each PG counted once, at its primary
      const ip = keys.kindPrefix(pg, KeyKind.inode);
      const bp = keys.kindPrefix(pg, KeyKind.block);
      inodes += await this.countRange(ip);
      blocks += await this.countRange(bp);
    }
    return { inodes, blocks };
  }

  private async countRange(prefix: Buffer): Promise<number> {
    let n = 0;
    await this.scanRange(prefix, () => n++);
    return n;
  }

  /** Visits every row under `prefix`, a page at a time. */
  private async scanRange(prefix: Buffer, visit: (row: KvEntry) => void): Promise<void> {
    let after: Buffer | undefined;
    const lt = prefixEnd(prefix);
    for (;;) {
      const rows = await this.d.kv.range(
        after ? { gt: after, lt, limit: 4096 } : { gte: prefix, lt, limit: 4096 },
      );
      rows.forEach(visit);
      if (rows.length < 4096) return;
      after = rows[rows.length - 1]!.key;
    }
  }

  /** Caller identity of a request, as the engine wants it. */
  static cred(c: { uid: number; gid: number; groups: readonly number[] } | null | undefined): Cred {
    if (!c) throw new FsError('INVALID_ARGUMENT', 'missing caller');
    if (c.groups.length > limits.callerGroupsMax)
      throw new FsError(
        'INVALID_ARGUMENT',
        `caller has ${c.groups.length} groups (at most ${limits.callerGroupsMax})`,
      );
    return { uid: c.uid, gid: c.gid, groups: c.groups };
  }
}

/**
 * Stored replies are JSON with bigints and byte strings tagged, so a retried
 * request gets back exactly the values the first attempt returned.
 */
function replaceReply(this: unknown, key: string, v: unknown): unknown {
  const raw = (this as Record<string, unknown>)[key];
  if (typeof raw === 'bigint') return { $n: raw.toString() };
  if (Buffer.isBuffer(raw) || raw instanceof Uint8Array) return { $b: Buffer.from(raw).toString('base64') };
  return v;
}

function reviveReply(_key: string, v: unknown): unknown {
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    const o = v as Record<string, unknown>;
    const keysOf = Object.keys(o);
    if (keysOf.length === 1 && typeof o.$n === 'string') return BigInt(o.$n);
    if (keysOf.length === 1 && typeof o.$b === 'string') return Buffer.from(o.$b, 'base64');
  }
  return v;
}

function push<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const list = m.get(k);
  if (list) list.push(v);
  else m.set(k, [v]);
}

function backoff(attempt: number): Promise<void> {
  const ms = Math.min(200, 2 ** Math.min(attempt, 8)) * (0.5 + Math.random());
  return new Promise((r) => setTimeout(r, ms));
}
