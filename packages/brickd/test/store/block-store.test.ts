/**
 * BlockStore against a Buffer model: every write, truncate and read of a
 * block file matches the model, records carry the right checksums, damage
 * is reported as CORRUPT, and concurrency keeps call order.
 */
import { access, mkdtemp, open, readFile, rm, stat, truncate as truncateFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initHashing } from '@dunix/proto';
import fc from 'fast-check';
import t, { type Test } from 'tap';
import { BlockStore } from '../../src/store/block-store.js';
import { StagingBuffers } from '../../src/store/direct-io.js';
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
} from './fixtures/block-model.js';
import { pattern } from './fixtures/pattern.js';

await initHashing();

async function makeStore(t: Test, fdCacheMax?: number): Promise<BlockStore> {
  const dir = await mkdtemp(join(tmpdir(), 'dunix-blocks-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const store = new BlockStore({ dataDir: dir, ...(fdCacheMax ? { fdCacheMax } : {}) });
  await store.open();
  t.teardown(() => store.close());
  return store;
}

t.test('path layout', async (t) => {
  const store = await makeStore(t);
  t.equal(store.pathOf(0x12, 0xabcn, 0x1fn), join(store.dataDir, 'blocks', '0012', '0000000000000abc.1f'));
  t.equal(
    store.pathOf(0xffff, 0xffff_ffff_ffff_ffffn, 0n),
    join(store.dataDir, 'blocks', 'ffff', 'ffffffffffffffff.0'),
  );
});

t.test('random writes, truncates and reads match a Buffer model', async (t) => {
  const store = await makeStore(t);
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
  const store = await makeStore(t);
  const data = pattern(1, BLOCK);
  const rec = await store.write(PG, INO, 0n, 0, data, undefined, BLOCK);
  t.same(rec, recordOf(data));
  t.ok((await store.read(PG, INO, 0n, 0, BLOCK, rec)).equals(data));
  t.ok((await readFile(store.pathOf(PG, INO, 0n))).equals(data), 'file holds exactly the data');
  t.ok(
    (await store.read(PG, INO, 0n, C - 3, 6, rec)).equals(data.subarray(C - 3, C + 3)),
    'across a chunk edge',
  );
  t.equal((await store.read(PG, INO, 0n, BLOCK, 10, rec)).length, 0, 'at the end: empty');
  t.equal((await store.read(PG, INO, 0n, 0, 10, undefined)).length, 0, 'no record: empty');
  t.equal((await store.read(PG, INO, 0n, 5, 0, rec)).length, 0, 'zero length: empty');
});

t.test(
  "whole-chunk writes (written from the caller's bytes) match the model and leave those bytes alone",
  async (t) => {
    const store = await makeStore(t);
    let model = pattern(2, BLOCK - 100);
    let rec = await store.write(PG, INO, 0n, 0, model, undefined, BLOCK);
    const cases: [string, number, Buffer][] = [
      ['inner chunk over old bytes', C, pattern(3, C)],
      ['two chunks from the start', 0, pattern(4, 2 * C)],
      ['last chunk, past the old end', 3 * C, pattern(5, C)],
      ['partial chunk at the end (ends at the new length)', 2 * C, pattern(6, C + 17)],
    ];
    for (const [what, offset, data] of cases) {
      const copy = Buffer.from(data);
      rec = await store.write(PG, INO, 0n, offset, data, rec, BLOCK);
      model = modelWrite(model, offset, copy);
      t.ok(data.equals(copy), `${what}: the caller's bytes are unchanged`);
      t.same(rec, recordOf(model), `${what}: record`);
      t.ok((await readFile(store.pathOf(PG, INO, 0n))).equals(model), `${what}: file`);
    }
  },
);

t.test('gaps read as zeros, even over stale bytes past the record', async (t) => {
  const store = await makeStore(t);
  const data = pattern(2, 100);
  const rec = await store.write(PG, INO, 1n, 2 * C + 5, data, undefined, BLOCK);
  t.equal(rec.length, 2 * C + 105);
  t.equal(rec.sums.length, 3);
  const all = await store.read(PG, INO, 1n, 0, BLOCK, rec);
  t.ok(all.subarray(0, 2 * C + 5).equals(Buffer.alloc(2 * C + 5)), 'hole is zeros');
  t.ok(all.subarray(2 * C + 5).equals(data));

  // A write whose record was never committed (a crash between the file write
  // and the LevelDB batch) leaves bytes past the committed record's length.
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
  const store = await makeStore(t);
  const data = pattern(3, 3 * C);
  const rec = await store.write(PG, INO, 5n, 0, data, undefined, BLOCK);
  const path = store.pathOf(PG, INO, 5n);
  const fh = await open(path, 'r+');
  await fh.write(Buffer.from([data[C + 17]! ^ 0x01]), 0, 1, C + 17);
  await fh.close();
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
  // Rewriting the whole damaged chunk needs none of its old bytes.
  const healed = await store.write(PG, INO, 5n, C, data.subarray(C, 2 * C), rec, BLOCK);
  t.ok((await store.read(PG, INO, 5n, 0, BLOCK, healed)).equals(data), 'whole-chunk rewrite heals');

  await truncateFile(path, 2 * C + 10);
  await isCorrupt(t, store.read(PG, INO, 5n, 2 * C, 5, healed), 'file shorter than the record');
  t.ok(
    (await store.read(PG, INO, 5n, 0, 5, healed)).equals(data.subarray(0, 5)),
    'chunks before the cut read',
  );

  await store.delete(PG, INO, 5n);
  await isCorrupt(t, store.read(PG, INO, 5n, 0, 5, healed), 'record without a file');
});

t.test('truncate and delete', async (t) => {
  const store = await makeStore(t);
  const data = pattern(4, 3 * C + 7);
  let rec: BlockRecord | undefined = await store.write(PG, INO, 6n, 0, data, undefined, BLOCK);
  const path = store.pathOf(PG, INO, 6n);

  rec = await store.truncate(PG, INO, 6n, C + 9, rec);
  t.same(rec, recordOf(data.subarray(0, C + 9)), 'shrink inside a chunk');
  t.equal((await stat(path)).size, C + 9);
  t.ok((await store.read(PG, INO, 6n, 0, BLOCK, rec)).equals(data.subarray(0, C + 9)));

  rec = await store.truncate(PG, INO, 6n, C, rec);
  t.same(rec, recordOf(data.subarray(0, C)), 'shrink to a chunk edge');

  rec = await store.truncate(PG, INO, 6n, 2 * C + 3, rec);
  const grown = modelTruncate(data.subarray(0, C), 2 * C + 3);
  t.same(rec, recordOf(grown), 'grow with zeros');
  t.ok((await store.read(PG, INO, 6n, 0, BLOCK, rec)).equals(grown));

  t.same(await store.truncate(PG, INO, 6n, 2 * C + 3, rec), rec, 'same length: unchanged');

  t.equal(await store.truncate(PG, INO, 6n, 0, rec), undefined, 'length 0: no record');
  await t.rejects(access(path), { code: 'ENOENT' }, 'length 0 deletes the file');
  t.equal(await store.truncate(PG, INO, 6n, 0, undefined), undefined, 'again: fine');

  rec = await store.write(PG, INO, 6n, 10, Buffer.from('again'), undefined, BLOCK);
  t.ok(
    (await store.read(PG, INO, 6n, 0, 100, rec)).equals(
      modelWrite(Buffer.alloc(0), 10, Buffer.from('again')),
    ),
  );
  await store.delete(PG, INO, 6n);
  await t.rejects(access(path), { code: 'ENOENT' }, 'delete removes the file');
  await store.delete(PG, INO, 6n);
  t.pass('deleting an absent block is fine');
});

t.test('bad arguments', async (t) => {
  const store = await makeStore(t);
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
  const store = await makeStore(t);
  // Every caller passes the record it read before any of these ran.
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
  // Reads queued behind the writes see the last write's result.
  const readBack = store.read(PG, INO, 9n, 0, BLOCK, rec0);
  const [results, readBytes] = await Promise.all([Promise.all(pending), readBack]);
  t.same(results, expected, 'each op returns the record of the model after it');
  t.ok(readBytes.equals(model), 'queued read sees every earlier op');
  t.ok((await store.read(PG, INO, 9n, 0, BLOCK, results.at(-1))).equals(model), 'final content');
});

t.test('different blocks proceed in parallel with a tiny fd cache', async (t) => {
  const store = await makeStore(t, 2);
  const blocks = 12;
  const models: Buffer[] = Array.from({ length: blocks }, () => Buffer.alloc(0));
  const recs: (BlockRecord | undefined)[] = Array.from({ length: blocks }, () => undefined);
  for (let round = 0; round < 4; round++) {
    await Promise.all(
      models.map(async (_m, b) => {
        const pg = b % 3;
        const offset = (round * 40000 + b * 977) % (BLOCK - 5000);
        const data = pattern(round * 100 + b, 5000);
        recs[b] = await store.write(pg, INO, BigInt(b), offset, data, recs[b], BLOCK);
        models[b] = modelWrite(models[b]!, offset, data);
        const got = await store.read(pg, INO, BigInt(b), 0, BLOCK, recs[b]);
        if (!got.equals(models[b]!)) throw new Error(`block ${b} round ${round} differs`);
      }),
    );
    t.ok(store.openFiles <= 2, `round ${round}: ${store.openFiles} handles cached when idle`);
  }
  for (let b = 0; b < blocks; b++) {
    t.ok((await store.read(b % 3, INO, BigInt(b), 0, BLOCK, recs[b])).equals(models[b]!), `block ${b}`);
  }
  await store.close();
  t.equal(store.openFiles, 0, 'close closes every handle');
  await t.rejects(store.read(0, INO, 0n, 0, 1, recs[0]), /closed/, 'closed store refuses work');
  await store.close();
});

t.test('a block is deleted while a deferred sync holds its file', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'dunix-blocks-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const store = new BlockStore({ dataDir: dir, syncEachWrite: false });
  await store.open();
  t.teardown(() => store.close());
  const data = pattern(9, C + 100);
  await store.write(PG, INO, 0n, 0, data, undefined, BLOCK);
  // The group commit's sync runs outside the block's queue; a replica's SYNC op deletes and rewrites meanwhile.
  const sync = store.syncDirty();
  await store.delete(PG, INO, 0n);
  const again = await store.write(PG, INO, 0n, 0, data, undefined, BLOCK);
  await sync;
  await store.syncDirty();
  t.same(again, recordOf(data), 'rewritten after the delete');
  t.same(await store.read(PG, INO, 0n, 0, data.length, again), data, 'and reads back');
});

t.test('deleting a block this copy never had leaves the deferred sync working', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'dunix-blocks-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const store = new BlockStore({ dataDir: dir, syncEachWrite: false });
  await store.open();
  t.teardown(() => store.close());
  // A new replica replays a delete of a block of a PG it holds no file of: its directory never existed.
  await store.delete(PG + 1, INO, 3n);
  await t.resolves(store.syncDirty(), 'the sync does not fail on the missing directory');
});

