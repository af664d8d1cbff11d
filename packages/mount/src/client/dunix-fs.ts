import { deviceFromLinuxRdev, FsError, limits, pgOfIno, type Logger, type wire } from '@dunix/proto';
import { constants } from 'node:fs';
import type {
  AttrReply,
  Caller,
  CreateReply,
  DirFiller,
  Entry,
  FileLock,
  FileSystem,
  OpenReply,
  RenameFlags,
  SetAttrChanges,
  StatFs,
} from '../fuse/filesystem.js';
import { NEGATIVE_ENTRY } from '../fuse/filesystem.js';
import { fuseAttr } from './attrs.js';
import type { BrickApi } from './brick-api.js';
import { copyRange } from './copy-range.js';
import { dataDefaults, FileData, type DataOptions, type ErrorMark } from './file-data.js';
import { FileLocks } from './file-locks.js';
import { GRANT_READ, GRANT_WRITE } from './grant-holder.js';
import { CompleteDirs } from './complete-dirs.js';
import { DirAttrs } from './dir-attrs.js';
import { DirListings, dirListingsDefaults, type ListedEntry } from './dir-listings.js';
import { KernelNames } from './kernel-names.js';
import type { PushedInval } from '@dunix/proto';

// Invalidation kinds (wire `Invalidation.kind`).
const INVAL_INODE = 0;
const INVAL_ENTRY = 1;
const INVAL_DELETE = 2;
const INVAL_FORGOTTEN = 3;

export interface DunixFsOptions {
  entryTtlMs: number;
  attrTtlMs: number;
  /** Entries asked per ReadDir call. */
  readDirBatch: number;
  data: DataOptions;
  /**
   * This mount's session id (its record in etcd): the owner of its O_TMPFILE
   * inodes, which bricks reclaim once the session is gone. Absent: only the
   * last close reclaims them.
   */
  mountId?: string;
  /** One SetLock call of a lock wait waits at most this long at the brick. */
  lockWaitSliceMs: number;
  /** Lookups in one directory after which it is read whole (statahead, dir-listings.ts); 0: never. */
  stataheadLookups: number;
}

export const dunixFsDefaults: DunixFsOptions = {
  entryTtlMs: 10_000,
  attrTtlMs: 10_000,
  readDirBatch: 512,
  data: dataDefaults,
  lockWaitSliceMs: 5000,
  stataheadLookups: dirListingsDefaults.lookupsBeforeRead,
};

/** How long a process's supplementary groups are reused (a setgroups() takes effect after this). */
const GROUPS_TTL_MS = 1000;
const GROUPS_CACHE_MAX = 4096;
/** Inodes with remembered absent xattrs before the memory is dropped. */
const ABSENT_XATTR_INODES_MAX = 16384;
/** The absent-xattr key that stands for every name (no xattr name is empty). */
const ALL_XATTRS = '';
const S_IFMT = 0o170000;
const F_UNLCK = 2;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const FUSE_WRITE_KILL_SUIDGID = 1 << 2;
/** READDIR offsets 1 and 2 are "." and ".."; an entry with cookie c continues at c + 2. */
const DOT_OFFSETS = 2n;

interface Handle {
  ino: bigint;
  data: FileData;
  /** Failed writes of the file this handle has been told of. */
  mark: ErrorMark;
  /**
   * Opened for writing: its close reports failed writes (as NFS does) and
   * publishing failures; fsync reports them on any handle.
   */
  writable: boolean;
}

/**
 * The dunixfs client: the FUSE FileSystem over bricks. Each inode operation
 * goes to the PG named by the inode number (or, for names, the parent
 * directory's); file data goes to each block's PG. Attributes and entries are
 * cached by the kernel for short TTLs; open files see close-to-open
 * consistency (attributes and inline content fetched at open, size published
 * at close).
 */
export class DunixFs implements FileSystem {
  private readonly handles = new Map<bigint, Handle>();
  private readonly files = new Map<bigint, FileData>();
  private nextFh = 1n;
  private readonly locks: FileLocks;
  private readonly names = new KernelNames();
  /** Directories whose every name is known here (complete-dirs.ts): only with a session. */
  readonly complete = new CompleteDirs(() => Date.now());
  /** Directories' attributes as our own last change of them left them (dir-attrs.ts). */
  readonly dirAttrs = new DirAttrs(() => Date.now());
  /** Directories read whole after several lookups in them (dir-listings.ts): only with a session. */
  readonly listings: DirListings;
  /**
   * The kernel's caches, once mounted: a lock granted here drops the
   * inode's cached pages and attributes (another machine may have written
   * under the lock), as NFS clients do.
   */
  kernel:
    | {
        /** Drops attributes, and pages from `offset` on (negative: attributes only). */
        invalInode(ino: bigint, offset?: bigint): Promise<void>;
        invalEntry(parent: bigint, name: Buffer): Promise<void>;
        /** The name in parent, which was child's, is gone (notify_delete). */
        deleteEntry?(parent: bigint, child: bigint, name: Buffer): Promise<void>;
      }
    | undefined;

  constructor(
    private readonly api: BrickApi,
    private readonly log: Logger,
    private readonly o: DunixFsOptions = dunixFsDefaults,
  ) {
    this.locks = new FileLocks(api, () => this.o.mountId, { waitSliceMs: o.lockWaitSliceMs });
    this.listings = new DirListings(() => Date.now(), {
      ...dirListingsDefaults,
      lookupsBeforeRead: Math.max(1, o.stataheadLookups),
    });
    // A change of ours to an inode (or in a directory) drops what a listing read of it.
    api.onMutate = (inos) => this.listings.forgetInodes(inos);
  }

  private readonly groupsByPid = new Map<
    number,
    { uid: number; gid: number; groups: number[]; atMs: number }
  >();

