import { FsError, type PgAssignment, targetPlacement } from '@dunix/proto';
import cliProgress from 'cli-progress';
import type { Coordinator, RebalanceJob, RecoveryReport, VolumeSnapshot } from '../coordinator.js';
import { type BrickStanding, placementCandidates, standings } from '../controller/candidates.js';

/**
 * `dunixctl volume rebalance ...`: start, pause, resume and stop the
 * volume's rebalance record, and show how far PGs are from the target
 * placement (the controller does the moves). The pure parts (the status
 * numbers, ETA formatting) are exported for tests.
 */

/** The target placement of a volume as dunixctl sees it. */
export interface VolumeTarget {
  /** For each PG the bricks that should hold it (preferred primary first); null if none can be computed. */
  target: string[][] | null;
  /** Why there is no target (e.g. fewer candidate bricks than replicas), else null. */
  error: string | null;
  /** Every member's standing. The CLI does not know how long a dead brick has been down: 0. */
  standings: BrickStanding[];
  /** Ids of the bricks the target may use. */
  candidates: ReadonlySet<string>;
}

export function volumeTarget(snap: VolumeSnapshot, nowMs: number): VolumeTarget {
  const list = standings(snap, nowMs);
  const cands = placementCandidates(snap, list);
  const candidates = new Set(cands.map((c) => c.id));
  const config = snap.config;
  if (!config) return { target: null, error: 'the volume does not exist', standings: list, candidates };
  if (cands.length < config.replicas) {
    return {
      target: null,
      error:
        `${cands.length} brick(s) may hold PGs (role in, weight > 0) ` +
        `but every PG needs ${config.replicas} (replicas)`,
      standings: list,
      candidates,
    };
  }
  try {
    const target = targetPlacement(config.pgCount, config.replicas, cands, snap.placement);
    return { target, error: null, standings: list, candidates };
  } catch (e) {
    return { target: null, error: (e as Error).message, standings: list, candidates };
  }
}

/** The same bricks, in any order. */
export function sameBrickSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}

/** PGs whose brick set differs (as a set) from their target. */
export function differingPgs(placement: readonly PgAssignment[], target: readonly string[][]): number[] {
  return placement.filter((a) => !sameBrickSet(a.bricks, target[a.pg] ?? [])).map((a) => a.pg);
}

/**
 * A PG with a copy in flight: a live listed brick outside the in-sync set
 * (being caught up), or more bricks than replicas (a move added one and has
 * not dropped the old one yet).
 */
export function pgInFlight(a: PgAssignment, replicas: number, alive: ReadonlySet<string>): boolean {
  return a.bricks.length > replicas || a.bricks.some((b) => alive.has(b) && !a.isr.includes(b));
}

/** Recovery of one group of replicas (moves, or heal), from the bricks' reports. */
export interface FlowStats {
  /** Replicas being caught up (recovery reports). */
  replicas: number;
  /** Distinct PGs among them. */
  pgs: number;
  /** Sum of ratePerS of the backfill reports: bytes per second. */
  rateBytesPerS: number;
  /** Sum of ratePerS of the log-replay reports: ops per second. */
  logOpsPerS: number;
  /** Sum of opsLeft of the log-replay reports. */
  logOpsLeft: number;
  /** Sum of bytesLeft of the reports; null without reports. */
  bytesLeft: number | null;
  /**
   * Seconds until the backfills' bytes are copied at the byte rate, or
   * longer if a log replay at its own rate needs longer. Null when unknown
   * (no reports, or a rate of 0 with work left).
   */
  etaS: number | null;
  /** The slowest catch-up (lowest rate, then oldest), or null. */
  slowest: RecoveryReport | null;
}

