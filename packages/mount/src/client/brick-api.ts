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
  /** Inodes named by mutations in flight (isChanging), with how many. */
  private readonly changing = new Map<bigint, number>();
  /** Called when a change naming the inode is sent (changeStarts). */
  private readonly changeWaiters = new Map<bigint, Set<() => void>>();
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

  /** Told of every change this client sends, with the inodes it names (as isChanging counts them). */
  onMutate: ((inos: readonly bigint[]) => void) | undefined;

  mutate<Rep>(pg: number, method: string, body: object): Promise<Rep> {
    this.unsynced.add(pg);
    const held = inodesNamed(body);
    this.onMutate?.(held);
    for (const ino of held) {
      this.changing.set(ino, (this.changing.get(ino) ?? 0) + 1);
      const waiters = this.changeWaiters.get(ino);
      if (waiters) {
        this.changeWaiters.delete(ino);
        for (const w of waiters) w();
      }
    }
    return this.observed(
      method,
      this.router.call<Rep>(pg, method, body, {
        requestId: this.newRequestId(),
        deadlineMs: this.o.opDeadlineMs,
        callTimeoutMs: this.o.callTimeoutMs,
      }),
    ).finally(() => {
      for (const ino of held) {
        const n = this.changing.get(ino)! - 1;
        if (n === 0) this.changing.delete(ino);
        else this.changing.set(ino, n);
      }
    });
  }

  /**
   * Whether a change of ours naming `ino` (as the parent, new parent or
   * target) is in flight: the kernel then holds that inode's lock until it
   * is answered, and the primary may hold its answer until other sessions
   * acknowledge their invalidations (applyInvalidations must not wait on a
   * kernel notice that needs this lock).
   */
  isChanging(ino: bigint): boolean {
    return this.changing.has(ino);
  }

  /**
   * Resolves when a change of ours naming `ino` is next sent (then the
   * kernel holds that inode's lock, as isChanging says); `cancel` stops
   * waiting.
   */
  changeStarts(ino: bigint): { started: Promise<void>; cancel: () => void } {
    let wake!: () => void;
    const started = new Promise<void>((resolve) => (wake = resolve));
    let set = this.changeWaiters.get(ino);
    if (!set) {
      set = new Set();
      this.changeWaiters.set(ino, set);
    }
    set.add(wake);
    const cancel = () => {
      const s = this.changeWaiters.get(ino);
      if (!s) return;
      s.delete(wake);
      if (s.size === 0) this.changeWaiters.delete(ino);
    };
    return { started, cancel };
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
  async sync(except?: number): Promise<void> {
    // `except` was synced by the caller's own publish (Extend with sync): it stays
    // listed, as a change of another file may have reached it after that sync.
    const pgs = [...this.unsynced].filter((pg) => pg !== except);
    for (const pg of pgs) this.unsynced.delete(pg);
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

/** The inodes a mutation's request names as parent, new parent or target (decimal strings on the wire). */
function inodesNamed(body: object): bigint[] {
  const out: bigint[] = [];
  for (const k of ['parent', 'newParent', 'ino'] as const) {
    const v = (body as Record<string, unknown>)[k];
    if (typeof v === 'string' && /^[0-9]+$/.test(v)) out.push(BigInt(v));
  }
  return out;
}