/** A store whose aligned writes from 4 KiB up go with O_DIRECT (when the filesystem takes it). */
async function makeDirectStore(
  t: Test,
  dir?: string,
  opts: { directIo?: boolean } = {},
): Promise<BlockStore> {
  const base = await mkdtemp(join(dir ?? tmpdir(), 'dunix-direct-'));
  t.teardown(() => rm(base, { recursive: true, force: true }));
  const store = new BlockStore({ dataDir: base, directMinBytes: 4096, syncEachWrite: false, ...opts });
  await store.open();
  t.teardown(() => store.close());
  return store;
}

t.test('aligned writes bypass the page cache and read back like buffered ones', async (t) => {
  const store = await makeDirectStore(t);
  // The test machine's filesystems (ext4, tmpfs since Linux 6.6) take O_DIRECT.
  t.equal(store.directIoOff, undefined, 'direct writes are on');
  let model = pattern(11, BLOCK);
  let rec = await store.write(PG, INO, 0n, 0, model, undefined, BLOCK);
  t.equal(store.directWrites, 1, 'a whole aligned block went direct');
  t.ok((await store.read(PG, INO, 0n, 0, BLOCK, rec)).equals(model), 'reads back');
  // Unaligned: through the page cache, over bytes written direct.
  const small = pattern(12, 5000);
  rec = await store.write(PG, INO, 0n, 100, small, rec, BLOCK);
  model = modelWrite(model, 100, small);
  t.equal(store.directWrites, 1, 'an unaligned write stays buffered');
  // Aligned again, over the range the buffered write just dirtied.
  const mid = pattern(13, 8192);
  rec = await store.write(PG, INO, 0n, 4096, mid, rec, BLOCK);
  model = modelWrite(model, 4096, mid);
  t.equal(store.directWrites, 2, 'an aligned 8 KiB write went direct');
  t.ok((await store.read(PG, INO, 0n, 0, BLOCK, rec)).equals(model), 'mixed writes read back as the model');
  await store.syncDirty();
  t.ok((await readFile(store.pathOf(PG, INO, 0n))).equals(model), 'the file holds the model');
  // A direct write past the end leaves a gap that reads as zeros.
  const tail = pattern(14, 4096);
  const gapStore = await store.write(PG, INO, 1n, 0, pattern(15, 4096), undefined, BLOCK);
  rec = await store.write(PG, INO, 1n, 3 * 4096, tail, gapStore, BLOCK);
  const want = modelWrite(pattern(15, 4096), 3 * 4096, tail);
  t.ok(
    (await store.read(PG, INO, 1n, 0, BLOCK, rec)).equals(want),
    'gap before a direct write reads as zeros',
  );

  // Random aligned and unaligned writes and truncates against the model.
  const aligned = (max: number) => fc.integer({ min: 0, max: Math.floor(max / 4096) }).map((n) => n * 4096);
  let block = 100n;
  const op = fc.oneof(
    {
      weight: 4,
      arbitrary: fc.record({
        kind: fc.constant('write' as const),
        offset: aligned(BLOCK),
        length: aligned(C * 2),
        seed: fc.nat(),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant('write' as const),
        offset: offsetArb(BLOCK),
        length: offsetArb(C),
        seed: fc.nat(),
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), length: offsetArb(BLOCK) }) },
  );
  const before = store.directWrites;
  await fc.assert(
    fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 8 }), async (steps) => {
      const index = block++;
      let m: Buffer = Buffer.alloc(0);
      let r: BlockRecord | undefined;
      for (const o of steps) {
        const step = await applyOp(store, index, o, r, m);
        ({ rec: r, model: m } = step);
        if (!step.ok) return false;
      }
      return (await store.read(PG, INO, index, 0, BLOCK, r)).equals(m);
    }),
    { numRuns: 80 },
  );
  t.ok(store.directWrites - before > 20, `the model run made direct writes (${store.directWrites - before})`);
});

