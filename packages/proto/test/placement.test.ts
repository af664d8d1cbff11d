import fc from 'fast-check';
import t from 'tap';
import { xxh64, initHashing } from '../src/hashing.js';
import {
  type BrickCandidate,
  computePlacement,
  type PgAssignment,
  rankBricks,
  rendezvousScore,
  targetPlacement,
} from '../src/placement.js';
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

/*
 * targetPlacement. The reference shares below are computed independently:
 * pgCount × replicas by weight, but no brick above pgCount (one replica per
 * PG; these tests give every brick its own host), the excess spread over the
 * others by weight.
 */
function shareOf(bricks: readonly BrickCandidate[], pgCount: number, replicas: number): Map<string, number> {
  const live = bricks.filter((b) => b.weight > 0);
  const out = new Map<string, number>();
  let left = pgCount * replicas;
  for (;;) {
    const open = live.filter((b) => !out.has(b.id));
    const sum = open.reduce((s, b) => s + b.weight, 0);
    const full = open.filter((b) => (left * b.weight) / sum > pgCount);
    if (full.length === 0) {
      for (const b of open) out.set(b.id, (left * b.weight) / sum);
      return out;
    }
    for (const b of full) out.set(b.id, pgCount);
    left -= full.length * pgCount;
  }
}

/** Whether integer loads, adding up to the total, can all be within ±tol of the shares. */
function achievable(shares: Map<string, number>, pgCount: number, replicas: number, tol: number): boolean {
  let lo = 0;
  let hi = 0;
  for (const s of shares.values()) {
    const a = Math.ceil(s * (1 - tol) - 1e-9);
    const b = Math.min(pgCount, Math.floor(s * (1 + tol) + 1e-9));
    if (a > b) return false;
    lo += a;
    hi += b;
  }
  return lo <= pgCount * replicas && pgCount * replicas <= hi;
}

function loadsOf(placement: readonly string[][]): Map<string, number> {
  const out = new Map<string, number>();
  for (const list of placement) for (const b of list) out.set(b, (out.get(b) ?? 0) + 1);
  return out;
}

/** Replicas that change bricks: per PG, the bricks of `after` that were not in `before`. */
function moves(before: readonly string[][], after: readonly string[][]): number {
  return after.reduce((n, list, pg) => n + list.filter((b) => !before[pg]!.includes(b)).length, 0);
}

function asCurrent(placement: readonly string[][], isr = (bricks: string[]) => bricks): PgAssignment[] {
  return placement.map((bricks, pg) => ({ pg, bricks, isr: isr(bricks), epoch: 1 }));
}

/** Bricks on hosts of their own: n of them, equal weights or 1..4. */
const ownHosts = (n: { min: number; max: number }) =>
  fc
    .record({
      prefix: fc.stringMatching(/^[a-z]{1,5}$/),
      weights: fc.oneof(
        fc.integer(n).map((k) => Array<number>(k).fill(1)),
        fc.array(fc.integer({ min: 1, max: 4 }), { minLength: n.min, maxLength: n.max }),
      ),
    })
    .map(({ prefix, weights }) =>
      weights.map((weight, i): BrickCandidate => ({
        id: `${prefix}-${i}`,
        host: `${prefix}-host-${i}`,
        weight,
      })),
    );

/** What the property tests measured, for the summary comments. */
const measured = {
  worstDeviation: 0,
  unachievable: 0,
  addRatio: 0,
  addOthers: 0,
  removeSlack: 0,
  removeSlackEqual: 0,
};

