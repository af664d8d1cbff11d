import { linuxRdev, type wire } from '@dunix/proto';
import type { Attr } from '../fuse/filesystem.js';

/** st_blksize reported to programs: what a write of that size costs one block flush. */
export const BLKSIZE = 128 * 1024;

/** A wire Attr as the FUSE layer's Attr. `sizeOverride`: a larger size this client has written but not yet published. */
export function fuseAttr(a: wire.Attr__Output, sizeOverride?: bigint): Attr {
  let size = BigInt(a.size);
  // st_blocks as the inode's PG counts allocation, plus what this client wrote past the published size.
  let blocks = BigInt(a.blocks);
  if (sizeOverride !== undefined && sizeOverride > size) {
    blocks += (sizeOverride - size + 511n) / 512n;
    size = sizeOverride;
  }
  return {
    ino: BigInt(a.ino),
    size,
    blocks,
    atimeNs: BigInt(a.atimeNs),
    mtimeNs: BigInt(a.mtimeNs),
    ctimeNs: BigInt(a.ctimeNs),
    mode: a.mode,
    nlink: a.nlink,
    uid: a.uid,
    gid: a.gid,
    rdev: a.rdev ? linuxRdev(a.rdev) : 0,
    blksize: BLKSIZE,
  };
}
