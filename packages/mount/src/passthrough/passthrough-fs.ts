/**
 * A FileSystem that mirrors a local directory, inode for inode. Each inode the
 * kernel knows holds an O_PATH descriptor, and every operation is the *at
 * syscall on it (the design of libfuse's passthrough_ll), so renames and hard
 * links need no path bookkeeping. Inodes are created with the caller's fsuid,
 * fsgid and groups, so ownership and setgid inheritance are the local
 * filesystem's own. Permission checks are the kernel's (default_permissions).
 *
 * Kept in the product as a debugging aid and as the FUSE-overhead baseline.
 */
import * as nodefs from 'node:fs';
import { promisify } from 'node:util';
import { FsError } from '@dunix/proto';
import type {
  Attr,
  AttrReply,
  Caller,
  CreateReply,
  DirFiller,
  Entry,
  FileSystem,
  OpenReply,
  RenameFlags,
  SetAttrChanges,
  StatFs,
} from '../fuse/filesystem.js';
import * as sys from './libc.js';

const fsRead = promisify(nodefs.read);
const fsWrite = promisify(nodefs.write);
const fsFsync = promisify(nodefs.fsync);
const fsFdatasync = promisify(nodefs.fdatasync);

const S_IFMT = 0o170000;
const O_DIRECT = nodefs.constants.O_DIRECT;
/** Access-mode bits of open flags (Node does not export O_ACCMODE). */
const O_ACCMODE = 3;
const S_IFLNK = 0o120000;
const ROOT = 1n;
/** Consecutive writes that could not be done without waiting before we stop trying. */
const NOWAIT_MISSES_MAX = 64;
const NO_ID = 0xffffffff;

interface Inode {
  readonly nodeid: bigint;
  readonly fd: number;
  readonly key: string;
  readonly isSymlink: boolean;
  nlookup: bigint;
}

interface DirHandle {
  fd: number;
  /** Offset the directory fd is positioned at, as the kernel knows offsets (d_off cookies). */
  pos: bigint;
  /** Entries read from getdents but not yet accepted by the kernel. */
  pending: sys.RawDirent[];
}

export interface PassthroughOptions {
  /** Pass O_DIRECT-like behaviour: bypass the kernel page cache on every open. */
  directIo?: boolean;
  /**
   * The mount uses the kernel's write-back cache: the kernel then reads pages
   * of files opened write-only and keeps the file size itself, so backing
   * files are opened read-write and without O_APPEND.
   */
  writebackCache?: boolean;
}