t.test('targetPlacement: every brick within ±10% of its share whenever loads can be', async (t) => {
  let cases = 0;
  check(
    t,
    fc.property(
      ownHosts({ min: 3, max: 10 }),
      fc.constantFrom(256, 1024),
      fc.integer({ min: 1, max: 3 }),
      (bricks, pgCount, replicas) => {
        cases++;
        const shares = shareOf(bricks, pgCount, replicas);
        const loads = loadsOf(targetPlacement(pgCount, replicas, bricks));
        const deviation = Math.max(
          ...bricks.map((b) => Math.abs((loads.get(b.id) ?? 0) - shares.get(b.id)!) / shares.get(b.id)!),
        );
        if (!achievable(shares, pgCount, replicas, 0.1)) {
          // Shares so small that integers cannot all be within 10%: then within what rounding
          // every load to the floor or ceiling of its share would give, less than 1 / smallest share.
          measured.unachievable++;
          return deviation < Math.max(0.1, 1 / Math.min(...shares.values()));
        }
        measured.worstDeviation = Math.max(measured.worstDeviation, deviation);
        return deviation <= 0.1;
      },
    ),
    { numRuns: 300 },
  );
  t.comment(
    `${cases} cases: worst deviation from share ${(100 * measured.worstDeviation).toFixed(2)}%; ` +
      `${measured.unachievable} where ±10% cannot be met by integers`,
  );
});

t.test('targetPlacement: what plain rendezvous hashing leaves uneven, bounded loads even out', async (t) => {
  const bricks = ['a', 'b', 'c'].map((id) => ({ id, host: id, weight: 1 }));
  const plain = loadsOf(computePlacement(256, bricks, 1).map((a) => a.bricks));
  t.ok(
    Math.max(...plain.values()) - Math.min(...plain.values()) > 10,
    `plain: ${[...plain.values()].join('/')}`,
  );
  const even = loadsOf(targetPlacement(256, 1, bricks));
  t.same([...even.values()].sort(), [85, 85, 86], `bounded: ${[...even.values()].join('/')}`);
  // A brick whose weight share is more than one replica per PG cannot get it: all three hold every PG.
  const skewed = (replicas: number, weights: number[], opts?: { maxOverloadFraction: number }) =>
    loadsOf(
      targetPlacement(
        1024,
        replicas,
        weights.map((weight, i) => ({ id: `b${i}`, host: `h${i}`, weight })),
        undefined,
        opts,
      ),
    );
  t.same([...skewed(3, [1, 1, 4]).values()], [1024, 1024, 1024]);
  // Shares 512/512/1024; with no slack at all, exactly those.
  t.same(Object.fromEntries(skewed(2, [1, 1, 2], { maxOverloadFraction: 0 })), {
    b0: 512,
    b1: 512,
    b2: 1024,
  });
  // Shares 1024/512/512/1024 for weights 4/1/1/4: the excess of the heavy ones goes to the light ones.
  t.same(Object.fromEntries(skewed(3, [4, 1, 1, 4], { maxOverloadFraction: 0 })), {
    b0: 1024,
    b1: 512,
    b2: 512,
    b3: 1024,
  });
});

t.test(
  'targetPlacement: distinct hosts while there are enough, as rankBricks when there are not',
  async (t) => {
    check(
      t,
      fc.property(
        brickSet(1, 12),
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 300 }),
        (bricks, r, pgCount) => {
          const replicas = Math.min(r, bricks.length);
          const hostOf = new Map(bricks.map((b) => [b.id, b.host]));
          const hosts = new Set(bricks.map((b) => b.host)).size;
          const map = targetPlacement(pgCount, replicas, bricks);
          return (
            map.length === pgCount &&
            map.every(
              (list) =>
                list.length === replicas &&
                new Set(list).size === replicas &&
                list.every((b) => hostOf.has(b)) &&
                new Set(list.map((b) => hostOf.get(b))).size === Math.min(replicas, hosts),
            )
          );
        },
      ),
      { numRuns: 200 },
    );
  },
);

t.test('targetPlacement without caps or current is rankBricks, for ids of any length', async (t) => {
  // Also checks the scorer's own xxh64 against rendezvousScore: every pairwise order of every PG.
  check(
    t,
    fc.property(
      fc.uniqueArray(
        fc.record({
          id: fc.string({
            unit: fc.constantFrom('a', 'z', '0', '-', 'é', '€', '😀'),
            minLength: 1,
            maxLength: 40,
          }),
          host: fc.constantFrom('h0', 'h1', 'h2', 'h3'),
          weight: fc.integer({ min: 1, max: 3 }),
        }),
        { minLength: 1, maxLength: 8, selector: (b) => b.id },
      ),
      fc.integer({ min: 1, max: 1200 }),
      (bricks, pgCount) => {
        const replicas = bricks.length;
        const map = targetPlacement(pgCount, replicas, bricks, undefined, { maxOverloadFraction: Infinity });
        return map.every((list, pg) => list.join() === rankBricks(pg, bricks, replicas).join());
      },
    ),
    { numRuns: 150 },
  );
});