export function flowStats(reports: readonly RecoveryReport[]): FlowStats {
  const backfill = reports.filter((r) => r.mode === 'backfill');
  const log = reports.filter((r) => r.mode === 'log');
  const rateBytesPerS = backfill.reduce((n, r) => n + r.ratePerS, 0);
  const bytesLeft = reports.length ? reports.reduce((n, r) => n + r.bytesLeft, 0) : null;
  // Rates of log replay are ops/s: compare like with like, backfills first.
  const pool = backfill.length ? backfill : reports;
  const slowest =
    [...pool].sort((x, y) => x.ratePerS - y.ratePerS || x.startedAtMs - y.startedAtMs)[0] ?? null;
  // Backfills share the byte rate; each log replay goes at its own: the later of the two.
  const backfillEta = backfill.length
    ? etaSeconds(
        backfill.reduce((n, r) => n + r.bytesLeft, 0),
        rateBytesPerS,
      )
    : 0;
  const logEtas = log.map((r) =>
    r.opsLeft === 0 ? 0 : r.ratePerS > 0 ? Math.ceil(r.opsLeft / r.ratePerS) : null,
  );
  const etaS =
    reports.length === 0 || backfillEta === null || logEtas.includes(null)
      ? null
      : Math.max(backfillEta, ...(logEtas as number[]));
  return {
    replicas: reports.length,
    pgs: new Set(reports.map((r) => r.pg)).size,
    rateBytesPerS,
    logOpsPerS: log.reduce((n, r) => n + r.ratePerS, 0),
    logOpsLeft: log.reduce((n, r) => n + r.opsLeft, 0),
    bytesLeft,
    etaS,
    slowest,
  };
}

/** Seconds to copy `left` bytes at `rate` bytes/s (rounded up); null when unknown. */
export function etaSeconds(left: number | null, rate: number): number | null {
  if (left === null) return null;
  if (left === 0) return 0;
  return rate > 0 ? Math.ceil(left / rate) : null;
}

/** `45s`, `2m05s`, `1h02m`, `2d03h`; null (no rate) is `unknown`. */
export function formatEta(s: number | null): string {
  if (s === null || !Number.isFinite(s) || s < 0) return 'unknown';
  s = Math.ceil(s);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86_400)}d${String(Math.floor((s % 86_400) / 3600)).padStart(2, '0')}h`;
}

/** Sizes in binary units with one decimal: 1.5 GiB. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${Math.round(n)} B` : `${n.toFixed(1)} ${units[i]}`;
}

export interface RebalanceStatusResult {
  volume: string;
  pgCount: number;
  replicas: number;
  /** The current or last rebalance, or null if none ever ran. */
  job: RebalanceJob | null;
  /** Why no target placement could be computed, else null. */
  targetError: string | null;
  /** PGs whose brick set differs from the target now; null without a target. */
  pgsDiffering: number | null;
  /**
   * PGs with a replica on a brick the placement may not use (draining, out,
   * never added, weight 0): the controller moves these with or without a rebalance.
   */
  pgsForced: number;
  /** PGs on their way to the target: a copy being added and caught up, or an extra one not dropped yet. */
  pgsMoving: number[];
  /** PGs at their target with a replica catching up (a brick that came back): heal. */
  pgsHealing: number[];
  /** Catch-ups of moving PGs. */
  moves: FlowStats;
  /** Catch-ups of the other PGs (heal after a brick returns). */
  heal: FlowStats;
  /**
   * Rough seconds left for the whole job: the bytes left in the moving PGs
   * plus, for the PGs not started yet, the bytes per PG moved so far, at the
   * current rate. Null when unknown (no PG done yet, or no rate).
   */
  jobEtaS: number | null;
  /** When this was computed (dunixctl's clock, ms). */
  atMs: number;
}

/** A job the controller works on, or will again (running or paused). */
export function isActive(
  job: RebalanceJob | null | undefined,
): job is RebalanceJob & { state: 'running' | 'paused' } {
  return job?.state === 'running' || job?.state === 'paused';
}

