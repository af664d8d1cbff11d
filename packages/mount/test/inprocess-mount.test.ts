/**
 * A tiny in-memory backend mounted in this process: shows that 64-bit node
 * ids and inode numbers travel intact, and that cache invalidation notices
 * reach the kernel. All syscalls on the mount come from child processes run
 * asynchronously (a synchronous call here would block the session serving it).
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { FsError } from '@dunix/proto';
import t, { type Test } from 'tap';
import type {
  Attr,
  AttrReply,
  Caller,
  DirFiller,
  Entry,
  FileSystem,
  OpenReply,
  StatFs,
} from '../src/fuse/filesystem.js';
import type { DeviceReader } from '../src/fuse/channel.js';
import { FuseMount, mountAt } from '../src/fuse/mount.js';

const sh = promisify(execFile);
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;

interface Node {
  nodeid: bigint;
  ino: bigint;
  name: string;
  data: Buffer;
  mode: number;
}

/** Root plus flat files; node ids and st_ino use the full 64 bits. */
class BigInodeFs implements FileSystem {
  readonly files = new Map<string, Node>();
  forgotten = 0n;
  /** Reads of 'slow' wait until 'fast' has been read: only concurrent serving finishes both. */
  private openGate!: () => void;
  readonly gate = new Promise<void>((r) => {
    this.openGate = r;
  });
  readOrder: string[] = [];
  constructor() {
    this.add('big', 0xfedc_ba98_7654_3210n, 0xffff_ffff_ffff_fff0n, 'hello\n');
    this.add('small', 2n, 0x0001_0000_0000_0002n, 'x\n');
  }
  add(name: string, nodeid: bigint, ino: bigint, text: string): void {
    this.files.set(name, { nodeid, ino, name, data: Buffer.from(text), mode: S_IFREG | 0o644 });
  }
  private attr(n: Node | undefined): Attr {
    const now = 1_700_000_000_123_456_789n;
    return {
      ino: n ? n.ino : 1n,
      size: BigInt(n ? n.data.length : 0),
      blocks: 0n,
      atimeNs: now,
      mtimeNs: now,
      ctimeNs: now,
      mode: n ? n.mode : S_IFDIR | 0o755,
      nlink: n ? 1 : 2,
      uid: 0,
      gid: 0,
      rdev: 0,
      blksize: 4096,
    };
  }
  private byId(ino: bigint): Node | undefined {
    if (ino === 1n) return undefined;
    for (const n of this.files.values()) if (n.nodeid === ino) return n;
    throw new FsError('STALE_HANDLE');
  }
  async lookup(_c: Caller, parent: bigint, name: Buffer): Promise<Entry> {
    if (parent !== 1n) throw new FsError('NOT_FOUND');
    const n = this.files.get(name.toString());
    if (!n) throw new FsError('NOT_FOUND');
    return { nodeid: n.nodeid, attr: this.attr(n), entryTtlMs: 60_000, attrTtlMs: 60_000 };
  }
  forget(_ino: bigint, n: bigint): void {
    this.forgotten += n;
  }
  async getattr(_c: Caller, ino: bigint): Promise<AttrReply> {
    return { attr: this.attr(this.byId(ino)), attrTtlMs: 60_000 };
  }
  async open(): Promise<OpenReply> {
    return { fh: 7n, keepCache: true };
  }
  async read(_c: Caller, ino: bigint, _fh: bigint, offset: bigint, size: number): Promise<Buffer> {
    const n = this.byId(ino);
    if (n?.name === 'slow' && offset === 0n) await this.gate;
    if (n?.name === 'fast' && offset === 0n) this.openGate();
    if (n && offset === 0n) this.readOrder.push(n.name);
    return n ? n.data.subarray(Number(offset), Number(offset) + size) : Buffer.alloc(0);
  }
  async release(): Promise<void> {}
  async flush(): Promise<void> {}
  async opendir(): Promise<OpenReply> {
    return { fh: 9n };
  }
  async readdir(_c: Caller, _ino: bigint, _fh: bigint, offset: bigint, plus: boolean, fill: DirFiller) {
    const list = [...this.files.values()];
    for (let i = Number(offset); i < list.length; i++) {
      const n = list[i]!;
      const entry = plus ? { nodeid: n.nodeid, attr: this.attr(n) } : undefined;
      if (!fill({ name: Buffer.from(n.name), ino: n.ino, mode: n.mode, nextOffset: BigInt(i + 1), entry }))
        return;
    }
  }
  async releasedir(): Promise<void> {}
  async statfs(): Promise<StatFs> {
    return {
      blocks: 100n,
      bfree: 50n,
      bavail: 50n,
      files: 10n,
      ffree: 5n,
      bsize: 4096,
      namelen: 255,
      frsize: 4096,
    };
  }
  readonly unsupported = async (): Promise<never> => {
    throw new FsError('NOT_SUPPORTED');
  };
  setattr = this.unsupported;
  readlink = this.unsupported;
  symlink = this.unsupported;
  mknod = this.unsupported;
  mkdir = this.unsupported;
  unlink = this.unsupported;
  rmdir = this.unsupported;
  rename = this.unsupported;
  link = this.unsupported;
  create = this.unsupported;
  write = this.unsupported;
  fsync = this.unsupported;
  fsyncdir = this.unsupported;
  setxattr = this.unsupported;
  getxattr = this.unsupported;
  listxattr = this.unsupported;
  removexattr = this.unsupported;
}

