import { CHECKSUM_CHUNK_BYTES, FsError, initHashing } from '@dunix/proto';
import type { BlockFiles } from './block-files.js';
import { checkRecord, checkUint, chunkCount, chunkSum } from './block-record.js';
import { BlockQueues } from './block-queues.js';
import type { BlockRecord } from './records.js';

const CHUNK = CHECKSUM_CHUNK_BYTES;

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(`MemoryBlockFiles invariant: ${msg}`);
}

/**
 * Block files in memory, for the simulation and unit tests: the contract of
 * BlockStore (store/block-store.ts) over one Buffer per block instead of a
 * file. The caller owns the index record (length and an xxhash64 per 64 KiB
 * chunk); reads verify every chunk they touch (CORRUPT on a mismatch, a short
 * or a missing "file"), writes verify the old bytes they keep, gaps are
 * written as zeros, bytes past a record's length are never trusted, and
 * operations on one block run in call order, each queued one using the
 * record its predecessor produced. A "file" may hold bytes past its record
 * (as after a crash between a file write and its record's batch); nothing
 * is lost by a simulated crash, as every BlockStore write is durable on return.
 */
export class MemoryBlockFiles implements BlockFiles {
  private readonly files = new Map<string, Buffer>();
  private hashing: Promise<void> | undefined;
  private readonly queues = new BlockQueues(() => (this.hashing ??= initHashing()));

  async list(pg: number): Promise<{ ino: bigint; index: bigint }[]> {
    const prefix = `${pg.toString(16).padStart(4, '0')}/`;
    const out: { ino: bigint; index: bigint }[] = [];
    for (const key of this.files.keys()) {
      if (!key.startsWith(prefix)) continue;
      const [ino, index] = key.slice(prefix.length).split('.');
      out.push({ ino: BigInt(`0x${ino}`), index: BigInt(`0x${index}`) });
    }
    return out;
  }

  private keyOf(pg: number, ino: bigint, index: bigint): string {
    assert(Number.isInteger(pg) && pg >= 0 && pg <= 0xffff, `pg ${pg}`);
    assert(ino >= 0n && ino < 1n << 64n && index >= 0n && index < 1n << 64n, `block ${ino}.${index}`);
    return `${pg.toString(16).padStart(4, '0')}/${ino.toString(16).padStart(16, '0')}.${index.toString(16)}`;
  }

  async read(
    pg: number,
    ino: bigint,
    index: bigint,
    offset: number,
    length: number,
    rec: BlockRecord | undefined,
  ): Promise<Buffer> {
    checkUint('offset', offset);
    checkUint('length', length);
    const key = this.keyOf(pg, ino, index);
    return this.serial(key, rec, async (cur) => {
      checkRecord(cur, 'read');
      if (!cur || offset >= cur.length || length === 0) return { result: Buffer.alloc(0), rec: cur };
      const end = Math.min(offset + length, cur.length);
      const base = Math.floor(offset / CHUNK) * CHUNK;
      const stop = Math.min(Math.ceil(end / CHUNK) * CHUNK, cur.length);
      const file = this.files.get(key);
      if (!file) throw new FsError('CORRUPT', `block file ${key} missing, record has ${cur.length} bytes`);
      const buf = readExact(file, base, stop - base, key);
      verifyChunks(buf, base, cur, key);
      return { result: buf.subarray(offset - base, end - base), rec: cur };
    });
  }

