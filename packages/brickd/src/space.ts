import { readdir, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import type { BrickUsage, Logger } from '@dunix/proto';
import type { BlockFiles } from './store/block-files.js';
import { roomBelowFull, UsageMeter, usageChanged } from './usage.js';

/** What the space keeper needs from the control plane. */
export interface SpaceControl {
  publish(usage: BrickUsage): Promise<void>;
  list(): Promise<Map<string, BrickUsage>>;
}

export interface SpaceKeeperOptions {
  brickId: string;
  dataDir: string;
  /** LevelDB directory (its files count as used). */
  metaDir: string;
  /** 0: the filesystem's size. */
  capacityBytes: number;
  intervalMs: number;
  blockBytes: () => Promise<number>;
  thresholdPct: () => number;
  control: SpaceControl;
  log: Logger;
}

/** Republish an unchanged usage this often, so `dunixctl df` shows its age honestly. */
const REPUBLISH_MS = 60_000;

/**
 * The daemon's side of capacity: measures this brick's space every
 * interval, publishes it to etcd when it changed, and reads the other
 * bricks' records, so a primary refuses growth of a PG one of whose copies
 * is full (Brick's `anyFull`) without a call per write.
 */
export class SpaceKeeper {
  readonly meter: UsageMeter;
  private published: BrickUsage | undefined;
  private peers = new Map<string, BrickUsage>();
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(private readonly o: SpaceKeeperOptions) {
    this.meter = new UsageMeter(
      {
        filesystem: async () => {
          const s = await statfs(o.dataDir);
          return { totalBytes: s.blocks * s.bsize, availBytes: s.bavail * s.bsize };
        },
        metaBytes: () => dirBytes(o.metaDir),
        blockBytes: o.blockBytes,
        thresholdPct: o.thresholdPct,
        nowMs: () => Date.now(),
      },
      o.capacityBytes,
    );
  }

  start(): void {
    void this.tick();
    this.timer = setInterval(() => void this.tick(), this.o.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  anyFull(bricks: readonly string[]): boolean {
    for (const b of bricks) {
      if (b === this.o.brickId ? this.meter.full() : this.peers.get(b)?.state === 'full') return true;
    }
    return false;
  }

  /**
   * The fewest bytes any of these bricks can take below the full threshold,
   * as last measured (this brick: its meter now); a brick whose usage is
   * not known yet does not limit it.
   */
  roomBytes(bricks: readonly string[]): number {
    let room = Infinity;
    const pct = this.o.thresholdPct();
    for (const b of bricks) {
      const u = b === this.o.brickId ? this.meter.current() : this.peers.get(b);
      if (u) room = Math.min(room, roomBelowFull(u, pct));
    }
    return room;
  }

  /** Block files that tell the meter about every byte written, whatever the role. */
  counting(blocks: BlockFiles): BlockFiles {
    const meter = this.meter;
    return {
      read: (...a) => blocks.read(...a),
      write: (pg, ino, index, offset, data, rec, blockSizeBytes) => {
        meter.noteWritten(data.length);
        return blocks.write(pg, ino, index, offset, data, rec, blockSizeBytes);
      },
      truncate: (...a) => blocks.truncate(...a),
      delete: (...a) => blocks.delete(...a),
      // A clone's bytes count like written ones: every record counts its length (usage.ts).
      ...(blocks.clone
        ? {
            clone: async (src, want, dst) => {
              const done = await blocks.clone!(src, want, dst);
              if (done) meter.noteWritten(want.length);
              return done;
            },
          }
        : {}),
      ...(blocks.list ? { list: (pg: number) => blocks.list!(pg) } : {}),
      ...(blocks.syncDirty ? { syncDirty: () => blocks.syncDirty!() } : {}),
    };
  }

  private async tick(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      const u = await this.meter.measure();
      if (usageChanged(this.published, u, REPUBLISH_MS)) {
        await this.o.control.publish(u);
        if (u.state !== this.published?.state && u.state !== 'ok')
          this.log(u.state === 'full' ? 'error' : 'warn', u);
        this.published = u;
      }
      this.peers = await this.o.control.list();
    } catch (err) {
      this.o.log.warn('usage not measured or published', { err: String(err) });
    } finally {
      this.running = false;
    }
  }

  private log(level: 'warn' | 'error', u: BrickUsage): void {
    this.o.log[level](`brick is ${u.state}`, {
      usedBytes: u.usedBytes,
      capacityBytes: u.capacityBytes,
      freeBytes: u.freeBytes,
    });
  }
}

const GiB = 2 ** 30;

/**
 * A brick's default placement weight: its capacity in GiB (at least 1, at
 * most 1e6), as Ceph derives an OSD's CRUSH weight from its disk, so PGs —
 * and so bytes — spread in proportion to space without the operator
 * weighing every brick. `--weight` or `dunixctl brick set-weight` override it.
 */
export async function capacityWeight(dataDir: string, capacityBytes: number): Promise<number> {
  const s = await statfs(dataDir);
  const diskBytes = s.blocks * s.bsize;
  const bytes = capacityBytes > 0 ? Math.min(capacityBytes, diskBytes) : diskBytes;
  return Math.min(1e6, Math.max(1, Math.round(bytes / GiB)));
}

/** Bytes of the regular files directly in `dir` (LevelDB keeps no subdirectories). */
async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const s = await stat(join(dir, name)).catch(() => undefined);
    if (s?.isFile()) total += s.size;
  }
  return total;
}
