import { type BrickUsage, createLogger, downOutIntervalMs, targetPlacement, type Logger } from '@dunix/proto';
import { type Clock, realClock } from '../clock.js';
import type {
  Coordinator,
  PlacementUpdateResult,
  Suspect,
  Unsubscribe,
  VolumeSnapshot,
} from '../coordinator.js';
import type { Campaign, ElectionState } from '../election.js';
import { type ControllerKnobs, validateControllerKnobs } from '../knobs.js';
import { placementCandidates, standings } from './candidates.js';
import { differsFromTarget, inMotion, planMoves, type MoveChange } from './moves.js';
import { planPlacement } from './plan.js';
import { runScrubSchedule } from './scrub-schedule.js';
import type { BrickProbe } from './tcp-probe.js';

export interface ControllerOptions {
  /** A started coordinator; the controller never stops it. */
  coordinator: Coordinator;
  volume: string;
  /** This candidate's id in the election: the id of the brick that runs the controller. */
  brickId: string;
  /** Tells whether a suspect brick's process is gone; tcpProbe() in a daemon. */
  probe: BrickProbe;
  clock?: Clock;
  log?: Logger;
  knobs?: Partial<ControllerKnobs>;
}

/**
 * The controller of one volume. Every brick runs one; the election picks
 * the one that acts. While leading it watches the volume and, after each
 * snapshot, applies planPlacement's changes, each a compare-and-swap on
 * the PG's epoch, batched into few transactions (a lost swap means someone
 * else changed the PG: re-read, re-plan). A dead brick is normally seen when its lease expires; the fast
 * path is a suspect report (reportSuspect): the leader probes the brick and,
 * if its process is gone, expires its lease at once. Candidates that do not
 * lead handle reports about the leader itself, whose own death would
 * otherwise wait for its election lease.
 *
 * Safe with two leaders for a moment (after a partition): every change is a
 * compare-and-swap planned from the state it replaces.
 */
export class Controller {
  readonly knobs: ControllerKnobs;
  private readonly coord: Coordinator;
  private readonly volume: string;
  private readonly brickId: string;
  private readonly probe: BrickProbe;
  private readonly clock: Clock;
  private readonly log: Logger;
  private state: 'new' | 'started' | 'stopped' = 'new';
  private starting: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  private campaign: Campaign | undefined;
  private election: ElectionState = { leading: false, leaderId: undefined };
  /** Bumped on every change of leadership: work of an older term stops. */
  private term = 0;
  private unwatchSuspects: Unsubscribe | undefined;
  private unwatchVolume: Unsubscribe | undefined;
  private snapshot: VolumeSnapshot | undefined;
  private suspects: Suspect[] = [];
  /** Suspect report revision last handled, per brick. */
  private readonly handled = new Map<string, number>();
  private readonly probing = new Set<string>();
  private dirty = false;
  private passing = false;
  /** A pass to retry after a failure. */
  private retryTimer: unknown;
  /** Watching the volume to retry after a failure. */
  private leadRetryTimer: unknown;
  private readonly tasks = new Set<Promise<void>>();
  /** When each dead member was first seen down (this leader's view; a new leader starts over). */
  private readonly downSinceMs = new Map<string, number>();
  /** A pass when the next dead brick reaches the down-out interval. */
  private downOutTimer: unknown;
  /** Probes in flight: stop() settles them as 'up' rather than wait for a probe that hangs. */
  private readonly probesInFlight = new Set<(v: 'down' | 'up') => void>();
  /** A pass when the scheduled scrub is due (scrub-schedule.ts). */
  private scrubTimer: unknown;

  constructor(opts: ControllerOptions) {
    this.knobs = validateControllerKnobs(opts.knobs);
    this.coord = opts.coordinator;
    this.volume = opts.volume;
    this.brickId = opts.brickId;
    this.probe = opts.probe;
    this.clock = opts.clock ?? realClock;
    this.log = opts.log ?? createLogger('controller');
  }