  async write(
    pg: number,
    ino: bigint,
    index: bigint,
    offset: number,
    data: Uint8Array,
    rec: BlockRecord | undefined,
    blockSizeBytes: number,
  ): Promise<BlockRecord> {
    checkUint('offset', offset);
    checkUint('blockSizeBytes', blockSizeBytes);
    if (offset + data.length > blockSizeBytes) {
      throw new FsError(
        'OUT_OF_RANGE',
        `write of ${data.length} at ${offset} past block size ${blockSizeBytes}`,
      );
    }
    const bytes = Buffer.from(data.buffer, data.byteOffset, data.length);
    const key = this.keyOf(pg, ino, index);
    return this.serial(key, rec, async (cur) => {
      checkRecord(cur, 'write');
      const oldLen = cur?.length ?? 0;
      if (bytes.length === 0) {
        const same = cur ? { length: cur.length, sums: [...cur.sums] } : { length: 0, sums: [] };
        return { result: same, rec: cur };
      }
      const dataEnd = offset + bytes.length;
      const newLen = Math.max(oldLen, dataEnd);
      const start = Math.min(offset, oldLen);
      const first = Math.floor(start / CHUNK);
      const last = Math.ceil(dataEnd / CHUNK) - 1;
      const base = first * CHUNK;
      const stop = Math.min((last + 1) * CHUNK, newLen);
      const buf = Buffer.alloc(stop - base);
      const file = this.files.get(key) ?? Buffer.alloc(0);
      // Keep the old bytes of the edge chunks the write only partly covers.
      for (const i of new Set([first, last])) {
        const oldStart = i * CHUNK;
        const oldEnd = Math.min(oldStart + CHUNK, oldLen);
        if (oldEnd <= oldStart || (start <= oldStart && dataEnd >= oldEnd)) continue;
        const old = readExact(file, oldStart, oldEnd - oldStart, key);
        verifyChunks(old, oldStart, cur!, key);
        old.copy(buf, oldStart - base);
      }
      bytes.copy(buf, offset - base);
      // As a positioned write to a file: [start, dataEnd) replaced, the rest kept (a hole reads as zeros).
      const next = Buffer.alloc(Math.max(file.length, dataEnd));
      file.copy(next);
      buf.copy(next, start, start - base, dataEnd - base);
      this.files.set(key, next);
      const sums = cur ? [...cur.sums] : [];
      for (let i = first; i <= last; i++) {
        const cs = i * CHUNK - base;
        const ce = Math.min((i + 1) * CHUNK, newLen) - base;
        assert(ce > cs && ce <= buf.length, `chunk ${i} extent ${cs}..${ce} inside ${buf.length}`);
        sums[i] = chunkSum(buf.subarray(cs, ce));
      }
      assert(sums.length === chunkCount(newLen), `${sums.length} sums for ${newLen} bytes`);
      return { result: { length: newLen, sums: [...sums] }, rec: { length: newLen, sums } };
    });
  }

  async truncate(
    pg: number,
    ino: bigint,
    index: bigint,
    length: number,
    rec: BlockRecord | undefined,
  ): Promise<BlockRecord | undefined> {
    checkUint('length', length);
    const key = this.keyOf(pg, ino, index);
    return this.serial(key, rec, async (cur) => {
      checkRecord(cur, 'truncate');
      if (length === 0) {
        this.files.delete(key);
        return { result: undefined, rec: undefined };
      }
      const oldLen = cur?.length ?? 0;
      if (cur && length === oldLen) return { result: { length, sums: [...cur.sums] }, rec: cur };
      const keep = Math.min(oldLen, length);
      const edge = Math.floor(keep / CHUNK);
      const file = this.files.get(key) ?? Buffer.alloc(0);
      let edgeBytes: Buffer = Buffer.alloc(0);
      if (keep % CHUNK !== 0) {
        const oldStart = edge * CHUNK;
        const old = readExact(file, oldStart, Math.min(oldStart + CHUNK, oldLen) - oldStart, key);
        verifyChunks(old, oldStart, cur!, key);
        edgeBytes = old.subarray(0, keep - oldStart);
      }
      // Cut to what is kept, then grow with zeros.
      const next = Buffer.alloc(length);
      file.copy(next, 0, 0, Math.min(keep, file.length));
      this.files.set(key, next);
      const sums = cur ? cur.sums.slice(0, edge) : [];
      for (let i = edge; i < chunkCount(length); i++) {
        const cs = i * CHUNK;
        const chunk = Buffer.alloc(Math.min(cs + CHUNK, length) - cs);
        if (i === edge) edgeBytes.copy(chunk);
        sums.push(chunkSum(chunk));
      }
      assert(sums.length === chunkCount(length), `${sums.length} sums for ${length} bytes`);
      return { result: { length, sums: [...sums] }, rec: { length, sums } };
    });
  }

