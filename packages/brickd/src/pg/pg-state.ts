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

/**
 * What a brick keeps in memory for one PG it serves as primary: the serial
 * queue of its mutations, the locks of prepared transactions, the op
 * sequence and the inode allocator state.
 */
export class PgState {
  readonly queue = new SerialQueue();
  /** Serializes allocation separately: a mutation in `queue` may allocate. */
  readonly allocQueue = new SerialQueue();
  /** latin1 key → id of the prepared transaction holding it. */
  readonly locks = new Map<string, string>();
  readonly prepared = new Map<string, PreparedTx>();
  /** Transactions this PG coordinates that have not finished. */
  readonly activeTx = new Set<string>();
  private unlockWaiters: (() => void)[] = [];
  /** Last op sequence applied. */
  opSeq = 0n;
  /**
   * Request ids of recent ops (a ring of opLogRetain slots, slot = seq mod
   * size, with the slot's sequence beside it) so trimming the log needs no
   * read. Allocated on the PG's first op.
   */
  recentRequestIds: string[] | undefined;
  recentSeqs: Float64Array | undefined;
  /** Next inode sequence to hand out, and the persisted reservation bound. */
  seqNext = 0n;
  seqReserved = 0n;

  constructor(
    readonly pg: number,
    public epoch: number,
  ) {}

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
