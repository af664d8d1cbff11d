import { randomBytes } from 'node:crypto';
import { FsError, type Router } from '@dunix/proto';

export interface BrickApiOptions {
  /** Deadline of one attempt. */
  callTimeoutMs: number;
  /** How long an operation keeps retrying through placement changes and unavailable bricks. */
  opDeadlineMs: number;
}

export const brickApiDefaults: BrickApiOptions = { callTimeoutMs: 30_000, opDeadlineMs: 60_000 };

const RETRY_CODES = new Set(['NOT_PRIMARY', 'STALE_EPOCH', 'UNAVAILABLE', 'TIMED_OUT', 'CONFLICT']);

/**
 * Calls to the brick serving a PG, with the header filled in. A mutation
 * gets a request id once and keeps it across retries, so a retry after a
 * lost reply is answered from the brick's stored reply instead of being
 * applied twice.
 */
export class BrickApi {
  private readonly clientId = randomBytes(6).toString('hex');
  private counter = 0;

  constructor(
    private readonly router: Router,
    private readonly o: BrickApiOptions = brickApiDefaults,
  ) {}

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
    return this.call<Rep>(pg, method, body, '');
  }

  mutate<Rep>(pg: number, method: string, body: object): Promise<Rep> {
    return this.call<Rep>(pg, method, body, this.newRequestId());
  }

  private async call<Rep>(pg: number, method: string, body: object, requestId: string): Promise<Rep> {
    const deadline = Date.now() + this.o.opDeadlineMs;
    for (let attempt = 0; ; attempt++) {
      try {
        const r = this.router.route(pg);
        return await r.conn.unary<Rep>(
          method,
          { header: { pg, epoch: r.epoch, requestId, attempt }, ...body },
          Math.min(this.o.callTimeoutMs, Math.max(1, deadline - Date.now())),
        );
      } catch (err) {
        if (!(err instanceof FsError) || !RETRY_CODES.has(err.code) || Date.now() >= deadline) throw err;
        // A read that timed out is simply retried; a mutation keeps its request id.
        const waitMs = Math.min(1000, 10 * 2 ** Math.min(attempt, 7));
        if (err.code === 'NOT_PRIMARY' || err.code === 'STALE_EPOCH') await this.router.waitForUpdate(waitMs);
        else await new Promise((r) => setTimeout(r, waitMs));
      }
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