  async delete(pg: number, ino: bigint, index: bigint): Promise<void> {
    const key = this.keyOf(pg, ino, index);
    return this.serial(key, undefined, async () => {
      this.files.delete(key);
      return { result: undefined, rec: undefined };
    });
  }

  /** BlockStore.clone's contract; the bytes are copied (a Buffer per block shares nothing). */
  async clone(
    src: { pg: number; ino: bigint; index: bigint },
    want: BlockRecord,
    dst: { pg: number; ino: bigint; index: bigint },
  ): Promise<boolean> {
    checkRecord(want, 'clone');
    const srcKey = this.keyOf(src.pg, src.ino, src.index);
    const key = this.keyOf(dst.pg, dst.ino, dst.index);
    if (srcKey === key) throw new FsError('INVALID_ARGUMENT', `clone of block ${key} onto itself`);
    return this.serial(key, undefined, async (cur) => {
      const file = this.files.get(srcKey);
      if (want.length === 0 || !file || file.length < want.length) return { result: false, rec: cur };
      const bytes = Buffer.from(file.subarray(0, want.length));
      try {
        verifyChunks(bytes, 0, want, srcKey);
      } catch (err) {
        if (err instanceof FsError && err.code === 'CORRUPT') return { result: false, rec: cur };
        throw err;
      }
      this.files.set(key, bytes);
      return { result: true, rec: { length: want.length, sums: [...want.sums] } };
    });
  }

  /** Copies of every block "file" of `pg` (all PGs when omitted), by key, sorted (for checkers). */
  dump(pg?: number): Map<string, Buffer> {
    const prefix = pg === undefined ? '' : `${pg.toString(16).padStart(4, '0')}/`;
    const out = new Map<string, Buffer>();
    for (const k of [...this.files.keys()].sort()) {
      if (k.startsWith(prefix)) out.set(k, Buffer.from(this.files.get(k)!));
    }
    return out;
  }

  /** The raw bytes of a block "file" (a copy), for tests. */
  bytesOf(pg: number, ino: bigint, index: bigint): Buffer | undefined {
    const b = this.files.get(this.keyOf(pg, ino, index));
    return b && Buffer.from(b);
  }

  /** Replaces (or with undefined removes) a block "file" behind the store's back: damage, for tests. */
  setBytes(pg: number, ino: bigint, index: bigint, bytes: Buffer | undefined): void {
    const key = this.keyOf(pg, ino, index);
    if (bytes) this.files.set(key, Buffer.from(bytes));
    else this.files.delete(key);
  }

  private serial<T>(
    key: string,
    rec: BlockRecord | undefined,
    fn: (cur: BlockRecord | undefined) => Promise<{ result: T; rec: BlockRecord | undefined }>,
  ): Promise<T> {
    return this.queues.run(key, rec, fn);
  }
}

/** Exactly `length` bytes at `position` (a copy); a short file is corruption. */
function readExact(file: Buffer, position: number, length: number, key: string): Buffer {
  if (position + length > file.length) {
    throw new FsError(
      'CORRUPT',
      `block file ${key} ends at ${Math.max(position, file.length)}, record needs ${position + length}`,
    );
  }
  return Buffer.from(file.subarray(position, position + length));
}

function verifyChunks(buf: Buffer, base: number, rec: BlockRecord, key: string): void {
  assert(base % CHUNK === 0, `chunk-aligned base ${base}`);
  for (let off = 0; off < buf.length; off += CHUNK) {
    const i = (base + off) / CHUNK;
    const end = Math.min(off + CHUNK, buf.length);
    assert(
      base + end === Math.min((i + 1) * CHUNK, rec.length),
      `chunk ${i} read as ${base + off}..${base + end} of ${rec.length}`,
    );
    const sum = chunkSum(buf.subarray(off, end));
    if (sum !== rec.sums[i]) {
      throw new FsError('CORRUPT', `block file ${key} chunk ${i}: xxhash64 ${sum}, record ${rec.sums[i]}`);
    }
  }
}
