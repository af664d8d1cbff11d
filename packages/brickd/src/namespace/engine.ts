import {
  decodeDeviceId,
  directoryPg,
  FsError,
  limits,
  pgOfIno,
  ROOT_INO,
  validateFallocate,
  validateName,
  validateXattrName,
} from '@dunix/proto';
import {
  isDir,
  isLnk,
  isReg,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  S_ISGID,
  S_ISUID,
  S_ISVTX,
  type DirentRecord,
  type InodeRecord,
} from '../store/records.js';
import type {
  Cred,
  EngineConfig,
  EntryResult,
  NamespaceOps,
  RenameFlags,
  SessionContext,
  SetAttrChanges,
  Unlinked,
} from './api.js';
import {
  checkAccess,
  inGroup,
  isOwnerOrRoot,
  isRoot,
  mayAccess,
  mayDeleteFromSticky,
  R_OK,
  S_IXGRP,
  shouldDropSgid,
  W_OK,
  X_OK,
} from './permissions.js';
import {
  chmodAcl,
  inheritAcl,
  isBaseAcl,
  modeOfAcl,
  parseAcl,
  serializeAcl,
  XATTR_ACL_ACCESS,
  XATTR_ACL_DEFAULT,
} from './acl.js';
import * as allocMap from './alloc-map.js';
import type { MetaTxn } from './txn.js';

/** open(2) flag bits as the Linux kernel sends them through FUSE. */
export const O_ACCMODE = 0o3;
export const O_WRONLY = 0o1;
export const O_RDWR = 0o2;
export const O_TRUNC = 0o1000;
/**
 * __FMODE_EXEC: set in the flags of the open the kernel makes to execute a
 * file (execve, uselib). Such an open needs execute permission, not read: a
 * mode 0711 binary runs for everyone, as on a local filesystem.
 */
export const FMODE_EXEC = 0x20;
/** setxattr(2) flags. */
export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;

const XATTR_NAMESPACES = ['user.', 'trusted.', 'security.'] as const;
type XattrNamespace = (typeof XATTR_NAMESPACES)[number];

const MKNOD_TYPES = new Set([S_IFREG, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK]);

/** The readdir type of a mode (DT_* = S_IFMT >> 12). */
export const direntType = (mode: number): number => (mode & S_IFMT) >> 12;

function assertInode(rec: InodeRecord): void {
  if (!Number.isInteger(rec.nlink) || rec.nlink < 0) {
    throw new Error(`invariant: nlink of inode ${rec.ino} is ${rec.nlink}`);
  }
  if (!Number.isInteger(rec.entries) || rec.entries < 0) {
    throw new Error(`invariant: entries of inode ${rec.ino} is ${rec.entries}`);
  }
  if (isDir(rec.mode) && rec.nlink !== 0 && rec.nlink < 2) {
    throw new Error(`invariant: live directory ${rec.ino} has nlink ${rec.nlink}`);
  }
  if (!isDir(rec.mode) && rec.entries !== 0) {
    throw new Error(`invariant: non-directory ${rec.ino} has ${rec.entries} entries`);
  }
  if (rec.size < 0n) throw new Error(`invariant: size of inode ${rec.ino} is ${rec.size}`);
}

/**
 * The inode records one operation touches: each is read once and changed in
 * place, so two roles of the same inode (a parent that is also the renamed
 * entry's old parent, say) never hold diverging copies; `flush` writes every
 * changed record once, after checking its invariants.
 */
class Inodes {
  private readonly cache = new Map<bigint, InodeRecord | undefined>();
  private readonly dirty = new Set<bigint>();
  constructor(private readonly t: MetaTxn) {}

  async get(ino: bigint): Promise<InodeRecord | undefined> {
    if (!this.cache.has(ino)) this.cache.set(ino, await this.t.getInode(ino));
    return this.cache.get(ino);
  }

  async need(ino: bigint): Promise<InodeRecord> {
    const rec = await this.get(ino);
    if (!rec) throw new FsError('NOT_FOUND', `inode ${ino}`);
    return rec;
  }

  /** The inode an entry names; a dangling entry is a broken invariant. */
  async ofEntry(dir: bigint, name: Buffer, dirent: DirentRecord): Promise<InodeRecord> {
    const rec = await this.get(dirent.ino);
    if (!rec)
      throw new Error(`invariant: entry ${name.toString()} of ${dir} names missing inode ${dirent.ino}`);
    return rec;
  }

  add(rec: InodeRecord): void {
    this.cache.set(rec.ino, rec);
    this.dirty.add(rec.ino);
  }

  changed(...recs: (InodeRecord | undefined)[]): void {
    for (const r of recs) if (r) this.dirty.add(r.ino);
  }

  flush(): void {
    for (const ino of this.dirty) {
      const rec = this.cache.get(ino)!;
      assertInode(rec);
      this.t.putInode(rec);
    }
    this.dirty.clear();
  }
}

function unlinked(rec: InodeRecord): Unlinked {
  return { ino: rec.ino, nlink: rec.nlink, size: rec.size, isDir: isDir(rec.mode) };
}

function killSuidgid(mode: number): number {
  let m = mode & ~S_ISUID;
  if (m & S_IXGRP) m &= ~S_ISGID;
  return m;
}

/**
 * `dunix.device`: the structured binding of a device inode (DESIGN.md,
 * "virtual inodes"): whether it is virtual (any node's device) or bound to
 * one node, and its major/minor, as JSON. Computed from the inode's rdev,
 * read-only, not listed (a copy tool must not carry it to another
 * filesystem); mknod sets the binding.
 */
export const XATTR_DEVICE = 'dunix.device';

export function deviceBinding(rdev: bigint): Buffer {
  const d = decodeDeviceId(rdev);
  return Buffer.from(
    JSON.stringify({ binding: d.bound ? 'node' : 'virtual', node: d.node, major: d.major, minor: d.minor }),
  );
}

/**
 * `dunix.listener`: the process fabric's listener record of a socket or
 * FIFO inode (an opaque value: node id, pid, endpoint), kept in the inode
 * record with the mount session that set it. Once that session is gone
 * (SessionContext.gone) the record reads as absent and may be set anew:
 * a listener dies with its machine's session without anyone clearing it.
 */
export const XATTR_LISTENER = 'dunix.listener';
export const LISTENER_VALUE_MAX_BYTES = 4096;

