/**
 * FuseSession driven without a device: an in-memory channel plays the kernel
 * and an in-memory backend records what the session asks of it.
 */
import { constants } from 'node:os';
import { createLogger, FsError, OsError } from '@dunix/proto';
import fc from 'fast-check';
import t from 'tap';
import {
  FATTR,
  FOPEN,
  FUSE_FSYNC_FDATASYNC,
  FUSE_GETATTR_FH,
  InitFlag,
  NotifyCode,
  Opcode,
  RENAME_EXCHANGE,
  RENAME_NOREPLACE,
  RENAME_WHITEOUT,
  XATTR_CREATE,
} from '../src/fuse/abi.js';
import type { FuseChannel } from '../src/fuse/channel.js';
import { In, InHeader, Out, OutHeader } from '../src/fuse/codec.js';
import {
  type Attr,
  type AttrReply,
  type Caller,
  type CreateReply,
  type DirEntry,
  type DirFiller,
  type Entry,
  type FileSystem,
  NEGATIVE_ENTRY,
  type OpenReply,
  type RenameFlags,
  type SetAttrChanges,
  type StatFs,
} from '../src/fuse/filesystem.js';
import type { SessionOptions } from '../src/fuse/options.js';
import { FuseSession } from '../src/fuse/session.js';

const E = constants.errno;
const MiB = 1024 * 1024;

// ---- the fake kernel side ----

class FakeChannel implements FuseChannel {
  readonly written: Buffer[] = [];
  readonly notified: Buffer[] = [];
  readonly events: string[] = [];
  closeCount = 0;
  private readonly queue: Buffer[] = [];
  private readonly waiters: { buf: Buffer; resolve: (n: number) => void; reject: (e: Error) => void }[] = [];
  private readError: Error | undefined;

  constructor(readonly blocksThreads = false) {}

  /** Queues one message for the session's readers. */
  push(msg: Buffer): void {
    const w = this.waiters.shift();
    if (w) {
      msg.copy(w.buf);
      w.resolve(msg.length);
    } else this.queue.push(msg);
  }

  /** Unmount: once the queue is drained every read fails with code. */
  end(code = 'ENODEV'): void {
    this.readError = Object.assign(new Error(`read: ${code}`), { code });
    for (const w of this.waiters.splice(0)) w.reject(this.readError);
  }

  read(buf: Buffer): Promise<number> {
    const m = this.queue.shift();
    if (m) {
      m.copy(buf);
      return Promise.resolve(m.length);
    }
    if (this.readError) return Promise.reject(this.readError);
    return new Promise((resolve, reject) => this.waiters.push({ buf, resolve, reject }));
  }

  write(parts: readonly Buffer[]): boolean {
    this.written.push(Buffer.concat(parts));
    this.events.push('write');
    return true;
  }

  notify(parts: readonly Buffer[]): Promise<void> {
    this.notified.push(Buffer.concat(parts));
    this.events.push('notify');
    return Promise.resolve();
  }

  close(): void {
    this.closeCount++;
    this.events.push('close');
  }
}

// ---- the fake backend ----

const BIG = 0x8000000000000000n;

function attrOf(ino: bigint, mode = 0o100644): Attr {
  return {
    ino,
    size: 0x0020000000000005n,
    blocks: 9n,
    atimeNs: 1_700_000_000_123_456_789n,
    mtimeNs: -1n,
    ctimeNs: 5_000_000_007n,
    mode,
    nlink: 3,
    uid: 1001,
    gid: 1002,
    rdev: 0x00800001,
    blksize: 4096,
  };
}

function entryOf(nodeid: bigint, mode = 0o100644): Entry {
  return { nodeid, generation: 7n, attr: attrOf(nodeid + 1000n, mode), entryTtlMs: 1500 };
}

const STATFS: StatFs = {
  blocks: BIG | 1n,
  bfree: 2n,
  bavail: 3n,
  files: 4n,
  ffree: 5n,
  bsize: 4096,
  namelen: 255,
  frsize: 512,
};

type Call = [op: string, ...args: unknown[]];

class MemFs implements FileSystem {
  readonly calls: Call[] = [];
  readonly forgets: [bigint, bigint][] = [];
  readonly fillResults: boolean[] = [];
  readonly log: string[];
  destroyed = 0;
  inited = 0;
  lastCaller: Caller | undefined;
  lastLookupName: Buffer | undefined;
  xattrs = new Map<string, Buffer>([
    ['user.a', Buffer.from('value-a')],
    ['user.bb', Buffer.from('0123456789')],
  ]);
  dir: DirEntry[] = [
    { name: Buffer.from('.'), ino: 1n, mode: 0o040755, nextOffset: 1n },
    { name: Buffer.from('file'), ino: BIG | 2n, mode: 0o100644, nextOffset: 2n, entry: entryOf(BIG | 2n) },
    {
      name: Buffer.from('subdirectory'),
      ino: 3n,
      mode: 0o040700,
      nextOffset: 3n,
      entry: entryOf(3n, 0o040700),
    },
    { name: Buffer.from('l'), ino: 4n, mode: 0o120777, nextOffset: 4n, entry: entryOf(4n, 0o120777) },
  ];

  constructor(log: string[] = []) {
    this.log = log;
  }

  private rec(op: string, caller: Caller | undefined, ...args: unknown[]): void {
    this.calls.push([op, ...args]);
    if (caller) this.lastCaller = caller;
  }
  /** Arguments (without the caller) of the last call of op. */
  args(op: string): unknown[] | undefined {
    return this.calls.findLast((c) => c[0] === op)?.slice(1);
  }
  count(op: string): number {
    return this.calls.filter((c) => c[0] === op).length;
  }

