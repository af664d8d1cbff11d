import { FsError } from './errors.js';

/**
 * Wire and namespace limits shared by clients and bricks. Every RPC field is
 * validated against these on both ends; docs/LIMITS.md explains each.
 */
export const limits = {
  /** Bytes in one path component (Linux NAME_MAX; FUSE caps at 1024). */
  nameMaxBytes: 255,
  /** Bytes in a symlink target (PATH_MAX - 1). */
  symlinkMaxBytes: 4095,
  /** Bytes in an xattr name (XATTR_NAME_MAX). */
  xattrNameMaxBytes: 255,
  /** Bytes in one xattr value (XATTR_SIZE_MAX). */
  xattrValueMaxBytes: 64 * 1024,
  /** Largest file: offsets stay exact in a double and inside 2^63. */
  fileSizeMaxBytes: 2 ** 52,
  /** Hard links per inode (ext4's EXT4_LINK_MAX). */
  linkMax: 65000,
  /** Entries returned by one ReadDir. */
  readDirLimitMax: 4096,
  /** Largest block a volume may use. */
  blockSizeMaxBytes: 16 * 1024 * 1024,
  blockSizeMinBytes: 64 * 1024,
  /** Largest inline file a volume may use. */
  inlineMaxBytesMax: 64 * 1024,
  /** Largest gRPC message (a full block plus headers). */
  messageMaxBytes: 16 * 1024 * 1024 + 64 * 1024,
  /** Keys one cross-PG transaction may read or write. */
  txKeysMax: 64,
  /** Open inodes an Unlink names (those whose orphan waits for the last close). */
  openInosMax: 64,
  /** Length of a request id. */
  requestIdMaxBytes: 64,
  /**
   * Blocks one Fallocate or Extend may change in the inode's allocation map
   * (one log entry; ~40 bytes a block): the client splits larger ranges.
   */
  allocExtentsPerCallMax: 4096,
  /** Separate ranges one WriteBlock may carry (a client's buffered random writes of one block). */
  writeExtentsPerCallMax: 128,
  /** Supplementary groups of one caller (Linux NGROUPS_MAX): every permission check scans them. */
  callerGroupsMax: 65536,
  /** Longest a session may ask a read's registration to last (Header.cache_ttl_ms; its kernel TTL). */
  cacheTtlMaxMs: 3_600_000,
  /** Longest a PollInvalidations is held at the brick when nothing waits. */
  invalPollWaitMaxMs: 30_000,
  /** Invalidations in one PollInvalidations reply (more wait for the next poll). */
  invalidationsPerPollMax: 4096,
} as const;

/** fallocate(2) mode bits (linux/falloc.h). */
export const FALLOC_FL = {
  KEEP_SIZE: 0x01,
  PUNCH_HOLE: 0x02,
  NO_HIDE_STALE: 0x04,
  COLLAPSE_RANGE: 0x08,
  ZERO_RANGE: 0x10,
  INSERT_RANGE: 0x20,
  UNSHARE_RANGE: 0x40,
} as const;

/** lseek(2) whence values of holes (SEEK_DATA, SEEK_HOLE). */
export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;

/**
 * The fallocate modes dunixfs serves: 0, KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE,
 * ZERO_RANGE (with or without KEEP_SIZE). COLLAPSE_RANGE, INSERT_RANGE and
 * UNSHARE_RANGE are NOT_SUPPORTED (EOPNOTSUPP), as are unknown bits and a
 * PUNCH_HOLE without KEEP_SIZE or with ZERO_RANGE (the kernel's answers); an
 * empty or negative range is INVALID_ARGUMENT (EINVAL); a range past the
 * largest file is FILE_TOO_LARGE (EFBIG).
 */
export function validateFallocate(mode: number, offset: bigint, length: bigint): void {
  const F = FALLOC_FL;
  const known =
    F.KEEP_SIZE |
    F.PUNCH_HOLE |
    F.NO_HIDE_STALE |
    F.COLLAPSE_RANGE |
    F.ZERO_RANGE |
    F.INSERT_RANGE |
    F.UNSHARE_RANGE;
  if (mode & ~known) throw new FsError('NOT_SUPPORTED', `fallocate mode ${mode}`);
  if (mode & (F.COLLAPSE_RANGE | F.INSERT_RANGE | F.UNSHARE_RANGE | F.NO_HIDE_STALE))
    throw new FsError(
      'NOT_SUPPORTED',
      `fallocate mode ${mode}: collapse, insert and unshare are not supported`,
    );
  if (mode & F.PUNCH_HOLE && (mode & F.ZERO_RANGE || !(mode & F.KEEP_SIZE)))
    throw new FsError('NOT_SUPPORTED', `fallocate mode ${mode}: PUNCH_HOLE needs KEEP_SIZE alone`);
  if (offset < 0n || length <= 0n)
    throw new FsError('INVALID_ARGUMENT', `fallocate range ${offset}+${length}`);
  if (offset + length > BigInt(limits.fileSizeMaxBytes))
    throw new FsError('FILE_TOO_LARGE', `fallocate to ${offset + length} past ${limits.fileSizeMaxBytes}`);
}

export function validateName(name: Uint8Array): Uint8Array {
  if (name.length === 0) throw new FsError('INVALID_ARGUMENT', 'empty name');
  if (name.length > limits.nameMaxBytes) throw new FsError('NAME_TOO_LONG', `${name.length} bytes`);
  if (name.includes(0x2f) || name.includes(0))
    throw new FsError('INVALID_ARGUMENT', 'name contains / or NUL');
  if (
    (name.length === 1 && name[0] === 0x2e) ||
    (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e)
  ) {
    throw new FsError('INVALID_ARGUMENT', '"." and ".." are not entries');
  }
  return name;
}

export function validateXattrName(name: Uint8Array): Uint8Array {
  if (name.length === 0 || name.includes(0)) throw new FsError('INVALID_ARGUMENT', 'bad xattr name');
  if (name.length > limits.xattrNameMaxBytes) throw new FsError('RANGE_TOO_SMALL', 'xattr name too long');
  return name;
}

export function validateRange(offset: bigint, length: number): void {
  if (offset < 0n || length < 0 || offset + BigInt(length) > BigInt(limits.fileSizeMaxBytes)) {
    throw new FsError('FILE_TOO_LARGE', `offset ${offset} + ${length} past ${limits.fileSizeMaxBytes}`);
  }
}