  /** Joins the election and watches suspect reports. Idempotent; a failed start cleans up. */
  start(): Promise<void> {
    if (this.state === 'stopped') return Promise.reject(new Error('controller was stopped; make a new one'));
    this.starting ??= (async () => {
      this.state = 'started';
      try {
        this.unwatchSuspects = await this.coord.watchSuspects(this.volume, (s) => {
          this.suspects = s;
          this.onSuspects();
        });
        this.campaign = await this.coord.campaign(
          this.volume,
          this.brickId,
          (s) => this.onElection(s),
          this.knobs.electionLeaseTtlMs,
        );
      } catch (e) {
        // Not stop(): it waits for this very start to settle.
        this.state = 'stopped';
        this.term++;
        this.clearRetries();
        await this.release();
        throw e;
      }
    })();
    return this.starting;
  }

  /** Resigns (another candidate takes over at once) and stops watching. Idempotent; final. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.state = 'stopped';
      this.term++;
      this.clearRetries();
      await this.starting?.catch(() => undefined);
      await this.release();
    })();
    return this.stopping;
  }

  /** Resigns, stops watching and waits for running work (stop, and a start that failed). */
  private async release(): Promise<void> {
    await this.campaign?.resign().catch((e: unknown) => this.log.warn('resign failed', { err: e }));
    await this.unwatchSuspects?.().catch(() => undefined);
    await this.unwatchVolume?.().catch(() => undefined);
    this.unwatchVolume = undefined;
    for (const finish of [...this.probesInFlight]) finish('up');
    await this.idle();
  }

  isLeader(): boolean {
    return this.state === 'started' && this.election.leading;
  }

  /** Resolves once no pass, probe or expiry is running (a retry may still be scheduled on the clock). */
  async idle(): Promise<void> {
    while (this.tasks.size) await Promise.all([...this.tasks]);
  }

  /** Runs background work; a failure there is a bug and crashes loudly instead of being swallowed. */
  private track(p: Promise<void>): void {
    const t: Promise<void> = p.then(
      () => {
        this.tasks.delete(t);
      },
      (e: unknown) => {
        this.tasks.delete(t);
        this.log.error('BUG: controller task failed', { volume: this.volume, err: e });
        queueMicrotask(() => {
          throw e;
        });
      },
    );
    this.tasks.add(t);
  }

  private clearRetries(): void {
    for (const t of [this.retryTimer, this.leadRetryTimer, this.downOutTimer, this.scrubTimer])
      if (t !== undefined) this.clock.clearTimeout(t);
    this.retryTimer = undefined;
    this.leadRetryTimer = undefined;
    this.downOutTimer = undefined;
    this.scrubTimer = undefined;
    this.downSinceMs.clear();
  }

  private onElection(s: ElectionState): void {
    if (this.state !== 'started') return;
    const was = this.election.leading;
    this.election = s;
    if (s.leading !== was) {
      this.term++;
      this.clearRetries();
      if (s.leading) {
        this.handled.clear();
        this.track(this.lead(this.term));
      } else {
        this.track(this.follow());
      }
    }
    this.onSuspects();
  }

  private async lead(term: number): Promise<void> {
    let unwatch: Unsubscribe;
    try {
      unwatch = await this.coord.watchVolume(this.volume, (snap) => {
        if (term !== this.term) return;
        this.snapshot = snap;
        this.kick();
      });
    } catch (e) {
      if (term !== this.term) return;
      this.log.warn('controller could not watch the volume; retrying', { volume: this.volume, err: e });
      this.leadRetryTimer = this.clock.setTimeout(() => {
        this.leadRetryTimer = undefined;
        if (term === this.term) this.track(this.lead(term));
      }, this.knobs.retryMs);
      return;
    }
    if (term !== this.term) {
      await unwatch().catch(() => undefined);
      return;
    }
    this.unwatchVolume = unwatch;
  }

  private async follow(): Promise<void> {
    const unwatch = this.unwatchVolume;
    this.unwatchVolume = undefined;
    this.snapshot = undefined;
    await unwatch?.().catch(() => undefined);
  }

  /** Asks for a pass over the latest snapshot (now, or after the one running). */
  private kick(): void {
    this.dirty = true;
    if (this.passing || this.retryTimer !== undefined) return;
    this.passing = true;
    this.track(this.runPasses());
  }

