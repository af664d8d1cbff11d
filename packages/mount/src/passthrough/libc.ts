/**
 * The Linux syscalls the passthrough needs and Node's `fs` lacks (the *at
 * family on O_PATH descriptors, statx with nanoseconds, mknod, renameat2,
 * xattrs, per-thread credentials), bound through koffi. Every wrapper returns
 * its result or throws the errno as an FsError/OsError; none touches JS state.
 *
 * Credential calls (setfsuid, setfsgid, raw setgroups) change the calling
 * thread only. They are made on the main thread around a synchronous call and
 * restored before returning to the event loop, so no other request sees them.
 */
import { constants as fsConstants } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { fsErrorFromErrno } from '@dunix/proto';
import koffi from 'koffi';

const lib = koffi.load('libc.so.6');

export const AT_FDCWD = -100;
export const AT_SYMLINK_NOFOLLOW = 0x100;
export const AT_REMOVEDIR = 0x200;
export const AT_EMPTY_PATH = 0x1000;
/** Same value on every Linux architecture. */
export const O_CLOEXEC = 0o2000000;
export const O_PATH = 0o10000000;
export const O_DIRECTORY = fsConstants.O_DIRECTORY;
export const O_NOFOLLOW = fsConstants.O_NOFOLLOW;
export const O_CREAT = fsConstants.O_CREAT;
export const O_EXCL = fsConstants.O_EXCL;
export const O_RDONLY = fsConstants.O_RDONLY;
export const UTIME_NOW = (1 << 30) - 1;
export const UTIME_OMIT = (1 << 30) - 2;
export const STATX_BASIC_STATS = 0x7ff;
const STATX_SIZE_BYTES = 256;
const XATTR_SIZE_MAX = 65536;
const EAGAIN = osConstants.errno.EAGAIN;
const EOPNOTSUPP = osConstants.errno.EOPNOTSUPP;

/** syscall numbers for the raw calls (glibc's wrappers would act on every thread). */
const SYS = (() => {
  switch (process.arch) {
    case 'x64':
      return { setgroups: 116, getdents64: 217 };
    case 'arm64':
      return { setgroups: 159, getdents64: 61 };
    default:
      throw new Error(`passthrough: unsupported architecture ${process.arch}`);
  }
})();

/** preadv2/pwritev2 flag: fail with EAGAIN instead of waiting for the disk. */
const RWF_NOWAIT = 0x8;

const c = {
  // The iovec is built by hand in a reused buffer: koffi's struct-array
  // marshalling costs more than the syscall itself.
  preadv2: lib.func('long preadv2(int fd, const uint8_t *iov, int iovcnt, int64_t offset, int flags)'),
  pwritev2: lib.func('long pwritev2(int fd, const uint8_t *iov, int iovcnt, int64_t offset, int flags)'),
  openat: lib.func('int openat(int dirfd, const char *path, int flags, uint32_t mode)'),
  close: lib.func('int close(int fd)'),
  statx: lib.func('int statx(int dirfd, const char *path, int flags, uint32_t mask, _Out_ uint8_t *buf)'),
  fchownat: lib.func('int fchownat(int dirfd, const char *path, uint32_t uid, uint32_t gid, int flags)'),
  fchmodat: lib.func('int fchmodat(int dirfd, const char *path, uint32_t mode, int flags)'),
  utimensat: lib.func('int utimensat(int dirfd, const char *path, const uint8_t *times, int flags)'),
  futimens: lib.func('int futimens(int fd, const uint8_t *times)'),
  mknodat: lib.func('int mknodat(int dirfd, const char *path, uint32_t mode, uint64_t dev)'),
  mkdirat: lib.func('int mkdirat(int dirfd, const char *path, uint32_t mode)'),
  symlinkat: lib.func('int symlinkat(const char *target, int dirfd, const char *path)'),
  readlinkat: lib.func('long readlinkat(int dirfd, const char *path, _Out_ uint8_t *buf, size_t size)'),
  unlinkat: lib.func('int unlinkat(int dirfd, const char *path, int flags)'),
  renameat2: lib.func(
    'int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, uint32_t flags)',
  ),
  linkat: lib.func(
    'int linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags)',
  ),
  getxattr: lib.func('long getxattr(const char *path, const char *name, _Out_ uint8_t *value, size_t size)'),
  setxattr: lib.func(
    'int setxattr(const char *path, const char *name, const uint8_t *value, size_t size, int flags)',
  ),
  listxattr: lib.func('long listxattr(const char *path, _Out_ uint8_t *list, size_t size)'),
  removexattr: lib.func('int removexattr(const char *path, const char *name)'),
  fallocate: lib.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)'),
  lseek: lib.func('int64_t lseek(int fd, int64_t offset, int whence)'),
  copyFileRange: lib.func(
    'long copy_file_range(int fdIn, _Inout_ int64_t *offIn, int fdOut, _Inout_ int64_t *offOut, size_t len, uint32_t flags)',
  ),
  fstatfs: lib.func('int fstatfs(int fd, _Out_ uint8_t *buf)'),
  fsync: lib.func('int fsync(int fd)'),
  fdatasync: lib.func('int fdatasync(int fd)'),
  ftruncate: lib.func('int ftruncate(int fd, int64_t length)'),
  setfsuid: lib.func('int setfsuid(uint32_t uid)'),
  setfsgid: lib.func('int setfsgid(uint32_t gid)'),
  syscall3: lib.func('long syscall(long n, long a, uint8_t *b, long c)'),
  setgroupsRaw: lib.func('long syscall(long n, long count, const uint32_t *groups)'),
};

