/**
 * Group commit: block files written without a per-write fdatasync are
 * synced by syncDirty (including handles evicted from the cache meanwhile),
 * and GroupCommit.sync() covers every write made before it was called —
 * concurrent callers share syncs, and one that arrives while a sync runs
 * gets the next one.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initHashing } from '@dunix/proto';
import t from 'tap';
import { BlockStore } from '../../src/store/block-store.js';
import { GroupCommit } from '../../src/store/group-commit.js';
import type { KvStore, KvWrite } from '../../src/store/kv.js';
import { MemoryKv } from '../../src/store/memory-kv.js';

await initHashing();

/** A MemoryKv that records which writes were synced. */
class CountingKv extends MemoryKv {
  synced = 0;
  unsynced = 0;
  release: (() => void) | undefined;
  override async write(batch: KvWrite[], sync: boolean): Promise<void> {
    if (sync) {
      this.synced++;
      // A sync that takes a while: tests hold it to overlap callers.
      if (this.release === undefined) await new Promise<void>((r) => (this.release = r));
    } else this.unsynced++;
    return super.write(batch, sync);
  }
}

t.test('deferred block writes are synced by syncDirty, evicted handles too', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'dunix-gc-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const store = new BlockStore({ dataDir: dir, fdCacheMax: 1, syncEachWrite: false });
  await store.open();
  t.teardown(() => store.close());
  const recs = [];
  for (let i = 0n; i < 4n; i++) {
    recs.push(
      await store.write(3, 0x3_0000_0000_0001n, i, 0, Buffer.alloc(1000, Number(i) + 1), undefined, 65536),
    );
  }
  t.equal(store.openFiles, 1, 'older handles were evicted (each synced before it closed)');
  await store.syncDirty();
  for (let i = 0; i < 4; i++) {
    const back = await store.read(3, 0x3_0000_0000_0001n, BigInt(i), 0, 1000, recs[i]);
    t.same(back, Buffer.alloc(1000, i + 1), `block ${i} reads back after syncDirty`);
  }
});

t.test('GroupCommit: a sync covers earlier writes; overlapping callers share the next one', async (t) => {
  const kv = new CountingKv();
  await kv.open();
  const blocks = { syncDirty: async () => {} } as unknown as ConstructorParameters<typeof GroupCommit>[1];
  const gc = new GroupCommit(kv as KvStore, blocks, 1000);
  gc.written();
  const first = gc.sync();
  await new Promise((r) => setImmediate(r));
  t.equal(kv.synced, 1, 'one synced write started');
  // Nothing written since it started: a caller now shares the running sync.
  t.equal(gc.sync(), first, 'no write since the running sync started: the caller waits for it');
  // A write after it started: callers wait for one more sync, both the same one.
  gc.written();
  const second = gc.sync();
  const third = gc.sync();
  t.not(second, first, 'a write since the start: the running sync may not cover it');
  t.equal(second, third, 'callers during a sync share the next one');
  kv.release!();
  await first;
  kv.release = () => {};
  await Promise.all([second, third]);
  t.equal(kv.synced, 2, 'exactly one more sync for both');
  // written() arms the window; stop() syncs what is left at once.
  gc.written();
  await gc.stop();
  t.equal(kv.synced, 3, 'stop synced the pending write');
});