/** The numbers of `rebalance status`, from one snapshot and the recovery reports (`t`: the target, for tests). */
export function rebalanceStatusOf(
  snap: VolumeSnapshot,
  reports: readonly RecoveryReport[],
  nowMs: number,
  t: Pick<VolumeTarget, 'target' | 'error' | 'candidates'> = volumeTarget(snap, nowMs),
): RebalanceStatusResult {
  const config = snap.config;
  if (!config) throw new FsError('NOT_FOUND', 'the volume does not exist');
  const { target, error, candidates } = t;
  const alive = new Set(snap.bricks.filter((b) => b.alive).map((b) => b.id));
  const differing = target ? new Set(differingPgs(snap.placement, target)) : null;
  const pgsMoving: number[] = [];
  const pgsHealing: number[] = [];
  let pgsForced = 0;
  for (const a of snap.placement) {
    if (a.bricks.some((b) => !candidates.has(b))) pgsForced++;
    if (!pgInFlight(a, config.replicas, alive)) continue;
    // Without a target only an extra listed copy tells a move from a heal.
    const moving = differing ? differing.has(a.pg) : a.bricks.length > config.replicas;
    (moving ? pgsMoving : pgsHealing).push(a.pg);
  }
  const movingSet = new Set(pgsMoving);
  const moveReports = reports.filter((r) =>
    differing ? differing.has(r.pg) || movingSet.has(r.pg) : movingSet.has(r.pg),
  );
  const healReports = reports.filter((r) => !moveReports.includes(r));
  const moves = flowStats(moveReports);
  const heal = flowStats(healReports);
  const job = snap.rebalance ?? null;
  let jobEtaS: number | null = null;
  if (isActive(job) && differing) {
    const notStarted = Math.max(0, differing.size - pgsMoving.length);
    if (notStarted === 0) jobEtaS = moves.etaS ?? (differing.size === 0 ? 0 : null);
    else if (job.pgsDone > 0 && job.bytesMoved > 0 && moves.rateBytesPerS > 0) {
      const bytes = (moves.bytesLeft ?? 0) + (notStarted * job.bytesMoved) / job.pgsDone;
      jobEtaS = Math.ceil(bytes / moves.rateBytesPerS);
    }
  }
  return {
    volume: config.name,
    pgCount: config.pgCount,
    replicas: config.replicas,
    job,
    targetError: error,
    pgsDiffering: differing ? differing.size : null,
    pgsForced,
    pgsMoving,
    pgsHealing,
    moves,
    heal,
    jobEtaS,
    atMs: nowMs,
  };
}

export async function rebalanceStatus(coord: Coordinator, volume: string): Promise<RebalanceStatusResult> {
  const [snap, reports] = await Promise.all([coord.getSnapshot(volume), coord.listRecovery(volume)]);
  if (!snap.config) throw new FsError('NOT_FOUND', `volume ${volume} does not exist`);
  return rebalanceStatusOf(snap, reports, Date.now());
}

function rateText(bytesPerS: number): string {
  return `${formatBytes(bytesPerS)}/s`;
}

function throttleText(job: RebalanceJob): string {
  const rate = job.maxMiBPerS > 0 ? `${job.maxMiBPerS} MiB/s per brick` : 'no rate limit';
  return `${rate}, ${job.maxConcurrent} PG(s) at once`;
}

function logText(f: FlowStats): string {
  return f.logOpsLeft > 0 || f.logOpsPerS > 0
    ? ` (log replay ${Math.round(f.logOpsPerS)} ops/s, ${f.logOpsLeft} ops left)`
    : '';
}

function flowLine(label: string, f: FlowStats, what: string): string {
  if (f.replicas === 0) return `${label}: nothing ${what}`;
  return (
    `${label}: ${f.replicas} replica(s) in ${f.pgs} PG(s) ${what}; rate ${rateText(f.rateBytesPerS)}` +
    `${logText(f)}; ` +
    `${f.bytesLeft === null ? 'bytes left unknown' : `${formatBytes(f.bytesLeft)} left`}; ETA ${formatEta(f.etaS)}`
  );
}

