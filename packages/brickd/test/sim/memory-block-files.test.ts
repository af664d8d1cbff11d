/**
 * MemoryBlockFiles against the cases of BlockStore's test
 * (test/store/block-store.test.ts): a Buffer model of every write, truncate
 * and read, checksums in records, damage reported as CORRUPT, call order
 * kept for concurrent operations on one block. The simulation stores block
 * data in it, so it must behave as the real store does.
 */
import { initHashing } from '@dunix/proto';
import fc from 'fast-check';
import t from 'tap';
import { MemoryBlockFiles } from '../../src/store/memory-block-files.js';
import type { BlockRecord } from '../../src/store/records.js';
import {
  applyOp,
  BLOCK,
  C,
  INO,
  isCorrupt,
  modelTruncate,
  modelWrite,
  offsetArb,
  PG,
  recordOf,
  rejectsWith,
} from '../store/fixtures/block-model.js';
import { pattern } from '../store/fixtures/pattern.js';

await initHashing();

t.test('random writes, truncates and reads match a Buffer model', async (t) => {
  const store = new MemoryBlockFiles();
  let block = 0n;
  const op = fc.oneof(
    {
      weight: 4,
      arbitrary: fc.record({
        kind: fc.constant('write' as const),
        offset: offsetArb(BLOCK),
        length: offsetArb(C + 10),
        seed: fc.nat(),
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), length: offsetArb(BLOCK) }) },
  );
  const read = fc.tuple(offsetArb(BLOCK + 10), offsetArb(BLOCK + 10));
  await fc.assert(
    fc.asyncProperty(fc.array(fc.tuple(op, read), { minLength: 1, maxLength: 8 }), async (steps) => {
      const index = block++;
      let model: Buffer = Buffer.alloc(0);
      let rec: BlockRecord | undefined;
      for (const [o, [roff, rlen]] of steps) {
        const step = await applyOp(store, index, o, rec, model);
        ({ rec, model } = step);
        if (!step.ok) return false;
        const got = await store.read(PG, INO, index, roff, rlen, rec);
        const wantBytes = model.subarray(Math.min(roff, model.length), Math.min(roff + rlen, model.length));
        if (!got.equals(wantBytes)) return false;
      }
      const whole = await store.read(PG, INO, index, 0, BLOCK, rec);
      return whole.equals(model);
    }),
    { numRuns: 150 },
  );
  t.pass('model agrees');
});

t.test('full-block write and read back', async (t) => {
  const store = new MemoryBlockFiles();
  const data = pattern(1, BLOCK);
  const rec = await store.write(PG, INO, 0n, 0, data, undefined, BLOCK);
  t.same(rec, recordOf(data));
  t.ok((await store.read(PG, INO, 0n, 0, BLOCK, rec)).equals(data));
  t.ok(store.bytesOf(PG, INO, 0n)?.equals(data), 'the "file" holds exactly the data');
  t.ok(
    (await store.read(PG, INO, 0n, C - 3, 6, rec)).equals(data.subarray(C - 3, C + 3)),
    'across a chunk edge',
  );
  t.equal((await store.read(PG, INO, 0n, BLOCK, 10, rec)).length, 0, 'at the end: empty');
  t.equal((await store.read(PG, INO, 0n, 0, 10, undefined)).length, 0, 'no record: empty');
  t.equal((await store.read(PG, INO, 0n, 5, 0, rec)).length, 0, 'zero length: empty');
});