/** Which ACL an xattr name is (they live in the inode record, acl.ts), or undefined. */
function aclXattrKind(name: Buffer): 'access' | 'default' | undefined {
  const n = name.toString('latin1');
  return n === XATTR_ACL_ACCESS ? 'access' : n === XATTR_ACL_DEFAULT ? 'default' : undefined;
}

function xattrNamespace(name: Buffer): XattrNamespace {
  for (const ns of XATTR_NAMESPACES) {
    if (name.length >= ns.length && name.subarray(0, ns.length).toString('latin1') === ns) {
      if (name.length === ns.length)
        throw new FsError('INVALID_ARGUMENT', `xattr name "${ns}" has no suffix`);
      return ns;
    }
  }
  throw new FsError('NOT_SUPPORTED', `xattr namespace of ${name.toString()}`);
}

/** Linux xattr_permission for the namespaces dunix supports. */
function checkXattrAccess(cred: Cred, inode: InodeRecord, ns: XattrNamespace, write: boolean): void {
  if (ns === 'trusted.') {
    // Invisible to unprivileged callers: reads find nothing, writes are refused.
    if (!isRoot(cred)) throw new FsError(write ? 'NOT_PERMITTED' : 'NO_XATTR', 'trusted.* is for root');
    return;
  }
  if (ns === 'security.') {
    if (write && !isRoot(cred)) throw new FsError('NOT_PERMITTED', 'security.* is set by root');
    return;
  }
  if (!isReg(inode.mode) && !isDir(inode.mode)) {
    throw new FsError(write ? 'NOT_PERMITTED' : 'NO_XATTR', 'user.* only on regular files and directories');
  }
  if (write && isDir(inode.mode) && inode.mode & S_ISVTX && !isOwnerOrRoot(cred, inode)) {
    throw new FsError('NOT_PERMITTED', 'user.* of a sticky directory is for its owner');
  }
  checkAccess(cred, inode, write ? W_OK : R_OK);
}

/**
 * The POSIX namespace rules (Linux behaviour) over a MetaTxn. Every
 * operation makes all its checks before its first write, so a thrown
 * FsError leaves nothing in the transaction worth committing.
 *
 * Inline files: the inline record holds the first bytes of the content; it
 * may be shorter than `size` (after a truncate that grew the file), and the
 * bytes between its end and `size` read as zeros.
 */
export class NamespaceEngine implements NamespaceOps {
  constructor(private readonly cfg: EngineConfig) {
    if (!Number.isInteger(cfg.pgCount) || cfg.pgCount < 1) throw new Error(`pgCount ${cfg.pgCount}`);
    if (
      !Number.isInteger(cfg.inlineMaxBytes) ||
      cfg.inlineMaxBytes < 0 ||
      cfg.inlineMaxBytes > limits.inlineMaxBytesMax
    ) {
      throw new Error(`inlineMaxBytes ${cfg.inlineMaxBytes}`);
    }
  }

  async ensureRoot(t: MetaTxn): Promise<void> {
    if (await t.getInode(ROOT_INO)) return;
    const now = t.nowNs;
    t.putInode({
      ino: ROOT_INO,
      mode: S_IFDIR | 0o755,
      nlink: 2,
      uid: 0,
      gid: 0,
      size: 0n,
      atimeNs: now,
      mtimeNs: now,
      ctimeNs: now,
      rdev: 0n,
      dataVersion: 0n,
      inline: false,
      parent: ROOT_INO,
      entries: 0,
      nextCookie: 1n,
      xattrs: 0,
    });
  }

  async lookup(
    t: MetaTxn,
    cred: Cred,
    parent: bigint,
    name: Buffer,
  ): Promise<{ dirent: DirentRecord; inode?: InodeRecord }> {
    validateName(name);
    const inodes = new Inodes(t);
    await this.searchDir(inodes, cred, parent);
    const dirent = await t.getDirent(parent, name);
    if (!dirent) throw new FsError('NOT_FOUND', `${name.toString()} in ${parent}`);
    const inode = await inodes.get(dirent.ino);
    return inode ? { dirent, inode } : { dirent };
  }

  async getattr(t: MetaTxn, ino: bigint): Promise<InodeRecord> {
    return new Inodes(t).need(ino);
  }

  async readInline(t: MetaTxn, ino: bigint): Promise<Buffer | undefined> {
    const inode = await new Inodes(t).need(ino);
    if (!inode.inline) return undefined;
    return (await t.getInline(ino)) ?? Buffer.alloc(0);
  }