  init(): void {
    this.inited++;
  }
  destroy(): void {
    this.destroyed++;
    this.log.push('destroy');
  }
  async lookup(caller: Caller, parent: bigint, name: Buffer): Promise<Entry | typeof NEGATIVE_ENTRY> {
    this.rec('lookup', caller, parent, name.toString());
    this.lastLookupName = Buffer.from(name);
    switch (name.toString()) {
      case 'missing':
        throw new FsError('NOT_FOUND');
      case 'eacces':
        throw Object.assign(new Error('denied by the OS'), { code: 'EACCES' });
      case 'oserror':
        throw new OsError(E.ENOTCONN!);
      case 'bug':
        throw new Error('a bug in the backend');
      case 'typeerror':
        throw new TypeError('x is undefined');
      case 'negative':
        return NEGATIVE_ENTRY;
      default:
        return entryOf(BIG | 0x10n);
    }
  }
  forget(ino: bigint, nlookup: bigint): void {
    this.forgets.push([ino, nlookup]);
  }
  async getattr(caller: Caller, ino: bigint, fh: bigint | undefined): Promise<AttrReply> {
    this.rec('getattr', caller, ino, fh);
    return { attr: attrOf(ino), attrTtlMs: 250 };
  }
  async setattr(caller: Caller, ino: bigint, changes: SetAttrChanges): Promise<AttrReply> {
    this.rec('setattr', caller, ino, changes);
    return { attr: { ...attrOf(ino), mode: changes.mode ?? 0o100644 } };
  }
  async readlink(caller: Caller, ino: bigint): Promise<Buffer> {
    this.rec('readlink', caller, ino);
    return Buffer.from('../some/target');
  }
  async symlink(caller: Caller, parent: bigint, name: Buffer, target: Buffer): Promise<Entry> {
    this.rec('symlink', caller, parent, name.toString(), target.toString());
    return entryOf(20n, 0o120777);
  }
  async mknod(
    caller: Caller,
    parent: bigint,
    name: Buffer,
    mode: number,
    rdev: number,
    umask: number,
  ): Promise<Entry> {
    this.rec('mknod', caller, parent, name.toString(), mode, rdev, umask);
    return entryOf(21n, mode);
  }
  async mkdir(caller: Caller, parent: bigint, name: Buffer, mode: number, umask: number): Promise<Entry> {
    this.rec('mkdir', caller, parent, name.toString(), mode, umask);
    return entryOf(22n, 0o040000 | mode);
  }
  async unlink(caller: Caller, parent: bigint, name: Buffer): Promise<void> {
    this.rec('unlink', caller, parent, name.toString());
  }
  async rmdir(caller: Caller, parent: bigint, name: Buffer): Promise<void> {
    this.rec('rmdir', caller, parent, name.toString());
  }
  async rename(
    caller: Caller,
    parent: bigint,
    name: Buffer,
    newParent: bigint,
    newName: Buffer,
    flags: RenameFlags,
  ): Promise<void> {
    this.rec('rename', caller, parent, name.toString(), newParent, newName.toString(), flags);
  }
  async link(caller: Caller, ino: bigint, newParent: bigint, newName: Buffer): Promise<Entry> {
    this.rec('link', caller, ino, newParent, newName.toString());
    return entryOf(ino);
  }
  async open(caller: Caller, ino: bigint, flags: number): Promise<OpenReply> {
    this.rec('open', caller, ino, flags);
    return { fh: BIG | 0x1234n, directIo: true, keepCache: true };
  }
  async create(
    caller: Caller,
    parent: bigint,
    name: Buffer,
    mode: number,
    flags: number,
    umask: number,
  ): Promise<CreateReply> {
    this.rec('create', caller, parent, name.toString(), mode, flags, umask);
    return { entry: entryOf(23n, mode), open: { fh: 0x5678n, nonSeekable: true } };
  }
  async read(caller: Caller, ino: bigint, fh: bigint, offset: bigint, size: number): Promise<Buffer> {
    this.rec('read', caller, ino, fh, offset, size);
    // Deliberately more than asked: the session must not send more than size.
    return Buffer.alloc(Math.min(size, 65536) + 3, 0x61);
  }
  async write(
    caller: Caller,
    ino: bigint,
    fh: bigint,
    offset: bigint,
    data: Buffer,
    flags: number,
  ): Promise<number> {
    this.rec('write', caller, ino, fh, offset, Buffer.from(data), flags);
    return data.length;
  }
  async flush(caller: Caller, ino: bigint, fh: bigint, lockOwner: bigint): Promise<void> {
    this.rec('flush', caller, ino, fh, lockOwner);
  }
  async release(caller: Caller, ino: bigint, fh: bigint, flags: number): Promise<void> {
    this.rec('release', caller, ino, fh, flags);
  }
  async fsync(caller: Caller, ino: bigint, fh: bigint, dataOnly: boolean): Promise<void> {
    this.rec('fsync', caller, ino, fh, dataOnly);
  }
  async opendir(caller: Caller, ino: bigint, flags: number): Promise<OpenReply> {
    this.rec('opendir', caller, ino, flags);
    return { fh: 0x77n, cacheDir: true };
  }
  async readdir(
    caller: Caller,
    ino: bigint,
    fh: bigint,
    offset: bigint,
    plus: boolean,
    fill: DirFiller,
  ): Promise<void> {
    this.rec('readdir', caller, ino, fh, offset, plus);
    for (let i = Number(offset < 1000n ? offset : 1000n); i < this.dir.length; i++) {
      const ok = fill(this.dir[i]!);
      this.fillResults.push(ok);
      if (!ok) break;
    }
  }
  async releasedir(caller: Caller, ino: bigint, fh: bigint): Promise<void> {
    this.rec('releasedir', caller, ino, fh);
  }
  async fsyncdir(caller: Caller, ino: bigint, fh: bigint, dataOnly: boolean): Promise<void> {
    this.rec('fsyncdir', caller, ino, fh, dataOnly);
  }
  async statfs(caller: Caller, ino: bigint): Promise<StatFs> {
    this.rec('statfs', caller, ino);
    return STATFS;
  }
  async setxattr(caller: Caller, ino: bigint, name: Buffer, value: Buffer, flags: number): Promise<void> {
    this.rec('setxattr', caller, ino, name.toString(), value.toString(), flags);
  }
  async getxattr(caller: Caller, ino: bigint, name: Buffer): Promise<Buffer> {
    this.rec('getxattr', caller, ino, name.toString());
    const v = this.xattrs.get(name.toString());
    if (!v) throw new FsError('NO_XATTR');
    return v;
  }
  async listxattr(caller: Caller, ino: bigint): Promise<Buffer[]> {
    this.rec('listxattr', caller, ino);
    return [...this.xattrs.keys()].map((k) => Buffer.from(k));
  }
  async removexattr(caller: Caller, ino: bigint, name: Buffer): Promise<void> {
    this.rec('removexattr', caller, ino, name.toString());
  }
  async access(caller: Caller, ino: bigint, mask: number): Promise<void> {
    this.rec('access', caller, ino, mask);
  }
  async fallocate(
    caller: Caller,
    ino: bigint,
    fh: bigint,
    offset: bigint,
    length: bigint,
    mode: number,
  ): Promise<void> {
    this.rec('fallocate', caller, ino, fh, offset, length, mode);
  }
  async lseek(caller: Caller, ino: bigint, fh: bigint, offset: bigint, whence: number): Promise<bigint> {
    this.rec('lseek', caller, ino, fh, offset, whence);
    return offset + 100n;
  }
  async copyFileRange(
    caller: Caller,
    inoIn: bigint,
    fhIn: bigint,
    offIn: bigint,
    inoOut: bigint,
    fhOut: bigint,
    offOut: bigint,
    length: bigint,
    flags: number,
  ): Promise<number> {
    this.rec('copyFileRange', caller, inoIn, fhIn, offIn, inoOut, fhOut, offOut, length, flags);
    return Number(length & 0xffffn);
  }
  async syncfs(caller: Caller): Promise<void> {
    this.rec('syncfs', caller);
  }
}

/** A backend with only the required methods: the optional ones are absent. */
function withoutOptional(fs: MemFs): MemFs {
  return Object.assign(fs, {
    access: undefined,
    fallocate: undefined,
    lseek: undefined,
    copyFileRange: undefined,
    syncfs: undefined,
    flush: undefined,
  });
}

// ---- messages ----

let nextUnique = 0x4000000000000000n;
const newUnique = () => {
  nextUnique += 2n;
  return nextUnique;
};

interface Req {
  unique?: bigint;
  nodeid?: bigint;
  body?: Buffer;
  names?: (string | Buffer)[];
  data?: Buffer;
}

function request(opcode: number, r: Req = {}): { unique: bigint; msg: Buffer } {
  const unique = r.unique ?? newUnique();
  const parts: Buffer[] = [];
  if (r.body) parts.push(r.body);
  for (const n of r.names ?? []) parts.push(Buffer.from(n), Buffer.alloc(1));
  if (r.data) parts.push(r.data);
  const rest = Buffer.concat(parts);
  const head = InHeader.build({
    len: 40 + rest.length,
    opcode,
    unique,
    nodeid: r.nodeid ?? 1n,
    uid: 1001,
    gid: 1002,
    pid: 0, // 0: the caller's groups are never looked up in /proc
  });
  return { unique, msg: Buffer.concat([head, rest]) };
}

function initRequest(
  over: Partial<{ major: number; minor: number; maxReadahead: number; flags: number; flags2: number }> = {},
) {
  return request(Opcode.INIT, {
    body: In.init.build({ major: 7, minor: 38, maxReadahead: 128 * 1024, flags: 0, flags2: 0, ...over }),
  });
}

interface Reply {
  len: number;
  error: number;
  unique: bigint;
  body: Buffer;
  raw: Buffer;
}

function decodeReply(raw: Buffer): Reply {
  const h = OutHeader.decode(raw, 0);
  return { ...h, body: raw.subarray(16), raw };
}

const silent = createLogger('fuse-test', () => {});

interface Harness {
  s: FuseSession;
  ch: FakeChannel;
  fs: MemFs;
  logLines: string[];
  /** Handles one message and returns the one reply it produced (throws if not exactly one). */
  ask(opcode: number, r?: Req): Promise<Reply & { sent: bigint }>;
  /** Handles one message and returns all replies it produced. */
  send(msg: Buffer): Promise<Reply[]>;
}

async function setup(
  opts: Partial<SessionOptions> & { init?: boolean; fs?: MemFs; initFlags?: number } = {},
): Promise<Harness> {
  const { init = true, fs = new MemFs(), initFlags = 0xffffffff, ...options } = opts;
  const ch = new FakeChannel();
  const logLines: string[] = [];
  const log = createLogger('fuse-test', (l) => logLines.push(l));
  const s = new FuseSession(fs, ch, options, log);
  const send = async (msg: Buffer) => {
    const before = ch.written.length;
    await s.handle(msg);
    return ch.written.slice(before).map(decodeReply);
  };
  const ask = async (opcode: number, r: Req = {}) => {
    const q = request(opcode, r);
    const replies = await send(q.msg);
    if (replies.length !== 1) throw new Error(`opcode ${opcode}: ${replies.length} replies`);
    const rep = replies[0]!;
    if (rep.len !== rep.raw.length) throw new Error(`reply len ${rep.len} but ${rep.raw.length} bytes`);
    return { ...rep, sent: q.unique };
  };
  if (init) {
    const [r] = await send(initRequest({ flags: initFlags, flags2: 0xffffffff }).msg);
    if (r?.error !== 0) throw new Error('INIT failed');
  }
  return { s, ch, fs, logLines, ask, send };
}

