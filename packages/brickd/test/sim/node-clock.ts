import type { Clock } from '@dunix/coord';

/** What a node clock needs of its node: whether its process runs, and which incarnation. */
export interface ClockOwner {
  readonly incarnation: number;
  readonly paused: boolean;
  /** Time the node's clock has not counted (suspensions): its clock reads the world's minus this. */
  readonly lostMs: number;
  /** Timers that fell due while the node was paused; they fire on resume. */
  readonly deferred: Map<unknown, () => void>;
}

interface NodeTimer {
  world: unknown;
  cancelled: boolean;
  /** The owner's lostMs when the timer was (re)armed. */
  lostMs: number;
}

/**
 * A node's view of the simulation clock: its timers die with its process
 * (a crash or restart starts a new incarnation) and wait while it is paused
 * (SIGSTOP), firing on resume. A suspended node (a VM or machine suspend,
 * which a monotonic clock does not count) also loses the suspension from
 * its clock: it reads that much behind the world afterwards, and its
 * timers fire that much later.
 */
export class NodeClock implements Clock {
  constructor(
    private readonly world: Clock,
    private readonly owner: ClockOwner,
  ) {}

  now(): number {
    return this.world.now() - this.owner.lostMs;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const incarnation = this.owner.incarnation;
    const t: NodeTimer = { world: undefined, cancelled: false, lostMs: this.owner.lostMs };
    const fire = () => {
      if (t.cancelled || this.owner.incarnation !== incarnation) return;
      if (this.owner.paused) {
        this.owner.deferred.set(t, fire);
        return;
      }
      const lag = this.owner.lostMs - t.lostMs;
      if (lag > 0) {
        // Due by the world's clock, not yet by the node's.
        t.lostMs = this.owner.lostMs;
        t.world = this.world.setTimeout(fire, lag);
        return;
      }
      fn();
    };
    t.world = this.world.setTimeout(fire, ms);
    return t;
  }

  clearTimeout(handle: unknown): void {
    const t = handle as NodeTimer | undefined;
    if (!t) return;
    t.cancelled = true;
    this.world.clearTimeout(t.world);
    this.owner.deferred.delete(t);
  }

  /** The replication protocol's clock (ProtocolClock). */
  protocol(): { nowMs(): number; sleep(ms: number): Promise<void> } {
    return {
      nowMs: () => this.now(),
      sleep: (ms) => new Promise<void>((resolve) => this.setTimeout(resolve, ms)),
    };
  }
}