function fail(what: string): never {
  throw fsErrorFromErrno(koffi.errno(), what);
}
function check(r: number | bigint, what: string): number {
  if (r === -1 || r === -1n) fail(what);
  return Number(r);
}

/** Names are bytes; koffi passes a JS string as UTF-8, so non-UTF-8 names go as NUL-terminated buffers. */
function cstr(name: Buffer): Buffer {
  return Buffer.concat([name, Buffer.alloc(1)]);
}
const EMPTY = Buffer.alloc(1);
type Path = Buffer | string;
const p = (x: Path): Buffer | string => (typeof x === 'string' ? x : cstr(x));

export function openat(dirfd: number, path: Path, flags: number, mode = 0): number {
  return check(c.openat(dirfd, p(path), flags | O_CLOEXEC, mode), 'openat');
}
export function close(fd: number): void {
  c.close(fd);
}

export interface Statx {
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  ino: bigint;
  size: bigint;
  blocks: bigint;
  blksize: number;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  rdevMajor: number;
  rdevMinor: number;
  devMajor: number;
  devMinor: number;
}

const statxBuf = Buffer.alloc(STATX_SIZE_BYTES);
function ts(b: Buffer, at: number): bigint {
  return b.readBigInt64LE(at) * 1_000_000_000n + BigInt(b.readUInt32LE(at + 8));
}
/** statx(dirfd, path); with an empty path it stats dirfd itself (AT_EMPTY_PATH). */
export function statx(dirfd: number, path: Path = ''): Statx {
  const flags = AT_SYMLINK_NOFOLLOW | (path.length === 0 ? AT_EMPTY_PATH : 0);
  check(c.statx(dirfd, path.length === 0 ? EMPTY : p(path), flags, STATX_BASIC_STATS, statxBuf), 'statx');
  const b = statxBuf;
  return {
    blksize: b.readUInt32LE(4),
    nlink: b.readUInt32LE(16),
    uid: b.readUInt32LE(20),
    gid: b.readUInt32LE(24),
    mode: b.readUInt16LE(28),
    ino: b.readBigUInt64LE(32),
    size: b.readBigUInt64LE(40),
    blocks: b.readBigUInt64LE(48),
    atimeNs: ts(b, 64),
    ctimeNs: ts(b, 96),
    mtimeNs: ts(b, 112),
    rdevMajor: b.readUInt32LE(128),
    rdevMinor: b.readUInt32LE(132),
    devMajor: b.readUInt32LE(136),
    devMinor: b.readUInt32LE(140),
  };
}

export function fchownat(dirfd: number, path: Path, uid: number, gid: number, flags: number): void {
  check(c.fchownat(dirfd, path.length === 0 ? EMPTY : p(path), uid >>> 0, gid >>> 0, flags), 'fchownat');
}
export function chmodPath(path: string, mode: number): void {
  check(c.fchmodat(AT_FDCWD, path, mode, 0), 'fchmodat');
}

/** Two struct timespec for utimensat/futimens: ns since epoch, 'now', or undefined to leave alone. */
function timespecs(atime: bigint | 'now' | undefined, mtime: bigint | 'now' | undefined): Buffer {
  const t = Buffer.alloc(32);
  const put = (at: number, v: bigint | 'now' | undefined) => {
    if (v === undefined) t.writeBigInt64LE(BigInt(UTIME_OMIT), at + 8);
    else if (v === 'now') t.writeBigInt64LE(BigInt(UTIME_NOW), at + 8);
    else {
      // Floor division so that times before 1970 keep 0 <= nsec < 1e9.
      let sec = v / 1_000_000_000n;
      let nsec = v % 1_000_000_000n;
      if (nsec < 0n) {
        nsec += 1_000_000_000n;
        sec -= 1n;
      }
      t.writeBigInt64LE(sec, at);
      t.writeBigInt64LE(nsec, at + 8);
    }
  };
  put(0, atime);
  put(16, mtime);
  return t;
}