function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const tick = () => new Promise((r) => setImmediate(r));
async function until(cond: () => boolean, what: string, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

const decodeEntry = (b: Buffer, at = 0) => Out.entry.decode(b, at);
const u64 = (x: bigint) => BigInt.asUintN(64, x);

// ---- INIT ----

t.test('INIT negotiation', async (t) => {
  t.test('kernel offers every flag', async (t) => {
    const h = await setup({ init: false });
    const q = initRequest({ minor: 45, maxReadahead: 256 * 1024, flags: 0xffffffff, flags2: 0xffffffff });
    const [r, ...more] = await h.send(q.msg);
    t.equal(more.length, 0, 'one reply');
    t.ok(r);
    if (!r) return;
    t.equal(r.unique, q.unique, 'unique');
    t.equal(r.error, 0);
    t.equal(r.len, 16 + 64, 'out header + fuse_init_out');
    t.equal(r.raw.length, 80);
    const o = Out.init.decode(r.body, 0);
    t.equal(o.major, 7, 'major');
    t.equal(o.minor, 38, 'minor = min(kernel 45, 38)');
    t.equal(o.maxWrite, MiB, 'max_write 1 MiB');
    t.equal(o.maxPages, 256, 'max_pages');
    t.equal(o.timeGran, 1, 'time_gran');
    t.equal(o.maxReadahead, 256 * 1024, 'max_readahead: what the kernel offers, under our cap');
    t.equal(o.maxBackground, 64);
    t.equal(o.congestionThreshold, 48);
    const flags = BigInt(o.flags) | (BigInt(o.flags2) << 32n);
    for (const f of ['ASYNC_READ', 'BIG_WRITES', 'MAX_PAGES', 'DO_READDIRPLUS', 'INIT_EXT'] as const) {
      t.ok(flags & InitFlag[f], `${f} accepted`);
    }
    for (const f of [
      'POSIX_LOCKS',
      'FLOCK_LOCKS',
      'WRITEBACK_CACHE',
      'SPLICE_READ',
      'SPLICE_WRITE',
      'SPLICE_MOVE',
      'SETXATTR_EXT',
      'SECURITY_CTX',
      'HAS_INODE_DAX',
      'DONT_MASK',
      'POSIX_ACL',
    ] as const) {
      t.notOk(flags & InitFlag[f], `${f} not requested`);
    }
    t.equal(o.flags2, Number(InitFlag.HAS_EXPIRE_ONLY >> 32n), 'flags2 holds only HAS_EXPIRE_ONLY');
    t.strictSame(
      h.s.negotiated,
      { kernelMinor: 45, minor: 38, flags, maxWriteBytes: MiB, maxReadaheadBytes: 256 * 1024 },
      'negotiated',
    );
    await tick();
    t.equal(h.fs.inited, 1, 'backend init called');
  });

  t.test('every flag we reply with was offered', async (t) => {
    for (const offered of [
      0x1,
      0x20,
      0x400000,
      0x2000,
      0x2000 | 0x20 | 0x1,
      0x40000000,
      0xaaaaaaaa,
      0x55555555,
    ]) {
      const h = await setup({ init: false });
      const [r] = await h.send(initRequest({ flags: offered, flags2: 0xffffffff }).msg);
      const o = Out.init.decode(r!.body, 0);
      t.equal((o.flags & ~offered) >>> 0, 0, `flags within 0x${offered.toString(16)}`);
      if (!(offered & Number(InitFlag.INIT_EXT))) t.equal(o.flags2, 0, 'no flags2 without INIT_EXT');
    }
  });

  t.test('kernel offers nothing', async (t) => {
    const h = await setup({ init: false });
    // (The body is the full 7.38 fuse_init_in; kernels before 7.36 send only its first 16 bytes.)
    const [r] = await h.send(initRequest({ minor: 31, flags: 0, flags2: 0xffffffff }).msg);
    const o = Out.init.decode(r!.body, 0);
    t.equal(o.flags, 0, 'flags 0');
    t.equal(o.flags2, 0, 'flags2 ignored without INIT_EXT');
    t.equal(o.minor, 31, 'an older kernel minor is kept');
    t.equal(o.maxWrite, MiB);
    t.equal(o.maxPages, 256);
    t.equal(o.timeGran, 1);
  });

  t.test('writeback cache is requested only when configured', async (t) => {
    const on = await setup({ init: false, writebackCache: true });
    const [r1] = await on.send(initRequest({ flags: 0xffffffff }).msg);
    t.ok(Out.init.decode(r1!.body, 0).flags & Number(InitFlag.WRITEBACK_CACHE));
    const off = await setup({ init: false });
    const [r2] = await off.send(initRequest({ flags: 0xffffffff }).msg);
    t.notOk(Out.init.decode(r2!.body, 0).flags & Number(InitFlag.WRITEBACK_CACHE));
  });

  t.test('export support (file handles) is offered only when configured', async (t) => {
    const on = await setup({ init: false, exportSupport: true });
    const [r1] = await on.send(initRequest({ flags: 0xffffffff }).msg);
    t.ok(Out.init.decode(r1!.body, 0).flags & Number(InitFlag.EXPORT_SUPPORT));
    const off = await setup({ init: false });
    const [r2] = await off.send(initRequest({ flags: 0xffffffff }).msg);
    t.notOk(Out.init.decode(r2!.body, 0).flags & Number(InitFlag.EXPORT_SUPPORT));
  });

  t.test('smaller max_write and readahead options', async (t) => {
    const h = await setup({ init: false, maxWriteBytes: 128 * 1024, maxReadaheadBytes: 64 * 1024 });
    const [r] = await h.send(initRequest({ maxReadahead: MiB }).msg);
    const o = Out.init.decode(r!.body, 0);
    t.equal(o.maxWrite, 128 * 1024);
    t.equal(o.maxPages, 32);
    t.equal(o.maxReadahead, 64 * 1024);
  });

  t.test('a newer major gets our version and no session yet', async (t) => {
    const h = await setup({ init: false });
    const [r] = await h.send(initRequest({ major: 8, minor: 1 }).msg);
    t.equal(r!.error, 0);
    const o = Out.init.decode(r!.body, 0);
    t.strictSame([o.major, o.minor], [7, 38]);
    t.equal(h.s.negotiated, undefined, 'not initialised: the kernel will send INIT again');
    const [g] = await h.send(request(Opcode.GETATTR, { body: In.getattr.build({}) }).msg);
    t.equal(g!.error, -E.EIO!, 'still not initialised');
  });

  t.test('an older major is refused', async (t) => {
    const h = await setup({ init: false });
    const [r] = await h.send(initRequest({ major: 6 }).msg);
    t.equal(r!.error, -E.EOPNOTSUPP!);
    t.equal(r!.len, 16);
    t.equal(h.s.negotiated, undefined);
  });

  t.test('requests before INIT get EIO', async (t) => {
    const h = await setup({ init: false });
    for (const q of [
      request(Opcode.GETATTR, { body: In.getattr.build({}) }),
      request(Opcode.LOOKUP, { names: ['x'] }),
      request(Opcode.STATFS),
    ]) {
      const [r, ...more] = await h.send(q.msg);
      t.equal(more.length, 0);
      t.equal(r!.unique, q.unique);
      t.equal(r!.error, -E.EIO!, 'EIO');
      t.equal(r!.len, 16);
    }
    t.equal(h.fs.calls.length, 0, 'the backend saw nothing');
    const [i] = await h.send(initRequest().msg);
    t.equal(i!.error, 0, 'INIT still works after');
    const r = await h.ask(Opcode.GETATTR, { body: In.getattr.build({}) });
    t.equal(r.error, 0, 'and then requests are served');
  });
});

// ---- every opcode ----

t.test('LOOKUP', async (t) => {
  const h = await setup();
  const r = await h.ask(Opcode.LOOKUP, { nodeid: BIG | 1n, names: ['hello'] });
  t.equal(r.unique, r.sent, 'unique');
  t.equal(r.error, 0);
  t.equal(r.len, 16 + 128, 'out header + fuse_entry_out');
  const e = decodeEntry(r.body);
  t.equal(e.nodeid, BIG | 0x10n, 'nodeid above 2^53');
  t.equal(e.generation, 7n);
  t.strictSame([e.entryValid, e.entryValidNsec], [1n, 500_000_000], 'entry ttl 1500 ms');
  t.strictSame([e.attrValid, e.attrValidNsec], [1n, 0], 'attr ttl: session default 1000 ms');
  t.equal(e.ino, (BIG | 0x10n) + 1000n, 'attr.ino');
  t.equal(e.size, 0x0020000000000005n);
  t.equal(e.blocks, 9n);
  t.strictSame([e.atime, e.atimensec], [1_700_000_000n, 123_456_789], 'atime');
  t.strictSame([e.mtime, e.mtimensec], [u64(-1n), 999_999_999], 'mtime -1 ns');
  t.strictSame([e.ctime, e.ctimensec], [5n, 7], 'ctime');
  t.strictSame(
    [e.mode, e.nlink, e.uid, e.gid, e.rdev, e.blksize, e.flags],
    [0o100644, 3, 1001, 1002, 0x00800001, 4096, 0],
  );
  t.strictSame(h.fs.args('lookup'), [BIG | 1n, 'hello'], 'backend got parent and name');
  t.strictSame(
    [h.fs.lastCaller?.uid, h.fs.lastCaller?.gid, h.fs.lastCaller?.pid],
    [1001, 1002, 0],
    'caller from the header',
  );
  t.strictSame(h.fs.lastCaller?.groups(), [1002], 'groups: just the primary one for pid 0');

  const name = Buffer.from([0xff, 0xfe, 0x80, 0x41]);
  await h.ask(Opcode.LOOKUP, { names: [name] });
  t.ok(h.fs.lastLookupName?.equals(name), 'non-UTF-8 names pass as bytes');
});

t.test('LOOKUP of a negative entry', async (t) => {
  const uncached = await setup();
  const r1 = await uncached.ask(Opcode.LOOKUP, { names: ['negative'] });
  t.equal(r1.error, -E.ENOENT!, 'negativeTtlMs 0: ENOENT');
  t.equal(r1.len, 16);
  const cached = await setup({ negativeTtlMs: 2500 });
  const r2 = await cached.ask(Opcode.LOOKUP, { names: ['negative'] });
  t.equal(r2.error, 0);
  t.equal(r2.len, 16 + 128);
  const e = decodeEntry(r2.body);
  t.equal(e.nodeid, 0n, 'node id 0');
  t.strictSame([e.entryValid, e.entryValidNsec], [2n, 500_000_000], 'cached for the negative ttl');
});

t.test('GETATTR', async (t) => {
  const h = await setup();
  const r = await h.ask(Opcode.GETATTR, {
    nodeid: 42n,
    body: In.getattr.build({ getattrFlags: 0, fh: 99n }),
  });
  t.equal(r.unique, r.sent);
  t.equal(r.error, 0);
  t.equal(r.len, 16 + 104, 'out header + fuse_attr_out');
  const a = Out.attrOut.decode(r.body, 0);
  t.strictSame([a.attrValid, a.attrValidNsec], [0n, 250_000_000], 'attr ttl from the backend');
  t.equal(a.ino, 42n);
  t.equal(a.mode, 0o100644);
  t.strictSame([a.mtime, a.mtimensec], [u64(-1n), 999_999_999]);
  t.strictSame(h.fs.args('getattr'), [42n, undefined], 'no fh without FUSE_GETATTR_FH');
  await h.ask(Opcode.GETATTR, {
    nodeid: 42n,
    body: In.getattr.build({ getattrFlags: FUSE_GETATTR_FH, fh: BIG | 99n }),
  });
  t.strictSame(h.fs.args('getattr'), [42n, BIG | 99n], 'fh with FUSE_GETATTR_FH');
});

t.test('SETATTR', async (t) => {
  const h = await setup();
  const r = await h.ask(Opcode.SETATTR, {
    nodeid: 5n,
    body: In.setattr.build({
      valid: FATTR.MODE | FATTR.SIZE | FATTR.MTIME | FATTR.MTIME_NOW | FATTR.ATIME | FATTR.FH,
      mode: 0o100600,
      size: BIG | 1n,
      fh: 17n,
      atime: u64(-3n),
      atimensec: 5,
      uid: 999, // not valid: ignored
    }),
  });
  t.equal(r.unique, r.sent);
  t.equal(r.error, 0);
  t.equal(r.len, 16 + 104);
  t.equal(Out.attrOut.decode(r.body, 0).mode, 0o100600);
  t.strictSame(h.fs.args('setattr'), [
    5n,
    { mode: 0o100600, size: BIG | 1n, atimeNs: -3_000_000_000n + 5n, mtimeNs: 'now', fh: 17n },
  ]);
});

t.test('READLINK', async (t) => {
  const h = await setup();
  const r = await h.ask(Opcode.READLINK, { nodeid: 4n });
  t.equal(r.unique, r.sent);
  t.equal(r.error, 0);
  t.equal(r.len, 16 + '../some/target'.length);
  t.equal(r.body.toString(), '../some/target', 'no NUL appended');
});

t.test('SYMLINK, MKNOD, MKDIR, LINK answer an entry', async (t) => {
  const h = await setup();
  const sym = await h.ask(Opcode.SYMLINK, { nodeid: 9n, names: ['link', '/target/path'] });
  t.strictSame([sym.unique, sym.error, sym.len], [sym.sent, 0, 144]);
  t.equal(decodeEntry(sym.body).nodeid, 20n);
  t.equal(decodeEntry(sym.body).mode, 0o120777);
  t.strictSame(h.fs.args('symlink'), [9n, 'link', '/target/path'], 'name first, then target');

  const nod = await h.ask(Opcode.MKNOD, {
    nodeid: 9n,
    body: In.mknod.build({ mode: 0o020644, rdev: 0x00800001, umask: 0o022 }),
    names: ['dev'],
  });
  t.strictSame([nod.unique, nod.error, nod.len], [nod.sent, 0, 144]);
  t.equal(decodeEntry(nod.body).nodeid, 21n);
  t.strictSame(h.fs.args('mknod'), [9n, 'dev', 0o020644, 0x00800001, 0o022]);

  const dir = await h.ask(Opcode.MKDIR, {
    nodeid: 9n,
    body: In.mkdir.build({ mode: 0o755, umask: 0o027 }),
    names: ['d'],
  });
  t.strictSame([dir.unique, dir.error, dir.len], [dir.sent, 0, 144]);
  t.equal(decodeEntry(dir.body).nodeid, 22n);
  t.equal(decodeEntry(dir.body).mode, 0o040755);
  t.strictSame(h.fs.args('mkdir'), [9n, 'd', 0o755, 0o027]);

  const lnk = await h.ask(Opcode.LINK, {
    nodeid: 9n,
    body: In.link.build({ oldnodeid: BIG | 33n }),
    names: ['hard'],
  });
  t.strictSame([lnk.unique, lnk.error, lnk.len], [lnk.sent, 0, 144]);
  t.equal(decodeEntry(lnk.body).nodeid, BIG | 33n);
  t.strictSame(
    h.fs.args('link'),
    [BIG | 33n, 9n, 'hard'],
    'old node id, new parent (header nodeid), new name',
  );
});

t.test('UNLINK, RMDIR answer an empty reply', async (t) => {
  const h = await setup();
  const u = await h.ask(Opcode.UNLINK, { nodeid: 9n, names: ['f'] });
  t.strictSame([u.unique, u.error, u.len], [u.sent, 0, 16]);
  t.strictSame(h.fs.args('unlink'), [9n, 'f']);
  const d = await h.ask(Opcode.RMDIR, { nodeid: 9n, names: ['d'] });
  t.strictSame([d.unique, d.error, d.len], [d.sent, 0, 16]);
  t.strictSame(h.fs.args('rmdir'), [9n, 'd']);
});

t.test('RENAME and RENAME2', async (t) => {
  const h = await setup();
  const none = { noReplace: false, exchange: false, whiteout: false };
  const r = await h.ask(Opcode.RENAME, {
    nodeid: 9n,
    body: In.rename.build({ newdir: BIG | 10n }),
    names: ['a', 'b'],
  });
  t.strictSame([r.unique, r.error, r.len], [r.sent, 0, 16]);
  t.strictSame(h.fs.args('rename'), [9n, 'a', BIG | 10n, 'b', none]);

  const cases: [number, Partial<RenameFlags>][] = [
    [0, {}],
    [RENAME_NOREPLACE, { noReplace: true }],
    [RENAME_EXCHANGE, { exchange: true }],
    [RENAME_WHITEOUT, { whiteout: true }],
    [RENAME_NOREPLACE | RENAME_WHITEOUT, { noReplace: true, whiteout: true }],
  ];
  for (const [flags, want] of cases) {
    const r2 = await h.ask(Opcode.RENAME2, {
      nodeid: 9n,
      body: In.rename2.build({ newdir: 10n, flags }),
      names: ['x', 'y'],
    });
    t.strictSame([r2.unique, r2.error, r2.len], [r2.sent, 0, 16], `flags ${flags}`);
    t.strictSame(
      h.fs.args('rename'),
      [9n, 'x', 10n, 'y', { ...none, ...want }],
      `flags ${flags} passed through`,
    );
  }
  const before = h.fs.count('rename');
  for (const flags of [RENAME_NOREPLACE | RENAME_EXCHANGE, 8, 0x80000000]) {
    const bad = await h.ask(Opcode.RENAME2, {
      nodeid: 9n,
      body: In.rename2.build({ newdir: 10n, flags }),
      names: ['x', 'y'],
    });
    t.strictSame([bad.unique, bad.error, bad.len], [bad.sent, -E.EINVAL!, 16], `flags ${flags}: EINVAL`);
  }
  t.equal(h.fs.count('rename'), before, 'invalid flags never reach the backend');
});

t.test('OPEN and CREATE', async (t) => {
  const h = await setup();
  const o = await h.ask(Opcode.OPEN, { nodeid: 7n, body: In.open.build({ flags: 0o2, openFlags: 0 }) });
  t.strictSame([o.unique, o.error, o.len], [o.sent, 0, 16 + 16]);
  const oo = Out.open.decode(o.body, 0);
  t.equal(oo.fh, BIG | 0x1234n);
  t.equal(oo.openFlags, FOPEN.DIRECT_IO | FOPEN.KEEP_CACHE);
  t.strictSame(h.fs.args('open'), [7n, 0o2]);

  const c = await h.ask(Opcode.CREATE, {
    nodeid: 9n,
    body: In.create.build({ flags: 0o100101, mode: 0o100640, umask: 0o022, openFlags: 0 }),
    names: ['new'],
  });
  t.strictSame([c.unique, c.error, c.len], [c.sent, 0, 16 + 128 + 16], 'entry_out + open_out');
  t.equal(decodeEntry(c.body).nodeid, 23n);
  const co = Out.open.decode(c.body, 128);
  t.equal(co.fh, 0x5678n);
  t.equal(co.openFlags, FOPEN.NONSEEKABLE);
  t.strictSame(h.fs.args('create'), [9n, 'new', 0o100640, 0o100101, 0o022]);
});

t.test('READ', async (t) => {
  const h = await setup();
  const r = await h.ask(Opcode.READ, {
    nodeid: 7n,
    body: In.read.build({ fh: 3n, offset: BIG | 5n, size: 10 }),
  });
  t.strictSame([r.unique, r.error, r.len], [r.sent, 0, 16 + 10], 'at most size bytes');
  t.equal(r.body.toString(), 'a'.repeat(10));
  t.strictSame(h.fs.args('read'), [7n, 3n, BIG | 5n, 10]);
  const z = await h.ask(Opcode.READ, { nodeid: 7n, body: In.read.build({ fh: 3n, offset: 0n, size: 0 }) });
  t.strictSame([z.error, z.len], [0, 16], 'zero-byte read');
  const huge = await h.ask(Opcode.READ, { nodeid: 7n, body: In.read.build({ fh: 3n, size: 2 * MiB + 1 }) });
  t.equal(huge.error, -E.EINVAL!, 'a read far above max_write is refused');
});

t.test('WRITE', async (t) => {
  const h = await setup();
  const data = Buffer.from('hello, world');
  const r = await h.ask(Opcode.WRITE, {
    nodeid: 7n,
    body: In.write.build({ fh: 3n, offset: BIG | 6n, size: data.length, writeFlags: 0, flags: 0o2 }),
    data,
  });
  t.strictSame([r.unique, r.error, r.len], [r.sent, 0, 16 + 8]);
  t.equal(Out.write.decode(r.body, 0).size, data.length, 'write_out.size');
  t.strictSame(h.fs.args('write'), [7n, 3n, BIG | 6n, data, 0o2]);
});

t.test('STATFS', async (t) => {
  const h = await setup();
  const r = await h.ask(Opcode.STATFS, { nodeid: 1n });
  t.strictSame([r.unique, r.error, r.len], [r.sent, 0, 16 + 80]);
  t.strictSame(Out.statfs.decode(r.body, 0), STATFS);
});

t.test('RELEASE, FSYNC, FLUSH, RELEASEDIR, FSYNCDIR', async (t) => {
  const h = await setup();
  const rel = await h.ask(Opcode.RELEASE, {
    nodeid: 7n,
    body: In.release.build({ fh: BIG | 3n, flags: 0o2, releaseFlags: 1, lockOwner: 5n }),
  });
  t.strictSame([rel.unique, rel.error, rel.len], [rel.sent, 0, 16]);
  t.strictSame(h.fs.args('release'), [7n, BIG | 3n, 0o2]);

  const fs1 = await h.ask(Opcode.FSYNC, {
    nodeid: 7n,
    body: In.fsync.build({ fh: 3n, fsyncFlags: FUSE_FSYNC_FDATASYNC }),
  });
  t.strictSame([fs1.unique, fs1.error, fs1.len], [fs1.sent, 0, 16]);
  t.strictSame(h.fs.args('fsync'), [7n, 3n, true], 'fdatasync');
  await h.ask(Opcode.FSYNC, { nodeid: 7n, body: In.fsync.build({ fh: 3n, fsyncFlags: 0 }) });
  t.strictSame(h.fs.args('fsync'), [7n, 3n, false], 'fsync');

  const fl = await h.ask(Opcode.FLUSH, {
    nodeid: 7n,
    body: In.flush.build({ fh: 3n, lockOwner: BIG | 0xabn }),
  });
  t.strictSame([fl.unique, fl.error, fl.len], [fl.sent, 0, 16]);
  t.strictSame(h.fs.args('flush'), [7n, 3n, BIG | 0xabn]);

  const rd = await h.ask(Opcode.RELEASEDIR, { nodeid: 8n, body: In.release.build({ fh: 0x77n }) });
  t.strictSame([rd.unique, rd.error, rd.len], [rd.sent, 0, 16]);
  t.strictSame(h.fs.args('releasedir'), [8n, 0x77n]);

  const fd = await h.ask(Opcode.FSYNCDIR, { nodeid: 8n, body: In.fsync.build({ fh: 0x77n, fsyncFlags: 1 }) });
  t.strictSame([fd.unique, fd.error, fd.len], [fd.sent, 0, 16]);
  t.strictSame(h.fs.args('fsyncdir'), [8n, 0x77n, true]);
});

t.test('xattrs', async (t) => {
  const h = await setup();
  const set = await h.ask(Opcode.SETXATTR, {
    nodeid: 7n,
    body: In.setxattr.build({ size: 3, flags: XATTR_CREATE }),
    names: ['user.x'],
    data: Buffer.from('abc'),
  });
  t.strictSame([set.unique, set.error, set.len], [set.sent, 0, 16]);
  t.strictSame(h.fs.args('setxattr'), [7n, 'user.x', 'abc', XATTR_CREATE]);
  const empty = await h.ask(Opcode.SETXATTR, {
    nodeid: 7n,
    body: In.setxattr.build({ size: 0 }),
    names: ['user.e'],
  });
  t.equal(empty.error, 0, 'an empty value');
  t.strictSame(h.fs.args('setxattr'), [7n, 'user.e', '', 0]);
  const short = await h.ask(Opcode.SETXATTR, {
    nodeid: 7n,
    body: In.setxattr.build({ size: 10 }),
    names: ['user.x'],
    data: Buffer.from('abc'),
  });
  t.equal(short.error, -E.EINVAL!, 'value shorter than its size: EINVAL');

  const probe = await h.ask(Opcode.GETXATTR, {
    nodeid: 7n,
    body: In.getxattr.build({ size: 0 }),
    names: ['user.bb'],
  });
  t.strictSame([probe.unique, probe.error, probe.len], [probe.sent, 0, 16 + 8], 'size 0 probe: getxattr_out');
  t.equal(Out.getxattr.decode(probe.body, 0).size, 10, 'length of the value');
  const got = await h.ask(Opcode.GETXATTR, {
    nodeid: 7n,
    body: In.getxattr.build({ size: 100 }),
    names: ['user.bb'],
  });
  t.strictSame([got.error, got.len, got.body.toString()], [0, 16 + 10, '0123456789']);
  const exact = await h.ask(Opcode.GETXATTR, {
    nodeid: 7n,
    body: In.getxattr.build({ size: 10 }),
    names: ['user.bb'],
  });
  t.strictSame([exact.error, exact.body.toString()], [0, '0123456789'], 'exactly the size fits');
  const small = await h.ask(Opcode.GETXATTR, {
    nodeid: 7n,
    body: In.getxattr.build({ size: 9 }),
    names: ['user.bb'],
  });
  t.strictSame([small.error, small.len], [-E.ERANGE!, 16], 'too small: ERANGE');
  const none = await h.ask(Opcode.GETXATTR, {
    nodeid: 7n,
    body: In.getxattr.build({ size: 100 }),
    names: ['user.none'],
  });
  t.equal(none.error, -E.ENODATA!, 'missing: ENODATA');

  const list = 'user.a\0user.bb\0';
  const lp = await h.ask(Opcode.LISTXATTR, { nodeid: 7n, body: In.getxattr.build({ size: 0 }) });
  t.strictSame([lp.unique, lp.error, lp.len], [lp.sent, 0, 24]);
  t.equal(Out.getxattr.decode(lp.body, 0).size, list.length, 'probe gives the list length');
  const l = await h.ask(Opcode.LISTXATTR, { nodeid: 7n, body: In.getxattr.build({ size: 4096 }) });
  t.strictSame([l.error, l.body.toString()], [0, list], 'NUL-separated names');
  const ls = await h.ask(Opcode.LISTXATTR, { nodeid: 7n, body: In.getxattr.build({ size: 5 }) });
  t.equal(ls.error, -E.ERANGE!);

  const rm = await h.ask(Opcode.REMOVEXATTR, { nodeid: 7n, names: ['user.a'] });
  t.strictSame([rm.unique, rm.error, rm.len], [rm.sent, 0, 16]);
  t.strictSame(h.fs.args('removexattr'), [7n, 'user.a']);
});

t.test('OPENDIR', async (t) => {
  const h = await setup();
  const r = await h.ask(Opcode.OPENDIR, { nodeid: 8n, body: In.open.build({ flags: 0o200000 }) });
  t.strictSame([r.unique, r.error, r.len], [r.sent, 0, 32]);
  const o = Out.open.decode(r.body, 0);
  t.strictSame([o.fh, o.openFlags], [0x77n, FOPEN.CACHE_DIR]);
  t.strictSame(h.fs.args('opendir'), [8n, 0o200000]);
});

interface ParsedDirent {
  at: number;
  entry?: ReturnType<typeof decodeEntry>;
  ino: bigint;
  off: bigint;
  namelen: number;
  type: number;
  name: string;
}

function parseDirents(b: Buffer, plus: boolean): ParsedDirent[] {
  const out: ParsedDirent[] = [];
  let at = 0;
  while (at < b.length) {
    const entry = plus ? decodeEntry(b, at) : undefined;
    const d = Out.dirent.decode(b, at + (plus ? 128 : 0));
    const nameAt = at + (plus ? 152 : 24);
    out.push({
      at,
      ...(entry ? { entry } : {}),
      ...d,
      name: b.subarray(nameAt, nameAt + d.namelen).toString(),
    });
    const next = (nameAt + d.namelen + 7) & ~7;
    if (!b.subarray(nameAt + d.namelen, Math.min(next, b.length)).every((x) => x === 0))
      throw new Error('padding');
    at = next;
  }
  return out;
}

t.test('READDIR', async (t) => {
  const h = await setup();
  const r = await h.ask(Opcode.READDIR, {
    nodeid: 8n,
    body: In.read.build({ fh: 0x77n, offset: 0n, size: 4096 }),
  });
  t.strictSame([r.unique, r.error], [r.sent, 0]);
  // 24 + name, rounded up to 8: '.' 32, 'file' 32, 'subdirectory' 40, 'l' 32
  t.equal(r.len, 16 + 32 + 32 + 40 + 32, 'entries packed with 8-byte alignment');
  const ds = parseDirents(r.body, false);
  t.strictSame(
    ds.map((d) => [d.at, d.ino, d.off, d.namelen, d.type, d.name]),
    [
      [0, 1n, 1n, 1, 4, '.'],
      [32, BIG | 2n, 2n, 4, 8, 'file'],
      [64, 3n, 3n, 12, 4, 'subdirectory'],
      [104, 4n, 4n, 1, 10, 'l'],
    ],
    'ino, next offset, namelen, DT_ type, name',
  );
  t.strictSame(h.fs.args('readdir'), [8n, 0x77n, 0n, false]);

  // Continue from an offset.
  const c = await h.ask(Opcode.READDIR, {
    nodeid: 8n,
    body: In.read.build({ fh: 0x77n, offset: 2n, size: 4096 }),
  });
  t.strictSame(
    parseDirents(c.body, false).map((d) => d.name),
    ['subdirectory', 'l'],
  );
  t.strictSame(h.fs.args('readdir'), [8n, 0x77n, 2n, false]);

  // A buffer that holds exactly two entries: the third is refused and the backend stops.
  h.fs.fillResults.length = 0;
  const f = await h.ask(Opcode.READDIR, {
    nodeid: 8n,
    body: In.read.build({ fh: 0x77n, offset: 0n, size: 64 + 39 }),
  });
  t.equal(f.error, 0);
  t.equal(f.len, 16 + 64, 'only what fits');
  t.strictSame(
    parseDirents(f.body, false).map((d) => d.name),
    ['.', 'file'],
  );
  t.strictSame(h.fs.fillResults, [true, true, false], 'the filler said no to the third');

  // Too small for even one entry: an empty reply (end of directory is the backend's business).
  const e = await h.ask(Opcode.READDIR, {
    nodeid: 8n,
    body: In.read.build({ fh: 0x77n, offset: 0n, size: 31 }),
  });
  t.strictSame([e.error, e.len], [0, 16]);
  // Past the end: empty.
  const end = await h.ask(Opcode.READDIR, {
    nodeid: 8n,
    body: In.read.build({ fh: 0x77n, offset: 4n, size: 4096 }),
  });
  t.strictSame([end.error, end.len], [0, 16]);
});

t.test('READDIRPLUS', async (t) => {
  const h = await setup();
  const r = await h.ask(Opcode.READDIRPLUS, {
    nodeid: 8n,
    body: In.read.build({ fh: 0x77n, offset: 0n, size: 4096 }),
  });
  t.strictSame([r.unique, r.error], [r.sent, 0]);
  // 152 + name, rounded up to 8: 160, 160, 168, 160
  t.equal(r.len, 16 + 160 + 160 + 168 + 160);
  const ds = parseDirents(r.body, true);
  t.strictSame(
    ds.map((d) => [d.at, d.ino, d.off, d.type, d.name]),
    [
      [0, 1n, 1n, 4, '.'],
      [160, BIG | 2n, 2n, 8, 'file'],
      [320, 3n, 3n, 4, 'subdirectory'],
      [488, 4n, 4n, 10, 'l'],
    ],
  );
  t.strictSame(ds[0]?.entry, Out.entry.decode(Buffer.alloc(128), 0), 'no entry: zeroed entry_out');
  const e1 = ds[1]!.entry!;
  t.strictSame([e1.nodeid, e1.generation, e1.ino, e1.mode], [BIG | 2n, 7n, (BIG | 2n) + 1000n, 0o100644]);
  t.strictSame([e1.entryValid, e1.entryValidNsec, e1.attrValid, e1.attrValidNsec], [1n, 500_000_000, 1n, 0]);
  t.equal(ds[2]!.entry!.nodeid, 3n);
  t.equal(ds[3]!.entry!.mode, 0o120777);
  t.strictSame(h.fs.args('readdir'), [8n, 0x77n, 0n, true]);

  h.fs.fillResults.length = 0;
  const f = await h.ask(Opcode.READDIRPLUS, {
    nodeid: 8n,
    body: In.read.build({ fh: 0x77n, size: 320 + 167 }),
  });
  t.equal(f.len, 16 + 320, 'two entries fit, the third (168 bytes) does not');
  t.strictSame(h.fs.fillResults, [true, true, false]);
});

t.test('ACCESS, FALLOCATE, LSEEK, COPY_FILE_RANGE, SYNCFS', async (t) => {
  const h = await setup();
  const a = await h.ask(Opcode.ACCESS, { nodeid: 7n, body: In.access.build({ mask: 4 }) });
  t.strictSame([a.unique, a.error, a.len], [a.sent, 0, 16]);
  t.strictSame(h.fs.args('access'), [7n, 4]);

  const f = await h.ask(Opcode.FALLOCATE, {
    nodeid: 7n,
    body: In.fallocate.build({ fh: 3n, offset: BIG | 1n, length: 4096n, mode: 1 }),
  });
  t.strictSame([f.unique, f.error, f.len], [f.sent, 0, 16]);
  t.strictSame(h.fs.args('fallocate'), [7n, 3n, BIG | 1n, 4096n, 1]);

  const l = await h.ask(Opcode.LSEEK, {
    nodeid: 7n,
    body: In.lseek.build({ fh: 3n, offset: 1000n, whence: 3 }),
  });
  t.strictSame([l.unique, l.error, l.len], [l.sent, 0, 16 + 8]);
  t.equal(Out.lseek.decode(l.body, 0).offset, 1100n);
  t.strictSame(h.fs.args('lseek'), [7n, 3n, 1000n, 3]);

  const c = await h.ask(Opcode.COPY_FILE_RANGE, {
    nodeid: 7n,
    body: In.copyFileRange.build({
      fhIn: 1n,
      offIn: 2n,
      nodeidOut: BIG | 3n,
      fhOut: 4n,
      offOut: 5n,
      len: 0x10000abcn,
      flags: 0n,
    }),
  });
  t.strictSame([c.unique, c.error, c.len], [c.sent, 0, 16 + 8]);
  t.equal(Out.write.decode(c.body, 0).size, 0xabc, 'write_out.size');
  t.strictSame(h.fs.args('copyFileRange'), [7n, 1n, 2n, BIG | 3n, 4n, 5n, 0x10000abcn, 0]);

  const s = await h.ask(Opcode.SYNCFS, { nodeid: 1n, body: Buffer.alloc(8) });
  t.strictSame([s.unique, s.error, s.len], [s.sent, 0, 16]);
  t.equal(h.fs.count('syncfs'), 1);
});

t.test('optional methods a backend lacks', async (t) => {
  const h = await setup({ fs: withoutOptional(new MemFs()) });
  const a = await h.ask(Opcode.ACCESS, { nodeid: 7n, body: In.access.build({ mask: 4 }) });
  t.equal(a.error, -E.ENOSYS!, 'ACCESS: ENOSYS (the kernel stops asking)');
  const f = await h.ask(Opcode.FALLOCATE, { nodeid: 7n, body: In.fallocate.build({ fh: 3n, length: 1n }) });
  t.equal(f.error, -E.EOPNOTSUPP!, 'FALLOCATE: EOPNOTSUPP');
  const l = await h.ask(Opcode.LSEEK, { nodeid: 7n, body: In.lseek.build({ fh: 3n }) });
  t.equal(l.error, -E.ENOSYS!, 'LSEEK: ENOSYS');
  const c = await h.ask(Opcode.COPY_FILE_RANGE, { nodeid: 7n, body: In.copyFileRange.build({}) });
  t.equal(c.error, -E.ENOSYS!, 'COPY_FILE_RANGE: ENOSYS');
  const s = await h.ask(Opcode.SYNCFS, { nodeid: 1n, body: Buffer.alloc(8) });
  t.equal(s.error, 0, 'SYNCFS: nothing to do');
  const fl = await h.ask(Opcode.FLUSH, { nodeid: 7n, body: In.flush.build({ fh: 3n }) });
  t.equal(fl.error, -E.ENOSYS!, 'FLUSH: ENOSYS (the kernel stops sending it)');
  t.equal(h.s.stats.bugs, 0);
});

t.test('DESTROY', async (t) => {
  const h = await setup();
  const r = await h.ask(Opcode.DESTROY);
  t.strictSame([r.unique, r.error, r.len], [r.sent, 0, 16]);
  t.equal(h.fs.destroyed, 1, 'backend destroy called');
  await h.ask(Opcode.DESTROY);
  t.equal(h.fs.destroyed, 1, 'only once');
});

t.test('locks, unknown and unsupported opcodes get ENOSYS', async (t) => {
  const h = await setup();
  for (const op of [Opcode.GETLK, Opcode.SETLK, Opcode.SETLKW]) {
    const r = await h.ask(op, { nodeid: 7n, body: In.lk.build({ fh: 1n, type: 1 }) });
    t.strictSame([r.unique, r.error, r.len], [r.sent, -E.ENOSYS!, 16], `opcode ${op}`);
  }
  for (const op of [
    Opcode.BMAP,
    Opcode.IOCTL,
    Opcode.POLL,
    Opcode.SETUPMAPPING,
    Opcode.REMOVEMAPPING,
    Opcode.STATX,
    0,
    7,
    19,
    53,
    4096,
    0xffffffff,
  ]) {
    const r = await h.ask(op, { nodeid: 7n, body: Buffer.alloc(16) });
    t.strictSame([r.unique, r.error, r.len], [r.sent, -E.ENOSYS!, 16], `opcode ${op}`);
  }
  // TMPFILE (as the kernel sends it: fuse_create_in and the name "/") to a backend without tmpfile.
  const r = await h.ask(Opcode.TMPFILE, {
    nodeid: 7n,
    body: In.create.build({ flags: 0o20000002, mode: 0o100600, umask: 0o022, openFlags: 0 }),
    names: ['/'],
  });
  t.strictSame([r.unique, r.error, r.len], [r.sent, -E.ENOSYS!, 16], 'TMPFILE without tmpfile: ENOSYS');
  t.equal(h.s.stats.bugs, 0, 'not bugs');
  t.equal(h.fs.calls.length, 0, 'the backend saw none of them');
});

t.test('FORGET and BATCH_FORGET are never answered', async (t) => {
  const h = await setup();
  t.strictSame(
    await h.send(request(Opcode.FORGET, { nodeid: BIG | 5n, body: In.forget.build({ nlookup: 3n }) }).msg),
    [],
  );
  t.strictSame(h.fs.forgets, [[BIG | 5n, 3n]]);

  const list = Buffer.concat([
    In.forgetOne.build({ nodeid: 10n, nlookup: 1n }),
    In.forgetOne.build({ nodeid: BIG | 11n, nlookup: 2n }),
    In.forgetOne.build({ nodeid: 12n, nlookup: BIG | 3n }),
  ]);
  h.fs.forgets.length = 0;
  t.strictSame(
    await h.send(request(Opcode.BATCH_FORGET, { body: In.batchForget.build({ count: 3 }), data: list }).msg),
    [],
  );
  t.strictSame(h.fs.forgets, [
    [10n, 1n],
    [BIG | 11n, 2n],
    [12n, BIG | 3n],
  ]);

  // Count larger than the list: forget what is there, answer nothing.
  h.fs.forgets.length = 0;
  const malformed = h.s.stats.malformed;
  t.strictSame(
    await h.send(
      request(Opcode.BATCH_FORGET, { body: In.batchForget.build({ count: 5 }), data: list.subarray(0, 40) })
        .msg,
    ),
    [],
  );
  t.strictSame(h.fs.forgets, [
    [10n, 1n],
    [BIG | 11n, 2n],
  ]);
  t.equal(h.s.stats.malformed, malformed + 1, 'counted as malformed');

  // Truncated forgets: still no reply.
  t.strictSame(await h.send(request(Opcode.FORGET, { body: Buffer.alloc(4) }).msg), [], 'short FORGET');
  t.strictSame(
    await h.send(request(Opcode.BATCH_FORGET, { body: Buffer.alloc(4) }).msg),
    [],
    'short BATCH_FORGET',
  );
  const bad = request(Opcode.FORGET, { body: In.forget.build({ nlookup: 1n }) }).msg;
  bad.writeUInt32LE(100, 0);
  t.strictSame(await h.send(bad), [], 'FORGET with a wrong length');
  t.strictSame(h.fs.forgets.length, 2, 'none of them forgot anything');

  // Before INIT too.
  const early = await setup({ init: false });
  t.strictSame(
    await early.send(request(Opcode.FORGET, { nodeid: 5n, body: In.forget.build({ nlookup: 1n }) }).msg),
    [],
  );
});

// ---- errors ----

t.test('backend errors map to errno replies', async (t) => {
  const h = await setup();
  const nf = await h.ask(Opcode.LOOKUP, { names: ['missing'] });
  t.strictSame([nf.unique, nf.error, nf.len], [nf.sent, -E.ENOENT!, 16], 'FsError NOT_FOUND: -ENOENT');
  const ea = await h.ask(Opcode.LOOKUP, { names: ['eacces'] });
  t.strictSame([ea.unique, ea.error, ea.len], [ea.sent, -E.EACCES!, 16], 'Node error code EACCES: -EACCES');
  const os = await h.ask(Opcode.LOOKUP, { names: ['oserror'] });
  t.strictSame([os.unique, os.error], [os.sent, -E.ENOTCONN!], 'OsError: its errno');
  t.equal(h.s.stats.bugs, 0, 'expected failures are not bugs');
  t.equal(h.s.stats.errors, 3);

  const bug = await h.ask(Opcode.LOOKUP, { names: ['bug'] });
  t.strictSame([bug.unique, bug.error, bug.len], [bug.sent, -E.EIO!, 16], 'plain Error: -EIO');
  t.equal(h.s.stats.bugs, 1, 'counted as a bug');
  t.ok(
    h.logLines.some((l) => l.includes('"level":"error"') && l.includes('a bug in the backend')),
    'logged loudly',
  );
  const te = await h.ask(Opcode.LOOKUP, { names: ['typeerror'] });
  t.equal(te.error, -E.EIO!);
  t.equal(h.s.stats.bugs, 2);

  const ok = await h.ask(Opcode.LOOKUP, { names: ['fine'] });
  t.equal(ok.error, 0, 'the session goes on');
});

// ---- bad input ----

t.test('bad input is answered EINVAL and the session goes on', async (t) => {
  const h = await setup();
  const getattrWorks = async (what: string) => {
    const r = await h.ask(Opcode.GETATTR, { nodeid: 42n, body: In.getattr.build({}) });
    t.strictSame(
      [r.unique, r.error, r.len, Out.attrOut.decode(r.body, 0).ino],
      [r.sent, 0, 120, 42n],
      `GETATTR after ${what}`,
    );
  };
  const expectEinval = async (what: string, msg: Buffer, unique: bigint) => {
    const malformed = h.s.stats.malformed;
    const replies = await h.send(msg);
    t.equal(replies.length, 1, `${what}: one reply`);
    t.strictSame(
      [replies[0]?.unique, replies[0]?.error, replies[0]?.len],
      [unique, -E.EINVAL!, 16],
      `${what}: EINVAL`,
    );
    t.equal(h.s.stats.malformed, malformed + 1, `${what}: counted`);
    await getattrWorks(what);
  };

  const full = request(Opcode.LOOKUP, { names: ['some-name'] });
  await expectEinval('truncated read', full.msg.subarray(0, full.msg.length - 3), full.unique);

  const wrong = request(Opcode.GETATTR, { body: In.getattr.build({}) });
  wrong.msg.writeUInt32LE(wrong.msg.length + 8, 0);
  await expectEinval('header.len too large', wrong.msg, wrong.unique);
  const wrong2 = request(Opcode.GETATTR, { body: In.getattr.build({}) });
  wrong2.msg.writeUInt32LE(40, 0);
  await expectEinval('header.len too small', wrong2.msg, wrong2.unique);

  const garbage = Buffer.alloc(64, 0xab);
  await expectEinval('garbage bytes', garbage, 0xababababababababn);

  const short = request(Opcode.GETATTR, { body: Buffer.alloc(8) });
  await expectEinval('body too short', short.msg, short.unique);
  const shortSetattr = request(Opcode.SETATTR, { body: Buffer.alloc(87) });
  await expectEinval('SETATTR body too short', shortSetattr.msg, shortSetattr.unique);
  const shortRead = request(Opcode.READ, { body: Buffer.alloc(39) });
  await expectEinval('READ body too short', shortRead.msg, shortRead.unique);

  const noNul = request(Opcode.LOOKUP, { data: Buffer.from('no-terminator') });
  await expectEinval('name without NUL', noNul.msg, noNul.unique);
  const oneName = request(Opcode.RENAME, { body: In.rename.build({ newdir: 1n }), names: ['only-one'] });
  await expectEinval('RENAME with one name', oneName.msg, oneName.unique);

  const ext = request(Opcode.GETATTR, { body: In.getattr.build({}) });
  ext.msg.writeUInt16LE(100, 36);
  await expectEinval('extensions overrun', ext.msg, ext.unique);

  const before = h.fs.count('write');
  for (const [size, n] of [
    [10, 5],
    [5, 10],
    [0xffffffff, 3],
    [1, 0],
  ] as const) {
    const w = request(Opcode.WRITE, {
      nodeid: 7n,
      body: In.write.build({ fh: 3n, size }),
      data: Buffer.alloc(n, 1),
    });
    const [r, ...more] = await h.send(w.msg);
    t.equal(more.length, 0);
    t.strictSame(
      [r?.unique, r?.error, r?.len],
      [w.unique, -E.EINVAL!, 16],
      `WRITE size ${size} with ${n} bytes`,
    );
    await getattrWorks(`WRITE size ${size}`);
  }
  t.equal(h.fs.count('write'), before, 'no bad WRITE reached the backend');

  for (const n of [0, 1, 16, 39]) {
    const malformed = h.s.stats.malformed;
    const replies = await h.send(Buffer.alloc(n, 0x11));
    t.strictSame(replies, [], `${n} bytes: no reply (no unique to answer)`);
    t.equal(h.s.stats.malformed, malformed + 1);
    await getattrWorks(`${n} bytes`);
  }
  t.equal(h.s.stats.bugs, 0, 'no bugs');
});

t.test(
  'property: arbitrary requests are answered once, with their unique, and never break the session',
  async (t) => {
    const h = await setup();
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 60 }).filter((op) => op !== Opcode.INIT),
        fc.bigInt({ min: 0n, max: 2n ** 63n - 1n }),
        fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
        fc.uint8Array({ maxLength: 160 }),
        fc.integer({ min: -2, max: 2 }),
        async (opcode, u, nodeid, body, lenDelta) => {
          const unique = u * 2n;
          const q = request(opcode, { unique, nodeid, body: Buffer.from(body) });
          if (lenDelta !== 0) q.msg.writeUInt32LE(q.msg.length + lenDelta, 0);
          const replies = await h.send(q.msg);
          if (opcode === Opcode.FORGET || opcode === Opcode.BATCH_FORGET) return replies.length === 0;
          if (replies.length !== 1) return false;
          const r = replies[0]!;
          if (r.len !== r.raw.length || r.error > 0) return false;
          if (opcode === Opcode.INTERRUPT && lenDelta === 0 && body.length >= 8) {
            return r.unique === (unique | 1n) && r.error === -E.EAGAIN!;
          }
          return r.unique === unique;
        },
      ),
      { numRuns: Number(process.env.FUZZ_RUNS ?? process.env.DUNIX_SESSION_RUNS ?? 1500) },
    );
    t.equal(h.s.stats.bugs, 0, 'no input is a bug');
    if (h.s.stats.bugs)
      t.comment(
        h.logLines
          .filter((l) => /bug|threw|refused/.test(l))
          .slice(0, 5)
          .join('\n'),
      );
    const r = await h.ask(Opcode.GETATTR, { nodeid: 42n, body: In.getattr.build({}) });
    t.equal(r.error, 0, 'still serving');
  },
);

