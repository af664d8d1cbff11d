/**
 * One contract, two stores: every KvStore behaviour the brick relies on is
 * checked against MemoryKv and LevelKv alike. LevelKv also gets persistence
 * across close/open and a SIGKILL crash test with a child process.
 */
import { spawn } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import t, { type Test } from 'tap';
import { type KvStore, prefixEnd } from '../../src/store/kv.js';
import { LevelKv } from '../../src/store/leveldb-kv.js';
import { CachedKv } from '../../src/store/cached-kv.js';
import { MemoryKv } from '../../src/store/memory-kv.js';
import { JournalKv, readJournal } from '../../src/store/journal-kv.js';
import type { KvEntry, KvRangeOptions, KvWrite } from '../../src/store/kv.js';
import {
  crashBatch,
  crashBatchWidth,
  crashJournalPath,
  crashKey,
  crashValue,
  tmpKey,
} from './fixtures/kv-crash-batch.js';

const b = (...bytes: number[]) => Buffer.from(bytes);
const s = (str: string) => Buffer.from(str);
const all = { gte: Buffer.alloc(0), lt: Buffer.alloc(9, 0xff) };

interface Fixture {
  kv: KvStore;
  /** Closes and reopens the same data (LevelKv only). */
  reopen?: () => Promise<KvStore>;
}

async function tempDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'dunix-kv-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * A store made by `make` in a fresh directory, closed at the test's end,
 * and reopened on the same data (made again) when the suite asks.
 */
async function reopenable(t: Test, make: (dir: string) => KvStore): Promise<Fixture> {
  const dir = await tempDir(t);
  let kv = make(dir);
  await kv.open();
  // Registered after tempDir's teardown, so it runs first (tap runs teardowns in reverse).
  t.teardown(() => kv.close());
  return {
    kv,
    reopen: async () => {
      await kv.close();
      kv = make(dir);
      await kv.open();
      return kv;
    },
  };
}

const stores: Record<string, (t: Test) => Promise<Fixture>> = {
  memory: async () => {
    const kv = new MemoryKv();
    await kv.open();
    return { kv };
  },
  // The brick's read cache over LevelDB, with a cache small enough to evict constantly.
  'cached leveldb': (t) =>
    reopenable(t, (dir) => new CachedKv(new LevelKv(join(dir, 'db')), { entriesMax: 7, bytesMax: 200 })),
  // Unsynced writes journaled and flushed behind the caller, over LevelDB.
  'journal leveldb': (t) =>
    reopenable(t, (dir) => new JournalKv(new LevelKv(join(dir, 'db')), join(dir, 'journal'))),
  // The same over a store whose writes lag (1-3 ms), so most reads meet unflushed
  // writes, and a 5-key overlay limit, so writers wait for the flush too.
  'journal slow store': async (t) => {
    const dir = await tempDir(t);
    const kv = new JournalKv(new SlowKv(new MemoryKv()), join(dir, 'journal'), {
      overlayMaxEntries: 5,
      flushDelayMs: 2,
    });
    await kv.open();
    t.teardown(() => kv.close());
    return { kv };
  },
  // Point reads through the thread pool (the default reads on the main thread: getSync).
  'leveldb, pooled reads': (t) => reopenable(t, (dir) => new LevelKv(join(dir, 'db'), { syncReads: false })),
  leveldb: (t) => reopenable(t, (dir) => new LevelKv(join(dir, 'db'))),
};

/** A store whose writes complete 1-3 ms late (a deterministic cycle), reads at once. */
class SlowKv implements KvStore {
  private n = 0;
  constructor(private readonly inner: KvStore) {}
  open = () => this.inner.open();
  close = () => this.inner.close();
  get = (key: Buffer) => this.inner.get(key);
  getMany = (keys: Buffer[]) => this.inner.getMany(keys);
  range = (o: KvRangeOptions): Promise<KvEntry[]> => this.inner.range(o);
  async write(batch: KvWrite[], sync: boolean): Promise<void> {
    await new Promise((r) => setTimeout(r, 1 + (this.n++ % 3)));
    return this.inner.write(batch, sync);
  }
}

