/**
 * Log entries on the Replicate wire: messages without block bytes plus one
 * data field holding the bytes of every WRITE and SYNC op in order. The
 * round trip gives back what was sent, the usual single op travels without
 * a copy, and a request whose ops and bytes disagree is refused.
 */
import { decodeLogEntry, encodeLogEntry, FsError, type wire } from '@dunix/proto';
import t from 'tap';
import {
  entriesFromReplicate,
  entriesToReplicate,
  type BlockOp,
  type LogEntry,
} from '../../src/pg/log-entry.js';

const key = (n: number) => Buffer.from([0, n, 0x49, n]);

function entry(seq: bigint, blocks: BlockOp[]): LogEntry {
  return {
    epoch: 3,
    seq,
    requestId: `r${seq}`,
    kind: 'test',
    writes: [
      { key: key(1), value: Buffer.from('v') },
      { key: key(2), value: undefined },
    ],
    blocks,
  };
}

const bytes = (n: number, fill: number) => Buffer.alloc(n, fill);

/** What the receiver sees: each message through the protobuf codec, the bytes as sent. */
function roundTrip(entries: LogEntry[]): LogEntry[] {
  const { entries: wire, data } = entriesToReplicate(entries);
  return entriesFromReplicate(wire.map(viaCodec), Buffer.from(data));
}

const viaCodec = (w: wire.LogEntry) => decodeLogEntry(encodeLogEntry(w));

/** A received write-block entry (no bytes of its own) with WRITE ops of these lengths, blocks 0, 1, ... */
function writeShell(lengths: number[]) {
  return viaCodec({
    epoch: '1',
    seq: '1',
    requestId: '',
    kind: 'write-block',
    writes: [],
    blocks: lengths.map((length, i) => ({
      ino: '1',
      index: String(i),
      kind: 'WRITE' as const,
      offset: 0,
      length,
      data: Buffer.alloc(0),
      record: Buffer.alloc(0),
    })),
  });
}

t.test('every kind of op survives the round trip; bytes come in order', async (t) => {
  const sent = [
    entry(7n, [
      { ino: 9n, index: 0n, kind: 'WRITE', offset: 10, length: 5, data: bytes(5, 1) },
      { ino: 9n, index: 1n, kind: 'TRUNCATE', offset: 0, length: 100 },
      { ino: 9n, index: 2n, kind: 'DELETE', offset: 0, length: 0 },
    ]),
    entry(8n, [
      {
        ino: 9n,
        index: 3n,
        kind: 'SYNC',
        offset: 0,
        length: 3,
        data: bytes(3, 2),
        record: Buffer.from('rec'),
      },
      { ino: 9n, index: 4n, kind: 'SYNC', offset: 0, length: 0 },
      { ino: 9n, index: 5n, kind: 'WRITE', offset: 0, length: 4, data: bytes(4, 3) },
    ]),
  ];
  const { entries: wire, data } = entriesToReplicate(sent);
  t.equal(data.length, 12, 'one data field holds the bytes of all WRITE and SYNC ops');
  t.ok(
    wire.every((w) => (w.blocks ?? []).every((b) => b.data === undefined)),
    'the messages carry no block bytes',
  );
  const got = roundTrip(sent);
  t.equal(got.length, 2);
  t.same(
    got.map((e) => e.blocks.map((b) => [b.kind, b.index, b.length, b.data?.toString('hex') ?? null])),
    [
      [
        ['WRITE', 0n, 5, '0101010101'],
        ['TRUNCATE', 1n, 100, null],
        ['DELETE', 2n, 0, null],
      ],
      [
        ['SYNC', 3n, 3, '020202'],
        ['SYNC', 4n, 0, ''],
        ['WRITE', 5n, 4, '03030303'],
      ],
    ],
  );
  t.equal(got[1]!.blocks[0]!.record?.toString(), 'rec');
  t.same(
    got.map((e) => [e.epoch, e.seq, e.requestId]),
    [
      [3, 7n, 'r7'],
      [3, 8n, 'r8'],
    ],
  );
  t.same(got[0]!.writes[1], { key: key(2), value: undefined }, 'a delete stays a delete');
});

t.test('one op: its own buffer goes out, and the receiver gets views, not copies', async (t) => {
  const block = bytes(1 << 20, 7);
  const { data } = entriesToReplicate([
    entry(1n, [{ ino: 1n, index: 0n, kind: 'WRITE', offset: 0, length: block.length, data: block }]),
  ]);
  t.equal(data, block, 'the same Buffer, not a copy');
  const tail = Buffer.concat([bytes(2, 1), bytes(2, 2)]);
  const [e] = entriesFromReplicate([writeShell([2, 2])], tail);
  t.equal(e!.blocks[1]!.data!.buffer, tail.buffer, 'a view of the request data');
  t.equal(e!.blocks[1]!.data!.toString('hex'), '0202');
});

t.test('ops and bytes that disagree are refused', async (t) => {
  const shell = (length: number) => writeShell([length]);
  for (const [what, length, data] of [
    ['bytes short of the ops', 10, bytes(4, 0)],
    ['bytes no op claims', 2, bytes(4, 0)],
  ] as const) {
    t.throws(() => entriesFromReplicate([shell(length)], data), FsError, what);
    try {
      entriesFromReplicate([shell(length)], data);
    } catch (err) {
      t.equal((err as FsError).code, 'INVALID_ARGUMENT', `${what}: INVALID_ARGUMENT`);
    }
  }
  t.throws(
    () =>
      entriesToReplicate([
        entry(1n, [{ ino: 1n, index: 0n, kind: 'WRITE', offset: 0, length: 9, data: bytes(3, 0) }]),
      ]),
    /invariant/,
    'a sender whose op length and bytes differ is a bug',
  );
});
