import { pgOfIno } from '@dunix/proto';
import { keys, pgOfKey } from '../store/keys.js';
import { prefixEnd, type KvEntry, type KvRangeOptions, type KvWrite } from '../store/kv.js';
import {
  decodeRecord,
  encodeRecord,
  type DirentRecord,
  type InodeRecord,
  type TrimRecord,
  type AllocRecord,
  type OrphanRecord,
  type PunchRecord,
} from '../store/records.js';
import {
  decodeLockTable,
  encodeLockTable,
  type HeldLock,
  type LockTable,
  type LockTableRecord,
} from './lock-table.js';

/**
 * What the namespace engine may touch: typed records of any PG, read through
 * and written into one transaction. The engine never sees LevelDB, gRPC or a
 * clock; the brick decides whether the transaction commits in one local
 * batch or as a cross-PG intent (see tx/coordinator.ts).
 */
export interface MetaTxn {
  /** The operation's one timestamp (ns since epoch), from the injected clock. */
  readonly nowNs: bigint;
  getInode(ino: bigint): Promise<InodeRecord | undefined>;
  putInode(rec: InodeRecord): void;
  deleteInode(ino: bigint): void;
  getDirent(dir: bigint, name: Uint8Array): Promise<DirentRecord | undefined>;
  /** Writes the entry and its readdir-cookie index. */
  putDirent(dir: bigint, name: Uint8Array, rec: DirentRecord): void;
  deleteDirent(dir: bigint, name: Uint8Array, cookie: bigint): void;
  getInline(ino: bigint): Promise<Buffer | undefined>;
  putInline(ino: bigint, data: Uint8Array): void;
  deleteInline(ino: bigint): void;
  getXattr(ino: bigint, name: Uint8Array): Promise<Buffer | undefined>;
  putXattr(ino: bigint, name: Uint8Array, value: Uint8Array): void;
  deleteXattr(ino: bigint, name: Uint8Array): void;
  /** Names of the inode's xattrs as committed (the inode's PG must be local). */
  listXattrNames(ino: bigint): Promise<Buffer[]>;
  /** Entries of a directory after `afterCookie`, in cookie order, as committed (local PG only). */
  listDirents(
    dir: bigint,
    afterCookie: bigint,
    limit: number,
  ): Promise<{ name: Buffer; rec: DirentRecord }[]>;
  /** Marks (true, or with its owner) or clears the orphan marker of an inode with nlink 0. */
  setOrphan(ino: bigint, orphan: boolean | OrphanRecord): void;
  /** Records (or clears) block bytes of the inode still to trim on the blocks' PGs. */
  setTrim(ino: bigint, rec: TrimRecord | undefined): void;
  getTrim(ino: bigint): Promise<TrimRecord | undefined>;
  /** The inode's allocation map (see AllocRecord); the inode's PG must be local. */
  getAlloc(ino: bigint, index: bigint): Promise<AllocRecord | undefined>;
  putAlloc(ino: bigint, index: bigint, rec: AllocRecord | undefined): void;
  /** Map entries with index >= from (and < to), ascending, as committed (not this transaction's writes). */
  listAlloc(
    ino: bigint,
    from: bigint,
    to: bigint,
    limit: number,
  ): Promise<{ index: bigint; rec: AllocRecord }[]>;
  /** Records (or clears) a hole punch still to carry out on the blocks' PGs. */
  setPunch(ino: bigint, rec: PunchRecord | undefined): void;
  getPunch(ino: bigint): Promise<PunchRecord | undefined>;
  /** The inode's lock table (empty when none); the inode's PG must be local. */
  getLocks(ino: bigint): Promise<HeldLock[]>;
  /** Stores the inode's lock table (an empty one deletes the record). */
  setLocks(ino: bigint, table: LockTable): void;
  /** A fresh inode number in `pg` (never handed out before). */
  allocIno(pg: number): Promise<bigint>;
}

/** Where a KvTxn reads committed values from. */
export interface KvReader {
  get(key: Buffer): Promise<Buffer | undefined>;
  range(opts: KvRangeOptions): Promise<KvEntry[]>;
}

