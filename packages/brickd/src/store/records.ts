import type { AclEntry } from '../namespace/acl.js';

/**
 * Values of the brick store. Records are JSON with 64-bit integers as
 * decimal strings: small, readable in a dump, and versioned by field names.
 */

export interface InodeRecord {
  ino: bigint;
  /** Type and permission bits (st_mode). */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  size: bigint;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  /** Structured device id word (ids.ts encodeDeviceId); 0n for non-devices. */
  rdev: bigint;
  /** Bumped on every change of content or size. */
  dataVersion: bigint;
  /** Content is in the inline record (small regular files; symlink targets). */
  inline: boolean;
  /** Directories: the parent directory (".."). 0n otherwise. */
  parent: bigint;
  /** Directories: number of entries (emptiness without a scan). */
  entries: number;
  /** Directories: next readdir cookie to hand out. */
  nextCookie: bigint;
  /**
   * Regular files created with an allocation map (`alloc` keys, see
   * AllocRecord): st_blocks and SEEK_DATA/SEEK_HOLE come from it. Absent
   * (files from before the map): every byte below the size counts as data.
   */
  allocTracked?: boolean;
  /** Bytes the allocation map counts (each block's length rounded up to 4 KiB). */
  allocBytes?: bigint;
  /** An O_TMPFILE inode not yet linked: link() may give it its first name (nlink 0 -> 1). */
  linkable?: boolean;
  /**
   * POSIX access ACL beyond the mode (namespace/acl.ts; absent when the
   * mode says it all): `system.posix_acl_access`, checked by permission
   * checks. The mode's group bits are its mask.
   */
  acl?: AclEntry[];
  /** Directories: the default ACL new entries inherit (`system.posix_acl_default`). */
  defaultAcl?: AclEntry[];
  /** Sockets and FIFOs: the process fabric's listener record (`dunix.listener`, engine.ts). */
  listener?: ListenerRecord;
  /**
   * Stored extended attributes (user., trusted., security. keys), counted
   * since the inode was made; absent on inodes made before the count
   * (unknown). With no ACL, listener or device binding, 0 tells a client
   * that every getxattr of the inode answers ENODATA (Attr.no_xattrs).
   */
  xattrs?: number;
}

/** Who set a listener record (a mount session id, '' unknown), when, and its value (base64). */
export interface ListenerRecord {
  owner: string;
  sinceNs: bigint;
  value: string;
}

/**
 * The orphan marker's value for an inode with an owner (O_TMPFILE): the
 * mount whose session holds it open, and since when. Orphans of unlink
 * have no value (their client reclaims them at the last close).
 */
export interface OrphanRecord {
  owner: string;
  sinceNs: bigint;
}

/**
 * One block of a file in its inode's allocation map: bytes [0, len) of the
 * block are allocated; `pre`: preallocated (fallocate), never written since,
 * so it reads as zeros and SEEK_DATA treats it as a hole (as ext4 treats
 * unwritten extents).
 */
export interface AllocRecord {
  len: number;
  pre?: boolean;
}

/** Bytes [from, to) of a file whose blocks are still to be zeroed or freed on their PGs (a punch). */
export interface PunchRecord {
  from: bigint;
  to: bigint;
}

export interface DirentRecord {
  ino: bigint;
  /** mode >> 12 */
  type: number;
  cookie: bigint;
}

export interface BlockRecord {
  /** Bytes stored in the block file. */
  length: number;
  /** xxhash64 of each 64 KiB chunk, as 16-digit hex. */
  sums: string[];
}

/**
 * Block bytes in [size, oldSize) of an inode that its PG's primary must still
 * drop on the blocks' PGs (written with the truncate or reclaim that made
 * them unreachable, removed once every block PG has trimmed).
 */
export interface TrimRecord {
  size: bigint;
  oldSize: bigint;
}

export interface PgMetaRecord {
  /** Sequences below this may have been handed out; allocation resumes here after a restart. */
  seqReserved: bigint;
}

const BIG_FIELDS = new Set([
  'ino',
  'size',
  'atimeNs',
  'mtimeNs',
  'ctimeNs',
  'rdev',
  'dataVersion',
  'parent',
  'nextCookie',
  'cookie',
  'seqReserved',
  'oldSize',
  'allocBytes',
  'sinceNs',
  'from',
  'to',
]);

/*
 * No replacer or reviver functions: V8 takes JSON's slow path with either.
 * Converting bigints before stringify and big fields after parse is the same
 * result (any depth; array elements are never big fields) at about a third
 * of the cost: an inode record decoded in 1.4 µs instead of 3.9, encoded in
 * 1.35 instead of 1.95 (decodeRecord was 4.5% of a primary's CPU in a
 * create/rename/unlink profile).
 */

/** A copy of `v` with every bigint as its decimal string. */
function withBigintsAsStrings(v: unknown): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map(withBigintsAsStrings);
  const out: Record<string, unknown> = {};
  for (const k in v) {
    const x = (v as Record<string, unknown>)[k];
    out[k] =
      typeof x === 'bigint'
        ? x.toString()
        : x !== null && typeof x === 'object'
          ? withBigintsAsStrings(x)
          : x;
  }
  return out;
}

/** Turns the decimal strings of BIG_FIELDS back into bigints, in place, at any depth. */
function reviveBigFields(v: unknown): unknown {
  if (Array.isArray(v)) {
    for (const e of v) if (e !== null && typeof e === 'object') reviveBigFields(e);
    return v;
  }
  const o = v as Record<string, unknown>;
  for (const k in o) {
    const x = o[k];
    if (typeof x === 'string') {
      if (BIG_FIELDS.has(k)) o[k] = BigInt(x);
    } else if (x !== null && typeof x === 'object') reviveBigFields(x);
  }
  return v;
}

export function encodeRecord(rec: object): Buffer {
  return Buffer.from(JSON.stringify(withBigintsAsStrings(rec)));
}

export function decodeRecord<T>(buf: Uint8Array): T {
  const text = (
    Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
  ).toString();
  const v: unknown = JSON.parse(text);
  return (v !== null && typeof v === 'object' ? reviveBigFields(v) : v) as T;
}

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFIFO = 0o010000;
export const S_IFSOCK = 0o140000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
export const S_ISUID = 0o4000;
export const S_ISGID = 0o2000;
export const S_ISVTX = 0o1000;

export const isDir = (mode: number) => (mode & S_IFMT) === S_IFDIR;
export const isReg = (mode: number) => (mode & S_IFMT) === S_IFREG;
export const isLnk = (mode: number) => (mode & S_IFMT) === S_IFLNK;
