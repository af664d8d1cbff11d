import { scrubIntervalMs, type Logger } from '@dunix/proto';
import type { Coordinator, ScrubJob, VolumeSnapshot } from '../coordinator.js';

/**
 * The volume's scrub schedule (option scrubIntervalMs, 0: off): a scrub is
 * due once the last one ended (done or stopped) that long ago; a volume
 * that never had one counts from its creation. The controller starts the
 * job; the bricks do the work (brickd's scrub runner).
 */

/** When a scheduled scrub is due (ms, the clock of `createdAtMs`), or null: off, or one runs. */
export function nextScrubDueAtMs(
  intervalMs: number,
  job: ScrubJob | null,
  createdAtMs: number,
): number | null {
  if (intervalMs <= 0 || job?.state === 'running') return null;
  const last = job ? (job.finishedAtMs ?? job.updatedAtMs) : createdAtMs;
  return last + intervalMs;
}

/** A fresh running job after `prev` (whose last completion it carries on). */
export function newScrubJob(
  prev: ScrubJob | null,
  pgCount: number,
  nowMs: number,
  trigger: ScrubJob['trigger'],
  maxMiBPerS?: number,
): ScrubJob {
  let id = Math.round(nowMs).toString(36);
  if (prev?.id === id) id += '-1';
  return {
    id,
    state: 'running',
    trigger,
    ...(maxMiBPerS !== undefined ? { maxMiBPerS } : {}),
    startedAtMs: nowMs,
    updatedAtMs: nowMs,
    ...(prev?.lastCompletedAtMs !== undefined ? { lastCompletedAtMs: prev.lastCompletedAtMs } : {}),
    pgsTotal: pgCount,
    pgsDone: 0,
    bytesVerified: 0,
    found: 0,
    repaired: 0,
    unrecoverable: 0,
  };
}

/** How soon to look again after the store failed. */
const RETRY_MS = 60_000;

/**
 * Starts the scheduled scrub if it is due (read-modify-write: only if the
 * record still is the one the due time came from). Resolves to when to look
 * next (ms), or null: nothing to wait for (off, or a scrub runs).
 */
export async function runScrubSchedule(
  coord: Coordinator,
  volume: string,
  snap: VolumeSnapshot,
  nowMs: number,
  log: Logger,
): Promise<number | null> {
  const config = snap.config;
  if (!config) return null;
  const dueMs = nextScrubDueAtMs(scrubIntervalMs(config), snap.scrub ?? null, config.createdAtMs);
  if (dueMs === null || dueMs > nowMs) return dueMs;
  try {
    let started: ScrubJob | undefined;
    await coord.updateScrub(volume, (cur) => {
      const due = nextScrubDueAtMs(scrubIntervalMs(config), cur, config.createdAtMs);
      if (due === null || due > nowMs) return undefined;
      started = newScrubJob(cur, config.pgCount, nowMs, 'schedule');
      return started;
    });
    if (started) log.info('scheduled scrub started', { volume, job: started.id, pgs: started.pgsTotal });
    return null;
  } catch (e) {
    log.warn('scheduled scrub not started; trying again later', { volume, err: e });
    return nowMs + RETRY_MS;
  }
}
