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