  /**
   * The caller as bricks see it. Supplementary groups come from
   * /proc/<pid>/status (a read per request is most of a stat's cost here), so
   * they are kept per process for GROUPS_TTL_MS; the superuser's are not
   * needed (no rule consults them for uid 0).
   */
  private caller(c: Caller): wire.Caller {
    if (c.uid === 0) return { uid: 0, gid: c.gid, groups: [], pid: c.pid };
    const now = Date.now();
    const hit = this.groupsByPid.get(c.pid);
    if (hit && hit.uid === c.uid && hit.gid === c.gid && now - hit.atMs < GROUPS_TTL_MS) {
      return { uid: c.uid, gid: c.gid, groups: hit.groups, pid: c.pid };
    }
    const groups = [...c.groups()];
    if (this.groupsByPid.size >= GROUPS_CACHE_MAX) this.groupsByPid.clear();
    this.groupsByPid.set(c.pid, { uid: c.uid, gid: c.gid, groups, atMs: now });
    return { uid: c.uid, gid: c.gid, groups, pid: c.pid };
  }

  /**
   * How long a primary keeps a registration of this session after a call
   * (it keeps it 2 s longer): 0 without a session, as nothing is then
   * registered or pushed and no directory may be taken as complete.
   */
  private get registrationMs(): number {
    return this.o.mountId === undefined ? 0 : Math.max(this.o.attrTtlMs, this.o.entryTtlMs);
  }

  /**
   * Runs a change of names in `dirs` and keeps CompleteDirs up to date: the
   * call registered the directories again; `names` says what it made
   * present or absent. A failed change may or may not have happened: the
   * directories are no longer taken as complete.
   */
  private async changingNames<T>(
    dirs: bigint[],
    run: () => Promise<T>,
    names: (r: T) => [dir: bigint, name: Buffer, present: boolean][],
    attrs: (r: T) => [dir: bigint, attr: wire.Attr__Output | null][] = () => [],
  ): Promise<T> {
    const sentAtMs = Date.now();
    const token = this.changesStarted(dirs);
    let r: T;
    try {
      r = await run();
    } catch (err) {
      this.changesEnded(dirs, token);
      for (const d of dirs) this.complete.forget(d);
      throw err;
    }
    if (this.changesEnded(dirs, token)) {
      // Another change of ours in one of these directories overlapped this one: the
      // primary may have applied them in either order, so neither answer is known last.
      for (const d of dirs) this.complete.forget(d);
      return r;
    }
    for (const d of dirs) this.complete.registered(d, sentAtMs, this.registrationMs);
    for (const [dir, name, present] of names(r)) this.complete.changed(dir, name, present);
    for (const [dir, attr] of attrs(r)) this.dirAttrs.set(dir, attr, sentAtMs, this.registrationMs);
    return r;
  }

  /** A name made in `parent` by `method` (Mknod, Mkdir, Symlink), with the method's own `fields`. */
  private makeName(
    caller: Caller,
    parent: bigint,
    name: Buffer,
    method: 'Mknod' | 'Mkdir' | 'Symlink',
    fields: object,
  ): Promise<wire.EntryReply__Output> {
    return this.changingNames(
      [parent],
      () =>
        this.api.mutate<wire.EntryReply__Output>(pgOfIno(parent), method, {
          caller: this.caller(caller),
          parent: parent.toString(),
          name,
          ...fields,
        }),
      () => [[parent, name, true]],
      (r) => [[parent, r.parentAttr]],
    );
  }

  /** Our changes in flight per directory, each with whether another overlapped it. */
  private readonly dirChanges = new Map<bigint, Map<symbol, { overlapped: boolean }>>();

  private changesStarted(dirs: bigint[]): symbol {
    const token = Symbol('change');
    for (const d of new Set(dirs)) {
      this.dirAttrs.forget(d);
      let inFlight = this.dirChanges.get(d);
      if (!inFlight) this.dirChanges.set(d, (inFlight = new Map()));
      const overlapped = inFlight.size > 0;
      for (const other of inFlight.values()) other.overlapped = true;
      inFlight.set(token, { overlapped });
    }
    return token;
  }

  /** Whether another change overlapped the one of `token`. */
  private changesEnded(dirs: bigint[], token: symbol): boolean {
    let overlapped = false;
    for (const d of new Set(dirs)) {
      const inFlight = this.dirChanges.get(d);
      const mine = inFlight?.get(token);
      if (!inFlight || !mine) continue;
      overlapped ||= mine.overlapped;
      inFlight.delete(token);
      if (inFlight.size === 0) this.dirChanges.delete(d);
    }
    return overlapped;
  }

  /**
   * Reads the whole of a directory this session just made, so that lookups
   * of names not in it are answered here (complete-dirs.ts). In the
   * background: the mkdir is answered first.
   */
  private learnComplete(caller: Caller, dir: bigint): void {
    if (this.registrationMs === 0) return;
    this.complete.startReading(dir);
    const sentAtMs = Date.now();
    this.readDirBatch(caller, dir, 0n, false, this.o.readDirBatch).then(
      (r) =>
        this.complete.finishReading(
          dir,
          r.eof ? r.entries.map((e) => e.name) : null,
          sentAtMs,
          this.registrationMs,
        ),
      () => this.complete.finishReading(dir, null, sentAtMs, this.registrationMs),
    );
  }

  /**
   * Reads a directory whole, with its entries' attributes, in the background
   * (statahead, dir-listings.ts): the kernel looked several of its names up
   * one by one. The names make it complete too (complete-dirs.ts).
   */
  private readWhole(caller: Caller, dir: bigint): void {
    const ttlMs = this.registrationMs;
    if (ttlMs === 0) return;
    this.listings.startReading(dir);
    this.complete.startReading(dir);
    const firstSentAtMs = Date.now();
    // Too big, or not readable (the caller may search but not read it): not tried again for a while.
    const failed = () => {
      this.listings.finishReading(dir, null, ttlMs, true);
      this.complete.finishReading(dir, null, firstSentAtMs, ttlMs);
    };
    void (async () => {
      const entries: ListedEntry[] = [];
      let cookie = 0n;
      for (;;) {
        const sentAtMs = Date.now();
        const r = await this.readDirBatch(caller, dir, cookie, true, this.o.readDirBatch);
        for (const e of r.entries) entries.push({ name: e.name, attr: e.attr, sentAtMs });
        if (entries.length > this.listings.entriesMax) return failed();
        if (r.eof || r.entries.length === 0) break;
        cookie = BigInt(r.entries.at(-1)!.cookie);
      }
      this.listings.finishReading(dir, entries, ttlMs);
      this.complete.finishReading(
        dir,
        entries.map((e) => e.name),
        firstSentAtMs,
        ttlMs,
      );
    })().catch((err: unknown) => {
      this.log.debug('reading a directory whole failed', { dir, err: String(err) });
      failed();
    });
  }

