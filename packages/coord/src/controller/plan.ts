import type { PgAssignment } from '@dunix/proto';
import type { VolumeSnapshot } from '../coordinator.js';

/**
 * The controller's decisions, free of I/O and time: from one snapshot of a
 * volume, the placement changes that bring every PG to a state its live
 * bricks can serve.
 *
 * Per PG:
 * - dead bricks leave the in-sync set (they stay in `bricks`: a brick that
 *   comes back catches up and rejoins; moving PGs is rebalancing's job);
 * - a dead primary is replaced by the first live in-sync member, moved to
 *   bricks[0]; every acknowledged op is on every in-sync member, so
 *   nothing acknowledged is lost;
 * - with no live in-sync member the PG is left as it is (unavailable until
 *   one returns): a replica outside the in-sync set may lack acknowledged
 *   ops and is never promoted.
 */
export interface PlacementChange {
  pg: number;
  /** The epoch the change was planned from: the compare-and-swap's expectation. */
  expectedEpoch: number;
  bricks: string[];
  isr: string[];
  /** 'failover': a new primary; 'shrink': dead bricks leave the in-sync set, same primary. */
  kind: 'failover' | 'shrink';
  /** Bricks that left the in-sync set. */
  dropped: string[];
}

/** The change one PG needs, or undefined if it needs none (or none is possible). */
export function planPg(a: PgAssignment, alive: ReadonlySet<string>): PlacementChange | undefined {
  const liveIsr = a.isr.filter((b) => alive.has(b));
  if (liveIsr.length === 0) return undefined;
  const oldPrimary = a.bricks[0]!;
  const primary = alive.has(oldPrimary) && a.isr.includes(oldPrimary) ? oldPrimary : liveIsr[0]!;
  const bricks = primary === oldPrimary ? [...a.bricks] : [primary, ...a.bricks.filter((b) => b !== primary)];
  // In-sync members in replica order, so isr[0] is the primary too.
  const isr = bricks.filter((b) => liveIsr.includes(b));
  const dropped = a.isr.filter((b) => !alive.has(b));
  if (primary === oldPrimary && dropped.length === 0) return undefined;
  return {
    pg: a.pg,
    expectedEpoch: a.epoch,
    bricks,
    isr,
    kind: primary === oldPrimary ? 'shrink' : 'failover',
    dropped,
  };
}

/**
 * Every change the snapshot calls for, failovers first (a PG without a live
 * primary serves nothing; one with a dead replica only waits on it).
 */
export function planPlacement(snapshot: VolumeSnapshot): PlacementChange[] {
  const alive = new Set(snapshot.bricks.filter((b) => b.alive).map((b) => b.id));
  const changes: PlacementChange[] = [];
  for (const a of snapshot.placement) {
    const c = planPg(a, alive);
    if (c) changes.push(c);
  }
  const rank = (c: PlacementChange) => (c.kind === 'failover' ? 0 : 1);
  return changes.sort((x, y) => rank(x) - rank(y) || x.pg - y.pg);
}

/** The assignment a change produces (what a successful compare-and-swap stores). */
export function applyChange(c: PlacementChange): PgAssignment {
  return { pg: c.pg, bricks: [...c.bricks], isr: [...c.isr], epoch: c.expectedEpoch + 1 };
}
