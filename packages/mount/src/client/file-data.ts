import {
  blockPg,
  FsError,
  limits,
  pgsOfBlocks,
  SEEK_DATA,
  SEEK_HOLE,
  validateFallocate,
  type wire,
} from '@dunix/proto';
import type { BrickApi } from './brick-api.js';
import { DirtyExtents } from './dirty-extents.js';
import { GRANT_ANY, GRANT_READ, GRANT_WRITE, GrantHolder } from './grant-holder.js';

export interface DataOptions {
  /** Dirty bytes one file may buffer before writes wait for flushes. */
  dirtyPerFileMaxBytes: number;
  /**
   * Dirty bytes all files of this client may buffer: past it a writer sends
   * its own oldest blocks first (random writes to many open files would
   * otherwise hold dirtyPerFileMaxBytes each).
   */
  dirtyTotalMaxBytes: number;
  /** Block writes of one file in flight at once. */
  flushesInflightMax: number;
}

export const dataDefaults: DataOptions = {
  dirtyPerFileMaxBytes: 32 * 1024 * 1024,
  dirtyTotalMaxBytes: 128 * 1024 * 1024,
  flushesInflightMax: 8,
};

/**
 * What one open file handle has heard of its file's failed block writes:
 * each handle is told of every failure once (at its next write, flush, fsync
 * or close), as Linux reports writeback errors to every open file (errseq).
 */
export interface ErrorMark {
  seen: number;
}

/**
 * One file's data as this client sees it while it is open: the attributes
 * from open (close-to-open consistency), inline content for small files, and
 * buffered writes. Writes are collected per block and sent as whole extents
 * to the block's PG; size and mtime are published on the inode's PG at
 * flush, fsync and close. Read-your-writes: a read first flushes.
 */
export class FileData {
  attr: wire.Attr__Output;
  /** Known content of an inline file (undefined: not inline, or not fetched). */
  inlineData: Buffer | undefined;
  private inlineDirty = false;
  /** Largest end offset written here and not yet published. */
  private localEnd = 0n;
  private needsExtend = false;
  /** Data version of the inline content we moved to block 0 and have not yet converted on the server. */
  private pendingConvert: bigint | undefined;
  private killSuidgid = false;
  /** Who wrote last: publishing acts for them (permission was checked at open). */
  private writer: wire.Caller = { uid: 0, gid: 0, groups: [], pid: 0 };
  private readonly dirty = new Map<bigint, DirtyExtents>();
  private dirtyBytes = 0;

  private addDirty(delta: number): void {
    this.dirtyBytes += delta;
    dirtyTotal.bytes += delta;
  }
  /**
   * Blocks written since the last publish and how far (their stored end at
   * least): the Extend that publishes them enters them in the inode's
   * allocation map (st_blocks, SEEK_DATA/SEEK_HOLE).
   */
  private readonly written = new Map<bigint, number>();
  private readonly inflight = new Set<Promise<void>>();
  /** Block writes that failed so far, and the last one's error (see ErrorMark). */
  private errorSeq = 0;
  private lastError: FsError | undefined;
  /** What syncfs has reported. */
  readonly syncfsMark: ErrorMark = { seen: 0 };
  opens = 0;
  /** What the opens of this file allow on its blocks (TLS): every block call carries one. */
  readonly grants = new GrantHolder();
  /** The last name went while open here: reclaim the inode at the last close. */
  reclaimOnClose = false;

  constructor(
    readonly ino: bigint,
    readonly api: BrickApi,
    private readonly pg: number,
    attr: wire.Attr__Output,
    inlineData: Buffer | undefined,
    private readonly o: DataOptions = dataDefaults,
  ) {
    this.attr = attr;
    this.inlineData = attr.inline ? (inlineData ?? Buffer.alloc(0)) : undefined;
  }

