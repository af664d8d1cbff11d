/**
 * Knobs of the control-plane client: every timer, deadline and retry loop has
 * a named bound here, with defaults and cross-field rules in `validate`.
 * docs/LIMITS.md documents each.
 */
export interface CoordinatorKnobs {
  /** TTL of a brick's liveness lease when registerBrick is given none. Whole seconds (etcd's unit). */
  leaseTtlMs: number;
  /**
   * TTL of a mount's session lease (registerMount, its mount record): a
   * killed client's record disappears within about this long. Whole seconds;
   * the `session_ttl_ms` mount option overrides it.
   */
  mountLeaseTtlMs: number;
  /** Period of lease keepalives; must be below leaseTtlMs / 3 so two can be lost before expiry. */
  keepaliveIntervalMs: number;
  /** Delay before retrying a failed lease re-grant or re-put. */
  regrantRetryMs: number;
  /** Deadline of one unary etcd call (get, put, txn, revoke); a keepalive gets min(this, ttl / 3). */
  rpcTimeoutMs: number;
  /** How long start() waits for the first answer from etcd before failing. */
  dialTimeoutMs: number;
  /** Quiet period after a watch event before a snapshot is taken (coalesces bursts). */
  watchCoalesceMs: number;
  /** TTL of a suspect report (reportSuspect); a session repeats a report at most once per half of it. */
  suspectTtlMs: number;
  /**
   * A controller candidate stops leading once its election lease has gone
   * unconfirmed for its TTL minus this (it may have expired in etcd, and
   * another candidate may lead). Campaign TTLs must exceed this plus two
   * keepalive periods.
   */
  fenceMarginMs: number;
  /**
   * PGs per transaction in updatePlacements; etcd refuses transactions of
   * more than --max-txn-ops (default 128) compares or puts.
   */
  placementBatchMax: number;
}

export const coordinatorDefaults: Readonly<CoordinatorKnobs> = Object.freeze({
  leaseTtlMs: 10_000,
  // 6 s: a dead client's locks are free within 10 s (TTL + etcd's expiry check + the bricks' 2 s listing cache + 1 s check).
  mountLeaseTtlMs: 6_000,
  keepaliveIntervalMs: 500,
  regrantRetryMs: 500,
  rpcTimeoutMs: 5_000,
  dialTimeoutMs: 5_000,
  watchCoalesceMs: 50,
  suspectTtlMs: 2_000,
  fenceMarginMs: 500,
  placementBatchMax: 128,
});

/** etcd's minimum lease TTL with the default election timeout (1 s × 3/2, rounded up to seconds). */
export const LEASE_TTL_MIN_MS = 2_000;
export const LEASE_TTL_MAX_MS = 3_600_000;

/** Rules for one lease TTL against the keepalive period (also applied to registerBrick's argument). */
export function validateLeaseTtl(leaseTtlMs: number, keepaliveIntervalMs: number): number {
  if (
    !Number.isInteger(leaseTtlMs) ||
    leaseTtlMs < LEASE_TTL_MIN_MS ||
    leaseTtlMs > LEASE_TTL_MAX_MS ||
    leaseTtlMs % 1000 !== 0
  ) {
    throw new RangeError(
      `leaseTtlMs ${leaseTtlMs} must be whole seconds in ${LEASE_TTL_MIN_MS}..${LEASE_TTL_MAX_MS}`,
    );
  }
  if (keepaliveIntervalMs * 3 >= leaseTtlMs) {
    throw new RangeError(
      `keepaliveIntervalMs ${keepaliveIntervalMs} must be < leaseTtlMs / 3 (${leaseTtlMs})`,
    );
  }
  return leaseTtlMs;
}

