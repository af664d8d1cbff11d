import { FsError } from '@dunix/proto';
import type { BrickAdmin, BrickStatus, Coordinator, VolumeSnapshot } from '../coordinator.js';
import type { BrickRole } from '../controller/candidates.js';
import { differingPgs, isActive, volumeTarget } from './rebalance.js';
import { renderTable } from './volume.js';

/**
 * `dunixctl brick ...`: the operator's decisions about a volume's member
 * bricks (add, drain, weight, remove) and what they hold against what the
 * target placement would give them. Handlers return data; render* make text.
 */

export interface BrickListRow {
  id: string;
  host: string;
  address: string;
  alive: boolean;
  /** in / draining / new (registered, never added) / out; see BrickRole. */
  role: BrickRole;
  /** The weight in force: the operator's (brick add, set-weight), else the registered one. */
  weight: number;
  /** PG replicas it holds (listed in the PG's bricks, primary or not). */
  pgs: number;
  /** PGs it leads. */
  primaries: number;
  /** Replicas it holds but is not in sync with (catching up, or dead). */
  outOfSync: number;
  /** Replicas it would hold under the target placement; null if there is no target. */
  target: number | null;
}

export interface BrickListResult {
  volume: string;
  pgCount: number;
  replicas: number;
  bricks: BrickListRow[];
  /** PGs whose brick set differs from the target; null if there is no target. */
  pgsDiffering: number | null;
  /** Why there is no target, else null. */
  targetError: string | null;
}

function requireConfig(snap: VolumeSnapshot, volume: string): NonNullable<VolumeSnapshot['config']> {
  if (!snap.config) throw new FsError('NOT_FOUND', `volume ${volume} does not exist`);
  return snap.config;
}

function requireMember(snap: VolumeSnapshot, volume: string, id: string): BrickStatus {
  const b = snap.bricks.find((x) => x.id === id);
  if (!b) {
    throw new FsError(
      'NOT_FOUND',
      `brick ${id} is not registered in volume ${volume}: start it with brickd --volume ${volume} first`,
    );
  }
  return b;
}

/** The rows of `brick list` from one snapshot (pure). */
export function brickListOf(snap: VolumeSnapshot, nowMs: number): BrickListResult {
  const config = snap.config;
  if (!config) throw new FsError('NOT_FOUND', 'the volume does not exist');
  const t = volumeTarget(snap, nowMs);
  const rows = new Map<string, BrickListRow>();
  for (const b of snap.bricks) {
    const s = t.standings.find((x) => x.id === b.id)!;
    rows.set(b.id, {
      id: b.id,
      host: b.host,
      address: b.address,
      alive: b.alive,
      role: s.role,
      weight: b.admin?.weight ?? b.weight,
      pgs: 0,
      primaries: 0,
      outOfSync: 0,
      target: t.target ? 0 : null,
    });
  }
  for (const a of snap.placement) {
    a.bricks.forEach((id, i) => {
      const row = rows.get(id);
      if (!row) return;
      row.pgs++;
      if (i === 0) row.primaries++;
      if (!a.isr.includes(id) || !row.alive) row.outOfSync++;
    });
  }
  for (const bricks of t.target ?? []) {
    for (const id of bricks) {
      const row = rows.get(id);
      if (row && row.target !== null) row.target++;
    }
  }
  return {
    volume: config.name,
    pgCount: config.pgCount,
    replicas: config.replicas,
    bricks: [...rows.values()],
    pgsDiffering: t.target ? differingPgs(snap.placement, t.target).length : null,
    targetError: t.error,
  };
}

export async function brickList(coord: Coordinator, volume: string): Promise<BrickListResult> {
  const snap = await coord.getSnapshot(volume);
  requireConfig(snap, volume);
  return brickListOf(snap, Date.now());
}

function balanceLine(r: { volume: string; pgsDiffering: number | null; targetError: string | null }): string {
  if (r.pgsDiffering === null) return `no target placement: ${r.targetError}`;
  if (r.pgsDiffering === 0) return 'balanced: every PG is on its target bricks';
  return `${r.pgsDiffering} PG(s) differ from the target: dunixctl volume rebalance start ${r.volume} moves them`;
}

export function renderBrickList(r: BrickListResult): string {
  if (r.bricks.length === 0) return `volume ${r.volume} has no bricks\n`;
  return (
    renderTable(
      ['BRICK', 'HOST', 'ADDRESS', 'ALIVE', 'ROLE', 'WEIGHT', 'PGS', 'PRIMARIES', 'OUT-OF-SYNC', 'TARGET'],
      r.bricks.map((b) => [
        b.id,
        b.host,
        b.address,
        b.alive ? 'yes' : 'no',
        b.role,
        b.weight,
        b.pgs,
        b.primaries,
        b.outOfSync,
        b.target ?? '-',
      ]),
    ) + `${balanceLine(r)}\n`
  );
}

/** What a change of operator record did, and where it leaves the brick. */
export interface BrickChangeResult {
  volume: string;
  brick: string;
  action: 'add' | 'drain' | 'set-weight';
  alive: boolean;
  previous: { role: BrickRole; weight: number };
  admin: BrickAdmin;
  /** The brick's row after the change (PGs it holds; its target count). */
  now: BrickListRow;
  pgsDiffering: number | null;
  targetError: string | null;
  /** Id of a running or paused rebalance, else null. */
  rebalance: string | null;
}