t.test('targetPlacement: its own result back as current changes nothing', async (t) => {
  check(
    t,
    fc.property(
      brickSet(1, 10),
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 1, max: 512 }),
      fc.constantFrom(0, 0.05, 0.2),
      (bricks, r, pgCount, maxOverloadFraction) => {
        const replicas = Math.min(r, bricks.length);
        const first = targetPlacement(pgCount, replicas, bricks, undefined, { maxOverloadFraction });
        const again = targetPlacement(pgCount, replicas, bricks, asCurrent(first), { maxOverloadFraction });
        // And again with only the primary in sync.
        const third = targetPlacement(
          pgCount,
          replicas,
          bricks,
          asCurrent(first, (b) => b.slice(0, 1)),
          { maxOverloadFraction },
        );
        return (
          JSON.stringify(again) === JSON.stringify(first) && JSON.stringify(third) === JSON.stringify(first)
        );
      },
    ),
    { numRuns: 200 },
  );
});

t.test('targetPlacement: adding a brick moves at most 1.5x its share', async (t) => {
  check(
    t,
    fc.property(
      fc.stringMatching(/^[a-z]{1,5}$/),
      fc.integer({ min: 3, max: 10 }),
      fc.integer({ min: 1, max: 4 }),
      fc.constantFrom(256, 1024),
      fc.integer({ min: 1, max: 3 }),
      (prefix, n, w, pgCount, replicas) => {
        const bricks = [...Array(n).keys()].map((i) => ({ id: `${prefix}-${i}`, host: `h${i}`, weight: 1 }));
        const added = [...bricks, { id: 'new', host: 'h-new', weight: w }];
        const before = targetPlacement(pgCount, replicas, bricks);
        const after = targetPlacement(pgCount, replicas, added, asCurrent(before));
        const ideal = shareOf(added, pgCount, replicas).get('new')!;
        const moved = moves(before, after);
        const toOthers = after.reduce(
          (k, list, pg) => k + list.filter((b) => b !== 'new' && !before[pg]!.includes(b)).length,
          0,
        );
        measured.addRatio = Math.max(measured.addRatio, moved / ideal);
        measured.addOthers = Math.max(measured.addOthers, toOthers);
        return moved <= 1.5 * ideal;
      },
    ),
    { numRuns: 150 },
  );
  t.comment(
    `moves / ideal (the new brick's share): at most ${measured.addRatio.toFixed(3)}; ` +
      `replicas moved between old bricks: at most ${measured.addOthers}`,
  );
});

t.test('targetPlacement: removing a brick moves about what it held', async (t) => {
  check(
    t,
    fc.property(
      ownHosts({ min: 4, max: 10 }),
      fc.nat(),
      fc.constantFrom(256, 1024),
      fc.integer({ min: 1, max: 3 }),
      fc.boolean(),
      (bricks, pick, pgCount, replicas, zeroWeight) => {
        const gone = bricks[pick % bricks.length]!;
        const rest = zeroWeight
          ? bricks.map((b) => (b === gone ? { ...b, weight: 0 } : b))
          : bricks.filter((b) => b !== gone);
        if (rest.filter((b) => b.weight > 0).length < replicas) return true;
        const before = targetPlacement(pgCount, replicas, bricks);
        const after = targetPlacement(pgCount, replicas, rest, asCurrent(before));
        const held = loadsOf(before).get(gone.id) ?? 0;
        const slack = (moves(before, after) - held) / (pgCount * replicas);
        const equal = bricks.every((b) => b.weight === 1);
        measured[equal ? 'removeSlackEqual' : 'removeSlack'] = Math.max(
          measured[equal ? 'removeSlackEqual' : 'removeSlack'],
          slack,
        );
        // Measured: at most 0.8% of all replicas with equal weights, 3.5% with weights 1..4. The
        // latter where a survivor's share grows to every PG ([2,1,1,1,2] less a 1): it must join
        // PGs the removed brick was not in, and whom it displaces takes a replica back elsewhere.
        return loadsOf(after).get(gone.id) === undefined && slack >= 0 && slack <= (equal ? 0.015 : 0.05);
      },
    ),
    { numRuns: 200 },
  );
  t.comment(
    "moves beyond the removed brick's replicas, as a fraction of all replicas: at most " +
      `${(100 * measured.removeSlackEqual).toFixed(2)}% with equal weights, ${(100 * measured.removeSlack).toFixed(2)}% otherwise`,
  );
});

