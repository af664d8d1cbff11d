import fc from 'fast-check';
import type { PgAssignment } from '@dunix/proto';
import t from 'tap';
import {
  applyChange,
  type BrickStatus,
  planPlacement,
  volumeConfig,
  type VolumeSnapshot,
} from '../src/index.js';

function snapshot(placement: PgAssignment[], alive: Record<string, boolean>, replicas = 3): VolumeSnapshot {
  const bricks: BrickStatus[] = Object.entries(alive).map(([id, up]) => ({
    id,
    address: '127.0.0.1:7000',
    host: id,
    weight: 1,
    dataDir: `/srv/${id}`,
    alive: up,
  }));
  return {
    config: volumeConfig('v', { pgCount: Math.max(1, placement.length), replicas, createdAtMs: 0 }),
    placement,
    bricks,
    rebalance: null,
  };
}

const pg = (n: number, bricks: string[], isr = bricks, epoch = 1): PgAssignment => ({
  pg: n,
  bricks,
  isr,
  epoch,
});

t.test('plan: nothing to do when every in-sync brick lives', async (t) => {
  const s = snapshot([pg(0, ['a', 'b', 'c']), pg(1, ['b', 'c', 'a'], ['b', 'c'])], {
    a: true,
    b: true,
    c: true,
  });
  t.same(planPlacement(s), [], 'an out-of-sync live replica is not the planner’s business');
  t.same(planPlacement({ config: null, placement: [], bricks: [], rebalance: null }), [], 'no volume yet');
});

t.test('plan: a dead replica leaves the in-sync set, stays listed', async (t) => {
  const s = snapshot([pg(0, ['a', 'b', 'c'], ['a', 'b', 'c'], 7)], { a: true, b: false, c: true });
  t.same(planPlacement(s), [
    { pg: 0, expectedEpoch: 7, bricks: ['a', 'b', 'c'], isr: ['a', 'c'], kind: 'shrink', dropped: ['b'] },
  ]);
});

t.test('plan: a dead primary is replaced by the first live in-sync member', async (t) => {
  const s = snapshot([pg(3, ['a', 'b', 'c'], ['a', 'b', 'c'], 2)], { a: false, b: true, c: true });
  t.same(planPlacement(s), [
    { pg: 3, expectedEpoch: 2, bricks: ['b', 'a', 'c'], isr: ['b', 'c'], kind: 'failover', dropped: ['a'] },
  ]);
  t.same(applyChange(planPlacement(s)[0]!), { pg: 3, bricks: ['b', 'a', 'c'], isr: ['b', 'c'], epoch: 3 });
});

t.test('plan: a live replica outside the in-sync set is never promoted', async (t) => {
  const s = snapshot([pg(0, ['a', 'b', 'c'], ['a', 'c'])], { a: false, b: true, c: true });
  t.same(planPlacement(s)[0]!.bricks, ['c', 'a', 'b'], 'c (in sync) over b (catching up)');
  t.same(planPlacement(s)[0]!.isr, ['c']);
  const none = snapshot([pg(0, ['a', 'b', 'c'], ['a', 'c'])], { a: false, b: true, c: false });
  t.same(planPlacement(none), [], 'no live in-sync member: left unavailable, b is not promoted');
});

t.test('plan: unknown bricks count as dead; failovers come first', async (t) => {
  const s = snapshot(
    [pg(0, ['a', 'b'], ['a', 'b']), pg(1, ['b', 'a'], ['b', 'a']), pg(2, ['x', 'a'], ['x', 'a'])],
    { a: true, b: false },
    2,
  );
  const plan = planPlacement(s);
  t.same(
    plan.map((c) => [c.pg, c.kind]),
    [
      [1, 'failover'],
      [2, 'failover'],
      [0, 'shrink'],
    ],
  );
  t.same(plan[1]!.dropped, ['x']);
});

/** A random volume: bricks b0..b5 alive or dead, PGs with 1..3 replicas and an in-sync set holding the primary. */
const volumeArb = fc
  .record({
    alive: fc.array(fc.boolean(), { minLength: 6, maxLength: 6 }),
    pgs: fc.array(
      fc.record({
        order: fc.shuffledSubarray([0, 1, 2, 3, 4, 5], { minLength: 1, maxLength: 3 }),
        inSync: fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }),
        epoch: fc.integer({ min: 1, max: 1000 }),
      }),
      { minLength: 1, maxLength: 40 },
    ),
  })
  .map(({ alive, pgs }) => {
    const placement = pgs.map((p, i) => {
      const bricks = p.order.map((b) => `b${b}`);
      return pg(
        i,
        bricks,
        bricks.filter((_, j) => j === 0 || p.inSync[j]),
        p.epoch,
      );
    });
    return snapshot(placement, Object.fromEntries(alive.map((up, i) => [`b${i}`, up])));
  });

t.test('plan: properties over random volumes', async (t) => {
  fc.assert(
    fc.property(volumeArb, (s) => {
      const alive = new Set(s.bricks.filter((b) => b.alive).map((b) => b.id));
      const plan = planPlacement(s);
      const byPg = new Map(plan.map((c) => [c.pg, c]));
      if (byPg.size !== plan.length) throw new Error('two changes for one PG');
      const after = s.placement.map((a) => {
        const c = byPg.get(a.pg);
        if (!c) return a;
        if (c.expectedEpoch !== a.epoch) throw new Error(`pg ${a.pg}: planned from epoch ${c.expectedEpoch}`);
        return applyChange(c);
      });
      s.placement.forEach((before, i) => {
        const a = after[i]!;
        const changed = byPg.has(a.pg);
        if (a.epoch !== before.epoch + (changed ? 1 : 0)) throw new Error(`pg ${a.pg}: epoch ${a.epoch}`);
        if (!a.isr.includes(a.bricks[0]!)) throw new Error(`pg ${a.pg}: primary outside the in-sync set`);
        if (!a.isr.every((b) => a.bricks.includes(b))) throw new Error(`pg ${a.pg}: in-sync set not listed`);
        if ([...a.bricks].sort().join() !== [...before.bricks].sort().join())
          throw new Error(`pg ${a.pg}: replicas changed`);
        if (!before.isr.includes(a.bricks[0]!))
          throw new Error(`pg ${a.pg}: primary from outside the old isr`);
        if (!a.isr.every((b) => before.isr.includes(b))) throw new Error(`pg ${a.pg}: in-sync set grew`);
        const liveBefore = before.isr.filter((b) => alive.has(b));
        if (liveBefore.length === 0) {
          if (changed) throw new Error(`pg ${a.pg}: changed without a live in-sync member`);
        } else {
          if (a.isr.some((b) => !alive.has(b))) throw new Error(`pg ${a.pg}: dead brick kept in sync`);
          if (a.isr.length !== liveBefore.length) throw new Error(`pg ${a.pg}: live in-sync member dropped`);
          if (!alive.has(a.bricks[0]!)) throw new Error(`pg ${a.pg}: dead primary kept`);
        }
      });
      if (planPlacement({ ...s, placement: after }).length !== 0)
        throw new Error('a second plan is not empty');
    }),
    { numRuns: 500 },
  );
  t.pass('every property holds');
});
