import fc from 'fast-check';
import t from 'tap';
import type { PgAssignment } from '@dunix/proto';
import { inMotion, planMove, planMoves, type MoveOptions } from '../src/controller/moves.js';

/**
 * The move planner against a model of the bricks: after every step the
 * map is checked (primary in sync, at most replicas + 1 bricks, never fewer
 * in-sync copies than replicas because of a move, at most maxConcurrent
 * PGs in motion), and a volume whose target bricks live reaches its target.
 */

const pg = (n: number, bricks: string[], isr = bricks, epoch = 1): PgAssignment => ({
  pg: n,
  bricks,
  isr,
  epoch,
});
const opts = (alive: string[], candidates = alive, over: Partial<MoveOptions> = {}): MoveOptions => ({
  replicas: 3,
  alive: new Set(alive),
  candidates: new Set(candidates),
  balance: true,
  maxConcurrent: 4,
  ...over,
});

t.test('one PG: add, catch up, drop', async (t) => {
  const o = opts(['a', 'b', 'c', 'd']);
  let a = pg(0, ['a', 'b', 'c']);
  const target = ['a', 'b', 'd'];
  const add = planMove(a, target, o)!;
  t.same([add.kind, add.brick, add.bricks, add.isr], ['add', 'd', ['a', 'b', 'c', 'd'], ['a', 'b', 'c']]);
  a = pg(0, add.bricks, add.isr, 2);
  t.equal(planMove(a, target, o), undefined, 'waits while d catches up');
  a = pg(0, a.bricks, ['a', 'b', 'c', 'd'], 3); // the primary added d to the in-sync set
  const drop = planMove(a, target, o)!;
  t.same([drop.kind, drop.brick, drop.bricks, drop.isr], ['drop', 'c', ['a', 'b', 'd'], ['a', 'b', 'd']]);
  t.equal(drop.expectedEpoch, 3, 'planned against the epoch it read');
  t.equal(planMove(pg(0, drop.bricks, drop.isr, 4), target, o), undefined, 'at the target');
});

t.test('a primary that leaves hands over to an in-sync member of the target first', async (t) => {
  const o = opts(['a', 'b', 'c', 'd', 'e']);
  const target = ['d', 'b', 'e'];
  let a = pg(0, ['a', 'b', 'c', 'd'], ['a', 'b', 'c', 'd']);
  const h = planMove(a, target, o)!;
  t.same([h.kind, h.brick, h.bricks[0]], ['handover', 'd', 'd'], 'd takes over');
  t.same(h.isr.sort(), ['a', 'b', 'c', 'd'], 'the old primary stays in sync');
  a = pg(0, h.bricks, h.isr, 2);
  const d = planMove(a, target, o)!;
  t.equal(d.kind, 'drop', 'then an extra goes, making room');
  t.not(d.brick, 'd');
});

t.test('never below replicas in-sync copies; a dead missing member waits; dead extras go', async (t) => {
  const o = opts(['a', 'b', 'c']);
  t.equal(planMove(pg(0, ['a', 'b', 'c']), ['a', 'b', 'd'], o), undefined, 'd is down: nothing to do');
  const out = planMove(pg(0, ['a', 'b', 'c'], ['a', 'b']), ['a', 'b', 'd'], opts(['a', 'b']))!;
  t.same([out.kind, out.brick], ['drop', 'c'], 'a dead, out-of-sync extra is dropped');
  t.equal(
    planMove(pg(0, ['a', 'b', 'c'], ['b', 'c']), ['b', 'c', 'd'], opts(['b', 'c', 'd'])),
    undefined,
    'a PG whose primary is down is left to failover',
  );
});

t.test('forced moves without a rebalance; balance moves only with one; concurrency bounded', async (t) => {
  const placement = Array.from({ length: 10 }, (_v, i) => pg(i, ['a', 'b', 'c']));
  const target = placement.map(() => ['a', 'b', 'd']);
  const noJob = opts(['a', 'b', 'c', 'd'], ['a', 'b', 'c', 'd'], { balance: false });
  t.same(planMoves(placement, target, noJob), [], 'no job, all candidates: nothing moves');
  const draining = opts(['a', 'b', 'c', 'd'], ['a', 'b', 'd'], { balance: false, maxConcurrent: 3 });
  const forced = planMoves(placement, target, draining);
  t.equal(forced.length, 3, 'a draining brick forces moves, maxConcurrent at a time');
  t.ok(forced.every((c) => c.kind === 'add'));
  const job = planMoves(placement, target, opts(['a', 'b', 'c', 'd'], undefined, { maxConcurrent: 2 }));
  t.equal(job.length, 2, 'a rebalance moves maxConcurrent PGs at a time');
});

