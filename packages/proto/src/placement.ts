import { xxh64 } from './hashing.js';

/**
 * Placement math: PG → ordered brick list by weighted rendezvous hashing
 * (highest random weight). Pure: the same inputs give the same map on every
 * node. Changing the brick set moves only the PGs whose winners changed.
 */
export interface BrickCandidate {
  id: string;
  /** Relative capacity; a brick with weight 2 gets about twice the PGs. */
  weight: number;
  /** Failure domain: replicas of a PG go to distinct hosts while possible. */
  host: string;
}

export interface PgAssignment {
  pg: number;
  /** The PG's replicas, ordered; bricks[0] is the primary. */
  bricks: string[];
  /**
   * The in-sync set: the replicas that hold every acknowledged op of the PG
   * (always includes the primary). A replica outside it is catching up.
   */
  isr: string[];
  /** Bumped by every change of bricks or isr (compare-and-swap in etcd). */
  epoch: number;
}

/** Score of brick for pg: -weight / ln(u), u uniform in (0,1) from xxhash64(pg, id). */
export function rendezvousScore(pg: number, brickId: string, weight: number): number {
  const key = Buffer.from(`${pg}\u0000${brickId}`);
  const h = xxh64(key, 0x64756e6978n); // seed "dunix"
  // 53 high bits → u in (0, 1): never 0 (ln 0) nor 1 (ln 1 = 0).
  const u = (Number(h >> 11n) + 0.5) / 2 ** 53;
  return -weight / Math.log(u);
}

/** Ordered bricks for one PG: highest score first, distinct hosts first. */
export function rankBricks(pg: number, bricks: readonly BrickCandidate[], replicas: number): string[] {
  const ranked = bricks
    .filter((b) => b.weight > 0)
    .map((b) => ({ b, score: rendezvousScore(pg, b.id, b.weight) }))
    .sort((x, y) => y.score - x.score || (x.b.id < y.b.id ? -1 : 1));
  const chosen: string[] = [];
  const hosts = new Set<string>();
  for (const { b } of ranked) {
    if (chosen.length === replicas) break;
    if (!hosts.has(b.host)) {
      chosen.push(b.id);
      hosts.add(b.host);
    }
  }
  // Fewer hosts than replicas: fill from the remaining bricks in rank order.
  for (const { b } of ranked) {
    if (chosen.length === replicas) break;
    if (!chosen.includes(b.id)) chosen.push(b.id);
  }
  return chosen;
}

/**
 * The placement map for a volume. `previous` keeps epochs: a PG whose brick
 * list is unchanged keeps its epoch, a changed one gets epoch + 1.
 */
export function computePlacement(
  pgCount: number,
  bricks: readonly BrickCandidate[],
  replicas: number,
  previous?: readonly PgAssignment[],
): PgAssignment[] {
  if (bricks.filter((b) => b.weight > 0).length < replicas) {
    throw new RangeError(`need ${replicas} bricks with weight > 0, have ${bricks.length}`);
  }
  const out: PgAssignment[] = [];
  for (let pg = 0; pg < pgCount; pg++) {
    const list = rankBricks(pg, bricks, replicas);
    const prev = previous?.[pg];
    const same = prev && prev.bricks.length === list.length && prev.bricks.every((b, i) => b === list[i]);
    out.push(
      prev && same
        ? { pg, bricks: list, isr: [...prev.isr], epoch: prev.epoch }
        : { pg, bricks: list, isr: [...list], epoch: prev ? prev.epoch + 1 : 1 },
    );
  }
  return out;
}

/**
 * The placement a rebalance converges to: for every PG, the `replicas` bricks
 * that should hold it. Each returned list is ordered: the preferred primary first.
 *
 * Bounded-load weighted rendezvous hashing. Plain rendezvous hashing (above)
 * is balanced only in expectation: with 256 PGs three equal bricks get e.g.
 * 79/80/97 PGs, and the busiest brick sets the pace of the volume. Here each
 * brick has a share of the pgCount × replicas replicas by weight (water-
 * filled: no brick holds more than one replica of a PG, nor, while there are
 * at least `replicas` hosts, does a host), an integer target near it (the
 * targets add up to the total and stray from the shares by the smallest
 * largest fraction possible), and a band: share × (1 ± maxOverloadFraction),
 * rounded inwards, widened to hold the target. The band is the slack that
 * saves moves; the target is where new replicas go. Then:
 *
 * 1. Keep: each PG keeps its current bricks that are still candidates, as
 *    far as the failure-domain rule allows, whatever their load for now.
 * 2. Fill: the free slots, PG by PG in ascending order, go to the
 *    highest-ranked brick (rendezvousScore) on an unused host that is below
 *    its target (first one whose target is every PG: a slot it skips, it
 *    has to take from another brick later); failing that, below the top of
 *    its band (the bounded load: rankBricks would pile onto the bricks that
 *    happen to score high); failing that, the failure domain wins over the
 *    band. With no `current` this is the whole placement.
 * 3. Balance: a brick above its band hands the PGs where it scores lowest
 *    (its primaries last) to the bricks with room that are least loaded for
 *    their share; a brick below its band takes PGs over from bricks above
 *    their share (primaries last). Each move shrinks the bricks' distance to
 *    their bands, so this ends; loads within their bands are left alone, so
 *    adding a brick moves about its share and removing one about what it
 *    held. It ends when no allowed move is left: so the result fed back as
 *    `current` comes back unchanged (a fixed point).
 * 4. Order: the current primary stays first if it is still in the set (no
 *    leader change); otherwise the highest-ranked brick of the in-sync set
 *    (no catch-up before it can lead); otherwise the highest-ranked. The rest
 *    keep their current order, new bricks after them in the order chosen.
 *
 * With maxOverloadFraction = Infinity there are no bounds (nor targets): then
 * without `current` this is rankBricks for every PG. Pure and deterministic:
 * the candidates' order does not matter, and there is no randomness.
 */
