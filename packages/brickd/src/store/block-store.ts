import {
  copyFile,
  link,
  mkdir,
  open as openFile,
  readdir,
  rename,
  rm,
  unlink,
  type FileHandle,
} from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import { join } from 'node:path';
import { CHECKSUM_CHUNK_BYTES, FsError, initHashing, takeBuffer } from '@dunix/proto';
import { checkRecord, checkUint, chunkCount, chunkSum } from './block-record.js';
import { BlockQueues } from './block-queues.js';
import { DIRECT_ALIGN_BYTES, StagingBuffers } from './direct-io.js';
import type { BlockRecord } from './records.js';

export { chunkSum } from './block-record.js';

const CHUNK = CHECKSUM_CHUNK_BYTES;
/** A block file's name: inode (16 hex digits) dot block index (hex). */
const BLOCK_FILE_RE = /^([0-9a-f]{16})\.([0-9a-f]{1,16})$/;

export interface BlockStoreOptions {
  /** The brick's data dir; block files live under `<dataDir>/blocks`. */
  dataDir: string;
  /** Open block files kept cached (closed least recently used first). */
  fdCacheMax?: number;
  /** Block records remembered for clones (BlockStore.known); 0: a clone always reads its source back. */
  knownRecordsMax?: number;
  /**
   * fdatasync every write before it resolves (default). Off: writes reach
   * the page cache only and `syncDirty()` makes them durable (the brick's
   * group commit, and every fsync a client asks for).
   */
  syncEachWrite?: boolean;
  /**
   * Write aligned ranges of at least `directMinBytes` with O_DIRECT
   * (store/direct-io.ts; default on). Off, or refused by the filesystem:
   * every write goes through the page cache.
   */
  directIo?: boolean;
  /** Smallest write sent with O_DIRECT (a multiple of 4096). */
  directMinBytes?: number;
}

export const blockStoreDefaults = {
  fdCacheMax: 256,
  knownRecordsMax: 4096,
  directMinBytes: 64 * 1024,
  /** Direct writes in flight at once (each holds one staging buffer); more go buffered. */
  directStagingCount: 8,
  directStagingBytes: 1024 * 1024,
} as const;

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(`BlockStore invariant: ${msg}`);
}

interface FdEntry {
  fh: FileHandle;
  /** The same file opened O_DIRECT, once a direct write needed it; closed with fh. */
  direct?: FileHandle;
  /** Operations using the handle now; a pinned handle is never closed by eviction. */
  pins: number;
  /** Of the pins, those of syncDirty, which syncs outside the block's queue. */
  syncPins: number;
  /** Unlinked while syncDirty held it: out of the cache, closed at its last release. */
  dropped: boolean;
  /**
   * The file may have another name (a clone shares it): false once a stat
   * showed one link, or for a file made here. A write checks before it
   * changes bytes in place.
   */
  mayBeShared: boolean;
}

/**
 * Block data in files, one per block:
 * `<dataDir>/blocks/<pg as 4 hex>/<ino as 16 hex>.<index as hex>`.
 *
 * The block's index record (length and a checksum per 64 KiB chunk) is owned
 * by the caller, who stores it in the same LevelDB batch as the change that
 * wrote the block. Each operation takes the current record and returns the
 * new one. Contract:
 *
 * - Reads verify every chunk they touch before returning bytes (CORRUPT on a
 *   mismatch or a short file); writes verify the old bytes they keep.
 * - A write is durable (fdatasync) when it resolves; the caller then commits
 *   the returned record. A crash in between leaves file bytes the old record
 *   does not describe: reads of those chunks report CORRUPT (healed from a
 *   replica), never wrong data. Bytes past a record's length are never
 *   trusted: gaps are written as explicit zeros.
 * - Operations on one block run one at a time in call order; different
 *   blocks run in parallel. An operation queued behind another on the same
 *   block uses the record its predecessor produced (the record its caller
 *   held was read before that predecessor changed the file), so N writes
 *   issued at once give the same result as applying them in call order.
 * - A clone makes a block file a second name of another block's file (a
 *   hard link: one copy of the bytes on disk). Write and truncate never
 *   change a file with more than one link in place: they give the block a
 *   file of its own first (a copy, or a fresh file when no old byte is
 *   kept), so a change to either block never shows in the other. Deleting
 *   one name leaves the other's bytes (the filesystem counts the links).
 */