t.test('gaps read as zeros, even over stale bytes past the record', async (t) => {
  const store = new MemoryBlockFiles();
  const data = pattern(2, 100);
  const rec = await store.write(PG, INO, 1n, 2 * C + 5, data, undefined, BLOCK);
  t.equal(rec.length, 2 * C + 105);
  t.equal(rec.sums.length, 3);
  const all = await store.read(PG, INO, 1n, 0, BLOCK, rec);
  t.ok(all.subarray(0, 2 * C + 5).equals(Buffer.alloc(2 * C + 5)), 'hole is zeros');
  t.ok(all.subarray(2 * C + 5).equals(data));

  // A write whose record was never committed leaves bytes past the committed record's length.
  const committed = await store.write(PG, INO, 2n, 0, Buffer.alloc(100, 0x41), undefined, BLOCK);
  await store.write(PG, INO, 2n, 100, Buffer.alloc(C, 0x42), committed, BLOCK);
  const rec2 = await store.write(PG, INO, 2n, 300, Buffer.alloc(10, 0x43), committed, BLOCK);
  const got = await store.read(PG, INO, 2n, 0, BLOCK, rec2);
  const want = modelWrite(Buffer.alloc(100, 0x41), 300, Buffer.alloc(10, 0x43));
  t.ok(got.equals(want), 'the gap [100, 300) is zeros, not the uncommitted 0x42 bytes');
  t.same(rec2, recordOf(want));

  const rec3 = await store.truncate(PG, INO, 3n, C + 1, undefined);
  t.same(rec3, recordOf(Buffer.alloc(C + 1)), 'truncate up from nothing: zeros');
});

t.test('a flipped byte, a short file or a missing file is CORRUPT', async (t) => {
  const store = new MemoryBlockFiles();
  const data = pattern(3, 3 * C);
  const rec = await store.write(PG, INO, 5n, 0, data, undefined, BLOCK);
  const damaged = store.bytesOf(PG, INO, 5n)!;
  damaged[C + 17] = data[C + 17]! ^ 0x01;
  store.setBytes(PG, INO, 5n, damaged);
  await isCorrupt(t, store.read(PG, INO, 5n, C + 100, 10, rec), 'read of the damaged chunk');
  await isCorrupt(t, store.read(PG, INO, 5n, C - 1, 2, rec), 'read touching the damaged chunk');
  t.ok((await store.read(PG, INO, 5n, 0, C, rec)).equals(data.subarray(0, C)), 'other chunks still read');
  t.ok((await store.read(PG, INO, 5n, 2 * C, C, rec)).equals(data.subarray(2 * C)));
  await isCorrupt(
    t,
    store.write(PG, INO, 5n, C + 1, Buffer.alloc(4), rec, BLOCK),
    'a write keeping bytes of the damaged chunk',
  );
  await isCorrupt(t, store.truncate(PG, INO, 5n, C + 50, rec), 'a truncate keeping part of it');
  const healed = await store.write(PG, INO, 5n, C, data.subarray(C, 2 * C), rec, BLOCK);
  t.ok((await store.read(PG, INO, 5n, 0, BLOCK, healed)).equals(data), 'whole-chunk rewrite heals');

  store.setBytes(PG, INO, 5n, store.bytesOf(PG, INO, 5n)!.subarray(0, 2 * C + 10));
  await isCorrupt(t, store.read(PG, INO, 5n, 2 * C, 5, healed), 'file shorter than the record');
  t.ok(
    (await store.read(PG, INO, 5n, 0, 5, healed)).equals(data.subarray(0, 5)),
    'chunks before the cut read',
  );

  await store.delete(PG, INO, 5n);
  await isCorrupt(t, store.read(PG, INO, 5n, 0, 5, healed), 'record without a file');
});

