import { downOutIntervalMs, type BrickCandidate } from '@dunix/proto';
import type { BrickStatus, VolumeSnapshot } from '../coordinator.js';

/**
 * Which member bricks a volume's placement should use, and with what
 * weight: the input of the target placement, shared by the controller
 * (which moves replicas toward it) and dunixctl (which shows the gap).
 *
 * - `in` (an operator record says so): a candidate with that record's weight;
 * - no record, but some PG lists it (created with the volume, or placed
 *   before operator records existed): a candidate with its registered weight;
 * - `draining`, or registered but never added: not a candidate;
 * - down (no lease) for at least the volume's down-out interval: `out`, not
 *   a candidate, so its replicas are re-created elsewhere.
 */
export type BrickRole = 'in' | 'draining' | 'new' | 'out';

export interface BrickStanding {
  id: string;
  role: BrickRole;
  /** Weight placement uses (0 unless role is 'in'). */
  weight: number;
  alive: boolean;
  /** Milliseconds it has been down, as far as the caller knows (0 when alive). */
  downForMs: number;
}

export function brickStanding(b: BrickStatus, snapshot: VolumeSnapshot, downForMs: number): BrickStanding {
  const listed = snapshot.placement.some((a) => a.bricks.includes(b.id));
  let role: BrickRole;
  if (b.admin) role = b.admin.state === 'draining' ? 'draining' : 'in';
  else role = listed ? 'in' : 'new';
  const outAfterMs = snapshot.config ? downOutIntervalMs(snapshot.config) : Infinity;
  if (role === 'in' && !b.alive && downForMs >= outAfterMs) role = 'out';
  const weight = role === 'in' ? (b.admin?.weight ?? b.weight) : 0;
  return { id: b.id, role, weight, alive: b.alive, downForMs: b.alive ? 0 : downForMs };
}

/** Every member's standing; `downSinceMs` holds when each dead brick was first seen down. */
export function standings(
  snapshot: VolumeSnapshot,
  nowMs: number,
  downSinceMs: ReadonlyMap<string, number> = new Map(),
): BrickStanding[] {
  return snapshot.bricks.map((b) =>
    brickStanding(b, snapshot, b.alive ? 0 : nowMs - (downSinceMs.get(b.id) ?? nowMs)),
  );
}

/** The candidates of the target placement (weight > 0, role 'in'). */
export function placementCandidates(
  snapshot: VolumeSnapshot,
  list: readonly BrickStanding[],
): BrickCandidate[] {
  const hostOf = new Map(snapshot.bricks.map((b) => [b.id, b.host]));
  return list
    .filter((s) => s.role === 'in' && s.weight > 0)
    .map((s) => ({ id: s.id, weight: s.weight, host: hostOf.get(s.id)! }));
}
