import { performance } from 'node:perf_hooks';
import { FsError, type ErrorCode } from './errors.js';
import type { BrickConn } from './frame-rpc.js';
import type { Logger } from './log.js';

/**
 * The one retry policy of calls routed to a PG's primary, used by the
 * router for clients and bricks alike. A call keeps its request id on every
 * attempt, so an op the old primary already replicated is answered from its
 * stored reply by the new primary instead of being applied twice.
 *
 * An attempt ends early when the PG's primary or epoch changes in the map
 * while it is in flight: a hung (SIGSTOPped) primary accepts connections and
 * never answers, and waiting out the attempt timeout would stretch every
 * failover to that timeout. Between attempts the call waits for the PG's
 * next map change or a short backoff, whichever comes first.
 */

/**
 * Codes that mean "not now, maybe elsewhere": the call is retried until its
 * deadline. Everything else (NOT_ENOUGH_REPLICAS included: the PG is
 * read-only until replicas catch up, and waiting would only delay EROFS) is
 * final and surfaces at once.
 */
export const retryableCodes: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'NOT_PRIMARY',
  'STALE_EPOCH',
  'UNAVAILABLE',
  'TIMED_OUT',
  'CONFLICT',
]);

export function isRetryable(err: unknown): err is FsError {
  return err instanceof FsError && retryableCodes.has(err.code);
}

/** Timers, injectable so tests and a simulation drive time (same shape as coord's Clock). */
export interface RetryClock {
  /** Monotonic milliseconds. */
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realRetryClock: RetryClock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

export interface RetryKnobs {
  /**
   * Backstop deadline of one attempt, for a primary that stops answering
   * while the map still names it (until its lease expires).
   */
  callTimeoutMs: number;
  /** First pause after a failed attempt; it doubles per attempt up to `backoffMaxMs`. */
  backoffMinMs: number;
  /** Longest pause between attempts when the map does not change. */
  backoffMaxMs: number;
  /** A refused connection to a brick is reported at most once per this interval. */
  suspectReportIntervalMs: number;
}

export const retryDefaults: RetryKnobs = {
  callTimeoutMs: 10_000,
  backoffMinMs: 10,
  backoffMaxMs: 1000,
  suspectReportIntervalMs: 500,
};

export function validateRetryKnobs(k: RetryKnobs): RetryKnobs {
  const range = (name: keyof RetryKnobs, min: number, max: number) => {
    const v = k[name];
    if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`${name} must be ${min}..${max}`);
  };
  range('callTimeoutMs', 1, 600_000);
  range('backoffMinMs', 1, 60_000);
  range('backoffMaxMs', 1, 60_000);
  range('suspectReportIntervalMs', 0, 60_000);
  if (k.backoffMinMs > k.backoffMaxMs) throw new RangeError('backoffMinMs must be <= backoffMaxMs');
  return k;
}

/** Where a PG's calls go now. */
export interface Route {
  pg: number;
  epoch: number;
  brickId: string;
  conn: BrickConn;
}

/** What the policy needs of a router: the current route and a signal on map changes. */
export interface RouteSource {
  /** Throws FsError: UNAVAILABLE while the PG has no reachable primary in the map. */
  route(pg: number): Route;
  /** Calls `listener` after each map update; returns the unsubscribe function. */
  onUpdate(listener: () => void): () => void;
}

export interface CallOptions {
  /** Sent on every attempt; '' for a call that is safe to repeat (a read). */
  requestId?: string;
  /** How long the call keeps retrying through failover before it fails with TIMED_OUT. */
  deadlineMs: number;
  /** Overrides the knob for this call. */
  callTimeoutMs?: number;
  /**
   * The client session the call comes from (Header.session): a read
   * registers it for invalidations, a change is not sent back to it.
   */
  session?: string;
  /** How long the session caches what a read returns (Header.cache_ttl_ms). */
  cacheTtlMs?: number;
}

export interface RetryDeps {
  clock: RetryClock;
  knobs: RetryKnobs;
  log?: Logger | undefined;
}

function sameRoute(a: Route, b: Route): boolean {
  return a.brickId === b.brickId && a.epoch === b.epoch && a.conn === b.conn;
}

/** Has the PG's route moved away from `r` (a PG without a route has moved too)? */
function movedFrom(src: RouteSource, pg: number, r: Route): boolean {
  try {
    return !sameRoute(src.route(pg), r);
  } catch {
    return true;
  }
}

