/** coalesced(): concurrent callers share runs, none gets a result older than its call, errors reach their callers. */
import t from 'tap';
import { coalesced } from '../../src/util/coalesce.js';

function gate() {
  let runs = 0;
  const waiting: { resolve(v: number): void; reject(e: Error): void }[] = [];
  const fn = coalesced(
    () =>
      new Promise<number>((resolve, reject) => {
        runs++;
        waiting.push({ resolve, reject });
      }),
  );
  const tick = () => new Promise((r) => setImmediate(r));
  return { fn, runs: () => runs, waiting, tick };
}

t.test('a flood of callers costs two runs; later callers get the later run', async (t) => {
  const g = gate();
  const first = g.fn();
  const rest = Array.from({ length: 100 }, () => g.fn());
  await g.tick();
  t.equal(g.runs(), 1, 'one run while the first is in progress');
  g.waiting.shift()!.resolve(1);
  t.equal(await first, 1);
  await g.tick();
  t.equal(g.runs(), 2, 'the queued callers share one fresh run');
  g.waiting.shift()!.resolve(2);
  t.same(new Set(await Promise.all(rest)), new Set([2]), 'none got the run that began before it called');
  const alone = g.fn();
  t.equal(g.runs(), 3, 'an idle caller starts a run at once');
  g.waiting.shift()!.resolve(3);
  t.equal(await alone, 3);
});

t.test('a failed run fails its callers; the queued run still happens', async (t) => {
  const g = gate();
  const first = g.fn();
  const second = g.fn();
  g.waiting.shift()!.reject(new Error('scan failed'));
  await t.rejects(first, /scan failed/);
  await g.tick();
  t.equal(g.runs(), 2);
  g.waiting.shift()!.resolve(7);
  t.equal(await second, 7);
});
