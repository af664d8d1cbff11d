/**
 * A FUSE session: reads kernel requests from a channel, calls the backend,
 * writes replies. Several device reads are kept outstanding so requests run
 * concurrently; replies go out in whatever order the backend finishes.
 */
import { readFileSync } from 'node:fs';
import { createLogger, errnoForThrown, errnoOf, FsError, giveBack, type Logger } from '@dunix/proto';
import {
  direntType,
  FATTR,
  FOPEN,
  FUSE_FSYNC_FDATASYNC,
  FUSE_GETATTR_FH,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_LK_FLOCK,
  FUSE_RELEASE_FLOCK_UNLOCK,
  InitFlag,
  NotifyCode,
  Opcode,
  RENAME_EXCHANGE,
  RENAME_NOREPLACE,
  RENAME_WHITEOUT,
  Size,
} from './abi.js';
import type { FuseChannel } from './channel.js';
import {
  type AttrValue,
  direntSize,
  In,
  MalformedRequest,
  Out,
  OutHeader,
  parseRequest,
  type RawRequest,
} from './codec.js';
import {
  type Attr,
  type Caller,
  type DirEntry,
  type Entry,
  type FileLock,
  type FileSystem,
  NEGATIVE_ENTRY,
  type OpenReply,
  type SetAttrChanges,
} from './filesystem.js';
import {
  requestBufferBytes,
  type SessionOptions,
  sessionDefaults,
  threadpoolSizeFor,
  validateSessionOptions,
} from './options.js';

const NS_PER_S = 1_000_000_000n;
/** The interrupt request's unique id has this bit set. */
const INT_REQ_BIT = 1n;
const XATTR_LIST_MAX = 65536;
/** Replies up to this size are assembled into one buffer before writing. */
const SMALL_REPLY_BYTES = 64 * 1024;

export interface NegotiatedInit {
  kernelMinor: number;
  minor: number;
  flags: bigint;
  maxWriteBytes: number;
  maxReadaheadBytes: number;
}

export interface SessionStats {
  requests: number;
  errors: number;
  malformed: number;
  bugs: number;
  inflightMax: number;
}

function splitNs(ns: bigint): { sec: bigint; nsec: number } {
  let sec = ns / NS_PER_S;
  let rem = ns % NS_PER_S;
  if (rem < 0n) {
    rem += NS_PER_S;
    sec -= 1n;
  }
  return { sec, nsec: Number(rem) };
}

function ttl(ms: number): { sec: bigint; nsec: number } {
  return { sec: BigInt(Math.floor(ms / 1000)), nsec: (ms % 1000) * 1_000_000 };
}

export function attrToWire(a: Attr): AttrValue {
  const at = splitNs(a.atimeNs);
  const mt = splitNs(a.mtimeNs);
  const ct = splitNs(a.ctimeNs);
  return {
    ino: a.ino,
    size: a.size,
    blocks: a.blocks,
    atime: at.sec,
    mtime: mt.sec,
    ctime: ct.sec,
    atimensec: at.nsec,
    mtimensec: mt.nsec,
    ctimensec: ct.nsec,
    mode: a.mode,
    nlink: a.nlink,
    uid: a.uid,
    gid: a.gid,
    rdev: a.rdev,
    blksize: a.blksize,
    flags: 0,
  };
}

class RequestCaller implements Caller {
  private cached: readonly number[] | undefined;
  constructor(
    readonly uid: number,
    readonly gid: number,
    readonly pid: number,
  ) {}
  groups(): readonly number[] {
    if (this.cached) return this.cached;
    this.cached = [this.gid];
    if (this.pid > 0) {
      try {
        const status = readFileSync(`/proc/${this.pid}/status`, 'latin1');
        const m = /^Groups:\s*(.*)$/m.exec(status);
        if (m?.[1]) this.cached = m[1].trim().split(/\s+/).filter(Boolean).map(Number);
      } catch {
        // The process already exited: only its primary group is known.
      }
    }
    return this.cached;
  }
}

/** Told of every answered request (metrics); runs on the request path, so it must be cheap. */
export interface RequestObserver {
  requestDone(op: string, startNs: bigint, errno: number, readBytes: number, writtenBytes: number): void;
}

