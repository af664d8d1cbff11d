/**
 * The inode-based interface a backend implements to be mounted. The FUSE
 * session decodes kernel requests into these calls and encodes the results;
 * a backend never sees the wire format.
 *
 * Conventions:
 * - `ino` is the FUSE node id the backend handed out in an Entry (1 = root).
 * - Names are raw bytes (Linux names need not be UTF-8).
 * - Failures are thrown as FsError (or OsError for a raw errno); anything
 *   else thrown is treated as a bug: logged loudly and answered with EIO.
 * - Every call that acts for a process carries its Caller.
 */

/** The process a request acts for, as the kernel reports it. */
export interface Caller {
  readonly uid: number;
  readonly gid: number;
  /** 0 for requests the kernel makes on its own (e.g. release after exit). */
  readonly pid: number;
  /**
   * Supplementary group ids. FUSE does not carry them in the request; they are
   * read from /proc/<pid>/status on first use (as libfuse's fuse_getgroups
   * does) and cached for the rest of this request.
   */
  groups(): readonly number[];
}

/** Attributes of one inode. Times are nanoseconds since the epoch. */
export interface Attr {
  /** st_ino: what stat() shows; may differ from the node id. */
  ino: bigint;
  size: bigint;
  /** 512-byte blocks allocated. */
  blocks: bigint;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  /** Linux dev_t encoding as FUSE carries it (32 bits: 12-bit major, 20-bit minor). */
  rdev: number;
  blksize: number;
}

export interface AttrReply {
  attr: Attr;
  /** How long the kernel may cache it; session default when absent. */
  attrTtlMs?: number;
}

/** A name bound to an inode: what LOOKUP/MKDIR/... answer. Each one counts one kernel lookup. */
export interface Entry {
  nodeid: bigint;
  generation?: bigint;
  attr: Attr;
  entryTtlMs?: number;
  attrTtlMs?: number;
}

/** A negative answer the kernel may cache (LOOKUP only): node id 0. */
export const NEGATIVE_ENTRY = Symbol('negative-entry');

export interface OpenReply {
  fh: bigint;
  /** Bypass the page cache for this open file. */
  directIo?: boolean;
  /** Keep cached pages from earlier opens. */
  keepCache?: boolean;
  /** Keep the readdir result in the kernel cache. */
  cacheDir?: boolean;
  nonSeekable?: boolean;
}

export interface CreateReply {
  entry: Entry;
  open: OpenReply;
}

export interface SetAttrChanges {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: bigint;
  /** Nanoseconds since epoch, or 'now'. */
  atimeNs?: bigint | 'now';
  mtimeNs?: bigint | 'now';
  ctimeNs?: bigint;
  /** Set when the change arrives through an open file. */
  fh?: bigint;
  /** The kernel asks to clear suid/sgid as part of this change. */
  killSuidgid?: boolean;
}

export interface StatFs {
  blocks: bigint;
  bfree: bigint;
  bavail: bigint;
  files: bigint;
  ffree: bigint;
  bsize: number;
  namelen: number;
  frsize: number;
}

/** One directory entry for READDIR / READDIRPLUS. */
export interface DirEntry {
  name: Buffer;
  /** st_ino of the entry (d_ino). */
  ino: bigint;
  /** File type bits of the mode (S_IFMT part). */
  mode: number;
  /** Opaque cookie the kernel passes back to continue after this entry. */
  nextOffset: bigint;
  /** For READDIRPLUS: the entry with its attributes; counts as one lookup once accepted. */
  entry?: Entry;
}

/**
 * Called by a backend for each entry, in order. Returns false when the reply
 * buffer is full: the entry was NOT added (and, for READDIRPLUS, not looked up);
 * the backend must stop there.
 */
export type DirFiller = (entry: DirEntry) => boolean;

export interface RenameFlags {
  noReplace: boolean;
  exchange: boolean;
  whiteout: boolean;
}

export interface FileSystem {
  /** Called once after INIT, before any other request. */
  init?(): Promise<void> | void;
  /** Called when the kernel ends the session (DESTROY) or the session stops. */
  destroy?(): Promise<void> | void;