for (const [name, make] of Object.entries(stores)) {
  t.test(`${name}: get, put, delete`, async (t) => {
    const { kv } = await make(t);
    t.equal(await kv.get(s('a')), undefined, 'absent key');
    await kv.write([{ key: s('a'), value: s('1') }], false);
    t.same(await kv.get(s('a')), s('1'));
    await kv.write([{ key: s('a'), value: s('2') }], true);
    t.same(await kv.get(s('a')), s('2'), 'overwrite');
    await kv.write([{ key: s('a'), value: Buffer.alloc(0) }], false);
    t.same(await kv.get(s('a')), Buffer.alloc(0), 'empty value is a value');
    await kv.write([{ key: s('a'), value: undefined }], false);
    t.equal(await kv.get(s('a')), undefined, 'deleted');
    await kv.write([{ key: s('never'), value: undefined }], false);
    t.equal(await kv.get(s('never')), undefined, 'deleting an absent key is fine');
    await kv.write([], true);
    const v = await kv.get(s('a'));
    t.equal(v, undefined, 'empty batch changes nothing');
  });

  t.test(`${name}: returned buffers are the caller's`, async (t) => {
    const { kv } = await make(t);
    const value = s('abc');
    await kv.write([{ key: s('k'), value }], false);
    value[0] = 0x7a;
    const got = (await kv.get(s('k')))!;
    t.same(got, s('abc'), 'later change of the written buffer is not stored');
    got[0] = 0x7a;
    t.same(await kv.get(s('k')), s('abc'), 'change of a returned buffer is not stored');
  });

  t.test(`${name}: getMany`, async (t) => {
    const { kv } = await make(t);
    await kv.write(
      [
        { key: s('x'), value: s('1') },
        { key: s('z'), value: s('3') },
      ],
      false,
    );
    t.same(await kv.getMany([s('z'), s('y'), s('x'), s('z')]), [s('3'), undefined, s('1'), s('3')]);
    t.same(await kv.getMany([]), []);
  });

  t.test(`${name}: a batch is atomic and applied in order`, async (t) => {
    const { kv } = await make(t);
    await kv.write(
      [
        { key: s('old1'), value: s('o') },
        { key: s('old2'), value: s('o') },
      ],
      true,
    );
    // Concurrent readers never see a batch half applied.
    const batch = [
      { key: s('new1'), value: s('n') },
      { key: s('old1'), value: undefined },
      { key: s('new2'), value: s('n') },
      { key: s('old2'), value: undefined },
      { key: s('dup'), value: s('first') },
      { key: s('dup'), value: s('second') },
    ];
    const observed: string[] = [];
    let done = false;
    const reader = (async () => {
      while (!done) {
        const keys = (await kv.range(all)).map((e) => e.key.toString()).join(',');
        observed.push(keys);
        await new Promise((r) => setImmediate(r));
      }
    })();
    await kv.write(batch, true);
    done = true;
    await reader;
    const before = 'old1,old2';
    const after = 'dup,new1,new2';
    t.ok(observed.length > 0, `reader ran ${observed.length} times`);
    t.same(
      observed.filter((o) => o !== before && o !== after),
      [],
      'reader saw only the state before or after the batch',
    );
    t.equal((await kv.range(all)).map((e) => e.key.toString()).join(','), after);
    t.same(await kv.get(s('dup')), s('second'), 'later write of a key in one batch wins');
  });

  t.test(`${name}: binary keys sort bytewise (0x00 and 0xff)`, async (t) => {
    const { kv } = await make(t);
    const ks = [
      b(0xff),
      b(0x00),
      b(0x00, 0x00),
      b(0x01),
      b(0xff, 0x00),
      b(0x7f, 0xff),
      b(0x80),
      b(0xff, 0xff),
    ];
    await kv.write(
      ks.map((k, i) => ({ key: k, value: b(i) })),
      false,
    );
    const sorted = [...ks].sort(Buffer.compare);
    const got = await kv.range(all);
    t.same(
      got.map((e) => e.key),
      sorted,
    );
    for (const e of got) t.same(e.value, b(ks.findIndex((k) => k.equals(e.key))));
    t.same(await kv.get(b(0x00, 0x00)), b(2), '0x00 0x00 distinct from 0x00');
  });

  t.test(`${name}: range bounds, limit, reverse`, async (t) => {
    const { kv } = await make(t);
    const ks = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((i) => b(0x10, i));
    await kv.write(
      ks.map((k) => ({ key: k, value: k })),
      false,
    );
    const keysOf = async (o: Parameters<KvStore['range']>[0]) => (await kv.range(o)).map((e) => e.key[1]!);
    t.same(await keysOf({ gte: b(0x10, 3), lt: b(0x10, 6) }), [3, 4, 5], 'gte..lt');
    t.same(await keysOf({ gt: b(0x10, 3), lt: b(0x10, 6) }), [4, 5], 'gt..lt');
    t.same(await keysOf({ lt: b(0x10, 2) }), [0, 1], 'no lower bound');
    t.same(await keysOf({ gte: b(0x10), lt: b(0x11) }), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'prefix range');
    t.same(await keysOf({ gte: b(0x10), lt: b(0x11), limit: 3 }), [0, 1, 2], 'limit');
    t.same(await keysOf({ gte: b(0x10), lt: b(0x11), limit: 3, reverse: true }), [9, 8, 7], 'reverse limit');
    t.same(await keysOf({ gt: b(0x10, 2), lt: b(0x10, 5), reverse: true }), [4, 3], 'reverse gt');
    t.same(await keysOf({ gte: b(0x10, 5), lt: b(0x10, 5) }), [], 'empty: gte == lt');
    t.same(await keysOf({ gte: b(0x10, 6), lt: b(0x10, 5) }), [], 'empty: gte > lt');
    t.same(await keysOf({ gt: b(0x10, 4), lt: b(0x10, 5) }), [], 'empty: nothing between');
    t.same(
      await keysOf({ gte: b(0x10, 2), gt: b(0x10, 4), lt: b(0x11) }),
      [5, 6, 7, 8, 9],
      'gt stricter than gte',
    );
    t.same(
      await keysOf({ gte: b(0x10, 4), gt: b(0x10, 2), lt: b(0x11) }),
      [4, 5, 6, 7, 8, 9],
      'gte stricter',
    );
  });

  t.test(`${name}: prefixEnd bounds exactly the keys with the prefix`, async (t) => {
    const { kv } = await make(t);
    const prefixes = [b(0x01), b(0x01, 0xff), b(0xff), b(0xff, 0xff), b(0x00, 0xff, 0x00)];
    const ks = [
      b(0x00),
      b(0x01),
      b(0x01, 0x00),
      b(0x01, 0xff),
      b(0x01, 0xff, 0xff, 0xff),
      b(0x02),
      b(0xfe, 0xff),
      b(0xff),
      b(0xff, 0x00),
      b(0xff, 0xff),
      b(0xff, 0xff, 0xff, 0xff),
      b(0x00, 0xff, 0x00),
      b(0x00, 0xff, 0x00, 0x00),
      b(0x00, 0xff, 0x01),
    ];
    await kv.write(
      ks.map((k) => ({ key: k, value: b() })),
      false,
    );
    for (const p of prefixes) {
      // An all-0xff prefix has no finite end (brick keys never are one).
      if (p.every((x) => x === 0xff)) {
        t.throws(() => prefixEnd(p), RangeError, `prefix ${p.toString('hex')} has no end`);
        continue;
      }
      const got = (await kv.range({ gte: p, lt: prefixEnd(p) })).map((e) => e.key.toString('hex'));
      const want = ks
        .filter((k) => k.subarray(0, p.length).equals(p))
        .sort(Buffer.compare)
        .map((k) => k.toString('hex'));
      t.same(got, want, `prefix ${p.toString('hex')}`);
    }
    t.same(prefixEnd(b(0x01, 0xff)), b(0x02));
  });

  t.test(`${name}: random batches match a sorted-map model`, async (t) => {
    const { kv } = await make(t);
    const model = new Map<string, Buffer>();
    const key = fc.uint8Array({ minLength: 1, maxLength: 3, min: 0, max: 255 }).map((u) => {
      // Few distinct values per byte so puts, deletes and ranges collide.
      return Buffer.from(u.map((x) => [0x00, 0x01, 0x7f, 0xfe, 0xff][x % 5]!));
    });
    const write = fc.record({ key, value: fc.option(fc.uint8Array({ maxLength: 4 }), { nil: undefined }) });
    await fc.assert(
      fc.asyncProperty(
        fc.array(write, { maxLength: 8 }),
        key,
        key,
        fc.option(fc.integer({ min: 1, max: 5 }), { nil: undefined }),
        fc.boolean(),
        async (batch, lo, hi, limit, reverse) => {
          await kv.write(
            batch.map((w) => ({ key: w.key, value: w.value && Buffer.from(w.value) })),
            false,
          );
          for (const w of batch) {
            if (w.value) model.set(w.key.toString('hex'), Buffer.from(w.value));
            else model.delete(w.key.toString('hex'));
          }
          let want = [...model.keys()]
            .map((k) => Buffer.from(k, 'hex'))
            .filter((k) => Buffer.compare(k, lo) >= 0 && Buffer.compare(k, hi) < 0)
            .sort(Buffer.compare);
          if (reverse) want.reverse();
          if (limit !== undefined) want = want.slice(0, limit);
          const got = await kv.range({ gte: lo, lt: hi, limit, reverse });
          if (got.length !== want.length) return false;
          return got.every(
            (e, i) => e.key.equals(want[i]!) && e.value.equals(model.get(e.key.toString('hex'))!),
          );
        },
      ),
      { numRuns: 200 },
    );
    t.pass('model agrees');
  });
}