export function targetPlacement(
  pgCount: number,
  replicas: number,
  candidates: readonly BrickCandidate[],
  current?: readonly PgAssignment[],
  opts?: { maxOverloadFraction?: number },
): string[][] {
  const maxOverload = opts?.maxOverloadFraction ?? 0.05;
  validateTargetInputs(pgCount, replicas, candidates, maxOverload);
  const plan = new TargetPlan(pgCount, replicas, candidates, maxOverload);
  plan.keep(current);
  plan.fill();
  plan.balance();
  return plan.ordered(current);
}

function validateTargetInputs(
  pgCount: number,
  replicas: number,
  candidates: readonly BrickCandidate[],
  maxOverload: number,
): void {
  if (!Number.isSafeInteger(pgCount) || pgCount < 1) {
    throw new RangeError(`pgCount must be a positive integer, got ${pgCount}`);
  }
  if (!Number.isSafeInteger(replicas) || replicas < 1) {
    throw new RangeError(`replicas must be a positive integer, got ${replicas}`);
  }
  if (Number.isNaN(maxOverload) || maxOverload < 0) {
    throw new RangeError(`maxOverloadFraction must be >= 0, got ${maxOverload}`);
  }
  const seen = new Set<string>();
  for (const b of candidates) {
    if (seen.has(b.id)) throw new RangeError(`brick ${b.id} is a candidate twice`);
    seen.add(b.id);
    if (!Number.isFinite(b.weight) || b.weight < 0) {
      throw new RangeError(`brick ${b.id} has weight ${b.weight}; weights must be finite and >= 0`);
    }
  }
  const usable = candidates.filter((b) => b.weight > 0).length;
  if (usable < replicas) {
    throw new RangeError(`need ${replicas} bricks with weight > 0, have ${usable}`);
  }
}

/** Working state of targetPlacement; bricks are indices into `ids` (sorted, so input order does not matter). */
class TargetPlan {
  private readonly ids: string[];
  private readonly host: Int32Array;
  private readonly share: Float64Array;
  /** The integer load each brick aims at, and the band it may stray in before replicas move. */
  private readonly target: Float64Array;
  private readonly lo: Float64Array;
  private readonly hi: Float64Array;
  private readonly load: Int32Array;
  /** Distinct hosts every PG must span: min(replicas, hosts). */
  private readonly spread: number;
  private readonly scorer: Scorer;
  /** Per PG, its bricks: kept ones in current order, then new ones in the order chosen. */
  private readonly sets: number[][];
  /** Per PG, the current primary while it is still in the set, else -1. */
  private readonly primary: Int32Array;
  /** rendezvousScore of the brick at sets[pg][i], at [pg * replicas + i]; NaN until known. */
  private readonly memberScore: Float64Array;
  /** Scratch for best(): the bricks and hosts of the PG at hand are marked with `stamp`. */
  private readonly brickMark: Int32Array;
  private readonly hostMark: Int32Array;
  private stamp = 0;

