import { FsError, scrubIntervalDefaultMs, scrubIntervalMs, scrubIntervalRangeMs } from '@dunix/proto';
import type { Coordinator, ScrubJob, ScrubProblemRecord } from '../coordinator.js';
import { newScrubJob, nextScrubDueAtMs } from '../controller/scrub-schedule.js';
import { formatBytes } from './rebalance.js';
import { formatDuration, parseDuration, renderTable } from './volume.js';

/**
 * `dunixctl volume scrub start|stop|status|schedule`: the volume's scrub
 * record (the bricks do the work: each PG's primary compares its copy with
 * its replicas' and repairs from a good copy) and its per-PG results. The
 * pure parts are exported for tests.
 */

export interface ScrubStartOptions {
  /** MiB/s of scrub reads per brick; undefined: each brick's own limit (knob scrubBytesPerS); 0: none. */
  maxMiBPerS?: number;
  /** Replace a scrub that is running. */
  restart: boolean;
}

export interface ScrubStartResult {
  volume: string;
  job: ScrubJob;
  /** The running scrub this one replaced (--restart), or null. */
  replaced: ScrubJob | null;
  /** The volume's controller, or null when no brick leads it (nothing scrubs then). */
  controller: string | null;
}

export async function scrubStart(
  coord: Coordinator,
  volume: string,
  o: ScrubStartOptions,
  nowMs = Date.now(),
): Promise<ScrubStartResult> {
  const config = await coord.getVolume(volume);
  if (!config) throw new FsError('NOT_FOUND', `volume ${volume} does not exist`);
  if (o.maxMiBPerS !== undefined && !(o.maxMiBPerS >= 0 && o.maxMiBPerS <= 1e6))
    throw new FsError('INVALID_ARGUMENT', `--max-mib-per-s ${o.maxMiBPerS} must be 0..1e6`);
  let replaced: ScrubJob | null = null;
  const job = await coord.updateScrub(volume, (cur) => {
    if (cur?.state === 'running' && !o.restart)
      throw new FsError(
        'BUSY',
        `scrub ${cur.id} of volume ${volume} is running (${cur.pgsDone}/${cur.pgsTotal} PGs done): ` +
          'stop it, or start over with --restart',
      );
    replaced = cur?.state === 'running' ? cur : null;
    return newScrubJob(cur, config.pgCount, nowMs, 'operator', o.maxMiBPerS);
  });
  return { volume, job: job!, replaced, controller: (await coord.getController(volume)) ?? null };
}

export function renderScrubStart(r: ScrubStartResult): string {
  const j = r.job;
  const lines = [
    `scrub ${j.id} started on volume ${r.volume}: ${j.pgsTotal} PGs, throttle ${throttleText(j)}`,
  ];
  if (r.replaced)
    lines.push(`it replaces scrub ${r.replaced.id} (${r.replaced.pgsDone}/${r.replaced.pgsTotal} PGs done)`);
  if (!r.controller) lines.push('note: no brickd runs for this volume: nothing is scrubbed until one does');
  lines.push(`follow it: dunixctl volume scrub status ${r.volume}`);
  return `${lines.join('\n')}\n`;
}

function throttleText(j: ScrubJob): string {
  if (j.maxMiBPerS === undefined) return "each brick's default (scrubBytesPerS)";
  return j.maxMiBPerS === 0 ? 'none' : `${j.maxMiBPerS} MiB/s per brick`;
}

export interface ScrubStopResult {
  volume: string;
  /** False when no scrub was running. */
  changed: boolean;
  job: ScrubJob | null;
}

export async function scrubStop(
  coord: Coordinator,
  volume: string,
  nowMs = Date.now(),
): Promise<ScrubStopResult> {
  if (!(await coord.getVolume(volume))) throw new FsError('NOT_FOUND', `volume ${volume} does not exist`);
  let changed = false;
  const job = await coord.updateScrub(volume, (cur) => {
    if (cur?.state !== 'running') return undefined;
    changed = true;
    return { ...cur, state: 'stopped', updatedAtMs: nowMs, finishedAtMs: nowMs };
  });
  return { volume, changed, job };
}

export function renderScrubStop(r: ScrubStopResult): string {
  if (!r.changed)
    return `no scrub runs on volume ${r.volume}${r.job ? ` (scrub ${r.job.id} is ${r.job.state})` : ''}\n`;
  return `scrub ${r.job!.id} of volume ${r.volume} stopped at ${r.job!.pgsDone}/${r.job!.pgsTotal} PGs\n`;
}

/** One wrong copy, as status lists it. */
export interface ScrubProblemRow extends ScrubProblemRecord {
  pg: number;
}

export interface ScrubStatusResult {
  volume: string;
  pgCount: number;
  /** The schedule: every this many ms (0: off), and whether that is the default. */
  intervalMs: number;
  intervalDefault: boolean;
  /** The current or last scrub, or null if none ever ran. */
  job: ScrubJob | null;
  /** How long it has run (or ran), ms; null without a job. */
  elapsedMs: number | null;
  /** bytesVerified over elapsed time (the PGs' primaries; each replica reads as much again). */
  rateBytesPerS: number | null;
  /** When the schedule starts the next scrub (ms since the epoch), null when off or one runs. */
  nextDueAtMs: number | null;
  /** Problems of the job's PGs, by PG, the unrecoverable ones first. */
  problems: ScrubProblemRow[];
  /** Problems the PGs found beyond those listed in their results. */
  unlisted: number;
  /** Replicas that could not be compared, by PG (they were unreachable or behind). */
  skipped: { pg: number; bricks: string[] }[];
}

