import { SerialQueue } from '../util/serial.js';

/** A cross-PG transaction prepared on this PG: its keys are locked until commit or abort. */
export interface PreparedTx {
  txId: string;
  coordinatorPg: number;
  /** Writes to apply on commit (value undefined = delete). */
  writes: { key: Buffer; value: Buffer | undefined }[];
  /** Every key read or written: locked while prepared. */
  lockedKeys: string[];
  createdAtMs: number;
}

export type PgRole = 'primary' | 'replica';

/**
 * What a brick keeps in memory for one PG it holds a copy of: its role, the
 * log position, and as primary the serial queue of its mutations, the locks
 * of prepared transactions and the inode allocator state.
 */
export class PgState {
  readonly queue = new SerialQueue();
  /**
   * The one append path: log entries are sequenced and written here one at a
   * time. Their replication runs behind it (pipelined, `replicating`): use
   * `hold` for anything that must see no entry on its way to a replica.
   */
  readonly appendQueue = new SerialQueue();
  /** Appends written here whose replicas have not all answered yet (settle, never reject). */
  readonly replicating = new Set<Promise<unknown>>();
  role: PgRole = 'replica';
  /** Replicas of the PG (bricks[0] is the primary) and its in-sync set, from the placement map. */
  bricks: string[] = [];
  isr: string[] = [];
  /** Highest epoch a primary has announced to this copy: entries of older epochs are refused. */
  promisedEpoch = 0;
  /** A primary serves only once it has reconciled the logs of its in-sync set (peering). */
  ready = false;
  /**
   * The brick's store was lost (a replaced disk) while the placement still
   * counts this copy in sync: it must leave the in-sync set before anything
   * else (and never lead) until a primary has caught it up again.
   */
  lost = false;
  /** The copy is being rebuilt by backfill: its log position means nothing until the end. */
  backfilling = false;
  /** Epoch of the entry at opSeq (0: empty log). */
  lastEpoch = 0;
  /** Lowest sequence still in the log. */
  firstSeq = 1n;
  /** Serializes allocation separately: a mutation in `queue` may allocate. */
  readonly allocQueue = new SerialQueue();
  /** latin1 key → id of the prepared transaction holding it. */
  readonly locks = new Map<string, string>();
  readonly prepared = new Map<string, PreparedTx>();
  /** Transactions this PG coordinates that have not finished. */
  readonly activeTx = new Set<string>();
  private unlockWaiters: (() => void)[] = [];
  /** Last log sequence written (advanced only once the entry is in the store). */
  opSeq = 0n;
  /**
   * As primary: the last sequence each other copy acknowledged (replicate
   * replies, catch-up rounds); opSeq minus it is the copy's replication lag
   * (metrics). A copy not heard from since this brick leads is absent.
   */
  readonly ackedSeq = new Map<string, bigint>();
  /**
   * Request ids of recent ops (a ring of opLogRetain slots, slot = seq mod
   * size, with the slot's sequence beside it) so trimming the log needs no
   * read. Allocated on the PG's first op.
   */
  recentRequestIds: string[] | undefined;
  recentSeqs: Float64Array | undefined;
  /**
   * Work for the recovery sweep: `sweepGen` moves whenever an entry writes a
   * decision, trim or orphan record (or the copy changes hands);
   * `sweptGen` is the generation a sweep last found none of them at. Equal:
   * the sweep skips this PG's range scans (a brick leads ~1/3 of a volume's
   * PGs, and scanning each every second cost more CPU than the workload).
   */
  sweepGen = 1;
  sweptGen = 0;
  /** Next inode sequence to hand out, and the persisted reservation bound. */
  seqNext = 0n;
  seqReserved = 0n;

  constructor(
    readonly pg: number,
    public epoch: number,
  ) {}

  /**
   * Runs `task` with the append queue held and no entry in flight to a
   * replica: as when appends were replicated one at a time (peering, catch-up's
   * last round, scrub ranges, the replica side, block healing, wiping).
   */
  hold<T>(task: () => Promise<T>): Promise<T> {
    return this.appendQueue.run(async () => {
      await this.drainReplication();
      return task();
    });
  }

  /** Resolves once no append is in flight to a replica. */
  async drainReplication(): Promise<void> {
    while (this.replicating.size > 0) await Promise.all([...this.replicating]);
  }

  lockedBy(key: string): string | undefined {
    return this.locks.get(key);
  }

  lock(tx: PreparedTx): void {
    for (const k of tx.lockedKeys) this.locks.set(k, tx.txId);
    this.prepared.set(tx.txId, tx);
  }

  unlock(txId: string): void {
    const tx = this.prepared.get(txId);
    if (!tx) return;
    for (const k of tx.lockedKeys) if (this.locks.get(k) === txId) this.locks.delete(k);
    this.prepared.delete(txId);
    const waiters = this.unlockWaiters;
    this.unlockWaiters = [];
    for (const w of waiters) w();
  }

  /** Resolves on the next unlock or after `timeoutMs`. */
  waitUnlock(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.unlockWaiters = this.unlockWaiters.filter((w) => w !== done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.unlockWaiters.push(done);
    });
  }
}
