import { decodeDeviceId, FsError, limits, type wire } from '@dunix/proto';
import { blocksOf } from '../namespace/alloc-map.js';
import type { DirentRecord, InodeRecord } from '../store/records.js';
import { S_IFBLK, S_IFCHR, S_IFMT } from '../store/records.js';

/** Conversions between store records and wire messages, and checks of wire fields. */

export function attrToWire(r: InodeRecord): wire.Attr {
  const type = r.mode & S_IFMT;
  return {
    ino: r.ino.toString(),
    mode: r.mode,
    nlink: r.nlink,
    uid: r.uid,
    gid: r.gid,
    size: r.size.toString(),
    atimeNs: r.atimeNs.toString(),
    mtimeNs: r.mtimeNs.toString(),
    ctimeNs: r.ctimeNs.toString(),
    rdev: type === S_IFCHR || type === S_IFBLK ? decodeDeviceId(r.rdev) : null,
    dataVersion: r.dataVersion.toString(),
    inline: r.inline,
    blocks: blocksOf(r).toString(),
    parent: r.parent.toString(),
    noXattrs: hasNoXattrs(r),
  };
}

/** Whether every getxattr of the inode answers ENODATA (Attr.no_xattrs); false when unknown. */
export function hasNoXattrs(r: InodeRecord): boolean {
  const type = r.mode & S_IFMT;
  return r.xattrs === 0 && !r.acl && !r.defaultAcl && !r.listener && type !== S_IFCHR && type !== S_IFBLK;
}

export function direntToWire(name: Buffer, d: DirentRecord, inode?: InodeRecord): wire.Dirent {
  return {
    name,
    ino: d.ino.toString(),
    type: d.type,
    cookie: d.cookie.toString(),
    attr: inode ? attrToWire(inode) : null,
  };
}

const U64_RE = /^\d{1,20}$/;
const I64_RE = /^-?\d{1,19}$/;

/** A uint64 field (decimal string from proto-loader) as bigint. */
export function u64(v: string | number | undefined | null, field: string): bigint {
  const s = typeof v === 'number' ? String(v) : v;
  if (s === undefined || s === null || !U64_RE.test(s))
    throw new FsError('INVALID_ARGUMENT', `${field} is not a uint64`);
  const n = BigInt(s);
  if (n > 0xffff_ffff_ffff_ffffn) throw new FsError('INVALID_ARGUMENT', `${field} is not a uint64`);
  return n;
}

export function i64(v: string | number | undefined | null, field: string): bigint {
  const s = typeof v === 'number' ? String(v) : v;
  if (s === undefined || s === null || !I64_RE.test(s))
    throw new FsError('INVALID_ARGUMENT', `${field} is not an int64`);
  return BigInt(s);
}

export function bytes(v: Buffer | Uint8Array | undefined | null, field: string, max: number): Buffer {
  if (v === undefined || v === null) return Buffer.alloc(0);
  if (v.length > max) throw new FsError('OUT_OF_RANGE', `${field} is ${v.length} bytes, limit ${max}`);
  return Buffer.isBuffer(v) ? v : Buffer.from(v);
}

export function requestId(v: string | undefined | null, mutation: boolean): string {
  const id = v ?? '';
  if (Buffer.byteLength(id) > limits.requestIdMaxBytes)
    throw new FsError('INVALID_ARGUMENT', 'request id too long');
  if (mutation && id.length === 0) throw new FsError('INVALID_ARGUMENT', 'mutation without a request id');
  return id;
}