t.test('leveldb: data survives close and open; open/close are idempotent', async (t) => {
  const f = await stores.leveldb!(t);
  await f.kv.open();
  await f.kv.write(
    [
      { key: b(0x00, 0x01), value: s('one') },
      { key: b(0xff), value: s('ff') },
      { key: s('gone'), value: s('x') },
    ],
    true,
  );
  await f.kv.write([{ key: s('gone'), value: undefined }], false);
  await f.kv.close();
  await f.kv.close();
  const kv = await f.reopen!();
  await kv.open();
  t.same(await kv.get(b(0x00, 0x01)), s('one'));
  t.same(await kv.get(b(0xff)), s('ff'));
  t.equal(await kv.get(s('gone')), undefined, 'unsynced delete made before a clean close is kept');
  t.same(
    (await kv.range(all)).map((e) => e.key),
    [b(0x00, 0x01), b(0xff)],
  );
});

t.test('leveldb: a closed store refuses reads', async (t) => {
  const dir = await tempDir(t);
  const kv = new LevelKv(join(dir, 'db'));
  await t.rejects(kv.get(s('a')), /not open/);
  await kv.open();
  await kv.close();
  await t.rejects(kv.write([{ key: s('a'), value: s('b') }], true), /not open/);
});

t.test('leveldb: synced batch latency', async (t) => {
  const f = await stores.leveldb!(t);
  const n = 200;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    await f.kv.write(
      [
        { key: crashKey(i, 0), value: crashValue(i, 0) },
        { key: crashKey(i, 1), value: crashValue(i, 1) },
      ],
      true,
    );
  }
  const us = Number(process.hrtime.bigint() - t0) / 1000 / n;
  t.comment(`synced 2-put batch: ${us.toFixed(0)} µs mean over ${n}`);
  t.equal((await f.kv.range(all)).length, 2 * n);
});

