import {
  type BrickUsage,
  type VolumeUsage,
  volumeUsage,
  fullThresholdPct,
  fullThresholdRangePct,
  downOutIntervalMs,
  downOutIntervalRangeMs,
  FsError,
  type PgAssignment,
  type VolumeConfig,
} from '@dunix/proto';
import {
  type Coordinator,
  type RebalanceJob,
  type RecoveryReport,
  type ScrubJob,
  volumeConfig,
} from '../coordinator.js';

/**
 * `dunixctl volume ...` handlers: each returns data; render* turns it into
 * text. The commander wiring is in program.ts.
 */
export interface VolumeCreateArgs {
  name: string;
  pgs?: number;
  replicas?: number;
  minInsync?: number;
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
  /** PGs this brick leads. */
  primaries: number;
  /** PGs it holds as a non-primary replica. */
  replicas: number;
  /** PGs it is listed in but not in sync with (catching up, or dead). */
  outOfSync: number;
  /** Its space as it last published it (`dunixctl df`), or null. */
  usage: BrickUsage | null;
}

/** PGs whose live in-sync members number `live` (of `replicas`). */
export interface IsrSizeCount {
  live: number;
  pgs: number;
}

export interface RecoveryRow extends RecoveryReport {
  /** Seconds until done at the reported rate (ops in 'log' mode, bytes in 'backfill'); null if unknown. */
  etaS: number | null;
}

export interface VolumeStatusResult {
  config: VolumeConfig;
  /** Brick leading the volume's controller election, or null. */
  controller: string | null;
  bricks: BrickStatusRow[];
  /** Live in-sync members per PG, from `replicas` down to 0. */
  isrHistogram: IsrSizeCount[];
  /** PGs with fewer live in-sync members than replicas (includes the two below). */
  pgsDegraded: number[];
  /** PGs with live in-sync members, but fewer than minInsync: writes refused, reads served. */
  pgsReadOnly: number[];
  /** PGs without a live in-sync member: nothing can serve them until one returns. */
  pgsUnavailable: number[];
  /** PGs whose primary is dead but which have a live in-sync member: the controller promotes it. */
  pgsFailoverPending: number[];
  recovery: RecoveryRow[];
  /** Highest PG epoch (1 = never changed since creation). */
  epochMax: number;
  /** The current or last rebalance (`dunixctl volume rebalance status` has the details), or null. */
  rebalance: RebalanceJob | null;
  /** The current or last scrub (`dunixctl volume scrub status` has the details), or null. */
  scrub: ScrubJob | null;
  /** The volume's space from the bricks' usage records (`dunixctl df` has the details). */
  space: VolumeUsage;
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
    ...(args.minInsync !== undefined ? { minInsync: args.minInsync } : {}),
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
  const snap = await coord.getSnapshot(name);
  if (!snap.config) throw new FsError('NOT_FOUND', `volume ${name} does not exist`);
  const [controller, reports, usage] = await Promise.all([
    coord.getController(name),
    coord.listRecovery(name),
    coord.listUsage(name),
  ]);
  const config = snap.config;
  const alive = new Set(snap.bricks.filter((b) => b.alive).map((b) => b.id));
  const rows = new Map<string, { primaries: number; replicas: number; outOfSync: number }>(
    snap.bricks.map((b) => [b.id, { primaries: 0, replicas: 0, outOfSync: 0 }]),
  );
  const histogram = new Map<number, number>();
  const r: Omit<
    VolumeStatusResult,
    'config' | 'controller' | 'bricks' | 'isrHistogram' | 'recovery' | 'rebalance' | 'scrub' | 'space'
  > = {
    pgsDegraded: [],
    pgsReadOnly: [],
    pgsUnavailable: [],
    pgsFailoverPending: [],
    epochMax: 0,
  };
  for (const a of snap.placement) {
    a.bricks.forEach((b, i) => {
      const row = rows.get(b);
      if (!row) return;
      if (i === 0) row.primaries++;
      else row.replicas++;
      if (!a.isr.includes(b) || !alive.has(b)) row.outOfSync++;
    });
    const live = a.isr.filter((b) => alive.has(b)).length;
    histogram.set(live, (histogram.get(live) ?? 0) + 1);
    if (live < config.replicas) r.pgsDegraded.push(a.pg);
    if (live === 0) r.pgsUnavailable.push(a.pg);
    else if (live < config.minInsync) r.pgsReadOnly.push(a.pg);
    if (live > 0 && !alive.has(a.bricks[0]!)) r.pgsFailoverPending.push(a.pg);
    r.epochMax = Math.max(r.epochMax, a.epoch);
  }
  const rebalance = snap.rebalance ?? null;
  const isrHistogram: IsrSizeCount[] = [];
  for (let live = config.replicas; live >= 0; live--)
    isrHistogram.push({ live, pgs: histogram.get(live) ?? 0 });
  return {
    config,
    controller: controller ?? null,
    bricks: snap.bricks.map((b) => ({
      id: b.id,
      address: b.address,
      host: b.host,
      weight: b.weight,
      alive: b.alive,
      ...rows.get(b.id)!,
      usage: usage.get(b.id) ?? null,
    })),
    isrHistogram,
    ...r,
    recovery: reports.map((p) => {
      const left = p.mode === 'log' ? p.opsLeft : p.bytesLeft;
      return { ...p, etaS: p.ratePerS > 0 ? Math.ceil(left / p.ratePerS) : left === 0 ? 0 : null };
    }),
    rebalance,
    scrub: snap.scrub ?? null,
    space: volumeUsage(
      snap.bricks.map((b) => b.id),
      usage,
      config.replicas,
    ),
  };
}