  private blockBuffer(bytes: number): Buffer {
    if (bytes !== this.blockSize) return Buffer.allocUnsafe(bytes);
    if (spareBlockSize !== bytes) {
      spareBlockBuffers.length = 0;
      spareBlockSize = bytes;
    }
    return spareBlockBuffers.pop() ?? Buffer.allocUnsafeSlow(bytes);
  }

  get blockSize(): number {
    return this.api.config.blockSizeBytes;
  }

  get inlineMax(): number {
    return this.api.config.inlineMaxBytes;
  }

  /** Size including unpublished writes. */
  get size(): bigint {
    const s = BigInt(this.attr.size);
    return this.localEnd > s ? this.localEnd : s;
  }

  get hasUnpublished(): boolean {
    return (
      this.inlineDirty ||
      this.needsExtend ||
      this.dirty.size > 0 ||
      this.inflight.size > 0 ||
      this.written.size > 0
    );
  }

  /**
   * New attributes from the server (open, getattr, setattr, publish).
   * `inlineData` only when the reply carried the content (Open, GetAttr with
   * want_inline); otherwise a changed data version marks our copy stale.
   */
  refresh(attr: wire.Attr__Output, inlineData?: Buffer): void {
    const changed = attr.dataVersion !== this.attr.dataVersion;
    this.attr = attr;
    if (!attr.inline) this.inlineData = undefined;
    else if (inlineData !== undefined && !this.inlineDirty) this.inlineData = inlineData;
    else if (changed && !this.inlineDirty) this.inlineData = undefined;
  }

  /** Fetches inline content we do not have (or have stale). */
  private async loadInline(): Promise<void> {
    const r = await this.api.read<wire.AttrReply__Output>(this.pg, 'GetAttr', {
      ino: this.ino.toString(),
      wantInline: true,
    });
    this.attr = r.attr!;
    this.inlineData = r.attr!.inline ? r.inlineData : undefined;
  }

  /** A mark for a handle opened now: it hears of the failures from now on. */
  newMark(): ErrorMark {
    return { seen: this.errorSeq };
  }

  async write(
    offset: bigint,
    data: Buffer,
    killSuidgid: boolean,
    writer: wire.Caller,
    mark?: ErrorMark,
  ): Promise<number> {
    this.report(mark);
    this.writer = writer;
    if (killSuidgid) this.killSuidgid = true;
    const end = offset + BigInt(data.length);
    if (this.attr.inline && !this.inlineData) await this.loadInline();
    if (this.attr.inline && this.inlineData && end <= BigInt(this.inlineMax)) {
      const off = Number(offset);
      if (this.inlineData.length < off + data.length) {
        const grown = Buffer.alloc(off + data.length);
        this.inlineData.copy(grown);
        this.inlineData = grown;
      }
      data.copy(this.inlineData, off);
      this.inlineDirty = true;
      if (end > this.localEnd) this.localEnd = end;
      return data.length;
    }
    if (this.attr.inline) await this.leaveInline();
    const bs = BigInt(this.blockSize);
    let pos = offset;
    let at = 0;
    while (at < data.length) {
      const index = pos / bs;
      const inBlock = Number(pos % bs);
      const n = Math.min(data.length - at, this.blockSize - inBlock);
      await this.stage(index, inBlock, data.subarray(at, at + n));
      pos += BigInt(n);
      at += n;
    }
    if (end > this.localEnd) this.localEnd = end;
    this.needsExtend = true;
    while (
      this.dirtyBytes > this.o.dirtyPerFileMaxBytes ||
      (dirtyTotal.bytes > this.o.dirtyTotalMaxBytes && this.dirtyBytes > 0)
    )
      await this.flushSome();
    return data.length;
  }

  private async stage(index: bigint, offset: number, chunk: Buffer): Promise<void> {
    let db = this.dirty.get(index);
    if (!db) {
      db = new DirtyExtents(this.blockSize, (n) => this.blockBuffer(n), releaseBlockBuffer);
      this.dirty.set(index, db);
    }
    this.addDirty(-db.bytes);
    db.add(offset, chunk);
    this.addDirty(db.bytes);
    // A whole block goes at once; so do a block's ranges once they are as many as one write carries.
    if (db.full || db.extents.length >= limits.writeExtentsPerCallMax) this.startFlush(index);
    while (this.inflight.size >= this.o.flushesInflightMax) await Promise.race(this.inflight);
  }