  /**
   * The kernel's entry for attributes `a`. `pushGen`: xattrPushGen when the
   * call that returned `a` was sent; given, a brick's no_xattrs is noted.
   */
  private entry(a: wire.Attr__Output, pushGen?: number): Entry {
    const ino = BigInt(a.ino);
    this.names.cached(ino);
    if (pushGen !== undefined) this.noteXattrsOf(a, pushGen);
    const file = this.files.get(ino);
    return {
      nodeid: ino,
      generation: 0n,
      attr: fuseAttr(a, file?.size),
      entryTtlMs: this.o.entryTtlMs,
      attrTtlMs: this.o.attrTtlMs,
    };
  }

  private async attrOf(ino: bigint): Promise<wire.AttrReply__Output> {
    return this.api.read<wire.AttrReply__Output>(pgOfIno(ino), 'GetAttr', { ino: ino.toString() });
  }

  private async direntEntry(d: wire.Dirent__Output, pushGen?: number): Promise<Entry> {
    return this.entry(d.attr ?? (await this.attrOf(BigInt(d.ino))).attr!, pushGen);
  }

  /**
   * A name that is not there answers NEGATIVE_ENTRY: the kernel caches its
   * absence for the negative TTL (none: ENOENT) and drops it when the
   * directory's primary pushes a change of the name (the failed Lookup
   * registered this session on the directory, as a successful one does). A
   * push that arrives while this lookup is in flight lands after its answer:
   * the kernel holds the directory's lock for the lookup, and the notice
   * needs it.
   */
  async lookup(caller: Caller, parent: bigint, name: Buffer): Promise<Entry | typeof NEGATIVE_ENTRY> {
    // Export support (open_by_handle_at, NFS): "." is the node itself, ".." a directory's parent,
    // found from the inode number alone. A number that names no inode is NOT_FOUND (ESTALE).
    if (name[0] === 0x2e && name.length <= 2 && pgOfIno(parent) >= this.api.pgCount)
      throw new FsError('NOT_FOUND', `inode ${parent}: no such PG`);
    if (name.length === 1 && name[0] === 0x2e) return this.entry((await this.attrOf(parent)).attr!);
    if (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e) {
      const dir = (await this.attrOf(parent)).attr!;
      if ((dir.mode & S_IFMT) !== S_IFDIR) throw new FsError('NOT_A_DIRECTORY', `.. of inode ${parent}`);
      return this.entry((await this.attrOf(BigInt(dir.parent))).attr!);
    }
    if (this.complete.absent(parent, name)) {
      // Every name of the directory is known here, and this is not one (the kernel checked
      // search permission on it already: default_permissions).
      this.names.noted(parent, name);
      this.api.metrics?.cacheHit('names');
      return NEGATIVE_ENTRY;
    }
    const listed = this.listings.take(parent, name);
    if (listed) {
      // Read with the whole directory a moment ago, nothing pushed or changed by us since.
      const e = this.entry(listed);
      this.names.noted(parent, name, e.nodeid);
      this.api.metrics?.cacheHit('listing');
      return e;
    }
    let r: wire.LookupReply__Output;
    const sentAtMs = Date.now();
    const pushGen = this.xattrPushGen;
    try {
      r = await this.api.read<wire.LookupReply__Output>(pgOfIno(parent), 'Lookup', {
        caller: this.caller(caller),
        parent: parent.toString(),
        name,
      });
    } catch (err) {
      if (!(err instanceof FsError) || err.code !== 'NOT_FOUND') throw err;
      this.complete.registered(parent, sentAtMs, this.registrationMs);
      // Remembered like a name handed out: a reset of the directory's registrations drops it too.
      this.names.noted(parent, name);
      return NEGATIVE_ENTRY;
    }
    this.complete.registered(parent, sentAtMs, this.registrationMs);
    // Only names found count: lookups of names not there (a create loop's) are not what a listing
    // answers, and a directory being filled would be read whole again and again.
    if (this.o.stataheadLookups > 0 && this.listings.lookupFound(parent)) this.readWhole(caller, parent);
    const e = await this.direntEntry(r.entry!, pushGen);
    this.names.noted(parent, name, e.nodeid);
    return e;
  }

  forget(): void {}

  async getattr(_caller: Caller, ino: bigint): Promise<AttrReply> {
    const dir = this.dirAttrs.get(ino);
    if (dir) {
      // The directory as our own change of it left it, nobody else's change since (dir-attrs.ts).
      this.names.cached(ino);
      this.api.metrics?.cacheHit('attrs');
      return { attr: fuseAttr(dir), attrTtlMs: this.o.attrTtlMs };
    }
    // st_blocks comes from the inode's allocation map, which counts this client's writes once
    // published: publish first (as a read does).
    const open = this.files.get(ino);
    if (open?.hasUnpublished) await open.publishForReader();
    const sentAtMs = Date.now();
    const pushGen = this.xattrPushGen;
    const r = await this.attrOf(ino);
    this.complete.registered(ino, sentAtMs, this.registrationMs);
    this.noteXattrsOf(r.attr!, pushGen);
    const file = this.files.get(ino);
    if (file && !file.hasUnpublished) file.refresh(r.attr!);
    this.names.cached(ino);
    return { attr: fuseAttr(r.attr!, file?.size), attrTtlMs: this.o.attrTtlMs };
  }

