import { FsError, limits, pgOfIno, type Logger } from '@dunix/proto';
import type { LockTimers } from '../lock-service.js';
import { cacheEffects, dropStaleAttrs, registeredUnder, type Inval } from './cache-rules.js';
import { CacheTable, type CacheTableOptions, type PollResult, type PushTicket } from './cache-table.js';

export interface CoherenceKnobs extends CacheTableOptions {
  /**
   * How long a change waits for a session's acknowledgement before that
   * session is dropped (its caches then only TTL-coherent until it sees the
   * reset on its next poll).
   */
  invalAckTimeoutMs: number;
  /** A session not polling for this long is dropped with its registrations. */
  sessionIdleMs: number;
}

export const coherenceDefaults: CoherenceKnobs = {
  registrationsMax: 262_144,
  queuedPerSessionMax: 65_536,
  invalAckTimeoutMs: 2_000,
  sessionIdleMs: 60_000,
};

export function validateCoherenceKnobs(k: CoherenceKnobs): CoherenceKnobs {
  if (!Number.isInteger(k.invalAckTimeoutMs) || k.invalAckTimeoutMs < 10 || k.invalAckTimeoutMs > 60_000)
    throw new RangeError('invalAckTimeoutMs must be 10..60000');
  if (!Number.isInteger(k.sessionIdleMs) || k.sessionIdleMs < limits.invalPollWaitMaxMs + 1_000)
    throw new RangeError(
      `sessionIdleMs must be above the longest poll (${limits.invalPollWaitMaxMs} ms) + 1 s`,
    );
  return k;
}

/** The header fields the service reads (the rest of a request is the rules' business). */
interface HeaderLike {
  pg: number;
  session: string;
  cacheTtlMs: number;
}

export interface CoherenceDeps {
  knobs: CoherenceKnobs;
  timers: LockTimers;
  log: Logger;
  /** A random generation id for a session's queue. */
  newGeneration(): string;
  /** Sends changes of inodes of `pg` to that PG's primary (a peer Invalidate). */
  forward(pg: number, invals: Inval[], session: string): Promise<void>;
  /**
   * Whether this brick is the primary of `pg` (changes of its inodes are
   * pushed from this table): a read of one PG may answer attributes of an
   * inode of another it leads (a subdirectory made there), registered here
   * too. Without it, only the request's own PG.
   */
  leads?(pg: number): boolean;
}

/** Registrations outlive the read by this much: the reply reaches the kernel a little after the brick. */
const REGISTRATION_GRACE_MS = 2_000;

interface ParkedPoll {
  answer: () => void;
  timer: unknown;
}

interface Waiting {
  ticket: PushTicket;
  resolve: () => void;
}

/**
 * The primary's side of coherent caches: reads register the caller's
 * session, changes are queued to the other sessions registered and the
 * change is answered once they acknowledged (bounded by invalAckTimeoutMs),
 * sessions long-poll for their queue. Soft state (CacheTable): lost on a
 * restart or a failover, which the sessions learn from their polls.
 */
export class CoherenceService {
  private readonly table: CacheTable;
  private readonly parked = new Map<string, ParkedPoll>();
  private readonly waiting = new Set<Waiting>();
  private sweepTimer: unknown;
  private stopped = false;

  constructor(private readonly d: CoherenceDeps) {
    validateCoherenceKnobs(d.knobs);
    this.table = new CacheTable(d.knobs, d.newGeneration);
    this.scheduleSweep();
  }

  get stats() {
    return { ...this.table.stats, registrations: this.table.registrations };
  }

  private scheduleSweep(): void {
    if (this.stopped) return;
    this.sweepTimer = this.d.timers.set(() => {
      const now = this.d.timers.nowMs();
      for (const s of this.table.idleSessions(this.d.knobs.sessionIdleMs, now)) {
        if (!this.parked.has(s)) this.table.dropSession(s);
      }
      this.scheduleSweep();
    }, this.d.knobs.sessionIdleMs);
  }

  /**
   * Serves `method` through `run`, registering what a read returns and
   * invalidating what a change made stale before the reply goes back.
   */
  async around<Rep>(method: string, req: Record<string, unknown>, run: () => Promise<Rep>): Promise<Rep> {
    const h = req.header as HeaderLike | null | undefined;
    const session = h?.session ?? '';
    if (session.length > limits.requestIdMaxBytes) throw new FsError('INVALID_ARGUMENT', 'bad session');
    const before = cacheEffects(method, req, undefined);
    // Registered before the read runs: a change committed after the read's snapshot still finds it.
    if (h && session && before.reads.length > 0) await this.register(h, session, before.reads);
    const changesBefore = this.table.changeCount;
    const rep = await run();
    if (!h) return rep;
    if (session && rep && typeof rep === 'object') {
      // Attributes of inodes the read returns are registered only now: one that changed since the
      // read began (its push found no registration of ours) must not reach the caller's cache.
      this.table.stats.staleAttrsDropped += dropStaleAttrs(method, rep as Record<string, unknown>, (ino) =>
        this.table.changedSince(ino, changesBefore),
      ).length;
    }
    const after = cacheEffects(method, req, rep as Record<string, unknown>);
    if (session && after.reads.length > before.reads.length) {
      await this.register(h, session, after.reads.slice(before.reads.length));
    }
    if (after.changes.length > 0) await this.invalidate(h.pg, after.changes, session);
    return rep;
  }