  private startFlush(index: bigint): void {
    const db = this.dirty.get(index);
    if (!db) return;
    this.dirty.delete(index);
    this.addDirty(-db.bytes);
    if (db.extents.length === 0) return;
    const last = db.extents[db.extents.length - 1]!;
    this.written.set(index, Math.max(this.written.get(index) ?? 0, last.start + last.len));
    const pg = blockPg(this.ino, index, this.api.pgCount);
    this.api.changed(pg);
    const views = db.views();
    // One range: its own bytes, no copy. Several: their bytes back to back, and where each goes.
    const body =
      views.length === 1
        ? { offset: db.extents[0]!.start, data: views[0]! }
        : {
            offset: 0,
            data: Buffer.concat(views),
            extents: db.extents.map((x) => ({ offset: x.start, length: x.len })),
          };
    const p: Promise<void> = this.grants
      .get(GRANT_WRITE)
      .then((grant) =>
        this.api.read(pg, 'WriteBlock', {
          ino: this.ino.toString(),
          index: index.toString(),
          ...body,
          grant,
        }),
      )
      .then(
        () => {},
        (err: unknown) => {
          this.lastError = err instanceof FsError ? err : new FsError('IO', String(err));
          this.errorSeq++;
        },
      )
      .finally(() => {
        this.inflight.delete(p);
        // The request has been answered, so its bytes have left the socket: reuse them.
        db.releaseAll();
      });
    this.inflight.add(p);
  }

  private async flushSome(): Promise<void> {
    const first = this.dirty.keys().next();
    if (!first.done) this.startFlush(first.value);
    if (this.inflight.size) await Promise.race(this.inflight);
  }

  /** Throws the last block write failure if `mark`'s handle has not heard of it. */
  private report(mark: ErrorMark | undefined): void {
    if (!mark || mark.seen >= this.errorSeq) return;
    mark.seen = this.errorSeq;
    throw this.lastError!;
  }

  /**
   * The file outgrows inline storage: its content becomes block 0's first
   * bytes (buffered like any write), and the inode is flipped to block mode
   * by the Extend that publishes the writes (one RPC, not two).
   */
  private async leaveInline(): Promise<void> {
    if (!this.inlineData) await this.loadInline();
    if (!this.attr.inline) return;
    const data = this.inlineData ?? Buffer.alloc(0);
    this.pendingConvert = BigInt(this.attr.dataVersion);
    this.attr = { ...this.attr, inline: false };
    this.inlineData = undefined;
    this.inlineDirty = false;
    this.needsExtend = true;
    if (data.length > 0) await this.stage(0n, 0, data);
  }