  async setattr(
    t: MetaTxn,
    cred: Cred,
    ino: bigint,
    changes: SetAttrChanges,
  ): Promise<{ inode: InodeRecord; truncatedFrom?: bigint }> {
    const inodes = new Inodes(t);
    const inode = await inodes.need(ino);
    const now = t.nowNs;

    // Checks, in the order Linux makes them (truncate, may_setattr, setattr_prepare).
    const size = changes.size;
    if (size !== undefined) {
      if (isDir(inode.mode)) throw new FsError('IS_A_DIRECTORY', `truncate of directory ${ino}`);
      if (!isReg(inode.mode)) throw new FsError('INVALID_ARGUMENT', `truncate of non-regular ${ino}`);
      if (!changes.viaOpenFile) checkAccess(cred, inode, W_OK);
      if (size < 0n) throw new FsError('INVALID_ARGUMENT', `size ${size}`);
      if (size > BigInt(limits.fileSizeMaxBytes)) throw new FsError('FILE_TOO_LARGE', `size ${size}`);
    }
    const touching = changes.atimeNs !== undefined || changes.mtimeNs !== undefined;
    if (touching && !isOwnerOrRoot(cred, inode) && !mayAccess(cred, inode, W_OK)) {
      throw new FsError('PERMISSION_DENIED', `times of ${ino}`);
    }
    if (
      changes.uid !== undefined &&
      !isRoot(cred) &&
      !(cred.uid === inode.uid && changes.uid === inode.uid)
    ) {
      throw new FsError('NOT_PERMITTED', `chown of ${ino} to uid ${changes.uid}`);
    }
    if (
      changes.gid !== undefined &&
      !isRoot(cred) &&
      !(cred.uid === inode.uid && (changes.gid === inode.gid || inGroup(cred, changes.gid)))
    ) {
      throw new FsError('NOT_PERMITTED', `chown of ${ino} to gid ${changes.gid}`);
    }
    // The kernel clears suid/sgid after a write by a non-owner with a chmod
    // in the writer's name (FUSE without handle_killpriv): allowed when it
    // only drops those bits, since the writer already had write access.
    const onlyDropsSetId =
      changes.mode !== undefined &&
      (changes.mode & ~(S_ISUID | S_ISGID)) === (inode.mode & 0o7777 & ~(S_ISUID | S_ISGID)) &&
      (changes.mode & (S_ISUID | S_ISGID) & ~inode.mode) === 0 &&
      changes.uid === undefined &&
      changes.gid === undefined &&
      changes.size === undefined &&
      mayAccess(cred, inode, W_OK);
    if (changes.mode !== undefined && !isOwnerOrRoot(cred, inode) && !onlyDropsSetId) {
      throw new FsError('NOT_PERMITTED', `chmod of ${ino}`);
    }
    const explicitTime = typeof changes.atimeNs === 'bigint' || typeof changes.mtimeNs === 'bigint';
    if (explicitTime && !isOwnerOrRoot(cred, inode)) {
      throw new FsError('NOT_PERMITTED', `explicit times of ${ino}`);
    }

    // Changes.
    let mode = inode.mode;
    if (changes.mode !== undefined) {
      mode = (inode.mode & S_IFMT) | (changes.mode & 0o7777);
      if (!isRoot(cred) && !inGroup(cred, changes.gid ?? inode.gid)) mode &= ~S_ISGID;
    }
    if ((changes.uid !== undefined || changes.gid !== undefined) && !isDir(inode.mode)) {
      // chown_common: a change of owner drops set-user-ID and (per setattr_should_drop_sgid) set-group-ID.
      const drop = shouldDropSgid(cred, { mode, uid: inode.uid, gid: inode.gid });
      mode &= ~S_ISUID;
      if (drop) mode &= ~S_ISGID;
    }
    if (changes.killSuidgid) mode = killSuidgid(mode);
    // posix_acl_chmod: the ACL's owner, mask (or owning group) and other follow the new bits.
    if (inode.acl && (mode & 0o777) !== (inode.mode & 0o777)) inode.acl = chmodAcl(inode.acl, mode);
    inode.mode = mode;
    if (changes.uid !== undefined) inode.uid = changes.uid;
    if (changes.gid !== undefined) inode.gid = changes.gid;

    let truncatedFrom: bigint | undefined;
    if (size !== undefined && size !== inode.size) {
      if (inode.inline) {
        const data = await t.getInline(ino);
        if (data && BigInt(data.length) > size) t.putInline(ino, data.subarray(0, Number(size)));
      } else if (size < inode.size) {
        truncatedFrom = inode.size;
      }
      inode.size = size;
      inode.dataVersion += 1n;
      inode.mtimeNs = now;
    }
    if (changes.atimeNs !== undefined) inode.atimeNs = changes.atimeNs === 'now' ? now : changes.atimeNs;
    if (changes.mtimeNs !== undefined) inode.mtimeNs = changes.mtimeNs === 'now' ? now : changes.mtimeNs;
    inode.ctimeNs = now;
    inodes.changed(inode);
    inodes.flush();
    return truncatedFrom === undefined ? { inode } : { inode, truncatedFrom };
  }

  async mknod(
    t: MetaTxn,
    cred: Cred,
    parent: bigint,
    name: Buffer,
    mode: number,
    rdev: bigint,
    exclusive: boolean,
    umask = 0,
  ): Promise<EntryResult & { existed: boolean }> {
    const type = (mode & S_IFMT) === 0 ? S_IFREG : mode & S_IFMT;
    if (type === S_IFDIR) throw new FsError('NOT_PERMITTED', 'mknod of a directory');
    if (!MKNOD_TYPES.has(type)) throw new FsError('INVALID_ARGUMENT', `mknod type ${type.toString(8)}`);
    validateName(name);
    const inodes = new Inodes(t);
    const dir = await this.searchDir(inodes, cred, parent);
    const existing = await t.getDirent(parent, name);
    if (existing) {
      if (exclusive) throw new FsError('ALREADY_EXISTS', `${name.toString()} in ${parent}`);
      const inode = await inodes.ofEntry(parent, name, existing);
      if (isDir(inode.mode)) throw new FsError('IS_A_DIRECTORY', `${name.toString()} in ${parent}`);
      return { name, dirent: existing, inode, existed: true };
    }
    checkAccess(cred, dir, W_OK | X_OK);
    const device = type === S_IFCHR || type === S_IFBLK;
    if (device && !isRoot(cred)) throw new FsError('NOT_PERMITTED', 'device nodes are made by root');
    const ino = await t.allocIno(pgOfIno(parent));
    const inode = this.newInode(t, cred, dir, ino, type | (mode & 0o7777), umask);
    inodes.add(inode);
    inode.rdev = device ? rdev : 0n;
    inode.inline = type === S_IFREG;
    const dirent = this.addEntry(t, inodes, dir, name, inode);
    inodes.flush();
    return { name, dirent, inode, dir, existed: false };
  }

  async mkdir(
    t: MetaTxn,
    cred: Cred,
    parent: bigint,
    name: Buffer,
    mode: number,
    umask = 0,
  ): Promise<EntryResult> {
    validateName(name);
    const inodes = new Inodes(t);
    const dir = await this.searchDir(inodes, cred, parent);
    if (await t.getDirent(parent, name))
      throw new FsError('ALREADY_EXISTS', `${name.toString()} in ${parent}`);
    checkAccess(cred, dir, W_OK | X_OK);
    if (dir.nlink >= limits.linkMax) throw new FsError('TOO_MANY_LINKS', `directory ${parent}`);
    const ino = await t.allocIno(directoryPg(parent, name, this.cfg.pgCount));
    // mkdir ignores set-user-ID and set-group-ID in `mode`; set-group-ID comes from the parent.
    const inode = this.newInode(t, cred, dir, ino, S_IFDIR | (mode & 0o1777), umask);
    inodes.add(inode);
    inode.nlink = 2;
    inode.parent = parent;
    dir.nlink += 1;
    const dirent = this.addEntry(t, inodes, dir, name, inode);
    inodes.flush();
    return { name, dirent, inode, dir };
  }

