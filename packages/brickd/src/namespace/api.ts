import type { DirentRecord, InodeRecord } from '../store/records.js';
import type { MetaTxn } from './txn.js';

/** The caller's session and what the brick knows of others' (for session-owned records). */
export interface SessionContext {
  /** The caller's mount session id ('' when unknown). */
  owner: string;
  /** Whether the session that made a record is gone (its mount record expired, past a grace). */
  gone: (rec: { owner: string; sinceNs: bigint }) => boolean;
}

/** Who a namespace operation acts for. uid 0 is the superuser. */
export interface Cred {
  uid: number;
  gid: number;
  groups: readonly number[];
}

export interface EngineConfig {
  pgCount: number;
  inlineMaxBytes: number;
  blockSizeBytes: number;
}

export interface RenameFlags {
  noReplace: boolean;
  exchange: boolean;
}

export interface SetAttrChanges {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: bigint;
  atimeNs?: bigint | 'now';
  mtimeNs?: bigint | 'now';
  killSuidgid?: boolean;
  /** ftruncate through a descriptor opened for writing: write access was checked at open. */
  viaOpenFile?: boolean;
}

export interface EntryResult {
  name: Buffer;
  dirent: DirentRecord;
  inode: InodeRecord;
  /** The directory the entry was made in, after the change (absent for a lookup). */
  dir?: InodeRecord;
}

/** An inode that lost its last link: the client reclaims it (and its blocks) once no open file uses it. */
export interface Unlinked {
  ino: bigint;
  nlink: number;
  size: bigint;
  /** Directories are reclaimed by the brick right after the commit. */
  isDir: boolean;
}

/**
 * The POSIX namespace rules, free of I/O: every operation reads and writes
 * records through the MetaTxn it is given and throws FsError for expected
 * failures. The caller commits the transaction (or drops it on a throw).
 * Invariant violations throw plain Errors.
 */