async function mountBig(t: Test, reader?: DeviceReader) {
  const mnt = mkdtempSync(join(tmpdir(), 'dunix-big-'));
  const fs = new BigInodeFs();
  const m = await FuseMount.start(fs, {
    mountpoint: mnt,
    source: 'bigino',
    subtype: 'dunixfs-test',
    allowOther: true,
    ...(reader ? { reader } : {}),
  });
  t.teardown(async () => {
    await m.stop();
    rmSync(mnt, { recursive: true, force: true });
  });
  return { fs, m, mnt };
}

t.test('64-bit node ids and inode numbers reach stat() and readdir intact', async (t) => {
  const { mnt } = await mountBig(t);
  const { stdout: ino } = await sh('stat', ['-c', '%i', join(mnt, 'big')]);
  t.equal(ino.trim(), 0xffff_ffff_ffff_fff0n.toString(), 'st_ino uses all 64 bits');
  const { stdout: small } = await sh('stat', ['-c', '%i', join(mnt, 'small')]);
  t.equal(small.trim(), 0x0001_0000_0000_0002n.toString(), 'st_ino above 2^48');
  const { stdout: listing } = await sh('ls', ['-i1', '-f', mnt]);
  t.match(listing, /18446744073709551600 big/, 'd_ino in readdir is 64-bit');
  const { stdout: body } = await sh('cat', [join(mnt, 'big')]);
  t.equal(body, 'hello\n', 'a node id above 2^63 routes reads to the right inode');
  const { stdout: times } = await sh('stat', ['-c', '%y', join(mnt, 'big')]);
  t.match(times, /\.123456789/, 'nanosecond timestamps');
  const { stdout: df } = await sh('stat', ['-f', '-c', '%b %f %l', mnt]);
  t.equal(df.trim(), '100 50 255', 'statfs values');
});

t.test('invalidation notices make the kernel drop cached data and names', async (t) => {
  const { fs, m, mnt } = await mountBig(t);
  const f = join(mnt, 'big');
  t.equal((await sh('cat', [f])).stdout, 'hello\n');
  // Change the content behind the kernel's back; with 60 s attribute TTLs the
  // kernel keeps reporting the old size until told otherwise.
  fs.files.get('big')!.data = Buffer.from('changed content\n');
  t.equal((await sh('stat', ['-c', '%s', f])).stdout.trim(), '6', 'cached size before the notice');
  await m.session.notifyInvalInode(0xfedc_ba98_7654_3210n);
  t.equal((await sh('stat', ['-c', '%s', f])).stdout.trim(), '16', 'fresh size after INVAL_INODE');
  t.equal((await sh('cat', [f])).stdout, 'changed content\n', 'fresh content after INVAL_INODE');

  // A name that appears behind the kernel's back after a cached negative... and
  // a name whose target changes: entry invalidation forces a new LOOKUP.
  const before = (await sh('stat', ['-c', '%i', join(mnt, 'small')])).stdout.trim();
  fs.add('small', 3n, 42n, 'y\n');
  t.equal(
    (await sh('stat', ['-c', '%i', join(mnt, 'small')])).stdout.trim(),
    before,
    'cached entry still used',
  );
  await m.session.notifyInvalEntry(1n, Buffer.from('small'));
  t.equal(
    (await sh('stat', ['-c', '%i', join(mnt, 'small')])).stdout.trim(),
    '42',
    'new lookup after INVAL_ENTRY',
  );

  fs.files.delete('small');
  await m.session.notifyDelete(1n, 3n, Buffer.from('small'));
  const gone = await sh('stat', [join(mnt, 'small')]).catch((e: { stderr: string }) => e);
  t.match((gone as { stderr: string }).stderr, /No such file/, 'NOTIFY_DELETE removes the name');
});

