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
} as const;

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