// ---- interrupts and concurrency ----

t.test('INTERRUPT', async (t) => {
  const h = await setup();
  const target = newUnique();
  const i = request(Opcode.INTERRUPT, { body: In.interrupt.build({ unique: target }) });
  const replies = await h.send(i.msg);
  t.equal(replies.length, 1, 'unknown target: one reply');
  t.strictSame(
    [replies[0]?.unique, replies[0]?.error, replies[0]?.len],
    [i.unique | 1n, -E.EAGAIN!, 16],
    'EAGAIN with unique|1',
  );

  // In flight: no reply to the interrupt; the original still gets its reply.
  const gate = deferred<AttrReply>();
  h.fs.getattr = async (_caller, ino, fh) => {
    h.fs.calls.push(['getattr', ino, fh]);
    return gate.promise;
  };
  const g = request(Opcode.GETATTR, { nodeid: 42n, body: In.getattr.build({}) });
  const pending = h.s.handle(g.msg);
  await tick();
  t.equal(h.fs.count('getattr'), 1, 'backend is working on it');
  const before = h.ch.written.length;
  const i2 = request(Opcode.INTERRUPT, { body: In.interrupt.build({ unique: g.unique }) });
  await h.s.handle(i2.msg);
  t.equal(h.ch.written.length, before, 'no reply to an interrupt of an in-flight request');
  gate.resolve({ attr: attrOf(42n) });
  await pending;
  const after = h.ch.written.slice(before).map(decodeReply);
  t.equal(after.length, 1, 'one reply');
  t.strictSame(
    [after[0]?.unique, after[0]?.error, after[0]?.len],
    [g.unique, 0, 120],
    'the original is answered',
  );

  // Once answered, an interrupt for it is unknown again.
  const [late] = await h.send(
    request(Opcode.INTERRUPT, { unique: i2.unique, body: In.interrupt.build({ unique: g.unique }) }).msg,
  );
  t.strictSame([late?.unique, late?.error], [i2.unique | 1n, -E.EAGAIN!]);
});