  private async register(h: HeaderLike, session: string, inos: bigint[]): Promise<void> {
    const now = this.d.timers.nowMs();
    const ttlMs = Math.min(h.cacheTtlMs, limits.cacheTtlMaxMs);
    if (ttlMs <= 0) return;
    const tickets: PushTicket[] = [];
    for (const ino of inos) {
      // Only inodes of PGs this brick leads: another PG's primary holds theirs.
      const pg = pgOfIno(ino);
      if (ino === 0n || (pg !== h.pg && !this.d.leads?.(pg))) continue;
      const t = this.table.register(session, ino, now + ttlMs + REGISTRATION_GRACE_MS, now);
      if (t) tickets.push(t);
    }
    for (const t of tickets) await this.await(t);
  }

  /** Changes of `pg`'s inodes go to this table; others to their PG's primary. */
  async invalidate(pg: number, changes: Inval[], session: string): Promise<void> {
    const local: Inval[] = [];
    const remote = new Map<number, Inval[]>();
    for (const c of changes) {
      if (registeredUnder(c) === 0n) continue;
      const target = pgOfIno(registeredUnder(c));
      if (target === pg) local.push(c);
      else {
        let l = remote.get(target);
        if (!l) remote.set(target, (l = []));
        l.push(c);
      }
    }
    const forwarded = [...remote].map(([p, l]) =>
      this.d.forward(p, l, session).catch((err: unknown) => {
        // The change is made; a primary that cannot be told leaves its sessions TTL-coherent.
        this.d.log.warn('could not forward invalidations', { pg: p, err: String(err) });
      }),
    );
    if (local.length > 0) await this.await(this.table.push(local, session, this.d.timers.nowMs()));
    await Promise.all(forwarded);
  }

  /** Resolves once every session of the ticket acknowledged, or was dropped for not doing so in time. */
  private await(ticket: PushTicket): Promise<void> {
    if (ticket.size === 0) return Promise.resolve();
    const now = this.d.timers.nowMs();
    for (const s of ticket.keys()) {
      this.parked.get(s)?.answer();
      // Not polling and silent for longer than we would wait: gone (killed, cut off).
      const last = this.table.lastPollMs(s) ?? 0;
      if (!this.parked.has(s) && now - last > this.d.knobs.invalAckTimeoutMs) this.drop(s, 'not polling');
    }
    if (this.table.done(ticket)) return Promise.resolve();
    return new Promise((resolve) => {
      const w: Waiting = { ticket, resolve };
      this.waiting.add(w);
      const timer = this.d.timers.set(() => {
        for (const s of this.table.pending(ticket)) this.drop(s, 'no acknowledgement in time');
        this.settle();
      }, this.d.knobs.invalAckTimeoutMs);
      w.resolve = () => {
        this.d.timers.clear(timer);
        resolve();
      };
    });
  }

  private drop(session: string, why: string): void {
    this.d.log.warn('cache session dropped: its caches are TTL-coherent until it polls again', {
      session,
      why,
    });
    this.table.dropSession(session);
  }

  private settle(): void {
    for (const w of this.waiting) {
      if (this.table.done(w.ticket)) {
        this.waiting.delete(w);
        w.resolve();
      }
    }
  }

  /** A session's long poll: acknowledges, then answers what waits (at once) or after `waitMs`. */
  poll(session: string, generation: string, ackSeq: number, waitMs: number): Promise<PollResult> {
    if (session.length === 0 || session.length > limits.requestIdMaxBytes)
      throw new FsError('INVALID_ARGUMENT', 'bad session');
    if (generation.length > limits.requestIdMaxBytes) throw new FsError('INVALID_ARGUMENT', 'bad generation');
    if (!Number.isSafeInteger(ackSeq) || ackSeq < 0) throw new FsError('INVALID_ARGUMENT', 'bad ack');
    const wait = Math.min(Math.max(0, waitMs), limits.invalPollWaitMaxMs);
    const max = limits.invalidationsPerPollMax;
    // One poll per session at a time: an older one still parked answers now (empty).
    this.parked.get(session)?.answer();
    const first = this.table.poll(session, generation, ackSeq, max, this.d.timers.nowMs());
    this.settle();
    if (first.reset || first.items.length > 0 || wait === 0 || this.stopped) return Promise.resolve(first);
    return new Promise((resolve) => {
      const p: ParkedPoll = {
        answer: () => {
          this.d.timers.clear(p.timer);
          if (this.parked.get(session) === p) this.parked.delete(session);
          resolve(this.table.poll(session, first.generation, ackSeq, max, this.d.timers.nowMs()));
        },
        timer: undefined,
      };
      p.timer = this.d.timers.set(() => p.answer(), wait);
      this.parked.set(session, p);
    });
  }

  stop(): void {
    this.stopped = true;
    this.d.timers.clear(this.sweepTimer);
    for (const p of [...this.parked.values()]) p.answer();
    for (const w of this.waiting) w.resolve();
    this.waiting.clear();
  }
}
