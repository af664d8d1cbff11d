import { decodeLogEntry, encodeLogEntry, FsError, type wire } from '@dunix/proto';
import type { KvWrite } from '../store/kv.js';

/**
 * One entry of a PG's log: every write to the PG's key range, with the block
 * file changes that go with it. The primary appends it under the next
 * sequence number; each replica applies it in sequence order without running
 * the namespace engine. Stored in the log as the `LogEntry` protobuf message,
 * without block bytes (those live in the block files).
 */
export type BlockOpKind = 'WRITE' | 'TRUNCATE' | 'DELETE' | 'SYNC' | 'CLONE';
const BLOCK_OP_KINDS: readonly string[] = ['WRITE', 'TRUNCATE', 'DELETE', 'SYNC', 'CLONE'];

export interface BlockOp {
  ino: bigint;
  index: bigint;
  kind: BlockOpKind;
  /** WRITE: where `data` goes. */
  offset: number;
  /** TRUNCATE: bytes kept. */
  length: number;
  /** WRITE, SYNC: the bytes (absent once stored). */
  data?: Buffer;
  /** SYNC: the index record matching `data`; absent: the block is gone. CLONE: the source's record. */
  record?: Buffer;
  /**
   * CLONE: the block whose bytes this one becomes (a whole-block
   * copy_file_range). A CLONE travels alone in its entry, so a replica that
   * lacks the source refuses the entry before changing anything.
   */
  src?: { pg: number; ino: bigint; index: bigint };
}

export interface LogEntry {
  epoch: number;
  seq: bigint;
  requestId: string;
  kind: string;
  writes: KvWrite[];
  blocks: BlockOp[];
}

/** Where a replica's copy of a PG's log stands. */
export interface LogPosition {
  lastSeq: bigint;
  /** Epoch of the entry at lastSeq (0 for an empty log). */
  lastEpoch: number;
  /** Lowest sequence the log still holds (lastSeq + 1 when it holds none). */
  firstSeq: bigint;
}

const EMPTY = Buffer.alloc(0);

export function entryToWire(e: LogEntry, withData: boolean): wire.LogEntry {
  return {
    epoch: e.epoch,
    seq: e.seq.toString(),
    requestId: e.requestId,
    kind: e.kind,
    writes: e.writes.map((w) =>
      w.value === undefined ? { key: w.key, value: EMPTY, delete: true } : { key: w.key, value: w.value },
    ),
    blocks: e.blocks.map((b) => ({
      ino: b.ino.toString(),
      index: b.index.toString(),
      kind: b.kind,
      offset: b.offset,
      length: b.length,
      ...(withData && b.data ? { data: b.data } : {}),
      ...(b.record ? { record: b.record } : {}),
      ...(b.src ? { srcPg: b.src.pg, srcIno: b.src.ino.toString(), srcIndex: b.src.index.toString() } : {}),
    })),
  };
}

const U64_RE = /^\d{1,20}$/;
function u64(v: string, field: string): bigint {
  if (!U64_RE.test(v)) throw new FsError('INVALID_ARGUMENT', `log entry ${field} is not a uint64`);
  return BigInt(v);
}

/** A wire or stored entry as a LogEntry; malformed fields are INVALID_ARGUMENT. */
export function entryFromWire(w: wire.LogEntry__Output): LogEntry {
  const epoch = Number(u64(w.epoch, 'epoch'));
  if (!Number.isSafeInteger(epoch) || epoch < 1) throw new FsError('INVALID_ARGUMENT', 'log entry epoch < 1');
  const seq = u64(w.seq, 'seq');
  if (seq < 1n) throw new FsError('INVALID_ARGUMENT', 'log entry seq < 1');
  return {
    epoch,
    seq,
    requestId: w.requestId,
    kind: w.kind,
    writes: w.writes.map((x) => {
      if (x.key.length < 3) throw new FsError('INVALID_ARGUMENT', 'log entry key too short');
      return { key: Buffer.from(x.key), value: x.delete ? undefined : Buffer.from(x.value) };
    }),
    blocks: w.blocks.map((b) => {
      if (!BLOCK_OP_KINDS.includes(b.kind))
        throw new FsError('INVALID_ARGUMENT', `log entry block op ${b.kind}`);
      if (b.kind === 'CLONE' && (b.record.length === 0 || w.blocks.length !== 1 || b.srcPg > 0xffff))
        throw new FsError('INVALID_ARGUMENT', 'log entry clone without a record, a source PG or alone');
      return {
        ino: u64(b.ino, 'ino'),
        index: u64(b.index, 'index'),
        kind: b.kind as BlockOpKind,
        offset: b.offset,
        length: b.length,
        ...(b.data.length > 0 || b.kind === 'WRITE' || b.kind === 'SYNC'
          ? { data: Buffer.from(b.data) }
          : {}),
        ...(b.record.length > 0 ? { record: Buffer.from(b.record) } : {}),
        ...(b.kind === 'CLONE'
          ? { src: { pg: b.srcPg, ino: u64(b.srcIno, 'src_ino'), index: u64(b.srcIndex, 'src_index') } }
          : {}),
      };
    }),
  };
}

/** Ops whose bytes travel in a Replicate request's `data` (each `length` bytes). */
function carriesBytes(op: BlockOp): boolean {
  return op.kind === 'WRITE' || op.kind === 'SYNC';
}

/**
 * Entries for a Replicate request: the messages without block bytes, and the
 * bytes of every WRITE/SYNC op back to back. One op (the usual case) sends
 * its own buffer: nothing is copied here, and one buffer serves every replica.
 */
export function entriesToReplicate(entries: LogEntry[]): { entries: wire.LogEntry[]; data: Buffer } {
  const parts: Buffer[] = [];
  for (const e of entries)
    for (const op of e.blocks) {
      if (!carriesBytes(op)) continue;
      const bytes = op.data ?? EMPTY;
      if (bytes.length !== op.length)
        throw new Error(
          `invariant: ${op.kind} op of entry ${e.seq} has ${bytes.length} bytes, length ${op.length}`,
        );
      parts.push(bytes);
    }
  return {
    entries: entries.map((e) => entryToWire(e, false)),
    data: parts.length === 1 ? parts[0]! : Buffer.concat(parts),
  };
}

/** Inverse of entriesToReplicate; ops get views of `data` (no copy). */
export function entriesFromReplicate(wires: wire.LogEntry__Output[], data: Buffer): LogEntry[] {
  const entries = wires.map(entryFromWire);
  let at = 0;
  for (const e of entries)
    for (const op of e.blocks) {
      if (!carriesBytes(op)) continue;
      if (op.length > data.length - at)
        throw new FsError('INVALID_ARGUMENT', `entry ${e.seq}: block bytes past the request's data`);
      op.data = data.subarray(at, at + op.length);
      at += op.length;
    }
  if (at !== data.length)
    throw new FsError('INVALID_ARGUMENT', `replicate request has ${data.length - at} bytes no op claims`);
  return entries;
}

/** The stored form: the protobuf message without block bytes. */
export function encodeStoredEntry(e: LogEntry): Buffer {
  return encodeLogEntry(entryToWire(e, false));
}

export function decodeStoredEntry(b: Uint8Array): LogEntry {
  const e = entryFromWire(decodeLogEntry(b));
  // Stored entries carry no bytes: WRITE/SYNC ops need the block file.
  for (const op of e.blocks) delete op.data;
  return e;
}
