import fc from 'fast-check';
import t from 'tap';
import { xxh64, initHashing } from '../src/hashing.js';
import { type BrickCandidate, computePlacement, type PgAssignment, rankBricks } from '../src/placement.js';
import { check } from './helpers/check.js';

/**
 * Placement math against a naive reference: weighted rendezvous hashing
 * written out step by step (score every brick, then pick the best brick on
 * an unused host until there are enough, then the best remaining bricks).
 */
function refScore(pg: number, id: string, weight: number): number {
  const h = xxh64(Buffer.from(`${pg}\u0000${id}`), 0x64756e6978n);
  const u = (Number(h >> 11n) + 0.5) / 2 ** 53;
  return -weight / Math.log(u);
}

function refRank(pg: number, bricks: readonly BrickCandidate[], replicas: number): string[] {
  const candidates = bricks.filter((b) => b.weight > 0);
  const better = (a: BrickCandidate, b: BrickCandidate) => {
    const sa = refScore(pg, a.id, a.weight);
    const sb = refScore(pg, b.id, b.weight);
    return sa > sb || (sa === sb && a.id < b.id);
  };
  const chosen: BrickCandidate[] = [];
  const pickBest = (ok: (b: BrickCandidate) => boolean) => {
    let best: BrickCandidate | undefined;
    for (const b of candidates) if (!chosen.includes(b) && ok(b) && (!best || better(b, best))) best = b;
    return best;
  };
  while (chosen.length < replicas) {
    const b = pickBest((c) => !chosen.some((x) => x.host === c.host));
    if (!b) break;
    chosen.push(b);
  }
  while (chosen.length < replicas) {
    const b = pickBest(() => true);
    if (!b) break;
    chosen.push(b);
  }
  return chosen.map((b) => b.id);
}

/** Brick sets: unique ids, a few hosts, weights 1..3. */
const brickSet = (min: number, max: number) =>
  fc
    .uniqueArray(
      fc.record({
        id: fc.stringMatching(/^[a-z0-9]{1,8}$/),
        host: fc.constantFrom('h0', 'h1', 'h2', 'h3', 'h4', 'h5'),
        weight: fc.integer({ min: 1, max: 3 }),
      }),
      { minLength: min, maxLength: max, selector: (b) => b.id },
    )
    .map((bs) => bs as BrickCandidate[]);

t.before(async () => {
  await initHashing();
});

t.test('every PG gets `replicas` distinct bricks, on distinct hosts when there are enough', async (t) => {
  check(
    t,
    fc.property(brickSet(1, 12), fc.integer({ min: 1, max: 5 }), (bricks, r) => {
      const replicas = Math.min(r, bricks.length);
      const hosts = new Set(bricks.map((b) => b.host)).size;
      const hostOf = new Map(bricks.map((b) => [b.id, b.host]));
      const map = computePlacement(64, bricks, replicas);
      if (map.length !== 64) return false;
      return map.every((a, pg) => {
        const distinctHosts = new Set(a.bricks.map((b) => hostOf.get(b))).size;
        return (
          a.pg === pg &&
          a.epoch === 1 &&
          a.bricks.length === replicas &&
          new Set(a.bricks).size === replicas &&
          a.bricks.every((b) => hostOf.has(b)) &&
          distinctHosts === Math.min(replicas, hosts)
        );
      });
    }),
    { numRuns: 200 },
  );
});

t.test('matches the naive reference, whatever the input order', async (t) => {
  check(
    t,
    fc.property(brickSet(1, 10), fc.integer({ min: 1, max: 5 }), fc.integer(), (bricks, r, seed) => {
      const replicas = Math.min(r, bricks.length);
      const shuffled = [...bricks].sort((a, b) =>
        xxh64(Buffer.from(a.id), BigInt(seed >>> 0)) < xxh64(Buffer.from(b.id), BigInt(seed >>> 0)) ? -1 : 1,
      );
      for (let pg = 0; pg < 32; pg++) {
        const expected = refRank(pg, bricks, replicas);
        const a = rankBricks(pg, bricks, replicas);
        const b = rankBricks(pg, shuffled, replicas);
        if (a.join() !== expected.join() || b.join() !== expected.join()) return false;
      }
      return true;
    }),
    { numRuns: 200 },
  );
});

