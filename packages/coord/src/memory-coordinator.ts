import { type KvCoordinatorOptions, KvCoordinator } from './coordinator.js';
import { MemoryKv } from './memory-kv.js';

export interface MemoryCoordinatorOptions extends KvCoordinatorOptions {
  /** The shared in-memory cluster; a private one when omitted. */
  kv?: MemoryKv;
}

/** The Coordinator over an in-memory store, for unit tests and simulation. */
export class MemoryCoordinator extends KvCoordinator {
  readonly store: MemoryKv;

  constructor(opts: MemoryCoordinatorOptions = {}) {
    const kv = opts.kv ?? new MemoryKv(opts.clock);
    super(kv, opts);
    this.store = kv;
  }

  /**
   * Simulates the owning process dying: watches and keepalives stop, leases
   * are not revoked and expire after their TTL. The coordinator is stopped.
   */
  async crash(): Promise<void> {
    await this.abandon();
  }
}