  /** Passes while there is news; a pass that fails is retried after retryMs. */
  private async runPasses(): Promise<void> {
    try {
      while (this.dirty && this.snapshot && this.isLeader()) {
        this.dirty = false;
        const term = this.term;
        if (!(await this.pass(term, this.snapshot)) && term === this.term) {
          this.dirty = true;
          this.retryTimer = this.clock.setTimeout(() => {
            this.retryTimer = undefined;
            this.kick();
          }, this.knobs.retryMs);
          return;
        }
      }
    } finally {
      this.passing = false;
    }
  }

  /**
   * Plans from `snap` and applies the changes (compare-and-swaps, batched
   * into few transactions); on lost swaps re-reads and re-plans. False when
   * the store failed or the PGs kept changing.
   */
  private async pass(term: number, first: VolumeSnapshot): Promise<boolean> {
    await this.scrubSchedule(term, first);
    let snap = first;
    for (let attempt = 0; attempt < this.knobs.replanAttemptsMax; attempt++) {
      const changes = planPlacement(snap);
      // Failovers and shrinks first; moves once the map needs none (they plan from the same epochs).
      if (changes.length === 0) return this.movePass(term, snap);
      let results: PlacementUpdateResult[];
      try {
        results = await this.coord.updatePlacements(
          this.volume,
          changes.map((c) => ({ pg: c.pg, expectedEpoch: c.expectedEpoch, bricks: c.bricks, isr: c.isr })),
        );
      } catch (e) {
        if (term !== this.term) return true;
        this.log.warn('placement update failed; retrying', { volume: this.volume, err: e });
        return false;
      }
      const done = { failover: 0, shrink: 0, stale: 0 };
      results.forEach((r, i) => {
        const c = changes[i]!;
        if (!r.applied) {
          done.stale++;
          return;
        }
        done[c.kind]++;
        if (c.kind === 'failover') {
          this.log.info('PG failed over', {
            volume: this.volume,
            pg: c.pg,
            primary: c.bricks[0],
            dropped: c.dropped,
          });
        }
      });
      this.log.info('controller pass', { volume: this.volume, planned: changes.length, ...done });
      if (done.stale === 0 || term !== this.term) return true;
      try {
        snap = await this.coord.getSnapshot(this.volume);
      } catch (e) {
        this.log.warn('volume read failed; retrying', { volume: this.volume, err: e });
        return false;
      }
      if (term !== this.term) return true;
    }
    this.log.warn('PGs kept changing under the controller; retrying', { volume: this.volume });
    return false;
  }

  /**
   * Moves PG replicas toward the target placement (moves.ts): off draining
   * and out bricks always, toward balance while a rebalance runs, and keeps
   * the rebalance record's progress. Each step is a compare-and-swap; a lost
   * one is replanned on the next snapshot (every step changes the map, so
   * one comes).
   */
  private async movePass(term: number, snap: VolumeSnapshot): Promise<boolean> {
    const config = snap.config;
    if (!config) return true;
    const nowMs = this.clock.now();
    this.trackDown(snap, nowMs, downOutIntervalMs(config));
    const list = standings(snap, nowMs, this.downSinceMs);
    const candidates = placementCandidates(snap, list);
    if (candidates.length < config.replicas) return true;
    const target = targetPlacement(config.pgCount, config.replicas, candidates, snap.placement);
    const alive = new Set(snap.bricks.filter((b) => b.alive).map((b) => b.id));
    const job = snap.rebalance;
    const running = job?.state === 'running';
    let moves = planMoves(snap.placement, target, {
      replicas: config.replicas,
      alive,
      candidates: new Set(candidates.map((c) => c.id)),
      balance: running,
      maxConcurrent: running ? job.maxConcurrent : this.knobs.forcedMovesConcurrent,
    });
    if (moves.some((m) => m.kind === 'add')) moves = await this.withoutAddsToFull(moves);
    if (moves.length > 0) {
      let results: PlacementUpdateResult[];
      try {
        results = await this.coord.updatePlacements(
          this.volume,
          moves.map((c) => ({ pg: c.pg, expectedEpoch: c.expectedEpoch, bricks: c.bricks, isr: c.isr })),
        );
      } catch (e) {
        if (term !== this.term) return true;
        this.log.warn('move failed; retrying', { volume: this.volume, err: e });
        return false;
      }
      const done = { add: 0, handover: 0, drop: 0, stale: 0 };
      results.forEach((r, i) => {
        const c = moves[i]!;
        if (!r.applied) done.stale++;
        else {
          done[c.kind]++;
          this.logMove(c);
        }
      });
      this.log.info('controller moves', { volume: this.volume, planned: moves.length, ...done });
    }
    if (running && term === this.term) await this.recordProgress(snap, target, alive);
    return true;
  }