  constructor(
    private readonly pgCount: number,
    private readonly replicas: number,
    candidates: readonly BrickCandidate[],
    maxOverload: number,
  ) {
    const bricks = candidates.filter((b) => b.weight > 0).sort((x, y) => (x.id < y.id ? -1 : 1));
    const n = bricks.length;
    this.ids = bricks.map((b) => b.id);
    const hosts = [...new Set(bricks.map((b) => b.host))];
    this.host = Int32Array.from(bricks, (b) => hosts.indexOf(b.host));
    this.spread = Math.min(replicas, hosts.length);
    this.share = Float64Array.from(fairShares(bricks, this.host, hosts.length, pgCount, replicas));
    const target = integerTargets(this.share, pgCount * replicas, pgCount);
    // maxOverloadFraction Infinity turns the bounds off (plain rendezvous hashing), targets included.
    this.target = Float64Array.from(target, (t) => (maxOverload === Infinity ? Infinity : t));
    // 1e-9: a share × (1 ± f) that is an integer but for rounding errors counts as that integer.
    this.lo = this.share.map((s, b) => Math.min(target[b]!, Math.ceil(s * (1 - maxOverload) - 1e-9)));
    this.hi = this.share.map((s, b) => Math.max(target[b]!, Math.floor(s * (1 + maxOverload) + 1e-9)));
    this.load = new Int32Array(n);
    this.scorer = new Scorer(
      this.ids,
      bricks.map((b) => b.weight),
    );
    this.sets = Array.from({ length: pgCount }, () => []);
    this.primary = new Int32Array(pgCount).fill(-1);
    this.memberScore = new Float64Array(pgCount * replicas).fill(NaN);
    this.brickMark = new Int32Array(n);
    this.hostMark = new Int32Array(hosts.length);
  }

  /** Step 1: keep the current bricks that are still candidates, within the failure-domain rule. */
  keep(current: readonly PgAssignment[] | undefined): void {
    if (!current) return;
    const index = new Map(this.ids.map((id, i) => [id, i]));
    for (let pg = 0; pg < this.pgCount; pg++) {
      const set = this.sets[pg]!;
      for (const id of current[pg]?.bricks ?? []) {
        const b = index.get(id);
        if (b !== undefined && set.length < this.replicas && this.mayAdd(set, b)) this.add(pg, b);
      }
      if (set.length > 0 && set[0] === index.get(current[pg]!.bricks[0]!)) this.primary[pg] = set[0]!;
    }
  }

  /**
   * Step 2: each free slot to the best brick (see best()), on an unused host
   * until the PG spans enough hosts (as rankBricks), then on any host.
   */
  fill(): void {
    for (let pg = 0; pg < this.pgCount; pg++) {
      const set = this.sets[pg]!;
      if (set.length === this.replicas) continue;
      const scores = this.scorer.scores(pg);
      while (set.length < this.replicas && this.hostCount(set) < this.spread) {
        this.add(pg, this.best(set, scores, true), scores);
      }
      while (set.length < this.replicas) this.add(pg, this.best(set, scores, false), scores);
    }
  }

  /**
   * The brick not in the set (on an unused host if newHost) of the highest
   * tier, highest-ranked within it. Ties go to the smaller id, as in
   * rankBricks (bricks are sorted by id).
   */
  private best(set: number[], scores: Float64Array, newHost: boolean): number {
    const stamp = ++this.stamp;
    for (const b of set) {
      this.brickMark[b] = stamp;
      this.hostMark[this.host[b]!] = stamp;
    }
    let best = -1;
    let bestTier = -1;
    for (let b = 0; b < scores.length; b++) {
      if (this.brickMark[b] === stamp || (newHost && this.hostMark[this.host[b]!] === stamp)) continue;
      const tier = this.tier(b);
      if (tier > bestTier || (tier === bestTier && scores[b]! > scores[best]!)) {
        best = b;
        bestTier = tier;
      }
    }
    // There is always one: an unused host while the PG spans too few, a brick not in it while it is short.
    if (best < 0) throw new Error('targetPlacement: no brick may fill a slot');
    return best;
  }

  /**
   * 3: below a target of every PG (a slot it skips now, it has to take from
   * another brick later); 2: below its target; 1: below the top of its band;
   * 0: full.
   */
  private tier(b: number): number {
    const load = this.load[b]!;
    if (load < this.target[b]!) return this.target[b] === this.pgCount ? 3 : 2;
    return load < this.hi[b]! ? 1 : 0;
  }

  /** Step 3: move replicas until every brick is in its band or no allowed move is left. */
  balance(): void {
    for (let moved = true; moved;) {
      moved = false;
      for (let b = 0; b < this.ids.length; b++) {
        if (this.load[b]! > this.hi[b]!) moved = this.shed(b) || moved;
        else if (this.load[b]! < this.lo[b]!) moved = this.gain(b) || moved;
      }
    }
  }

  /** Hands PGs of an overloaded brick, where it ranks lowest and is not primary first, to bricks with room. */
  private shed(m: number): boolean {
    const pgs: { pg: number; primary: boolean; score: number }[] = [];
    for (let pg = 0; pg < this.pgCount; pg++) {
      if (this.sets[pg]!.includes(m))
        pgs.push({ pg, primary: this.primary[pg] === m, score: this.scorer.score(pg, m) });
    }
    // Primaries last: moving one changes the PG's leader.
    pgs.sort((x, y) => Number(x.primary) - Number(y.primary) || x.score - y.score || x.pg - y.pg);
    let moved = false;
    for (const { pg } of pgs) {
      if (this.load[m]! <= this.hi[m]!) break;
      const u = this.leastLoaded(pg, m);
      if (u >= 0) {
        this.swap(pg, m, u);
        moved = true;
      }
    }
    return moved;
  }