export class FuseSession {
  readonly options: SessionOptions;
  /** Set by the owner to count requests (the client's metrics). */
  observer: RequestObserver | undefined;
  private readonly log: Logger;
  /** Uniques of requests being served. */
  private readonly inflight = new Set<bigint>();
  /** SETLKW requests being served: an INTERRUPT aborts the wait. */
  private readonly waits = new Map<bigint, AbortController>();
  /** Called when the last in-flight request is answered, while the session ends. */
  private onDrained: (() => void) | undefined;
  private readonly spare: Buffer[] = [];
  private readonly bufferBytes: number;
  private readersRunning = 0;
  private stopping = false;
  private init: NegotiatedInit | undefined;
  private resolveClosed!: () => void;
  private destroyed = false;
  /** Resolves once the kernel has ended the session and in-flight requests have been answered. */
  readonly closed: Promise<void>;
  readonly stats: SessionStats = { requests: 0, errors: 0, malformed: 0, bugs: 0, inflightMax: 0 };

  constructor(
    private readonly fs: FileSystem,
    private readonly channel: FuseChannel,
    options: Partial<SessionOptions> = {},
    log?: Logger,
  ) {
    this.options = validateSessionOptions({ ...sessionDefaults, ...options });
    this.bufferBytes = requestBufferBytes(this.options);
    this.log = log ?? createLogger('fuse');
    this.closed = new Promise((r) => {
      this.resolveClosed = r;
    });
  }

  get negotiated(): NegotiatedInit | undefined {
    return this.init;
  }

  /** True once the device has ended (unmounted, aborted, closed): no request arrives any more. */
  get deviceEnded(): boolean {
    return this.stopping;
  }

  /** Starts the device readers. Idempotent. */
  start(): void {
    if (this.readersRunning > 0 || this.stopping) return;
    const pool = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
    if (this.channel.blocksThreads && pool < threadpoolSizeFor(this.options)) {
      // Each device read parks a pool thread; too few threads and file I/O starves.
      throw new Error(
        `UV_THREADPOOL_SIZE=${pool} is too small for ${this.options.readersMax} device readers; ` +
          `start the process with at least ${threadpoolSizeFor(this.options)}`,
      );
    }
    if (this.channel.start) {
      // Push mode: the channel calls us for each request as it is read, on
      // the main thread, without a promise hop in between.
      this.readersRunning = 1;
      this.channel.start({
        message: (msg, release) => {
          const done = this.handle(msg);
          if (release) void done.finally(release);
        },
        end: (err) => {
          if (err && err.code !== 'ENODEV') this.log.error('device read failed; ending session', { err });
          this.stopping = true;
          this.readersRunning = 0;
          void this.finish();
        },
      });
      return;
    }
    const read = this.channel.read?.bind(this.channel);
    if (!read) throw new Error('FUSE channel offers neither start() nor read()');
    for (let i = 0; i < this.options.readersMax; i++) {
      this.readersRunning++;
      void this.readerLoop(read);
    }
  }

  // ---- notifications (kernel cache invalidation) ----

  /** Drops cached attributes and, for the byte range (len 0 = to the end), cached pages of ino. */
  notifyInvalInode(ino: bigint, offset = 0n, length = 0n): Promise<void> {
    return this.notify(NotifyCode.INVAL_INODE, [
      Out.notifyInvalInode.build({ ino, off: offset, len: length }),
    ]);
  }

  /** Drops the cached lookup of name in parent. */
  notifyInvalEntry(parent: bigint, name: Buffer): Promise<void> {
    const head = Out.notifyInvalEntry.build({ parent, namelen: name.length, flags: 0 });
    return this.notify(NotifyCode.INVAL_ENTRY, [head, name, Buffer.alloc(1)]);
  }

  /** Tells the kernel name in parent (which was child) is gone, as if it had unlinked it itself. */
  notifyDelete(parent: bigint, child: bigint, name: Buffer): Promise<void> {
    const head = Out.notifyDelete.build({ parent, child, namelen: name.length });
    return this.notify(NotifyCode.DELETE, [head, name, Buffer.alloc(1)]);
  }