function slowestLine(f: FlowStats, nowMs: number): string | undefined {
  const s = f.slowest;
  if (!s) return undefined;
  const rate = s.mode === 'backfill' ? rateText(s.ratePerS) : `${Math.round(s.ratePerS)} ops/s`;
  const left = s.mode === 'backfill' ? `${formatBytes(s.bytesLeft)} left` : `${s.opsLeft} ops left`;
  const since = Math.max(0, Math.round((nowMs - s.startedAtMs) / 1000));
  return `  slowest: PG ${s.pg} on ${s.brick} (${s.mode}) at ${rate}, ${left}, for ${formatEta(since)}`;
}

function ago(nowMs: number, atMs: number): string {
  return `${formatEta(Math.max(0, Math.round((nowMs - atMs) / 1000)))} ago`;
}

export function renderRebalanceStatus(r: RebalanceStatusResult): string {
  const lines: string[] = [];
  const job = r.job;
  const now = r.atMs;
  if (!job) lines.push(`volume ${r.volume}: no rebalance has run`);
  else if (isActive(job)) {
    lines.push(
      `volume ${r.volume}: rebalance ${job.id} ${job.state}, started ` +
        `${new Date(job.startedAtMs).toISOString()} (${ago(now, job.startedAtMs)})`,
    );
  } else {
    const end = job.finishedAtMs ?? job.updatedAtMs;
    lines.push(
      `volume ${r.volume}: last rebalance ${job.id} ${job.state} at ${new Date(end).toISOString()} ` +
        `(${ago(now, end)}), ${job.pgsDone}/${job.pgsTotal} PGs, ${formatBytes(job.bytesMoved)} moved`,
    );
  }
  const differ =
    r.pgsDiffering === null
      ? `target unknown (${r.targetError})`
      : `${r.pgsDiffering} of ${r.pgCount} PGs differ from the target`;
  if (isActive(job)) {
    lines.push(`PGs: ${job.pgsDone}/${job.pgsTotal} done; ${differ}; ${r.pgsMoving.length} moving now`);
    lines.push(
      `moved ${formatBytes(job.bytesMoved)}; rate ${rateText(r.moves.rateBytesPerS)}${logText(r.moves)}; ` +
        (r.moves.bytesLeft === null
          ? 'bytes left unknown'
          : `${formatBytes(r.moves.bytesLeft)} left in the PGs moving now`) +
        `; ETA ${formatEta(r.moves.etaS)}` +
        (r.jobEtaS !== null ? ` (whole job: about ${formatEta(r.jobEtaS)})` : ''),
    );
    const slow = slowestLine(r.moves, now);
    if (slow) lines.push(slow);
    lines.push(`throttle: ${throttleText(job)}`);
  } else {
    lines.push(`PGs: ${differ}; ${r.pgsMoving.length} moving now`);
    // Drained PGs move anyway; the others wait for a rebalance.
    const balance = (r.pgsDiffering ?? 0) - r.pgsForced;
    if (balance > 0) {
      const which = r.pgsForced > 0 ? `the ${balance} not draining` : 'them';
      lines.push(`  a rebalance moves ${which}: dunixctl volume rebalance start ${r.volume}`);
    }
    if (r.moves.replicas > 0) {
      lines.push(flowLine('moves', r.moves, 'being copied'));
      const slow = slowestLine(r.moves, now);
      if (slow) lines.push(slow);
    }
  }
  if (r.pgsForced > 0) {
    lines.push(
      `drain: ${r.pgsForced} PG(s) hold a replica on a brick that is draining, out or not added; ` +
        'they move with or without a rebalance',
    );
  }
  lines.push(flowLine('heal', r.heal, 'catching up'));
  const slowHeal = slowestLine(r.heal, now);
  if (slowHeal) lines.push(slowHeal);
  return `${lines.join('\n')}\n`;
}

