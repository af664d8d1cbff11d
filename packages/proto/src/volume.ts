import { PG_COUNT_MAX } from './ids.js';
import { limits } from './limits.js';
import { fullThresholdRangePct } from './capacity.js';

/** A volume's fixed configuration, stored in etcd when it is created. */
export interface VolumeConfig {
  name: string;
  /** Power of two, 1 .. 65536. Fixed for the volume's life. */
  pgCount: number;
  /** Copies of each PG. */
  replicas: number;
  /**
   * Mutations of a PG are refused (EROFS) while its in-sync set has fewer
   * members than this; reads go on. 1..replicas.
   */
  minInsync: number;
  blockSizeBytes: number;
  /** Files up to this size keep their data in the inode. */
  inlineMaxBytes: number;
  createdAtMs: number;
  /**
   * A brick down (no lease) this long is out: the controller re-creates its
   * PG replicas on other bricks. Absent: downOutIntervalDefaultMs.
   * Changeable (`dunixctl volume set`).
   */
  downOutIntervalMs?: number;
  /**
   * The controller starts a scrub (every chunk checked on every copy, copies
   * compared) when the last one finished this long ago; 0: never on its own.
   * Absent: scrubIntervalDefaultMs. Changeable.
   */
  scrubIntervalMs?: number;
  /**
   * A brick filled to this percent of its capacity is full: writes that add
   * block bytes to its PGs get ENOSPC (capacity.ts). Absent:
   * fullThresholdDefaultPct. Changeable.
   */
  fullThresholdPct?: number;
}

/** 5 minutes: long enough for a reboot or a daemon upgrade, short of a long degraded spell. */
export const downOutIntervalDefaultMs = 300_000;
export const downOutIntervalRangeMs = { min: 1_000, max: 7 * 24 * 3600_000 } as const;

/** A volume's effective down-out interval. */
export function downOutIntervalMs(c: VolumeConfig): number {
  return c.downOutIntervalMs ?? downOutIntervalDefaultMs;
}

/** A week: every byte read back about once a week. */
export const scrubIntervalDefaultMs = 7 * 24 * 3600_000;
/** 0 (off) or 1 minute .. 1 year. */
export const scrubIntervalRangeMs = { min: 60_000, max: 366 * 24 * 3600_000 } as const;

/** A volume's effective scrub interval (0: no scheduled scrub). */
export function scrubIntervalMs(c: VolumeConfig): number {
  return c.scrubIntervalMs ?? scrubIntervalDefaultMs;
}

export const volumeDefaults = {
  pgCount: 256,
  replicas: 1,
  blockSizeBytes: 1024 * 1024,
  inlineMaxBytes: 4096,
} as const;

/** Default min_insync: 2 of 3 (a majority-style floor), 1 when there is one copy. */
export function defaultMinInsync(replicas: number): number {
  return Math.min(2, replicas);
}

export const VOLUME_NAME_RE = /^[a-z0-9][a-z0-9_-]{0,62}$/;

export function validateVolumeConfig(c: VolumeConfig): VolumeConfig {
  const problems: string[] = [];
  if (!VOLUME_NAME_RE.test(c.name))
    problems.push(`name ${JSON.stringify(c.name)} must match ${VOLUME_NAME_RE}`);
  if (
    !Number.isInteger(c.pgCount) ||
    c.pgCount < 1 ||
    c.pgCount > PG_COUNT_MAX ||
    (c.pgCount & (c.pgCount - 1)) !== 0
  ) {
    problems.push(`pgCount ${c.pgCount} must be a power of two in 1..${PG_COUNT_MAX}`);
  }
  if (!Number.isInteger(c.replicas) || c.replicas < 1 || c.replicas > 5)
    problems.push(`replicas ${c.replicas} must be 1..5`);
  if (!Number.isInteger(c.minInsync) || c.minInsync < 1 || c.minInsync > c.replicas)
    problems.push(`minInsync ${c.minInsync} must be 1..replicas (${c.replicas})`);
  if (
    !Number.isInteger(c.blockSizeBytes) ||
    c.blockSizeBytes < limits.blockSizeMinBytes ||
    c.blockSizeBytes > limits.blockSizeMaxBytes ||
    c.blockSizeBytes % (64 * 1024) !== 0
  ) {
    problems.push(`blockSizeBytes ${c.blockSizeBytes} must be a multiple of 64 KiB in 64 KiB..16 MiB`);
  }
  if (
    !Number.isInteger(c.inlineMaxBytes) ||
    c.inlineMaxBytes < 0 ||
    c.inlineMaxBytes > limits.inlineMaxBytesMax
  ) {
    problems.push(`inlineMaxBytes ${c.inlineMaxBytes} must be 0..${limits.inlineMaxBytesMax}`);
  }
  if (
    c.downOutIntervalMs !== undefined &&
    (!Number.isInteger(c.downOutIntervalMs) ||
      c.downOutIntervalMs < downOutIntervalRangeMs.min ||
      c.downOutIntervalMs > downOutIntervalRangeMs.max)
  ) {
    problems.push(
      `downOutIntervalMs ${c.downOutIntervalMs} must be an integer in ${downOutIntervalRangeMs.min}..${downOutIntervalRangeMs.max}`,
    );
  }
  if (
    c.scrubIntervalMs !== undefined &&
    (!Number.isInteger(c.scrubIntervalMs) ||
      (c.scrubIntervalMs !== 0 &&
        (c.scrubIntervalMs < scrubIntervalRangeMs.min || c.scrubIntervalMs > scrubIntervalRangeMs.max)))
  ) {
    problems.push(
      `scrubIntervalMs ${c.scrubIntervalMs} must be 0 (off) or an integer in ${scrubIntervalRangeMs.min}..${scrubIntervalRangeMs.max}`,
    );
  }
  if (
    c.fullThresholdPct !== undefined &&
    (!Number.isInteger(c.fullThresholdPct) ||
      c.fullThresholdPct < fullThresholdRangePct.min ||
      c.fullThresholdPct > fullThresholdRangePct.max)
  ) {
    problems.push(
      `fullThresholdPct ${c.fullThresholdPct} must be an integer in ${fullThresholdRangePct.min}..${fullThresholdRangePct.max}`,
    );
  }
  if (problems.length) throw new RangeError(`invalid volume config: ${problems.join('; ')}`);
  return c;
}