t.test('unmounting ends the session and releases every kernel reference', async (t) => {
  const mnt = mkdtempSync(join(tmpdir(), 'dunix-big-'));
  t.teardown(() => rmSync(mnt, { recursive: true, force: true }));
  const fs = new BigInodeFs();
  const m = await FuseMount.start(fs, {
    mountpoint: mnt,
    source: 'x',
    subtype: 'dunixfs-test',
    allowOther: true,
  });
  await sh('stat', [join(mnt, 'big'), join(mnt, 'small')]);
  await m.stop();
  t.equal(mountAt(mnt), undefined, 'no mount left');
  await m.session.closed;
  t.ok(m.session.stats.requests > 0, 'requests were served');
  t.equal(m.session.stats.bugs, 0, 'no bugs logged');
});

for (const reader of ['event-loop', 'threadpool'] as const) {
  t.test(`requests are served concurrently and answered out of order (${reader} reader)`, async (t) => {
    const { fs, m, mnt } = await mountBig(t, reader);
    fs.add('slow', 10n, 10n, 'slow\n');
    fs.add('fast', 11n, 11n, 'fast\n');
    // The slow read cannot finish before the fast one has been served: a
    // session that handled one request at a time would hang here.
    const slow = sh('dd', [`if=${join(mnt, 'slow')}`, 'iflag=direct', 'bs=4096', 'status=none']);
    await new Promise((r) => setTimeout(r, 100));
    const fast = await sh('dd', [`if=${join(mnt, 'fast')}`, 'iflag=direct', 'bs=4096', 'status=none']);
    t.equal(fast.stdout, 'fast\n');
    t.equal((await slow).stdout, 'slow\n');
    t.strictSame(fs.readOrder.slice(-2), ['fast', 'slow'], 'the later request was answered first');
    t.ok(m.session.stats.inflightMax >= 2, `requests in flight at once: ${m.session.stats.inflightMax}`);
  });
}

t.test('stop ends a detached mount that a process still holds, and leaves a newer mount alone', async (t) => {
  const mnt = mkdtempSync(join(tmpdir(), 'dunix-held-'));
  const fs = new BigInodeFs();
  const m = await FuseMount.start(fs, {
    mountpoint: mnt,
    source: 'held',
    subtype: 'dunixfs-test',
    allowOther: true,
  });
  // A process keeps a file open: umount finds the mount busy.
  const holder = spawn('sh', ['-c', 'exec 3<"$1"; exec sleep 600', 'holder', join(mnt, 'big')], {
    stdio: 'ignore',
  });
  t.teardown(async () => {
    holder.kill('SIGKILL');
    await m.stop();
    while (mountAt(mnt)) await sh('umount', ['-l', mnt]).catch(() => {});
    rmSync(mnt, { recursive: true, force: true });
  });
  for (
    let i = 0;
    i < 100 && !(await sh('readlink', [`/proc/${holder.pid}/fd/3`]).catch(() => undefined));
    i++
  )
    await new Promise((r) => setTimeout(r, 20));
  // Someone detaches it lazily and mounts something else on the same path.
  await sh('umount', ['-l', mnt]);
  await sh('mount', ['-t', 'tmpfs', 'dunix-test-tmpfs', mnt]);
  const graceMs = 300;
  const t0 = Date.now();
  await m.stop(graceMs);
  const tookMs = Date.now() - t0;
  t.ok(
    tookMs >= graceMs && tookMs < 5000,
    `stop waited its grace period, then ended the session (${tookMs} ms)`,
  );
  t.equal(mountAt(mnt)?.fstype, 'tmpfs', 'the newer mount on the path was left alone');
  const read = await sh('cat', [`/proc/${holder.pid}/fd/3`]).catch((e: { stderr: string }) => e);
  t.match(
    (read as { stderr: string }).stderr,
    /not connected/,
    "the holder's file fails (ENOTCONN), never hangs",
  );
});