  private notify(code: number, body: Buffer[]): Promise<void> {
    if (!this.init || this.stopping) return Promise.resolve();
    const len = Size.outHeader + body.reduce((s, b) => s + b.length, 0);
    const head = OutHeader.build({ len, error: code, unique: 0n });
    return this.channel.notify([head, ...body]);
  }

  // ---- the read loop ----

  private takeBuffer(): Buffer {
    return this.spare.pop() ?? Buffer.allocUnsafe(this.bufferBytes);
  }

  private giveBuffer(b: Buffer): void {
    if (this.spare.length < this.options.spareBuffersMax) this.spare.push(b);
  }

  private async readerLoop(read: (buf: Buffer) => Promise<number>): Promise<void> {
    try {
      while (!this.stopping) {
        const buf = this.takeBuffer();
        let n: number;
        try {
          n = await read(buf);
        } catch (err) {
          this.giveBuffer(buf);
          const code = (err as NodeJS.ErrnoException).code;
          if (code !== 'ENODEV') this.log.error('device read failed; ending session', { err });
          this.stopping = true;
          break;
        }
        if (n >= Size.inHeader && buf.readUInt32LE(4) === Opcode.WRITE && n > 4096) {
          // Large writes keep their read buffer until answered instead of being copied.
          void this.handle(buf.subarray(0, n)).finally(() => this.giveBuffer(buf));
        } else {
          const msg = Buffer.from(buf.subarray(0, n));
          this.giveBuffer(buf);
          void this.handle(msg);
        }
      }
    } finally {
      this.readersRunning--;
      if (this.readersRunning === 0) void this.finish();
    }
  }

  private async finish(): Promise<void> {
    if (this.inflight.size > 0) {
      await new Promise<void>((r) => {
        this.onDrained = r;
      });
    }
    await this.callDestroy();
    this.channel.close();
    this.resolveClosed();
  }

