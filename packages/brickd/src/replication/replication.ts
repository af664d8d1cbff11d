import { FsError, type PgAssignment } from '@dunix/proto';
import { LogStore, sameRecord } from '../pg/log-store.js';
import { decodeRecord, type BlockRecord } from '../store/records.js';
import type { BlockOp, LogEntry, LogPosition } from '../pg/log-entry.js';
import type { PgState } from '../pg/pg-state.js';
import { isBrickKey, KeyKind, keys, pgOfKey } from '../store/keys.js';
import { prefixEnd, type KvWrite } from '../store/kv.js';
import type { BackfillStep, ReplicationDeps, ScrubDigestReply, ScrubDigestRequest } from './deps.js';
import { digestCopy, Scrubber } from './scrub.js';
import { ReplicaSender } from './replica-sender.js';

/** What an append writes: the PG's key changes and the block file changes that go with them. */
export interface AppendOp {
  writes: KvWrite[];
  blocks: BlockOp[];
}

/** An entry written here and sent to the other in-sync members, not yet acknowledged. */
interface SentEntry {
  entry: LogEntry;
  others: string[];
  sends: Promise<void>[];
  localDoneMs: number;
}

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(`invariant: ${msg}`);
}

/**
 * Primary-copy replication of one brick's PG copies (DESIGN.md,
 * "Replication"). As primary of a PG it is the one append path: it
 * sequences every mutation, writes it and sends it to every in-sync replica
 * in parallel, and answers only when all of them have it; a replica that
 * fails is dropped from the in-sync set in etcd (compare-and-swap) before
 * the answer. As replica it applies entries in sequence order without the
 * namespace engine and refuses older epochs. A new primary reconciles the
 * logs of its in-sync set before serving (peering); replicas outside the
 * set are caught up from the log, or backfilled when the log no longer
 * reaches back, and then rejoin. Free of I/O but through `ReplicationDeps`.
 */
export class Replication {
  readonly logs: LogStore;
  /** Scrub of the PGs this brick leads (scrub.ts). */
  readonly scrub: Scrubber;
  private readonly catchingUp = new Set<string>();
  /** Live streams to replicas, per PG copy (its state object) and replica brick. */
  private readonly senders = new WeakMap<PgState, Map<string, ReplicaSender>>();

  constructor(private readonly d: ReplicationDeps) {
    this.logs = new LogStore(d.kv, d.blocks, d.volume.blockSizeBytes, d.durability);
    this.scrub = new Scrubber(d, this);
  }

  private get me(): string {
    return this.d.brickId;
  }

  // ------------------------------------------------------------ primary

  /**
   * Appends one entry made by `make`, which runs inside the PG's append queue
   * (so block file changes and their entry are never interleaved with
   * another entry of the PG). Resolves once every in-sync replica has it,
   * to whether every replica answered: then no send still holds the op's
   * bytes (a replica answers only once it has read the whole request), and
   * the caller may reuse them.
   */
  async append(
    st: PgState,
    requestId: string,
    kind: string,
    make: () => Promise<AppendOp>,
  ): Promise<boolean> {
    return (await this.appendPipelined(st, requestId, kind, make)).acked;
  }

  /**
   * append() in two steps: resolves once the entry is sequenced and written
   * here and on its way to the replicas, with `acked`, which resolves as
   * append() does. The append queue is free again at the first step, so the
   * PG's next entry is made and sent while this one's replicas still apply
   * it (at most `replicateInflightMax` entries unacknowledged per PG; a
   * replica gets them in order, batched: replica-sender.ts). An entry that
   * clones a block is acknowledged before the queue goes on (a replica that
   * lacks the source gets the clone's bytes read back from this copy, which
   * no later entry may have changed meanwhile).
   */
  async appendPipelined(
    st: PgState,
    requestId: string,
    kind: string,
    make: () => Promise<AppendOp>,
  ): Promise<{ acked: Promise<boolean> }> {
    const stages = this.d.stages;
    const queuedMs = stages?.now() ?? 0;
    return st.appendQueue.run(async () => {
      stages?.done('append_queue', queuedMs);
      while (st.replicating.size >= this.d.knobs.replicateInflightMax) await Promise.race(st.replicating);
      const sent = await this.writeAndSend(st, requestId, kind, make);
      if (!sent) return { acked: Promise.resolve(true) };
      const acked = this.finishAppend(st, sent);
      const settled = acked.then(
        () => undefined,
        () => undefined,
      );
      st.replicating.add(settled);
      void settled.then(() => st.replicating.delete(settled));
      if (sent.entry.blocks.some((op) => op.kind === 'CLONE')) await settled;
      return { acked };
    });
  }

  /** append() for a caller that already holds the PG's append queue (the scrub's repairs). */
  async appendHeld(
    st: PgState,
    requestId: string,
    kind: string,
    make: () => Promise<AppendOp>,
  ): Promise<boolean> {
    await st.drainReplication();
    const sent = await this.writeAndSend(st, requestId, kind, make);
    return sent ? this.finishAppend(st, sent) : true;
  }

