import { type BrickUsage, FsError, fullThresholdPct, type VolumeUsage, volumeUsage } from '@dunix/proto';
import type { Coordinator } from '../coordinator.js';
import { formatBytes } from './rebalance.js';
import { renderTable } from './volume.js';

/**
 * `dunixctl df VOLUME`: each brick's space as the brick last published it
 * (etcd `usage/<brick>`), and the volume's: raw (every copy) and usable
 * (one copy of `replicas`, what files can still take).
 */

export interface DfBrickRow {
  id: string;
  host: string;
  alive: boolean;
  /** null: no usage record (down, or not measured yet). */
  usage: BrickUsage | null;
  /** Milliseconds since the brick measured it (dunixctl's clock against the brick's); null without a record. */
  ageMs: number | null;
  /** PG copies it holds. */
  pgs: number;
}

export interface DfResult {
  volume: string;
  replicas: number;
  fullThresholdPct: number;
  total: VolumeUsage;
  bricks: DfBrickRow[];
}

export async function volumeDf(coord: Coordinator, name: string, nowMs = Date.now()): Promise<DfResult> {
  const [snap, usage] = await Promise.all([coord.getSnapshot(name), coord.listUsage(name)]);
  if (!snap.config) throw new FsError('NOT_FOUND', `volume ${name} does not exist`);
  return dfOf(name, snap.config, snap.bricks, snap.placement, usage, nowMs);
}

/** The rows of `df` (pure). */
export function dfOf(
  name: string,
  config: { replicas: number; fullThresholdPct?: number },
  bricks: readonly { id: string; host: string; alive: boolean }[],
  placement: readonly { bricks: readonly string[] }[],
  usage: ReadonlyMap<string, BrickUsage>,
  nowMs: number,
): DfResult {
  const rows = bricks.map((b) => {
    const u = usage.get(b.id) ?? null;
    return {
      id: b.id,
      host: b.host,
      alive: b.alive,
      usage: u,
      ageMs: u ? Math.max(0, nowMs - u.atMs) : null,
      pgs: placement.filter((a) => a.bricks.includes(b.id)).length,
    };
  });
  return {
    volume: name,
    replicas: config.replicas,
    fullThresholdPct: fullThresholdPct(config),
    total: volumeUsage(
      bricks.map((b) => b.id),
      usage,
      config.replicas,
    ),
    bricks: rows,
  };
}

const pct = (used: number, cap: number) => (cap > 0 ? `${Math.round((used / cap) * 100)}%` : '-');

export function renderDf(r: DfResult): string {
  const t = r.total;
  const lines = [
    `volume ${r.volume}: ${formatBytes(t.usableFreeBytes)} free of ${formatBytes(t.usableCapacityBytes)} ` +
      `usable (${r.replicas} ${r.replicas === 1 ? 'copy' : 'copies'} of each byte; raw ` +
      `${formatBytes(t.rawUsedBytes)} used, ${formatBytes(t.rawFreeBytes)} free of ` +
      `${formatBytes(t.rawCapacityBytes)}); full at ${r.fullThresholdPct}% of a brick`,
  ];
  if (t.bricksFull > 0)
    lines.push(
      `${t.bricksFull} brick(s) full: writes that add data to their PGs get ENOSPC ` +
        '(add bricks and rebalance, or free space)',
    );
  else if (t.bricksNearfull > 0) lines.push(`${t.bricksNearfull} brick(s) near full`);
  if (t.bricksUnknown > 0)
    lines.push(`${t.bricksUnknown} brick(s) have not reported their space (down or starting)`);
  const table = renderTable(
    ['BRICK', 'HOST', 'STATE', 'SIZE', 'USED', 'FREE', 'USE%', 'BLOCKS', 'META', 'PGS', 'AGE'],
    r.bricks.map((b) => {
      const u = b.usage;
      return [
        b.id,
        b.host,
        u ? (b.alive ? u.state : 'down') : b.alive ? 'unknown' : 'down',
        u ? formatBytes(u.capacityBytes) : '-',
        u ? formatBytes(u.usedBytes) : '-',
        u ? formatBytes(u.freeBytes) : '-',
        u ? pct(u.usedBytes, u.capacityBytes) : '-',
        u ? formatBytes(u.blockBytes) : '-',
        u ? formatBytes(u.metaBytes) : '-',
        b.pgs,
        b.ageMs === null ? '-' : `${Math.round(b.ageMs / 1000)}s`,
      ];
    }),
  );
  return `${lines.join('\n')}\n${table}`;
}
