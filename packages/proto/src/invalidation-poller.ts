import { limits } from './limits.js';
import type { Logger } from './log.js';
import type { Router } from './router.js';
import type * as wire from './gen/wire.js';

/** What a brick pushed, decoded (wire `Invalidation`). */
export interface PushedInval {
  kind: number;
  ino: bigint;
  parent: bigint;
  name: Buffer;
  data: boolean;
}

export interface InvalidationSink {
  /** Applies invalidations (kernel notices); resolves once the kernel has them. */
  apply(invals: PushedInval[]): Promise<void>;
  /**
   * Registrations at the primaries of `pgs` may be lost (a queue reset, a
   * broken poll, a new primary): drop what was cached of their inodes.
   */
  dropPgs(pgs: ReadonlySet<number>): Promise<void>;
}

export interface PollerOptions {
  /** How long one poll waits at the brick when nothing is queued. */
  pollWaitMs: number;
  /** Pause after a failed poll before the next. */
  retryPauseMs: number;
}

export const pollerDefaults: PollerOptions = { pollWaitMs: 10_000, retryPauseMs: 500 };

/** Beyond the poll's own wait, how long its answer may take to arrive. */
const POLL_SLACK_MS = 5_000;

interface Loop {
  stop: boolean;
}

/**
 * The session's end of coherent caches: one long poll kept open to every
 * brick of the volume (registrations live at PG primaries, which may be any
 * of them). Each answer is applied, then acknowledged by the next poll; a
 * reset or a broken poll means registrations there may be gone, so the sink
 * drops what came from that brick's PGs.
 */
export class InvalidationPoller {
  private readonly loops = new Map<string, Loop>();
  private unsubscribe: (() => void) | undefined;
  /** Primary and epoch per PG in the map last seen: a change means the registrations there are gone. */
  private primaries: string[] = [];
  private stopped = false;
  /** Invalidations applied (measurements). */
  applied = 0;

  constructor(
    private readonly router: Router,
    private readonly session: string,
    private readonly sink: InvalidationSink,
    private readonly log: Logger,
    private readonly o: PollerOptions = pollerDefaults,
  ) {
    if (o.pollWaitMs < 1 || o.pollWaitMs > limits.invalPollWaitMaxMs)
      throw new RangeError(`pollWaitMs must be 1..${limits.invalPollWaitMaxMs}`);
  }

  start(): void {
    this.unsubscribe = this.router.onUpdate(() => this.sync());
    this.sync();
  }

  /** One loop per brick in the map; a brick gone from the map ends its loop. */
  private sync(): void {
    if (this.stopped) return;
    const placement = this.router.current?.placement ?? [];
    const now = placement.map((a) => `${a.bricks[0] ?? ''}@${a.epoch}`);
    const moved = new Set<number>();
    for (let pg = 0; pg < now.length; pg++) {
      const before = this.primaries[pg];
      // A new primary starts with no registrations (soft state); an epoch bump alone may be one too.
      if (before !== undefined && before.split('@')[0] !== now[pg]!.split('@')[0]) moved.add(pg);
    }
    this.primaries = now;
    if (moved.size > 0) void this.sink.dropPgs(moved).catch(() => {});
    const ids = new Set((this.router.current?.bricks ?? []).map((b) => b.id));
    for (const [id, loop] of this.loops) {
      if (!ids.has(id)) {
        loop.stop = true;
        this.loops.delete(id);
      }
    }
    for (const id of ids) {
      if (this.loops.has(id)) continue;
      const loop: Loop = { stop: false };
      this.loops.set(id, loop);
      void this.run(id, loop);
    }
  }

  private async run(brickId: string, loop: Loop): Promise<void> {
    let generation = '';
    let ackSeq = '0';
    let broken = false;
    while (!loop.stop && !this.stopped) {
      let r: wire.PollInvalidationsReply__Output;
      try {
        r = await this.router
          .connFor(brickId)
          .unary<wire.PollInvalidationsReply__Output>(
            'PollInvalidations',
            { session: this.session, generation, ackSeq, waitMs: this.o.pollWaitMs },
            this.o.pollWaitMs + POLL_SLACK_MS,
          );
      } catch (err) {
        if (loop.stop || this.stopped) return;
        if (!broken) {
          broken = true;
          this.log.debug('invalidation poll failed; dropping what this brick registered', {
            brick: brickId,
            err: String(err),
          });
          // Whatever the brick pushed meanwhile, or whether it still has our registrations, is unknown.
          await this.sink.dropPgs(this.ledBy(brickId)).catch(() => {});
        }
        await new Promise((res) => setTimeout(res, this.o.retryPauseMs).unref());
        continue;
      }
      broken = false;
      if (r.reset) await this.sink.dropPgs(this.ledBy(brickId)).catch(() => {});
      generation = r.generation;
      if (r.invalidations.length > 0) {
        const invals = r.invalidations.map((w) => ({
          kind: w.kind,
          ino: BigInt(w.ino),
          parent: BigInt(w.parent),
          name: w.name,
          data: w.data,
        }));
        try {
          await this.sink.apply(invals);
        } catch (err) {
          this.log.warn('could not apply invalidations', { brick: brickId, err: String(err) });
        }
        this.applied += invals.length;
      }
      ackSeq = r.lastSeq;
    }
  }

  /** PGs whose primary is `brickId` in the current map. */
  private ledBy(brickId: string): Set<number> {
    const pgs = new Set<number>();
    for (const a of this.router.current?.placement ?? []) if (a.bricks[0] === brickId) pgs.add(a.pg);
    return pgs;
  }

  stop(): void {
    this.stopped = true;
    this.unsubscribe?.();
    for (const l of this.loops.values()) l.stop = true;
    this.loops.clear();
  }
}