  /**
   * A full brick (its usage record says so) gets no new PG copy: the adds
   * onto it wait (the next pass plans them again) until it has space, while
   * every other step goes on. Without usage records nothing is held back.
   */
  private async withoutAddsToFull(moves: MoveChange[]): Promise<MoveChange[]> {
    let usage: Map<string, BrickUsage>;
    try {
      usage = await this.coord.listUsage(this.volume);
    } catch (e) {
      this.log.warn('usage not read; adds go ahead', { volume: this.volume, err: e });
      return moves;
    }
    const full = new Set([...usage].filter(([, u]) => u.state === 'full').map(([id]) => id));
    if (full.size === 0) return moves;
    const held = moves.filter((m) => m.kind === 'add' && full.has(m.brick));
    if (held.length > 0)
      this.log.warn('not adding PG copies to full bricks', {
        volume: this.volume,
        bricks: [...full],
        pgs: held.map((m) => m.pg),
      });
    return moves.filter((m) => !held.includes(m));
  }

  private logMove(c: MoveChange): void {
    const what = { add: 'replica added', handover: 'primary handed over', drop: 'replica dropped' }[c.kind];
    this.log.info(what, { volume: this.volume, pg: c.pg, brick: c.brick, bricks: c.bricks });
  }

  /** Updates the running job: PGs done, and 'done' once every PG is at its target. */
  private async recordProgress(snap: VolumeSnapshot, target: string[][], alive: ReadonlySet<string>) {
    const differ = snap.placement.filter((a) => differsFromTarget(a, target[a.pg]!)).length;
    const moving = snap.placement.filter((a) => inMotion(a, target[a.pg]!, alive)).length;
    const nowMs = this.clock.now();
    try {
      await this.coord.updateRebalance(this.volume, (j) => {
        if (!j || j.state !== 'running') return undefined;
        const pgsTotal = Math.max(j.pgsTotal, j.pgsDone + differ);
        const pgsDone = Math.max(j.pgsDone, pgsTotal - differ);
        if (differ === 0 && moving === 0)
          return { ...j, pgsTotal, pgsDone, state: 'done', updatedAtMs: nowMs, finishedAtMs: nowMs };
        if (pgsDone === j.pgsDone && pgsTotal === j.pgsTotal) return undefined;
        return { ...j, pgsTotal, pgsDone, updatedAtMs: nowMs };
      });
    } catch (e) {
      this.log.warn('rebalance progress not recorded', { volume: this.volume, err: e });
    }
  }

  /** Remembers when dead members went down; wakes a pass when the next one is out. */
  private trackDown(snap: VolumeSnapshot, nowMs: number, outAfterMs: number): void {
    let nextOutMs = Infinity;
    for (const b of snap.bricks) {
      if (b.alive) {
        this.downSinceMs.delete(b.id);
        continue;
      }
      const since = this.downSinceMs.get(b.id) ?? nowMs;
      this.downSinceMs.set(b.id, since);
      if (since + outAfterMs > nowMs) nextOutMs = Math.min(nextOutMs, since + outAfterMs);
    }
    if (this.downOutTimer !== undefined) this.clock.clearTimeout(this.downOutTimer);
    this.downOutTimer = undefined;
    if (nextOutMs !== Infinity) {
      this.downOutTimer = this.clock.setTimeout(
        () => {
          this.downOutTimer = undefined;
          this.kick();
        },
        nextOutMs - nowMs + 1,
      );
    }
  }

  // ---------------------------------------------------------- scheduled scrub