/** Linux 32-bit dev_t encoding (new_encode_dev) that FUSE carries in st_rdev. */
export function encodeRdev(major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

function toAttr(s: sys.Statx): Attr {
  return {
    ino: s.ino,
    size: s.size,
    blocks: s.blocks,
    atimeNs: s.atimeNs,
    mtimeNs: s.mtimeNs,
    ctimeNs: s.ctimeNs,
    mode: s.mode,
    nlink: s.nlink,
    uid: s.uid,
    gid: s.gid,
    rdev: encodeRdev(s.rdevMajor, s.rdevMinor),
    blksize: s.blksize,
  };
}

function checkName(name: Buffer): void {
  if (name.length === 0 || name.includes(0x2f) || name.includes(0)) {
    throw new FsError('INVALID_ARGUMENT', 'name is empty or contains / or NUL');
  }
}

function position(offset: bigint): number {
  if (offset < 0n || offset > BigInt(Number.MAX_SAFE_INTEGER)) throw new FsError('FILE_TOO_LARGE');
  return Number(offset);
}

export class PassthroughFs implements FileSystem {
  private readonly byId = new Map<bigint, Inode>();
  private readonly byKey = new Map<string, Inode>();
  private readonly files = new Map<bigint, number>();
  private readonly dirs = new Map<bigint, DirHandle>();
  private nextNodeid = 2n;
  private nowaitWrites = true;
  private nowaitWriteMisses = 0;
  private nextFh = 1n;
  private readonly rootFd: number;

  constructor(
    readonly sourceDir: string,
    private readonly options: PassthroughOptions = {},
  ) {
    // The kernel has already applied the caller's umask to every mode it sends
    // us; ours must not mask it a second time. (Process-wide: a passthrough
    // owns its process.)
    process.umask(0);
    this.rootFd = sys.openat(sys.AT_FDCWD, sourceDir, sys.O_PATH | sys.O_DIRECTORY);
    const st = sys.statx(this.rootFd);
    const root: Inode = { nodeid: ROOT, fd: this.rootFd, key: keyOf(st), isSymlink: false, nlookup: 1n };
    this.byId.set(ROOT, root);
    this.byKey.set(root.key, root);
  }

  /** Inodes the kernel currently holds references to (root included). */
  get inodeCount(): number {
    return this.byId.size;
  }

  destroy(): void {
    for (const fd of this.files.values()) sys.close(fd);
    for (const d of this.dirs.values()) sys.close(d.fd);
    for (const i of this.byId.values()) sys.close(i.fd);
    this.files.clear();
    this.dirs.clear();
    this.byId.clear();
    this.byKey.clear();
  }

  private inode(ino: bigint): Inode {
    const i = this.byId.get(ino);
    if (!i) throw new FsError('STALE_HANDLE', `unknown inode ${ino}`);
    return i;
  }

  private fileFd(fh: bigint): number {
    const fd = this.files.get(fh);
    if (fd === undefined) throw new FsError('BAD_HANDLE', `unknown file handle ${fh}`);
    return fd;
  }

  private procPath(i: Inode): string {
    return `/proc/self/fd/${i.fd}`;
  }

  /** Looks name up in parent and counts one kernel reference to it. */
  private lookupInode(parent: Inode, name: Buffer): Entry {
    const fd = sys.openat(parent.fd, name, sys.O_PATH | sys.O_NOFOLLOW);
    let st: sys.Statx;
    try {
      st = sys.statx(fd);
    } catch (err) {
      sys.close(fd);
      throw err;
    }
    const key = keyOf(st);
    let node = this.byKey.get(key);
    if (node) {
      sys.close(fd);
      node.nlookup++;
    } else {
      node = {
        nodeid: this.nextNodeid++,
        fd,
        key,
        isSymlink: (st.mode & S_IFMT) === S_IFLNK,
        nlookup: 1n,
      };
      this.byId.set(node.nodeid, node);
      this.byKey.set(key, node);
    }
    return { nodeid: node.nodeid, attr: toAttr(st) };
  }

  async lookup(_caller: Caller, parent: bigint, name: Buffer): Promise<Entry> {
    checkName(name);
    return this.lookupInode(this.inode(parent), name);
  }

  forget(ino: bigint, nlookup: bigint): void {
    const i = this.byId.get(ino);
    if (!i || ino === ROOT) return;
    i.nlookup -= nlookup;
    if (i.nlookup <= 0n) {
      this.byId.delete(ino);
      this.byKey.delete(i.key);
      sys.close(i.fd);
    }
  }

  async getattr(_caller: Caller, ino: bigint, fh: bigint | undefined): Promise<AttrReply> {
    const fd = fh !== undefined && this.files.has(fh) ? this.fileFd(fh) : this.inode(ino).fd;
    return { attr: toAttr(sys.statx(fd)) };
  }

  async setattr(_caller: Caller, ino: bigint, c: SetAttrChanges): Promise<AttrReply> {
    const i = this.inode(ino);
    const fd = c.fh !== undefined ? this.files.get(c.fh) : undefined;
    if (c.uid !== undefined || c.gid !== undefined) {
      sys.fchownat(i.fd, '', c.uid ?? NO_ID, c.gid ?? NO_ID, sys.AT_EMPTY_PATH | sys.AT_SYMLINK_NOFOLLOW);
    }
    if (c.mode !== undefined) {
      if (i.isSymlink) throw new FsError('NOT_SUPPORTED', 'chmod of a symlink');
      if (fd !== undefined) nodefs.fchmodSync(fd, c.mode & 0o7777);
      else sys.chmodPath(this.procPath(i), c.mode & 0o7777);
    }
    if (c.size !== undefined) {
      if (fd !== undefined) sys.ftruncate(fd, c.size);
      else {
        const wfd = sys.openat(sys.AT_FDCWD, this.procPath(i), nodefs.constants.O_WRONLY);
        try {
          sys.ftruncate(wfd, c.size);
        } finally {
          sys.close(wfd);
        }
      }
    }
    if (c.atimeNs !== undefined || c.mtimeNs !== undefined) {
      if (fd !== undefined) sys.futimens(fd, c.atimeNs, c.mtimeNs);
      else if (i.isSymlink)
        sys.utimensat(i.fd, '', c.atimeNs, c.mtimeNs, sys.AT_EMPTY_PATH | sys.AT_SYMLINK_NOFOLLOW);
      else sys.utimensat(sys.AT_FDCWD, this.procPath(i), c.atimeNs, c.mtimeNs, 0);
    }
    // ctime cannot be set on Linux; the kernel only sends it alongside other changes.
    return { attr: toAttr(sys.statx(fd ?? i.fd)) };
  }

  async readlink(_caller: Caller, ino: bigint): Promise<Buffer> {
    return sys.readlinkat(this.inode(ino).fd);
  }

  private create_<T>(caller: Caller, fn: () => T): T {
    return sys.withCredentials(caller.uid, caller.gid, caller.uid === 0 ? [0] : caller.groups(), fn);
  }

  async symlink(caller: Caller, parent: bigint, name: Buffer, target: Buffer): Promise<Entry> {
    checkName(name);
    const p = this.inode(parent);
    this.create_(caller, () => sys.symlinkat(target, p.fd, name));
    return this.lookupInode(p, name);
  }

  async mknod(caller: Caller, parent: bigint, name: Buffer, mode: number, rdev: number): Promise<Entry> {
    checkName(name);
    const p = this.inode(parent);
    this.create_(caller, () => sys.mknodat(p.fd, name, mode, BigInt(rdev)));
    return this.lookupInode(p, name);
  }

  async mkdir(caller: Caller, parent: bigint, name: Buffer, mode: number): Promise<Entry> {
    checkName(name);
    const p = this.inode(parent);
    this.create_(caller, () => sys.mkdirat(p.fd, name, mode));
    return this.lookupInode(p, name);
  }

  async unlink(_caller: Caller, parent: bigint, name: Buffer): Promise<void> {
    checkName(name);
    sys.unlinkat(this.inode(parent).fd, name, 0);
  }

  async rmdir(_caller: Caller, parent: bigint, name: Buffer): Promise<void> {
    checkName(name);
    sys.unlinkat(this.inode(parent).fd, name, sys.AT_REMOVEDIR);
  }

  async rename(
    _caller: Caller,
    parent: bigint,
    name: Buffer,
    newParent: bigint,
    newName: Buffer,
    flags: RenameFlags,
  ): Promise<void> {
    checkName(name);
    checkName(newName);
    const f = (flags.noReplace ? 1 : 0) | (flags.exchange ? 2 : 0) | (flags.whiteout ? 4 : 0);
    sys.renameat2(this.inode(parent).fd, name, this.inode(newParent).fd, newName, f);
  }

  async link(_caller: Caller, ino: bigint, newParent: bigint, newName: Buffer): Promise<Entry> {
    checkName(newName);
    const i = this.inode(ino);
    const p = this.inode(newParent);
    sys.linkat(i.fd, '', p.fd, newName, sys.AT_EMPTY_PATH);
    return this.lookupInode(p, newName);
  }

  private forWriteback(flags: number): number {
    if (!this.options.writebackCache) return flags;
    const { O_WRONLY, O_RDWR, O_APPEND } = nodefs.constants;
    const access = (flags & O_ACCMODE) === O_WRONLY ? O_RDWR : flags & O_ACCMODE;
    return (flags & ~(O_ACCMODE | O_APPEND)) | access;
  }

  /**
   * O_DIRECT is honoured at the FUSE level (the kernel page cache is bypassed
   * for this open file) but not passed to the backing file: its alignment
   * rules would apply to our own buffers, which the caller never sees.
   */
  private openReply(fd: number, flags: number): OpenReply {
    const fh = this.nextFh++;
    this.files.set(fh, fd);
    return { fh, directIo: this.options.directIo === true || (flags & O_DIRECT) !== 0 };
  }

  async open(_caller: Caller, ino: bigint, flags: number): Promise<OpenReply> {
    const i = this.inode(ino);
    const clean = flags & ~(sys.O_NOFOLLOW | sys.O_CREAT | sys.O_EXCL | nodefs.constants.O_NOCTTY | O_DIRECT);
    return this.openReply(sys.openat(sys.AT_FDCWD, this.procPath(i), this.forWriteback(clean)), flags);
  }

  async create(
    caller: Caller,
    parent: bigint,
    name: Buffer,
    mode: number,
    flags: number,
  ): Promise<CreateReply> {
    checkName(name);
    const p = this.inode(parent);
    const fd = this.create_(caller, () =>
      sys.openat(p.fd, name, (flags | sys.O_CREAT) & ~sys.O_NOFOLLOW, mode),
    );
    let entry: Entry;
    try {
      entry = this.lookupInode(p, name);
    } catch (err) {
      sys.close(fd);
      throw err;
    }
    return { entry, open: this.openReply(fd, flags) };
  }

  async read(_caller: Caller, _ino: bigint, fh: bigint, offset: bigint, size: number): Promise<Buffer> {
    const fd = this.fileFd(fh);
    const buf = Buffer.allocUnsafe(size);
    // Page-cache hits are served right here (microseconds); only what would
    // wait for the disk goes to the threadpool, so the event loop never blocks.
    let done = sys.preadNowait(fd, buf, size, offset);
    if (done === 0 || done === size) return buf.subarray(0, done);
    if (done < 0) done = 0;
    // A short reply would read as end-of-file to the kernel: finish the rest.
    while (done < size) {
      const { bytesRead } = await fsRead(fd, buf, done, size - done, position(offset + BigInt(done)));
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return buf.subarray(0, done);
  }

  async write(_caller: Caller, _ino: bigint, fh: bigint, offset: bigint, data: Buffer): Promise<number> {
    const fd = this.fileFd(fh);
    // Buffered writes without waiting are not offered by every filesystem
    // (ext4 refuses them); stop asking once the backing fs has said no.
    let done = this.nowaitWrites ? sys.pwriteNowait(fd, data, data.length, offset) : -1;
    if (done < 0) {
      if (++this.nowaitWriteMisses >= NOWAIT_MISSES_MAX) this.nowaitWrites = false;
      done = 0;
    } else this.nowaitWriteMisses = 0;
    while (done < data.length) {
      const { bytesWritten } = await fsWrite(
        fd,
        data,
        done,
        data.length - done,
        position(offset + BigInt(done)),
      );
      done += bytesWritten;
    }
    return done;
  }

  // No flush(): close-time work happens in release, and locks are the
  // kernel's, so the kernel may stop sending FLUSH altogether.

  async release(_caller: Caller, _ino: bigint, fh: bigint): Promise<void> {
    const fd = this.files.get(fh);
    if (fd === undefined) return;
    this.files.delete(fh);
    sys.close(fd);
  }

  async fsync(_caller: Caller, _ino: bigint, fh: bigint, dataOnly: boolean): Promise<void> {
    const fd = this.fileFd(fh);
    await (dataOnly ? fsFdatasync(fd) : fsFsync(fd));
  }

  async opendir(_caller: Caller, ino: bigint): Promise<OpenReply> {
    const i = this.inode(ino);
    const fd = sys.openat(sys.AT_FDCWD, this.procPath(i), sys.O_RDONLY | sys.O_DIRECTORY);
    const fh = this.nextFh++;
    this.dirs.set(fh, { fd, pos: 0n, pending: [] });
    return { fh };
  }

  async readdir(
    _caller: Caller,
    ino: bigint,
    fh: bigint,
    offset: bigint,
    plus: boolean,
    fill: DirFiller,
  ): Promise<void> {
    const d = this.dirs.get(fh);
    if (!d) throw new FsError('BAD_HANDLE', `unknown directory handle ${fh}`);
    const parent = this.inode(ino);
    if (offset !== d.pos) {
      sys.lseek(d.fd, offset, 0);
      d.pos = offset;
      d.pending = [];
    }
    for (;;) {
      if (d.pending.length === 0) {
        d.pending = sys.getdents(d.fd);
        if (d.pending.length === 0) return;
      }
      const e = d.pending[0]!;
      const dot = e.name.length <= 2 && (e.name.equals(DOT) || e.name.equals(DOTDOT));
      let entry: Entry | undefined;
      if (plus && !dot) {
        try {
          entry = this.lookupInode(parent, e.name);
        } catch (err) {
          // Removed since getdents returned it: skip it, as a local readdir may.
          if (err instanceof FsError && err.code === 'NOT_FOUND') {
            d.pending.shift();
            d.pos = e.off;
            continue;
          }
          throw err;
        }
      }
      const accepted = fill({
        name: e.name,
        ino: entry ? entry.attr.ino : e.ino,
        mode: entry ? entry.attr.mode : e.type << 12,
        nextOffset: e.off,
        ...(entry ? { entry } : {}),
      });
      if (!accepted) {
        if (entry) this.forget(entry.nodeid, 1n);
        return;
      }
      d.pending.shift();
      d.pos = e.off;
    }
  }

  async releasedir(_caller: Caller, _ino: bigint, fh: bigint): Promise<void> {
    const d = this.dirs.get(fh);
    if (!d) return;
    this.dirs.delete(fh);
    sys.close(d.fd);
  }

  async fsyncdir(_caller: Caller, _ino: bigint, fh: bigint, dataOnly: boolean): Promise<void> {
    const d = this.dirs.get(fh);
    if (!d) throw new FsError('BAD_HANDLE');
    sys.fsync(d.fd, dataOnly);
  }

  async statfs(_caller: Caller, ino: bigint): Promise<StatFs> {
    const s = sys.fstatfs(this.byId.get(ino)?.fd ?? this.rootFd);
    return { ...s };
  }

  private xattrPath(i: Inode): string {
    // No race-free way to reach a symlink's own xattrs through an O_PATH fd;
    // Linux allows only trusted.* and security.* there anyway.
    if (i.isSymlink) throw new FsError('NOT_PERMITTED', 'xattrs on a symlink');
    return this.procPath(i);
  }

  async setxattr(_caller: Caller, ino: bigint, name: Buffer, value: Buffer, flags: number): Promise<void> {
    sys.setxattr(this.xattrPath(this.inode(ino)), name, value, flags);
  }

  async getxattr(_caller: Caller, ino: bigint, name: Buffer): Promise<Buffer> {
    const i = this.inode(ino);
    if (i.isSymlink) throw new FsError('NO_XATTR');
    return sys.getxattr(this.procPath(i), name);
  }

  async listxattr(_caller: Caller, ino: bigint): Promise<Buffer[]> {
    const i = this.inode(ino);
    if (i.isSymlink) return [];
    return sys.listxattr(this.procPath(i));
  }

  async removexattr(_caller: Caller, ino: bigint, name: Buffer): Promise<void> {
    sys.removexattr(this.xattrPath(this.inode(ino)), name);
  }

  async fallocate(
    _caller: Caller,
    _ino: bigint,
    fh: bigint,
    offset: bigint,
    length: bigint,
    mode: number,
  ): Promise<void> {
    sys.fallocate(this.fileFd(fh), mode, offset, length);
  }

  async lseek(_caller: Caller, _ino: bigint, fh: bigint, offset: bigint, whence: number): Promise<bigint> {
    return sys.lseek(this.fileFd(fh), offset, whence);
  }

  async copyFileRange(
    _caller: Caller,
    _inoIn: bigint,
    fhIn: bigint,
    offIn: bigint,
    _inoOut: bigint,
    fhOut: bigint,
    offOut: bigint,
    length: bigint,
    flags: number,
  ): Promise<number> {
    return sys.copyFileRange(this.fileFd(fhIn), offIn, this.fileFd(fhOut), offOut, length, flags);
  }

  async syncfs(): Promise<void> {
    const fd = sys.openat(sys.AT_FDCWD, this.sourceDir, sys.O_RDONLY | sys.O_DIRECTORY);
    try {
      sys.fsync(fd, false);
    } finally {
      sys.close(fd);
    }
  }
}

const DOT = Buffer.from('.');
const DOTDOT = Buffer.from('..');

function keyOf(s: sys.Statx): string {
  return `${s.devMajor}:${s.devMinor}:${s.ino}`;
}