const writer = fileURLToPath(new URL('./fixtures/kv-crash-writer.js', import.meta.url));

for (const mode of ['synced', 'journal'] as const) {
  t.test(`leveldb ${mode}: SIGKILL loses no reported batch and leaves no partial one`, async (t) => {
    const root = await tempDir(t);
    // journal: acknowledged unsynced batches, many of them only in the journal at the kill.
    for (const killAfter of mode === 'synced' ? [1, 40, 150] : [1, 150, 3000]) {
      const dir = join(root, `db-${killAfter}`);
      const child = spawn(process.execPath, [writer, dir, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
      let reported = -1;
      let buffered = '';
      await new Promise<void>((resolve, reject) => {
        child.on('error', reject);
        child.on('exit', (code, signal) => {
          if (signal === 'SIGKILL') resolve();
          else reject(new Error(`writer exited ${code ?? signal} before the kill`));
        });
        child.stdout.on('data', (chunk: Buffer) => {
          buffered += chunk.toString();
          const lines = buffered.split('\n');
          buffered = lines.pop()!;
          for (const line of lines) {
            const m = /^ok (\d+)$/.exec(line);
            if (m) reported = Number(m[1]);
          }
          // Kill mid-stream: the writer keeps going while this runs.
          if (reported >= killAfter && child.exitCode === null && !child.killed) child.kill('SIGKILL');
        });
      });
      t.ok(reported >= killAfter, `writer reported batch ${reported} before SIGKILL`);

      const journal = mode === 'journal' ? new JournalKv(new LevelKv(dir), crashJournalPath(dir)) : undefined;
      const kv = journal ?? new LevelKv(dir);
      await kv.open();
      if (journal) t.comment(`killed after ${reported}: ${journal.replayedRecords} journal records replayed`);
      try {
        const last = Number((await kv.get(tmpKey))?.toString());
        t.ok(last >= reported, `last applied batch ${last} includes every reported one (${reported})`);
        t.ok(last <= reported + 1, 'at most the one unreported in-flight batch was applied beyond');
        // Exactly batches 0..last: every put of each, the delete of batch n by n + 1, nothing of last + 1.
        const entries = await kv.range({ lt: Buffer.alloc(9, 0xff) });
        const want = new Map<string, Buffer>();
        for (let n = 0; n <= last; n++) {
          for (let i = n === last ? 0 : 1; i < crashBatchWidth; i++) {
            want.set(crashKey(n, i).toString('hex'), crashValue(n, i));
          }
        }
        want.set(tmpKey.toString('hex'), Buffer.from(String(last)));
        const partial = entries.filter((e) => !want.get(e.key.toString('hex'))?.equals(e.value));
        t.same(
          partial.map((e) => e.key.toString('hex')),
          [],
          'no key outside the applied batches, no wrong value',
        );
        t.equal(entries.length, want.size, 'every key of the applied batches is present');
      } finally {
        await kv.close();
      }
    }
  });
}

t.test('journal: a torn or damaged tail ends the replay; the journal restarts empty', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'journal');
  const first = new JournalKv(new SlowKv(new MemoryKv()), path);
  await first.open();
  for (let n = 0; n < 3; n++) await first.write(crashBatch(n), false);
  const whole = readFileSync(path);
  t.equal(readJournal(path).length, 3, 'three records journaled');
  // A crash in the middle of a fourth append: its first half only.
  await first.write(crashBatch(3), false);
  const four = readFileSync(path);
  await first.drain();
  for (const [what, bytes] of [
    ['torn', four.subarray(0, whole.length + Math.floor((four.length - whole.length) / 2))],
    ['damaged', Buffer.concat([whole, flipLast(four.subarray(whole.length))])],
  ] as const) {
    const copy = join(dir, `journal-${what}`);
    writeFileSync(copy, bytes);
    const inner = new MemoryKv();
    const kv = new JournalKv(inner, copy);
    await kv.open();
    t.equal(kv.replayedRecords, 3, `${what}: the three whole records are replayed`);
    t.equal((await inner.get(tmpKey))?.toString(), '2', `${what}: batch 2 is the last applied`);
    t.equal(await inner.get(crashKey(3, 1)), undefined, `${what}: nothing of batch 3`);
    t.equal(statSync(copy).size, 0, `${what}: the journal is emptied once replayed`);
    await kv.close();
  }
});