  /** The brick with room and the lowest load relative to its share that may replace m in pg, or -1. */
  private leastLoaded(pg: number, m: number): number {
    const set = this.sets[pg]!;
    let best = -1;
    for (let u = 0; u < this.ids.length; u++) {
      if (this.load[u]! + 1 > this.hi[u]! || !this.maySwap(set, m, u)) continue;
      if (best < 0 || this.load[u]! / this.share[u]! < this.load[best]! / this.share[best]!) best = u;
    }
    return best;
  }

  /**
   * Takes PGs for an underloaded brick. Donors in order of preference: bricks
   * above their share before bricks merely above the bottom of their band,
   * and replicas that are not the PG's primary before primaries.
   */
  private gain(u: number): boolean {
    let moved = false;
    for (const [aboveShare, primaries] of [
      [true, false],
      [true, true],
      [false, false],
      [false, true],
    ] as const) {
      for (let pg = 0; pg < this.pgCount && this.load[u]! < this.lo[u]!; pg++) {
        const m = this.mostLoaded(pg, u, aboveShare, primaries);
        if (m >= 0) {
          this.swap(pg, m, u);
          moved = true;
        }
      }
    }
    return moved;
  }

  /** The member of pg with the highest load relative to its share that u may replace, or -1. */
  private mostLoaded(pg: number, u: number, aboveShare: boolean, primaries: boolean): number {
    const set = this.sets[pg]!;
    let best = -1;
    for (const m of set) {
      // Never below the band: m would take one back.
      if (this.load[m]! - 1 < this.lo[m]! || (aboveShare && this.load[m]! <= this.share[m]!)) continue;
      if ((!primaries && m === this.primary[pg]) || !this.maySwap(set, m, u)) continue;
      if (best < 0 || this.load[m]! / this.share[m]! > this.load[best]! / this.share[best]!) best = m;
    }
    return best;
  }

  /** Step 4: the lists, preferred primary first. */
  ordered(current: readonly PgAssignment[] | undefined): string[][] {
    return this.sets.map((set, pg) => {
      const now = current?.[pg];
      // Still in the set (kept, or moved out and back by balancing): the primary stays.
      let first = set.find((b) => this.ids[b] === now?.bricks[0]);
      if (first === undefined) {
        const inSync = set.filter((b) => now?.isr.includes(this.ids[b]!));
        first = this.highestRanked(pg, inSync.length > 0 ? inSync : set);
      }
      return [first, ...set.filter((b) => b !== first)].map((b) => this.ids[b]!);
    });
  }

  private highestRanked(pg: number, bricks: number[]): number {
    let best = -1;
    let bestScore = 0;
    for (const b of bricks) {
      const s = this.memberRank(pg, b);
      if (best < 0 || s > bestScore || (s === bestScore && b < best)) [best, bestScore] = [b, s];
    }
    return best;
  }

  private memberRank(pg: number, b: number): number {
    const at = pg * this.replicas + this.sets[pg]!.indexOf(b);
    if (Number.isNaN(this.memberScore[at])) this.memberScore[at] = this.scorer.score(pg, b);
    return this.memberScore[at]!;
  }

  /** Adding b keeps enough free slots for the hosts the PG still has to span. */
  private mayAdd(set: number[], b: number): boolean {
    if (set.includes(b)) return false;
    if (!this.hostUsed(set, this.host[b]!)) return true;
    return this.spread - this.hostCount(set) <= this.replicas - set.length - 1;
  }

  /** u may replace m: not in the PG yet, and the PG still spans enough hosts. */
  private maySwap(set: number[], m: number, u: number): boolean {
    return !set.includes(u) && this.hostCount(set, m, u) >= this.spread;
  }

  private hostUsed(set: number[], host: number): boolean {
    for (const b of set) if (this.host[b] === host) return true;
    return false;
  }

  /** Distinct hosts of the set, with m replaced by u if given. */
  private hostCount(set: number[], m = -1, u = -1): number {
    const hostAt = (i: number) => this.host[set[i] === m ? u : set[i]!]!;
    let count = 0;
    for (let i = 0; i < set.length; i++) {
      let j = 0;
      while (j < i && hostAt(j) !== hostAt(i)) j++;
      if (j === i) count++;
    }
    return count;
  }

  private add(pg: number, b: number, scores?: Float64Array): void {
    const set = this.sets[pg]!;
    if (scores) this.memberScore[pg * this.replicas + set.length] = scores[b]!;
    set.push(b);
    this.load[b]!++;
  }