  async setattr(caller: Caller, ino: bigint, c: SetAttrChanges): Promise<AttrReply> {
    const file = this.files.get(ino);
    // Buffered writes go first: publishing them later would overwrite the
    // times (utimensat after write, as tar and cp -p do) or the size set here.
    if (file?.hasUnpublished) await file.flush();
    const now = (v: bigint | 'now' | undefined) => (v === undefined ? 0 : v === 'now' ? 2 : 1);
    this.dirAttrs.forget(ino);
    const r = await this.api.mutate<wire.AttrReply__Output>(pgOfIno(ino), 'SetAttr', {
      caller: this.caller(caller),
      ino: ino.toString(),
      setMode: c.mode !== undefined,
      mode: c.mode ?? 0,
      setUid: c.uid !== undefined,
      uid: c.uid ?? 0,
      setGid: c.gid !== undefined,
      gid: c.gid ?? 0,
      setSize: c.size !== undefined,
      size: (c.size ?? 0n).toString(),
      atimeHow: now(c.atimeNs),
      atimeNs: typeof c.atimeNs === 'bigint' ? c.atimeNs.toString() : '0',
      mtimeHow: now(c.mtimeNs),
      mtimeNs: typeof c.mtimeNs === 'bigint' ? c.mtimeNs.toString() : '0',
      killSuidgid: c.killSuidgid ?? false,
      viaOpenFile: c.fh !== undefined,
      grant: c.fh !== undefined && file ? await file.grants.get(GRANT_WRITE) : null,
    });
    // Block bytes past a shrink are dropped by the bricks before SetAttr answers.
    if (c.size !== undefined) file?.truncated(c.size);
    file?.refresh(r.attr!);
    return { attr: fuseAttr(r.attr!, file?.size), attrTtlMs: this.o.attrTtlMs };
  }

  async readlink(_caller: Caller, ino: bigint): Promise<Buffer> {
    const r = await this.api.read<wire.ReadlinkReply__Output>(pgOfIno(ino), 'Readlink', {
      ino: ino.toString(),
    });
    return r.target;
  }

  async symlink(caller: Caller, parent: bigint, name: Buffer, target: Buffer): Promise<Entry> {
    if (target.length > limits.symlinkMaxBytes) throw new FsError('NAME_TOO_LONG', 'symlink target');
    const pushGen = this.xattrPushGen;
    const r = await this.makeName(caller, parent, name, 'Symlink', { target });
    return this.direntEntry(r.entry!, pushGen);
  }

  // The umask goes to the brick: it applies there unless the parent has a default ACL.
  async mknod(
    caller: Caller,
    parent: bigint,
    name: Buffer,
    mode: number,
    rdev: number,
    umask: number,
  ): Promise<Entry> {
    const pushGen = this.xattrPushGen;
    const r = await this.makeName(caller, parent, name, 'Mknod', {
      mode,
      rdev: deviceFromLinuxRdev(rdev),
      exclusive: true,
      umask: umask & 0o777,
    });
    return this.direntEntry(r.entry!, pushGen);
  }

  async mkdir(caller: Caller, parent: bigint, name: Buffer, mode: number, umask: number): Promise<Entry> {
    const pushGen = this.xattrPushGen;
    const r = await this.makeName(caller, parent, name, 'Mkdir', {
      mode: (mode & 0o7777) | S_IFDIR,
      umask: umask & 0o777,
    });
    // A directory made in another PG: its attributes come from (and are registered at) that PG's primary.
    const made = BigInt(r.entry!.ino);
    this.learnComplete(caller, made);
    if (pgOfIno(made) !== pgOfIno(parent)) return this.entry((await this.attrOf(made)).attr!, pushGen);
    return this.direntEntry(r.entry!, pushGen);
  }

  async unlink(caller: Caller, parent: bigint, name: Buffer): Promise<void> {
    // The brick reclaims the inode in the same op unless this client holds it
    // open (the list is bounded: with more files open, reclaim stays ours).
    const reclaim = this.files.size <= limits.openInosMax;
    const r = await this.changingNames(
      [parent],
      () =>
        this.api.mutate<wire.UnlinkReply__Output>(pgOfIno(parent), 'Unlink', {
          caller: this.caller(caller),
          parent: parent.toString(),
          name,
          reclaim,
          openInos: reclaim ? [...this.files.keys()].map(String) : [],
          // An orphan left to us is marked with our session: the bricks reclaim it if we die first.
          owner: this.o.mountId ?? '',
        }),
      () => [[parent, name, false]],
      (r) => [[parent, r.parentAttr]],
    );
    // Its link count changed: a listing of another directory naming it (a hard link) is stale.
    this.listings.forgetInodes([BigInt(r.ino)]);
    if (r.nlink === 0 && !r.reclaimed) this.lastLinkGone(BigInt(r.ino));
  }

  async rmdir(caller: Caller, parent: bigint, name: Buffer): Promise<void> {
    // The removed directory's attributes may be here too (its inode number is not known).
    this.dirAttrs.clear();
    await this.changingNames(
      [parent],
      () =>
        this.api.mutate(pgOfIno(parent), 'Rmdir', {
          caller: this.caller(caller),
          parent: parent.toString(),
          name,
        }),
      () => [[parent, name, false]],
    );
  }

  async rename(
    caller: Caller,
    parent: bigint,
    name: Buffer,
    newParent: bigint,
    newName: Buffer,
    flags: RenameFlags,
  ): Promise<void> {
    if (flags.whiteout) throw new FsError('INVALID_ARGUMENT', 'RENAME_WHITEOUT is not supported');
    // A moved or replaced directory's own attributes change too (ctime, its ".."): not known here.
    this.dirAttrs.clear();
    const r = await this.changingNames(
      [parent, newParent],
      () =>
        this.api.mutate<wire.RenameReply__Output>(pgOfIno(parent), 'Rename', {
          caller: this.caller(caller),
          parent: parent.toString(),
          name,
          newParent: newParent.toString(),
          newName,
          noReplace: flags.noReplace,
          exchange: flags.exchange,
        }),
      // An exchange leaves both names there.
      () => [
        [parent, name, flags.exchange],
        [newParent, newName, true],
      ],
      (r) => [
        [parent, r.parentAttr],
        [newParent, r.newParentAttr],
      ],
    );
    if (r.replacedIno !== '0') this.listings.forgetInodes([BigInt(r.replacedIno)]);
    if (r.replacedIno !== '0' && r.replacedNlink === 0) this.lastLinkGone(BigInt(r.replacedIno));
  }