/** A random volume: replicas, bricks, placement, target, who is alive. */
const volumeArb = fc
  .record({
    replicas: fc.integer({ min: 1, max: 3 }),
    bricks: fc.integer({ min: 3, max: 7 }),
    pgs: fc.integer({ min: 1, max: 24 }),
    seed: fc.integer({ min: 1, max: 2 ** 30 }),
    deadTargets: fc.boolean(),
    maxConcurrent: fc.integer({ min: 1, max: 6 }),
  })
  .filter((v) => v.bricks >= v.replicas + 1);

function rng(seed: number) {
  let x = seed;
  return () => {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    return x / 0x7fffffff;
  };
}

function pick(r: () => number, ids: string[], n: number): string[] {
  const pool = [...ids];
  const out: string[] = [];
  while (out.length < n) out.push(pool.splice(Math.floor(r() * pool.length), 1)[0]!);
  return out;
}

t.test('property: invariants after every step; live targets are reached', async (t) => {
  fc.assert(
    fc.property(volumeArb, (v) => {
      const r = rng(v.seed);
      const ids = Array.from({ length: v.bricks }, (_x, i) => `b${i}`);
      let placement = Array.from({ length: v.pgs }, (_x, i) => pg(i, pick(r, ids, v.replicas)));
      const target = placement.map(() => pick(r, ids, v.replicas));
      const dead = v.deadTargets ? new Set([ids[Math.floor(r() * ids.length)]!]) : new Set<string>();
      // Dead bricks never lead in this model: failover would have moved the primary.
      placement = placement.map((a) => {
        const live = a.bricks.filter((b) => !dead.has(b));
        if (live.length === 0) return a;
        const bricks = [...live, ...a.bricks.filter((b) => dead.has(b))];
        return pg(a.pg, bricks, live);
      });
      const o = opts(
        ids.filter((b) => !dead.has(b)),
        ids,
        { replicas: v.replicas, maxConcurrent: v.maxConcurrent },
      );
      for (let round = 0; round < 200; round++) {
        const changes = planMoves(placement, target, o);
        // Catch-up: a live listed replica outside the in-sync set joins it (the primary's work).
        const caught = placement.map((a) => {
          const join = a.bricks.filter((b) => !a.isr.includes(b) && o.alive.has(b));
          return join.length
            ? pg(
                a.pg,
                a.bricks,
                [...a.isr, ...join].sort((x, y) => a.bricks.indexOf(x) - a.bricks.indexOf(y)),
                a.epoch + 1,
              )
            : a;
        });
        if (changes.length === 0 && caught.every((a, i) => a === placement[i])) break;
        const next = [...caught];
        for (const c of changes) {
          const cur = placement[c.pg]!;
          const before = cur.isr.length;
          if (c.bricks.length > v.replicas + 1) throw new Error(`pg ${c.pg}: ${c.bricks.length} bricks`);
          if (!c.isr.includes(c.bricks[0]!)) throw new Error(`pg ${c.pg}: primary not in sync`);
          if (c.isr.length < Math.min(before, v.replicas))
            throw new Error(`pg ${c.pg}: in-sync ${before} -> ${c.isr.length}`);
          // Apply on the state it was planned from (a lost swap is simply replanned).
          if (next[c.pg] === cur)
            next[c.pg] = { pg: c.pg, bricks: c.bricks, isr: c.isr, epoch: c.expectedEpoch + 1 };
        }
        const moving = next.filter((a) => inMotion(a, target[a.pg]!, o.alive)).length;
        if (
          moving >
          Math.max(v.maxConcurrent, placement.filter((a) => inMotion(a, target[a.pg]!, o.alive)).length)
        )
          throw new Error(`${moving} PGs in motion, max ${v.maxConcurrent}`);
        placement = next;
      }
      for (const a of placement) {
        const t = target[a.pg]!;
        if (t.some((b) => dead.has(b)) || a.bricks.every((b) => dead.has(b))) continue;
        if (!(a.bricks.length === t.length && t.every((b) => a.bricks.includes(b))))
          throw new Error(`pg ${a.pg} ended at ${a.bricks} (isr ${a.isr}), target ${t}`);
      }
    }),
    { numRuns: 300 },
  );
  t.pass('300 random volumes');
});
