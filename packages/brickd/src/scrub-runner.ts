import type { ScrubJob, ScrubPgResult, ScrubProblemRecord } from '@dunix/coord';
import { SCRUB_PROBLEMS_LISTED_MAX } from '@dunix/coord';
import { FsError, type Logger } from '@dunix/proto';
import type { Brick } from './brick.js';
import type { BrickKnobs } from './config.js';
import type { ProtocolClock } from './replication/deps.js';
import type { ScrubOutcome } from './replication/scrub.js';

/** Where a brick keeps its scrub results (the coordinator: reportScrubPg, getScrubResult). */
export interface ScrubControl {
  /** The stored result of a PG: its job id says whether the running job has it. */
  result(pg: number): Promise<{ jobId: string } | undefined>;
  report(result: ScrubPgResult): Promise<'recorded' | 'duplicate' | 'stale'>;
  /** Adds block files the sweep of this brick's copies removed to job `jobId`'s count. */
  orphansRemoved(jobId: string, count: number): Promise<void>;
}

export interface ScrubRunnerOptions {
  brick: Brick;
  brickId: string;
  control: ScrubControl;
  knobs: Pick<BrickKnobs, 'scrubBytesPerS' | 'scrubRescanMs'>;
  log: Logger;
  clock: ProtocolClock;
  /** Wall-clock ms for the results' timestamps. */
  wallMs: () => number;
}

/**
 * A brick's part of a scrub job: while the volume's scrub record says
 * running, it scrubs, one at a time, every PG it leads whose result for the
 * job is not in yet, and records each PG's result (the record's totals go
 * up with it). A PG it starts leading later (a failover) is found by a
 * rescan every scrubRescanMs; a PG scrubbed by an earlier primary counts
 * once. Reads are paced by the job's limit, else the brick's knob.
 */
export class ScrubRunner {
  private job: ScrubJob | undefined;
  private loop: Promise<void> | undefined;
  /** PGs whose result for `doneJob` is known to be in. */
  private readonly done = new Set<number>();
  private doneJob = '';
  private stopped = false;
  private wake: (() => void) | undefined;

  constructor(private readonly o: ScrubRunnerOptions) {}

  /** The volume's scrub record, as each snapshot brings it. */
  setJob(job: ScrubJob | undefined): void {
    this.job = job;
    const mib = job?.maxMiBPerS;
    this.o.brick.repl.scrub.setLimit(mib === undefined ? this.o.knobs.scrubBytesPerS : mib * 1024 * 1024);
    if (job?.state === 'running' && !this.loop && !this.stopped) {
      this.loop = this.run()
        .catch((err) => this.o.log.error('scrub runner failed', { err: String(err) }))
        .finally(() => (this.loop = undefined));
    }
    this.wake?.();
  }

  /** Ends the runner; resolves once the range it scrubs is done (or after a second: pacing may sleep longer). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    if (this.loop) await Promise.race([this.loop, this.o.clock.sleep(1000)]);
  }

  private running(id: string): boolean {
    return !this.stopped && this.job?.id === id && this.job.state === 'running';
  }

  private async run(): Promise<void> {
    while (!this.stopped && this.job?.state === 'running') {
      const id = this.job.id;
      if (this.doneJob !== id) {
        this.done.clear();
        this.doneJob = id;
        await this.sweepOrphans(id);
      }
      await this.pass(id);
      if (!this.running(id)) continue;
      await Promise.race([
        this.o.clock.sleep(this.o.knobs.scrubRescanMs),
        new Promise<void>((r) => (this.wake = r)),
      ]);
      this.wake = undefined;
    }
  }

  /**
   * Once per job: every copy this brick holds (any role) loses the block
   * files no record names (Brick.sweepOrphanBlocks); the count goes to the job.
   */
  private async sweepOrphans(id: string): Promise<void> {
    let removed = 0;
    for (const pg of [...this.o.brick.pgs.keys()].sort((a, b) => a - b)) {
      if (!this.running(id)) break;
      try {
        removed += await this.o.brick.sweepOrphanBlocks(pg);
      } catch (err) {
        this.o.log.warn('orphan block sweep of a PG failed', { pg, err: String(err) });
      }
    }
    if (removed === 0) return;
    this.o.log.warn('removed block files no record named', { job: id, removed });
    await this.o.control
      .orphansRemoved(id, removed)
      .catch((err) => this.o.log.warn('orphan count not recorded', { job: id, err: String(err) }));
  }

  /** Every PG this brick leads that the job lacks. */
  private async pass(id: string): Promise<void> {
    const brick = this.o.brick;
    for (const pg of [...brick.pgs.keys()].sort((a, b) => a - b)) {
      if (!this.running(id)) return;
      const st = brick.pgs.get(pg);
      if (!st || this.done.has(pg) || !brick.leads(pg)) continue;
      try {
        if ((await this.o.control.result(pg))?.jobId === id) {
          this.done.add(pg);
          continue;
        }
        const started = this.o.clock.nowMs();
        const outcome = await brick.repl.scrub.scrubPg(st, { cancelled: () => !this.running(id) });
        if (!outcome.complete) continue;
        const result = toResult(id, outcome, this.o.brickId, this.o.wallMs());
        const recorded = await this.o.control.report(result);
        this.o.log.info('scrubbed a PG', {
          pg,
          job: id,
          keys: outcome.keys,
          blocks: outcome.blocks,
          bytes: outcome.bytes,
          ms: Math.round(this.o.clock.nowMs() - started),
          problems: outcome.problems.length,
          skipped: outcome.skipped.map((s) => s.brick),
          recorded,
        });
        if (recorded === 'stale') return;
        this.done.add(pg);
      } catch (err) {
        if (err instanceof FsError) this.o.log.info('scrub of a PG interrupted', { pg, err: err.message });
        else this.o.log.error('scrub of a PG failed', { pg, err: String(err) });
      }
    }
  }
}

/** A PG's outcome as the record stored in etcd (problems listed up to the bound). */
export function toResult(jobId: string, o: ScrubOutcome, brick: string, atMs: number): ScrubPgResult {
  const problems: ScrubProblemRecord[] = o.problems.slice(0, SCRUB_PROBLEMS_LISTED_MAX).map((p) => ({
    kind: p.kind,
    brick: p.brick,
    ...(p.ino !== undefined ? { ino: p.ino.toString() } : {}),
    ...(p.index !== undefined ? { index: p.index.toString() } : {}),
    ...(p.keys !== undefined ? { keys: p.keys } : {}),
    detail: p.detail.slice(0, 1024),
    state: p.state,
  }));
  return {
    jobId,
    pg: o.pg,
    brick,
    epoch: o.epoch,
    atMs,
    keys: o.keys,
    blocks: o.blocks,
    bytes: o.bytes,
    replicas: o.replicas.filter((b) => !o.skipped.some((s) => s.brick === b)),
    skipped: o.skipped.map((s) => s.brick),
    problems,
    found: o.problems.length,
    repaired: o.problems.filter((p) => p.state === 'repaired').length,
    unrecoverable: o.problems.filter((p) => p.state === 'unrecoverable').length,
  };
}