  /** Moves an inline file's content into block 0 and flips the inode to block mode. */
  private async convertToBlocks(): Promise<void> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const data = this.inlineData ?? Buffer.alloc(0);
      if (data.length > 0) {
        this.api.changed(blockPg(this.ino, 0n, this.api.pgCount));
        await this.api.read(blockPg(this.ino, 0n, this.api.pgCount), 'WriteBlock', {
          ino: this.ino.toString(),
          index: '0',
          offset: 0,
          data,
          grant: await this.grants.get(GRANT_WRITE),
        });
      }
      try {
        const r = await this.api.mutate<wire.AttrReply__Output>(this.pg, 'ConvertInline', {
          ino: this.ino.toString(),
          dataVersion: this.attr.dataVersion,
          grant: await this.grants.get(GRANT_WRITE),
        });
        this.refresh(r.attr!);
        if (this.inlineDirty) this.needsExtend = true;
        this.inlineDirty = false;
        this.inlineData = undefined;
        return;
      } catch (err) {
        if (!(err instanceof FsError) || err.code !== 'CONFLICT') throw err;
        // Another writer changed the inline content: take theirs, reapply ours on top if dirty.
        const r = await this.api.read<wire.AttrReply__Output>(this.pg, 'GetAttr', {
          ino: this.ino.toString(),
        });
        if (!this.inlineDirty) this.inlineData = r.attr!.inline ? r.inlineData : undefined;
        this.attr = r.attr!;
        if (!r.attr!.inline) return;
      }
    }
    throw new FsError('CONFLICT', `inode ${this.ino}: inline conversion kept conflicting`);
  }

  /**
   * Sends every buffered byte and publishes size and mtime. A failed block
   * write is reported to the handle of `mark` if it has not heard of it yet;
   * without a mark (reads, setattr) it is left to the handles.
   *
   * `durable` (fsync): the publish itself asks the inode's PG to sync (Extend
   * with sync) while `syncOthers` syncs every other PG changed, at the same
   * time: an fsync of an append is two round trips (block write; publish and
   * syncs), not three. Resolves to whether that happened (false: nothing to
   * publish here, or a publish of many calls; the caller syncs everything).
   */
  async flush(mark?: ErrorMark, durable?: { syncOthers(except: number): Promise<void> }): Promise<boolean> {
    for (const index of [...this.dirty.keys()]) this.startFlush(index);
    while (this.inflight.size) await Promise.all(this.inflight);
    this.report(mark);
    if (this.inlineDirty) {
      const data = this.inlineData ?? Buffer.alloc(0);
      try {
        const r = await this.api.mutate<wire.AttrReply__Output>(this.pg, 'WriteInline', {
          caller: this.writer,
          ino: this.ino.toString(),
          offset: '0',
          data,
          killSuidgid: this.killSuidgid,
          grant: await this.grants.get(GRANT_WRITE),
        });
        this.inlineDirty = false;
        this.killSuidgid = false;
        this.localEnd = 0n;
        // Our copy is what the server now holds: keep it.
        this.attr = r.attr!;
        return false;
      } catch (err) {
        if (!(err instanceof FsError) || err.code !== 'NOT_INLINE') throw err;
        await this.convertToBlocks();
      }
    }
    if (this.needsExtend || this.written.size > 0) {
      // At most allocExtentsPerCallMax blocks per Extend: the first carries the conversion, the rest follow.
      const extents = [...this.written].map(([index, end]) => ({ index: index.toString(), end }));
      const chunk = limits.allocExtentsPerCallMax;
      const grant = await this.grants.get(GRANT_WRITE);
      const syncing = durable !== undefined && extents.length <= chunk;
      const extend = () =>
        this.api.mutate<wire.AttrReply__Output>(this.pg, 'Extend', {
          caller: this.writer,
          ino: this.ino.toString(),
          end: this.localEnd.toString(),
          killSuidgid: this.killSuidgid,
          fromInline: this.pendingConvert !== undefined,
          dataVersion: (this.pendingConvert ?? 0n).toString(),
          written: extents.slice(0, chunk),
          allocMap: true,
          grant,
          sync: syncing,
        });
      let r: wire.AttrReply__Output;
      try {
        r = syncing ? (await Promise.all([extend(), durable!.syncOthers(this.pg)]))[0] : await extend();
      } catch (err) {
        if (!(err instanceof FsError) || err.code !== 'CONFLICT' || this.pendingConvert === undefined)
          throw err;
        // The inline content changed under us (another client): our block 0 wins, as a later write would.
        const now = await this.api.read<wire.AttrReply__Output>(this.pg, 'GetAttr', {
          ino: this.ino.toString(),
        });
        this.pendingConvert = now.attr!.inline ? BigInt(now.attr!.dataVersion) : undefined;
        r = await extend();
      }
      this.pendingConvert = undefined;
      for (let at = chunk; at < extents.length; at += chunk) {
        r = await this.api.mutate<wire.AttrReply__Output>(this.pg, 'Extend', {
          caller: this.writer,
          ino: this.ino.toString(),
          end: this.localEnd.toString(),
          killSuidgid: false,
          written: extents.slice(at, at + chunk),
          allocMap: true,
          grant,
        });
      }
      for (const e of extents)
        if (this.written.get(BigInt(e.index)) === e.end) this.written.delete(BigInt(e.index));
      this.needsExtend = false;
      this.killSuidgid = false;
      this.localEnd = 0n;
      this.refresh(r.attr!);
      return syncing;
    }
    return false;
  }

  /**
   * Publishes for one who did not write (a read, the close of a read-only
   * handle): a failure is not theirs. The writers hear of it at their next
   * flush or fsync (publishing is retried then).
   */
  async publishForReader(): Promise<void> {
    if (!this.hasUnpublished) return;
    await this.flush().catch((err: unknown) => {
      if (!(err instanceof FsError)) throw err;
    });
  }

  async read(offset: bigint, size: number): Promise<Buffer> {
    // Read-your-writes; if publishing fails, the read returns what the bricks hold.
    await this.publishForReader();
    const fileSize = this.size;
    if (offset >= fileSize || size === 0) return Buffer.alloc(0);
    const n = Number(fileSize - offset < BigInt(size) ? fileSize - offset : BigInt(size));
    if (this.attr.inline) {
      if (this.inlineData) this.api.metrics?.cacheHit('inline');
      else {
        this.api.metrics?.cacheMiss('inline');
        await this.loadInline();
      }
    }
    if (this.attr.inline) {
      const out = Buffer.alloc(n);
      const data = this.inlineData ?? Buffer.alloc(0);
      const off = Number(offset);
      if (off < data.length) data.copy(out, 0, off, Math.min(data.length, off + n));
      return out;
    }
    const bs = BigInt(this.blockSize);
    const first = Number(offset % bs);
    const grant = await this.grants.get(GRANT_READ);
    if (first + n <= this.blockSize) {
      // One block: hand its bytes on as they came (no copy), zero-filled only if short.
      const r = await this.api.read<wire.ReadBlockReply__Output>(
        blockPg(this.ino, offset / bs, this.api.pgCount),
        'ReadBlock',
        { ino: this.ino.toString(), index: (offset / bs).toString(), offset: first, length: n, grant },
      );
      if (r.data.length >= n) return r.data.subarray(0, n);
      const padded = Buffer.alloc(n);
      r.data.copy(padded);
      return padded;
    }
    const out = Buffer.alloc(n);
    const reads: Promise<void>[] = [];
    let pos = offset;
    let at = 0;
    while (at < n) {
      const index = pos / bs;
      const inBlock = Number(pos % bs);
      const len = Math.min(n - at, this.blockSize - inBlock);
      const dest = at;
      reads.push(
        this.api
          .read<wire.ReadBlockReply__Output>(blockPg(this.ino, index, this.api.pgCount), 'ReadBlock', {
            ino: this.ino.toString(),
            index: index.toString(),
            offset: inBlock,
            length: len,
            grant,
          })
          .then((r) => {
            r.data.copy(out, dest, 0, Math.min(r.data.length, len));
          }),
      );
      pos += BigInt(len);
      at += len;
    }
    await Promise.all(reads);
    return out;
  }

  /**
   * fallocate(2): buffered writes are published first; an inline file
   * becomes a block file (its allocation is then counted like any other);
   * the inode's PG does the rest, in calls of at most
   * allocExtentsPerCallMax blocks, each answered once the blocks' PGs have
   * zeroed or freed their part on every copy.
   */
  async fallocate(
    mode: number,
    offset: bigint,
    length: bigint,
    writer: wire.Caller,
    mark?: ErrorMark,
  ): Promise<void> {
    validateFallocate(mode, offset, length);
    this.writer = writer;
    await this.flush(mark);
    await this.toBlocks(mark);
    const bs = BigInt(this.blockSize);
    const span = BigInt(limits.allocExtentsPerCallMax) * bs;
    const end = offset + length;
    for (let pos = offset; pos < end;) {
      const next = (pos / bs) * bs + span < end ? (pos / bs) * bs + span : end;
      for (const pg of pgsOfBlocks(this.ino, pos / bs, (next - 1n) / bs, this.api.pgCount))
        this.api.changed(pg);
      const r = await this.api.mutate<wire.AttrReply__Output>(this.pg, 'Fallocate', {
        caller: writer,
        ino: this.ino.toString(),
        mode,
        offset: pos.toString(),
        length: (next - pos).toString(),
        grant: await this.grants.get(GRANT_WRITE),
      });
      this.refresh(r.attr!);
      pos = next;
    }
  }

  /** An inline file becomes a block file now (its content moves to block 0), published. */
  async toBlocks(mark?: ErrorMark): Promise<void> {
    if (!this.attr.inline) return;
    await this.leaveInline();
    await this.flush(mark);
  }

  /**
   * Bytes the bricks copied into this file (copy_file_range): published
   * with the next flush like this client's own writes (size, mtime, the
   * allocation map).
   */
  noteCopied(extents: ReadonlyMap<bigint, number>, end: bigint, writer: wire.Caller): void {
    this.writer = writer;
    for (const [index, e] of extents) this.written.set(index, Math.max(this.written.get(index) ?? 0, e));
    if (end > this.localEnd) this.localEnd = end;
    this.needsExtend = true;
  }

  /** lseek(2) SEEK_DATA / SEEK_HOLE after publishing what this client wrote. */
  async seek(offset: bigint, whence: number): Promise<bigint> {
    if (whence !== SEEK_DATA && whence !== SEEK_HOLE)
      throw new FsError('INVALID_ARGUMENT', `whence ${whence}`);
    await this.publishForReader();
    if (!this.attr.inline) {
      const r = await this.api.read<wire.SeekReply__Output>(this.pg, 'Seek', {
        ino: this.ino.toString(),
        offset: offset.toString(),
        whence,
        grant: await this.grants.get(GRANT_ANY),
      });
      return BigInt(r.offset);
    }
    if (offset >= this.size) throw new FsError('NO_DATA_AT_OFFSET', `offset ${offset}`);
    return whence === SEEK_DATA ? offset : this.size;
  }

  /** After a truncate to `size`: drop buffered bytes past it and adjust inline content. */
  truncated(size: bigint): void {
    const bs = BigInt(this.blockSize);
    for (const [index, db] of [...this.dirty]) {
      const start = index * bs;
      if (start >= size) {
        this.dirty.delete(index);
        this.addDirty(-db.bytes);
        db.releaseAll();
      } else if (start + BigInt(this.blockSize) > size) {
        this.addDirty(-db.bytes);
        db.truncate(Number(size - start));
        this.addDirty(db.bytes);
      }
    }
    for (const [index, end] of [...this.written]) {
      const start = index * bs;
      if (start >= size) this.written.delete(index);
      else if (start + BigInt(end) > size) this.written.set(index, Number(size - start));
    }
    if (this.localEnd > size) this.localEnd = size;
    if (this.inlineData && this.inlineData.length > Number(size))
      this.inlineData = this.inlineData.subarray(0, Number(size));
  }
}

/**
 * Full-size staging buffers are recycled: a fresh 1 MiB allocation costs
 * page faults (~0.3 ms here), more than the copy into it.
 */
const spareBlockBuffers: Buffer[] = [];
const SPARE_BLOCK_BUFFERS_MAX = 16;

/** Dirty bytes of every file of this process (DataOptions.dirtyTotalMaxBytes). */
const dirtyTotal = { bytes: 0 };

function releaseBlockBuffer(buf: Buffer): void {
  if (buf.length === spareBlockSize && spareBlockBuffers.length < SPARE_BLOCK_BUFFERS_MAX)
    spareBlockBuffers.push(buf);
}
let spareBlockSize = 0;