/** Exit status of `volume status`: 2 when a PG is unavailable (scripts and health checks see it), else 0. */
export function volumeStatusExitCode(r: VolumeStatusResult): number {
  return r.pgsUnavailable.length > 0 ? 2 : 0;
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
    `volume ${c.name}: ${c.pgCount} PGs, ${c.replicas} replica(s), min in-sync ${c.minInsync}, ` +
    `block ${bytes(c.blockSizeBytes)}, ` +
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

/** Sizes in binary units with one decimal: 1.5 GiB. */
function size(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

function duration(s: number | null): string {
  if (s === null) return '?';
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** Up to `max` PG numbers, then how many more. */
function pgList(pgs: number[], max = 16): string {
  const shown = pgs.slice(0, max).join(', ');
  return pgs.length > max ? `${shown}, ... (${pgs.length - max} more)` : shown;
}

export function renderVolumeStatus(r: VolumeStatusResult): string {
  const alive = r.bricks.filter((b) => b.alive).length;
  const n = r.config.replicas;
  const lines = [
    configLines(r.config).trimEnd(),
    `controller: ${r.controller ?? 'none'}; bricks: ${alive} alive of ${r.bricks.length}; highest epoch: ${r.epochMax}`,
    `in-sync: ${r.isrHistogram.map((h) => `${h.live}/${n}: ${h.pgs} PGs`).join(', ')}`,
    `PGs degraded: ${r.pgsDegraded.length}, read-only: ${r.pgsReadOnly.length}, ` +
      `unavailable: ${r.pgsUnavailable.length}, failover pending: ${r.pgsFailoverPending.length}`,
  ];
  const job = r.rebalance;
  if (job && (job.state === 'running' || job.state === 'paused')) {
    lines.push(`rebalance ${job.id}: ${job.state}, ${job.pgsDone}/${job.pgsTotal} PGs done`);
  }
  if (r.scrub?.state === 'running') {
    lines.push(`scrub ${r.scrub.id}: running, ${r.scrub.pgsDone}/${r.scrub.pgsTotal} PGs done`);
  }
  const sp = r.space;
  if (sp.rawCapacityBytes > 0) {
    lines.push(
      `space: ${size(sp.usableFreeBytes)} free of ${size(sp.usableCapacityBytes)} usable` +
        (sp.bricksFull
          ? `; ${sp.bricksFull} brick(s) full (writes that add data to their PGs: ENOSPC)`
          : '') +
        (sp.bricksNearfull ? `; ${sp.bricksNearfull} brick(s) near full` : ''),
    );
  }
  if (r.pgsUnavailable.length) lines.push(`unavailable PGs: ${pgList(r.pgsUnavailable)}`);
  if (r.pgsReadOnly.length) lines.push(`read-only PGs: ${pgList(r.pgsReadOnly)}`);
  const table = renderTable(
    ['BRICK', 'STATE', 'ADDRESS', 'HOST', 'WEIGHT', 'PRIMARY', 'REPLICA', 'OUT-OF-SYNC', 'USE%'],
    r.bricks.map((b) => [
      b.id,
      b.alive ? 'alive' : 'dead',
      b.address,
      b.host,
      b.weight,
      b.primaries,
      b.replicas,
      b.outOfSync,
      b.usage
        ? `${Math.round((b.usage.usedBytes / Math.max(1, b.usage.capacityBytes)) * 100)}%` +
          (b.usage.state === 'ok' ? '' : ` ${b.usage.state}`)
        : '-',
    ]),
  );
  let out = `${lines.join('\n')}\n${table}`;
  if (r.recovery.length) {
    out +=
      `recovery: ${r.recovery.length} replica(s) catching up\n` +
      renderTable(
        ['PG', 'BRICK', 'MODE', 'OPS-LEFT', 'BYTES-LEFT', 'RATE', 'ETA'],
        r.recovery.map((p) => [
          p.pg,
          p.brick,
          p.mode,
          p.opsLeft,
          size(p.bytesLeft),
          p.mode === 'log' ? `${Math.round(p.ratePerS)} ops/s` : `${size(p.ratePerS)}/s`,
          duration(p.etaS),
        ]),
      );
  }
  return out;
}

/** The options `dunixctl volume set` changes, by their CLI names. */
export const VOLUME_OPTIONS = ['min_insync', 'down_out_interval', 'full_threshold'] as const;
export type VolumeOption = (typeof VOLUME_OPTIONS)[number];

export interface VolumeSetResult {
  option: VolumeOption;
  /** The config before the change (null if it could not be read first). */
  previous: VolumeConfig | null;
  config: VolumeConfig;
}

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * A duration in milliseconds from `90s`, `5m`, `1h`, `1h30m`, `1500ms`, `2d`
 * or plain milliseconds (`90000`). INVALID_ARGUMENT otherwise (also for a
 * result that is not a whole number of milliseconds).
 */
export function parseDuration(text: string): number {
  const t = text.trim();
  const bad = () =>
    new FsError(
      'INVALID_ARGUMENT',
      `bad duration ${JSON.stringify(text)}: use e.g. 90s, 5m, 1h, 1h30m or plain milliseconds`,
    );
  if (/^[0-9]+$/.test(t)) {
    const ms = Number(t);
    if (!Number.isSafeInteger(ms)) throw bad();
    return ms;
  }
  if (!/^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$/.test(t)) throw bad();
  let ms = 0;
  for (const m of t.matchAll(/([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)/g))
    ms += Number(m[1]) * DURATION_UNITS_MS[m[2]!]!;
  // 1.5s is 1500 ms; 0.0001s is no whole number of milliseconds.
  const rounded = Math.round(ms);
  if (Math.abs(ms - rounded) > 1e-6 || !Number.isSafeInteger(rounded)) throw bad();
  return rounded;
}

/** Milliseconds in the largest units that divide them exactly: 300000 -> 5m, 90000 -> 1m30s, 1500 -> 1s500ms. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return String(ms);
  if (ms === 0) return '0s';
  let left = Math.round(ms);
  let out = '';
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
    ['ms', 1],
  ] as const) {
    const n = Math.floor(left / size);
    if (n > 0) out += `${n}${unit}`;
    left -= n * size;
  }
  return out;
}

/** The option name as given (`min_insync`, `min-insync`, `minInsync`) or INVALID_ARGUMENT. */
export function volumeOption(name: string): VolumeOption {
  const n = name
    .replace(/([a-z])([A-Z])/g, '$1_$2')
    .replace(/-/g, '_')
    .toLowerCase();
  const found = VOLUME_OPTIONS.find((o) => o === n);
  if (!found) {
    throw new FsError(
      'INVALID_ARGUMENT',
      `unknown option ${JSON.stringify(name)}: options that change are ${VOLUME_OPTIONS.join(', ')}`,
    );
  }
  return found;
}

/** The config patch for `volume set OPTION VALUE`; INVALID_ARGUMENT for a value of the wrong kind. */
export function volumeSetPatch(
  option: VolumeOption,
  value: string,
): Partial<Pick<VolumeConfig, 'minInsync' | 'downOutIntervalMs' | 'fullThresholdPct'>> {
  if (option === 'full_threshold') {
    const m = /^([0-9]{1,3})%?$/.exec(value.trim());
    const n = m ? Number(m[1]) : NaN;
    const { min, max } = fullThresholdRangePct;
    if (!(n >= min && n <= max))
      throw new FsError(
        'INVALID_ARGUMENT',
        `full_threshold ${JSON.stringify(value)} must be a percent in ${min}..${max}`,
      );
    return { fullThresholdPct: n };
  }
  if (option === 'min_insync') {
    if (!/^[0-9]+$/.test(value.trim()) || !Number.isSafeInteger(Number(value))) {
      throw new FsError('INVALID_ARGUMENT', `min_insync ${JSON.stringify(value)} must be an integer`);
    }
    return { minInsync: Number(value) };
  }
  const ms = parseDuration(value);
  const { min, max } = downOutIntervalRangeMs;
  if (ms < min || ms > max) {
    throw new FsError(
      'INVALID_ARGUMENT',
      `down_out_interval ${formatDuration(ms)} must be ${formatDuration(min)}..${formatDuration(max)}`,
    );
  }
  return { downOutIntervalMs: ms };
}

export async function volumeSet(
  coord: Coordinator,
  name: string,
  optionName: string,
  value: string,
): Promise<VolumeSetResult> {
  const option = volumeOption(optionName);
  const patch = volumeSetPatch(option, value);
  const previous = (await coord.getVolume(name)) ?? null;
  if (!previous) throw new FsError('NOT_FOUND', `volume ${name} does not exist`);
  const config = await coord.updateVolumeConfig(name, patch);
  return { option, previous, config };
}

function optionValues(c: VolumeConfig): Record<VolumeOption, string> {
  return {
    full_threshold: `${fullThresholdPct(c)}%` + (c.fullThresholdPct === undefined ? ' (default)' : ''),
    min_insync: `${c.minInsync} of ${c.replicas}`,
    down_out_interval:
      formatDuration(downOutIntervalMs(c)) + (c.downOutIntervalMs === undefined ? ' (default)' : ''),
  };
}

export function renderVolumeSet(r: VolumeSetResult): string {
  const now = optionValues(r.config);
  const was = r.previous ? optionValues(r.previous) : undefined;
  const line = (o: VolumeOption) =>
    `${o}: ${now[o]}` +
    (was && was[o] !== now[o] ? ` (was ${was[o]})` : o === r.option ? ' (unchanged)' : '');
  return `volume ${r.config.name}: ${VOLUME_OPTIONS.map(line).join('; ')}\n`;
}