  /** An inode lost its last name: reclaim it now, or at the last close if it is open here. */
  private lastLinkGone(ino: bigint): void {
    const file = this.files.get(ino);
    if (file) {
      file.reclaimOnClose = true;
      return;
    }
    void this.reclaim(ino);
  }

  /** The inode's PG deletes it and trims its blocks (recorded in its log, finished by the bricks). */
  private async reclaim(ino: bigint): Promise<void> {
    try {
      await this.api.read(pgOfIno(ino), 'Reclaim', { ino: ino.toString() });
    } catch (err) {
      this.log.warn('reclaim failed; the inode stays an orphan', { ino, err: String(err) });
    }
  }

  async link(caller: Caller, ino: bigint, newParent: bigint, newName: Buffer): Promise<Entry> {
    const r = await this.changingNames(
      [newParent],
      () =>
        this.api.mutate<wire.EntryReply__Output>(pgOfIno(newParent), 'Link', {
          caller: this.caller(caller),
          ino: ino.toString(),
          newParent: newParent.toString(),
          newName,
        }),
      () => [[newParent, newName, true]],
      (r) => [[newParent, r.parentAttr]],
    );
    // An O_TMPFILE inode that got its name is no longer reclaimed at its last close.
    const file = this.files.get(ino);
    if (file) file.reclaimOnClose = false;
    return this.direntEntry(r.entry!);
  }

  async tmpfile(
    caller: Caller,
    parent: bigint,
    mode: number,
    flags: number,
    umask: number,
  ): Promise<CreateReply> {
    this.dirAttrs.forget(parent);
    const r = await this.api.mutate<wire.EntryReply__Output>(pgOfIno(parent), 'Tmpfile', {
      caller: this.caller(caller),
      parent: parent.toString(),
      mode: mode & 0o7777,
      owner: this.o.mountId ?? '',
      umask: umask & 0o777,
    });
    const attr = r.entry!.attr!;
    const ino = BigInt(attr.ino);
    const open = this.openHandle(ino, { attr, inlineData: Buffer.alloc(0), grant: r.grant }, flags, caller);
    // Never named (linkat): reclaimed at the last close, like an unlinked open file.
    this.files.get(ino)!.reclaimOnClose = true;
    return { entry: this.entry(attr), open };
  }

  private openHandle(
    ino: bigint,
    reply: Pick<wire.AttrReply__Output, 'attr' | 'inlineData'> & { grant: wire.BlockGrant__Output | null },
    flags: number,
    caller: Caller,
  ): OpenReply {
    let file = this.files.get(ino);
    if (!file) {
      file = new FileData(ino, this.api, pgOfIno(ino), reply.attr!, reply.inlineData, this.o.data);
      this.files.set(ino, file);
    } else if (!file.hasUnpublished) {
      file.refresh(reply.attr!, reply.inlineData);
    }
    file.grants.note(reply.grant);
    // A grant is renewed by an Open for the latest opener, which checks the permission again.
    const renewFor = this.caller(caller);
    file.grants.renew = async (rights) => {
      const mode =
        rights === GRANT_READ
          ? constants.O_RDONLY
          : rights === GRANT_WRITE
            ? constants.O_WRONLY
            : constants.O_RDWR;
      const r = await this.api.read<wire.AttrReply__Output>(pgOfIno(ino), 'Open', {
        caller: renewFor,
        ino: ino.toString(),
        flags: mode,
      });
      return r.grant;
    };
    file.opens++;
    const fh = this.nextFh++;
    const writable = (flags & 3) !== constants.O_RDONLY;
    this.handles.set(fh, { ino, data: file, mark: file.newMark(), writable });
    return { fh };
  }

  async open(caller: Caller, ino: bigint, flags: number): Promise<OpenReply> {
    const r = await this.api.read<wire.AttrReply__Output>(pgOfIno(ino), 'Open', {
      caller: this.caller(caller),
      ino: ino.toString(),
      flags,
    });
    return this.openHandle(ino, r, flags, caller);
  }

  async create(
    caller: Caller,
    parent: bigint,
    name: Buffer,
    mode: number,
    flags: number,
    umask: number,
  ): Promise<CreateReply> {
    let r: wire.EntryReply__Output;
    const pushGen = this.xattrPushGen;
    try {
      r = await this.makeName(caller, parent, name, 'Mknod', {
        mode: (mode & 0o7777) | S_IFREG,
        rdev: null,
        exclusive: true,
        umask: umask & 0o777,
      });
    } catch (err) {
      // Created by someone else since the kernel's lookup: open it like open(2) without O_EXCL would.
      if (!(err instanceof FsError) || err.code !== 'ALREADY_EXISTS' || (flags & constants.O_EXCL) !== 0)
        throw err;
      const entry = await this.lookup(caller, parent, name);
      if (entry === NEGATIVE_ENTRY) throw new FsError('NOT_FOUND', 'removed again since the create found it');
      if ((entry.attr.mode & S_IFMT) === S_IFDIR) throw new FsError('IS_A_DIRECTORY');
      const open = await this.open(caller, entry.nodeid, flags);
      if ((flags & constants.O_TRUNC) !== 0 && (flags & 3) !== constants.O_RDONLY) {
        entry.attr = (await this.setattr(caller, entry.nodeid, { size: 0n, fh: open.fh })).attr;
      }
      return { entry, open };
    }
    const attr = r.entry!.attr ?? (await this.attrOf(BigInt(r.entry!.ino))).attr!;
    const ino = BigInt(attr.ino);
    this.names.noted(parent, name, ino);
    // A file just made has no file capability: the kernel's ask before its first write is answered here.
    if (!r.existed) this.noteAbsentXattr(ino, 'security.capability');
    const open = this.openHandle(ino, { attr, inlineData: Buffer.alloc(0), grant: r.grant }, flags, caller);
    return { entry: this.entry(attr, pushGen), open };
  }

  private handle(fh: bigint): Handle {
    const h = this.handles.get(fh);
    if (!h) throw new FsError('BAD_HANDLE', `file handle ${fh}`);
    return h;
  }