export interface RebalanceStartOptions {
  /** Backfill MiB/s per brick (0: no limit). */
  maxMiBPerS: number;
  /** PGs moved at once. */
  maxConcurrent: number;
  /** Replace a running or paused job. */
  restart?: boolean;
}

export interface RebalanceStartResult {
  volume: string;
  /** False when nothing differs from the target (nothing written). */
  started: boolean;
  /** The job written, or (not started) the current one. */
  job: RebalanceJob | null;
  /** A running or paused job that --restart replaced. */
  replaced: RebalanceJob | null;
  pgCount: number;
  pgsDiffering: number;
  /** Brick leading the controller election (null: nothing moves until one runs). */
  controller: string | null;
}

function activeRefusal(volume: string, job: RebalanceJob): FsError {
  return new FsError(
    'BUSY',
    `rebalance ${job.id} of volume ${volume} is already ${job.state} ` +
      `(${job.pgsDone}/${job.pgsTotal} PGs done): pause, resume or stop it, or start over with --restart`,
  );
}

export async function rebalanceStart(
  coord: Coordinator,
  volume: string,
  o: RebalanceStartOptions,
  nowMs = Date.now(),
): Promise<RebalanceStartResult> {
  const snap = await coord.getSnapshot(volume);
  if (!snap.config) throw new FsError('NOT_FOUND', `volume ${volume} does not exist`);
  if (isActive(snap.rebalance) && !o.restart) throw activeRefusal(volume, snap.rebalance);
  const t = volumeTarget(snap, nowMs);
  if (!t.target) throw new FsError('UNAVAILABLE', `no target placement for volume ${volume}: ${t.error}`);
  const differing = differingPgs(snap.placement, t.target).length;
  const controller = (await coord.getController(volume)) ?? null;
  const base = { volume, pgCount: snap.config.pgCount, pgsDiffering: differing, controller };
  if (differing === 0) return { ...base, started: false, job: snap.rebalance, replaced: null };
  let replaced: RebalanceJob | null = null;
  const job = await coord.updateRebalance(volume, (cur) => {
    if (isActive(cur) && !o.restart) throw activeRefusal(volume, cur);
    replaced = isActive(cur) ? cur : null;
    let id = nowMs.toString(36);
    if (cur?.id === id) id += '-1';
    return {
      id,
      state: 'running',
      maxMiBPerS: o.maxMiBPerS,
      maxConcurrent: o.maxConcurrent,
      startedAtMs: nowMs,
      updatedAtMs: nowMs,
      pgsTotal: differing,
      pgsDone: 0,
      bytesMoved: 0,
    };
  });
  return { ...base, started: true, job, replaced };
}

export function renderRebalanceStart(r: RebalanceStartResult): string {
  if (!r.started) {
    return `volume ${r.volume} is already balanced: every PG is on its target bricks; nothing started\n`;
  }
  const job = r.job!;
  const lines = [
    `rebalance ${job.id} started on volume ${r.volume}: ${r.pgsDiffering} of ${r.pgCount} PGs ` +
      `differ from the target; throttle ${throttleText(job)}`,
  ];
  if (r.replaced) lines.push(`it replaces rebalance ${r.replaced.id} (was ${r.replaced.state})`);
  if (!r.controller) lines.push('note: no controller leads this volume: nothing moves until a brickd runs');
  lines.push(`watch it: dunixctl volume rebalance status ${r.volume} --watch`);
  return `${lines.join('\n')}\n`;
}

export type RebalanceAction = 'pause' | 'resume' | 'stop';

export interface RebalanceActionResult {
  volume: string;
  action: RebalanceAction;
  /** False when the job already was in the state asked for. */
  changed: boolean;
  job: RebalanceJob;
}

