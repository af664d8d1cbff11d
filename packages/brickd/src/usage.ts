import { type BrickUsage, usageState } from '@dunix/proto';

/** What the usage meter reads, injected (the daemon gives it the disk; tests give it numbers). */
export interface UsageSources {
  /** The data directory's filesystem: its size and what it has left for this process. */
  filesystem(): Promise<{ totalBytes: number; availBytes: number }>;
  /** Bytes of the brick's metadata store (the LevelDB directory). */
  metaBytes(): Promise<number>;
  /**
   * Bytes of block files held, every PG copy and role (from the block
   * records), and the preallocated bytes of the allocation maps held: a
   * reservation counts as used from the fallocate that makes it.
   */
  blockBytes(): Promise<number>;
  /** The volume's full threshold, percent (it may change: `volume set full_threshold`). */
  thresholdPct(): number;
  nowMs(): number;
}

/**
 * A brick's space: measured every `usageIntervalMs` (a scan of the block
 * records and a statfs), and between measurements raised by every block
 * byte written (an over-estimate: an overwrite counts too), so a burst of
 * writes reaches the full state before the next scan, not after it.
 */
export class UsageMeter {
  private last: BrickUsage | undefined;
  private writtenSinceBytes = 0;
  private measuring: Promise<BrickUsage> | undefined;

  constructor(
    private readonly src: UsageSources,
    /** --capacity-bytes; 0: the filesystem's size. */
    private readonly capacityBytes: number,
  ) {}

  /** Block bytes were written (any role): counted until the next measurement. */
  noteWritten(bytes: number): void {
    this.writtenSinceBytes += bytes;
  }

  /** The last measurement plus what was written since (undefined before the first). */
  current(): BrickUsage | undefined {
    const u = this.last;
    if (!u || this.writtenSinceBytes === 0) return u;
    const usedBytes = u.usedBytes + this.writtenSinceBytes;
    return {
      ...u,
      usedBytes,
      freeBytes: Math.max(0, u.freeBytes - this.writtenSinceBytes),
      state: usageState(usedBytes, u.capacityBytes, this.src.thresholdPct()),
    };
  }

  /** At or over the full threshold, as far as this brick knows now. */
  full(): boolean {
    return this.current()?.state === 'full';
  }

  /** Measures now (concurrent callers share one measurement). */
  measure(): Promise<BrickUsage> {
    this.measuring ??= this.doMeasure().finally(() => {
      this.measuring = undefined;
    });
    return this.measuring;
  }

  private async doMeasure(): Promise<BrickUsage> {
    const written = this.writtenSinceBytes;
    const [fsys, metaBytes, blockBytes] = await Promise.all([
      this.src.filesystem(),
      this.src.metaBytes(),
      this.src.blockBytes(),
    ]);
    const capacityBytes =
      this.capacityBytes > 0 ? Math.min(this.capacityBytes, fsys.totalBytes) : fsys.totalBytes;
    const usedBytes = blockBytes + metaBytes;
    // A quota below the disk: what is left of it, and never more than the disk has.
    const freeBytes = Math.max(0, Math.min(capacityBytes - usedBytes, fsys.availBytes));
    // With a quota, used is what this brick holds; on a whole disk, what the disk holds
    // (other files on it count against the brick too).
    const countedBytes =
      this.capacityBytes > 0 ? usedBytes : Math.max(usedBytes, capacityBytes - fsys.availBytes);
    this.last = {
      capacityBytes,
      usedBytes: countedBytes,
      freeBytes,
      blockBytes,
      metaBytes,
      state: usageState(countedBytes, capacityBytes, this.src.thresholdPct()),
      atMs: this.src.nowMs(),
    };
    // Writes made while measuring may or may not be in the scan: keep counting them.
    this.writtenSinceBytes -= written;
    return this.last;
  }
}

/**
 * Bytes a brick can still take before it reaches the full threshold (0 at
 * or past it): what a preallocation may reserve there.
 */
export function roomBelowFull(u: BrickUsage, thresholdPct: number): number {
  return Math.max(0, Math.floor((u.capacityBytes * thresholdPct) / 100) - u.usedBytes);
}

/** Whether a newly measured usage is worth publishing over the one last published. */
export function usageChanged(prev: BrickUsage | undefined, next: BrickUsage, republishMs: number): boolean {
  if (!prev) return true;
  if (prev.state !== next.state || prev.capacityBytes !== next.capacityBytes) return true;
  // Half a percent of the capacity: df stays accurate without a write to etcd per block.
  if (Math.abs(prev.usedBytes - next.usedBytes) >= next.capacityBytes / 200) return true;
  return next.atMs - prev.atMs >= republishMs;
}