  async symlink(t: MetaTxn, cred: Cred, parent: bigint, name: Buffer, target: Buffer): Promise<EntryResult> {
    if (target.length === 0) throw new FsError('NOT_FOUND', 'empty symlink target');
    if (target.length > limits.symlinkMaxBytes)
      throw new FsError('NAME_TOO_LONG', `target of ${target.length} bytes`);
    if (target.includes(0)) throw new FsError('INVALID_ARGUMENT', 'symlink target contains NUL');
    validateName(name);
    const inodes = new Inodes(t);
    const dir = await this.searchDir(inodes, cred, parent);
    if (await t.getDirent(parent, name))
      throw new FsError('ALREADY_EXISTS', `${name.toString()} in ${parent}`);
    checkAccess(cred, dir, W_OK | X_OK);
    const ino = await t.allocIno(pgOfIno(parent));
    const inode = this.newInode(t, cred, dir, ino, S_IFLNK | 0o777);
    inodes.add(inode);
    inode.inline = true;
    inode.size = BigInt(target.length);
    t.putInline(ino, target);
    const dirent = this.addEntry(t, inodes, dir, name, inode);
    inodes.flush();
    return { name, dirent, inode };
  }

  async link(t: MetaTxn, cred: Cred, ino: bigint, newParent: bigint, newName: Buffer): Promise<EntryResult> {
    validateName(newName);
    const inodes = new Inodes(t);
    const inode = await inodes.need(ino);
    const dir = await this.searchDir(inodes, cred, newParent);
    if (await t.getDirent(newParent, newName)) {
      throw new FsError('ALREADY_EXISTS', `${newName.toString()} in ${newParent}`);
    }
    checkAccess(cred, dir, W_OK | X_OK);
    if (isDir(inode.mode)) throw new FsError('NOT_PERMITTED', `hard link to directory ${ino}`);
    if (inode.nlink === 0 && !inode.linkable) throw new FsError('NOT_FOUND', `inode ${ino} has no links`);
    if (inode.nlink >= limits.linkMax) throw new FsError('TOO_MANY_LINKS', `inode ${ino}`);
    const now = t.nowNs;
    if (inode.linkable) {
      // An O_TMPFILE inode gets its first name: no longer an orphan.
      delete inode.linkable;
      t.setOrphan(ino, false);
    }
    inode.nlink += 1;
    inode.ctimeNs = now;
    inodes.changed(inode);
    const dirent = this.addEntry(t, inodes, dir, newName, inode);
    inodes.flush();
    return { name: newName, dirent, inode, dir };
  }

  /** The entry unlink and rmdir remove, with the checks both share (name, search, sticky). */
  private async entryToRemove(t: MetaTxn, cred: Cred, parent: bigint, name: Buffer) {
    validateName(name);
    const inodes = new Inodes(t);
    const dir = await this.searchDir(inodes, cred, parent);
    const dirent = await t.getDirent(parent, name);
    if (!dirent) throw new FsError('NOT_FOUND', `${name.toString()} in ${parent}`);
    const target = await inodes.ofEntry(parent, name, dirent);
    this.checkDelete(cred, dir, target);
    return { inodes, dir, dirent, target };
  }

  async unlink(
    t: MetaTxn,
    cred: Cred,
    parent: bigint,
    name: Buffer,
  ): Promise<Unlinked & { dir: InodeRecord }> {
    const { inodes, dir, dirent, target } = await this.entryToRemove(t, cred, parent, name);
    if (isDir(target.mode)) throw new FsError('IS_A_DIRECTORY', `unlink of directory ${target.ino}`);
    this.removeEntry(t, inodes, dir, name, dirent);
    this.dropLink(t, inodes, target);
    inodes.flush();
    return { ...unlinked(target), dir };
  }

  async rmdir(t: MetaTxn, cred: Cred, parent: bigint, name: Buffer): Promise<Unlinked> {
    const { inodes, dir, dirent, target } = await this.entryToRemove(t, cred, parent, name);
    if (!isDir(target.mode)) throw new FsError('NOT_A_DIRECTORY', `rmdir of non-directory ${target.ino}`);
    if (target.entries > 0) throw new FsError('DIRECTORY_NOT_EMPTY', `directory ${target.ino}`);
    this.removeEntry(t, inodes, dir, name, dirent);
    dir.nlink -= 1;
    this.dropLink(t, inodes, target);
    inodes.flush();
    return unlinked(target);
  }