t.test('deterministic: the same inputs give the same map', async (t) => {
  check(
    t,
    fc.property(brickSet(3, 8), (bricks) => {
      const a = computePlacement(128, bricks, 3);
      const b = computePlacement(
        128,
        bricks.map((x) => ({ ...x })),
        3,
      );
      return JSON.stringify(a) === JSON.stringify(b);
    }),
    { numRuns: 50 },
  );
});

t.test('weights are respected: weight 2 gets 1.5x..2.5x the PGs of weight 1 (4096 PGs)', async (t) => {
  check(
    t,
    fc.property(fc.stringMatching(/^[a-z]{1,6}$/), fc.integer({ min: 3, max: 9 }), (prefix, n) => {
      const bricks: BrickCandidate[] = [...Array(n).keys()].map((i) => ({
        id: `${prefix}-${i}`,
        host: `host-${i}`,
        weight: i === 0 ? 2 : 1,
      }));
      const counts = new Map<string, number>();
      for (const a of computePlacement(4096, bricks, 1))
        counts.set(a.bricks[0]!, (counts.get(a.bricks[0]!) ?? 0) + 1);
      const heavy = counts.get(bricks[0]!.id) ?? 0;
      const light = bricks.slice(1).reduce((s, b) => s + (counts.get(b.id) ?? 0), 0) / (n - 1);
      const ratio = heavy / light;
      return ratio >= 1.5 && ratio <= 2.5;
    }),
    { numRuns: 30 },
  );
});

t.test('adding a brick moves only the PGs the new brick wins', async (t) => {
  check(
    t,
    fc.property(
      brickSet(3, 8),
      fc.record({
        id: fc.constant('newcomer'),
        host: fc.constantFrom('h0', 'h1', 'h9'),
        weight: fc.integer({ min: 1, max: 3 }),
      }),
      fc.integer({ min: 1, max: 3 }),
      (bricks, added, replicas) => {
        const before = computePlacement(256, bricks, replicas);
        const after = computePlacement(256, [...bricks, added], replicas, before);
        return after.every((a, pg) => {
          const old = before[pg]!;
          const changed = a.bricks.join() !== old.bricks.join();
          // Compare with the reference: the newcomer is in the new list exactly where it now ranks.
          if (a.bricks.join() !== refRank(pg, [...bricks, added], replicas).join()) return false;
          if (!changed) return a.epoch === old.epoch && !a.bricks.includes('newcomer');
          return a.bricks.includes('newcomer') && a.epoch === old.epoch + 1;
        });
      },
    ),
    { numRuns: 100 },
  );
});

t.test('removing a brick moves only the PGs it held; epochs bump only for changed PGs', async (t) => {
  check(
    t,
    fc.property(brickSet(4, 9), fc.nat(), fc.integer({ min: 1, max: 3 }), (bricks, pick, replicas) => {
      const gone = bricks[pick % bricks.length]!;
      const before: PgAssignment[] = computePlacement(128, bricks, replicas).map((a, i) => ({
        ...a,
        epoch: 1 + (i % 5),
      }));
      const after = computePlacement(
        128,
        bricks.filter((b) => b !== gone),
        replicas,
        before,
      );
      return after.every((a, pg) => {
        const old = before[pg]!;
        const changed = a.bricks.join() !== old.bricks.join();
        if (changed !== old.bricks.includes(gone.id)) return false;
        return a.epoch === (changed ? old.epoch + 1 : old.epoch) && !a.bricks.includes(gone.id);
      });
    }),
    { numRuns: 100 },
  );
});

t.test('too few bricks is an error; weight 0 bricks get nothing', async (t) => {
  t.throws(() => computePlacement(8, [{ id: 'a', host: 'h', weight: 1 }], 2), RangeError);
  const map = computePlacement(
    64,
    [
      { id: 'a', host: 'h1', weight: 1 },
      { id: 'b', host: 'h2', weight: 0 },
      { id: 'c', host: 'h3', weight: 1 },
    ],
    2,
  );
  t.ok(map.every((a) => !a.bricks.includes('b')));
});