  read(_caller: Caller, _ino: bigint, fh: bigint, offset: bigint, size: number): Promise<Buffer> {
    return this.handle(fh).data.read(offset, size);
  }

  async write(
    caller: Caller,
    _ino: bigint,
    fh: bigint,
    offset: bigint,
    data: Buffer,
    flags: number,
  ): Promise<number> {
    if (offset + BigInt(data.length) > BigInt(limits.fileSizeMaxBytes)) throw new FsError('FILE_TOO_LARGE');
    const writer = { uid: caller.uid, gid: caller.gid, groups: [], pid: caller.pid };
    const h = this.handle(fh);
    return h.data.write(offset, data, (flags & FUSE_WRITE_KILL_SUIDGID) !== 0, writer, h.mark);
  }

  async fallocate(
    caller: Caller,
    _ino: bigint,
    fh: bigint,
    offset: bigint,
    length: bigint,
    mode: number,
  ): Promise<void> {
    const h = this.handle(fh);
    await h.data.fallocate(mode, offset, length, this.caller(caller), h.mark);
  }

  lseek(_caller: Caller, _ino: bigint, fh: bigint, offset: bigint, whence: number): Promise<bigint> {
    return this.handle(fh).data.seek(offset, whence);
  }

  /**
   * copy_file_range: the bricks copy (copyRange); an inline source answers
   * EOPNOTSUPP, and the kernel copies it itself (splice).
   */
  async copyFileRange(
    caller: Caller,
    _inoIn: bigint,
    fhIn: bigint,
    offIn: bigint,
    _inoOut: bigint,
    fhOut: bigint,
    offOut: bigint,
    length: bigint,
    flags: number,
  ): Promise<number> {
    if (flags !== 0) throw new FsError('INVALID_ARGUMENT', `copy_file_range flags ${flags}`);
    const src = this.handle(fhIn);
    const dst = this.handle(fhOut);
    return copyRange(src.data, dst.data, offIn, offOut, length, this.caller(caller), dst.mark);
  }

  async flush(_caller: Caller, ino: bigint, fh: bigint, lockOwner: bigint): Promise<void> {
    const h = this.handle(fh);
    try {
      if (h.writable) await h.data.flush(h.mark);
      else await h.data.publishForReader();
    } finally {
      // The closing process's POSIX locks go (after its writes are published).
      await this.locks.flushed(ino, fh, lockOwner);
    }
  }

  async getlk(_caller: Caller, ino: bigint, _fh: bigint, lock: FileLock): Promise<FileLock> {
    return this.locks.getlk(ino, lock);
  }

  async setlk(
    _caller: Caller,
    ino: bigint,
    fh: bigint,
    lock: FileLock,
    wait: boolean,
    signal: AbortSignal,
  ): Promise<void> {
    const h = this.handle(fh);
    // Writes made under the lock are published before another machine can take it.
    if (lock.type === F_UNLCK && h.data.hasUnpublished) await h.data.publishForReader();
    await this.locks.setlk(ino, fh, lock, wait, signal);
    if (lock.type !== F_UNLCK) await this.revalidate(ino);
  }

  /**
   * After a lock is granted: what another machine wrote under its lock is
   * read, not cached bytes, and names it made or removed beside the file
   * are looked up again (KernelNames).
   */
  private async revalidate(ino: bigint): Promise<void> {
    const file = this.files.get(ino);
    if (file && !file.hasUnpublished) file.refresh((await this.attrOf(ino)).attr!);
    const kernel = this.kernel;
    if (!kernel) return;
    await kernel.invalInode(ino);
    const dir = this.names.siblingsOf(ino);
    if (dir) await Promise.all(dir.names.map((n) => kernel.invalEntry(dir.parent, n)));
  }

  /**
   * Invalidations another session's change caused (pushed by the primary,
   * see invalidation-poller.ts): the kernel drops what they name before
   * the poller acknowledges them, so the change's caller returns after.
   */
  async applyInvalidations(invals: readonly PushedInval[]): Promise<void> {
    // Another session changed these directories: their names are no longer all known here.
    for (const i of invals) {
      const dir = i.kind === INVAL_ENTRY || i.kind === INVAL_DELETE ? i.parent : i.ino;
      this.complete.forget(dir);
      this.dirAttrs.forget(dir);
      this.listings.forgetDir(dir);
      if (i.kind !== INVAL_ENTRY) this.listings.forgetInodes([i.ino]);
      // Another session's setxattr pushes the inode's attributes: names known absent may be set now.
      if (i.kind === INVAL_INODE || i.kind === INVAL_FORGOTTEN) {
        this.absentXattrs.delete(i.ino);
        this.xattrPushGen++;
      }
    }
    const kernel = this.kernel;
    await Promise.all(
      invals.map(async (i) => {
        switch (i.kind) {
          case INVAL_INODE:
          case INVAL_FORGOTTEN: {
            // An open file keeps size and inline bytes of its own: refreshed too (unless it has writes of ours).
            const file = this.files.get(i.ino);
            if (file && !file.hasUnpublished) {
              const r = await this.attrOf(i.ino).catch(() => undefined);
              if (r) file.refresh(r.attr!);
            }
            await kernel?.invalInode(i.ino, i.data ? 0n : -1n);
            if (i.kind === INVAL_FORGOTTEN && kernel)
              await Promise.all(
                this.names
                  .namesIn(i.ino)
                  .map((n) => this.entryNotice(i.ino, () => kernel.invalEntry(i.ino, n))),
              );
            return;
          }
          case INVAL_ENTRY:
            if (kernel) await this.entryNotice(i.parent, () => kernel.invalEntry(i.parent, i.name));
            return;
          case INVAL_DELETE:
            if (kernel)
              await this.entryNotice(i.parent, () =>
                kernel.deleteEntry
                  ? kernel.deleteEntry(i.parent, i.ino, i.name)
                  : kernel.invalEntry(i.parent, i.name),
              );
            return;
        }
      }),
    );
  }