t.test('replies go out in completion order', async (t) => {
  const h = await setup();
  const gates = new Map<bigint, ReturnType<typeof deferred<AttrReply>>>();
  h.fs.getattr = async (_caller, ino) => {
    const d = deferred<AttrReply>();
    gates.set(ino, d);
    return d.promise;
  };
  const first = request(Opcode.GETATTR, { nodeid: 101n, body: In.getattr.build({}) });
  const second = request(Opcode.GETATTR, { nodeid: 102n, body: In.getattr.build({}) });
  const p1 = h.s.handle(first.msg);
  const p2 = h.s.handle(second.msg);
  await tick();
  t.equal(gates.size, 2, 'both requests reached the backend before either was answered');
  t.equal(h.s.stats.inflightMax, 2, 'two in flight');
  const before = h.ch.written.length;
  gates.get(102n)!.resolve({ attr: attrOf(102n) });
  await p2;
  t.equal(h.ch.written.length, before + 1, 'the second is answered while the first waits');
  gates.get(101n)!.resolve({ attr: attrOf(101n) });
  await p1;
  const out = h.ch.written.slice(before).map(decodeReply);
  t.strictSame(
    out.map((r) => [r.unique, r.error, Out.attrOut.decode(r.body, 0).ino]),
    [
      [second.unique, 0, 102n],
      [first.unique, 0, 101n],
    ],
  );

  // A failing request does not disturb one in flight.
  const slow = request(Opcode.GETATTR, { nodeid: 103n, body: In.getattr.build({}) });
  const p3 = h.s.handle(slow.msg);
  await tick();
  const [bad] = await h.send(request(Opcode.LOOKUP, { names: ['missing'] }).msg);
  t.equal(bad?.error, -E.ENOENT!);
  gates.get(103n)!.reject(new FsError('STALE_HANDLE'));
  await p3;
  const last = decodeReply(h.ch.written.at(-1)!);
  t.strictSame([last.unique, last.error], [slow.unique, -E.ESTALE!]);
});