export class BlockStore {
  readonly dataDir: string;
  readonly blocksDir: string;
  readonly fdCacheMax: number;
  readonly knownRecordsMax: number;
  /**
   * The record each block file was last left with by an operation here (a
   * write, truncate or clone that completed), least recently set first, at
   * most `knownRecordsMax`: a clone whose record is this one links without
   * reading the file back. Dropped when an operation on the file starts.
   */
  private readonly known = new Map<string, BlockRecord>();
  /** Open handles, least recently used first. */
  private readonly fds = new Map<string, FdEntry>();
  private readonly queues = new BlockQueues();
  /** PG directories known to exist (created and made durable). */
  private readonly dirs = new Set<string>();
  private readonly closing = new Set<Promise<void>>();
  private state: 'new' | 'open' | 'closed' = 'new';
  readonly syncEachWrite: boolean;
  /** Files written and directories changed since the last syncDirty (deferred mode). */
  private dirtyFiles = new Set<string>();
  private dirtyDirs = new Set<string>();
  /** Names being made (links before their rename, copies breaking a share); emptied at open. */
  readonly tmpDir: string;
  private tmpSeq = 0;
  readonly directMinBytes: number;
  private readonly directWanted: boolean;
  /** Set at open when direct writes are on and the filesystem takes them. */
  private staging: StagingBuffers | undefined;
  /** Why writes go through the page cache although direct I/O was asked for (undefined: it was not, or it works). */
  directIoOff: string | undefined;
  /** Writes made with O_DIRECT, and bytes (for tests and metrics). */
  directWrites = 0;
  directBytes = 0;

  constructor(opts: BlockStoreOptions) {
    this.syncEachWrite = opts.syncEachWrite ?? true;
    this.directWanted = opts.directIo ?? true;
    this.directMinBytes = opts.directMinBytes ?? blockStoreDefaults.directMinBytes;
    assert(
      Number.isSafeInteger(this.directMinBytes) &&
        this.directMinBytes >= DIRECT_ALIGN_BYTES &&
        this.directMinBytes % DIRECT_ALIGN_BYTES === 0,
      `directMinBytes ${this.directMinBytes}`,
    );
    this.dataDir = opts.dataDir;
    this.blocksDir = join(opts.dataDir, 'blocks');
    this.tmpDir = join(this.blocksDir, 'tmp');
    this.fdCacheMax = opts.fdCacheMax ?? blockStoreDefaults.fdCacheMax;
    assert(Number.isSafeInteger(this.fdCacheMax) && this.fdCacheMax >= 1, `fdCacheMax ${this.fdCacheMax}`);
    this.knownRecordsMax = opts.knownRecordsMax ?? blockStoreDefaults.knownRecordsMax;
    assert(
      Number.isSafeInteger(this.knownRecordsMax) && this.knownRecordsMax >= 0,
      `knownRecordsMax ${this.knownRecordsMax}`,
    );
  }

  async open(): Promise<void> {
    if (this.state === 'open') return;
    await initHashing();
    await mkdir(this.blocksDir, { recursive: true });
    // Left by a crash between a link or copy and its rename: never a block's only name.
    await rm(this.tmpDir, { recursive: true, force: true });
    await mkdir(this.tmpDir);
    if (this.directWanted) {
      const got = StagingBuffers.probe(
        this.tmpDir,
        blockStoreDefaults.directStagingBytes,
        blockStoreDefaults.directStagingCount,
      );
      if (typeof got === 'string') this.directIoOff = got;
      else this.staging = got;
    }
    this.state = 'open';
  }

  /** Waits for queued operations, then closes every cached handle. Idempotent. */
  async close(): Promise<void> {
    if (this.state !== 'open') {
      this.state = 'closed';
      return;
    }
    this.state = 'closed';
    await this.queues.drain();
    for (const [key, e] of this.fds) {
      this.fds.delete(key);
      this.closeHandle(e, this.dirtyFiles.delete(key));
    }
    while (this.closing.size > 0) await Promise.all(this.closing);
  }

  /** Path of a block file (BLOCK_FILE_RE parses its name). */
  pathOf(pg: number, ino: bigint, index: bigint): string {
    assert(ino >= 0n && ino < 1n << 64n && index >= 0n && index < 1n << 64n, `block ${ino}.${index}`);
    return join(this.pgDir(pg), `${ino.toString(16).padStart(16, '0')}.${index.toString(16)}`);
  }

