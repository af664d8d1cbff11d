import type { BlockRecord } from './records.js';

/** One block's queue: the tail of its promise chain and the last record an op produced. */
interface BlockQueue {
  tail: Promise<void>;
  /** Ops queued or running; the queue is dropped when it reaches 0. */
  ops: number;
  /** Set once an op in this busy period has produced a record. */
  produced: boolean;
  rec: BlockRecord | undefined;
}

/**
 * Operations on one block run one at a time, in call order (the disk store
 * and the in-memory one share this). An op sees the record its predecessor
 * in the same busy period produced rather than the one its caller held (read
 * before that predecessor changed the block), so N ops issued at once give
 * the same result as applying them in call order.
 */
export class BlockQueues {
  private readonly queues = new Map<string, BlockQueue>();

  /** `start`: what a new queue's first op waits for (e.g. the hasher's initialisation). */
  constructor(private readonly start: () => Promise<void> = () => Promise.resolve()) {}

  /** Blocks with an op queued or running. */
  get size(): number {
    return this.queues.size;
  }

  /** Resolves once every op queued so far has finished (and those they queued behind them). */
  async drain(): Promise<void> {
    while (this.queues.size > 0) await Promise.all([...this.queues.values()].map((q) => q.tail));
  }

  /** Runs `fn` in `key`'s queue with the current record; what it returns becomes the next op's record. */
  run<T>(
    key: string,
    rec: BlockRecord | undefined,
    fn: (cur: BlockRecord | undefined) => Promise<{ result: T; rec: BlockRecord | undefined }>,
  ): Promise<T> {
    return this.enqueue(key, async (queue) => {
      const out = await fn(queue.produced ? queue.rec : rec);
      queue.produced = true;
      queue.rec = out.rec;
      return out.result;
    });
  }

  /** Runs `fn` in `key`'s queue without changing the record its ops see. */
  runKeep<T>(key: string, fn: () => Promise<T>): Promise<T> {
    return this.enqueue(key, fn);
  }

  private enqueue<T>(key: string, fn: (queue: BlockQueue) => Promise<T>): Promise<T> {
    let q = this.queues.get(key);
    if (!q) {
      q = { tail: this.start(), ops: 0, produced: false, rec: undefined };
      this.queues.set(key, q);
    }
    const queue = q;
    queue.ops++;
    const run = queue.tail.then(() => fn(queue));
    queue.tail = run.then(
      () => {},
      () => {},
    );
    void queue.tail.then(() => {
      if (--queue.ops === 0 && this.queues.get(key) === queue) this.queues.delete(key);
    });
    return run;
  }
}