export interface NamespaceOps {
  /** Creates the root directory (ino 1, mode 0755, owner 0:0) if it is missing. */
  ensureRoot(t: MetaTxn): Promise<void>;
  lookup(
    t: MetaTxn,
    cred: Cred,
    parent: bigint,
    name: Buffer,
  ): Promise<{ dirent: DirentRecord; inode?: InodeRecord }>;
  getattr(t: MetaTxn, ino: bigint): Promise<InodeRecord>;
  /** The file's content when inline (else undefined). */
  readInline(t: MetaTxn, ino: bigint): Promise<Buffer | undefined>;
  /** `truncatedFrom`: old size when a block file shrank (the client trims blocks past the new size). */
  setattr(
    t: MetaTxn,
    cred: Cred,
    ino: bigint,
    changes: SetAttrChanges,
  ): Promise<{ inode: InodeRecord; truncatedFrom?: bigint }>;
  /**
   * Regular files, FIFOs, sockets, char/block devices. rdev is an encoded
   * DeviceId word. `umask` (0: already applied by the kernel) applies
   * unless the parent has a default ACL (acl.ts inheritAcl); mkdir and
   * tmpfile alike.
   */
  mknod(
    t: MetaTxn,
    cred: Cred,
    parent: bigint,
    name: Buffer,
    mode: number,
    rdev: bigint,
    exclusive: boolean,
    umask?: number,
  ): Promise<EntryResult & { existed: boolean }>;
  mkdir(
    t: MetaTxn,
    cred: Cred,
    parent: bigint,
    name: Buffer,
    mode: number,
    umask?: number,
  ): Promise<EntryResult>;
  symlink(t: MetaTxn, cred: Cred, parent: bigint, name: Buffer, target: Buffer): Promise<EntryResult>;
  link(t: MetaTxn, cred: Cred, ino: bigint, newParent: bigint, newName: Buffer): Promise<EntryResult>;
  /** `dir`: the directory after the change. */
  unlink(t: MetaTxn, cred: Cred, parent: bigint, name: Buffer): Promise<Unlinked & { dir: InodeRecord }>;
  rmdir(t: MetaTxn, cred: Cred, parent: bigint, name: Buffer): Promise<Unlinked>;
  rename(
    t: MetaTxn,
    cred: Cred,
    parent: bigint,
    name: Buffer,
    newParent: bigint,
    newName: Buffer,
    flags: RenameFlags,
  ): Promise<{
    replaced?: Unlinked;
    /** Both directories after the change (none: nothing changed). */ dirs?: [InodeRecord, InodeRecord];
  }>;
  readlink(t: MetaTxn, ino: bigint): Promise<Buffer>;
  readdir(
    t: MetaTxn,
    cred: Cred,
    dir: bigint,
    afterCookie: bigint,
    limit: number,
  ): Promise<{ entries: { name: Buffer; dirent: DirentRecord }[]; eof: boolean; parent: bigint }>;
  /** `session`: the caller's and others' sessions, for session-owned names (dunix.listener). */
  setxattr(
    t: MetaTxn,
    cred: Cred,
    ino: bigint,
    name: Buffer,
    value: Buffer,
    flags: number,
    session?: SessionContext,
  ): Promise<void>;
  getxattr(t: MetaTxn, cred: Cred, ino: bigint, name: Buffer, session?: SessionContext): Promise<Buffer>;
  listxattr(t: MetaTxn, cred: Cred, ino: bigint): Promise<Buffer[]>;
  removexattr(t: MetaTxn, cred: Cred, ino: bigint, name: Buffer, session?: SessionContext): Promise<void>;
  /** Permission check for open(2) flags; returns the inode and its inline content. */
  open(t: MetaTxn, cred: Cred, ino: bigint, flags: number): Promise<{ inode: InodeRecord; inline?: Buffer }>;
  /** NOT_INLINE when the file is not inline or offset+length > inlineMaxBytes. */
  writeInline(
    t: MetaTxn,
    cred: Cred,
    ino: bigint,
    offset: bigint,
    data: Buffer,
    killSuidgid: boolean,
  ): Promise<InodeRecord>;
  /**
   * After block writes: size = max(size, end); mtime = ctime = now;
   * dataVersion + 1; `written` blocks enter the allocation map.
   */
  extend(
    t: MetaTxn,
    cred: Cred,
    ino: bigint,
    end: bigint,
    killSuidgid: boolean,
    written?: readonly { index: bigint; end: number }[],
    /** False: the writer does not report written blocks; the allocation map is dropped. */
    writtenReported?: boolean,
  ): Promise<InodeRecord>;
  /**
   * fallocate(2) (mode checked by validateFallocate): the map, size and
   * times; `punch`: the bytes to zero or free on the blocks' PGs.
   */
  fallocate(
    t: MetaTxn,
    ino: bigint,
    mode: number,
    offset: bigint,
    length: bigint,
  ): Promise<{ inode: InodeRecord; punch?: { from: bigint; to: bigint } }>;
  /**
   * open(dir, O_TMPFILE): a regular file with nlink 0 in the parent's PG,
   * linkable once, marked orphan with its owner (the mount holding it).
   */
  tmpfile(
    t: MetaTxn,
    cred: Cred,
    parent: bigint,
    mode: number,
    owner: string,
    umask?: number,
  ): Promise<InodeRecord>;
  /** lseek(2) SEEK_DATA / SEEK_HOLE. */
  seek(t: MetaTxn, ino: bigint, offset: bigint, whence: number): Promise<bigint>;
  /** inline → block file once the content is in block 0; CONFLICT if dataVersion moved on. */
  convertInline(t: MetaTxn, ino: bigint, dataVersion: bigint): Promise<InodeRecord>;
  /** Deletes an orphan (nlink 0) inode with its inline data and xattrs; no-op if gone. */
  reclaim(t: MetaTxn, ino: bigint): Promise<void>;
}
