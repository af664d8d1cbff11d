/**
 * Brick knobs: every bound the daemon applies, with defaults and the
 * cross-field rules (docs/LIMITS.md, "brickd").
 */
export interface BrickKnobs {
  /** Liveness lease in etcd. */
  leaseTtlMs: number;
  /** Sequences reserved per persisted allocation step. */
  seqReserveBatch: number;
  /** Op log entries kept per PG (with their request ids, for retries). */
  opLogRetain: number;
  /** Deadline of brick-to-brick calls. */
  peerCallTimeoutMs: number;
  /** How long a mutation waits for conflicting transactions before giving up. */
  conflictWaitMaxMs: number;
  /** Cross-PG transaction attempts before CONFLICT is returned. */
  txAttemptsMax: number;
  /** Age after which a prepared transaction asks its coordinator for the outcome. */
  txResolveAfterMs: number;
  /** Interval of the recovery sweep (prepared and decided transactions, orphan directories). */
  recoveryIntervalMs: number;
}

export const brickDefaults: BrickKnobs = {
  leaseTtlMs: 5000,
  seqReserveBatch: 4096,
  opLogRetain: 1024,
  peerCallTimeoutMs: 10_000,
  conflictWaitMaxMs: 10_000,
  txAttemptsMax: 50,
  txResolveAfterMs: 2000,
  recoveryIntervalMs: 1000,
};

export function validateBrickKnobs(k: BrickKnobs): BrickKnobs {
  const bad: string[] = [];
  const positive = (name: keyof BrickKnobs, max: number) => {
    const v = k[name];
    if (!Number.isInteger(v) || v < 1 || v > max) bad.push(`${name} ${v} must be 1..${max}`);
  };
  positive('leaseTtlMs', 600_000);
  positive('seqReserveBatch', 1 << 20);
  positive('opLogRetain', 1 << 20);
  positive('peerCallTimeoutMs', 600_000);
  positive('conflictWaitMaxMs', 600_000);
  positive('txAttemptsMax', 1000);
  positive('txResolveAfterMs', 600_000);
  positive('recoveryIntervalMs', 600_000);
  if (k.leaseTtlMs < 2000) bad.push('leaseTtlMs must be >= 2000 (etcd keepalive granularity)');
  if (k.txResolveAfterMs >= k.peerCallTimeoutMs * 10)
    bad.push('txResolveAfterMs must be < 10 x peerCallTimeoutMs');
  if (bad.length) throw new RangeError(`invalid brick knobs: ${bad.join('; ')}`);
  return k;
}