  private swap(pg: number, m: number, u: number): void {
    const set = this.sets[pg]!;
    const at = set.indexOf(m);
    set[at] = u;
    this.memberScore[pg * this.replicas + at] = NaN;
    this.load[m]!--;
    this.load[u]!++;
    if (this.primary[pg] === m) this.primary[pg] = -1;
  }
}

/**
 * Each brick's share of the pgCount × replicas replicas, by weight, where no
 * brick can hold more than pgCount (one replica per PG) and, while there are
 * at least `replicas` hosts, no host either: the excess of a capped one goes
 * to the others by weight (water-filling).
 */
function fairShares(
  bricks: readonly BrickCandidate[],
  host: Int32Array,
  hostCount: number,
  pgCount: number,
  replicas: number,
): number[] {
  const total = pgCount * replicas;
  if (hostCount < replicas) {
    return waterFill(
      bricks.map((b) => b.weight),
      total,
      pgCount,
    ).map(snap);
  }
  const hostWeight = new Array<number>(hostCount).fill(0);
  bricks.forEach((b, i) => (hostWeight[host[i]!]! += b.weight));
  const hostShare = waterFill(hostWeight, total, pgCount);
  return bricks.map((b, i) => snap((hostShare[host[i]!]! * b.weight) / hostWeight[host[i]!]!));
}

/** An integer but for floating-point rounding is that integer (so 255.99999999 has no fraction to apportion). */
function snap(x: number): number {
  return Math.abs(x - Math.round(x)) < 1e-9 ? Math.round(x) : x;
}

/**
 * Integer loads adding up to total that make the largest deviation from the
 * shares, relative to the share, as small as it can be (so all are within
 * ±x of their shares whenever integer loads can be at all), and within that
 * as near the shares as the total allows. The x is found by bisection: with
 * every load within ±x, brick b may hold ceil(s(1-x))..floor(s(1+x)) of at
 * most cap, and some loads fit iff no range is empty and the total lies
 * between the sums of their ends.
 */
function integerTargets(share: Float64Array, total: number, cap: number): number[] {
  // 1e-9: an end that is an integer but for rounding errors counts as that integer.
  const range = (s: number, x: number) => ({
    lo: Math.max(0, Math.ceil(s * (1 - x) - 1e-9)),
    hi: Math.min(cap, Math.floor(s * (1 + x) + 1e-9)),
  });
  const fits = (x: number) => {
    const ranges = Array.from(share, (s) => range(s, x));
    const sum = (end: 'lo' | 'hi') => ranges.reduce((n, r) => n + r[end], 0);
    return ranges.every((r) => r.lo <= r.hi) && sum('lo') <= total && total <= sum('hi');
  };
  let bad = 0;
  let good = 1;
  while (!fits(good)) good *= 2;
  for (let i = 0; i < 60; i++) {
    const mid = (bad + good) / 2;
    if (fits(mid)) good = mid;
    else bad = mid;
  }
  const ranges = Array.from(share, (s) => range(s, good));
  const target = Array.from(share, (s, b) => Math.min(ranges[b]!.hi, Math.max(ranges[b]!.lo, Math.round(s))));
  // Rounding missed the total by a few: step the loads furthest from their shares, in the direction of the total.
  for (let sum = target.reduce((n, t) => n + t, 0); sum !== total;) {
    const dir = sum < total ? 1 : -1;
    let best = -1;
    for (let b = 0; b < target.length; b++) {
      const t = target[b]! + dir;
      if (t < ranges[b]!.lo || t > ranges[b]!.hi) continue;
      const gap = (b: number) => (dir * (share[b]! - target[b]!)) / share[b]!;
      if (best < 0 || gap(b) > gap(best)) best = b;
    }
    target[best]! += dir;
    sum += dir;
  }
  return target;
}

/** Splits total by weight with no part above cap (sum of caps >= total). */
function waterFill(weights: readonly number[], total: number, cap: number): number[] {
  const out = new Array<number>(weights.length).fill(cap);
  let open = weights.map((_w, i) => i);
  let left = total;
  for (;;) {
    const sum = open.reduce((s, i) => s + weights[i]!, 0);
    const over = open.filter((i) => (left * weights[i]!) / sum > cap);
    if (over.length === 0) {
      for (const i of open) out[i] = (left * weights[i]!) / sum;
      return out;
    }
    left -= over.length * cap;
    open = open.filter((i) => !over.includes(i));
  }
}

/**
 * rendezvousScore for many (pg, brick) pairs. A fresh placement of 65536 PGs
 * over 50 bricks scores 3.3 million pairs: through the wasm xxhash, with a
 * Buffer and a BigInt per call, that alone takes ~1.5 s. So the xxh64 of the
 * key "<pg>\0<id>" is computed here in plain JavaScript (same bits), and for
 * a row of bricks it reuses what does not depend on the PG: xxh64 consumes a
 * short key in steps of 8, 4 and 1 bytes, each xoring a value derived from
 * its bytes into a running state. The values of the steps within the id are
 * the same for every PG with as many digits, and the state after the steps
 * that read the "<pg>\0" prefix is the same for every brick with an equally
 * long id that starts with the same bytes. About 5x faster in all.
 */