const k = (b: Buffer) => b.toString('latin1');

/**
 * A transaction over raw keys: remembers the first value it read of every key
 * (the read set, validated when a cross-PG intent is prepared) and buffers
 * writes (read-your-writes).
 */
export class KvTxn {
  readonly reads = new Map<string, Buffer | undefined>();
  readonly writes = new Map<string, Buffer | undefined>();
  constructor(private readonly reader: KvReader) {}

  async get(key: Buffer): Promise<Buffer | undefined> {
    const s = k(key);
    if (this.writes.has(s)) return this.writes.get(s);
    if (this.reads.has(s)) return this.reads.get(s);
    const v = await this.reader.get(key);
    this.reads.set(s, v);
    return v;
  }

  range(opts: KvRangeOptions): Promise<KvEntry[]> {
    return this.reader.range(opts);
  }

  put(key: Buffer, value: Buffer): void {
    this.writes.set(k(key), value);
  }

  del(key: Buffer): void {
    this.writes.set(k(key), undefined);
  }

  /** The PGs this transaction read or wrote. */
  pgs(): Set<number> {
    const out = new Set<number>();
    for (const s of [...this.reads.keys(), ...this.writes.keys()]) out.add(pgOfKey(Buffer.from(s, 'latin1')));
    return out;
  }

  writeBatch(): KvWrite[] {
    return [...this.writes].map(([s, value]) => ({ key: Buffer.from(s, 'latin1'), value }));
  }
}

/** MetaTxn over a KvTxn: typed records, keys derived from inode numbers. */
export class RecordTxn implements MetaTxn {
  constructor(
    readonly kv: KvTxn,
    readonly nowNs: bigint,
    private readonly alloc: (pg: number) => Promise<bigint>,
  ) {}