  private async callDestroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    try {
      await this.fs.destroy?.();
    } catch (err) {
      this.log.error('backend destroy failed', { err });
    }
  }

  /** Handles one message; never throws. Exposed for tests that drive a session without a device. */
  async handle(msg: Buffer): Promise<void> {
    this.stats.requests++;
    let req: RawRequest;
    try {
      req = parseRequest(msg);
    } catch (err) {
      this.stats.malformed++;
      if (err instanceof MalformedRequest) {
        this.log.warn('malformed request', { why: err.message });
        const noReply = err.opcode === 'FORGET' || err.opcode === 'BATCH_FORGET';
        if (err.unique !== undefined && !noReply) this.replyError(err.unique, errnoOf('INVALID_ARGUMENT'));
      } else {
        this.stats.bugs++;
        this.log.error('request parser threw', { err });
      }
      return;
    }
    const unique = req.header.unique;
    if (req.opcode === 'INTERRUPT') {
      this.interrupt(req);
      return;
    }
    if (req.opcode === 'FORGET' || req.opcode === 'BATCH_FORGET') {
      this.forget(req);
      return;
    }
    this.inflight.add(unique);
    if (this.inflight.size > this.stats.inflightMax) this.stats.inflightMax = this.inflight.size;
    const observer = this.observer;
    const startNs = observer ? process.hrtime.bigint() : 0n;
    try {
      const body = await this.dispatch(req);
      observer?.requestDone(
        req.opcode ?? 'UNKNOWN',
        startNs,
        0,
        req.opcode === 'READ' ? (body[0]?.length ?? 0) : 0,
        req.opcode === 'WRITE' ? req.data.length : 0,
      );
      this.reply(unique, body);
      // Replies are written synchronously: pooled block buffers in them are free again.
      for (const b of body) giveBack(b);
    } catch (err) {
      const { errno, bug } = errnoForThrown(err);
      if (bug || err instanceof RangeError) {
        this.stats.bugs++;
        this.log.error('bug while serving request', { op: req.opcode, unique, err });
      } else if (this.log.enabled('debug')) {
        this.log.debug('request failed', { op: req.opcode, errno, msg: (err as Error).message });
      }
      this.stats.errors++;
      observer?.requestDone(req.opcode ?? 'UNKNOWN', startNs, errno, 0, 0);
      this.replyError(unique, errno);
    } finally {
      this.inflight.delete(unique);
      if (this.inflight.size === 0) this.onDrained?.();
    }
  }

  private reply(unique: bigint, body: readonly Buffer[]): void {
    let len = Size.outHeader;
    for (const b of body) len += b.length;
    if (len <= SMALL_REPLY_BYTES) {
      // One contiguous buffer: a plain write(2) instead of writev with an iovec array.
      const out = Buffer.allocUnsafe(len);
      let at = OutHeader.encode({ len, error: 0, unique }, out, 0);
      for (const b of body) at += b.copy(out, at);
      this.write(unique, [out]);
      return;
    }
    const head = OutHeader.build({ len, error: 0, unique });
    this.write(unique, [head, ...body]);
  }

  private replyError(unique: bigint, errno: number): void {
    // The kernel accepts errors in 1..511 only; anything else would be refused.
    if (!(errno > 0 && errno < 512)) errno = errnoOf('IO');
    this.write(unique, [OutHeader.build({ len: Size.outHeader, error: -errno, unique })]);
  }

  /** A reply the kernel refuses is logged, never retried: retrying could answer twice. */
  private write(unique: bigint, parts: Buffer[]): void {
    try {
      this.channel.write(parts);
    } catch (err) {
      this.stats.bugs++;
      this.log.error('kernel refused a reply', { unique, err });
    }
  }

  private interrupt(req: RawRequest): void {
    const target = In.interrupt.decode(req.buf, req.bodyAt).unique;
    const wait = this.waits.get(target);
    if (wait) {
      // A lock wait: the backend gives up and the request is answered EINTR.
      wait.abort();
      return;
    }
    if (this.inflight.has(target)) {
      // Backends finish what they started (only lock waits block indefinitely,
      // above); the reply reaches the interrupted caller. Nothing to do.
      return;
    }
    // Not seen yet (another reader holds it) or already answered: the kernel
    // re-sends the interrupt later if the request is still pending.
    this.replyError(req.header.unique | INT_REQ_BIT, errnoOf('TRY_AGAIN'));
  }

  private forget(req: RawRequest): void {
    if (req.opcode === 'FORGET') {
      this.fs.forget(req.header.nodeid, In.forget.decode(req.buf, req.bodyAt).nlookup);
      return;
    }
    const { count } = In.batchForget.decode(req.buf, req.bodyAt);
    const one = In.forgetOne.size;
    if (req.data.length < count * one) {
      this.stats.malformed++;
      this.log.warn('malformed request', {
        why: `BATCH_FORGET lists ${count} but carries ${req.data.length} bytes`,
      });
    }
    const n = Math.min(count, Math.floor(req.data.length / one));
    for (let i = 0; i < n; i++) {
      const f = In.forgetOne.decode(req.data, i * one);
      this.fs.forget(f.nodeid, f.nlookup);
    }
  }

  // ---- encoders ----

  private entryOut(e: Entry): Buffer {
    const ev = ttl(e.entryTtlMs ?? this.options.entryTtlMs);
    const av = ttl(e.attrTtlMs ?? this.options.attrTtlMs);
    return Out.entry.build({
      nodeid: e.nodeid,
      generation: e.generation ?? 0n,
      entryValid: ev.sec,
      entryValidNsec: ev.nsec,
      attrValid: av.sec,
      attrValidNsec: av.nsec,
      ...attrToWire(e.attr),
    });
  }

  private attrOut(attr: Attr, ttlMs?: number): Buffer {
    const av = ttl(ttlMs ?? this.options.attrTtlMs);
    return Out.attrOut.build({ attrValid: av.sec, attrValidNsec: av.nsec, ...attrToWire(attr) });
  }

  private openOut(o: OpenReply): Buffer {
    let flags = 0;
    if (o.directIo) flags |= FOPEN.DIRECT_IO;
    if (o.keepCache) flags |= FOPEN.KEEP_CACHE;
    if (o.cacheDir) flags |= FOPEN.CACHE_DIR;
    if (o.nonSeekable) flags |= FOPEN.NONSEEKABLE;
    return Out.open.build({ fh: o.fh, openFlags: flags });
  }

  // ---- dispatch ----

  private name(req: RawRequest, i: number): Buffer {
    const n = req.names[i];
    if (!n) throw new FsError('INVALID_ARGUMENT', 'missing name');
    return n;
  }

  private async dispatch(req: RawRequest): Promise<Buffer[]> {
    const h = req.header;
    const fs = this.fs;
    const caller = new RequestCaller(h.uid, h.gid, h.pid);
    const ino = h.nodeid;
    const at = req.bodyAt;
    if (!this.init && req.opcode !== 'INIT') throw new FsError('IO', 'request before INIT');

    switch (req.opcode) {
      case 'INIT':
        return [this.doInit(req)];
      case 'DESTROY':
        await this.callDestroy();
        return [];
      case 'LOOKUP': {
        const e = await fs.lookup(caller, ino, this.name(req, 0));
        if (e === NEGATIVE_ENTRY) {
          if (this.options.negativeTtlMs === 0) throw new FsError('NOT_FOUND');
          const t = ttl(this.options.negativeTtlMs);
          return [Out.entry.build({ nodeid: 0n, entryValid: t.sec, entryValidNsec: t.nsec })];
        }
        return [this.entryOut(e)];
      }
      case 'GETATTR': {
        const b = In.getattr.decode(req.buf, at);
        const r = await fs.getattr(caller, ino, b.getattrFlags & FUSE_GETATTR_FH ? b.fh : undefined);
        return [this.attrOut(r.attr, r.attrTtlMs)];
      }
      case 'SETATTR': {
        const r = await fs.setattr(caller, ino, decodeSetattr(In.setattr.decode(req.buf, at)));
        return [this.attrOut(r.attr, r.attrTtlMs)];
      }
      case 'READLINK':
        return [await fs.readlink(caller, ino)];
      case 'SYMLINK':
        return [this.entryOut(await fs.symlink(caller, ino, this.name(req, 0), this.name(req, 1)))];
      case 'MKNOD': {
        const b = In.mknod.decode(req.buf, at);
        return [this.entryOut(await fs.mknod(caller, ino, this.name(req, 0), b.mode, b.rdev, b.umask))];
      }
      case 'MKDIR': {
        const b = In.mkdir.decode(req.buf, at);
        return [this.entryOut(await fs.mkdir(caller, ino, this.name(req, 0), b.mode, b.umask))];
      }
      case 'UNLINK':
        await fs.unlink(caller, ino, this.name(req, 0));
        return [];
      case 'RMDIR':
        await fs.rmdir(caller, ino, this.name(req, 0));
        return [];
      case 'RENAME':
      case 'RENAME2': {
        let newdir: bigint;
        let flags = 0;
        if (req.opcode === 'RENAME') newdir = In.rename.decode(req.buf, at).newdir;
        else ({ newdir, flags } = In.rename2.decode(req.buf, at));
        const known = RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT;
        if (flags & ~known || (flags & RENAME_NOREPLACE && flags & RENAME_EXCHANGE)) {
          throw new FsError('INVALID_ARGUMENT', `rename flags ${flags}`);
        }
        await fs.rename(caller, ino, this.name(req, 0), newdir, this.name(req, 1), {
          noReplace: (flags & RENAME_NOREPLACE) !== 0,
          exchange: (flags & RENAME_EXCHANGE) !== 0,
          whiteout: (flags & RENAME_WHITEOUT) !== 0,
        });
        return [];
      }
      case 'LINK': {
        const b = In.link.decode(req.buf, at);
        return [this.entryOut(await fs.link(caller, b.oldnodeid, ino, this.name(req, 0)))];
      }
      case 'OPEN':
        return [this.openOut(await fs.open(caller, ino, In.open.decode(req.buf, at).flags))];
      case 'CREATE': {
        const b = In.create.decode(req.buf, at);
        const r = await fs.create(caller, ino, this.name(req, 0), b.mode, b.flags, b.umask);
        return [this.entryOut(r.entry), this.openOut(r.open)];
      }
      case 'TMPFILE': {
        if (!fs.tmpfile) throw new FsError('UNIMPLEMENTED');
        const b = In.create.decode(req.buf, at);
        const r = await fs.tmpfile(caller, ino, b.mode, b.flags, b.umask);
        return [this.entryOut(r.entry), this.openOut(r.open)];
      }
      case 'READ': {
        const b = In.read.decode(req.buf, at);
        if (b.size > this.options.maxWriteBytes * 2)
          throw new FsError('INVALID_ARGUMENT', `read of ${b.size} bytes`);
        const data = await fs.read(caller, ino, b.fh, b.offset, b.size);
        return [data.length > b.size ? data.subarray(0, b.size) : data];
      }
      case 'WRITE': {
        const b = In.write.decode(req.buf, at);
        const data = req.data;
        if (data.length !== b.size) {
          throw new FsError('INVALID_ARGUMENT', `WRITE says ${b.size} bytes, carries ${data.length}`);
        }
        const n = await fs.write(caller, ino, b.fh, b.offset, data, b.flags);
        return [Out.write.build({ size: n })];
      }
      case 'FLUSH': {
        if (!fs.flush) throw new FsError('UNIMPLEMENTED');
        const b = In.flush.decode(req.buf, at);
        await fs.flush(caller, ino, b.fh, b.lockOwner);
        return [];
      }
      case 'RELEASE': {
        const b = In.release.decode(req.buf, at);
        if (this.options.locks && b.releaseFlags & FUSE_RELEASE_FLOCK_UNLOCK)
          await fs.release(caller, ino, b.fh, b.flags, { owner: b.lockOwner, flock: true });
        else await fs.release(caller, ino, b.fh, b.flags);
        return [];
      }
      case 'FSYNC': {
        const b = In.fsync.decode(req.buf, at);
        await fs.fsync(caller, ino, b.fh, (b.fsyncFlags & FUSE_FSYNC_FDATASYNC) !== 0);
        return [];
      }
      case 'OPENDIR':
        return [this.openOut(await fs.opendir(caller, ino, In.open.decode(req.buf, at).flags))];
      case 'READDIR':
      case 'READDIRPLUS':
        return [await this.readdir(req, caller)];
      case 'RELEASEDIR':
        await fs.releasedir(caller, ino, In.release.decode(req.buf, at).fh);
        return [];
      case 'FSYNCDIR': {
        const b = In.fsync.decode(req.buf, at);
        await fs.fsyncdir(caller, ino, b.fh, (b.fsyncFlags & FUSE_FSYNC_FDATASYNC) !== 0);
        return [];
      }
      case 'STATFS': {
        const s = await fs.statfs(caller, ino);
        return [Out.statfs.build(s)];
      }
      case 'SETXATTR': {
        const b = In.setxattr.decode(req.buf, at);
        if (req.data.length < b.size) throw new FsError('INVALID_ARGUMENT', 'xattr value truncated');
        await fs.setxattr(caller, ino, this.name(req, 0), req.data.subarray(0, b.size), b.flags);
        return [];
      }
      case 'GETXATTR': {
        const { size } = In.getxattr.decode(req.buf, at);
        const value = await fs.getxattr(caller, ino, this.name(req, 0));
        return sizedReply(value, size);
      }
      case 'LISTXATTR': {
        const { size } = In.getxattr.decode(req.buf, at);
        const names = await fs.listxattr(caller, ino);
        const list = Buffer.concat(names.flatMap((n) => [n, Buffer.alloc(1)]));
        if (list.length > XATTR_LIST_MAX) throw new FsError('RANGE_TOO_SMALL', 'xattr list over 64 KiB');
        return sizedReply(list, size);
      }
      case 'REMOVEXATTR':
        await fs.removexattr(caller, ino, this.name(req, 0));
        return [];
      case 'ACCESS': {
        if (!fs.access) throw new FsError('UNIMPLEMENTED');
        await fs.access(caller, ino, In.access.decode(req.buf, at).mask);
        return [];
      }
      case 'FALLOCATE': {
        if (!fs.fallocate) throw new FsError('NOT_SUPPORTED');
        const b = In.fallocate.decode(req.buf, at);
        await fs.fallocate(caller, ino, b.fh, b.offset, b.length, b.mode);
        return [];
      }
      case 'LSEEK': {
        if (!fs.lseek) throw new FsError('UNIMPLEMENTED');
        const b = In.lseek.decode(req.buf, at);
        return [Out.lseek.build({ offset: await fs.lseek(caller, ino, b.fh, b.offset, b.whence) })];
      }
      case 'COPY_FILE_RANGE': {
        if (!fs.copyFileRange) throw new FsError('UNIMPLEMENTED');
        const b = In.copyFileRange.decode(req.buf, at);
        const n = await fs.copyFileRange(
          caller,
          ino,
          b.fhIn,
          b.offIn,
          b.nodeidOut,
          b.fhOut,
          b.offOut,
          b.len,
          Number(b.flags),
        );
        return [Out.write.build({ size: n })];
      }
      case 'SYNCFS':
        await fs.syncfs?.(caller);
        return [];
      case 'GETLK': {
        if (!fs.getlk || !this.options.locks) throw new FsError('UNIMPLEMENTED');
        const b = In.lk.decode(req.buf, at);
        const r = await fs.getlk(caller, ino, b.fh, lockOf(b));
        return [Out.lk.build({ start: r.start, end: r.end, type: r.type, pid: r.pid })];
      }
      case 'SETLK':
      case 'SETLKW': {
        if (!fs.setlk || !this.options.locks) throw new FsError('UNIMPLEMENTED');
        const b = In.lk.decode(req.buf, at);
        const wait = req.opcode === 'SETLKW';
        const abort = new AbortController();
        if (wait) this.waits.set(h.unique, abort);
        try {
          await fs.setlk(caller, ino, b.fh, lockOf(b), wait, abort.signal);
        } finally {
          if (wait) this.waits.delete(h.unique);
        }
        return [];
      }
      // Without the `locks` option the kernel keeps locks itself and sends none of these.
      default:
        throw new FsError('UNIMPLEMENTED', `opcode ${req.opcode ?? h.opcode}`);
    }
  }

  private doInit(req: RawRequest): Buffer {
    // Older kernels send a shorter fuse_init_in; the fields they lack read as zero.
    const body = Buffer.alloc(In.init.size);
    req.buf.copy(body, 0, req.bodyAt, Math.min(req.buf.length, req.bodyAt + In.init.size));
    const k = In.init.decode(body, 0);
    if (k.major < FUSE_KERNEL_VERSION)
      throw new FsError('NOT_SUPPORTED', `kernel FUSE ${k.major}.${k.minor}`);
    if (k.major > FUSE_KERNEL_VERSION) {
      // The kernel answers a lower major by sending INIT again at our major.
      return Out.init.build({ major: FUSE_KERNEL_VERSION, minor: FUSE_KERNEL_MINOR_VERSION });
    }
    let offered = BigInt(k.flags);
    if (offered & InitFlag.INIT_EXT) offered |= BigInt(k.flags2) << 32n;
    let want =
      InitFlag.ASYNC_READ |
      InitFlag.BIG_WRITES |
      InitFlag.MAX_PAGES |
      InitFlag.DO_READDIRPLUS |
      InitFlag.READDIRPLUS_AUTO |
      InitFlag.PARALLEL_DIROPS |
      InitFlag.AUTO_INVAL_DATA |
      InitFlag.CACHE_SYMLINKS |
      InitFlag.ASYNC_DIO |
      InitFlag.ABORT_ERROR |
      InitFlag.INIT_EXT |
      InitFlag.HAS_EXPIRE_ONLY;
    if (this.options.writebackCache) want |= InitFlag.WRITEBACK_CACHE;
    // DONT_MASK too: else the kernel applies the umask itself, also under a default ACL.
    if (this.options.posixAcl) want |= InitFlag.POSIX_ACL | InitFlag.DONT_MASK;
    if (this.options.exportSupport) want |= InitFlag.EXPORT_SUPPORT;
    if (this.options.locks) want |= InitFlag.POSIX_LOCKS | InitFlag.FLOCK_LOCKS;
    const flags = want & offered;
    const minor = Math.min(k.minor, FUSE_KERNEL_MINOR_VERSION);
    const maxReadahead = Math.min(k.maxReadahead, this.options.maxReadaheadBytes);
    this.init = {
      kernelMinor: k.minor,
      minor,
      flags,
      maxWriteBytes: this.options.maxWriteBytes,
      maxReadaheadBytes: maxReadahead,
    };
    this.log.info('session initialised', {
      kernel: `${k.major}.${k.minor}`,
      minor,
      flags: `0x${flags.toString(16)}`,
      maxWriteBytes: this.options.maxWriteBytes,
    });
    void Promise.resolve(this.fs.init?.()).catch((err) => this.log.error('backend init failed', { err }));
    return Out.init.build({
      major: FUSE_KERNEL_VERSION,
      minor,
      maxReadahead,
      flags: Number(flags & 0xffffffffn),
      flags2: Number(flags >> 32n),
      maxBackground: this.options.maxBackground,
      congestionThreshold: this.options.congestionThreshold,
      maxWrite: this.options.maxWriteBytes,
      timeGran: 1,
      maxPages: this.options.maxWriteBytes / 4096,
    });
  }

  private async readdir(req: RawRequest, caller: Caller): Promise<Buffer> {
    const plus = req.opcode === 'READDIRPLUS';
    const b = In.read.decode(req.buf, req.bodyAt);
    const size = Math.min(b.size, this.options.maxWriteBytes);
    const out = Buffer.alloc(size);
    let used = 0;
    const fill = (e: DirEntry): boolean => {
      const need = direntSize(e.name.length, plus);
      if (used + need > size) return false;
      let at = used;
      if (plus) {
        if (e.entry) this.entryOut(e.entry).copy(out, at);
        else out.fill(0, at, at + Out.entry.size);
        at += Out.entry.size;
      }
      at = Out.dirent.encode(
        { ino: e.ino, off: e.nextOffset, namelen: e.name.length, type: direntType(e.mode) },
        out,
        at,
      );
      e.name.copy(out, at);
      used += need;
      return true;
    };
    await this.fs.readdir(caller, req.header.nodeid, b.fh, b.offset, plus, fill);
    return out.subarray(0, used);
  }
}