  /**
   * Sequences the entry, sends it to every other in-sync member and writes it
   * here (in parallel); resolves once the local write is done. Undefined: the
   * op changes nothing.
   */
  private async writeAndSend(
    st: PgState,
    requestId: string,
    kind: string,
    make: () => Promise<AppendOp>,
  ): Promise<SentEntry | undefined> {
    this.checkWritable(st);
    const op = await make();
    if (op.writes.length === 0 && op.blocks.length === 0) return undefined;
    for (const w of op.writes) assert(pgOfKey(w.key) === st.pg, `pg ${st.pg} op writes another PG's key`);
    const seq = st.opSeq + 1n;
    const entry: LogEntry = {
      epoch: st.epoch,
      seq,
      requestId,
      kind,
      writes: [...op.writes, ...(await this.trimWrites(st, seq))],
      blocks: op.blocks,
    };
    const others = st.isr.filter((b) => b !== this.me);
    const stages = this.d.stages;
    stages?.entry(kind);
    const startMs = stages?.now() ?? 0;
    const sends = others.map((b) => this.sender(st, b).push(entry));
    // A replica's failure is handled once the local write is known (finishAppend).
    for (const p of sends) p.catch(() => undefined);
    try {
      await this.logs.write(st, entry);
    } catch (err) {
      // The entry may be on replicas but not here: this copy cannot lead any more.
      this.d.log.error('local log write failed; giving up the PG', { pg: st.pg, err: String(err) });
      st.role = 'replica';
      st.ready = false;
      await Promise.allSettled(sends);
      throw new FsError('UNAVAILABLE', `pg ${st.pg}: local write failed`);
    }
    stages?.done('log_write', startMs);
    const localDoneMs = stages?.now() ?? 0;
    this.remember(st, entry);
    return { entry, others, sends, localDoneMs };
  }

  /**
   * Waits for every replica the entry was sent to; drops the ones that did
   * not take it from the in-sync set (before acknowledging); acknowledges
   * only as a primary whose lease holds and whose set is big enough.
   */
  private async finishAppend(st: PgState, sent: SentEntry): Promise<boolean> {
    const { entry, others, sends } = sent;
    if (this.d.plantedBug === 'ack-before-replicas') {
      // PLANTED BUG (simulation only): acknowledge before the replicas have the entry.
      void Promise.allSettled(sends);
      if (this.d.lease.fenced()) throw new FsError('UNAVAILABLE', `pg ${st.pg}: lease not confirmed`);
      return false;
    }
    const remote = await Promise.allSettled(sends);
    if (this.d.stages && others.length > 0) this.d.stages.done('replicas_after_local', sent.localDoneMs);
    const failed = others.filter((_b, i) => remote[i]!.status === 'rejected');
    if (failed.length > 0) {
      for (const b of failed) {
        const r = remote[others.indexOf(b)] as PromiseRejectedResult;
        this.d.log.warn('replica did not take an entry; dropping it from the in-sync set', {
          pg: st.pg,
          brick: b,
          seq: entry.seq.toString(),
          err: String(r.reason),
        });
      }
      try {
        await this.changeIsr(st, (isr) => isr.filter((b) => !failed.includes(b)));
      } catch (err) {
        // The entry (and its stored reply) is in this log but not on every member of
        // the in-sync set in etcd. Serving on would let a retry of the request be
        // answered from that stored reply (mutate's duplicate check) while a
        // successor may lack the entry: an acknowledged op lost. Serve again only
        // after peering has brought the set up to this log or dropped who is not.
        st.ready = false;
        throw err;
      }
    }
    // Acknowledge only as a primary whose lease holds and whose set is big enough.
    if (this.d.lease.fenced()) throw new FsError('UNAVAILABLE', `pg ${st.pg}: lease not confirmed`);
    // A handover (a move) made another brick primary while this entry was
    // on its way: whether the successor's peering saw it is not known here,
    // so the client retries there (its request id finds the stored reply).
    if (st.role !== 'primary')
      throw new FsError('NOT_PRIMARY', `pg ${st.pg}: the primary changed during the append`);
    if (st.isr.length < this.d.volume.minInsync)
      throw new FsError('NOT_ENOUGH_REPLICAS', `pg ${st.pg} has ${st.isr.length} in-sync copies`);
    return failed.length === 0;
  }

  /** The live stream of `st`'s entries to `brick` (one per PG copy and replica). */
  private sender(st: PgState, brick: string): ReplicaSender {
    let bySt = this.senders.get(st);
    if (!bySt) {
      bySt = new Map();
      this.senders.set(st, bySt);
    }
    let s = bySt.get(brick);
    if (!s) {
      s = new ReplicaSender({
        send: (entries) => this.sendBatch(st, brick, entries),
        batchEntriesMax: this.d.knobs.replicateInflightMax,
        batchBytesMax: this.d.knobs.replicateBatchBytesMax,
      });
      bySt.set(brick, s);
    }
    return s;
  }

  /** Mutations and reads are served only by a ready primary whose lease holds. */
  checkServing(st: PgState): void {
    if (st.role !== 'primary')
      throw new FsError('NOT_PRIMARY', `brick ${this.me} is not primary of pg ${st.pg}`);
    if (!st.ready) throw new FsError('UNAVAILABLE', `pg ${st.pg}: primary is reconciling its replicas`);
    if (this.d.lease.fenced()) throw new FsError('UNAVAILABLE', `pg ${st.pg}: lease not confirmed`);
  }

  private checkWritable(st: PgState): void {
    this.checkServing(st);
    if (st.isr.length < this.d.volume.minInsync) {
      throw new FsError(
        'NOT_ENOUGH_REPLICAS',
        `pg ${st.pg} has ${st.isr.length} in-sync copies, min_insync is ${this.d.volume.minInsync}`,
      );
    }
  }

  /**
   * The log keeps `opLogRetain` entries back (for catch-up of a returning
   * replica and for retried requests' stored replies); older ones are
   * trimmed by the entry that passes them, so every copy trims alike. Every
   * in-sync replica has every entry before `seq` (they acknowledged it).
   */
  private async trimWrites(st: PgState, seq: bigint): Promise<KvWrite[]> {
    const retain = BigInt(this.d.knobs.opLogRetain);
    const old = seq - retain;
    if (old < st.firstSeq || old < 1n) return [];
    const slot = Number(old % retain);
    let requestId = st.recentSeqs?.[slot] === Number(old) ? st.recentRequestIds![slot] : undefined;
    requestId ??= (await this.logs.entry(st.pg, old))?.requestId ?? '';
    const out: KvWrite[] = [{ key: keys.log(st.pg, old), value: undefined }];
    if (requestId) out.push({ key: keys.request(st.pg, requestId), value: undefined });
    return out;
  }