  /** Starts the volume's scrub when the schedule says so; wakes a pass when it will. */
  private async scrubSchedule(term: number, snap: VolumeSnapshot): Promise<void> {
    if (this.scrubTimer !== undefined) this.clock.clearTimeout(this.scrubTimer);
    this.scrubTimer = undefined;
    const nextMs = await runScrubSchedule(this.coord, this.volume, snap, this.clock.now(), this.log);
    if (nextMs === null || term !== this.term) return;
    // Long waits are re-armed on the way (timers take at most ~24 days).
    const waitMs = Math.min(Math.max(0, nextMs - this.clock.now()) + 1, 3600_000);
    this.scrubTimer = this.clock.setTimeout(() => {
      this.scrubTimer = undefined;
      this.kick();
    }, waitMs);
  }

  /** Starts a check of every report not handled yet that this candidate is in charge of. */
  private onSuspects(): void {
    if (this.state !== 'started') return;
    const current = new Set(this.suspects.map((s) => s.brickId));
    for (const id of this.handled.keys()) if (!current.has(id)) this.handled.delete(id);
    for (const s of this.suspects) {
      if (s.brickId === this.brickId) continue;
      // The leader handles every report; the others only reports about the leader.
      if (!this.election.leading && s.brickId !== this.election.leaderId) continue;
      if (this.handled.get(s.brickId) === s.revision || this.probing.has(s.brickId)) continue;
      this.handled.set(s.brickId, s.revision);
      this.probing.add(s.brickId);
      this.track(
        this.checkSuspect(s.brickId).finally(() => {
          this.probing.delete(s.brickId);
          this.onSuspects(); // a report that came in meanwhile
        }),
      );
    }
  }

  /** Probes every address of the brick; if all refuse, its process is gone: expire its lease now. */
  private async checkSuspect(id: string): Promise<void> {
    const ctx = { volume: this.volume, brick: id };
    let snap: VolumeSnapshot;
    try {
      snap = await this.coord.getSnapshot(this.volume);
    } catch (e) {
      this.log.warn('could not read the volume to check a suspect', { ...ctx, err: e });
      return;
    }
    const b = snap.bricks.find((x) => x.id === id);
    // A dead brick needs nothing, unless it still holds the election (its brick lease went first).
    if (!b || (!b.alive && id !== this.election.leaderId) || this.state !== 'started') return;
    const addresses = [b.address, ...(b.dataAddress !== undefined ? [b.dataAddress] : [])];
    const verdicts = await Promise.all(addresses.map((a) => this.probeOnce(id, a)));
    if (this.state !== 'started') return;
    if (!verdicts.every((v) => v === 'down')) {
      this.log.info('suspect brick answers; left to its lease', { ...ctx, verdicts });
      return;
    }
    let expired: boolean;
    try {
      expired = await this.coord.expireBrick(this.volume, id, b.address);
    } catch (e) {
      this.log.warn('could not expire a dead brick; its lease will', { ...ctx, err: e });
      return;
    }
    this.log.warn('suspect brick refuses connections: declared dead', { ...ctx, expired });
    if (!expired || !this.election.leading) return;
    // Act on it now rather than after the watch's coalescing delay.
    const term = this.term;
    try {
      const fresh = await this.coord.getSnapshot(this.volume);
      if (term !== this.term) return;
      this.snapshot = fresh;
      this.kick();
    } catch {
      // The watch delivers the change.
    }
  }

  /** One probe, bounded by probeTimeoutMs on the injected clock; an error or no answer counts as 'up'. */
  private probeOnce(id: string, address: string): Promise<'down' | 'up'> {
    return new Promise((resolve) => {
      let done = false;
      const finish = (v: 'down' | 'up') => {
        if (done) return;
        done = true;
        this.probesInFlight.delete(finish);
        this.clock.clearTimeout(timer);
        resolve(v);
      };
      this.probesInFlight.add(finish);
      const timer = this.clock.setTimeout(() => {
        this.log.warn('probe did not answer in time; counted as up', {
          volume: this.volume,
          brick: id,
          address,
        });
        finish('up');
      }, this.knobs.probeTimeoutMs);
      this.probe(id, address).then(
        (v) => finish(v === 'down' ? 'down' : 'up'),
        (e: unknown) => {
          this.log.warn('probe failed; counted as up', { volume: this.volume, brick: id, address, err: e });
          finish('up');
        },
      );
    });
  }
}