class Scorer {
  private readonly idBytes: Buffer[];
  private readonly row: Float64Array;
  /** Scratch for one key: room for the prefix and the longest id. */
  private readonly key: Uint8Array;
  private prefixLength = 0;
  /** Per brick, for the current prefix length; undefined for keys too long for the short path. */
  private plans: (KeyPlan | undefined)[] = [];
  /** Per group of plans: a brick of it, and the state after the prefix steps for the current PG. */
  private groupBrick: number[] = [];
  private groupState = new Int32Array(0);

  constructor(
    ids: readonly string[],
    private readonly weights: readonly number[],
  ) {
    this.idBytes = ids.map((id) => Buffer.from(id));
    this.key = new Uint8Array(PREFIX_ROOM + Math.max(...this.idBytes.map((id) => id.length)));
    this.row = new Float64Array(ids.length);
  }

  /** One score, as rendezvousScore. */
  score(pg: number, b: number): number {
    const length = this.writeKey(pg, b);
    return -this.weights[b]! / Math.log(xxh64Unit(this.key, 0, length));
  }

  /** Scores of every brick for pg; the array is reused by the next call. */
  scores(pg: number): Float64Array {
    if (String(pg).length + 1 !== this.prefixLength) this.plan(String(pg).length + 1);
    this.groupBrick.forEach((b, g) => {
      const length = this.writeKey(pg, b);
      stepsState(this.key, 0, this.plans[b]!.fresh, length, S5H, S5L);
      this.groupState[2 * g] = out64[0]!;
      this.groupState[2 * g + 1] = out64[1]!;
    });
    for (let b = 0; b < this.row.length; b++) {
      const plan = this.plans[b];
      const u = plan
        ? planUnit(plan, this.groupState[2 * plan.group]!, this.groupState[2 * plan.group + 1]!)
        : xxh64Unit(this.key, 0, this.writeKey(pg, b));
      this.row[b] = -this.weights[b]! / Math.log(u);
    }
    return this.row;
  }

  /** Writes "<pg>\0<id>" at the start of this.key; returns its length. */
  private writeKey(pg: number, b: number): number {
    const digits = String(pg);
    for (let i = 0; i < digits.length; i++) this.key[i] = digits.charCodeAt(i);
    this.key[digits.length] = 0;
    const id = this.idBytes[b]!;
    this.key.set(id, digits.length + 1);
    return digits.length + 1 + id.length;
  }

  /** Plans for keys with a prefix of `prefixLength` bytes. */
  private plan(prefixLength: number): void {
    this.prefixLength = prefixLength;
    const groups = new Map<string, number>();
    this.groupBrick = [];
    this.plans = this.idBytes.map((id, b) => {
      const length = prefixLength + id.length;
      if (length >= 32) return undefined;
      const key = new Uint8Array(length);
      key.set(id, prefixLength);
      const kinds: number[] = [];
      const values: number[] = [];
      let fresh = 0;
      for (let i = 0; i < length; i += kinds[kinds.length - 1]!) {
        const kind = stepKind(i, length);
        kinds.push(kind);
        if (i < prefixLength) fresh++;
        stepValue(kind, key, i);
        values.push(out64[0]!, out64[1]!);
      }
      const freshEnd = kinds.slice(0, fresh).reduce((n, k) => n + k, 0);
      const groupKey = `${length}:${id.subarray(0, freshEnd - prefixLength).toString('hex')}`;
      if (!groups.has(groupKey)) {
        groups.set(groupKey, groups.size);
        this.groupBrick.push(b);
      }
      return {
        kinds: Uint8Array.from(kinds),
        values: Int32Array.from(values),
        fresh,
        group: groups.get(groupKey)!,
      };
    });
    this.groupState = new Int32Array(2 * groups.size);
  }
}

/**
 * A key's xxh64 steps (kinds 8, 4, 1 bytes) and the value each xors into the
 * state; the first `fresh` steps read the PG prefix, their values are unused.
 */
interface KeyPlan {
  kinds: Uint8Array;
  values: Int32Array;
  fresh: number;
  /** Keys of one group have the same state after the fresh steps. */
  group: number;
}

/** Room for the decimal digits of any safe integer and the NUL after them. */
const PREFIX_ROOM = 17;

/*
 * xxh64 in plain JavaScript, for rendezvousScore's hash. A 64-bit word is a
 * (hi, lo) pair of int32s; helpers return the high word and leave the low one
 * to a Math.imul or `| 0` at the call site, or write both to out64, so
 * nothing is allocated per hash.
 */