  private remember(st: PgState, e: LogEntry): void {
    const size = this.d.knobs.opLogRetain;
    st.recentSeqs ??= new Float64Array(size);
    st.recentRequestIds ??= new Array<string>(size);
    const slot = Number(e.seq % BigInt(size));
    st.recentSeqs[slot] = Number(e.seq);
    st.recentRequestIds[slot] = e.requestId;
  }

  /**
   * Sends live entries (that follow each other) to one replica; a replica
   * that reports a gap first gets the entries it lacks from this log.
   * Resolves to the replica's last sequence.
   */
  private async sendBatch(st: PgState, brick: string, entries: LogEntry[]): Promise<bigint> {
    const startMs = this.d.stages?.now() ?? 0;
    const first = entries[0]!.seq;
    const last = entries[entries.length - 1]!.seq;
    // The epoch the primary appended them at (not st.epoch, which a newer
    // map may have moved on): a replica that promised a successor refuses them.
    const epoch = entries[entries.length - 1]!.epoch;
    const r = await this.replicateLive(st, brick, epoch, entries);
    if (!r.gap) {
      this.d.stages?.done('replica_round_trip', startMs);
      assert(r.lastSeq >= last, `replica ${brick} of pg ${st.pg} acknowledged ${r.lastSeq} for ${last}`);
      st.ackedSeq.set(brick, r.lastSeq);
      return r.lastSeq;
    }
    // Entries before these are on this primary's log (written, or being
    // written by the append that made the first of them): fill from there, then resend.
    let next = r.lastSeq + 1n;
    if (next < st.firstSeq) throw new FsError('LOG_GAP', `replica ${brick} is behind the log of pg ${st.pg}`);
    while (next < first) {
      const batch = await this.readForCatchUp(
        st,
        next,
        Math.min(this.d.knobs.catchUpBatchEntries, Number(first - next)),
      );
      if (batch.length === 0) break;
      const rr = await this.d.transport.replicate(brick, st.pg, epoch, batch, true);
      if (rr.gap)
        throw new FsError('LOG_GAP', `replica ${brick} of pg ${st.pg} reports a gap during catch-up`);
      next = rr.lastSeq + 1n;
    }
    const again = await this.replicateLive(st, brick, epoch, entries);
    if (again.gap || again.lastSeq < last)
      throw new FsError('LOG_GAP', `replica ${brick} still misses ${last}`);
    st.ackedSeq.set(brick, again.lastSeq);
    return again.lastSeq;
  }

  /**
   * Sends new entries. A replica without the source of a CLONE (not holding
   * the source's PG, or its copy differs) refuses it having changed nothing
   * (an entry with a CLONE always goes alone); it then gets the block's
   * bytes as a SYNC, read from this brick, whose block already is the clone
   * (the append queue keeps it so until every replica answered).
   */
  private async replicateLive(
    st: PgState,
    brick: string,
    epoch: number,
    entries: LogEntry[],
  ): Promise<{ lastSeq: bigint; gap: boolean }> {
    try {
      return await this.d.transport.replicate(brick, st.pg, epoch, entries, false);
    } catch (err) {
      if (!(err instanceof FsError && err.code === 'NO_CLONE_SOURCE') || entries.length !== 1) throw err;
    }
    const e = entries[0]!;
    const blocks = await Promise.all(
      e.blocks.map(async (op): Promise<BlockOp> => {
        if (op.kind !== 'CLONE') return op;
        const rec = decodeRecord<BlockRecord>(op.record!);
        const data = await this.d.blocks.read(st.pg, op.ino, op.index, 0, rec.length, rec);
        return {
          ino: op.ino,
          index: op.index,
          kind: 'SYNC',
          offset: 0,
          length: data.length,
          data,
          record: op.record!,
        };
      }),
    );
    return this.d.transport.replicate(brick, st.pg, epoch, [{ ...e, blocks }], false);
  }

  /**
   * Stored entries for a copy that lacks them: block changes become SYNC ops
   * with the block's current bytes (the bytes of old writes are not kept), so
   * applying the entries in order ends in the primary's current state.
   */
  private async readForCatchUp(st: PgState, fromSeq: bigint, max: number): Promise<LogEntry[]> {
    // The log is trimmed opLogRetain entries back whatever a copy outside the
    // in-sync set still needs: a copy that fell that far behind (appends went
    // on during its backfill) is backfilled again, not an invariant broken.
    if (fromSeq < st.firstSeq)
      throw new FsError('LOG_GAP', `pg ${st.pg}: the log starts at ${st.firstSeq}, after ${fromSeq}`);
    const entries = await this.logs.entries(st.pg, fromSeq, max);
    const out: LogEntry[] = [];
    let bytes = 0;
    for (const e of entries) {
      // One message stays under the wire bound: stop once the bytes budget is spent.
      if (out.length > 0 && bytes >= this.d.knobs.backfillChunkBytes) break;
      const ops: BlockOp[] = [];
      // One SYNC per block: an entry may hold several ranges of one block (WriteBlock extents),
      // and each SYNC carries the whole block.
      const synced = new Set<string>();
      for (const op of e.blocks) {
        if (op.kind === 'DELETE') ops.push(op);
        else {
          const block = `${op.ino}/${op.index}`;
          if (synced.has(block)) continue;
          synced.add(block);
          const sync = await this.logs.syncOp(st.pg, op.ino, op.index);
          bytes += sync.data?.length ?? 0;
          ops.push(sync);
        }
      }
      e.blocks = ops;
      out.push(e);
    }
    return out;
  }