export function utimensat(
  dirfd: number,
  path: Path,
  atime: bigint | 'now' | undefined,
  mtime: bigint | 'now' | undefined,
  flags: number,
): void {
  const pathArg = path.length === 0 ? EMPTY : p(path);
  check(c.utimensat(dirfd, pathArg, timespecs(atime, mtime), flags), 'utimensat');
}

/** Times of an open file (glibc's utimensat refuses a NULL path; this is the fd form). */
export function futimens(
  fd: number,
  atime: bigint | 'now' | undefined,
  mtime: bigint | 'now' | undefined,
): void {
  check(c.futimens(fd, timespecs(atime, mtime)), 'futimens');
}

export function mknodat(dirfd: number, name: Buffer, mode: number, dev: bigint): void {
  check(c.mknodat(dirfd, cstr(name), mode, dev), 'mknodat');
}
export function mkdirat(dirfd: number, name: Buffer, mode: number): void {
  check(c.mkdirat(dirfd, cstr(name), mode), 'mkdirat');
}
export function symlinkat(target: Buffer, dirfd: number, name: Buffer): void {
  check(c.symlinkat(cstr(target), dirfd, cstr(name)), 'symlinkat');
}
const linkBuf = Buffer.alloc(4096);
export function readlinkat(dirfd: number, path: Path = ''): Buffer {
  const n = check(
    c.readlinkat(dirfd, path.length === 0 ? EMPTY : p(path), linkBuf, linkBuf.length),
    'readlinkat',
  );
  return Buffer.from(linkBuf.subarray(0, n));
}
export function unlinkat(dirfd: number, name: Buffer, flags: number): void {
  check(c.unlinkat(dirfd, cstr(name), flags), 'unlinkat');
}
export function renameat2(
  oldfd: number,
  oldName: Buffer,
  newfd: number,
  newName: Buffer,
  flags: number,
): void {
  check(c.renameat2(oldfd, cstr(oldName), newfd, cstr(newName), flags), 'renameat2');
}
export function linkat(oldfd: number, oldPath: Path, newfd: number, newName: Buffer, flags: number): void {
  check(c.linkat(oldfd, oldPath.length === 0 ? EMPTY : p(oldPath), newfd, cstr(newName), flags), 'linkat');
}

const xattrBuf = Buffer.alloc(XATTR_SIZE_MAX);
export function getxattr(path: string, name: Buffer): Buffer {
  const n = check(c.getxattr(path, cstr(name), xattrBuf, xattrBuf.length), 'getxattr');
  return Buffer.from(xattrBuf.subarray(0, n));
}
export function setxattr(path: string, name: Buffer, value: Buffer, flags: number): void {
  check(c.setxattr(path, cstr(name), value, value.length, flags), 'setxattr');
}
export function listxattr(path: string): Buffer[] {
  const n = check(c.listxattr(path, xattrBuf, xattrBuf.length), 'listxattr');
  const names: Buffer[] = [];
  let at = 0;
  while (at < n) {
    const nul = xattrBuf.indexOf(0, at);
    const end = nul < 0 || nul > n ? n : nul;
    if (end > at) names.push(Buffer.from(xattrBuf.subarray(at, end)));
    at = end + 1;
  }
  return names;
}
export function removexattr(path: string, name: Buffer): void {
  check(c.removexattr(path, cstr(name)), 'removexattr');
}

export function fallocate(fd: number, mode: number, offset: bigint, length: bigint): void {
  check(c.fallocate(fd, mode, offset, length), 'fallocate');
}
export function lseek(fd: number, offset: bigint, whence: number): bigint {
  const r = BigInt(c.lseek(fd, offset, whence));
  if (r < 0n) fail('lseek');
  return r;
}
export function copyFileRange(
  fdIn: number,
  offIn: bigint,
  fdOut: number,
  offOut: bigint,
  len: bigint,
  flags: number,
): number {
  const a = [offIn];
  const b = [offOut];
  return check(c.copyFileRange(fdIn, a, fdOut, b, len, flags), 'copy_file_range');
}

