import { randomBytes } from 'node:crypto';
import { FsError, retryDefaults, type Router } from '@dunix/proto';
import type { ClientMetrics } from './metrics.js';

export interface BrickApiOptions {
  /** Backstop deadline of one attempt (the map changing ends an attempt sooner). */
  callTimeoutMs: number;
  /**
   * How long an operation keeps retrying through failover (placement
   * changes, dead or hung primaries) before it fails with ETIMEDOUT: the
   * `failover_timeout_ms` mount option.
   */
  opDeadlineMs: number;
}

export const brickApiDefaults: BrickApiOptions = {
  callTimeoutMs: retryDefaults.callTimeoutMs,
  opDeadlineMs: 60_000,
};

export function validateBrickApiOptions(o: BrickApiOptions): BrickApiOptions {
  if (!Number.isInteger(o.callTimeoutMs) || o.callTimeoutMs < 1 || o.callTimeoutMs > 600_000)
    throw new RangeError('callTimeoutMs must be 1..600000');
  if (!Number.isInteger(o.opDeadlineMs) || o.opDeadlineMs < 1 || o.opDeadlineMs > 86_400_000)
    throw new RangeError('opDeadlineMs must be 1..86400000');
  return o;
}

/**
 * Calls to the brick serving a PG, with the header filled in, under the
 * router's retry policy. A mutation gets a request id once and keeps it
 * across retries, so a retry after a lost reply (or at a new primary after
 * failover) is answered from the stored reply instead of being applied twice.
 */
export class BrickApi {
  private readonly clientId = randomBytes(6).toString('hex');
  private counter = 0;
  private readonly o: BrickApiOptions;
  /** PGs changed through this client since their last Sync (bricks sync by group commit otherwise). */
  private readonly unsynced = new Set<number>();
  /** The client's metrics (mount -o metrics_listen=): every call's latency and result, cache hits. */
  metrics: ClientMetrics | undefined;

  constructor(
    private readonly router: Router,
    options: BrickApiOptions = brickApiDefaults,
  ) {
    this.o = validateBrickApiOptions({ ...options });
  }

  get pgCount(): number {
    return this.router.config.pgCount;
  }

  get config() {
    return this.router.config;
  }

  newRequestId(): string {
    return `${this.clientId}.${(++this.counter).toString(36)}`;
  }

  read<Rep>(pg: number, method: string, body: object): Promise<Rep> {
    return this.observed(
      method,
      this.router.call<Rep>(pg, method, body, {
        requestId: '',
        deadlineMs: this.o.opDeadlineMs,
        callTimeoutMs: this.o.callTimeoutMs,
      }),
    );
  }

  mutate<Rep>(pg: number, method: string, body: object): Promise<Rep> {
    this.unsynced.add(pg);
    return this.observed(
      method,
      this.router.call<Rep>(pg, method, body, {
        requestId: this.newRequestId(),
        deadlineMs: this.o.opDeadlineMs,
        callTimeoutMs: this.o.callTimeoutMs,
      }),
    );
  }

  private observed<Rep>(method: string, call: Promise<Rep>): Promise<Rep> {
    const m = this.metrics;
    if (!m) return call;
    const startNs = process.hrtime.bigint();
    return call.then(
      (reply) => {
        m.rpcDone(method, startNs, 'OK');
        return reply;
      },
      (err: unknown) => {
        m.rpcDone(method, startNs, err instanceof FsError ? err.code : 'UNKNOWN');
        throw err;
      },
    );
  }

  /** A change sent to `pg` outside `mutate` (block writes). */
  changed(pg: number): void {
    this.unsynced.add(pg);
  }

  /**
   * fsync, fdatasync, fsync of a directory, syncfs, O_SYNC: every change
   * this client made is on disk on every in-sync replica when this resolves
   * (a Sync per PG changed since the last one; the bricks coalesce them
   * into one disk sync each).
   */
  async sync(): Promise<void> {
    const pgs = [...this.unsynced];
    this.unsynced.clear();
    try {
      await Promise.all(pgs.map((pg) => this.read(pg, 'Sync', {})));
    } catch (err) {
      for (const pg of pgs) this.unsynced.add(pg);
      throw err;
    }
  }

  /** Every distinct brick of the volume (for statfs and status). */
  brickIds(): string[] {
    return (this.router.current?.bricks ?? []).map((b) => b.id);
  }

  async callBrick<Rep>(brickId: string, method: string, body: object): Promise<Rep> {
    return this.router.connFor(brickId).unary<Rep>(method, body, this.o.callTimeoutMs);
  }
}