  /**
   * Changes the PG's in-sync set by compare-and-swap in etcd, re-reading on
   * a lost race. Throws NOT_PRIMARY if this brick is no longer the primary.
   */
  private async changeIsr(st: PgState, next: (isr: string[]) => string[]): Promise<void> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const a = await this.d.placement.read(st.pg);
      if (a.bricks[0] !== this.me) {
        this.adopt(st, a);
        throw new FsError('NOT_PRIMARY', `brick ${this.me} is no longer primary of pg ${st.pg}`);
      }
      const isr = next([...a.isr]).filter((b, i, all) => a.bricks.includes(b) && all.indexOf(b) === i);
      if (!isr.includes(this.me)) isr.unshift(this.me);
      if (isr.length === a.isr.length && isr.every((b) => a.isr.includes(b))) {
        this.adopt(st, a);
        return;
      }
      try {
        const updated = await this.d.placement.update(st.pg, a.epoch, a.bricks, isr);
        this.d.log.info('in-sync set changed', { pg: st.pg, epoch: updated.epoch, isr: updated.isr });
        this.adopt(st, updated);
        return;
      } catch (err) {
        if (!(err instanceof FsError && err.code === 'STALE_EPOCH')) throw err;
      }
    }
    throw new FsError('UNAVAILABLE', `pg ${st.pg}: in-sync set kept changing`);
  }

  /** Takes a (newer) placement entry for the PG this brick holds a copy of. */
  adopt(st: PgState, a: PgAssignment): void {
    if (a.epoch < st.epoch) return;
    st.epoch = a.epoch;
    st.bricks = [...a.bricks];
    st.isr = [...a.isr];
    if (a.bricks[0] !== this.me && st.role === 'primary') {
      st.role = 'replica';
      st.ready = false;
    }
  }

  // ------------------------------------------------------------ peering

  /**
   * Makes this brick the serving primary of `st` at its current epoch:
   * every other in-sync replica promises the epoch and reports its log
   * position; the longest log among them is pulled here, the others are
   * brought up to it; unreachable replicas are dropped from the set. Runs in
   * the append queue: nothing is appended meanwhile.
   */
  async becomePrimary(st: PgState, onReconciled: () => Promise<void>): Promise<void> {
    await st.hold(async () => {
      if (st.role !== 'primary' || st.ready) return;
      const epoch = st.epoch;
      st.promisedEpoch = Math.max(st.promisedEpoch, epoch);
      const others = st.isr.filter((b) => b !== this.me);
      const pos = await Promise.allSettled(others.map((b) => this.positionOf(b, st.pg, epoch)));
      const reached: { brick: string; pos: LogPosition }[] = [];
      const lost: string[] = [];
      others.forEach((b, i) => {
        const r = pos[i]!;
        if (r.status === 'fulfilled') reached.push({ brick: b, pos: r.value });
        else lost.push(b);
      });
      // Pull what the longest log has beyond ours.
      reached.sort((x, y) => (x.pos.lastSeq > y.pos.lastSeq ? -1 : x.pos.lastSeq < y.pos.lastSeq ? 1 : 0));
      const best = reached[0];
      if (best && best.pos.lastSeq > st.opSeq) {
        try {
          await this.pull(st, best.brick, best.pos.lastSeq, epoch);
        } catch (err) {
          const a = await this.d.placement.read(st.pg);
          if (a.epoch > epoch) {
            // The map moved on meanwhile (the controller changed the set): peer
            // again at the new epoch, with the set it names.
            this.d.log.info('placement changed during peering; peering again', {
              pg: st.pg,
              epoch: a.epoch,
              isr: a.isr,
            });
            this.adopt(st, a);
            return;
          }
          if (a.bricks[0] !== this.me || a.isr.some((b) => b !== this.me)) {
            // Its log is longer than ours and cannot be pulled (it no longer
            // reaches back to us, or it stopped answering): it may hold entries
            // we lack, so it leads and we step down, never the other way round.
            this.d.log.warn('a replica is ahead and its log cannot be pulled: handing the PG over', {
              pg: st.pg,
              brick: best.brick,
              err: String(err),
            });
            await this.stepDown(st, best.brick);
            return;
          }
          // The controller has meanwhile dropped it (and every other copy)
          // from the in-sync set at our epoch: this copy is the only one in
          // sync, so it holds every acknowledged entry (an entry is
          // acknowledged only once every member has it, and a member is
          // dropped before that). What the other log has beyond ours was never
          // acknowledged; its copy diverges from ours and is backfilled when it
          // returns (catch-up's log-matching check). Entries on their way to
          // replicas when the old primary lost them (pipelined appends) leave
          // such longer logs behind.
          this.d.log.warn('a replica ahead left the in-sync set: leading with this log', {
            pg: st.pg,
            brick: best.brick,
            seq: st.opSeq.toString(),
            theirs: best.pos.lastSeq.toString(),
            err: String(err),
          });
          this.adopt(st, a);
          reached.length = 0;
          lost.length = 0;
        }
      }
      // Bring the others up to ours; a replica that cannot be is dropped.
      await Promise.all(
        reached
          .filter((r) => !lost.includes(r.brick))
          .map(async (r) => {
            try {
              await this.bringUp(st, r.brick, r.pos, epoch);
            } catch (err) {
              this.d.log.warn('in-sync replica could not be reconciled; dropping it', {
                pg: st.pg,
                brick: r.brick,
                err: String(err),
              });
              lost.push(r.brick);
            }
          }),
      );
      if (lost.length > 0) await this.changeIsr(st, (isr) => isr.filter((b) => !lost.includes(b)));
      if (st.role !== 'primary') return;
      await onReconciled();
      // Peering brought every in-sync copy to this log; positions heard in an earlier term are stale.
      st.ackedSeq.clear();
      for (const b of st.isr) if (b !== this.me) st.ackedSeq.set(b, st.opSeq);
      st.ready = true;
      this.d.log.info('serving as primary', {
        pg: st.pg,
        epoch: st.epoch,
        isr: st.isr,
        seq: st.opSeq.toString(),
      });
    });
  }

  /**
   * A replica's log position, asked again for a while when it does not hold
   * the PG yet (it applies the same placement change a moment later) or
   * cannot be reached; it is dropped from the set only after that.
   */
  private async positionOf(brick: string, pg: number, epoch: number): Promise<LogPosition> {
    const deadline = this.d.clock.nowMs() + this.d.knobs.replicateTimeoutMs;
    for (;;) {
      try {
        return await this.d.transport.position(brick, pg, epoch);
      } catch (err) {
        const again = err instanceof FsError && (err.code === 'NOT_PRIMARY' || err.code === 'UNAVAILABLE');
        if (!again || this.d.clock.nowMs() >= deadline) throw err;
        await this.d.clock.sleep(50);
      }
    }
  }

  /**
   * Leaves the PG's in-sync set (compare-and-swap), handing the primary role
   * to `successor` (or the first other in-sync member) if this brick has it:
   * its copy cannot be trusted to lead (lost store, or behind a member whose
   * log it cannot pull). False when no other in-sync member exists: the PG
   * then stays unserved rather than led by a copy that may lack acknowledged
   * ops (an operator must decide).
   */
  async stepDown(st: PgState, successor?: string): Promise<boolean> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const a = await this.d.placement.read(st.pg);
      if (!a.isr.includes(this.me)) {
        this.adopt(st, a);
        return true;
      }
      const others = a.isr.filter((b) => b !== this.me);
      if (others.length === 0) {
        this.d.log.error('this brick holds the only in-sync copy of the PG and cannot trust it', {
          pg: st.pg,
        });
        return false;
      }
      const next = successor && others.includes(successor) ? successor : others[0]!;
      const bricks = a.bricks[0] === this.me ? [next, ...a.bricks.filter((b) => b !== next)] : a.bricks;
      try {
        const updated = await this.d.placement.update(st.pg, a.epoch, bricks, others);
        this.d.log.info('left the in-sync set', {
          pg: st.pg,
          epoch: updated.epoch,
          primary: updated.bricks[0],
        });
        st.role = 'replica';
        st.ready = false;
        this.adopt(st, updated);
        return true;
      } catch (err) {
        if (!(err instanceof FsError && err.code === 'STALE_EPOCH')) throw err;
      }
    }
    throw new FsError('UNAVAILABLE', `pg ${st.pg}: placement kept changing`);
  }

  /** Applies here the entries of `brick`'s log past ours (our log must be a prefix of it). */
  private async pull(st: PgState, brick: string, until: bigint, epoch: number): Promise<void> {
    // The entry at our last sequence must be the same on both: logs match up to it.
    let from = st.opSeq === 0n ? 1n : st.opSeq;
    while (st.opSeq < until) {
      const batch = await this.d.transport.fetchLog(
        brick,
        st.pg,
        epoch,
        from,
        this.d.knobs.catchUpBatchEntries,
      );
      if (batch.length === 0)
        throw new FsError('LOG_GAP', `replica ${brick} returned no entries from ${from}`);
      for (const e of batch) {
        if (e.seq <= st.opSeq) {
          if (e.seq === st.opSeq && e.epoch !== st.lastEpoch)
            throw new FsError('DIVERGED', `pg ${st.pg}: entry ${e.seq} differs from replica ${brick}`);
          continue;
        }
        await this.logs.apply(st, e);
      }
      from = st.opSeq + 1n;
    }
  }

  /** Sends `brick` the entries of our log past its position (the catch-up path, inside the queue). */
  private async bringUp(st: PgState, brick: string, pos: LogPosition, epoch: number): Promise<void> {
    if (pos.lastSeq > st.opSeq) throw new FsError('DIVERGED', `replica ${brick} is ahead of the new primary`);
    if (pos.lastSeq > 0n && pos.lastSeq >= st.firstSeq) {
      const mine = await this.logs.entry(st.pg, pos.lastSeq);
      if (!mine || mine.epoch !== pos.lastEpoch)
        throw new FsError('DIVERGED', `replica ${brick}: entry ${pos.lastSeq} differs`);
    }
    let next = pos.lastSeq + 1n;
    if (next < st.firstSeq) throw new FsError('LOG_GAP', `replica ${brick} is behind the log`);
    while (next <= st.opSeq) {
      const batch = await this.readForCatchUp(st, next, this.d.knobs.catchUpBatchEntries);
      const r = await this.d.transport.replicate(brick, st.pg, epoch, batch, true);
      if (r.gap) throw new FsError('LOG_GAP', `replica ${brick} reports a gap`);
      next = r.lastSeq + 1n;
    }
  }

  // ------------------------------------------------------------ replica

  /** Replicate: applies entries that follow this copy's log; refuses older epochs. */
  applyReplicated(
    st: PgState,
    epoch: number,
    entries: LogEntry[],
  ): Promise<{ lastSeq: bigint; gap: boolean }> {
    const startMs = this.d.stages?.now() ?? 0;
    return st.hold(async () => {
      try {
        return await this.applyHeld(st, epoch, entries);
      } finally {
        this.d.stages?.done('replica_apply', startMs);
      }
    });
  }

  private async applyHeld(
    st: PgState,
    epoch: number,
    entries: LogEntry[],
  ): Promise<{ lastSeq: bigint; gap: boolean }> {
    this.promise(st, epoch);
    for (const e of entries) {
      if (e.epoch > epoch)
        throw new FsError('INVALID_ARGUMENT', `entry ${e.seq} of epoch ${e.epoch} > ${epoch}`);
      if (e.seq <= st.opSeq) {
        const mine = e.seq >= st.firstSeq ? await this.logs.entry(st.pg, e.seq) : undefined;
        if (mine && mine.epoch !== e.epoch)
          throw new FsError('DIVERGED', `pg ${st.pg}: entry ${e.seq} is of epoch ${mine.epoch} here`);
        continue;
      }
      if (e.seq !== st.opSeq + 1n) return { lastSeq: st.opSeq, gap: true };
      await this.logs.apply(st, e);
    }
    return { lastSeq: st.opSeq, gap: false };
  }

  /** A primary at `epoch` talks to this copy: older epochs are refused from now on. */
  private promise(st: PgState, epoch: number): void {
    // PLANTED BUG (simulation only): 'accept-lower-epoch' skips this check.
    if (epoch < st.promisedEpoch && this.d.plantedBug !== 'accept-lower-epoch')
      throw new FsError('STALE_EPOCH', `pg ${st.pg}: epoch ${epoch} < promised ${st.promisedEpoch}`);
    if (st.role === 'primary') {
      if (epoch <= st.epoch)
        throw new FsError('STALE_EPOCH', `pg ${st.pg}: this brick is primary at ${st.epoch}`);
      // A newer primary exists: the placement watch has not told us yet.
      st.role = 'replica';
      st.ready = false;
    }
    st.promisedEpoch = Math.max(st.promisedEpoch, epoch);
  }

  /** PgPosition: the log position, after promising `epoch`. */
  position(st: PgState, epoch: number): Promise<LogPosition> {
    return st.hold(async () => {
      this.promise(st, epoch);
      return { lastSeq: st.opSeq, lastEpoch: st.lastEpoch, firstSeq: st.firstSeq };
    });
  }

  /** FetchLog: our entries from `fromSeq`, block ops with their current bytes. */
  fetchLog(st: PgState, epoch: number, fromSeq: bigint, max: number): Promise<LogEntry[]> {
    return st.hold(async () => {
      this.promise(st, epoch);
      if (fromSeq < st.firstSeq) throw new FsError('LOG_GAP', `pg ${st.pg}: log starts at ${st.firstSeq}`);
      return this.readForCatchUp(st, fromSeq, Math.min(max, this.d.knobs.catchUpBatchEntries));
    });
  }

  /**
   * A client's fsync of what it wrote to this PG: everything acknowledged is
   * applied on every in-sync member; this makes it durable there too.
   */
  async syncPg(st: PgState): Promise<void> {
    this.checkServing(st);
    const epoch = st.epoch;
    await Promise.all([
      this.d.durability?.sync(),
      ...st.isr.filter((b) => b !== this.me).map((b) => this.d.transport.sync(b, st.pg, epoch)),
    ]);
  }

  /** SyncCopy: a replica makes what it has applied durable. */
  async syncCopy(st: PgState, epoch: number): Promise<void> {
    if (epoch < st.promisedEpoch)
      throw new FsError('STALE_EPOCH', `pg ${st.pg}: epoch ${epoch} < promised ${st.promisedEpoch}`);
    await this.d.durability?.sync();
  }

  /**
   * ScrubDigest: the digest of a key range of this copy (and its blocks that
   * fail their checksums), when its log is exactly at the primary's `seq`.
   */
  scrubDigest(st: PgState, epoch: number, req: ScrubDigestRequest): Promise<ScrubDigestReply> {
    return st.hold(async () => {
      this.promise(st, epoch);
      // The log position decides: `backfilling` stays set on a copy whose backfill was cut
      // off even once a catch-up from the log's start made it whole (and in sync) again.
      if (st.opSeq !== req.seq)
        throw new FsError(
          'LOG_GAP',
          `pg ${st.pg}: this copy's log is at ${st.opSeq}, the primary's at ${req.seq}`,
        );
      if (
        pgOfKey(req.fromKey) !== st.pg ||
        pgOfKey(req.toKey) !== st.pg ||
        Buffer.compare(req.fromKey, req.toKey) >= 0
      )
        throw new FsError('INVALID_ARGUMENT', `pg ${st.pg}: scrub range is not a range of the PG`);
      return digestCopy(this.d.kv, this.d.blocks, st.pg, req);
    });
  }

  /** FetchBlock: this copy's block, verified against its record. */
  fetchBlock(st: PgState, epoch: number, ino: bigint, index: bigint): Promise<BlockOp> {
    return st.hold(async () => {
      this.promise(st, epoch);
      return this.logs.syncOp(st.pg, ino, index);
    });
  }

  /**
   * Heals a block whose file does not match its record here (a crash in the
   * middle of an overwrite): an in-sync replica whose copy verifies against
   * the same record gives its bytes. True when healed.
   */
  healBlock(st: PgState, ino: bigint, index: bigint): Promise<boolean> {
    return st.hold(async () => (await this.healBlockHeld(st, ino, index)).from !== undefined);
  }

  /**
   * healBlock() for a caller that holds the PG's append queue. `from`: the
   * replica it was healed from; else how many other in-sync members
   * answered and how many there are (all answered, none with a copy that
   * verifies against the same record: no copy is left to heal from).
   */
  async healBlockHeld(
    st: PgState,
    ino: bigint,
    index: bigint,
  ): Promise<{ from?: string; answered: number; asked: number }> {
    const mine = await this.logs.blockRecord(keys.block(st.pg, ino, index));
    const others = st.isr.filter((b) => b !== this.me);
    let answered = 0;
    if (!mine) return { answered, asked: others.length };
    for (const b of others) {
      let op: BlockOp;
      try {
        op = await this.d.transport.fetchBlock(b, st.pg, st.epoch, ino, index);
      } catch (err) {
        // Its copy fails its own checksums: an answer all the same (no good copy there).
        if (err instanceof FsError && err.code === 'CORRUPT') answered++;
        this.d.log.warn('replica could not give a block to heal from', {
          pg: st.pg,
          brick: b,
          err: String(err),
        });
        continue;
      }
      answered++;
      if (!op.record || !op.data || !sameRecord(decodeRecord<BlockRecord>(op.record), mine)) continue;
      await this.d.blocks.delete(st.pg, ino, index);
      const rec = await this.d.blocks.write(
        st.pg,
        ino,
        index,
        0,
        op.data,
        undefined,
        this.d.volume.blockSizeBytes,
      );
      assert(sameRecord(rec, mine), `healed block ${ino}/${index} matches its record`);
      this.d.log.warn('healed a block from a replica', {
        pg: st.pg,
        ino: ino.toString(),
        index: index.toString(),
        from: b,
      });
      return { from: b, answered, asked: others.length };
    }
    return { answered, asked: others.length };
  }

  /** Backfill, receiving side. */
  backfillStep(st: PgState, epoch: number, step: BackfillStep): Promise<void> {
    return st.hold(async () => {
      this.promise(st, epoch);
      if (step.step === 'BEGIN') {
        st.backfilling = true;
        await this.logs.wipe(st.pg);
        st.opSeq = 0n;
        st.lastEpoch = 0;
        st.firstSeq = 1n;
        return;
      }
      if (!st.backfilling) throw new FsError('INVALID_ARGUMENT', `pg ${st.pg}: backfill step without BEGIN`);
      if (step.step === 'CHUNK') {
        // A chunk is raw state: applied as one batch, with its blocks' bytes first.
        const entry: LogEntry = {
          epoch,
          seq: 0n,
          requestId: '',
          kind: 'backfill',
          writes: step.writes,
          blocks: step.blocks,
        };
        await this.applyRaw(st, entry);
        return;
      }
      if (step.base) await this.logs.writeBase(st, step.base);
      st.backfilling = false;
    });
  }

  /** Writes state without logging it (backfill chunks: the copy's log starts at END). */
  private async applyRaw(st: PgState, e: LogEntry): Promise<void> {
    for (const w of e.writes) {
      if (pgOfKey(w.key) !== st.pg) throw new FsError('INVALID_ARGUMENT', 'backfill chunk writes another PG');
      if (w.key[2] === KeyKind.log || isBrickKey(w.key))
        throw new FsError('INVALID_ARGUMENT', 'backfill chunk holds log entries or brick keys');
    }
    for (const op of e.blocks) {
      if (op.kind !== 'SYNC' || !op.record || !op.data)
        throw new FsError('INVALID_ARGUMENT', 'backfill chunk block op must be a SYNC with bytes');
      await this.d.blocks.delete(st.pg, op.ino, op.index);
      await this.d.blocks.write(st.pg, op.ino, op.index, 0, op.data, undefined, this.d.volume.blockSizeBytes);
    }
    await this.d.kv.write(e.writes, false);
    // Unsynced like any entry: the window's sync (or the next fsync) covers it.
    this.d.durability?.written();
  }

  // ------------------------------------------------------------ catch-up

  /** Catches up every replica outside the in-sync set (one task per replica at a time). */
  catchUpAll(st: PgState, alive: (brick: string) => boolean): void {
    if (st.role !== 'primary' || !st.ready) return;
    for (const b of st.bricks) {
      if (b === this.me || st.isr.includes(b) || !alive(b)) continue;
      const key = `${st.pg}/${b}`;
      if (this.catchingUp.has(key)) continue;
      this.catchingUp.add(key);
      this.catchUp(st, b)
        .catch((err) => {
          if (err instanceof FsError)
            this.d.log.info('catch-up interrupted', { pg: st.pg, brick: b, err: err.message });
          else this.d.log.error('catch-up failed', { pg: st.pg, brick: b, err: String(err) });
        })
        .finally(() => {
          this.catchingUp.delete(key);
          this.d.recovery?.report(null, st.pg, b);
        });
    }
  }

  get catchUpsRunning(): number {
    return this.catchingUp.size;
  }

  /** Backfill bytes per second this brick sends, over all its backfills (0: no limit). */
  private backfillBytesPerS = 0;
  /** When the pacing allows the next chunk to go (clock ms). */
  private backfillFreeAtMs = 0;

  /** Sets the backfill limit (a running rebalance's throttle; 0 lifts it). */
  setBackfillLimit(bytesPerS: number): void {
    if (!Number.isFinite(bytesPerS) || bytesPerS < 0) throw new RangeError(`backfill limit ${bytesPerS}`);
    this.backfillBytesPerS = bytesPerS;
  }

  /** Bytes sent to new or returning copies while a limit (a rebalance) was set, not yet taken. */
  private pacedBytes = 0;

  /** The bytes paced since the last call (a rebalance job's bytesMoved grows by them). */
  takePacedBytes(): number {
    const n = this.pacedBytes;
    this.pacedBytes = 0;
    return n;
  }

  /** Waits so that this brick's backfills together stay under the limit. */
  private async pace(bytes: number): Promise<void> {
    if (this.backfillBytesPerS <= 0) return;
    this.pacedBytes += bytes;
    const now = this.d.clock.nowMs();
    const start = Math.max(now, this.backfillFreeAtMs);
    this.backfillFreeAtMs = start + (bytes / this.backfillBytesPerS) * 1000;
    if (this.backfillFreeAtMs > now) await this.d.clock.sleep(this.backfillFreeAtMs - now);
  }

  /**
   * Brings `brick` up to this primary's log while writes go on — from the log
   * when it still reaches back to the replica's position, else by backfill —
   * then, in the append queue, sends the last entries and adds the replica
   * to the in-sync set.
   */
  private async catchUp(st: PgState, brick: string): Promise<void> {
    const epoch = st.epoch;
    const startedAtMs = this.d.clock.nowMs();
    const pos = await this.d.transport.position(brick, st.pg, epoch);
    st.ackedSeq.set(brick, pos.lastSeq);
    let next = pos.lastSeq + 1n;
    // A copy with nothing yet (a move's new copy, a replaced disk) is backfilled even when the
    // log reaches back to the start: replaying it sends a block's whole current bytes once per
    // entry that touched it (a rebalance of young PGs measured ~2.5x its data on the wire),
    // a backfill sends each block once.
    let logUsable = pos.lastSeq > 0n && pos.lastSeq <= st.opSeq && next >= st.firstSeq;
    if (logUsable) {
      const mine = await this.logs.entry(st.pg, pos.lastSeq);
      logUsable = mine?.epoch === pos.lastEpoch;
    }
    if (!logUsable) {
      next = (await this.backfill(st, brick, epoch, startedAtMs)) + 1n;
      st.ackedSeq.set(brick, next - 1n);
    }
    let sent = 0;
    const report = () => {
      const elapsedS = Math.max(0.001, (this.d.clock.nowMs() - startedAtMs) / 1000);
      this.d.recovery?.report(
        {
          pg: st.pg,
          brick,
          mode: logUsable ? 'log' : 'backfill',
          opsLeft: Number(st.opSeq - next + 1n),
          bytesLeft: 0,
          ratePerS: Math.round(sent / elapsedS),
          startedAtMs,
        },
        st.pg,
        brick,
      );
    };
    // Rounds outside the queue until the rest is short.
    while (st.opSeq - next + 1n > BigInt(this.d.knobs.catchUpFinalEntries)) {
      this.checkStillPrimary(st, epoch);
      const batch = await st.hold(() => this.readForCatchUp(st, next, this.d.knobs.catchUpBatchEntries));
      const r = await this.d.transport.replicate(brick, st.pg, epoch, batch, true);
      if (r.gap) throw new FsError('LOG_GAP', `replica ${brick} reports a gap during catch-up`);
      // A new copy filled from a long log moves as many bytes as a backfill: paced alike.
      await this.pace(
        batch.reduce((n, e) => n + e.blocks.reduce((m, op) => m + (op.data?.length ?? 0), 0), 0),
      );
      sent += batch.length;
      next = r.lastSeq + 1n;
      st.ackedSeq.set(brick, r.lastSeq);
      report();
    }
    await st.hold(async () => {
      this.checkStillPrimary(st, epoch);
      while (next <= st.opSeq) {
        const batch = await this.readForCatchUp(st, next, this.d.knobs.catchUpBatchEntries);
        const r = await this.d.transport.replicate(brick, st.pg, st.epoch, batch, true);
        if (r.gap) throw new FsError('LOG_GAP', `replica ${brick} reports a gap during catch-up`);
        next = r.lastSeq + 1n;
        st.ackedSeq.set(brick, r.lastSeq);
      }
      await this.changeIsr(st, (isr) => [...isr, brick]);
      this.d.log.info('replica rejoined the in-sync set', {
        pg: st.pg,
        brick,
        mode: logUsable ? 'log' : 'backfill',
        ms: this.d.clock.nowMs() - startedAtMs,
        isr: st.isr,
      });
    });
  }

  private checkStillPrimary(st: PgState, epoch: number): void {
    if (st.role !== 'primary' || !st.ready || st.epoch < epoch)
      throw new FsError('NOT_PRIMARY', `pg ${st.pg}: no longer primary at epoch ${epoch}`);
  }

  /**
   * Copies the PG's whole key range (without the log) and block files to
   * `brick`. Returns the log sequence the copy reflects at least: replaying
   * the entries after it makes the copy exact, whatever changed meanwhile.
   */
  private async backfill(st: PgState, brick: string, epoch: number, startedAtMs: number): Promise<bigint> {
    const { base, baseSeq } = await st.hold(async () => ({
      base: st.opSeq > 0n ? await this.logs.entry(st.pg, st.opSeq) : undefined,
      baseSeq: st.opSeq,
    }));
    this.d.log.info('backfilling a replica', { pg: st.pg, brick, baseSeq: baseSeq.toString() });
    // What the copy will move (an estimate: writes go on meanwhile), for bytes left and an ETA.
    const totalBytes = await this.logs.copyBytes(st.pg);
    await this.d.transport.backfill(brick, st.pg, epoch, { step: 'BEGIN' });
    const prefix = keys.pgPrefix(st.pg);
    const end = prefixEnd(prefix);
    let after: Buffer | undefined;
    let copiedBytes = 0;
    for (;;) {
      this.checkStillPrimary(st, epoch);
      const chunk = await st.hold(async () => {
        const rows = await this.d.kv.range(
          after
            ? { gt: after, lt: end, limit: this.d.knobs.backfillChunkKeys }
            : { gte: prefix, lt: end, limit: this.d.knobs.backfillChunkKeys },
        );
        const writes: KvWrite[] = [];
        const blocks: BlockOp[] = [];
        let bytes = 0;
        for (const r of rows) {
          after = r.key;
          if (r.key[2] === KeyKind.log || isBrickKey(r.key)) continue;
          writes.push({ key: Buffer.from(r.key), value: Buffer.from(r.value) });
          bytes += r.key.length + r.value.length;
          if (r.key[2] === KeyKind.block) {
            const op = await this.logs.syncOp(st.pg, r.key.readBigUInt64BE(3), r.key.readBigUInt64BE(11));
            blocks.push(op);
            bytes += op.data?.length ?? 0;
            if (bytes >= this.d.knobs.backfillChunkBytes) break;
          }
        }
        return { writes, blocks, done: rows.length === 0, bytes };
      });
      if (chunk.done) break;
      await this.d.transport.backfill(brick, st.pg, epoch, {
        step: 'CHUNK',
        writes: chunk.writes,
        blocks: chunk.blocks,
      });
      copiedBytes += chunk.bytes;
      await this.pace(chunk.bytes);
      const elapsedS = Math.max(0.001, (this.d.clock.nowMs() - startedAtMs) / 1000);
      this.d.recovery?.report(
        {
          pg: st.pg,
          brick,
          mode: 'backfill',
          opsLeft: Number(st.opSeq - baseSeq),
          bytesLeft: Math.max(0, totalBytes - copiedBytes),
          ratePerS: Math.round(copiedBytes / elapsedS),
          startedAtMs,
        },
        st.pg,
        brick,
      );
    }
    await this.d.transport.backfill(brick, st.pg, epoch, { step: 'END', base });
    return baseSeq;
  }
}