export interface FsStat {
  bsize: number;
  blocks: bigint;
  bfree: bigint;
  bavail: bigint;
  files: bigint;
  ffree: bigint;
  namelen: number;
  frsize: number;
}
const statfsBuf = Buffer.alloc(120);
/** struct statfs on 64-bit Linux: all fields are 8 bytes wide except f_fsid (2 x int). */
export function fstatfs(fd: number): FsStat {
  check(c.fstatfs(fd, statfsBuf), 'fstatfs');
  const b = statfsBuf;
  return {
    bsize: Number(b.readBigInt64LE(8)),
    blocks: b.readBigUInt64LE(16),
    bfree: b.readBigUInt64LE(24),
    bavail: b.readBigUInt64LE(32),
    files: b.readBigUInt64LE(40),
    ffree: b.readBigUInt64LE(48),
    namelen: Number(b.readBigInt64LE(64)),
    frsize: Number(b.readBigInt64LE(72)),
  };
}

/**
 * Reads at offset only what can be had without waiting for the disk (page
 * cache hits): bytes read, 0 at end of file, or -1 if it would block (the
 * caller then reads on the threadpool). May return fewer bytes than asked.
 */
const iov = Buffer.alloc(16);
function oneIovec(buf: Buffer, length: number): Buffer {
  if (length > buf.length) throw new RangeError('iovec longer than its buffer');
  // Node buffers live outside the V8 heap and never move while referenced.
  iov.writeBigUInt64LE(koffi.address(buf), 0);
  iov.writeBigUInt64LE(BigInt(length), 8);
  return iov;
}

/** -1 for "would have to wait", the byte count otherwise; other errors throw. */
function nowaitResult(r: number | bigint, what: string): number {
  const n = Number(r);
  if (n >= 0) return n;
  const e = koffi.errno();
  if (e === EAGAIN || e === EOPNOTSUPP) return -1;
  throw fsErrorFromErrno(e, what);
}

export function preadNowait(fd: number, buf: Buffer, length: number, offset: bigint): number {
  return nowaitResult(c.preadv2(fd, oneIovec(buf, length), 1, offset, RWF_NOWAIT), 'preadv2');
}

/** Like preadNowait, for writes into the page cache. */
export function pwriteNowait(fd: number, buf: Buffer, length: number, offset: bigint): number {
  return nowaitResult(c.pwritev2(fd, oneIovec(buf, length), 1, offset, RWF_NOWAIT), 'pwritev2');
}

export function fsync(fd: number, dataOnly: boolean): void {
  check(dataOnly ? c.fdatasync(fd) : c.fsync(fd), 'fsync');
}
export function ftruncate(fd: number, length: bigint): void {
  check(c.ftruncate(fd, length), 'ftruncate');
}

const direntBuf = Buffer.alloc(64 * 1024);
export interface RawDirent {
  ino: bigint;
  off: bigint;
  type: number;
  name: Buffer;
}
/** One getdents64 call: the entries it returned (empty at end of directory). */
export function getdents(fd: number): RawDirent[] {
  const n = check(c.syscall3(SYS.getdents64, fd, direntBuf, direntBuf.length), 'getdents64');
  const out: RawDirent[] = [];
  let at = 0;
  while (at < n) {
    const reclen = direntBuf.readUInt16LE(at + 16);
    const nameStart = at + 19;
    const nul = direntBuf.indexOf(0, nameStart);
    out.push({
      ino: direntBuf.readBigUInt64LE(at),
      off: direntBuf.readBigInt64LE(at + 8),
      type: direntBuf[at + 18]!,
      name: Buffer.from(direntBuf.subarray(nameStart, nul < 0 || nul > at + reclen ? at + reclen : nul)),
    });
    at += reclen;
  }
  return out;
}

/**
 * Runs `fn` with the filesystem credentials of a caller (fsuid, fsgid and
 * supplementary groups) on this thread, then restores root's. Used for calls
 * that create inodes, so that ownership and setgid inheritance follow the
 * caller exactly as a local filesystem would.
 */
const ownGroups = new Uint32Array(process.getgroups?.() ?? [0]);

export function withCredentials<T>(uid: number, gid: number, groups: readonly number[], fn: () => T): T {
  if (uid === 0 && gid === 0) return fn();
  const list = new Uint32Array(groups.length === 0 ? [gid] : groups);
  check(c.setgroupsRaw(SYS.setgroups, list.length, list), 'setgroups');
  c.setfsgid(gid);
  c.setfsuid(uid);
  try {
    return fn();
  } finally {
    c.setfsuid(0);
    c.setfsgid(0);
    c.setgroupsRaw(SYS.setgroups, ownGroups.length, ownGroups);
  }
}