  /**
   * Registrations at the primaries of `pgs` may be lost (failover, a
   * restarted brick, a session dropped for acknowledging late): what the
   * kernel holds of their inodes and of names in their directories is
   * dropped, so it is read again (and registered again) at its next use.
   */
  async dropCachedOf(pgs: ReadonlySet<number>): Promise<void> {
    this.complete.forgetWhere((dir) => pgs.has(pgOfIno(dir)));
    this.dirAttrs.forgetWhere((dir) => pgs.has(pgOfIno(dir)));
    this.listings.forgetWhere((ino) => pgs.has(pgOfIno(ino)));
    this.xattrPushGen++;
    for (const ino of this.absentXattrs.keys()) if (pgs.has(pgOfIno(ino))) this.absentXattrs.delete(ino);
    const kernel = this.kernel;
    if (!kernel || pgs.size === 0) return;
    const { inodes, names } = this.names.cachedWhere((ino) => pgs.has(pgOfIno(ino)));
    await Promise.all([
      ...inodes.map((ino) => kernel.invalInode(ino, 0n)),
      ...names.map((n) => this.entryNotice(n.parent, () => kernel.invalEntry(n.parent, n.name))),
    ]);
  }

  /**
   * A kernel notice about a name in `parent`, awaited - unless a change of
   * ours naming `parent` is in flight, or is sent while the notice waits:
   * the kernel holds that directory's lock until the change is answered, and
   * the answer may wait at the primary for this very acknowledgement (two
   * mounts creating in one directory stalled every create for the primary's
   * 2 s ack timeout: 150 creates each took 190 s against 1 s alone). The
   * kernel takes the lock before it asks LOOKUP of a name it is about to
   * create, so a notice can already be stuck behind it when the CREATE comes:
   * with three mounts creating in one directory, B's notice waited for B's
   * create, whose answer waited for C's acknowledgement, whose notice waited
   * for C's create, whose answer waited for B's (6 creates per second
   * against 298 with two mounts, sessions dropped for acknowledging late).
   * Then the notice lands as soon as our change returns and the kernel lets
   * go of the directory; it is not waited for, so another session's call may
   * return just before it lands.
   */
  private entryNotice(parent: bigint, notice: () => Promise<void>): Promise<void> {
    const sent = notice();
    const detach = () =>
      sent.catch((err: unknown) =>
        this.log.debug('kernel notice for a directory we are changing failed', { parent, err: String(err) }),
      );
    if (this.api.isChanging(parent)) {
      void detach();
      return Promise.resolve();
    }
    const { started, cancel } = this.api.changeStarts(parent);
    return Promise.race([
      sent.finally(cancel),
      started.then(() => {
        void detach();
      }),
    ]);
  }

  async fsync(_caller: Caller, _ino: bigint, fh: bigint): Promise<void> {
    // Publish what is buffered, then make everything acknowledged durable on every replica.
    const h = this.handle(fh);
    const synced = await h.data.flush(h.mark, { syncOthers: (except) => this.api.sync(except) });
    if (!synced) await this.api.sync();
  }

  async release(
    _caller: Caller,
    ino: bigint,
    fh: bigint,
    _flags: number,
    lock?: { owner: bigint; flock: boolean },
  ): Promise<void> {
    const h = this.handle(fh);
    this.handles.delete(fh);
    const file = h.data;
    try {
      if (h.writable) await file.flush(h.mark);
      else await file.publishForReader();
    } finally {
      file.opens--;
      if (file.opens === 0) {
        this.files.delete(ino);
        // The flush above published the size, so the brick trims every block written here.
        if (file.reclaimOnClose) void this.reclaim(ino);
      }
      // flock and OFD locks belong to the open file: they go with its last close.
      await this.locks.released(ino, fh, lock?.owner);
    }
  }

  async opendir(_caller: Caller, ino: bigint): Promise<OpenReply> {
    return { fh: ino };
  }

  async readdir(
    caller: Caller,
    ino: bigint,
    _fh: bigint,
    offset: bigint,
    plus: boolean,
    fill: DirFiller,
  ): Promise<void> {
    let parent = ino;
    if (offset === 0n || offset === 1n) {
      // "." and ".." come first; ".." needs the directory's parent, which ReadDir returns.
      const first = await this.readDirBatch(caller, ino, 0n, plus, 1);
      parent = first.parent === '0' ? ino : BigInt(first.parent);
      if (offset === 0n && !fill({ name: Buffer.from('.'), ino, mode: S_IFDIR, nextOffset: 1n })) return;
      if (!fill({ name: Buffer.from('..'), ino: parent, mode: S_IFDIR, nextOffset: 2n })) return;
      offset = DOT_OFFSETS;
    }
    let cookie = offset - DOT_OFFSETS;
    for (;;) {
      const pushGen = this.xattrPushGen;
      const r = await this.readDirBatch(caller, ino, cookie, plus, this.o.readDirBatch);
      const entries = plus
        ? await Promise.all(
            r.entries.map(async (e) => ({
              e,
              entry: await this.direntEntry(e, pushGen).catch(() => undefined),
            })),
          )
        : r.entries.map((e) => ({ e, entry: undefined }));
      for (const { e, entry } of entries) {
        const c = BigInt(e.cookie);
        if (entry) this.names.noted(ino, e.name, entry.nodeid);
        const accepted = fill({
          name: e.name,
          ino: BigInt(e.ino),
          mode: e.type << 12,
          nextOffset: c + DOT_OFFSETS,
          ...(entry ? { entry } : {}),
        });
        if (!accepted) return;
        cookie = c;
      }
      if (r.eof || r.entries.length === 0) return;
    }
  }

  private readDirBatch(
    caller: Caller,
    dir: bigint,
    cookie: bigint,
    plus: boolean,
    limit: number,
  ): Promise<wire.ReadDirReply__Output> {
    return this.api.read<wire.ReadDirReply__Output>(pgOfIno(dir), 'ReadDir', {
      caller: this.caller(caller),
      dir: dir.toString(),
      cookie: cookie.toString(),
      limit,
      plus,
    });
  }

  async releasedir(): Promise<void> {}

  async fsyncdir(): Promise<void> {
    await this.api.sync();
  }