  /** Blocks of `pg` with a file; names that are not block files (none are made here) are skipped. */
  async list(pg: number): Promise<{ ino: bigint; index: bigint }[]> {
    let names: string[];
    try {
      names = await readdir(this.pgDir(pg));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const out: { ino: bigint; index: bigint }[] = [];
    for (const name of names) {
      const m = BLOCK_FILE_RE.exec(name);
      if (m) out.push({ ino: BigInt(`0x${m[1]}`), index: BigInt(`0x${m[2]}`) });
    }
    return out;
  }

  /** Open handles (for tests of the cache bound). */
  get openFiles(): number {
    return this.fds.size;
  }

  /**
   * The bytes stored in [offset, min(offset + length, rec.length)); empty
   * past the end or without a record. Every chunk touched is read whole and
   * verified first.
   */
  async read(
    pg: number,
    ino: bigint,
    index: bigint,
    offset: number,
    length: number,
    rec: BlockRecord | undefined,
  ): Promise<Buffer> {
    checkUint('offset', offset);
    checkUint('length', length);
    return this.serial(pg, ino, index, rec, async (cur) => {
      checkRecord(cur, 'read');
      if (!cur || offset >= cur.length || length === 0) return { result: Buffer.alloc(0), rec: cur };
      const end = Math.min(offset + length, cur.length);
      const first = Math.floor(offset / CHUNK);
      const base = first * CHUNK;
      const stop = Math.min(Math.ceil(end / CHUNK) * CHUNK, cur.length);
      const path = this.pathOf(pg, ino, index);
      const fd = await this.acquire(path, false);
      if (!fd) throw new FsError('CORRUPT', `block file ${path} missing, record has ${cur.length} bytes`);
      try {
        const buf = await readExact(fd.fh, base, stop - base, path);
        verifyChunks(buf, base, cur, path);
        // The chunk buffer is ours alone: hand out a view of it, not a copy.
        return { result: buf.subarray(offset - base, end - base), rec: cur };
      } finally {
        this.release(path, fd);
      }
    });
  }

  /**
   * Writes `data` at `offset` (offset + data.length <= blockSizeBytes); bytes
   * between the old length and offset read as zeros. Durable on return.
   * `data` is read when the write runs (it may wait behind others on the
   * same block): the caller must not change it until the promise settles.
   */
  async write(
    pg: number,
    ino: bigint,
    index: bigint,
    offset: number,
    data: Uint8Array,
    rec: BlockRecord | undefined,
    blockSizeBytes: number,
  ): Promise<BlockRecord> {
    checkUint('offset', offset);
    checkUint('blockSizeBytes', blockSizeBytes);
    if (offset + data.length > blockSizeBytes) {
      throw new FsError(
        'OUT_OF_RANGE',
        `write of ${data.length} at ${offset} past block size ${blockSizeBytes}`,
      );
    }
    const bytes = Buffer.from(data.buffer, data.byteOffset, data.length);
    return this.serial(pg, ino, index, rec, async (cur) => {
      checkRecord(cur, 'write');
      const oldLen = cur?.length ?? 0;
      if (bytes.length === 0) {
        const same = cur ? { length: cur.length, sums: [...cur.sums] } : { length: 0, sums: [] };
        return { result: same, rec: cur };
      }
      const dataEnd = offset + bytes.length;
      const newLen = Math.max(oldLen, dataEnd);
      // Rewritten range: from the old end when the write leaves a gap (the gap
      // is written as zeros: the file may hold stale bytes past the record).
      const start = Math.min(offset, oldLen);
      const first = Math.floor(start / CHUNK);
      const last = Math.ceil(dataEnd / CHUNK) - 1;
      const base = first * CHUNK;
      const stop = Math.min((last + 1) * CHUNK, newLen);
      // A write of whole chunks (the usual full-block write) is hashed and
      // written from the caller's bytes: no 1 MiB buffer per write, whose
      // allocation (external memory) drives V8 into major collections.
      const whole = base === offset && start === offset && stop === dataEnd;
      const buf = whole ? bytes : Buffer.alloc(stop - base);
      const path = this.pathOf(pg, ino, index);
      this.known.delete(path);
      let fd = await this.acquire(path, true);
      assert(fd, 'created handle');
      try {
        // Bytes outside [start, dataEnd) stay: a shared file is copied first unless none exist.
        fd = await this.unshare(path, fd, start > 0 || dataEnd < oldLen);
        // Keep the old bytes of the edge chunks the write only partly covers.
        for (const i of new Set([first, last])) {
          const oldStart = i * CHUNK;
          const oldEnd = Math.min(oldStart + CHUNK, oldLen);
          if (oldEnd <= oldStart || (start <= oldStart && dataEnd >= oldEnd)) continue;
          const old = await readExact(fd.fh, oldStart, oldEnd - oldStart, path);
          verifyChunks(old, oldStart, cur!, path);
          old.copy(buf, oldStart - base);
        }
        if (!whole) bytes.copy(buf, offset - base);
        // buf now holds exactly what the file holds in [base, stop) after this
        // write (kept old bytes, the zero gap, the data): the sums below hash it.
        await this.writeRange(path, fd, buf.subarray(start - base, dataEnd - base), start);
        const sums = cur ? [...cur.sums] : [];
        for (let i = first; i <= last; i++) {
          const cs = i * CHUNK - base;
          const ce = Math.min((i + 1) * CHUNK, newLen) - base;
          assert(ce > cs && ce <= buf.length, `chunk ${i} extent ${cs}..${ce} inside ${buf.length}`);
          sums[i] = chunkSum(buf.subarray(cs, ce));
        }
        assert(sums.length === chunkCount(newLen), `${sums.length} sums for ${newLen} bytes`);
        await this.durable(path, fd);
        const next = { length: newLen, sums };
        this.remember(path, next);
        return { result: { length: newLen, sums: [...sums] }, rec: next };
      } finally {
        this.release(path, fd);
      }
    });
  }

  /**
   * Sets the block's length: shrinking drops bytes, growing adds zeros;
   * length 0 deletes the file and returns undefined. Durable on return.
   */
  async truncate(
    pg: number,
    ino: bigint,
    index: bigint,
    length: number,
    rec: BlockRecord | undefined,
  ): Promise<BlockRecord | undefined> {
    checkUint('length', length);
    return this.serial(pg, ino, index, rec, async (cur) => {
      checkRecord(cur, 'truncate');
      const path = this.pathOf(pg, ino, index);
      this.known.delete(path);
      if (length === 0) {
        await this.unlinkBlock(path);
        return { result: undefined, rec: undefined };
      }
      const oldLen = cur?.length ?? 0;
      if (cur && length === oldLen) return { result: { length, sums: [...cur.sums] }, rec: cur };
      const keep = Math.min(oldLen, length);
      const edge = Math.floor(keep / CHUNK);
      let fd = await this.acquire(path, true);
      assert(fd, 'created handle');
      try {
        fd = await this.unshare(path, fd, keep > 0);
        // The chunk holding the cut keeps a prefix of its old bytes: verify them.
        let edgeBytes: Buffer = Buffer.alloc(0);
        if (keep % CHUNK !== 0) {
          const oldStart = edge * CHUNK;
          const old = await readExact(fd.fh, oldStart, Math.min(oldStart + CHUNK, oldLen) - oldStart, path);
          verifyChunks(old, oldStart, cur!, path);
          edgeBytes = old.subarray(0, keep - oldStart);
        }
        // Cut to what is kept first, so growth reads as zeros whatever lay past the old end.
        await fd.fh.truncate(keep);
        if (length > keep) await fd.fh.truncate(length);
        const sums = cur ? cur.sums.slice(0, edge) : [];
        for (let i = edge; i < chunkCount(length); i++) {
          const cs = i * CHUNK;
          const chunk = Buffer.alloc(Math.min(cs + CHUNK, length) - cs);
          if (i === edge) edgeBytes.copy(chunk);
          sums.push(chunkSum(chunk));
        }
        assert(sums.length === chunkCount(length), `${sums.length} sums for ${length} bytes`);
        await this.durable(path, fd);
        const next = { length, sums };
        this.remember(path, next);
        return { result: { length, sums: [...sums] }, rec: next };
      } finally {
        this.release(path, fd);
      }
    });
  }

  /**
   * Makes block (dstPg, dstIno, dstIndex) a second name of the source
   * block's file when that file holds exactly what `want` describes
   * (checked under the source block's queue, so no write to it interleaves):
   * no byte is copied. False, and nothing changed, when the source file is
   * missing or holds other bytes. The destination's old file, if any, is
   * replaced. Durable on return like a write.
   */
  async clone(
    src: { pg: number; ino: bigint; index: bigint },
    want: BlockRecord,
    dst: { pg: number; ino: bigint; index: bigint },
  ): Promise<boolean> {
    checkRecord(want, 'clone');
    if (want.length === 0) return false;
    const tmp = join(this.tmpDir, `clone-${++this.tmpSeq}`);
    const srcPath = this.pathOf(src.pg, src.ino, src.index);
    const dstPath = this.pathOf(dst.pg, dst.ino, dst.index);
    if (srcPath === dstPath) throw new FsError('INVALID_ARGUMENT', `clone of block ${srcPath} onto itself`);
    const linked = await this.serialKeep(srcPath, async () => {
      const fd = await this.acquire(srcPath, false);
      if (!fd) return false;
      try {
        // Left with this very record by an operation here: no need to read it back.
        if (!sameRecord(this.known.get(srcPath), want)) {
          const buf = await readExact(fd.fh, 0, want.length, srcPath);
          verifyChunks(buf, 0, want, srcPath);
        }
        // The other name's bytes must reach the disk before its record does.
        if (this.dirtyFiles.has(srcPath)) await fd.fh.datasync();
        await link(srcPath, tmp);
        fd.mayBeShared = true;
        return true;
      } catch (err) {
        if (err instanceof FsError && err.code === 'CORRUPT') return false;
        // Removed behind the store's back while its handle was cached.
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
        throw err;
      } finally {
        this.release(srcPath, fd);
      }
    });
    if (!linked) return false;
    try {
      await this.serial(dst.pg, dst.ino, dst.index, undefined, async () => {
        await this.ensurePgDir(dstPath);
        this.forget(dstPath);
        this.known.delete(dstPath);
        await rename(tmp, dstPath);
        await this.dirChanged(dstPath);
        this.remember(dstPath, want);
        return { result: undefined, rec: { length: want.length, sums: [...want.sums] } };
      });
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw err;
    }
    return true;
  }

  /** Removes the block file (absent is fine). */
  async delete(pg: number, ino: bigint, index: bigint): Promise<void> {
    return this.serial(pg, ino, index, undefined, async () => {
      await this.unlinkBlock(this.pathOf(pg, ino, index));
      return { result: undefined, rec: undefined };
    });
  }

  // --- per-block serialization ---

  private serial<T>(
    pg: number,
    ino: bigint,
    index: bigint,
    rec: BlockRecord | undefined,
    fn: (cur: BlockRecord | undefined) => Promise<{ result: T; rec: BlockRecord | undefined }>,
  ): Promise<T> {
    if (this.state !== 'open') return Promise.reject(new Error(`BlockStore is ${this.state}`));
    return this.queues.run(this.pathOf(pg, ino, index), rec, fn);
  }

  /** Runs `fn` in the queue of the block at `key` without changing the record its ops see. */
  private serialKeep<T>(key: string, fn: () => Promise<T>): Promise<T> {
    if (this.state !== 'open') return Promise.reject(new Error(`BlockStore is ${this.state}`));
    return this.queues.runKeep(key, fn);
  }

  /**
   * A handle on a file of this block alone: a file with other names is
   * replaced by a copy (`keepBytes`) or an empty file first, so the change
   * about to be made in place never shows under another block.
   */
  private async unshare(path: string, fd: FdEntry, keepBytes: boolean): Promise<FdEntry> {
    if (!fd.mayBeShared) return fd;
    if ((await fd.fh.stat()).nlink <= 1) {
      fd.mayBeShared = false;
      return fd;
    }
    const tmp = join(this.tmpDir, `own-${++this.tmpSeq}`);
    try {
      if (keepBytes) await copyFile(path, tmp);
      else await (await openFile(tmp, 'w', 0o644)).close();
      await rename(tmp, path);
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw err;
    }
    // The cached handle now reaches the other block's file: out of the cache at
    // once (the caller's pin closes it), so nothing writes through it again.
    if (this.fds.get(path) === fd) this.fds.delete(path);
    fd.dropped = true;
    this.dirtyFiles.delete(path);
    await this.dirChanged(path);
    const own = await this.acquire(path, true);
    assert(own, 'handle of the copy');
    own.mayBeShared = false;
    this.release(path, fd);
    return own;
  }

  private remember(path: string, rec: BlockRecord): void {
    this.known.delete(path);
    this.known.set(path, { length: rec.length, sums: [...rec.sums] });
    if (this.known.size > this.knownRecordsMax) this.known.delete(this.known.keys().next().value!);
  }

  /** Drops the cached handle of `path` (its name is about to go, or to point at another file). */
  private forget(path: string, doing = 'replacing'): void {
    const e = this.fds.get(path);
    if (e) {
      // The block's queue runs one operation at a time: only syncDirty may hold it now.
      assert(e.pins === e.syncPins, `${doing} ${path} while in use`);
      this.fds.delete(path);
      if (e.pins === 0) this.closeHandle(e);
      else e.dropped = true;
    }
    this.dirtyFiles.delete(path);
  }

  /** A name in the directory of `path` changed: durable now, or with the next syncDirty. */
  private async dirChanged(path: string): Promise<void> {
    const dir = join(path, '..');
    if (this.syncEachWrite) await syncDir(dir);
    else this.dirtyDirs.add(dir);
  }

  /** Makes every write so far durable (deferred mode; a no-op when each write syncs). */
  async syncDirty(): Promise<void> {
    const files = this.dirtyFiles;
    const dirs = this.dirtyDirs;
    this.dirtyFiles = new Set();
    this.dirtyDirs = new Set();
    for (const path of files) {
      const e = this.fds.get(path);
      if (!e) continue; // closed since: eviction synced it first
      e.pins++;
      e.syncPins++;
      try {
        await e.fh.datasync();
      } finally {
        e.syncPins--;
        this.release(path, e);
      }
    }
    // Evicted dirty handles sync before they close.
    while (this.closing.size > 0) await Promise.all(this.closing);
    for (const dir of dirs) await syncDir(dir);
  }

  private async durable(path: string, fd: FdEntry): Promise<void> {
    if (this.syncEachWrite) await fd.fh.datasync();
    else this.dirtyFiles.add(path);
  }

  // --- files and the handle cache ---

  private pgDir(pg: number): string {
    assert(Number.isInteger(pg) && pg >= 0 && pg <= 0xffff, `pg ${pg}`);
    return join(this.blocksDir, pg.toString(16).padStart(4, '0'));
  }

  /** The cached or newly opened handle of `path`, pinned; undefined if absent and !create. */
  private async acquire(path: string, create: boolean): Promise<FdEntry | undefined> {
    let e = this.fds.get(path);
    if (e) {
      this.fds.delete(path);
      this.fds.set(path, e);
      e.pins++;
      return e;
    }
    let fh: FileHandle;
    let created = false;
    try {
      fh = await openFile(path, 'r+');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      if (!create) return undefined;
      await this.ensurePgDir(path);
      // Serialized per block: no one else creates this file now.
      fh = await openFile(path, 'w+', 0o644);
      created = true;
      // Make the new directory entry durable along with the data.
      if (this.syncEachWrite) await syncDir(join(path, '..'));
      else this.dirtyDirs.add(join(path, '..'));
    }
    e = { fh, pins: 1, syncPins: 0, dropped: false, mayBeShared: !created };
    this.fds.set(path, e);
    this.trim();
    return e;
  }

  private release(path: string, e: FdEntry): void {
    e.pins--;
    assert(e.pins >= 0, `handle of ${path} released twice`);
    if (e.dropped) {
      if (e.pins === 0) this.closeHandle(e);
      return;
    }
    this.trim();
  }

  /** Closes unpinned handles, least recently used first, down to fdCacheMax. */
  private trim(): void {
    if (this.fds.size <= this.fdCacheMax) return;
    for (const [path, e] of this.fds) {
      if (this.fds.size <= this.fdCacheMax) break;
      if (e.pins > 0) continue;
      this.fds.delete(path);
      this.closeHandle(e, this.dirtyFiles.delete(path));
    }
  }

  /** Closes an entry's handles; a dirty file is synced first (closing does not make data durable). */
  private closeHandle(e: FdEntry, dirty = false): void {
    const { fh, direct } = e;
    const p = (async () => {
      try {
        // One fdatasync covers what either handle wrote: the same file.
        if (dirty) await fh.datasync();
      } finally {
        await Promise.all([fh.close(), direct?.close()]);
      }
    })().finally(() => this.closing.delete(p));
    this.closing.add(p);
  }

  /**
   * Writes `data` at `position` of the block file: with O_DIRECT when the
   * range is aligned, big enough and a staging buffer is free, through the
   * page cache otherwise. Either way the caller's `durable` makes it durable.
   */
  private async writeRange(path: string, fd: FdEntry, data: Buffer, position: number): Promise<void> {
    const staging = this.staging;
    if (
      !staging ||
      data.length < this.directMinBytes ||
      position % DIRECT_ALIGN_BYTES !== 0 ||
      data.length % DIRECT_ALIGN_BYTES !== 0
    ) {
      return writeExact(fd.fh, data, position);
    }
    const stage = staging.take();
    if (!stage) return writeExact(fd.fh, data, position);
    try {
      fd.direct ??= await openFile(path, fsConstants.O_WRONLY | fsConstants.O_DIRECT);
      for (let at = 0; at < data.length; at += stage.length) {
        const n = Math.min(stage.length, data.length - at);
        data.copy(stage, 0, at, at + n);
        await writeExact(fd.direct, stage.subarray(0, n), position + at);
      }
      this.directWrites++;
      this.directBytes += data.length;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
      // The filesystem took the probe but not this file or range: page cache from now on.
      this.staging = undefined;
      this.directIoOff = `O_DIRECT write refused (EINVAL) on ${path}`;
      return writeExact(fd.fh, data, position);
    } finally {
      staging.give(stage);
    }
  }

  private async ensurePgDir(path: string): Promise<void> {
    const dir = join(path, '..');
    if (this.dirs.has(dir)) return;
    const made = await mkdir(dir, { recursive: true });
    if (made !== undefined) await syncDir(this.blocksDir);
    this.dirs.add(dir);
  }

  private async unlinkBlock(path: string): Promise<void> {
    this.known.delete(path);
    this.forget(path, 'deleting');
    if (!this.syncEachWrite) this.dirtyDirs.add(join(path, '..'));
    try {
      await unlink(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
}

async function syncDir(dir: string): Promise<void> {
  let fh: FileHandle;
  try {
    fh = await openFile(dir, 'r');
  } catch (err) {
    // Never created (a delete of a block this copy never had, e.g. replayed
    // from the log onto a new replica): nothing to make durable.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Exactly `length` bytes at `position`; a short file is corruption (the record says the bytes exist). */
async function readExact(fh: FileHandle, position: number, length: number, path: string): Promise<Buffer> {
  // Every byte is overwritten by the read or the read fails: no need to zero it.
  const buf = takeBuffer(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) {
      throw new FsError(
        'CORRUPT',
        `block file ${path} ends at ${position + done}, record needs ${position + length}`,
      );
    }
    done += bytesRead;
  }
  return buf;
}

async function writeExact(fh: FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    assert(bytesWritten > 0, `write at ${position + done} made no progress`);
    done += bytesWritten;
  }
  assert(done === data.length, 'wrote every byte');
}

function sameRecord(a: BlockRecord | undefined, b: BlockRecord): boolean {
  return (
    !!a && a.length === b.length && a.sums.length === b.sums.length && a.sums.every((x, i) => x === b.sums[i])
  );
}

/** Checks whole chunks `buf` (starting at chunk-aligned `base`) against the record. */
function verifyChunks(buf: Buffer, base: number, rec: BlockRecord, path: string): void {
  assert(base % CHUNK === 0, `chunk-aligned base ${base}`);
  for (let off = 0; off < buf.length; off += CHUNK) {
    const i = (base + off) / CHUNK;
    const end = Math.min(off + CHUNK, buf.length);
    assert(
      base + end === Math.min((i + 1) * CHUNK, rec.length),
      `chunk ${i} read as ${base + off}..${base + end} of ${rec.length}`,
    );
    const sum = chunkSum(buf.subarray(off, end));
    if (sum !== rec.sums[i]) {
      throw new FsError('CORRUPT', `block file ${path} chunk ${i}: xxhash64 ${sum}, record ${rec.sums[i]}`);
    }
  }
}