function lockOf(b: ReturnType<typeof In.lk.decode>): FileLock {
  return {
    owner: b.owner,
    start: b.start,
    end: b.end,
    type: b.type,
    pid: b.pid,
    flock: (b.lkFlags & FUSE_LK_FLOCK) !== 0,
  };
}

function sizedReply(value: Buffer, size: number): Buffer[] {
  if (size === 0) return [Out.getxattr.build({ size: value.length })];
  if (value.length > size) throw new FsError('RANGE_TOO_SMALL');
  return [value];
}

export function decodeSetattr(s: ReturnType<typeof In.setattr.decode>): SetAttrChanges {
  const c: SetAttrChanges = {};
  if (s.valid & FATTR.MODE) c.mode = s.mode;
  if (s.valid & FATTR.UID) c.uid = s.uid;
  if (s.valid & FATTR.GID) c.gid = s.gid;
  if (s.valid & FATTR.SIZE) c.size = s.size;
  if (s.valid & FATTR.ATIME) c.atimeNs = s.valid & FATTR.ATIME_NOW ? 'now' : toNs(s.atime, s.atimensec);
  if (s.valid & FATTR.MTIME) c.mtimeNs = s.valid & FATTR.MTIME_NOW ? 'now' : toNs(s.mtime, s.mtimensec);
  if (s.valid & FATTR.CTIME) c.ctimeNs = toNs(s.ctime, s.ctimensec);
  if (s.valid & FATTR.FH) c.fh = s.fh;
  if (s.valid & FATTR.KILL_SUIDGID) c.killSuidgid = true;
  return c;
}

function toNs(sec: bigint, nsec: number): bigint {
  return BigInt.asIntN(64, sec) * NS_PER_S + BigInt(nsec);
}