const word = (x: bigint): [number, number] => [Number(x >> 32n) | 0, Number(x & 0xffffffffn) | 0];
const P1n = 0x9e3779b185ebca87n;
const P2n = 0xc2b2ae3d27d4eb4fn;
const SEEDn = 0x64756e6978n; // "dunix", as rendezvousScore
const mask64 = (x: bigint) => x & 0xffffffffffffffffn;
const [P1H, P1L] = word(P1n);
const [P2H, P2L] = word(P2n);
const [P3H, P3L] = word(0x165667b19e3779f9n);
const [P4H, P4L] = word(0x85ebca77c2b2ae63n);
const [P5H, P5L] = word(0x27d4eb2f165667c5n);
const [SH, SL] = word(SEEDn);
const [S5H, S5L] = word(mask64(SEEDn + 0x27d4eb2f165667c5n));
const [V1H, V1L] = word(mask64(SEEDn + P1n + P2n));
const [V2H, V2L] = word(mask64(SEEDn + P2n));
const [V4H, V4L] = word(mask64(SEEDn - P1n));

/** Two-word results: [hi, lo]. */
const out64 = new Int32Array(2);

/**
 * High word of (ah:al) × (bh:bl) mod 2^64; the low word is Math.imul(al, bl).
 * The high word of al × bl comes from the double product: it is off by at
 * most 2^12 from the exact one, so subtracting the exact low word and
 * rounding gives it exactly. Short, so V8 inlines it everywhere.
 */
function mulHi(ah: number, al: number, bh: number, bl: number): number {
  const carry = Math.round(((al >>> 0) * (bl >>> 0) - (Math.imul(al, bl) >>> 0)) * 2 ** -32);
  return (carry + Math.imul(ah, bl) + Math.imul(al, bh)) | 0;
}

/** High word of (ah:al) + (bh:bl) mod 2^64; the low word is (al + bl) | 0. */
function addHi(ah: number, al: number, bh: number, bl: number): number {
  return (ah + bh + ((al >>> 0) + (bl >>> 0) > 0xffffffff ? 1 : 0)) | 0;
}

/** Rotations left by r in 1..31. */
const rotlHi = (h: number, l: number, r: number) => (h << r) | (l >>> (32 - r));
const rotlLo = (h: number, l: number, r: number) => (l << r) | (h >>> (32 - r));

const u32 = (b: Uint8Array, i: number) => b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24);

/** xxh64's round: (acc + input × P2) rotl 31 × P1, into out64. */
function round(accH: number, accL: number, inH: number, inL: number): void {
  const ph = mulHi(inH, inL, P2H, P2L);
  const pl = Math.imul(inL, P2L);
  const sh = addHi(accH, accL, ph, pl);
  const sl = (accL + pl) | 0;
  const rh = rotlHi(sh, sl, 31);
  const rl = rotlLo(sh, sl, 31);
  out64[0] = mulHi(rh, rl, P1H, P1L);
  out64[1] = Math.imul(rl, P1L);
}

/** The kind of the short-input step at offset i of a key: 8, 4 or 1 bytes. */
function stepKind(i: number, length: number): number {
  return i + 8 <= length ? 8 : i + 4 <= length ? 4 : 1;
}

/** The value a step xors into the state, into out64: round(0, lane), word × P1 or byte × P5. */
function stepValue(kind: number, b: Uint8Array, i: number): void {
  if (kind === 8) return round(0, 0, u32(b, i + 4), u32(b, i));
  const x = kind === 4 ? u32(b, i) : b[i]!;
  out64[0] = mulHi(0, x, kind === 4 ? P1H : P5H, kind === 4 ? P1L : P5L);
  out64[1] = Math.imul(x, kind === 4 ? P1L : P5L);
}

/**
 * A step: h = rotl(h ^ value, 27) × P1 + P4 (lane), rotl(.., 23) × P2 + P3
 * (word) or rotl(.., 11) × P1 (byte). stepHi gives the high word of the new
 * state, stepLo the low one: two small functions V8 inlines, rather than one
 * writing both to memory.
 */
function stepHi(kind: number, hh: number, hl: number, vh: number, vl: number): number {
  const r = kind === 8 ? 27 : kind === 4 ? 23 : 11;
  const th = rotlHi(hh ^ vh, hl ^ vl, r);
  const tl = rotlLo(hh ^ vh, hl ^ vl, r);
  const ph = mulHi(th, tl, kind === 4 ? P2H : P1H, kind === 4 ? P2L : P1L);
  if (kind === 1) return ph;
  return addHi(ph, Math.imul(tl, kind === 4 ? P2L : P1L), kind === 4 ? P3H : P4H, kind === 4 ? P3L : P4L);
}