/**
 * `call` raced against the attempt timeout and against a change of the PG's
 * route. The abandoned call keeps running (its conn ends it at the same
 * timeout) and its outcome is ignored.
 */
function attempt<Rep>(
  src: RouteSource,
  r: Route,
  call: Promise<Rep>,
  timeoutMs: number,
  what: string,
  clock: RetryClock,
): Promise<Rep> {
  return new Promise<Rep>((resolve, reject) => {
    let settled = false;
    const settle = () => {
      settled = true;
      clock.clearTimeout(timer);
      unsubscribe();
    };
    const timer = clock.setTimeout(() => {
      if (settled) return;
      settle();
      reject(new FsError('TIMED_OUT', `${what} at ${r.brickId} after ${timeoutMs} ms`));
    }, timeoutMs);
    const unsubscribe = src.onUpdate(() => {
      if (settled || !movedFrom(src, r.pg, r)) return;
      settle();
      reject(new FsError('NOT_PRIMARY', `${what}: pg moved from ${r.brickId} at epoch ${r.epoch} in flight`));
    });
    call.then(
      (v) => {
        if (settled) return;
        settle();
        resolve(v);
      },
      (e: unknown) => {
        if (settled) return;
        settle();
        reject(e);
      },
    );
  });
}

/** Resolves after `ms`, or sooner when the PG's route moves away from `from`. */
function pause(src: RouteSource, pg: number, from: Route | undefined, ms: number, clock: RetryClock) {
  return new Promise<void>((resolve) => {
    const done = () => {
      clock.clearTimeout(timer);
      unsubscribe();
      resolve();
    };
    const timer = clock.setTimeout(done, ms);
    const unsubscribe = src.onUpdate(() => {
      if (!from || movedFrom(src, pg, from)) done();
    });
  });
}

/**
 * One call to a PG's primary under the policy. Resolves with the reply,
 * rejects at once with a non-retryable error, or with TIMED_OUT (and a log
 * line naming the PG and its last primary) when `deadlineMs` passes.
 * Errors that are not FsError are bugs and propagate unchanged.
 */
export async function callWithRetry<Rep>(
  src: RouteSource,
  pg: number,
  method: string,
  body: object,
  o: CallOptions,
  deps: RetryDeps,
): Promise<Rep> {
  const { clock, knobs } = deps;
  const requestId = o.requestId ?? '';
  const callTimeoutMs = o.callTimeoutMs ?? knobs.callTimeoutMs;
  const endMs = clock.now() + o.deadlineMs;
  const what = `pg ${pg} ${method}`;
  for (let n = 0; ; n++) {
    let r: Route | undefined;
    let failure: FsError;
    try {
      r = src.route(pg);
      const timeoutMs = Math.max(1, Math.min(callTimeoutMs, endMs - clock.now()));
      const call = r.conn.unary<Rep>(
        method,
        {
          header: {
            pg,
            epoch: r.epoch,
            requestId,
            attempt: n,
            session: o.session ?? '',
            cacheTtlMs: o.cacheTtlMs ?? 0,
          },
          ...body,
        },
        timeoutMs,
      );
      return await attempt(src, r, call, timeoutMs, what, clock);
    } catch (err) {
      if (!isRetryable(err)) throw err;
      failure = err;
    }
    // The map already moved on (the attempt was abandoned for it): go at once.
    const moved = r !== undefined && movedFrom(src, pg, r);
    if (!moved && clock.now() < endMs) {
      const backoffMs = Math.min(knobs.backoffMaxMs, knobs.backoffMinMs * 2 ** Math.min(n, 20));
      await pause(src, pg, r, Math.min(backoffMs, endMs - clock.now()), clock);
    }
    if (clock.now() >= endMs) {
      const where = r ? `last tried ${r.brickId} at epoch ${r.epoch}` : 'no primary in the map';
      deps.log?.warn('no primary answered within the failover deadline', {
        pg,
        method,
        primary: r?.brickId,
        epoch: r?.epoch,
        deadlineMs: o.deadlineMs,
        attempts: n + 1,
        lastError: failure.message,
      });
      throw new FsError(
        'TIMED_OUT',
        `${what}: no primary answered within ${o.deadlineMs} ms (${where}; ${failure.message})`,
      );
    }
  }
}
