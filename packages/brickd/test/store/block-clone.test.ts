/**
 * BlockStore.clone: the destination becomes a second name of the source's
 * file (one copy on disk), only when the source holds exactly the recorded
 * bytes; a write, truncate or delete of either side never changes the other
 * (copy-on-write), in both the per-write-sync and the deferred mode. The
 * memory store keeps the same contract.
 */
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHECKSUM_CHUNK_BYTES, chunkChecksums, FsError, initHashing } from '@dunix/proto';
import t, { type Test } from 'tap';
import type { BlockFiles } from '../../src/store/block-files.js';
import { BlockStore } from '../../src/store/block-store.js';
import { MemoryBlockFiles } from '../../src/store/memory-block-files.js';
import type { BlockRecord } from '../../src/store/records.js';
import { pattern } from './fixtures/pattern.js';

const C = CHECKSUM_CHUNK_BYTES;
const BLOCK = 4 * C;
const SRC = { pg: 3, ino: 0x0003_0000_0000_0011n, index: 2n };
const DST = { pg: 9, ino: 0x0009_0000_0000_0022n, index: 5n };

await initHashing();

function recordOf(b: Buffer): BlockRecord {
  return { length: b.length, sums: chunkChecksums(b).map((x) => x.toString(16).padStart(16, '0')) };
}