// ---- notifications ----

t.test('notifications', async (t) => {
  const early = await setup({ init: false });
  await early.s.notifyInvalInode(5n);
  await early.s.notifyInvalEntry(1n, Buffer.from('x'));
  await early.s.notifyDelete(1n, 5n, Buffer.from('x'));
  t.equal(early.ch.notified.length + early.ch.written.length, 0, 'nothing before INIT');

  const h = await setup();
  const written = h.ch.written.length; // the INIT reply
  await h.s.notifyInvalInode(BIG | 5n, 4096n, -1n);
  await h.s.notifyInvalInode(6n);
  await h.s.notifyInvalEntry(BIG | 1n, Buffer.from('name'));
  await h.s.notifyDelete(2n, BIG | 9n, Buffer.from('gone.txt'));
  t.equal(h.ch.written.length, written, 'notifications do not go through write');
  const [ii, ii2, ie, nd] = h.ch.notified.map(decodeReply);

  t.strictSame([ii?.len, ii?.error, ii?.unique, ii?.raw.length], [16 + 24, NotifyCode.INVAL_INODE, 0n, 40]);
  t.strictSame(Out.notifyInvalInode.decode(ii!.body, 0), { ino: BIG | 5n, off: 4096n, len: -1n });
  t.strictSame(
    Out.notifyInvalInode.decode(ii2!.body, 0),
    { ino: 6n, off: 0n, len: 0n },
    'defaults: whole file',
  );

  t.strictSame(
    [ie?.len, ie?.error, ie?.unique, ie?.raw.length],
    [16 + 16 + 4 + 1, NotifyCode.INVAL_ENTRY, 0n, 37],
  );
  t.strictSame(Out.notifyInvalEntry.decode(ie!.body, 0), { parent: BIG | 1n, namelen: 4, flags: 0 });
  t.equal(ie!.body.subarray(16, 20).toString(), 'name');
  t.equal(ie!.body.at(-1), 0, 'name is NUL-terminated');

  t.strictSame(
    [nd?.len, nd?.error, nd?.unique, nd?.raw.length],
    [16 + 24 + 8 + 1, NotifyCode.DELETE, 0n, 49],
  );
  t.strictSame(Out.notifyDelete.decode(nd!.body, 0), { parent: 2n, child: BIG | 9n, namelen: 8 });
  t.equal(nd!.body.subarray(24, 32).toString(), 'gone.txt');
  t.equal(nd!.body.at(-1), 0, 'name is NUL-terminated');
});

