import { FsError } from '@dunix/proto';
import type { Cred } from './api.js';

/**
 * POSIX ACLs (access and default), pure rules after Linux's fs/posix_acl.c:
 * the xattr format (`system.posix_acl_access` / `_default`), validation, the
 * access check, chmod's effect on an ACL, the mode an access ACL implies,
 * and what a new inode inherits from its directory's default ACL. The
 * engine keeps an inode's ACLs in its record (InodeRecord.acl / defaultAcl)
 * so that a permission check needs no read beyond the inode it already has.
 */

export const ACL_USER_OBJ = 0x01;
export const ACL_USER = 0x02;
export const ACL_GROUP_OBJ = 0x04;
export const ACL_GROUP = 0x08;
export const ACL_MASK = 0x10;
export const ACL_OTHER = 0x20;

export interface AclEntry {
  tag: number;
  /** rwx bits, 0..7. */
  perm: number;
  /** uid or gid for ACL_USER / ACL_GROUP; -1 otherwise. */
  id: number;
}

export const XATTR_ACL_ACCESS = 'system.posix_acl_access';
export const XATTR_ACL_DEFAULT = 'system.posix_acl_default';

/** posix_acl_xattr_header.a_version. */
const XATTR_VERSION = 2;
const HEADER_BYTES = 4;
const ENTRY_BYTES = 8;
const UNDEFINED_ID = 0xffffffff;
/** Entries per ACL: Linux's bound for what an xattr of 64 KiB can hold is higher; ext4 holds ~500. */
export const ACL_ENTRIES_MAX = 1024;

const TAG_ORDER = [ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER];

function invalid(why: string): FsError {
  return new FsError('INVALID_ARGUMENT', `posix acl: ${why}`);
}

/** Parses and validates an xattr value (EINVAL on anything malformed). */
export function parseAcl(value: Buffer): AclEntry[] {
  if (value.length < HEADER_BYTES || (value.length - HEADER_BYTES) % ENTRY_BYTES !== 0)
    throw invalid(`${value.length} bytes is not a header and whole entries`);
  if (value.readUInt32LE(0) !== XATTR_VERSION) throw invalid(`version ${value.readUInt32LE(0)}`);
  const n = (value.length - HEADER_BYTES) / ENTRY_BYTES;
  if (n > ACL_ENTRIES_MAX) throw invalid(`${n} entries > ${ACL_ENTRIES_MAX}`);
  const out: AclEntry[] = [];
  for (let i = 0; i < n; i++) {
    const at = HEADER_BYTES + i * ENTRY_BYTES;
    const tag = value.readUInt16LE(at);
    const perm = value.readUInt16LE(at + 2);
    const raw = value.readUInt32LE(at + 4);
    const named = tag === ACL_USER || tag === ACL_GROUP;
    out.push({ tag, perm, id: named ? raw : -1 });
  }
  validateAcl(out);
  return out;
}

/** posix_acl_valid: known tags in order, one of each base entry, a mask when named entries exist. */
export function validateAcl(acl: readonly AclEntry[]): void {
  let lastRank = -1;
  let lastId = -1;
  const count = new Map<number, number>();
  for (const e of acl) {
    const rank = TAG_ORDER.indexOf(e.tag);
    if (rank < 0) throw invalid(`unknown tag 0x${e.tag.toString(16)}`);
    if (!Number.isInteger(e.perm) || e.perm < 0 || e.perm > 7) throw invalid(`perm ${e.perm}`);
    const named = e.tag === ACL_USER || e.tag === ACL_GROUP;
    if (named && (!Number.isInteger(e.id) || e.id < 0 || e.id >= UNDEFINED_ID)) throw invalid(`id ${e.id}`);
    if (rank < lastRank) throw invalid('entries out of order');
    if (rank === lastRank) {
      if (!named) throw invalid(`two entries of tag 0x${e.tag.toString(16)}`);
      if (e.id <= lastId) throw invalid(`id ${e.id} repeated or out of order`);
    }
    lastRank = rank;
    lastId = named ? e.id : -1;
    count.set(e.tag, (count.get(e.tag) ?? 0) + 1);
  }
  for (const t of [ACL_USER_OBJ, ACL_GROUP_OBJ, ACL_OTHER])
    if (count.get(t) !== 1) throw invalid(`needs exactly one entry of tag 0x${t.toString(16)}`);
  if ((count.get(ACL_USER) || count.get(ACL_GROUP)) && !count.get(ACL_MASK))
    throw invalid('named entries need a mask entry');
}

export function serializeAcl(acl: readonly AclEntry[]): Buffer {
  const b = Buffer.alloc(HEADER_BYTES + acl.length * ENTRY_BYTES);
  b.writeUInt32LE(XATTR_VERSION, 0);
  acl.forEach((e, i) => {
    const at = HEADER_BYTES + i * ENTRY_BYTES;
    b.writeUInt16LE(e.tag, at);
    b.writeUInt16LE(e.perm, at + 2);
    b.writeUInt32LE(e.id < 0 ? UNDEFINED_ID : e.id, at + 4);
  });
  return b;
}