  async getInode(ino: bigint): Promise<InodeRecord | undefined> {
    const v = await this.kv.get(keys.inode(pgOfIno(ino), ino));
    return v && decodeRecord<InodeRecord>(v);
  }
  putInode(rec: InodeRecord): void {
    if (rec.nlink < 0) throw new Error(`invariant: nlink of ${rec.ino} is negative`);
    this.kv.put(keys.inode(pgOfIno(rec.ino), rec.ino), encodeRecord(rec));
  }
  deleteInode(ino: bigint): void {
    this.kv.del(keys.inode(pgOfIno(ino), ino));
  }
  async getDirent(dir: bigint, name: Uint8Array): Promise<DirentRecord | undefined> {
    const v = await this.kv.get(keys.dirent(pgOfIno(dir), dir, name));
    return v && decodeRecord<DirentRecord>(v);
  }
  putDirent(dir: bigint, name: Uint8Array, rec: DirentRecord): void {
    const pg = pgOfIno(dir);
    this.kv.put(keys.dirent(pg, dir, name), encodeRecord(rec));
    this.kv.put(keys.cookie(pg, dir, rec.cookie), Buffer.from(name));
  }
  deleteDirent(dir: bigint, name: Uint8Array, cookie: bigint): void {
    const pg = pgOfIno(dir);
    this.kv.del(keys.dirent(pg, dir, name));
    this.kv.del(keys.cookie(pg, dir, cookie));
  }
  getInline(ino: bigint): Promise<Buffer | undefined> {
    return this.kv.get(keys.inline(pgOfIno(ino), ino));
  }
  putInline(ino: bigint, data: Uint8Array): void {
    this.kv.put(keys.inline(pgOfIno(ino), ino), Buffer.from(data));
  }
  deleteInline(ino: bigint): void {
    this.kv.del(keys.inline(pgOfIno(ino), ino));
  }
  getXattr(ino: bigint, name: Uint8Array): Promise<Buffer | undefined> {
    return this.kv.get(keys.xattr(pgOfIno(ino), ino, name));
  }
  putXattr(ino: bigint, name: Uint8Array, value: Uint8Array): void {
    this.kv.put(keys.xattr(pgOfIno(ino), ino, name), Buffer.from(value));
  }
  deleteXattr(ino: bigint, name: Uint8Array): void {
    this.kv.del(keys.xattr(pgOfIno(ino), ino, name));
  }
  async listXattrNames(ino: bigint): Promise<Buffer[]> {
    const prefix = keys.xattrPrefix(pgOfIno(ino), ino);
    const rows = await this.kv.range({ gte: prefix, lt: prefixEnd(prefix) });
    return rows.map((r) => r.key.subarray(prefix.length));
  }
  async listDirents(
    dir: bigint,
    afterCookie: bigint,
    limit: number,
  ): Promise<{ name: Buffer; rec: DirentRecord }[]> {
    const pg = pgOfIno(dir);
    const prefix = keys.cookiePrefix(pg, dir);
    const rows = await this.kv.range({
      gt: keys.cookie(pg, dir, afterCookie),
      lt: prefixEnd(prefix),
      limit,
    });
    const out: { name: Buffer; rec: DirentRecord }[] = [];
    for (const r of rows) {
      const v = await this.kv.get(keys.dirent(pg, dir, r.value));
      if (v) out.push({ name: r.value, rec: decodeRecord<DirentRecord>(v) });
    }
    return out;
  }
  setOrphan(ino: bigint, orphan: boolean | OrphanRecord): void {
    const key = keys.orphan(pgOfIno(ino), ino);
    if (typeof orphan === 'object') this.kv.put(key, encodeRecord(orphan));
    else if (orphan) this.kv.put(key, Buffer.alloc(0));
    else this.kv.del(key);
  }
  setTrim(ino: bigint, rec: TrimRecord | undefined): void {
    const key = keys.trim(pgOfIno(ino), ino);
    if (rec) this.kv.put(key, encodeRecord(rec));
    else this.kv.del(key);
  }
  async getTrim(ino: bigint): Promise<TrimRecord | undefined> {
    const v = await this.kv.get(keys.trim(pgOfIno(ino), ino));
    return v && decodeRecord<TrimRecord>(v);
  }
  async getAlloc(ino: bigint, index: bigint): Promise<AllocRecord | undefined> {
    const v = await this.kv.get(keys.alloc(pgOfIno(ino), ino, index));
    return v && decodeRecord<AllocRecord>(v);
  }
  putAlloc(ino: bigint, index: bigint, rec: AllocRecord | undefined): void {
    const key = keys.alloc(pgOfIno(ino), ino, index);
    if (rec) this.kv.put(key, encodeRecord(rec));
    else this.kv.del(key);
  }
  async listAlloc(
    ino: bigint,
    from: bigint,
    to: bigint,
    limit: number,
  ): Promise<{ index: bigint; rec: AllocRecord }[]> {
    const pg = pgOfIno(ino);
    const rows = await this.kv.range({ gte: keys.alloc(pg, ino, from), lt: keys.alloc(pg, ino, to), limit });
    return rows.map((r) => ({ index: r.key.readBigUInt64BE(11), rec: decodeRecord<AllocRecord>(r.value) }));
  }
  setPunch(ino: bigint, rec: PunchRecord | undefined): void {
    const key = keys.punch(pgOfIno(ino), ino);
    if (rec) this.kv.put(key, encodeRecord(rec));
    else this.kv.del(key);
  }
  async getPunch(ino: bigint): Promise<PunchRecord | undefined> {
    const v = await this.kv.get(keys.punch(pgOfIno(ino), ino));
    return v && decodeRecord<PunchRecord>(v);
  }
  async getLocks(ino: bigint): Promise<HeldLock[]> {
    const v = await this.kv.get(keys.lock(pgOfIno(ino), ino));
    return v ? decodeLockTable(JSON.parse(v.toString()) as LockTableRecord) : [];
  }
  setLocks(ino: bigint, table: LockTable): void {
    const key = keys.lock(pgOfIno(ino), ino);
    if (table.length === 0) this.kv.del(key);
    else this.kv.put(key, Buffer.from(JSON.stringify(encodeLockTable(table))));
  }
  allocIno(pg: number): Promise<bigint> {
    return this.alloc(pg);
  }
}