  lookup(caller: Caller, parent: bigint, name: Buffer): Promise<Entry | typeof NEGATIVE_ENTRY>;
  /** The kernel dropped `nlookup` references to `ino`. Never answered. */
  forget(ino: bigint, nlookup: bigint): void;
  getattr(caller: Caller, ino: bigint, fh: bigint | undefined): Promise<AttrReply>;
  setattr(caller: Caller, ino: bigint, changes: SetAttrChanges): Promise<AttrReply>;
  readlink(caller: Caller, ino: bigint): Promise<Buffer>;
  symlink(caller: Caller, parent: bigint, name: Buffer, target: Buffer): Promise<Entry>;
  mknod(
    caller: Caller,
    parent: bigint,
    name: Buffer,
    mode: number,
    rdev: number,
    umask: number,
  ): Promise<Entry>;
  mkdir(caller: Caller, parent: bigint, name: Buffer, mode: number, umask: number): Promise<Entry>;
  unlink(caller: Caller, parent: bigint, name: Buffer): Promise<void>;
  rmdir(caller: Caller, parent: bigint, name: Buffer): Promise<void>;
  rename(
    caller: Caller,
    parent: bigint,
    name: Buffer,
    newParent: bigint,
    newName: Buffer,
    flags: RenameFlags,
  ): Promise<void>;
  link(caller: Caller, ino: bigint, newParent: bigint, newName: Buffer): Promise<Entry>;
  open(caller: Caller, ino: bigint, flags: number): Promise<OpenReply>;
  create(
    caller: Caller,
    parent: bigint,
    name: Buffer,
    mode: number,
    flags: number,
    umask: number,
  ): Promise<CreateReply>;
  /**
   * open(dir, O_TMPFILE): an open regular file with no name (nlink 0) that
   * link() may name later. Absent: the kernel gets ENOSYS (EOPNOTSUPP to
   * the program).
   */
  tmpfile?(caller: Caller, parent: bigint, mode: number, flags: number, umask: number): Promise<CreateReply>;
  read(caller: Caller, ino: bigint, fh: bigint, offset: bigint, size: number): Promise<Buffer>;
  /** Returns the number of bytes written. `data` is only valid until the promise settles. */
  write(
    caller: Caller,
    ino: bigint,
    fh: bigint,
    offset: bigint,
    data: Buffer,
    flags: number,
  ): Promise<number>;
  /**
   * Called on every close() of a file descriptor. Optional: without it the
   * session answers ENOSYS once and the kernel stops sending FLUSH, which
   * saves a round trip per close.
   */
  flush?(caller: Caller, ino: bigint, fh: bigint, lockOwner: bigint): Promise<void>;
  /**
   * `lock`: the last close of an open file that took flock locks
   * (FUSE_RELEASE_FLOCK_UNLOCK) names their lock owner; only with `locks`.
   */
  release(
    caller: Caller,
    ino: bigint,
    fh: bigint,
    flags: number,
    lock?: { owner: bigint; flock: boolean },
  ): Promise<void>;
  fsync(caller: Caller, ino: bigint, fh: bigint, dataOnly: boolean): Promise<void>;
  opendir(caller: Caller, ino: bigint, flags: number): Promise<OpenReply>;
  readdir(
    caller: Caller,
    ino: bigint,
    fh: bigint,
    offset: bigint,
    plus: boolean,
    fill: DirFiller,
  ): Promise<void>;
  releasedir(caller: Caller, ino: bigint, fh: bigint): Promise<void>;
  fsyncdir(caller: Caller, ino: bigint, fh: bigint, dataOnly: boolean): Promise<void>;
  statfs(caller: Caller, ino: bigint): Promise<StatFs>;
  setxattr(caller: Caller, ino: bigint, name: Buffer, value: Buffer, flags: number): Promise<void>;
  /** The value; the session handles the size probe and ERANGE. */
  getxattr(caller: Caller, ino: bigint, name: Buffer): Promise<Buffer>;
  /** Names without NULs; the session joins them and handles the size probe. */
  listxattr(caller: Caller, ino: bigint): Promise<Buffer[]>;
  removexattr(caller: Caller, ino: bigint, name: Buffer): Promise<void>;
  /** Only called when the mount does not use default_permissions. */
  access?(caller: Caller, ino: bigint, mask: number): Promise<void>;
  fallocate?(
    caller: Caller,
    ino: bigint,
    fh: bigint,
    offset: bigint,
    length: bigint,
    mode: number,
  ): Promise<void>;
  lseek?(caller: Caller, ino: bigint, fh: bigint, offset: bigint, whence: number): Promise<bigint>;
  copyFileRange?(
    caller: Caller,
    inoIn: bigint,
    fhIn: bigint,
    offIn: bigint,
    inoOut: bigint,
    fhOut: bigint,
    offOut: bigint,
    length: bigint,
    flags: number,
  ): Promise<number>;
  syncfs?(caller: Caller): Promise<void>;
  /**
   * F_GETLK (with the session option `locks`): the lock that keeps `lock`
   * from being granted, or type F_UNLCK. Absent: ENOSYS.
   */
  getlk?(caller: Caller, ino: bigint, fh: bigint, lock: FileLock): Promise<FileLock>;
  /**
   * F_SETLK / F_SETLKW / flock (with `locks`): EAGAIN when not grantable and
   * `wait` is false; with `wait`, resolves once granted, or rejects with
   * EINTR soon after `signal` aborts (FUSE INTERRUPT). Absent: ENOSYS.
   */
  setlk?(
    caller: Caller,
    ino: bigint,
    fh: bigint,
    lock: FileLock,
    wait: boolean,
    signal: AbortSignal,
  ): Promise<void>;
}

/** A lock as FUSE carries it (fuse_file_lock plus the owner and the FLOCK flag). */
export interface FileLock {
  /** The kernel's lock owner: a process's files (POSIX) or an open file (OFD, flock). */
  owner: bigint;
  start: bigint;
  /** Inclusive; OFFSET_MAX (2^63-1) to the end of the file. */
  end: bigint;
  /** F_RDLCK 0, F_WRLCK 1, F_UNLCK 2. */
  type: number;
  pid: number;
  /** flock(2) rather than fcntl (FUSE_LK_FLOCK). */
  flock: boolean;
}