const find = (acl: readonly AclEntry[], tag: number) => acl.find((e) => e.tag === tag);

/** True when the ACL says no more than the mode bits (only the three base entries). */
export function isBaseAcl(acl: readonly AclEntry[]): boolean {
  return acl.every((e) => e.tag === ACL_USER_OBJ || e.tag === ACL_GROUP_OBJ || e.tag === ACL_OTHER);
}

/** The permission bits (0o777) an access ACL implies: owner, mask (else owning group), other. */
export function modeOfAcl(acl: readonly AclEntry[]): number {
  const group = find(acl, ACL_MASK) ?? find(acl, ACL_GROUP_OBJ)!;
  return (find(acl, ACL_USER_OBJ)!.perm << 6) | (group.perm << 3) | find(acl, ACL_OTHER)!.perm;
}

/** posix_acl_chmod: the ACL after a chmod to `mode` (owner, mask or owning group, other follow). */
export function chmodAcl(acl: readonly AclEntry[], mode: number): AclEntry[] {
  const hasMask = acl.some((e) => e.tag === ACL_MASK);
  return acl.map((e) => {
    if (e.tag === ACL_USER_OBJ) return { ...e, perm: (mode >> 6) & 7 };
    if (e.tag === ACL_MASK || (e.tag === ACL_GROUP_OBJ && !hasMask)) return { ...e, perm: (mode >> 3) & 7 };
    if (e.tag === ACL_OTHER) return { ...e, perm: mode & 7 };
    return e;
  });
}

/**
 * posix_acl_permission for a non-owner, non-root caller: named user entry,
 * else the owning and named groups (any one that grants all of `want`,
 * limited by the mask), else other — and a caller in some matching group
 * that grants too little is refused, not judged as other.
 */
export function aclAllows(
  cred: Cred,
  owner: { uid: number; gid: number },
  acl: readonly AclEntry[],
  want: number,
): boolean {
  const mask = find(acl, ACL_MASK)?.perm ?? 7;
  if (cred.uid === owner.uid) return ((find(acl, ACL_USER_OBJ)?.perm ?? 0) & want) === want;
  const user = acl.find((e) => e.tag === ACL_USER && e.id === cred.uid);
  if (user) return (user.perm & mask & want) === want;
  const inGroup = (gid: number) => cred.gid === gid || cred.groups.includes(gid);
  let matched = false;
  for (const e of acl) {
    const hit = (e.tag === ACL_GROUP_OBJ && inGroup(owner.gid)) || (e.tag === ACL_GROUP && inGroup(e.id));
    if (!hit) continue;
    matched = true;
    if ((e.perm & want) === want) return (e.perm & mask & want) === want;
  }
  if (matched) return false;
  return ((find(acl, ACL_OTHER)?.perm ?? 0) & want) === want;
}

/** What a new inode gets in a directory: its mode, and the ACLs it inherits. */
export interface Inherited {
  mode: number;
  acl?: AclEntry[];
  defaultAcl?: AclEntry[];
}

/**
 * posix_acl_create: with a default ACL on the parent, the new inode's access
 * ACL is that default limited by the requested mode (the umask does not
 * apply), a directory also inherits it as its own default; without one the
 * umask applies to the mode. `mode` holds type and permission bits.
 */
export function inheritAcl(
  parentDefault: readonly AclEntry[] | undefined,
  mode: number,
  umask: number,
  isDir: boolean,
): Inherited {
  if (!parentDefault) return { mode: mode & ~(umask & 0o777) };
  let perms = mode & 0o777;
  let notEquiv = false;
  const acl = parentDefault.map((e) => ({ ...e }));
  let groupObj: AclEntry | undefined;
  let maskObj: AclEntry | undefined;
  for (const e of acl) {
    if (e.tag === ACL_USER_OBJ) {
      e.perm &= perms >> 6;
      perms &= (e.perm << 6) | 0o077;
    } else if (e.tag === ACL_USER || e.tag === ACL_GROUP) notEquiv = true;
    else if (e.tag === ACL_GROUP_OBJ) groupObj = e;
    else if (e.tag === ACL_OTHER) {
      e.perm &= perms & 7;
      perms &= e.perm | 0o770;
    } else if (e.tag === ACL_MASK) {
      maskObj = e;
      notEquiv = true;
    }
  }
  const g = maskObj ?? groupObj!;
  g.perm &= (perms >> 3) & 7;
  perms &= (g.perm << 3) | 0o707;
  const out: Inherited = { mode: (mode & ~0o777) | perms };
  if (notEquiv) out.acl = acl;
  if (isDir) out.defaultAcl = parentDefault.map((e) => ({ ...e }));
  return out;
}
