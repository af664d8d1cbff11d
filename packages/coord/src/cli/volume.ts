import type { PgAssignment, VolumeConfig } from '@dunix/proto';
import { type Coordinator, volumeConfig } from '../coordinator.js';

/**
 * `dunixctl volume ...` handlers: each returns data; render* turns it into
 * text. The commander wiring is in program.ts.
 */
export interface VolumeCreateArgs {
  name: string;
  pgs?: number;
  replicas?: number;
  blockSize?: number;
  inlineMax?: number;
}

export interface VolumeCreateResult {
  config: VolumeConfig;
  /** PGs led (primary) and held per brick. */
  bricks: BrickPgCount[];
}

export interface BrickPgCount {
  id: string;
  pgs: number;
  primaries: number;
}

export interface VolumeListRow {
  name: string;
  pgCount: number;
  replicas: number;
  blockSizeBytes: number;
  inlineMaxBytes: number;
  bricks: number;
  bricksAlive: number;
}

export interface BrickStatusRow {
  id: string;
  address: string;
  host: string;
  weight: number;
  alive: boolean;
  pgs: number;
  primaries: number;
}

export interface VolumeStatusResult {
  config: VolumeConfig;
  bricks: BrickStatusRow[];
  /** PGs with at least one dead brick; PGs whose every brick is dead. */
  pgsDegraded: number;
  pgsUnavailable: number;
  /** Highest PG epoch (1 = never changed since creation). */
  epochMax: number;
}

function countPgs(placement: readonly PgAssignment[]): Map<string, { pgs: number; primaries: number }> {
  const m = new Map<string, { pgs: number; primaries: number }>();
  for (const a of placement) {
    a.bricks.forEach((b, i) => {
      const c = m.get(b) ?? { pgs: 0, primaries: 0 };
      c.pgs++;
      if (i === 0) c.primaries++;
      m.set(b, c);
    });
  }
  return m;
}

export async function volumeCreate(coord: Coordinator, args: VolumeCreateArgs): Promise<VolumeCreateResult> {
  const config = volumeConfig(args.name, {
    ...(args.pgs !== undefined ? { pgCount: args.pgs } : {}),
    ...(args.replicas !== undefined ? { replicas: args.replicas } : {}),
    ...(args.blockSize !== undefined ? { blockSizeBytes: args.blockSize } : {}),
    ...(args.inlineMax !== undefined ? { inlineMaxBytes: args.inlineMax } : {}),
  });
  const placement = await coord.createVolume(config);
  const counts = countPgs(placement);
  const bricks = [...counts.entries()]
    .map(([id, c]) => ({ id, ...c }))
    .sort((x, y) => (x.id < y.id ? -1 : 1));
  return { config, bricks };
}

export async function volumeList(coord: Coordinator): Promise<VolumeListRow[]> {
  const out: VolumeListRow[] = [];
  for (const c of await coord.listVolumes()) {
    const bricks = await coord.listBricks(c.name);
    out.push({
      name: c.name,
      pgCount: c.pgCount,
      replicas: c.replicas,
      blockSizeBytes: c.blockSizeBytes,
      inlineMaxBytes: c.inlineMaxBytes,
      bricks: bricks.length,
      bricksAlive: bricks.filter((b) => b.alive).length,
    });
  }
  return out;
}

export async function volumeStatus(coord: Coordinator, name: string): Promise<VolumeStatusResult> {
  const placement = await coord.getPlacement(name); // NOT_FOUND for an unknown volume
  const config = await coord.getVolume(name);
  const bricks = await coord.listBricks(name);
  if (!config) throw new Error(`volume ${name} vanished while reading it`);
  const counts = countPgs(placement);
  const alive = new Set(bricks.filter((b) => b.alive).map((b) => b.id));
  let pgsDegraded = 0;
  let pgsUnavailable = 0;
  let epochMax = 0;
  for (const a of placement) {
    const up = a.bricks.filter((b) => alive.has(b)).length;
    if (up < a.bricks.length) pgsDegraded++;
    if (up === 0) pgsUnavailable++;
    epochMax = Math.max(epochMax, a.epoch);
  }
  return {
    config,
    bricks: bricks.map((b) => ({
      id: b.id,
      address: b.address,
      host: b.host,
      weight: b.weight,
      alive: b.alive,
      pgs: counts.get(b.id)?.pgs ?? 0,
      primaries: counts.get(b.id)?.primaries ?? 0,
    })),
    pgsDegraded,
    pgsUnavailable,
    epochMax,
  };
}

/** A plain text table: a header row, then one row per record, columns padded. */
export function renderTable(header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return (
    cells
      .map((r) =>
        r
          .map((c, i) => c.padEnd(widths[i]!))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

function bytes(n: number): string {
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n / (1 << 20)} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} B`;
}

function configLines(c: VolumeConfig): string {
  return (
    `volume ${c.name}: ${c.pgCount} PGs, ${c.replicas} replica(s), block ${bytes(c.blockSizeBytes)}, ` +
    `inline up to ${bytes(c.inlineMaxBytes)}, created ${new Date(c.createdAtMs).toISOString()}\n`
  );
}

export function renderVolumeCreate(r: VolumeCreateResult): string {
  return (
    configLines(r.config) +
    renderTable(
      ['BRICK', 'PGS', 'PRIMARIES'],
      r.bricks.map((b) => [b.id, b.pgs, b.primaries]),
    )
  );
}

export function renderVolumeList(rows: VolumeListRow[]): string {
  if (rows.length === 0) return 'no volumes\n';
  return renderTable(
    ['NAME', 'PGS', 'REPLICAS', 'BLOCK', 'INLINE', 'BRICKS', 'ALIVE'],
    rows.map((r) => [
      r.name,
      r.pgCount,
      r.replicas,
      bytes(r.blockSizeBytes),
      bytes(r.inlineMaxBytes),
      r.bricks,
      r.bricksAlive,
    ]),
  );
}

export function renderVolumeStatus(r: VolumeStatusResult): string {
  const alive = r.bricks.filter((b) => b.alive).length;
  return (
    configLines(r.config) +
    `bricks: ${alive} alive of ${r.bricks.length}; PGs degraded: ${r.pgsDegraded}, unavailable: ${r.pgsUnavailable}; ` +
    `highest epoch: ${r.epochMax}\n` +
    renderTable(
      ['BRICK', 'STATE', 'ADDRESS', 'HOST', 'WEIGHT', 'PGS', 'PRIMARIES'],
      r.bricks.map((b) => [
        b.id,
        b.alive ? 'alive' : 'dead',
        b.address,
        b.host,
        b.weight,
        b.pgs,
        b.primaries,
      ]),
    )
  );
}
