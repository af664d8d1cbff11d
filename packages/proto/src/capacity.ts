import type { VolumeConfig } from './volume.js';

/**
 * A brick's space as the brick last published it (etcd `usage/<brick>`,
 * bound to the brick's lease, so a dead brick's record goes with it).
 */
export interface BrickUsage {
  /** What the brick may fill: its --capacity-bytes, or its filesystem's size. */
  capacityBytes: number;
  /** Block bytes plus the brick's metadata store on disk. */
  usedBytes: number;
  /** min(capacity - used, what the filesystem has left): what more it can take. */
  freeBytes: number;
  /** Bytes of block files (every PG copy the brick holds, every role). */
  blockBytes: number;
  /** Bytes of the LevelDB directory (inodes, entries, logs, inline data). */
  metaBytes: number;
  state: UsageState;
  /** When it was measured, brick clock. */
  atMs: number;
}

/**
 * - `ok`;
 * - `nearfull`: within `nearfullMarginPct` of the full threshold; shown as a
 *   warning, and the controller gives it no new PG copies;
 * - `full`: at or over the threshold; writes that add block bytes to its PGs
 *   get ENOSPC (removes, truncates and metadata go on, so space can be freed).
 */
export type UsageState = 'ok' | 'nearfull' | 'full';

/** 95%: the last 5% of a disk is left for LevelDB compactions and the logs' own growth. */
export const fullThresholdDefaultPct = 95;
export const fullThresholdRangePct = { min: 50, max: 99 } as const;
/** A brick this close below the full threshold is nearfull. */
export const nearfullMarginPct = 10;

/** A volume's effective full threshold, percent of each brick's capacity. */
export function fullThresholdPct(c: Pick<VolumeConfig, 'fullThresholdPct'>): number {
  return c.fullThresholdPct ?? fullThresholdDefaultPct;
}

export function usageState(usedBytes: number, capacityBytes: number, thresholdPct: number): UsageState {
  if (capacityBytes <= 0) return 'full';
  const pct = (usedBytes / capacityBytes) * 100;
  if (pct >= thresholdPct) return 'full';
  if (pct >= thresholdPct - nearfullMarginPct) return 'nearfull';
  return 'ok';
}

/** What the volume can hold: the bricks' sums, and the usable share (one copy of R). */
export interface VolumeUsage {
  rawCapacityBytes: number;
  rawUsedBytes: number;
  rawFreeBytes: number;
  /** rawFree / replicas: about how many more bytes of files fit. */
  usableFreeBytes: number;
  usableCapacityBytes: number;
  bricksFull: number;
  bricksNearfull: number;
  /** Bricks without a usage record (down, or not measured yet). */
  bricksUnknown: number;
}

export function volumeUsage(
  bricks: readonly string[],
  usage: ReadonlyMap<string, BrickUsage>,
  replicas: number,
): VolumeUsage {
  const out: VolumeUsage = {
    rawCapacityBytes: 0,
    rawUsedBytes: 0,
    rawFreeBytes: 0,
    usableFreeBytes: 0,
    usableCapacityBytes: 0,
    bricksFull: 0,
    bricksNearfull: 0,
    bricksUnknown: 0,
  };
  for (const id of bricks) {
    const u = usage.get(id);
    if (!u) {
      out.bricksUnknown++;
      continue;
    }
    out.rawCapacityBytes += u.capacityBytes;
    out.rawUsedBytes += u.usedBytes;
    out.rawFreeBytes += u.freeBytes;
    if (u.state === 'full') out.bricksFull++;
    if (u.state === 'nearfull') out.bricksNearfull++;
  }
  const r = Math.max(1, replicas);
  out.usableFreeBytes = Math.floor(out.rawFreeBytes / r);
  out.usableCapacityBytes = Math.floor(out.rawCapacityBytes / r);
  return out;
}

/** A usage record read back from etcd, checked field by field. */
export function parseBrickUsage(v: unknown): BrickUsage | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  const nums = ['capacityBytes', 'usedBytes', 'freeBytes', 'blockBytes', 'metaBytes', 'atMs'] as const;
  for (const k of nums)
    if (typeof o[k] !== 'number' || !Number.isFinite(o[k]) || (o[k] as number) < 0) return undefined;
  if (o.state !== 'ok' && o.state !== 'nearfull' && o.state !== 'full') return undefined;
  return o as unknown as BrickUsage;
}