export async function scrubStatus(
  coord: Coordinator,
  volume: string,
  nowMs = Date.now(),
): Promise<ScrubStatusResult> {
  const snap = await coord.getSnapshot(volume);
  const config = snap.config;
  if (!config) throw new FsError('NOT_FOUND', `volume ${volume} does not exist`);
  const job = snap.scrub ?? null;
  const results = job ? await coord.listScrubResults(volume, job.id) : [];
  const elapsedMs = job
    ? Math.max(0, (job.state === 'running' ? nowMs : (job.finishedAtMs ?? nowMs)) - job.startedAtMs)
    : null;
  const rank = { unrecoverable: 0, unrepaired: 1, repaired: 2 } as const;
  const problems = results
    .flatMap((r) => r.problems.map((p) => ({ pg: r.pg, ...p })))
    .sort((x, y) => rank[x.state] - rank[y.state] || x.pg - y.pg);
  return {
    volume,
    pgCount: config.pgCount,
    intervalMs: scrubIntervalMs(config),
    intervalDefault: config.scrubIntervalMs === undefined,
    job,
    elapsedMs,
    rateBytesPerS: job && elapsedMs ? Math.round(job.bytesVerified / (elapsedMs / 1000)) : null,
    nextDueAtMs: nextScrubDueAtMs(scrubIntervalMs(config), job, config.createdAtMs),
    problems,
    unlisted: results.reduce((n, r) => n + r.found - r.problems.length, 0),
    skipped: results.filter((r) => r.skipped.length > 0).map((r) => ({ pg: r.pg, bricks: r.skipped })),
  };
}

const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

export function renderScrubStatus(r: ScrubStatusResult): string {
  const lines: string[] = [];
  const schedule =
    r.intervalMs === 0
      ? 'off'
      : `every ${formatDuration(r.intervalMs)}${r.intervalDefault ? ' (default)' : ''}` +
        (r.nextDueAtMs !== null ? `, next ${iso(r.nextDueAtMs)}` : '');
  const j = r.job;
  if (!j) {
    lines.push(`volume ${r.volume}: no scrub has run; schedule ${schedule}`);
    return `${lines.join('\n')}\n`;
  }
  lines.push(
    `scrub ${j.id} of volume ${r.volume}: ${j.state} (${j.trigger}), started ${iso(j.startedAtMs)}` +
      (j.finishedAtMs !== undefined ? `, ended ${iso(j.finishedAtMs)}` : '') +
      (r.elapsedMs !== null ? ` (${formatDuration(Math.round(r.elapsedMs / 1000) * 1000)})` : ''),
  );
  lines.push(
    `PGs ${j.pgsDone}/${j.pgsTotal} done; verified ${formatBytes(j.bytesVerified)}` +
      (r.rateBytesPerS !== null ? ` at ${formatBytes(r.rateBytesPerS)}/s` : '') +
      `; throttle ${throttleText(j)}`,
  );
  lines.push(`problems: ${j.found} found, ${j.repaired} repaired, ${j.unrecoverable} unrecoverable`);
  if (j.orphanBlocksRemoved)
    lines.push(
      `block files no record named, removed: ${j.orphanBlocksRemoved} (space nothing accounted for)`,
    );
  lines.push(
    `schedule ${schedule}; last complete scrub ${j.lastCompletedAtMs !== undefined ? iso(j.lastCompletedAtMs) : 'never'}`,
  );
  if (r.skipped.length > 0)
    lines.push(
      `replicas not compared: ${r.skipped.map((s) => `pg ${s.pg} (${s.bricks.join(', ')})`).join('; ')}`,
    );
  let out = `${lines.join('\n')}\n`;
  if (r.problems.length > 0) {
    out += renderTable(
      ['PG', 'STATE', 'KIND', 'BRICK', 'INODE', 'BLOCK', 'DETAIL'],
      r.problems.map((p) => [
        p.pg,
        p.state,
        p.kind,
        p.brick,
        p.ino ?? '-',
        p.index ?? (p.keys !== undefined ? `${p.keys} keys` : '-'),
        p.detail.length > 80 ? `${p.detail.slice(0, 77)}...` : p.detail,
      ]),
    );
  }
  if (r.unlisted > 0) out += `(${r.unlisted} more problems not listed)\n`;
  return out;
}

export interface ScrubScheduleResult {
  volume: string;
  previousMs: number;
  intervalMs: number;
}

/** `schedule VOLUME INTERVAL`: a duration (7d, 12h, ...), `off` (0) or `default`. */
export async function scrubSchedule(
  coord: Coordinator,
  volume: string,
  value: string,
): Promise<ScrubScheduleResult> {
  const v = value.trim().toLowerCase();
  let ms: number | undefined;
  if (v === 'off' || v === '0') ms = 0;
  else if (v === 'default') ms = scrubIntervalDefaultMs;
  else {
    ms = parseDuration(v);
    const { min, max } = scrubIntervalRangeMs;
    if (ms < min || ms > max)
      throw new FsError(
        'INVALID_ARGUMENT',
        `scrub interval ${formatDuration(ms)} must be off or ${formatDuration(min)}..${formatDuration(max)}`,
      );
  }
  const before = await coord.getVolume(volume);
  if (!before) throw new FsError('NOT_FOUND', `volume ${volume} does not exist`);
  const after = await coord.updateVolumeConfig(volume, { scrubIntervalMs: ms });
  return { volume, previousMs: scrubIntervalMs(before), intervalMs: scrubIntervalMs(after) };
}

export function renderScrubSchedule(r: ScrubScheduleResult): string {
  const text = (ms: number) => (ms === 0 ? 'off' : `every ${formatDuration(ms)}`);
  return `volume ${r.volume}: scrub ${text(r.intervalMs)}${r.previousMs !== r.intervalMs ? ` (was ${text(r.previousMs)})` : ''}\n`;
}