  async rename(
    t: MetaTxn,
    cred: Cred,
    parent: bigint,
    name: Buffer,
    newParent: bigint,
    newName: Buffer,
    flags: RenameFlags,
  ): Promise<{ replaced?: Unlinked; dirs?: [InodeRecord, InodeRecord] }> {
    if (flags.noReplace && flags.exchange) throw new FsError('INVALID_ARGUMENT', 'noReplace with exchange');
    validateName(name);
    validateName(newName);
    const inodes = new Inodes(t);
    const oldDir = await this.searchDir(inodes, cred, parent);
    const newDir = await this.searchDir(inodes, cred, newParent);
    const src = await t.getDirent(parent, name);
    if (!src) throw new FsError('NOT_FOUND', `${name.toString()} in ${parent}`);
    const dst = await t.getDirent(newParent, newName);
    if (dst && flags.noReplace) throw new FsError('ALREADY_EXISTS', `${newName.toString()} in ${newParent}`);
    if (!dst && flags.exchange) throw new FsError('NOT_FOUND', `${newName.toString()} in ${newParent}`);
    const source = await inodes.ofEntry(parent, name, src);
    const target = dst && (await inodes.ofEntry(newParent, newName, dst));
    const srcIsDir = isDir(source.mode);
    const dstIsDir = target !== undefined && isDir(target.mode);
    const crossing = parent !== newParent;

    // lock_rename's traps: no directory may move below itself.
    if (crossing && srcIsDir && (await this.isAncestor(inodes, source.ino, newParent))) {
      throw new FsError('INVALID_ARGUMENT', `rename of ${source.ino} into its own subtree`);
    }
    if (crossing && dstIsDir && (await this.isAncestor(inodes, target.ino, parent))) {
      throw new FsError(
        flags.exchange ? 'INVALID_ARGUMENT' : 'DIRECTORY_NOT_EMPTY',
        `${target.ino} is an ancestor`,
      );
    }
    if (target && target.ino === source.ino) return {};

    // vfs_rename: may_delete the source, may_create or may_delete the target.
    this.checkDelete(cred, oldDir, source);
    if (target) {
      this.checkDelete(cred, newDir, target);
      if (!flags.exchange && srcIsDir && !dstIsDir) {
        throw new FsError('NOT_A_DIRECTORY', `rename of directory over ${target.ino}`);
      }
      if (!flags.exchange && !srcIsDir && dstIsDir) {
        throw new FsError('IS_A_DIRECTORY', `rename over directory ${target.ino}`);
      }
    } else {
      checkAccess(cred, newDir, W_OK | X_OK);
    }
    if (crossing) {
      // Moving a directory rewrites its "..".
      if (srcIsDir) checkAccess(cred, source, W_OK);
      if (flags.exchange && dstIsDir) checkAccess(cred, target, W_OK);
      if (srcIsDir && !dstIsDir && newDir.nlink >= limits.linkMax) {
        throw new FsError('TOO_MANY_LINKS', `directory ${newParent}`);
      }
      if (flags.exchange && !srcIsDir && dstIsDir && oldDir.nlink >= limits.linkMax) {
        throw new FsError('TOO_MANY_LINKS', `directory ${parent}`);
      }
    }
    if (!flags.exchange && dstIsDir && target.entries > 0) {
      throw new FsError('DIRECTORY_NOT_EMPTY', `directory ${target.ino}`);
    }

    const now = t.nowNs;
    let replaced: Unlinked | undefined;
    if (flags.exchange) {
      const other = target!;
      t.putDirent(parent, name, { ino: other.ino, type: direntType(other.mode), cookie: src.cookie });
      t.putDirent(newParent, newName, {
        ino: source.ino,
        type: direntType(source.mode),
        cookie: dst!.cookie,
      });
      if (crossing && srcIsDir) this.reparent(source, oldDir, newDir);
      if (crossing && dstIsDir) this.reparent(other, newDir, oldDir);
      other.ctimeNs = now;
      inodes.changed(other);
    } else {
      if (target) {
        this.removeEntry(t, inodes, newDir, newName, dst!);
        if (dstIsDir) newDir.nlink -= 1;
        this.dropLink(t, inodes, target);
        replaced = unlinked(target);
      }
      this.removeEntry(t, inodes, oldDir, name, src);
      if (crossing && srcIsDir) this.reparent(source, oldDir, newDir);
      this.addEntry(t, inodes, newDir, newName, source);
    }
    source.ctimeNs = now;
    oldDir.mtimeNs = oldDir.ctimeNs = now;
    newDir.mtimeNs = newDir.ctimeNs = now;
    inodes.changed(source, oldDir, newDir);
    inodes.flush();
    const dirs: [InodeRecord, InodeRecord] = [oldDir, newDir];
    return replaced ? { replaced, dirs } : { dirs };
  }

  async readlink(t: MetaTxn, ino: bigint): Promise<Buffer> {
    const inode = await new Inodes(t).need(ino);
    if (!isLnk(inode.mode)) throw new FsError('INVALID_ARGUMENT', `readlink of non-symlink ${ino}`);
    const target = await t.getInline(ino);
    if (!target) throw new Error(`invariant: symlink ${ino} has no target record`);
    return target;
  }

  async readdir(
    t: MetaTxn,
    cred: Cred,
    dir: bigint,
    afterCookie: bigint,
    limit: number,
  ): Promise<{ entries: { name: Buffer; dirent: DirentRecord }[]; eof: boolean; parent: bigint }> {
    if (!Number.isInteger(limit) || limit < 1)
      throw new FsError('INVALID_ARGUMENT', `readdir limit ${limit}`);
    const capped = Math.min(limit, limits.readDirLimitMax);
    const inode = await new Inodes(t).need(dir);
    if (!isDir(inode.mode)) throw new FsError('NOT_A_DIRECTORY', `readdir of ${dir}`);
    checkAccess(cred, inode, R_OK);
    const rows = await t.listDirents(dir, afterCookie, capped);
    return {
      entries: rows.map((r) => ({ name: r.name, dirent: r.rec })),
      eof: rows.length < capped,
      parent: inode.parent,
    };
  }

  async setxattr(
    t: MetaTxn,
    cred: Cred,
    ino: bigint,
    name: Buffer,
    value: Buffer,
    flags: number,
    session?: SessionContext,
  ): Promise<void> {
    if (flags & ~(XATTR_CREATE | XATTR_REPLACE))
      throw new FsError('INVALID_ARGUMENT', `xattr flags ${flags}`);
    if (name.toString('latin1') === XATTR_LISTENER)
      return this.setListener(t, cred, ino, value, flags, session);
    validateXattrName(name);
    if (value.length > limits.xattrValueMaxBytes) {
      throw new FsError('OUT_OF_RANGE', `xattr value of ${value.length} bytes`);
    }
    const aclKind = aclXattrKind(name);
    if (aclKind) return this.setAcl(t, cred, ino, aclKind, value, flags);
    if (name.toString('latin1') === XATTR_DEVICE)
      throw new FsError('NOT_PERMITTED', `${XATTR_DEVICE} is set by mknod`);
    const ns = xattrNamespace(name);
    const inodes = new Inodes(t);
    const inode = await inodes.need(ino);
    checkXattrAccess(cred, inode, ns, true);
    const existing = await t.getXattr(ino, name);
    if (existing && flags & XATTR_CREATE) throw new FsError('ALREADY_EXISTS', `xattr ${name.toString()}`);
    if (!existing && flags & XATTR_REPLACE) throw new FsError('NO_XATTR', `xattr ${name.toString()}`);
    t.putXattr(ino, name, value);
    if (!existing && inode.xattrs !== undefined) inode.xattrs++;
    inode.ctimeNs = t.nowNs;
    inodes.changed(inode);
    inodes.flush();
  }

