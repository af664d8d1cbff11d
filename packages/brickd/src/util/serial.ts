/** Runs tasks one at a time, in submission order. */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();
  private pending = 0;

  get depth(): number {
    return this.pending;
  }

  run<T>(task: () => Promise<T>): Promise<T> {
    this.pending++;
    const result = this.tail.then(task, task);
    this.tail = result.then(
      () => this.pending--,
      () => this.pending--,
    );
    return result;
  }
}

/** One SerialQueue per key, dropped when idle. */
export class KeyedMutex {
  private readonly queues = new Map<string, SerialQueue>();

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    let q = this.queues.get(key);
    if (!q) {
      q = new SerialQueue();
      this.queues.set(key, q);
    }
    const queue = q;
    return queue.run(task).finally(() => {
      if (queue.depth === 0 && this.queues.get(key) === queue) this.queues.delete(key);
    });
  }
}