/** The job after `action`, or undefined if it already is there; FsError for a change that makes no sense. */
export function nextJobState(
  volume: string,
  job: RebalanceJob | null,
  action: RebalanceAction,
  nowMs: number,
): RebalanceJob | undefined {
  if (!job) throw new FsError('NOT_FOUND', `no rebalance has run on volume ${volume}`);
  const again = `start a new one: dunixctl volume rebalance start ${volume}`;
  switch (action) {
    case 'pause':
      if (job.state === 'paused') return undefined;
      if (job.state !== 'running')
        throw new FsError('INVALID_ARGUMENT', `rebalance ${job.id} is ${job.state}: nothing to pause`);
      return { ...job, state: 'paused', updatedAtMs: nowMs };
    case 'resume':
      if (job.state === 'running') return undefined;
      if (job.state !== 'paused')
        throw new FsError(
          'INVALID_ARGUMENT',
          `rebalance ${job.id} is ${job.state} and cannot resume; ${again}`,
        );
      return { ...job, state: 'running', updatedAtMs: nowMs };
    case 'stop':
      if (job.state === 'stopped') return undefined;
      if (job.state === 'done')
        throw new FsError('INVALID_ARGUMENT', `rebalance ${job.id} is already done: nothing to stop`);
      return { ...job, state: 'stopped', updatedAtMs: nowMs, finishedAtMs: nowMs };
  }
}

export async function rebalanceAction(
  coord: Coordinator,
  volume: string,
  action: RebalanceAction,
  nowMs = Date.now(),
): Promise<RebalanceActionResult> {
  const config = await coord.getVolume(volume);
  if (!config) throw new FsError('NOT_FOUND', `volume ${volume} does not exist`);
  let changed = false;
  const job = await coord.updateRebalance(volume, (cur) => {
    const next = nextJobState(volume, cur, action, nowMs);
    changed = next !== undefined;
    return next;
  });
  return { volume, action, changed, job: job! };
}

export function renderRebalanceAction(r: RebalanceActionResult): string {
  const j = r.job;
  const progress = `${j.pgsDone}/${j.pgsTotal} PGs done`;
  if (!r.changed) return `rebalance ${j.id} of volume ${r.volume} is already ${j.state} (${progress})\n`;
  const hint =
    r.action === 'pause'
      ? `\nresume it: dunixctl volume rebalance resume ${r.volume}`
      : r.action === 'stop'
        ? '\nPGs already moving finish their step; drains go on without a rebalance'
        : '';
  return `rebalance ${j.id} of volume ${r.volume} ${j.state} (${progress})${hint}\n`;
}

/** What the watch's bar shows at one poll. */
export interface WatchFrame {
  /** 'rebalance' while a job is running or paused; else 'drain' (forced moves) or 'heal'. */
  label: 'rebalance' | 'drain' | 'heal';
  value: number;
  total: number;
  rateBytesPerS: number;
  etaS: number | null;
  moving: number;
  /** Whether there is anything left to watch. */
  active: boolean;
}

/**
 * The bar of one poll, given the previous one. A running or paused job
 * shows its PGs done/total. Otherwise the PGs still to drain (or, with none,
 * to heal) count down from the most seen since that label appeared; when
 * nothing is left the bar ends full under the label it had.
 */