// ---- the read loop ----

t.test('start() ends the session when the device goes away', async (t) => {
  const ch = new FakeChannel();
  ch.end('ENODEV');
  const fs = new MemFs();
  const s = new FuseSession(fs, ch, { readersMax: 3 }, silent);
  s.start();
  await s.closed;
  t.equal(fs.destroyed, 1, 'backend destroy called once');
  t.equal(ch.closeCount, 1, 'channel closed once');
  t.equal(ch.written.length, 0);
  s.start();
  await tick();
  t.equal(ch.closeCount, 1, 'start after the end does nothing');
});

t.test('start() serves queued requests, then ends on ENODEV after in-flight replies', async (t) => {
  const ch = new FakeChannel();
  const fs = new MemFs(ch.events);
  const s = new FuseSession(fs, ch, { readersMax: 2 }, silent);
  const init = initRequest({ flags: 0xffffffff });
  ch.push(init.msg);
  s.start();
  s.start(); // idempotent
  await until(() => ch.written.length === 1, 'INIT reply');
  t.equal(decodeReply(ch.written[0]!).unique, init.unique);

  const g = request(Opcode.GETATTR, { nodeid: 42n, body: In.getattr.build({}) });
  ch.push(g.msg);
  await until(() => ch.written.length === 2, 'GETATTR reply');
  const gr = decodeReply(ch.written[1]!);
  t.strictSame([gr.unique, gr.error, gr.len], [g.unique, 0, 120]);

  // A large WRITE (served from the read buffer itself).
  const data = Buffer.alloc(10000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
  const w = request(Opcode.WRITE, {
    nodeid: 7n,
    body: In.write.build({ fh: 3n, offset: 0n, size: data.length }),
    data,
  });
  ch.push(w.msg);
  await until(() => ch.written.length === 3, 'WRITE reply');
  const wr = decodeReply(ch.written[2]!);
  t.strictSame([wr.unique, wr.error, Out.write.decode(wr.body, 0).size], [w.unique, 0, 10000]);
  t.ok((fs.args('write')?.[3] as Buffer | undefined)?.equals(data), 'the backend got the data intact');

  // A request still in flight when the device goes away is answered before the end.
  const gate = deferred<AttrReply>();
  fs.getattr = async () => gate.promise;
  const slow = request(Opcode.GETATTR, { nodeid: 43n, body: In.getattr.build({}) });
  ch.push(slow.msg);
  await tick();
  ch.end();
  let closed = false;
  void s.closed.then(() => {
    closed = true;
  });
  await new Promise((r) => setTimeout(r, 30));
  t.notOk(closed, 'not closed while a request is in flight');
  t.equal(fs.destroyed, 0, 'not destroyed yet');
  gate.resolve({ attr: attrOf(43n) });
  await s.closed;
  const last = decodeReply(ch.written.at(-1)!);
  t.strictSame([last.unique, last.error], [slow.unique, 0], 'the in-flight request was answered');
  t.equal(fs.destroyed, 1);
  t.equal(ch.closeCount, 1);
  t.strictSame(
    ch.events.slice(-3),
    ['write', 'destroy', 'close'],
    'the last reply, then backend destroy, then the channel closes',
  );
});

t.test('start() ends on other read errors too', async (t) => {
  const ch = new FakeChannel();
  ch.end('EIO');
  const fs = new MemFs();
  const lines: string[] = [];
  const s = new FuseSession(
    fs,
    ch,
    { readersMax: 1 },
    createLogger('fuse-test', (l) => lines.push(l)),
  );
  s.start();
  await s.closed;
  t.equal(fs.destroyed, 1);
  t.ok(
    lines.some((l) => l.includes('device read failed')),
    'logged',
  );
});

t.test('start() refuses a thread pool too small for blocking readers', async (t) => {
  const ch = new FakeChannel(true);
  const s = new FuseSession(new MemFs(), ch, { readersMax: 64 }, silent);
  t.throws(() => s.start(), /UV_THREADPOOL_SIZE/);
});
