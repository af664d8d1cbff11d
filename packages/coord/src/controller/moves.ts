import type { PgAssignment } from '@dunix/proto';

/**
 * Moving PG replicas toward a target placement, one safe step at a time,
 * decided from the placement alone (so a pass can stop anywhere - controller
 * crash, brick crash - and the next pass, by any controller, picks up where
 * the map stands). Free of I/O and time.
 *
 * A PG reaches its target set T (`replicas` bricks) by repeating:
 * 1. add: a live member of T it lacks joins `bricks` (not the in-sync set),
 *    at most one beyond `replicas`; its primary then catches it up (log or
 *    backfill) and adds it to the in-sync set itself;
 * 2. wait until every live member of T that `bricks` lists is in sync;
 * 3. handover: if the primary is not in T, an in-sync member of T becomes
 *    primary (epoch + 1; the old primary turns replica and stays in sync);
 * 4. drop: a brick not in T leaves `bricks` and the in-sync set - one out
 *    of sync at any time, one in sync only while `replicas` others are.
 * So a PG never has fewer in-sync copies than `replicas` because of a move
 * (fewer only if bricks died), and the last in-sync copy of anything is
 * never dropped.
 *
 * Balance moves (the PG's bricks are all candidates, the target just
 * differs) happen only while a rebalance runs; forced moves (a brick that
 * is draining, out or otherwise not a candidate holds a replica) always.
 * At most `maxConcurrent` PGs are in motion at once.
 */
export interface MoveChange {
  pg: number;
  expectedEpoch: number;
  bricks: string[];
  isr: string[];
  kind: 'add' | 'handover' | 'drop';
  /** The brick added, made primary, or dropped. */
  brick: string;
}

export interface MoveOptions {
  replicas: number;
  /** Bricks whose process holds a lease. */
  alive: ReadonlySet<string>;
  /** Bricks the target placement may use (role 'in'); a PG listing another must move. */
  candidates: ReadonlySet<string>;
  /** Move PGs whose bricks are all candidates too (a rebalance runs). */
  balance: boolean;
  maxConcurrent: number;
}

const sameSet = (a: readonly string[], b: readonly string[]) =>
  a.length === b.length && a.every((x) => b.includes(x));

/** Whether a PG's replica set differs from its target (as sets). */
export function differsFromTarget(a: PgAssignment, target: readonly string[]): boolean {
  return !sameSet(a.bricks, target);
}

/**
 * A move under way: a live member of the target listed but not yet in sync
 * (its catch-up or backfill is the work a concurrency slot stands for). One
 * waiting on a dead brick takes no slot: it would stall every other move.
 */
export function inMotion(a: PgAssignment, target: readonly string[], alive: ReadonlySet<string>): boolean {
  return a.bricks.some((b) => target.includes(b) && !a.isr.includes(b) && alive.has(b));
}

/** The next step of one PG, or undefined (at its target, waiting, or not to be moved now). */
export function planMove(
  a: PgAssignment,
  target: readonly string[],
  o: Pick<MoveOptions, 'replicas' | 'alive'>,
): MoveChange | undefined {
  if (!differsFromTarget(a, target)) return undefined;
  const primary = a.bricks[0]!;
  // A PG without a live in-sync primary is failover's business first.
  if (!o.alive.has(primary) || !a.isr.includes(primary)) return undefined;
  const step = (kind: MoveChange['kind'], brick: string, bricks: string[]): MoveChange => ({
    pg: a.pg,
    expectedEpoch: a.epoch,
    bricks,
    isr: bricks.filter((b) => a.isr.includes(b)),
    kind,
    brick,
  });
  const missing = target.filter((b) => !a.bricks.includes(b));
  const syncing = a.bricks.filter((b) => target.includes(b) && !a.isr.includes(b) && o.alive.has(b));
  // 1. add one live missing member while there is room (one beyond `replicas`) and none catches up.
  if (a.bricks.length <= o.replicas && syncing.length === 0) {
    const add = missing.find((b) => o.alive.has(b));
    if (add) return step('add', add, [...a.bricks, add]);
  }
  // 2. wait while a listed member of the target catches up.
  if (syncing.length > 0) return undefined;
  // 3. handover: an in-sync member of the target takes over from a primary that leaves.
  if (!target.includes(primary)) {
    const next = target.find((b) => a.isr.includes(b) && o.alive.has(b));
    if (next) return step('handover', next, [next, ...a.bricks.filter((b) => b !== next)]);
  }
  // 4. drop an extra: out-of-sync and dead ones first; an in-sync one only
  //    while the in-sync set keeps `replicas` members without it.
  const rank = (b: string) => (a.isr.includes(b) ? 2 : 0) + (o.alive.has(b) ? 1 : 0);
  const extras = a.bricks
    .filter((b) => b !== primary && !target.includes(b))
    .sort((x, y) => rank(x) - rank(y));
  for (const drop of extras) {
    if (a.isr.includes(drop) && a.isr.length - 1 < o.replicas) continue;
    return step(
      'drop',
      drop,
      a.bricks.filter((b) => b !== drop),
    );
  }
  return undefined;
}

/**
 * The steps for the whole volume: PGs already in motion go on first, then
 * new moves (forced before balance ones) while fewer than maxConcurrent PGs
 * are in motion.
 */
export function planMoves(
  placement: readonly PgAssignment[],
  target: readonly string[][],
  o: MoveOptions,
): MoveChange[] {
  const out: MoveChange[] = [];
  let moving = 0;
  const fresh: { change: MoveChange; forced: boolean }[] = [];
  for (const a of placement) {
    const t = target[a.pg];
    if (!t) continue;
    const busy = inMotion(a, t, o.alive);
    if (busy) moving++;
    const forced = a.bricks.some((b) => !o.candidates.has(b));
    if (!busy && !forced && !o.balance) continue;
    if (!differsFromTarget(a, t)) continue;
    const change = planMove(a, t, o);
    if (!change) continue;
    if (busy) out.push(change);
    else fresh.push({ change, forced });
  }
  fresh.sort((x, y) => Number(y.forced) - Number(x.forced) || x.change.pg - y.change.pg);
  for (const f of fresh) {
    // Steps that start no copy (a handover or a drop of a dead extra) need no slot.
    const starts = f.change.kind === 'add';
    if (starts && moving >= o.maxConcurrent) continue;
    if (starts) moving++;
    out.push(f.change);
  }
  return out;
}