export function validateCoordinatorKnobs(partial: Partial<CoordinatorKnobs> = {}): CoordinatorKnobs {
  const k: CoordinatorKnobs = { ...coordinatorDefaults, ...partial };
  const problems: string[] = [];
  const positive = (name: keyof CoordinatorKnobs, min: number, max: number) => {
    const v = k[name];
    if (!Number.isInteger(v) || v < min || v > max)
      problems.push(`${name} ${v} must be an integer in ${min}..${max}`);
  };
  positive('keepaliveIntervalMs', 50, 60_000);
  positive('regrantRetryMs', 10, 60_000);
  positive('rpcTimeoutMs', 100, 120_000);
  positive('dialTimeoutMs', 100, 120_000);
  positive('watchCoalesceMs', 0, 10_000);
  positive('fenceMarginMs', 0, 60_000);
  positive('placementBatchMax', 1, 65_536);
  for (const name of ['leaseTtlMs', 'mountLeaseTtlMs'] as const) {
    try {
      validateLeaseTtl(k[name], k.keepaliveIntervalMs);
    } catch (e) {
      problems.push(`${name}: ${(e as Error).message}`);
    }
  }
  if (
    !Number.isInteger(k.suspectTtlMs) ||
    k.suspectTtlMs < LEASE_TTL_MIN_MS ||
    k.suspectTtlMs > 60_000 ||
    k.suspectTtlMs % 1000 !== 0
  ) {
    problems.push(`suspectTtlMs ${k.suspectTtlMs} must be whole seconds in ${LEASE_TTL_MIN_MS}..60000`);
  }
  if (problems.length) throw new RangeError(`invalid coordinator knobs: ${problems.join('; ')}`);
  return k;
}

/** Rules for a controller campaign's lease TTL: a lease TTL that leaves room for the fencing margin. */
export function validateCampaignTtl(leaseTtlMs: number, k: CoordinatorKnobs): number {
  validateLeaseTtl(leaseTtlMs, k.keepaliveIntervalMs);
  if (k.fenceMarginMs + 2 * k.keepaliveIntervalMs >= leaseTtlMs) {
    throw new RangeError(
      `campaign lease ${leaseTtlMs} ms must exceed fenceMarginMs ${k.fenceMarginMs} + 2 × keepaliveIntervalMs ${k.keepaliveIntervalMs}`,
    );
  }
  return leaseTtlMs;
}

/**
 * Knobs of the controller (controller/controller.ts) and of its TCP probe
 * (controller/tcp-probe.ts); docs/LIMITS.md documents each.
 */
export interface ControllerKnobs {
  /** TTL of the election lease: a dead controller nobody reported is replaced within about this long. */
  electionLeaseTtlMs: number;
  /** A probe that has not answered after this long counts as 'up' (the lease path stays in charge). */
  probeTimeoutMs: number;
  /** The TCP probe: a connect refused within this long means 'down'; slower answers mean 'up'. */
  probeConnectTimeoutMs: number;
  /** Passes (plan, apply, re-read) in a row that may lose a compare-and-swap before waiting retryMs. */
  replanAttemptsMax: number;
  /** Delay before the next pass after one failed (store unreachable, too many lost swaps). */
  retryMs: number;
  /** PGs moved at once off draining or out bricks while no rebalance runs (a rebalance sets its own). */
  forcedMovesConcurrent: number;
}

export const controllerDefaults: Readonly<ControllerKnobs> = Object.freeze({
  electionLeaseTtlMs: 5_000,
  probeTimeoutMs: 1_000,
  probeConnectTimeoutMs: 200,
  replanAttemptsMax: 8,
  retryMs: 500,
  forcedMovesConcurrent: 4,
});

export function validateControllerKnobs(partial: Partial<ControllerKnobs> = {}): ControllerKnobs {
  const k: ControllerKnobs = { ...controllerDefaults, ...partial };
  const problems: string[] = [];
  const range = (name: keyof ControllerKnobs, min: number, max: number) => {
    const v = k[name];
    if (!Number.isInteger(v) || v < min || v > max)
      problems.push(`${name} ${v} must be an integer in ${min}..${max}`);
  };
  range('electionLeaseTtlMs', LEASE_TTL_MIN_MS, LEASE_TTL_MAX_MS);
  if (k.electionLeaseTtlMs % 1000 !== 0)
    problems.push(`electionLeaseTtlMs ${k.electionLeaseTtlMs} must be whole seconds`);
  range('probeTimeoutMs', 10, 60_000);
  range('probeConnectTimeoutMs', 10, 60_000);
  range('replanAttemptsMax', 1, 100);
  range('retryMs', 10, 60_000);
  range('forcedMovesConcurrent', 1, 1024);
  if (k.probeConnectTimeoutMs >= k.probeTimeoutMs) {
    problems.push(
      `probeConnectTimeoutMs ${k.probeConnectTimeoutMs} must be < probeTimeoutMs ${k.probeTimeoutMs}`,
    );
  }
  if (problems.length) throw new RangeError(`invalid controller knobs: ${problems.join('; ')}`);
  return k;
}
