import t from 'tap';
import { roomBelowFull, UsageMeter, usageChanged, type UsageSources } from '../../src/usage.js';

/** Sources whose numbers the test sets. */
function sources(o: {
  totalBytes: number;
  availBytes: number;
  metaBytes: number;
  blockBytes: number;
  pct?: number;
}) {
  let now = 1000;
  const src: UsageSources & { o: typeof o; tick(ms: number): void } = {
    o,
    filesystem: async () => ({ totalBytes: o.totalBytes, availBytes: o.availBytes }),
    metaBytes: async () => o.metaBytes,
    blockBytes: async () => o.blockBytes,
    thresholdPct: () => o.pct ?? 95,
    nowMs: () => now,
    tick: (ms) => {
      now += ms;
    },
  };
  return src;
}

const MiB = 1024 * 1024;

t.test(
  'with a capacity below the disk: used is what the brick holds, free the smaller of quota and disk',
  async (t) => {
    const src = sources({
      totalBytes: 1000 * MiB,
      availBytes: 900 * MiB,
      metaBytes: 2 * MiB,
      blockBytes: 30 * MiB,
    });
    const m = new UsageMeter(src, 64 * MiB);
    t.equal(m.current(), undefined, 'nothing before the first measurement');
    t.equal(m.full(), false);
    const u = await m.measure();
    t.match(u, {
      capacityBytes: 64 * MiB,
      usedBytes: 32 * MiB,
      freeBytes: 32 * MiB,
      blockBytes: 30 * MiB,
      metaBytes: 2 * MiB,
      state: 'ok',
      atMs: 1000,
    });
    src.o.availBytes = 10 * MiB;
    t.equal((await m.measure()).freeBytes, 10 * MiB, 'never more free than the disk has');
    t.equal(
      (await new UsageMeter(src, 10_000 * MiB).measure()).capacityBytes,
      1000 * MiB,
      'capped at the disk',
    );
  },
);

t.test('on the whole disk: other files on it count as used', async (t) => {
  const src = sources({
    totalBytes: 100 * MiB,
    availBytes: 20 * MiB,
    metaBytes: 1 * MiB,
    blockBytes: 9 * MiB,
  });
  const u = await new UsageMeter(src, 0).measure();
  t.match(u, { capacityBytes: 100 * MiB, usedBytes: 80 * MiB, freeBytes: 20 * MiB, state: 'ok' });
  src.o.availBytes = 4 * MiB;
  t.equal((await new UsageMeter(src, 0).measure()).state, 'full', '96% of the disk is used');
});

t.test('bytes written between measurements raise the estimate until the next one', async (t) => {
  const src = sources({ totalBytes: 1000 * MiB, availBytes: 900 * MiB, metaBytes: 0, blockBytes: 50 * MiB });
  const m = new UsageMeter(src, 100 * MiB);
  await m.measure();
  t.equal(m.current()!.state, 'ok');
  m.noteWritten(35 * MiB);
  t.match(m.current(), { usedBytes: 85 * MiB, freeBytes: 15 * MiB, state: 'nearfull' });
  m.noteWritten(10 * MiB);
  t.equal(m.full(), true, '95 of 100 MiB: full before any scan ran');
  // The scan finds that most of it was overwrites: 60 MiB held.
  src.o.blockBytes = 60 * MiB;
  await m.measure();
  t.match(m.current(), { usedBytes: 60 * MiB, state: 'ok' }, 'a measurement replaces the estimate');
  src.o.pct = 60;
  await m.measure();
  t.equal(m.full(), true, 'a lower volume threshold applies at the next measurement');
});

t.test('writes made while a measurement runs stay counted', async (t) => {
  const src = sources({ totalBytes: 1000 * MiB, availBytes: 900 * MiB, metaBytes: 0, blockBytes: 10 * MiB });
  const m = new UsageMeter(src, 100 * MiB);
  m.noteWritten(5 * MiB);
  const p = m.measure();
  m.noteWritten(7 * MiB); // after the scan started: it may not have seen these
  t.equal(m.measure(), p, 'concurrent callers share one measurement');
  await p;
  t.equal(m.current()!.usedBytes, 17 * MiB);
});

t.test('usageChanged: state, capacity, half a percent of capacity, or the republish age', async (t) => {
  const u = {
    capacityBytes: 1000,
    usedBytes: 100,
    freeBytes: 900,
    blockBytes: 100,
    metaBytes: 0,
    state: 'ok' as const,
    atMs: 0,
  };
  t.equal(usageChanged(undefined, u, 60_000), true);
  t.equal(usageChanged(u, { ...u, usedBytes: 104, atMs: 10 }, 60_000), false);
  t.equal(usageChanged(u, { ...u, usedBytes: 105, atMs: 10 }, 60_000), true);
  t.equal(usageChanged(u, { ...u, state: 'nearfull', atMs: 10 }, 60_000), true);
  t.equal(usageChanged(u, { ...u, capacityBytes: 2000, atMs: 10 }, 60_000), true);
  t.equal(usageChanged(u, { ...u, atMs: 60_000 }, 60_000), true);
});

t.test('roomBelowFull: what a preallocation may still reserve below the threshold', async (t) => {
  const src = sources({ totalBytes: 1000 * MiB, availBytes: 900 * MiB, metaBytes: 0, blockBytes: 60 * MiB });
  const m = new UsageMeter(src, 100 * MiB);
  const u = await m.measure();
  t.equal(roomBelowFull(u, 95), 35 * MiB, '95 MiB of 100 less 60 used');
  m.noteWritten(30 * MiB);
  t.equal(roomBelowFull(m.current()!, 95), 5 * MiB, 'bytes written since count');
  m.noteWritten(10 * MiB);
  t.equal(roomBelowFull(m.current()!, 95), 0, 'never below 0 once full');
  t.equal(m.full(), true);
});