  async statfs(): Promise<StatFs> {
    const replies = await Promise.all(
      this.api.brickIds().map((id) =>
        this.api.callBrick<wire.StatFsReply__Output>(id, 'StatFs', {}).catch((err: unknown) => {
          this.log.warn('statfs: brick unavailable', { brick: id, err: String(err) });
          return undefined;
        }),
      ),
    );
    const bsize = 4096n;
    let blocks = 0n;
    let bfree = 0n;
    let bavail = 0n;
    let used = 0n;
    let ffree = 0n;
    for (const r of replies) {
      if (!r) continue;
      blocks += BigInt(r.bytesTotal) / bsize;
      bfree += BigInt(r.bytesFree) / bsize;
      bavail += BigInt(r.bytesAvail) / bsize;
      used += BigInt(r.inodesUsed);
      ffree += BigInt(r.inodesFree);
    }
    // Each byte of a file is stored `replicas` times: show what files can still take.
    const copies = BigInt(Math.max(1, this.api.config.replicas));
    return {
      blocks: blocks / copies,
      bfree: bfree / copies,
      bavail: bavail / copies,
      files: used + ffree,
      ffree,
      bsize: 4096,
      namelen: limits.nameMaxBytes,
      frsize: 4096,
    };
  }

  async setxattr(caller: Caller, ino: bigint, name: Buffer, value: Buffer, flags: number): Promise<void> {
    // A reply in flight may predate this change: it must not note the inode free of xattrs.
    this.xattrPushGen++;
    this.absentXattrs.delete(ino);
    this.dirAttrs.forget(ino);
    await this.api.mutate(pgOfIno(ino), 'SetXattr', {
      caller: this.caller(caller),
      ino: ino.toString(),
      name,
      value,
      flags,
      // Records a session owns (dunix.listener) go with it.
      owner: this.o.mountId ?? '',
    });
  }

  /**
   * Names known absent, per inode, for attrTtlMs: the kernel asks for
   * security.capability before every write to decide whether to drop
   * privileges, and `ls -l` for security.selinux and the ACL of every file;
   * answering from here saves a round trip each (a file this client just
   * created starts known without one). ALL_XATTRS stands for every name: a
   * brick's reply said the inode has none (Attr.no_xattrs). Changes made
   * through this client drop the entry, and so does a push of the inode's
   * attributes (another session's setxattr) or a loss of registrations;
   * without a session, others' are seen within the TTL, as for attributes.
   */
  private readonly absentXattrs = new Map<bigint, Map<string, number>>();
  /**
   * Bumped by every push of an inode's attributes and every loss of
   * registrations: a reply's no_xattrs is noted only when nothing was pushed
   * since its call was sent (a push racing the reply may have been about
   * a setxattr the reply predates).
   */
  private xattrPushGen = 0;

  /** True while `name` (latin1) of `ino` is known absent. */
  private knownAbsent(ino: bigint, name: string): boolean {
    const names = this.absentXattrs.get(ino);
    if (!names) return false;
    const now = Date.now();
    return (names.get(name) ?? 0) > now || (names.get(ALL_XATTRS) ?? 0) > now;
  }

  /** A brick said the inode has no xattr at all (Attr.no_xattrs): every getxattr is ENODATA here. */
  private noteXattrsOf(a: wire.Attr__Output, pushGen: number): void {
    if (a.noXattrs && pushGen === this.xattrPushGen) this.noteAbsentXattr(BigInt(a.ino), ALL_XATTRS);
  }

  async getxattr(caller: Caller, ino: bigint, name: Buffer): Promise<Buffer> {
    const key = name.toString('latin1');
    if (this.knownAbsent(ino, key)) {
      this.api.metrics?.cacheHit('xattrs');
      throw new FsError('NO_XATTR');
    }
    const pushGen = this.xattrPushGen;
    try {
      const r = await this.api.read<wire.GetXattrReply__Output>(pgOfIno(ino), 'GetXattr', {
        caller: this.caller(caller),
        ino: ino.toString(),
        name,
      });
      return r.value;
    } catch (err) {
      if (err instanceof FsError && err.code === 'NO_XATTR' && pushGen === this.xattrPushGen)
        this.noteAbsentXattr(ino, key);
      throw err;
    }
  }

  /** `name` (latin1) is known not to be set on `ino`, for attrTtlMs. */
  private noteAbsentXattr(ino: bigint, name: string): void {
    if (this.o.attrTtlMs <= 0) return;
    let names = this.absentXattrs.get(ino);
    if (!names) {
      // The inode noted longest ago goes first (a Map keeps insertion order).
      if (this.absentXattrs.size >= ABSENT_XATTR_INODES_MAX)
        this.absentXattrs.delete(this.absentXattrs.keys().next().value!);
      this.absentXattrs.set(ino, (names = new Map()));
    }
    names.set(name, Date.now() + this.o.attrTtlMs);
  }

  async listxattr(caller: Caller, ino: bigint): Promise<Buffer[]> {
    if (this.knownAbsent(ino, ALL_XATTRS)) {
      this.api.metrics?.cacheHit('xattrs');
      return [];
    }
    const r = await this.api.read<wire.ListXattrReply__Output>(pgOfIno(ino), 'ListXattr', {
      caller: this.caller(caller),
      ino: ino.toString(),
    });
    return r.names;
  }

  async removexattr(caller: Caller, ino: bigint, name: Buffer): Promise<void> {
    this.xattrPushGen++;
    this.absentXattrs.delete(ino);
    this.dirAttrs.forget(ino);
    await this.api.mutate(pgOfIno(ino), 'RemoveXattr', {
      caller: this.caller(caller),
      ino: ino.toString(),
      name,
    });
  }

  /** Publishes every open file's buffered data (syncfs, unmount). */
  async syncfs(): Promise<void> {
    await Promise.all([...this.files.values()].map((f) => f.flush(f.syncfsMark)));
    await this.api.sync();
  }

  async destroy(): Promise<void> {
    await this.syncfs().catch((err) => this.log.error('unpublished data at unmount', { err: String(err) }));
  }
}