t.test('targetPlacement: from an uneven plain placement, only the excess moves', async (t) => {
  const bricks = [...Array(6).keys()].map((i) => ({ id: `b${i}`, host: `h${i}`, weight: 1 + (i % 2) }));
  const plain = computePlacement(1024, bricks, 3);
  const after = targetPlacement(1024, 3, bricks, plain);
  const shares = shareOf(bricks, 1024, 3);
  const loads = loadsOf(plain.map((a) => a.bricks));
  const excess = bricks.reduce(
    (n, b) => n + Math.max(0, loads.get(b.id)! - Math.floor(shares.get(b.id)! * 1.05)),
    0,
  );
  const moved = moves(
    plain.map((a) => a.bricks),
    after,
  );
  t.ok(moved <= excess + 0.02 * 3072, `moved ${moved}, excess over the band ${excess}`);
  t.ok(
    after.every((list, pg) => list[0] === plain[pg]!.bricks[0] || !list.includes(plain[pg]!.bricks[0]!)),
    'kept primaries stay first',
  );
});

t.test(
  'targetPlacement: the primary stays, else the best-ranked in-sync brick, else the best-ranked',
  async (t) => {
    check(
      t,
      fc.property(
        brickSet(3, 8),
        fc.integer({ min: 1, max: 3 }),
        fc.array(
          fc.record({
            bricks: fc.array(fc.nat({ max: 9 }), { maxLength: 4 }),
            isr: fc.array(fc.nat({ max: 9 }), { maxLength: 4 }),
          }),
          { minLength: 64, maxLength: 64 },
        ),
        (bricks, r, raw) => {
          const replicas = Math.min(r, bricks.length);
          // Current lists over the candidates and a few ids that are not (any more).
          const idOf = (i: number) => bricks[i]?.id ?? `gone-${i}`;
          const current = raw.map((c, pg): PgAssignment => ({
            pg,
            bricks: [...new Set(c.bricks.map(idOf))],
            isr: c.isr.map(idOf),
            epoch: 1,
          }));
          const map = targetPlacement(64, replicas, bricks, current);
          const weightOf = new Map(bricks.map((b) => [b.id, b.weight]));
          const best = (pg: number, ids: string[]) =>
            [...ids].sort(
              (a, b) =>
                rendezvousScore(pg, b, weightOf.get(b)!) - rendezvousScore(pg, a, weightOf.get(a)!) ||
                (a < b ? -1 : 1),
            )[0];
          return map.every((list, pg) => {
            const { bricks: was, isr } = current[pg]!;
            if (was[0] !== undefined && list.includes(was[0])) return list[0] === was[0];
            const inSync = list.filter((b) => isr.includes(b));
            return list[0] === best(pg, inSync.length > 0 ? inSync : list);
          });
        },
      ),
      { numRuns: 200 },
    );
  },
);

t.test('targetPlacement is deterministic, whatever the candidate order', async (t) => {
  check(
    t,
    fc.property(brickSet(3, 8), fc.integer({ min: 1, max: 3 }), fc.integer(), (bricks, replicas, seed) => {
      const key = (id: string) => xxh64(Buffer.from(id), BigInt(seed >>> 0));
      const shuffled = [...bricks].sort((a, b) => (key(a.id) < key(b.id) ? -1 : 1)).map((b) => ({ ...b }));
      const current = asCurrent(computePlacement(200, bricks, replicas).map((a) => a.bricks));
      const a = targetPlacement(200, replicas, bricks, current);
      const b = targetPlacement(200, replicas, shuffled, current);
      const c = targetPlacement(200, replicas, bricks, current);
      return JSON.stringify(a) === JSON.stringify(b) && JSON.stringify(a) === JSON.stringify(c);
    }),
    { numRuns: 100 },
  );
});