  async getxattr(
    t: MetaTxn,
    cred: Cred,
    ino: bigint,
    name: Buffer,
    session?: SessionContext,
  ): Promise<Buffer> {
    validateXattrName(name);
    if (name.toString('latin1') === XATTR_LISTENER) {
      // Like stat: whoever may look the inode up may read where it listens.
      const rec = (await new Inodes(t).need(ino)).listener;
      if (!rec || (session && rec.owner && session.gone(rec)))
        throw new FsError('NO_XATTR', `no listener on ${ino}`);
      return Buffer.from(rec.value, 'base64');
    }
    const aclKind = aclXattrKind(name);
    if (aclKind) {
      // Anyone may read an ACL (as on Linux): it says no more than stat's mode would.
      const inode = await new Inodes(t).need(ino);
      const acl = aclKind === 'access' ? inode.acl : inode.defaultAcl;
      if (!acl) throw new FsError('NO_XATTR', `xattr ${name.toString()}`);
      return serializeAcl(acl);
    }
    if (name.toString('latin1') === XATTR_DEVICE) {
      const inode = await new Inodes(t).need(ino);
      const type = inode.mode & S_IFMT;
      if (type !== S_IFCHR && type !== S_IFBLK) throw new FsError('NO_XATTR', `inode ${ino} is no device`);
      return deviceBinding(inode.rdev);
    }
    const ns = xattrNamespace(name);
    const inode = await new Inodes(t).need(ino);
    checkXattrAccess(cred, inode, ns, false);
    const value = await t.getXattr(ino, name);
    if (!value) throw new FsError('NO_XATTR', `xattr ${name.toString()}`);
    return value;
  }

  /** Like Linux, listing needs no permission on the inode; trusted.* names are hidden from non-root. */
  async listxattr(t: MetaTxn, cred: Cred, ino: bigint): Promise<Buffer[]> {
    const inode = await new Inodes(t).need(ino);
    const stored = await t.listXattrNames(ino);
    const names = isRoot(cred)
      ? stored
      : stored.filter((n) => !n.subarray(0, 8).equals(Buffer.from('trusted.')));
    if (inode.acl) names.push(Buffer.from(XATTR_ACL_ACCESS));
    if (inode.defaultAcl) names.push(Buffer.from(XATTR_ACL_DEFAULT));
    return names;
  }

  async removexattr(
    t: MetaTxn,
    cred: Cred,
    ino: bigint,
    name: Buffer,
    session?: SessionContext,
  ): Promise<void> {
    validateXattrName(name);
    if (name.toString('latin1') === XATTR_LISTENER)
      return this.setListener(t, cred, ino, undefined, 0, session);
    const aclKind = aclXattrKind(name);
    if (aclKind) return this.setAcl(t, cred, ino, aclKind, undefined, 0);
    if (name.toString('latin1') === XATTR_DEVICE)
      throw new FsError('NOT_PERMITTED', `${XATTR_DEVICE} is set by mknod`);
    const ns = xattrNamespace(name);
    const inodes = new Inodes(t);
    const inode = await inodes.need(ino);
    checkXattrAccess(cred, inode, ns, true);
    if (!(await t.getXattr(ino, name))) throw new FsError('NO_XATTR', `xattr ${name.toString()}`);
    t.deleteXattr(ino, name);
    if (inode.xattrs !== undefined) inode.xattrs = Math.max(0, inode.xattrs - 1);
    inode.ctimeNs = t.nowNs;
    inodes.changed(inode);
    inodes.flush();
  }

  /**
   * Sets (value) or clears (undefined) a socket's or FIFO's listener record,
   * for a caller that may write the inode; a record whose session is gone
   * counts as absent (XATTR_CREATE succeeds over it).
   */
  private async setListener(
    t: MetaTxn,
    cred: Cred,
    ino: bigint,
    value: Buffer | undefined,
    flags: number,
    session: SessionContext | undefined,
  ): Promise<void> {
    if (value && value.length > LISTENER_VALUE_MAX_BYTES)
      throw new FsError('OUT_OF_RANGE', `listener record of ${value.length} bytes`);
    const inodes = new Inodes(t);
    const inode = await inodes.need(ino);
    const type = inode.mode & S_IFMT;
    if (type !== S_IFSOCK && type !== S_IFIFO)
      throw new FsError('NOT_PERMITTED', `${XATTR_LISTENER} only on sockets and FIFOs`);
    checkAccess(cred, inode, W_OK);
    const rec = inode.listener;
    const present = rec !== undefined && !(session && rec.owner && session.gone(rec));
    if (flags & XATTR_CREATE && present) throw new FsError('ALREADY_EXISTS', `listener of ${ino}`);
    if ((flags & XATTR_REPLACE || !value) && !present) throw new FsError('NO_XATTR', `no listener on ${ino}`);
    if (value)
      inode.listener = { owner: session?.owner ?? '', sinceNs: t.nowNs, value: value.toString('base64') };
    else delete inode.listener;
    inode.ctimeNs = t.nowNs;
    inodes.changed(inode);
    inodes.flush();
  }

  /**
   * set_posix_acl: only the owner or root; no ACLs on symlinks; a default
   * ACL only on directories. An access ACL sets the mode's permission bits
   * (its mask becomes the group bits) and is kept only when it says more
   * than the mode; set-group-ID goes unless the caller is in the group.
   * `value` undefined removes (removexattr, which leaves the mode alone).
   */
  private async setAcl(
    t: MetaTxn,
    cred: Cred,
    ino: bigint,
    kind: 'access' | 'default',
    value: Buffer | undefined,
    flags: number,
  ): Promise<void> {
    const acl = value === undefined ? undefined : parseAcl(value);
    const inodes = new Inodes(t);
    const inode = await inodes.need(ino);
    if (isLnk(inode.mode)) throw new FsError('NOT_SUPPORTED', `ACL on symlink ${ino}`);
    if (!isOwnerOrRoot(cred, inode)) throw new FsError('NOT_PERMITTED', `ACL of ${ino}`);
    const present = kind === 'access' ? inode.acl !== undefined : inode.defaultAcl !== undefined;
    if (value === undefined && !present) throw new FsError('NO_XATTR', `no ${kind} ACL on ${ino}`);
    if (flags & XATTR_CREATE && present) throw new FsError('ALREADY_EXISTS', `${kind} ACL of ${ino}`);
    if (flags & XATTR_REPLACE && !present) throw new FsError('NO_XATTR', `${kind} ACL of ${ino}`);
    if (kind === 'default') {
      if (!isDir(inode.mode)) {
        if (acl) throw new FsError('PERMISSION_DENIED', `default ACL on non-directory ${ino}`);
      } else if (acl) inode.defaultAcl = acl;
      else delete inode.defaultAcl;
    } else if (acl) {
      let mode = (inode.mode & ~0o777) | modeOfAcl(acl);
      if (!isRoot(cred) && !inGroup(cred, inode.gid)) mode &= ~S_ISGID;
      inode.mode = mode;
      if (isBaseAcl(acl)) delete inode.acl;
      else inode.acl = acl;
    } else delete inode.acl;
    inode.ctimeNs = t.nowNs;
    inodes.changed(inode);
    inodes.flush();
  }