async function diskStore(t: Test, syncEachWrite: boolean): Promise<BlockStore> {
  const dir = await mkdtemp(join(tmpdir(), 'dunix-clone-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const store = new BlockStore({ dataDir: dir, syncEachWrite });
  await store.open();
  t.teardown(() => store.close());
  return store;
}

type Store = BlockFiles & Required<Pick<BlockFiles, 'clone'>>;

async function readAll(s: Store, b: typeof SRC, rec: BlockRecord | undefined): Promise<Buffer> {
  return Buffer.from(await s.read(b.pg, b.ino, b.index, 0, BLOCK, rec));
}

async function cloneCases(t: Test, make: (t: Test) => Promise<Store>, disk?: (s: Store) => BlockStore) {
  await t.test('clone, then overwrite each side: both keep their own bytes', async (t) => {
    const s = await make(t);
    const a = pattern(1, 3 * C + 100);
    let srcRec = await s.write(SRC.pg, SRC.ino, SRC.index, 0, a, undefined, BLOCK);
    t.ok(await s.clone(SRC, srcRec, DST), 'cloned');
    let dstRec: BlockRecord | undefined = srcRec;
    t.same(await readAll(s, DST, dstRec), a, 'the clone reads the source bytes');
    if (disk) {
      const st = await stat(disk(s).pathOf(DST.pg, DST.ino, DST.index));
      t.equal(st.nlink, 2, 'one file, two names');
    }
    // Overwrite part of the source: the clone keeps the old bytes.
    const patch = pattern(2, 1000);
    srcRec = await s.write(SRC.pg, SRC.ino, SRC.index, C + 7, patch, srcRec, BLOCK);
    const a2 = Buffer.from(a);
    patch.copy(a2, C + 7);
    t.same(await readAll(s, SRC, srcRec), a2, 'source changed');
    t.same(await readAll(s, DST, dstRec), a, 'clone unchanged by the source write');
    // Overwrite the clone: the source keeps its bytes.
    const patch2 = pattern(3, 5000);
    dstRec = await s.write(DST.pg, DST.ino, DST.index, 10, patch2, dstRec, BLOCK);
    const b2 = Buffer.from(a);
    patch2.copy(b2, 10);
    t.same(await readAll(s, DST, dstRec), b2, 'clone changed');
    t.same(await readAll(s, SRC, srcRec), a2, 'source unchanged by the clone write');
    if (disk) {
      const st = await stat(disk(s).pathOf(SRC.pg, SRC.ino, SRC.index));
      t.equal(st.nlink, 1, 'the share is broken');
    }
  });

  await t.test('clone, then truncate, punch, whole overwrite and delete of one side', async (t) => {
    const s = await make(t);
    const a = pattern(4, BLOCK);
    const srcRec = await s.write(SRC.pg, SRC.ino, SRC.index, 0, a, undefined, BLOCK);
    t.ok(await s.clone(SRC, srcRec, DST));
    const cut = await s.truncate(DST.pg, DST.ino, DST.index, C + 5, srcRec);
    t.same(await readAll(s, DST, cut), a.subarray(0, C + 5), 'clone truncated');
    t.same(await readAll(s, SRC, srcRec), a, 'source whole');

    // A second clone, then the source is rewritten whole (no copy needed) and deleted.
    t.ok(await s.clone(SRC, srcRec, DST));
    const b = pattern(5, BLOCK);
    const srcRec2 = await s.write(SRC.pg, SRC.ino, SRC.index, 0, b, srcRec, BLOCK);
    t.same(await readAll(s, SRC, srcRec2), b, 'source rewritten');
    t.same(await readAll(s, DST, srcRec), a, 'clone keeps the old bytes');
    // Punch (zero a range) of the clone.
    const zeros = Buffer.alloc(C);
    const punched = await s.write(DST.pg, DST.ino, DST.index, C, zeros, srcRec, BLOCK);
    const a3 = Buffer.from(a);
    zeros.copy(a3, C);
    t.same(await readAll(s, DST, punched), a3, 'clone punched');
    t.same(await readAll(s, SRC, srcRec2), b, 'source untouched by the punch');
    await s.delete(SRC.pg, SRC.ino, SRC.index);
    t.same(await readAll(s, DST, punched), a3, 'deleting the source leaves the clone');
    // Truncate to nothing of a shared file deletes only that name.
    t.ok(await s.clone(DST, punched, SRC));
    t.equal(await s.truncate(SRC.pg, SRC.ino, SRC.index, 0, punched), undefined);
    t.same(await readAll(s, DST, punched), a3, 'the other name keeps its bytes');
  });

  await t.test('no clone unless the source holds exactly the recorded bytes', async (t) => {
    const s = await make(t);
    const a = pattern(6, 2 * C);
    t.notOk(await s.clone(SRC, recordOf(a), DST), 'source missing');
    const rec = await s.write(SRC.pg, SRC.ino, SRC.index, 0, a, undefined, BLOCK);
    const other = recordOf(pattern(7, 2 * C));
    t.notOk(await s.clone(SRC, other, DST), 'source holds other bytes');
    t.notOk(await s.clone(SRC, recordOf(pattern(6, 3 * C)), DST), 'source shorter than the record');
    t.same(await s.read(DST.pg, DST.ino, DST.index, 0, BLOCK, undefined), Buffer.alloc(0), 'nothing made');
    // The destination's old bytes stay when a clone is refused.
    const d = pattern(8, C);
    const dRec = await s.write(DST.pg, DST.ino, DST.index, 0, d, undefined, BLOCK);
    t.notOk(await s.clone(SRC, other, DST));
    t.same(await readAll(s, DST, dRec), d, 'destination unchanged');
    // A clone replaces the destination's old file.
    t.ok(await s.clone(SRC, rec, DST));
    t.same(await readAll(s, DST, rec), a, 'destination replaced');
    await t.rejects(s.clone(SRC, rec, SRC), FsError, 'a block onto itself is refused');
  });

  await t.test('writes queued on the source around a clone keep call order', async (t) => {
    const s = await make(t);
    const a = pattern(9, BLOCK);
    const rec = await s.write(SRC.pg, SRC.ino, SRC.index, 0, a, undefined, BLOCK);
    const patch = pattern(10, 100);
    // Issued at once: the clone runs after the first write, before the second.
    const w1 = s.write(SRC.pg, SRC.ino, SRC.index, 0, patch, rec, BLOCK);
    const a1 = Buffer.from(a);
    patch.copy(a1);
    const c = s.clone(SRC, recordOf(a1), DST);
    const w2 = s.write(SRC.pg, SRC.ino, SRC.index, 200, patch, rec, BLOCK);
    const [, cloned, r2] = await Promise.all([w1, c, w2]);
    t.ok(cloned, 'cloned the bytes of the first write');
    t.same(await readAll(s, DST, recordOf(a1)), a1, 'clone has the first write only');
    const a2 = Buffer.from(a1);
    patch.copy(a2, 200);
    t.same(await readAll(s, SRC, r2), a2, 'source has both writes');
  });
}

for (const syncEachWrite of [true, false]) {
  await t.test(`BlockStore, syncEachWrite ${syncEachWrite}`, async (t) => {
    await cloneCases(
      t,
      (t) => diskStore(t, syncEachWrite) as Promise<Store>,
      (s) => s as unknown as BlockStore,
    );
  });
}

await t.test('MemoryBlockFiles', async (t) => {
  await cloneCases(t, async () => new MemoryBlockFiles() as Store);
});

await t.test('names left in tmp by a crash are removed at open', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'dunix-clone-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const first = new BlockStore({ dataDir: dir });
  await first.open();
  await writeFile(join(first.tmpDir, 'clone-1'), 'left by a crash');
  await first.close();
  const second = new BlockStore({ dataDir: dir });
  await second.open();
  t.teardown(() => second.close());
  t.same(await readdir(second.tmpDir), [], 'tmp emptied');
  t.same(await second.list(0), [], 'tmp is not a PG directory');
});

await t.test(
  'a source not last written by this store is read back and checked before it is linked',
  async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'dunix-clone-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const first = new BlockStore({ dataDir: dir });
    await first.open();
    const a = pattern(11, 2 * C);
    const rec = await first.write(SRC.pg, SRC.ino, SRC.index, 0, a, undefined, BLOCK);
    await first.close();
    // Damage behind the store's back (as a crash in the middle of an overwrite can leave).
    const damaged = Buffer.from(a);
    damaged[C + 3] = damaged[C + 3]! ^ 0xff;
    await writeFile(first.pathOf(SRC.pg, SRC.ino, SRC.index), damaged);
    const second = new BlockStore({ dataDir: dir });
    await second.open();
    t.teardown(() => second.close());
    t.notOk(await second.clone(SRC, rec, DST), 'a file that does not match its record is not shared');
    // Written by this store: its record is known, the clone needs no read.
    const b = pattern(12, 2 * C);
    const recB = await second.write(SRC.pg, SRC.ino, SRC.index, 0, b, rec, BLOCK);
    t.ok(await second.clone(SRC, recB, DST));
    t.same(await second.read(DST.pg, DST.ino, DST.index, 0, BLOCK, recB), b);
    // Without remembered records every clone reads its source back.
    const third = new BlockStore({ dataDir: dir, knownRecordsMax: 0 });
    await second.close();
    await third.open();
    t.teardown(() => third.close());
    await writeFile(third.pathOf(SRC.pg, SRC.ino, SRC.index), damaged);
    t.notOk(await third.clone(SRC, recB, DST), 'checked, not remembered');
  },
);
