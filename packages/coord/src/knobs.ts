/**
 * Knobs of the control-plane client: every timer, deadline and retry loop has
 * a named bound here, with defaults and cross-field rules in `validate`.
 * docs/LIMITS.md (packages/coord/LIMITS-snippet.md) documents each.
 */
export interface CoordinatorKnobs {
  /** TTL of a brick's liveness lease when registerBrick is given none. Whole seconds (etcd's unit). */
  leaseTtlMs: number;
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
}

export const coordinatorDefaults: Readonly<CoordinatorKnobs> = Object.freeze({
  leaseTtlMs: 10_000,
  keepaliveIntervalMs: 500,
  regrantRetryMs: 500,
  rpcTimeoutMs: 5_000,
  dialTimeoutMs: 5_000,
  watchCoalesceMs: 50,
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
  try {
    validateLeaseTtl(k.leaseTtlMs, k.keepaliveIntervalMs);
  } catch (e) {
    problems.push((e as Error).message);
  }
  if (problems.length) throw new RangeError(`invalid coordinator knobs: ${problems.join('; ')}`);
  return k;
}