function stepLo(kind: number, hh: number, hl: number, vh: number, vl: number): number {
  const r = kind === 8 ? 27 : kind === 4 ? 23 : 11;
  const pl = Math.imul(rotlLo(hh ^ vh, hl ^ vl, r), kind === 4 ? P2L : P1L);
  return kind === 1 ? pl : (pl + (kind === 4 ? P3L : P4L)) | 0;
}

/** State after the first `count` short-input steps of b[start, end), from state h (before adding the length); into out64. */
function stepsState(b: Uint8Array, start: number, count: number, end: number, hh: number, hl: number): void {
  const length = end - start;
  let th = addHi(hh, hl, 0, length);
  let tl = (hl + length) | 0;
  for (let i = start, n = 0; n < count && i < end; n++) {
    const kind = stepKind(i - start, length);
    stepValue(kind, b, i);
    const nh = stepHi(kind, th, tl, out64[0]!, out64[1]!);
    tl = stepLo(kind, th, tl, out64[0]!, out64[1]!);
    th = nh;
    i += kind;
  }
  out64[0] = th;
  out64[1] = tl;
}

/** Finishes a planned key from the state after its fresh steps: the remaining steps, with their values known. */
function planUnit(plan: KeyPlan, hh: number, hl: number): number {
  for (let s = plan.fresh; s < plan.kinds.length; s++) {
    const kind = plan.kinds[s]!;
    const vh = plan.values[2 * s]!;
    const vl = plan.values[2 * s + 1]!;
    const nh = stepHi(kind, hh, hl, vh, vl);
    hl = stepLo(kind, hh, hl, vh, vl);
    hh = nh;
  }
  return avalancheUnit(hh, hl);
}

/** xxh64's 32-byte stripes of b[start, end) (at least one), merged into out64; returns where the tail starts. */
function stripes(b: Uint8Array, start: number, end: number): number {
  const v = [V1H, V1L, V2H, V2L, SH, SL, V4H, V4L];
  let i = start;
  for (; i + 32 <= end; i += 32) {
    for (let k = 0; k < 4; k++) {
      round(v[2 * k]!, v[2 * k + 1]!, u32(b, i + 8 * k + 4), u32(b, i + 8 * k));
      v[2 * k] = out64[0]!;
      v[2 * k + 1] = out64[1]!;
    }
  }
  let hh = 0;
  let hl = 0;
  [1, 7, 12, 18].forEach((r, k) => {
    const rl = rotlLo(v[2 * k]!, v[2 * k + 1]!, r);
    hh = addHi(hh, hl, rotlHi(v[2 * k]!, v[2 * k + 1]!, r), rl);
    hl = (hl + rl) | 0;
  });
  for (let k = 0; k < 4; k++) {
    round(0, 0, v[2 * k]!, v[2 * k + 1]!);
    hh ^= out64[0]!;
    hl ^= out64[1]!;
    const ph = mulHi(hh, hl, P1H, P1L);
    const pl = Math.imul(hl, P1L);
    hh = addHi(ph, pl, P4H, P4L);
    hl = (pl + P4L) | 0;
  }
  out64[0] = hh;
  out64[1] = hl;
  return i;
}

/** xxh64 of b[start, end) with rendezvousScore's seed, as u in (0, 1) from its 53 high bits. */
function xxh64Unit(b: Uint8Array, start: number, end: number): number {
  let i = start;
  let hh = S5H;
  let hl = S5L;
  if (end - start >= 32) {
    i = stripes(b, start, end);
    hh = out64[0]!;
    hl = out64[1]!;
  }
  // The tail after the stripes, in steps; the length added is the whole key's.
  const length = end - start;
  let th = addHi(hh, hl, 0, length);
  let tl = (hl + length) | 0;
  for (; i < end;) {
    const kind = stepKind(i, end);
    stepValue(kind, b, i);
    const nh = stepHi(kind, th, tl, out64[0]!, out64[1]!);
    tl = stepLo(kind, th, tl, out64[0]!, out64[1]!);
    th = nh;
    i += kind;
  }
  return avalancheUnit(th, tl);
}

/** xxh64's avalanche (h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3; h ^= h >> 32), then as rendezvousScore: u = ((h >> 11) + 0.5) / 2^53. */
function avalancheUnit(hh: number, hl: number): number {
  hl ^= hh >>> 1;
  let t = mulHi(hh, hl, P2H, P2L);
  hl = Math.imul(hl, P2L);
  hh = t;
  hl ^= (hl >>> 29) | (hh << 3);
  hh ^= hh >>> 29;
  t = mulHi(hh, hl, P3H, P3L);
  hl = Math.imul(hl, P3L);
  hh = t;
  hl ^= hh;
  return ((hh >>> 0) * 2 ** 21 + (hl >>> 11) + 0.5) / 2 ** 53;
}
