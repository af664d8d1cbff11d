/**
 * CopyBlock on three in-process bricks (trio.ts): a whole-block copy is one
 * CLONE entry that every copy applies from its own copy of the source (no
 * bytes in the entry); a replica whose source copy is missing or differs
 * refuses it and gets the bytes as a SYNC instead, staying in sync; a
 * partial piece, or one onto a block holding bytes past the range, is a
 * WRITE of the bytes. Every copy ends with the same record and bytes.
 */
import { blockPg, initHashing } from '@dunix/proto';
import t, { type Test } from 'tap';
import { decodeStoredEntry, type BlockOpKind } from '../../src/pg/log-entry.js';
import { KeyKind, keys } from '../../src/store/keys.js';
import { prefixEnd } from '../../src/store/kv.js';
import { BLOCK, IDS, pattern, PG_COUNT, trio, type Trio } from './trio.js';

t.before(() => initHashing());

const SRC_INO = (1n << 48n) | 17n;
const DST_INO = (2n << 48n) | 33n;

/** Block op kinds of the newest log entry of `pg` on `id`. */
async function lastOps(tr: Trio, id: (typeof IDS)[number], pg: number): Promise<BlockOpKind[]> {
  const prefix = keys.kindPrefix(pg, KeyKind.log);
  const [last] = await tr.kvs[id].range({ gte: prefix, lt: prefixEnd(prefix), reverse: true, limit: 1 });
  return decodeStoredEntry(last!.value).blocks.map((b) => b.kind);
}

async function sameEverywhere(t: Test, tr: Trio, ino: bigint, index: bigint, want: Buffer): Promise<void> {
  const pg = blockPg(ino, index, PG_COUNT);
  const recA = await tr.kvs.A.get(keys.block(pg, ino, index));
  for (const id of IDS) {
    t.same(await tr.kvs[id].get(keys.block(pg, ino, index)), recA, `${id}: record as the primary's`);
    t.same(tr.blocks[id].bytesOf(pg, ino, index), want, `${id}: bytes`);
  }
}

t.test('a whole block is cloned on every copy; the copies stay independent', async (t) => {
  const tr = await trio();
  const a = pattern(1, BLOCK - 1000);
  await tr.writeBlock(SRC_INO, 0n, a);
  const pg = blockPg(DST_INO, 0n, PG_COUNT);
  await tr.bricks.A.copyBlock(
    pg,
    { ino: DST_INO, index: 0n, offset: 0 },
    { ino: SRC_INO, index: 0n, offset: 0 },
    BLOCK,
  );
  for (const id of IDS) t.same(await lastOps(tr, id, pg), ['CLONE'], `${id} applied a CLONE`);
  await sameEverywhere(t, tr, DST_INO, 0n, a);
  t.same(tr.bricks.A.copy(pg).isr, [...IDS], 'every copy in sync');
  // Overwrite the source: the copy keeps its bytes.
  const b = pattern(2, 4096);
  const srcPg = blockPg(SRC_INO, 0n, PG_COUNT);
  await tr.bricks.A.writeBlock(srcPg, SRC_INO, 0n, 0, b);
  const a2 = Buffer.from(a);
  b.copy(a2);
  await sameEverywhere(t, tr, SRC_INO, 0n, a2);
  await sameEverywhere(t, tr, DST_INO, 0n, a);
  t.same(
    await tr.bricks.A.readBlock(pg, DST_INO, 0n, 0, 4096),
    a.subarray(0, 4096),
    'the copy reads its old bytes',
  );
});

t.test('a replica lacking the source (or holding other bytes) gets the bytes instead', async (t) => {
  const tr = await trio();
  const a = pattern(3, BLOCK);
  const srcPg = await tr.writeBlock(SRC_INO, 1n, a);
  tr.blocks.C.setBytes(srcPg, SRC_INO, 1n, undefined); // C lost its source file
  const damaged = Buffer.from(a);
  damaged[100] = damaged[100]! ^ 1;
  tr.blocks.B.setBytes(srcPg, SRC_INO, 1n, damaged); // B's differs from the record
  const pg = blockPg(DST_INO, 1n, PG_COUNT);
  await tr.bricks.A.copyBlock(
    pg,
    { ino: DST_INO, index: 1n, offset: 0 },
    { ino: SRC_INO, index: 1n, offset: 0 },
    BLOCK,
  );
  t.same(await lastOps(tr, 'A', pg), ['CLONE'], 'the primary cloned');
  t.same(await lastOps(tr, 'B', pg), ['SYNC'], 'B got the bytes');
  t.same(await lastOps(tr, 'C', pg), ['SYNC'], 'C got the bytes');
  await sameEverywhere(t, tr, DST_INO, 1n, a);
  t.same(tr.bricks.A.copy(pg).isr, [...IDS], 'no copy dropped from the in-sync set');
});

t.test(
  'the primary without a good source copy, partial pieces and longer destinations write bytes',
  async (t) => {
    const tr = await trio();
    const a = pattern(4, BLOCK);
    const srcPg = await tr.writeBlock(SRC_INO, 2n, a);
    const pg = blockPg(DST_INO, 2n, PG_COUNT);
    // Partial piece: offsets inside the blocks.
    await tr.bricks.A.copyBlock(
      pg,
      { ino: DST_INO, index: 2n, offset: 10 },
      { ino: SRC_INO, index: 2n, offset: 0 },
      5000,
    );
    t.same(await lastOps(tr, 'A', pg), ['WRITE'], 'partial piece written');
    const d1 = Buffer.alloc(5010);
    a.copy(d1, 10, 0, 5000);
    await sameEverywhere(t, tr, DST_INO, 2n, d1);
    // A range shorter than the destination's bytes: the rest must stay.
    const b = pattern(5, BLOCK);
    await tr.writeBlock(DST_INO, 3n, b);
    const short = 2 * 65536;
    const srcShort = pattern(6, short);
    await tr.writeBlock(SRC_INO, 3n, srcShort);
    const pg3 = blockPg(DST_INO, 3n, PG_COUNT);
    await tr.bricks.A.copyBlock(
      pg3,
      { ino: DST_INO, index: 3n, offset: 0 },
      { ino: SRC_INO, index: 3n, offset: 0 },
      short,
    );
    t.same(await lastOps(tr, 'A', pg3), ['WRITE'], 'bytes past the range kept: a write');
    const want = Buffer.from(b);
    srcShort.copy(want);
    await sameEverywhere(t, tr, DST_INO, 3n, want);
    // The primary's own source copy is damaged: it copies the bytes the source's primary serves.
    tr.blocks.A.setBytes(srcPg, SRC_INO, 2n, Buffer.alloc(BLOCK));
    await tr.bricks.A.copyBlock(
      pg,
      { ino: DST_INO, index: 2n, offset: 0 },
      { ino: SRC_INO, index: 2n, offset: 0 },
      BLOCK,
    );
    t.not((await lastOps(tr, 'A', pg))[0], 'CLONE', 'no clone from a copy that does not verify');
    await sameEverywhere(t, tr, DST_INO, 2n, a);
  },
);