  async open(
    t: MetaTxn,
    cred: Cred,
    ino: bigint,
    flags: number,
  ): Promise<{ inode: InodeRecord; inline?: Buffer }> {
    const inode = await new Inodes(t).need(ino);
    const acc = flags & O_ACCMODE;
    let want = acc === O_WRONLY ? W_OK : acc === O_RDWR || acc === O_ACCMODE ? R_OK | W_OK : R_OK;
    if (flags & FMODE_EXEC && acc === 0) want = X_OK;
    if (flags & O_TRUNC) want |= W_OK;
    if (isLnk(inode.mode)) throw new FsError('SYMLINK_LOOP', `open of symlink ${ino}`);
    if (isDir(inode.mode) && want & W_OK)
      throw new FsError('IS_A_DIRECTORY', `open of directory ${ino} for writing`);
    checkAccess(cred, inode, want);
    if (isReg(inode.mode) && inode.inline)
      return { inode, inline: (await t.getInline(ino)) ?? Buffer.alloc(0) };
    return { inode };
  }

  async writeInline(
    t: MetaTxn,
    _cred: Cred,
    ino: bigint,
    offset: bigint,
    data: Buffer,
    kill: boolean,
  ): Promise<InodeRecord> {
    const inodes = new Inodes(t);
    const inode = await inodes.need(ino);
    if (!isReg(inode.mode)) throw new FsError('NOT_INLINE', `inode ${ino} is not a regular file`);
    if (!inode.inline) throw new FsError('NOT_INLINE', `inode ${ino}`);
    if (offset < 0n) throw new FsError('INVALID_ARGUMENT', `offset ${offset}`);
    const end = offset + BigInt(data.length);
    if (end > BigInt(this.cfg.inlineMaxBytes))
      throw new FsError('NOT_INLINE', `write to ${end} of inode ${ino}`);
    if (data.length === 0) return inode;
    const current = (await t.getInline(ino)) ?? Buffer.alloc(0);
    const next = Buffer.alloc(Math.max(current.length, Number(end)));
    current.copy(next);
    data.copy(next, Number(offset));
    t.putInline(ino, next);
    if (end > inode.size) inode.size = end;
    this.contentChanged(t, inode, kill);
    inodes.changed(inode);
    inodes.flush();
    return inode;
  }

  async extend(
    t: MetaTxn,
    _cred: Cred,
    ino: bigint,
    end: bigint,
    kill: boolean,
    written: readonly { index: bigint; end: number }[] = [],
    writtenReported = true,
  ): Promise<InodeRecord> {
    const inodes = new Inodes(t);
    const inode = await inodes.need(ino);
    if (!isReg(inode.mode)) throw new FsError('INVALID_ARGUMENT', `extend of non-regular ${ino}`);
    if (end < 0n) throw new FsError('INVALID_ARGUMENT', `end ${end}`);
    if (end > BigInt(limits.fileSizeMaxBytes)) throw new FsError('FILE_TOO_LARGE', `end ${end}`);
    if (end > inode.size) inode.size = end;
    await allocMap.recordWritten(t, inode, written, this.cfg.blockSizeBytes, writtenReported);
    this.contentChanged(t, inode, kill);
    inodes.changed(inode);
    inodes.flush();
    return inode;
  }

  async convertInline(t: MetaTxn, ino: bigint, dataVersion: bigint): Promise<InodeRecord> {
    const inodes = new Inodes(t);
    const inode = await inodes.need(ino);
    if (inode.dataVersion !== dataVersion) {
      throw new FsError('CONFLICT', `inode ${ino} is at version ${inode.dataVersion}, not ${dataVersion}`);
    }
    if (!isReg(inode.mode)) throw new FsError('INVALID_ARGUMENT', `convert of non-regular ${ino}`);
    if (!inode.inline) return inode;
    const content = await t.getInline(ino);
    inode.inline = false;
    t.deleteInline(ino);
    // The content is block 0's first bytes now.
    if (content && content.length > 0)
      await allocMap.recordWritten(t, inode, [{ index: 0n, end: content.length }], this.cfg.blockSizeBytes);
    inodes.changed(inode);
    inodes.flush();
    return inode;
  }

  async fallocate(
    t: MetaTxn,
    ino: bigint,
    mode: number,
    offset: bigint,
    length: bigint,
  ): Promise<{ inode: InodeRecord; punch?: { from: bigint; to: bigint } }> {
    validateFallocate(mode, offset, length);
    const inodes = new Inodes(t);
    const inode = await inodes.need(ino);
    const { punch } = await allocMap.fallocate(t, inode, mode, offset, length, this.cfg.blockSizeBytes);
    inodes.changed(inode);
    inodes.flush();
    return punch ? { inode, punch } : { inode };
  }

  async tmpfile(
    t: MetaTxn,
    cred: Cred,
    parent: bigint,
    mode: number,
    owner: string,
    umask = 0,
  ): Promise<InodeRecord> {
    if ((mode & S_IFMT) !== 0 && (mode & S_IFMT) !== S_IFREG)
      throw new FsError('INVALID_ARGUMENT', `O_TMPFILE of type ${(mode & S_IFMT).toString(8)}`);
    if (owner.length > limits.requestIdMaxBytes)
      throw new FsError('INVALID_ARGUMENT', 'O_TMPFILE owner too long');
    const inodes = new Inodes(t);
    const dir = await this.searchDir(inodes, cred, parent);
    checkAccess(cred, dir, W_OK | X_OK);
    const ino = await t.allocIno(pgOfIno(parent));
    const inode = this.newInode(t, cred, dir, ino, S_IFREG | (mode & 0o7777), umask);
    inode.nlink = 0;
    inode.inline = true;
    inode.linkable = true;
    inodes.add(inode);
    // Without an owner only the client's last close reclaims it (as an unlinked open file).
    t.setOrphan(ino, owner ? { owner, sinceNs: t.nowNs } : true);
    inodes.flush();
    return inode;
  }