t.test('truncate and delete', async (t) => {
  const store = new MemoryBlockFiles();
  const data = pattern(4, 3 * C + 7);
  let rec: BlockRecord | undefined = await store.write(PG, INO, 6n, 0, data, undefined, BLOCK);

  rec = await store.truncate(PG, INO, 6n, C + 9, rec);
  t.same(rec, recordOf(data.subarray(0, C + 9)), 'shrink inside a chunk');
  t.equal(store.bytesOf(PG, INO, 6n)?.length, C + 9);
  t.ok((await store.read(PG, INO, 6n, 0, BLOCK, rec)).equals(data.subarray(0, C + 9)));

  rec = await store.truncate(PG, INO, 6n, C, rec);
  t.same(rec, recordOf(data.subarray(0, C)), 'shrink to a chunk edge');

  rec = await store.truncate(PG, INO, 6n, 2 * C + 3, rec);
  const grown = modelTruncate(data.subarray(0, C), 2 * C + 3);
  t.same(rec, recordOf(grown), 'grow with zeros');
  t.ok((await store.read(PG, INO, 6n, 0, BLOCK, rec)).equals(grown));

  t.same(await store.truncate(PG, INO, 6n, 2 * C + 3, rec), rec, 'same length: unchanged');

  t.equal(await store.truncate(PG, INO, 6n, 0, rec), undefined, 'length 0: no record');
  t.equal(store.bytesOf(PG, INO, 6n), undefined, 'length 0 deletes the file');
  t.equal(await store.truncate(PG, INO, 6n, 0, undefined), undefined, 'again: fine');

  rec = await store.write(PG, INO, 6n, 10, Buffer.from('again'), undefined, BLOCK);
  t.ok(
    (await store.read(PG, INO, 6n, 0, 100, rec)).equals(
      modelWrite(Buffer.alloc(0), 10, Buffer.from('again')),
    ),
  );
  await store.delete(PG, INO, 6n);
  t.equal(store.bytesOf(PG, INO, 6n), undefined, 'delete removes the file');
  await store.delete(PG, INO, 6n);
  t.pass('deleting an absent block is fine');
  t.same([...store.dump().keys()], [], 'nothing left');
});

t.test('bad arguments', async (t) => {
  const store = new MemoryBlockFiles();
  await rejectsWith(
    t,
    store.write(PG, INO, 0n, BLOCK - 3, Buffer.alloc(4), undefined, BLOCK),
    'OUT_OF_RANGE',
    'past the block size',
  );
  await rejectsWith(t, store.read(PG, INO, 0n, -1, 4, undefined), 'INVALID_ARGUMENT', 'negative offset');
  await t.rejects(store.read(PG, INO, 0n, 0, 4, { length: 2 * C, sums: ['00'] }), /invariant/, 'bad record');
  const rec = await store.write(PG, INO, 0n, BLOCK - 4, Buffer.alloc(4, 1), undefined, BLOCK);
  t.equal(rec.length, BLOCK, 'a write ending at the block size is fine');
  t.same(await store.write(PG, INO, 0n, 10, Buffer.alloc(0), rec, BLOCK), rec, 'empty write: unchanged');
});

t.test('concurrent operations on one block apply in call order', async (t) => {
  const store = new MemoryBlockFiles();
  const base = pattern(5, C + 50);
  const rec0 = await store.write(PG, INO, 9n, 0, base, undefined, BLOCK);
  let model = base;
  const expected: (BlockRecord | undefined)[] = [];
  const pending: Promise<BlockRecord | undefined>[] = [];
  for (let i = 0; i < 60; i++) {
    if (i % 13 === 12) {
      const length = (i * 7919) % BLOCK;
      pending.push(store.truncate(PG, INO, 9n, length, rec0));
      model = modelTruncate(model, length);
      expected.push(length === 0 ? undefined : recordOf(model));
    } else {
      const offset = (i * 104729) % (BLOCK - 1000);
      const data = pattern(100 + i, 1 + ((i * 31) % 1000));
      pending.push(store.write(PG, INO, 9n, offset, data, rec0, BLOCK));
      model = modelWrite(model, offset, data);
      expected.push(recordOf(model));
    }
  }
  const readBack = store.read(PG, INO, 9n, 0, BLOCK, rec0);
  const [results, readBytes] = await Promise.all([Promise.all(pending), readBack]);
  t.same(results, expected, 'each op returns the record of the model after it');
  t.ok(readBytes.equals(model), 'queued read sees every earlier op');
  t.ok((await store.read(PG, INO, 9n, 0, BLOCK, results.at(-1))).equals(model), 'final content');
});

t.test('dump lists one PG or all, as copies', async (t) => {
  const store = new MemoryBlockFiles();
  await store.write(1, INO, 0n, 0, Buffer.from('a'), undefined, BLOCK);
  await store.write(2, INO, 0n, 0, Buffer.from('b'), undefined, BLOCK);
  t.same([...store.dump(1).values()].map(String), ['a']);
  t.equal(store.dump().size, 2);
  store.dump(2).get([...store.dump(2).keys()][0]!)![0] = 0x7a;
  t.same([...store.dump(2).values()].map(String), ['b'], 'a dump is a copy');
});
