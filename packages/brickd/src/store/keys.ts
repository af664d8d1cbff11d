/**
 * Key layout of the brick store. Every key starts with its PG (u16 BE) so a
 * PG's records are one contiguous range (moved, copied or dropped as a unit),
 * then a one-byte record kind, then the kind's fields, big-endian so byte
 * order is numeric order.
 */
export const KeyKind = {
  /** PG meta: allocation high-water mark. */
  meta: 0x4d, // 'M'
  /** ino → InodeRecord */
  inode: 0x49, // 'I'
  /** dir ino + name → DirentRecord */
  dirent: 0x44, // 'D'
  /** dir ino + cookie → name (readdir order) */
  cookie: 0x43, // 'C'
  /** ino + name → xattr value */
  xattr: 0x58, // 'X'
  /** ino → inline file content / symlink target */
  inline: 0x4e, // 'N'
  /** ino + block index → BlockRecord */
  block: 0x42, // 'B'
  /** request id → stored reply of an applied mutation */
  request: 0x52, // 'R'
  /** tx id → prepared transaction (participant side) */
  prepared: 0x50, // 'P'
  /** tx id → commit decision (coordinator side) */
  decision: 0x54, // 'T'
  /** ino → orphan marker (nlink 0, awaiting reclaim) */
  orphan: 0x4f, // 'O'
  /** op sequence → op log entry */
  log: 0x4c, // 'L'
  /** ino → block trim still to finish (TrimRecord): truncate or reclaim of a block file */
  trim: 0x5a, // 'Z'
  /** ino + block index → AllocRecord: the inode's allocation map, on the inode's PG */
  alloc: 0x41, // 'A'
  /** ino → PunchRecord: a hole punch still to finish on the blocks' PGs */
  punch: 0x48, // 'H'
  /** ino → LockTableRecord: the inode's POSIX and flock locks (namespace/lock-table.ts) */
  lock: 0x4b, // 'K'
} as const;

function head(pg: number, kind: number, extra: number): Buffer {
  const b = Buffer.allocUnsafe(3 + extra);
  b.writeUInt16BE(pg, 0);
  b[2] = kind;
  return b;
}

function inoKey(pg: number, kind: number, ino: bigint, tail?: Uint8Array): Buffer {
  const b = head(pg, kind, 8 + (tail?.length ?? 0));
  b.writeBigUInt64BE(ino, 3);
  if (tail) b.set(tail, 11);
  return b;
}

export const keys = {
  pgPrefix(pg: number): Buffer {
    const b = Buffer.allocUnsafe(2);
    b.writeUInt16BE(pg, 0);
    return b;
  },
  kindPrefix(pg: number, kind: number): Buffer {
    return head(pg, kind, 0);
  },
  meta: (pg: number) => head(pg, KeyKind.meta, 0),
  inode: (pg: number, ino: bigint) => inoKey(pg, KeyKind.inode, ino),
  inline: (pg: number, ino: bigint) => inoKey(pg, KeyKind.inline, ino),
  orphan: (pg: number, ino: bigint) => inoKey(pg, KeyKind.orphan, ino),
  trim: (pg: number, ino: bigint) => inoKey(pg, KeyKind.trim, ino),
  dirent: (pg: number, dir: bigint, name: Uint8Array) => inoKey(pg, KeyKind.dirent, dir, name),
  direntPrefix: (pg: number, dir: bigint) => inoKey(pg, KeyKind.dirent, dir),
  cookie(pg: number, dir: bigint, cookie: bigint): Buffer {
    const b = inoKey(pg, KeyKind.cookie, dir, Buffer.alloc(8));
    b.writeBigUInt64BE(cookie, 11);
    return b;
  },
  cookiePrefix: (pg: number, dir: bigint) => inoKey(pg, KeyKind.cookie, dir),
  xattr: (pg: number, ino: bigint, name: Uint8Array) => inoKey(pg, KeyKind.xattr, ino, name),
  xattrPrefix: (pg: number, ino: bigint) => inoKey(pg, KeyKind.xattr, ino),
  block(pg: number, ino: bigint, index: bigint): Buffer {
    const b = inoKey(pg, KeyKind.block, ino, Buffer.alloc(8));
    b.writeBigUInt64BE(index, 11);
    return b;
  },
  blockPrefix: (pg: number, ino: bigint) => inoKey(pg, KeyKind.block, ino),
  alloc(pg: number, ino: bigint, index: bigint): Buffer {
    const b = inoKey(pg, KeyKind.alloc, ino, Buffer.alloc(8));
    b.writeBigUInt64BE(index, 11);
    return b;
  },
  allocPrefix: (pg: number, ino: bigint) => inoKey(pg, KeyKind.alloc, ino),
  punch: (pg: number, ino: bigint) => inoKey(pg, KeyKind.punch, ino),
  lock: (pg: number, ino: bigint) => inoKey(pg, KeyKind.lock, ino),
  request: (pg: number, requestId: string) =>
    Buffer.concat([head(pg, KeyKind.request, 0), Buffer.from(requestId)]),
  prepared: (pg: number, txId: string) => Buffer.concat([head(pg, KeyKind.prepared, 0), Buffer.from(txId)]),
  decision: (pg: number, txId: string) => Buffer.concat([head(pg, KeyKind.decision, 0), Buffer.from(txId)]),
  log(pg: number, seq: bigint): Buffer {
    const b = head(pg, KeyKind.log, 8);
    b.writeBigUInt64BE(seq, 3);
    return b;
  },
};

/**
 * Keys of no PG (kind 0xff is not a record kind): the brick's own
 * bookkeeping, never replicated, copied or wiped with a PG.
 */
export const brickKeys = {
  /** The id of the brick that created this store: a store without it under a known id was lost. */
  storeOwner: Buffer.from([0xff, 0xff, 0xff, 0x49]),
};

/** A key of the brick's own bookkeeping, not of a PG's range. */
export function isBrickKey(key: Uint8Array): boolean {
  return key.length >= 3 && key[2] === 0xff;
}

export function pgOfKey(key: Uint8Array): number {
  if (key.length < 3) throw new RangeError('key too short');
  return (key[0]! << 8) | key[1]!;
}

export function kindOfKey(key: Uint8Array): number {
  return key[2]!;
}

/** The u64 after the kind byte (ino or dir), for keys that have one. */
export function inoOfKey(key: Buffer): bigint {
  return key.readBigUInt64BE(3);
}
