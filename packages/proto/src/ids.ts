import { FsError } from './errors.js';

/**
 * Structured identifiers.
 *
 * ino_t (64 bits) = placement group (high 16 bits) | sequence (low 48 bits).
 * Any node routes an inode operation from the number alone; each PG's
 * primary allocates its own sequences, so numbers never collide and are
 * never reused. The root directory is ino 1: PG 0, sequence 1.
 */
export const INO_PG_BITS = 16;
export const INO_SEQ_BITS = 48;
export const INO_SEQ_MAX = (1n << 48n) - 1n;
export const PG_COUNT_MAX = 1 << INO_PG_BITS;
export const ROOT_INO = 1n;
/** First sequence a PG hands out (PG 0 starts after the root). */
export function firstSeq(pg: number): bigint {
  return pg === 0 ? 2n : 1n;
}

export function makeIno(pg: number, seq: bigint): bigint {
  if (!Number.isInteger(pg) || pg < 0 || pg >= PG_COUNT_MAX) throw new RangeError(`pg ${pg} out of range`);
  if (seq < 1n || seq > INO_SEQ_MAX) throw new RangeError(`sequence ${seq} out of range`);
  return (BigInt(pg) << 48n) | seq;
}

export function pgOfIno(ino: bigint): number {
  return Number(ino >> 48n);
}

export function seqOfIno(ino: bigint): bigint {
  return ino & INO_SEQ_MAX;
}

/** Checks an inode number from the wire against a volume's PG count. */
export function validateIno(ino: bigint, pgCount: number): bigint {
  if (ino < 1n || ino > 0xffff_ffff_ffff_ffffn || seqOfIno(ino) === 0n || pgOfIno(ino) >= pgCount) {
    throw new FsError('STALE_HANDLE', `inode ${ino} is not a valid inode number of this volume`);
  }
  return ino;
}

/**
 * Folds a 64-bit inode number into 32 bits for old programs (mount option
 * ino32): PG in the high 8 bits (mod 256), sequence in the low 24. Collisions
 * are possible once a PG holds more than 2^24 inodes; it is opt-in.
 */
export function foldIno32(ino: bigint): bigint {
  if (ino === ROOT_INO) return ROOT_INO;
  const folded = ((BigInt(pgOfIno(ino)) & 0xffn) << 24n) | (seqOfIno(ino) & 0xff_ffffn);
  return folded === 0n ? 0xffff_ffffn : folded;
}

/**
 * Device identity of a char/block device inode: either virtual (the same
 * device wherever the tree is mounted) or bound to one node of the cluster.
 * `st_rdev` shows major/minor in the Linux encoding; the binding is kept
 * alongside and readable as the xattr `dunix.device`.
 */
export interface DeviceId {
  bound: boolean;
  /** Node index when bound, 0 otherwise. */
  node: number;
  major: number;
  minor: number;
}

export const DEVICE_NODE_MAX = 0x7fff;
export const DEVICE_MAJOR_MAX = 0xfff;
export const DEVICE_MINOR_MAX = 0xf_ffff;

export function validateDeviceId(d: DeviceId): DeviceId {
  const ok =
    Number.isInteger(d.node) &&
    Number.isInteger(d.major) &&
    Number.isInteger(d.minor) &&
    d.node >= 0 &&
    d.node <= DEVICE_NODE_MAX &&
    d.major >= 0 &&
    d.major <= DEVICE_MAJOR_MAX &&
    d.minor >= 0 &&
    d.minor <= DEVICE_MINOR_MAX &&
    (d.bound || d.node === 0);
  if (!ok) throw new FsError('INVALID_ARGUMENT', `device id ${JSON.stringify(d)} out of range`);
  return d;
}

/** The 32-bit Linux encoding FUSE carries (new_encode_dev). */
export function linuxRdev(d: Pick<DeviceId, 'major' | 'minor'>): number {
  return ((d.minor & 0xff) | (d.major << 8) | ((d.minor & ~0xff) << 12)) >>> 0;
}

/** Inverse of linuxRdev: a virtual device with that major/minor. */
export function deviceFromLinuxRdev(rdev: number): DeviceId {
  const major = (rdev >>> 8) & 0xfff;
  const minor = (rdev & 0xff) | ((rdev >>> 12) & 0xfff00);
  return { bound: false, node: 0, major, minor };
}

/**
 * The structured device id as one 64-bit word: bit 63 = bound, bits 48..62
 * node, bits 0..31 the Linux dev_t encoding of major/minor. Stored this way
 * and shown in the `dunix.device` xattr.
 */
export function encodeDeviceId(d: DeviceId): bigint {
  validateDeviceId(d);
  return (d.bound ? 1n << 63n : 0n) | (BigInt(d.node) << 48n) | BigInt(linuxRdev(d));
}

export function decodeDeviceId(word: bigint): DeviceId {
  if (word < 0n || word > 0xffff_ffff_ffff_ffffn || (word & 0x0000_ffff_0000_0000n) !== 0n) {
    throw new FsError('INVALID_ARGUMENT', `device word ${word} is malformed`);
  }
  const bound = word >> 63n === 1n;
  const node = Number((word >> 48n) & 0x7fffn);
  const { major, minor } = deviceFromLinuxRdev(Number(word & 0xffff_ffffn));
  return validateDeviceId({ bound, node, major, minor });
}