export function watchFrame(r: RebalanceStatusResult, prev?: WatchFrame): WatchFrame {
  const job = r.job;
  const jobFrame = (j: RebalanceJob, active: boolean): WatchFrame => {
    const total = Math.max(j.pgsTotal, j.pgsDone);
    return {
      label: 'rebalance',
      value: Math.min(j.pgsDone, total),
      total,
      rateBytesPerS: r.moves.rateBytesPerS,
      etaS: active ? r.jobEtaS : 0,
      moving: r.pgsMoving.length,
      active,
    };
  };
  if (isActive(job)) return jobFrame(job, true);
  const draining = Math.max(r.pgsForced, r.pgsMoving.length);
  const pending = draining + r.pgsHealing.length;
  if (pending > 0 || r.moves.replicas + r.heal.replicas > 0) {
    const label = draining > 0 || r.moves.replicas > 0 ? 'drain' : 'heal';
    const total = prev?.label === label ? Math.max(prev.total, pending) : pending;
    const flow = label === 'drain' ? r.moves : r.heal;
    return {
      label,
      value: total - pending,
      total,
      rateBytesPerS: r.moves.rateBytesPerS + r.heal.rateBytesPerS,
      etaS: flow.etaS,
      moving: r.pgsMoving.length + r.pgsHealing.length,
      active: true,
    };
  }
  if (job && (!prev || prev.label === 'rebalance')) return jobFrame(job, false);
  const label = prev?.label ?? 'heal';
  const total = prev?.total ?? 0;
  return { label, value: total, total, rateBytesPerS: 0, etaS: 0, moving: 0, active: false };
}

export interface WatchOptions {
  /** Poll every this many ms. */
  intervalMs: number;
  /** Bound on one poll. */
  timeoutMs: number;
  /** One JSON status per poll (a line each) instead of the bar. */
  json: boolean;
  /** Where text (the final status, JSON lines) goes. */
  write(text: string): void;
  /** Where the bar is drawn: redrawn in place on a terminal, a line per poll otherwise. */
  stream: NodeJS.WritableStream;
  /** Calls `stop` on an interrupt (SIGINT); returns the unsubscribe. */
  onInterrupt(stop: () => void): () => void;
  /** Bounds a poll (the CLI's withTimeout). */
  bound<T>(p: Promise<T>): Promise<T>;
}

/**
 * `rebalance status --watch`: polls until no job is running or paused and
 * no drain or heal is under way, drawing a bar of PGs done/total with the
 * rate and ETA; then prints the final status. 0 when it ended by itself,
 * 130 when interrupted; a failed poll throws.
 */
export async function watchRebalance(
  coord: Coordinator,
  volume: string,
  first: RebalanceStatusResult,
  o: WatchOptions,
): Promise<number> {
  let interrupted = false;
  let wake: (() => void) | undefined;
  const off = o.onInterrupt(() => {
    interrupted = true;
    wake?.();
  });
  const tty = (o.stream as { isTTY?: boolean }).isTTY === true;
  const bar = new cliProgress.SingleBar({
    stream: o.stream,
    format: '{label} [{bar}] {value}/{total} PGs | {rate} | ETA {etaText} | {moving} moving',
    barsize: 30,
    hideCursor: tty,
    gracefulExit: false,
    noTTYOutput: true,
    // Off a terminal every poll is a line already: no blank line after the last.
    clearOnComplete: !tty,
    notTTYSchedule: Math.max(o.intervalMs, 100),
    fps: 5,
    emptyOnZero: true,
  });
  let status = first;
  let prev: WatchFrame | undefined;
  let barOn = false;
  try {
    for (;;) {
      const f = watchFrame(status, prev);
      prev = f;
      if (o.json) o.write(`${JSON.stringify(status)}\n`);
      else {
        const payload = {
          label: f.label,
          rate: `${formatBytes(f.rateBytesPerS)}/s`,
          etaText: formatEta(f.etaS),
          moving: f.moving,
        };
        if (!f.active && !barOn) break;
        if (!barOn) {
          bar.start(f.total, f.value, payload);
          barOn = true;
        } else {
          bar.setTotal(f.total);
          bar.update(f.value, payload);
        }
      }
      if (!f.active || interrupted) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, o.intervalMs);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = undefined;
      if (interrupted) break;
      status = await o.bound(rebalanceStatus(coord, volume));
    }
  } finally {
    if (barOn) bar.stop();
    off();
  }
  if (!o.json) o.write(renderRebalanceStatus(status));
  return interrupted ? 130 : 0;
}