function flipLast(b: Buffer): Buffer {
  const c = Buffer.from(b);
  c[c.length - 1]! ^= 0xff;
  return c;
}

t.test('journal: writes wait once the overlay is full; a failed flush fails every later call', async (t) => {
  const dir = await tempDir(t);
  let fail = false;
  const inner = new MemoryKv();
  const flaky: KvStore = {
    open: () => inner.open(),
    close: () => inner.close(),
    get: (k) => inner.get(k),
    getMany: (k) => inner.getMany(k),
    range: (o) => inner.range(o),
    write: async (b, sync) => {
      await new Promise((r) => setTimeout(r, 2));
      if (fail) throw new Error('disk gone');
      return inner.write(b, sync);
    },
  };
  const kv = new JournalKv(flaky, join(dir, 'journal'), { overlayMaxEntries: 4 });
  await kv.open();
  await kv.write([{ key: s('a'), value: s('1') }], false);
  t.ok(kv.overlaySize >= 1, 'an unsynced write is acknowledged before the store has it');
  t.same(await kv.get(s('a')), s('1'), 'and read back from the overlay');
  for (let i = 0; i < 20; i++) await kv.write([{ key: s(`k${i}`), value: s('v') }], false);
  t.ok(kv.overlaySize <= 5, `overlay stays bounded (${kv.overlaySize})`);
  fail = true;
  await kv.write([{ key: s('b'), value: s('2') }], false);
  await t.rejects(kv.write([{ key: s('c'), value: s('3') }], true), /disk gone/, 'a synced write reports it');
  await t.rejects(kv.get(s('a')), /disk gone/, 'so does every later call');
  await kv.close();
  t.same(readJournal(join(dir, 'journal')).length > 0, true, 'the journal keeps what the store refused');
});