  async seek(t: MetaTxn, ino: bigint, offset: bigint, whence: number): Promise<bigint> {
    const inode = await new Inodes(t).need(ino);
    if (!isReg(inode.mode)) throw new FsError('INVALID_ARGUMENT', `seek in non-regular inode ${ino}`);
    return allocMap.seek(t, inode, offset, whence, this.cfg.blockSizeBytes);
  }

  async reclaim(t: MetaTxn, ino: bigint): Promise<void> {
    const inode = await t.getInode(ino);
    if (!inode || inode.nlink !== 0) return;
    if (inode.entries !== 0)
      throw new Error(`invariant: orphan directory ${ino} has ${inode.entries} entries`);
    // An inode that counts its xattr keys and has none needs no range read
    // (one per unlink of an ordinary file); one made before the count is scanned.
    if (inode.xattrs !== 0) for (const name of await t.listXattrNames(ino)) t.deleteXattr(ino, name);
    t.deleteInline(ino);
    t.deleteInode(ino);
    t.setOrphan(ino, false);
  }

  // --- helpers -------------------------------------------------------------

  /** A live directory the caller may search (lookups in it). */
  private async searchDir(inodes: Inodes, cred: Cred, ino: bigint): Promise<InodeRecord> {
    const dir = await inodes.get(ino);
    if (!dir) throw new FsError('NOT_FOUND', `directory ${ino}`);
    if (!isDir(dir.mode)) throw new FsError('NOT_A_DIRECTORY', `inode ${ino}`);
    checkAccess(cred, dir, X_OK);
    if (dir.nlink === 0) throw new FsError('NOT_FOUND', `directory ${ino} was removed`);
    return dir;
  }

  /** may_delete: write and search on the directory, then the sticky rule. */
  private checkDelete(cred: Cred, dir: InodeRecord, target: InodeRecord): void {
    checkAccess(cred, dir, W_OK | X_OK);
    if (!mayDeleteFromSticky(cred, dir, target)) {
      throw new FsError('NOT_PERMITTED', `sticky directory ${dir.ino}: uid ${cred.uid} owns neither`);
    }
  }

  /** Whether `ancestor` is `start` or one of its parents (walks ".." to the root). */
  private async isAncestor(inodes: Inodes, ancestor: bigint, start: bigint): Promise<boolean> {
    const seen = new Set<bigint>();
    let cur = start;
    for (;;) {
      if (cur === ancestor) return true;
      if (cur === ROOT_INO) return false;
      if (seen.has(cur)) throw new Error(`invariant: directory cycle through ${cur}`);
      seen.add(cur);
      const rec = await inodes.get(cur);
      if (!rec) throw new Error(`invariant: parent chain of ${start} reaches missing inode ${cur}`);
      if (rec.parent === cur) return false;
      cur = rec.parent;
    }
  }

  private newInode(
    t: MetaTxn,
    cred: Cred,
    dir: InodeRecord,
    ino: bigint,
    mode: number,
    umask = 0,
  ): InodeRecord {
    const now = t.nowNs;
    let gid = cred.gid;
    // The directory's default ACL, else the umask (a kernel with FUSE_POSIX_ACL leaves it to us).
    const inherited = isLnk(mode) ? { mode } : inheritAcl(dir.defaultAcl, mode, umask, isDir(mode));
    let m = inherited.mode;
    if (dir.mode & S_ISGID) {
      gid = dir.gid;
      if (isDir(m)) m |= S_ISGID;
    }
    // mode_strip_sgid: a non-member may not create a set-group-ID executable in the group.
    if (!isDir(m) && m & S_ISGID && m & S_IXGRP && !isRoot(cred) && !inGroup(cred, gid)) m &= ~S_ISGID;
    return {
      ino,
      mode: m,
      nlink: 1,
      uid: cred.uid,
      gid,
      size: 0n,
      atimeNs: now,
      mtimeNs: now,
      ctimeNs: now,
      rdev: 0n,
      dataVersion: 0n,
      inline: false,
      parent: 0n,
      entries: 0,
      nextCookie: isDir(m) ? 1n : 0n,
      xattrs: 0,
      ...(isReg(m) ? { allocTracked: true, allocBytes: 0n } : {}),
      ...(inherited.acl ? { acl: inherited.acl } : {}),
      ...(inherited.defaultAcl ? { defaultAcl: inherited.defaultAcl } : {}),
    };
  }

  /**
   * Adds `name` → inode to `dir` with the directory's next cookie (cookies
   * only grow, so a readdir in progress neither skips nor repeats an entry
   * that stays).
   */
  private addEntry(
    t: MetaTxn,
    inodes: Inodes,
    dir: InodeRecord,
    name: Buffer,
    inode: InodeRecord,
  ): DirentRecord {
    const dirent: DirentRecord = { ino: inode.ino, type: direntType(inode.mode), cookie: dir.nextCookie };
    dir.nextCookie += 1n;
    dir.entries += 1;
    dir.mtimeNs = dir.ctimeNs = t.nowNs;
    t.putDirent(dir.ino, name, dirent);
    inodes.changed(dir);
    return dirent;
  }

  private removeEntry(
    t: MetaTxn,
    inodes: Inodes,
    dir: InodeRecord,
    name: Buffer,
    dirent: DirentRecord,
  ): void {
    t.deleteDirent(dir.ino, name, dirent.cookie);
    dir.entries -= 1;
    dir.mtimeNs = dir.ctimeNs = t.nowNs;
    inodes.changed(dir);
  }

  /** One link fewer (a directory loses all: its "." goes with its entry); the last makes an orphan. */
  private dropLink(t: MetaTxn, inodes: Inodes, inode: InodeRecord): void {
    inode.nlink = isDir(inode.mode) ? 0 : inode.nlink - 1;
    inode.ctimeNs = t.nowNs;
    if (inode.nlink === 0) t.setOrphan(inode.ino, true);
    inodes.changed(inode);
  }

  private reparent(dirInode: InodeRecord, from: InodeRecord, to: InodeRecord): void {
    dirInode.parent = to.ino;
    from.nlink -= 1;
    to.nlink += 1;
  }

  private contentChanged(t: MetaTxn, inode: InodeRecord, kill: boolean): void {
    inode.mtimeNs = inode.ctimeNs = t.nowNs;
    inode.dataVersion += 1n;
    if (kill) inode.mode = killSuidgid(inode.mode);
  }
}
