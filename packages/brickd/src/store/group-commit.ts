import type { BlockFiles } from './block-files.js';
import type { KvStore } from './kv.js';

/**
 * When a brick's writes reach the disk. Two modes (knob `groupCommitMs`):
 *
 * - 0: every log entry is written with a synced batch (block bytes
 *   fdatasync'd first), so an acknowledged op is on disk on every in-sync
 *   replica.
 * - N > 0: entries are written unsynced (in the OS page cache: a killed
 *   process loses nothing), and one sync of the block files and the LevelDB
 *   log covers everything written within N ms (group commit). A client's
 *   fsync, fdatasync, syncfs or O_SYNC write asks for `sync()` on every
 *   in-sync replica of the PGs it covers and returns after it.
 */
export interface Durability {
  /** Write each entry synced (no group commit). */
  readonly syncEach: boolean;
  /** An unsynced write was made: sync within the window. */
  written(): void;
  /** Resolves once everything written before the call is on disk. */
  sync(): Promise<void>;
}

/** Every write synced on its own. */
export const syncEachWrite: Durability = {
  syncEach: true,
  written: () => {},
  sync: async () => {},
};

/**
 * LevelDB's log is one append-only file, so a synced batch makes every
 * earlier unsynced batch durable too: a sync is one tiny synced write
 * (classic-level skips empty batches) under a key of no PG (kind 0xff is
 * not a record kind).
 */
const SYNC_MARKER_KEY = Buffer.from([0xff, 0xff, 0xff, 0x53]);

export class GroupCommit implements Durability {
  readonly syncEach = false;
  private running: Promise<void> | undefined;
  private queued: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private dirty = false;
  private stopped = false;
  private syncs = 0;

  constructor(
    private readonly kv: KvStore,
    private readonly blocks: BlockFiles,
    readonly windowMs: number,
  ) {}

  written(): void {
    this.dirty = true;
    if (this.timer || this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.dirty) void this.sync().catch(() => {});
    }, this.windowMs);
  }

  sync(): Promise<void> {
    if (!this.running) return this.start();
    // Nothing written since the running sync started: it covers every write
    // made before this call (an fsync of two PGs, and the copies' SyncCopy,
    // often arrive together, or just after the window's own sync started).
    if (!this.dirty) return this.running;
    // Written since it started: one more sync after it.
    this.queued ??= this.running
      .catch(() => {})
      .then(() => {
        this.queued = undefined;
        return this.start();
      });
    return this.queued;
  }

  private start(): Promise<void> {
    this.dirty = false;
    const p = (async () => {
      await this.blocks.syncDirty?.();
      await this.kv.write([{ key: SYNC_MARKER_KEY, value: Buffer.from(String(++this.syncs)) }], true);
    })().finally(() => {
      if (this.running === p) this.running = undefined;
    });
    this.running = p;
    return p;
  }

  /** Syncs what is left and stops the timer (before the store closes). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.sync();
  }
}