t.test('targetPlacement rejects what it cannot place', async (t) => {
  const three = ['a', 'b', 'c'].map((id) => ({ id, host: id, weight: 1 }));
  const rejects = (f: () => unknown, message: RegExp, what: string) =>
    t.throws(f, { name: 'RangeError', message }, what);
  rejects(() => targetPlacement(8, 4, three), /need 4 bricks with weight > 0, have 3/, 'too few bricks');
  rejects(
    () => targetPlacement(8, 3, [...three.slice(0, 2), { id: 'c', host: 'c', weight: 0 }]),
    /need 3 bricks with weight > 0, have 2/,
    'weight 0 does not count',
  );
  rejects(() => targetPlacement(0, 1, three), /pgCount must be a positive integer, got 0/, 'pgCount 0');
  rejects(() => targetPlacement(2.5, 1, three), /pgCount must be a positive integer/, 'fractional pgCount');
  rejects(() => targetPlacement(8, 0, three), /replicas must be a positive integer, got 0/, 'replicas 0');
  rejects(() => targetPlacement(8, 1.5, three), /replicas must be a positive integer/, 'fractional replicas');
  rejects(
    () => targetPlacement(8, 1, [...three, { id: 'd', host: 'd', weight: -1 }]),
    /brick d has weight -1; weights must be finite and >= 0/,
    'negative weight',
  );
  rejects(
    () => targetPlacement(8, 1, [...three, { id: 'd', host: 'd', weight: Infinity }]),
    /brick d has weight Infinity/,
    'infinite weight',
  );
  rejects(
    () => targetPlacement(8, 1, [...three, { id: 'd', host: 'd', weight: NaN }]),
    /brick d has weight NaN/,
    'NaN',
  );
  rejects(
    () => targetPlacement(8, 1, [...three, { id: 'a', host: 'x', weight: 1 }]),
    /brick a is a candidate twice/,
    'dup',
  );
  rejects(
    () => targetPlacement(8, 1, three, undefined, { maxOverloadFraction: -0.1 }),
    /maxOverloadFraction must be >= 0/,
    'negative overload',
  );
  t.same(
    loadsOf(targetPlacement(64, 2, [...three, { id: 'z', host: 'z', weight: 0 }])).get('z'),
    undefined,
    'weight 0 bricks get nothing',
  );
});

t.test('targetPlacement: 65536 PGs × 3 replicas over 50 bricks, no blow-up in time', async (t) => {
  const bricks = [...Array(50).keys()].map((i) => ({
    id: `brick-${i.toString(16).padStart(12, '0')}`,
    host: `host-${i}`,
    weight: 1 + (i % 3),
  }));
  // CPU time (this process), wall time in the message. About 0.5-0.8 s here: the bound catches a
  // complexity blow-up (a quadratic pass), not a slower machine; speed is the benchmark's business.
  const cpuMs = (since: NodeJS.CpuUsage) => {
    const { user, system } = process.cpuUsage(since);
    return (user + system) / 1000;
  };
  const cpu = process.cpuUsage();
  const wall = performance.now();
  const map = targetPlacement(65536, 3, bricks);
  const took = cpuMs(cpu);
  t.ok(took < 10_000, `took ${took.toFixed(0)} ms CPU, ${(performance.now() - wall).toFixed(0)} ms wall`);
  const shares = shareOf(bricks, 65536, 3);
  const loads = loadsOf(map);
  const worst = Math.max(
    ...bricks.map((b) => Math.abs(loads.get(b.id)! - shares.get(b.id)!) / shares.get(b.id)!),
  );
  t.ok(worst <= 0.05, `worst deviation from share ${(100 * worst).toFixed(3)}%`);
  const again = process.cpuUsage();
  t.same(
    targetPlacement(65536, 3, bricks, asCurrent(map)),
    map,
    `a fixed point (${cpuMs(again).toFixed(0)} ms CPU)`,
  );
});