t.test('with direct I/O off, or on a filesystem without it, every write is buffered', async (t) => {
  const off = await makeDirectStore(t, undefined, { directIo: false });
  const data = pattern(21, BLOCK);
  const rec = await off.write(PG, INO, 0n, 0, data, undefined, BLOCK);
  t.equal(off.directWrites, 0, 'directIo: false writes nothing direct');
  t.equal(off.directIoOff, undefined, 'and reports no refusal');
  t.ok((await off.read(PG, INO, 0n, 0, BLOCK, rec)).equals(data), 'reads back');
  // A filesystem that refuses the O_DIRECT open (older tmpfs, some FUSE
  // mounts) gives a reason instead of buffers; the store then writes as above.
  const refused = StagingBuffers.probe(join(off.dataDir, 'no-such-dir'), 1 << 20, 2);
  t.match(refused, /^O_DIRECT open refused \(ENOENT\)/, 'a refused probe says why');
  const got = StagingBuffers.probe(off.blocksDir, 1 << 20, 2);
  if (typeof got === 'string') t.match(got, /O_DIRECT/, 'this filesystem refuses O_DIRECT, and says so');
  else {
    t.equal(got.available, 2, 'two staging buffers');
    const a = got.take()!;
    t.equal(a.length, 1 << 20, 'of the asked size');
    t.equal(got.available, 1, 'one taken');
    got.give(a);
  }
});
