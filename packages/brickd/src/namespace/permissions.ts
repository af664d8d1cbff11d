import { FsError } from '@dunix/proto';
import { isDir, S_ISGID, S_ISVTX } from '../store/records.js';
import { aclAllows, type AclEntry } from './acl.js';
import type { Cred } from './api.js';

/**
 * Pure permission rules (Linux DAC with POSIX ACLs, no capabilities beyond uid 0).
 * The engine calls these with the records it read in the same transaction.
 */

/** Access bits as in access(2): read, write, execute/search. */
export const R_OK = 4;
export const W_OK = 2;
export const X_OK = 1;

/** The fields of an inode that permission checks read. */
export interface Owned {
  mode: number;
  uid: number;
  gid: number;
  /** Its POSIX access ACL, when it has one beyond the mode (acl.ts). */
  acl?: readonly AclEntry[];
}

/** Group-execute permission bit. */
export const S_IXGRP = 0o010;

export const isRoot = (cred: Cred): boolean => cred.uid === 0;

/** The caller's primary or a supplementary group is `gid` (in_group_p). */
export function inGroup(cred: Cred, gid: number): boolean {
  return cred.gid === gid || cred.groups.includes(gid);
}

/**
 * Whether `cred` may access `inode` for every bit of `want` (R_OK|W_OK|X_OK).
 * Exactly one class applies: owner, else group (primary or supplementary),
 * else other. Root may read and write anything, search any directory, and
 * execute a non-directory that has at least one execute bit.
 */
export function mayAccess(cred: Cred, inode: Owned, want: number): boolean {
  if (isRoot(cred)) {
    if (want & X_OK && !isDir(inode.mode)) return (inode.mode & 0o111) !== 0;
    return true;
  }
  if (inode.acl) return aclAllows(cred, inode, inode.acl, want);
  let bits: number;
  if (cred.uid === inode.uid) bits = (inode.mode >> 6) & 7;
  else if (inGroup(cred, inode.gid)) bits = (inode.mode >> 3) & 7;
  else bits = inode.mode & 7;
  return (bits & want) === want;
}

/** Throws PERMISSION_DENIED (EACCES) unless mayAccess. */
export function checkAccess(cred: Cred, inode: Owned & { ino?: bigint }, want: number): void {
  if (!mayAccess(cred, inode, want)) {
    throw new FsError('PERMISSION_DENIED', `access ${want} to inode ${inode.ino ?? '?'} for uid ${cred.uid}`);
  }
}

/** inode_owner_or_capable: the caller owns the inode or is root. */
export function isOwnerOrRoot(cred: Cred, inode: Owned): boolean {
  return isRoot(cred) || cred.uid === inode.uid;
}

/**
 * The sticky-directory rule for removing or replacing an entry: in a
 * directory with S_ISVTX only the file's owner, the directory's owner or
 * root may delete or rename the entry.
 */
export function mayDeleteFromSticky(cred: Cred, dir: Owned, target: Owned): boolean {
  if ((dir.mode & S_ISVTX) === 0) return true;
  return isRoot(cred) || cred.uid === target.uid || cred.uid === dir.uid;
}

/**
 * setattr_should_drop_sgid: a set-group-ID bit with group-execute set is
 * dropped; without group-execute (a locking marker) it is dropped only when
 * the caller is neither in the file's group nor root.
 */
export function shouldDropSgid(cred: Cred, inode: Owned): boolean {
  if ((inode.mode & S_ISGID) === 0) return false;
  if (inode.mode & S_IXGRP) return true;
  return !isRoot(cred) && !inGroup(cred, inode.gid);
}