async function changeAdmin(
  coord: Coordinator,
  volume: string,
  brickId: string,
  action: BrickChangeResult['action'],
  decide: (b: BrickStatus, role: BrickRole) => BrickAdmin,
): Promise<BrickChangeResult> {
  const before = await coord.getSnapshot(volume);
  requireConfig(before, volume);
  const b = requireMember(before, volume, brickId);
  const row = brickListOf(before, Date.now()).bricks.find((x) => x.id === brickId)!;
  const admin = decide(b, row.role);
  await coord.setBrickAdmin(volume, brickId, admin);
  const after = await coord.getSnapshot(volume);
  const list = brickListOf(after, Date.now());
  const now = list.bricks.find((x) => x.id === brickId);
  if (!now) throw new FsError('NOT_FOUND', `brick ${brickId} left volume ${volume} meanwhile`);
  return {
    volume,
    brick: brickId,
    action,
    alive: now.alive,
    previous: { role: row.role, weight: row.weight },
    admin,
    now,
    pgsDiffering: list.pgsDiffering,
    targetError: list.targetError,
    rebalance: isActive(after.rebalance) ? after.rebalance.id : null,
  };
}

export function brickAdd(
  coord: Coordinator,
  volume: string,
  brickId: string,
  weight?: number,
): Promise<BrickChangeResult> {
  return changeAdmin(coord, volume, brickId, 'add', (b) => ({
    state: 'in',
    weight: weight ?? b.weight,
    updatedAtMs: Date.now(),
  }));
}

export function brickDrain(coord: Coordinator, volume: string, brickId: string): Promise<BrickChangeResult> {
  return changeAdmin(coord, volume, brickId, 'drain', (b) => ({
    state: 'draining',
    weight: b.admin?.weight ?? b.weight,
    updatedAtMs: Date.now(),
  }));
}

export function brickSetWeight(
  coord: Coordinator,
  volume: string,
  brickId: string,
  weight: number,
): Promise<BrickChangeResult> {
  return changeAdmin(coord, volume, brickId, 'set-weight', (b, role) => {
    if (role === 'new') {
      throw new FsError(
        'INVALID_ARGUMENT',
        `brick ${brickId} is not added to volume ${volume}: dunixctl brick add ${volume} ${brickId} --weight ${weight}`,
      );
    }
    return { state: b.admin?.state ?? 'in', weight, updatedAtMs: Date.now() };
  });
}

export interface BrickRemoveResult {
  volume: string;
  brick: string;
}

export async function brickRemove(
  coord: Coordinator,
  volume: string,
  brickId: string,
): Promise<BrickRemoveResult> {
  await coord.removeBrick(volume, brickId);
  return { volume, brick: brickId };
}

export function renderBrickRemove(r: BrickRemoveResult): string {
  return `brick ${r.brick} removed from volume ${r.volume}\n`;
}

function targetText(r: BrickChangeResult): string {
  return r.now.target === null
    ? `no target placement: ${r.targetError}`
    : `under the target placement it holds ${r.now.target} PG replica(s) (holds ${r.now.pgs} now)`;
}

function differText(r: BrickChangeResult): string {
  if (r.pgsDiffering === null) return '';
  return r.pgsDiffering === 0
    ? '; balanced: every PG is on its target bricks'
    : `; ${r.pgsDiffering} PG(s) differ from the target`;
}

function moveHint(r: BrickChangeResult, where: string): string | undefined {
  if (!r.pgsDiffering) return undefined;
  if (r.rebalance) return `rebalance ${r.rebalance} is under way and moves PGs ${where}`;
  return `a rebalance moves PGs ${where}: dunixctl volume rebalance start ${r.volume}`;
}

export function renderBrickChange(r: BrickChangeResult): string {
  const lines: string[] = [];
  const was = r.previous.role === r.admin.state ? '' : ` (was ${r.previous.role})`;
  if (r.action === 'add') {
    lines.push(`brick ${r.brick} added to volume ${r.volume} with weight ${r.admin.weight}${was}`);
    lines.push(targetText(r) + differText(r));
    const hint = moveHint(r, 'onto it');
    if (hint) lines.push(hint);
    if (!r.alive) lines.push(`note: ${r.brick} is not alive: PGs move onto it only while its brickd runs`);
  } else if (r.action === 'drain') {
    const n = r.now.pgs;
    lines.push(`brick ${r.brick} of volume ${r.volume} is draining${was}`);
    if (n === 0) {
      lines.push(
        `it holds no PG replicas: stop its brickd, then dunixctl brick remove ${r.volume} ${r.brick}`,
      );
    } else {
      lines.push(
        `${n} PG replica(s) (${r.now.primaries} as primary) will move off it, with or without a rebalance`,
      );
      if (r.targetError) lines.push(`warning: they cannot move yet: no target placement: ${r.targetError}`);
      lines.push(`watch: dunixctl volume rebalance status ${r.volume} --watch`);
      lines.push(`when it holds none: stop its brickd, then dunixctl brick remove ${r.volume} ${r.brick}`);
    }
  } else {
    lines.push(`brick ${r.brick} of volume ${r.volume}: weight ${r.previous.weight} -> ${r.admin.weight}`);
    lines.push(targetText(r) + differText(r));
    const hint = moveHint(r, 'toward the new target');
    if (hint) lines.push(hint);
  }
  return `${lines.join('\n')}\n`;
}
