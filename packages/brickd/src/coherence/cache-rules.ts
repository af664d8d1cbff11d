/**
 * Which inodes a request reads (the caller's session then caches them) and
 * which cached state a mutation makes stale: the rules of coherent caches,
 * free of I/O. Requests and replies are the decoded wire messages, narrowed
 * to the fields the rules read (64-bit numbers as decimal strings).
 */

/** What a session may cache and a change makes stale (wire `Invalidation.kind`). */
export const InvalKind = {
  /** Attributes of `ino`; with `data`, its cached pages too. */
  INODE: 0,
  /** The name `name` in directory `parent` (a positive or a negative entry). */
  ENTRY: 1,
  /** As ENTRY, and the name was `ino`'s (FUSE notify_delete). */
  DELETE: 2,
  /** The session's registration of `ino` was evicted: everything it cached of `ino`. */
  FORGOTTEN: 3,
} as const;
export type InvalKind = (typeof InvalKind)[keyof typeof InvalKind];

export interface Inval {
  kind: InvalKind;
  ino: bigint;
  parent: bigint;
  name: Buffer;
  data: boolean;
}

export interface CacheEffects {
  /** Inodes the caller will cache from this reply (directories for their entries). */
  reads: bigint[];
  /** State other sessions may hold that the request, once applied, made stale. */
  changes: Inval[];
}

const NONE: CacheEffects = { reads: [], changes: [] };
const EMPTY = Buffer.alloc(0);

export const attrsOf = (ino: bigint, data = false): Inval => ({
  kind: InvalKind.INODE,
  ino,
  parent: 0n,
  name: EMPTY,
  data,
});
export const entryOf = (parent: bigint, name: Buffer): Inval => ({
  kind: InvalKind.ENTRY,
  ino: 0n,
  parent,
  name,
  data: false,
});
export const deleteOf = (parent: bigint, ino: bigint, name: Buffer): Inval => ({
  kind: InvalKind.DELETE,
  ino,
  parent,
  name,
  data: false,
});
export const forgottenOf = (ino: bigint): Inval => ({
  kind: InvalKind.FORGOTTEN,
  ino,
  parent: 0n,
  name: EMPTY,
  data: true,
});

/**
 * The registration an invalidation is found under: an entry belongs to its
 * directory (registered by Lookup and ReadDir of it), attributes to the inode.
 */
export function registeredUnder(i: Inval): bigint {
  return i.kind === InvalKind.ENTRY || i.kind === InvalKind.DELETE ? i.parent : i.ino;
}

type Msg = Record<string, unknown>;
/** A wire number; anything malformed is 0 (no inode): the handler's own validation answers it. */
function big(v: unknown): bigint {
  try {
    return typeof v === 'string' || typeof v === 'number' ? BigInt(v) : 0n;
  } catch {
    return 0n;
  }
}
const buf = (v: unknown): Buffer => (Buffer.isBuffer(v) ? v : EMPTY);

/** The attributes a reply carries (Attr, or a Dirent's), when present. */
function attrIno(a: unknown): bigint[] {
  if (!a || typeof a !== 'object') return [];
  const ino = big((a as Msg).ino);
  return ino === 0n ? [] : [ino];
}

/**
 * Takes out of a read's reply the attributes of each inode `stale` names
 * (the entry stays; the client then asks GetAttr, which registers before it
 * reads); returns those inodes. Only Lookup and ReadDir answer attributes of
 * inodes other than the one named in the request.
 */
export function dropStaleAttrs(method: string, rep: Msg, stale: (ino: bigint) => boolean): bigint[] {
  const entries =
    method === 'Lookup'
      ? [rep.entry as Msg | undefined]
      : method === 'ReadDir'
        ? ((rep.entries as Msg[] | undefined) ?? [])
        : [];
  const dropped: bigint[] = [];
  for (const e of entries) {
    const [ino] = attrIno(e?.attr);
    if (ino === undefined || !stale(ino)) continue;
    e!.attr = null;
    dropped.push(ino);
  }
  return dropped;
}

/**
 * The effects of `method` applied with `req` answering `rep` (undefined when
 * the request failed: a failed read still registers, as a negative lookup is
 * cached too; a failed mutation changed nothing).
 */
export function cacheEffects(method: string, req: Msg, rep: Msg | undefined): CacheEffects {
  switch (method) {
    // Reads: the caller caches what they return.
    case 'Lookup': {
      const entry = rep?.entry as Msg | undefined;
      return { reads: [big(req.parent), ...attrIno(entry?.attr)], changes: [] };
    }
    case 'GetAttr':
    case 'Open':
    case 'Readlink':
      return { reads: [big(req.ino)], changes: [] };
    case 'ReadDir': {
      const entries = (rep?.entries as Msg[] | undefined) ?? [];
      return { reads: [big(req.dir), ...entries.flatMap((e) => attrIno(e.attr))], changes: [] };
    }
  }
  if (!rep) return NONE;
  // The caller's kernel caches what a change answers (the new entry, the new attributes) and
  // the directories it changed: registered too, so a later change by someone else reaches it.
  const entryIno = attrIno((rep.entry as Msg | undefined)?.attr);
  switch (method) {
    case 'SetAttr':
      // A size change drops pages; mode, owner and times only the attributes.
      return { reads: [big(req.ino)], changes: [attrsOf(big(req.ino), req.setSize === true)] };
    case 'SetXattr':
    case 'RemoveXattr':
      return { reads: [], changes: [attrsOf(big(req.ino))] };
    case 'WriteInline':
    case 'Extend':
    case 'ConvertInline':
    case 'Fallocate':
      // The writer published bytes, size and mtime (write + close, fsync): drop pages too.
      return { reads: [big(req.ino)], changes: [attrsOf(big(req.ino), true)] };
    case 'Mknod':
    case 'Mkdir':
    case 'Symlink':
      // The entry was negative (or absent) in other kernels; the directory's size and times changed.
      return {
        reads: [big(req.parent), ...entryIno],
        changes: [entryOf(big(req.parent), buf(req.name)), attrsOf(big(req.parent))],
      };
    case 'Tmpfile':
      return NONE;
    case 'Link':
      return {
        reads: [big(req.newParent), ...entryIno],
        changes: [
          entryOf(big(req.newParent), buf(req.newName)),
          attrsOf(big(req.newParent)),
          attrsOf(big(req.ino)),
        ],
      };
    case 'Unlink': {
      const ino = big(rep.ino);
      const parent = big(req.parent);
      return {
        reads: [parent],
        changes: [deleteOf(parent, ino, buf(req.name)), attrsOf(parent), attrsOf(ino)],
      };
    }
    case 'Rmdir':
      return {
        reads: [big(req.parent)],
        changes: [entryOf(big(req.parent), buf(req.name)), attrsOf(big(req.parent))],
      };
    case 'Rename': {
      const parent = big(req.parent);
      const newParent = big(req.newParent);
      const changes = [entryOf(parent, buf(req.name)), entryOf(newParent, buf(req.newName)), attrsOf(parent)];
      if (newParent !== parent) changes.push(attrsOf(newParent));
      const replaced = big(rep.replacedIno);
      if (replaced !== 0n) changes.push(attrsOf(replaced));
      return { reads: newParent === parent ? [parent] : [parent, newParent], changes };
    }
  }
  return NONE;
}
