import { FsError, firstSeq, initHashing, makeIno, ROOT_INO } from '@dunix/proto';
import type { Cred, EngineConfig } from '../../src/namespace/api.js';
import { NamespaceEngine } from '../../src/namespace/engine.js';
import { KvTxn, RecordTxn, type MetaTxn } from '../../src/namespace/txn.js';
import { inoOfKey, KeyKind, kindOfKey } from '../../src/store/keys.js';
import { MemoryKv } from '../../src/store/memory-kv.js';
import type { InodeRecord } from '../../src/store/records.js';

export const root: Cred = { uid: 0, gid: 0, groups: [] };
export const alice: Cred = { uid: 1000, gid: 1000, groups: [1000, 100] };
export const bob: Cred = { uid: 1001, gid: 1001, groups: [100] };
export const nobody: Cred = { uid: 65534, gid: 65534, groups: [] };

export const b = (s: string): Buffer => Buffer.from(s);
export const ROOT = ROOT_INO;

/**
 * The engine over a MemoryKv, one transaction per operation: a deterministic
 * clock (+1000 ns per operation), per-PG inode counters, and the batch
 * committed only when the operation returns.
 */
export class Fixture {
  readonly kv = new MemoryKv();
  readonly engine: NamespaceEngine;
  readonly cfg: EngineConfig;
  clockNs = 1_000_000n;
  private readonly seq = new Map<number, bigint>();
  /** PGs handed to allocIno, in order. */
  readonly allocated: number[] = [];

  private constructor(cfg: Partial<EngineConfig>) {
    this.cfg = { pgCount: 8, inlineMaxBytes: 4096, blockSizeBytes: 65536, ...cfg };
    this.engine = new NamespaceEngine(this.cfg);
  }

  static async make(cfg: Partial<EngineConfig> = {}): Promise<Fixture> {
    await initHashing();
    const f = new Fixture(cfg);
    await f.run((t) => f.engine.ensureRoot(t));
    return f;
  }

  private async alloc(pg: number): Promise<bigint> {
    const n = this.seq.get(pg) ?? firstSeq(pg);
    this.seq.set(pg, n + 1n);
    this.allocated.push(pg);
    return makeIno(pg, n);
  }

  /** Runs one operation in its own transaction; commits on return, drops on throw. */
  async run<T>(op: (t: MetaTxn) => Promise<T>): Promise<T> {
    this.clockNs += 1000n;
    const kvt = new KvTxn(this.kv);
    const t = new RecordTxn(kvt, this.clockNs, (pg) => this.alloc(pg));
    const out = await op(t);
    await this.kv.write(kvt.writeBatch(), false);
    return out;
  }

  /** Runs a read-only operation: the clock does not move and nothing is committed. */
  async read<T>(op: (t: MetaTxn) => Promise<T>): Promise<T> {
    const kvt = new KvTxn(this.kv);
    const out = await op(new RecordTxn(kvt, this.clockNs, (pg) => this.alloc(pg)));
    if (kvt.writes.size) throw new Error('read-only operation wrote');
    return out;
  }

  /** The error code an operation fails with, or 'OK'. Non-FsErrors are rethrown (bugs). */
  async code(op: (t: MetaTxn) => Promise<unknown>): Promise<string> {
    try {
      await this.run(op);
      return 'OK';
    } catch (e) {
      if (e instanceof FsError) return e.code;
      throw e;
    }
  }

  /** Runs an operation expected to fail; returns its code and how many writes it had buffered. */
  async failure(op: (t: MetaTxn) => Promise<unknown>): Promise<{ code: string; writes: number }> {
    const kvt = new KvTxn(this.kv);
    const t = new RecordTxn(kvt, this.clockNs + 1n, (pg) => this.alloc(pg));
    try {
      await op(t);
      return { code: 'OK', writes: kvt.writes.size };
    } catch (e) {
      if (e instanceof FsError) return { code: e.code, writes: kvt.writes.size };
      throw e;
    }
  }

  stat(ino: bigint): Promise<InodeRecord> {
    return this.read((t) => this.engine.getattr(t, ino));
  }

  async mkdir(parent: bigint, name: string, mode = 0o755, cred: Cred = root): Promise<bigint> {
    const r = await this.run((t) => this.engine.mkdir(t, cred, parent, b(name), mode));
    return r.inode.ino;
  }

  async create(parent: bigint, name: string, mode = 0o644, cred: Cred = root): Promise<bigint> {
    const r = await this.run((t) => this.engine.mknod(t, cred, parent, b(name), 0o100000 | mode, 0n, true));
    return r.inode.ino;
  }

  async chown(ino: bigint, uid: number, gid: number): Promise<void> {
    await this.run((t) => this.engine.setattr(t, root, ino, { uid, gid }));
  }

  async chmod(ino: bigint, mode: number, cred: Cred = root): Promise<void> {
    await this.run((t) => this.engine.setattr(t, cred, ino, { mode }));
  }

  /** Every entry name of a directory, by paging through readdir `pageSize` at a time. */
  async names(dir: bigint, pageSize = 3): Promise<string[]> {
    const out: string[] = [];
    let cookie = 0n;
    for (;;) {
      const page = await this.read((t) => this.engine.readdir(t, root, dir, cookie, pageSize));
      for (const e of page.entries) {
        out.push(e.name.toString());
        cookie = e.dirent.cookie;
      }
      if (page.eof) return out;
    }
  }

  async lookupIno(parent: bigint, name: string): Promise<bigint> {
    const r = await this.read((t) => this.engine.lookup(t, root, parent, b(name)));
    return r.dirent.ino;
  }

  /** Keys in the store that belong to inode `ino` (its record, inline data, xattrs, orphan mark, entries). */
  async keysOf(ino: bigint): Promise<string[]> {
    const rows = await this.kv.range({ lt: Buffer.alloc(4, 0xff) });
    const kinds = new Map<number, string>(Object.entries(KeyKind).map(([k, v]) => [v, k]));
    return rows
      .filter((r) => r.key.length >= 11 && inoOfKey(r.key) === ino && kindOfKey(r.key) !== KeyKind.log)
      .map((r) => kinds.get(kindOfKey(r.key)) ?? '?');
  }

  /** Every inode with an orphan mark. */
  async orphans(): Promise<Set<bigint>> {
    const rows = await this.kv.range({ lt: Buffer.alloc(4, 0xff) });
    return new Set(rows.filter((r) => kindOfKey(r.key) === KeyKind.orphan).map((r) => inoOfKey(r.key)));
  }

  async isOrphan(ino: bigint): Promise<boolean> {
    return (await this.keysOf(ino)).includes('orphan');
  }
}
