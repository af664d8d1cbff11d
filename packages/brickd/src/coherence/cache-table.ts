import { forgottenOf, InvalKind, registeredUnder, type Inval } from './cache-rules.js';

/**
 * A primary's soft state of coherent caches, free of I/O (times are passed
 * in, generations come from an injected source): which sessions cache which
 * inodes (registrations, each until the TTL the session gave), and per
 * session a queue of invalidations waiting for the session's poll and
 * acknowledgement. Lost on a restart or a failover: the session sees its
 * queue's generation change (or its poll stream break) and drops what it
 * cached from this brick.
 */
export interface CacheTableOptions {
  /** Registrations held at most (session x inode); the least recently registered inode goes first. */
  registrationsMax: number;
  /** Invalidations queued for one session at most; past it the session is dropped. */
  queuedPerSessionMax: number;
}

export const cacheTableDefaults: CacheTableOptions = {
  registrationsMax: 262_144,
  queuedPerSessionMax: 65_536,
};

export function validateCacheTableOptions(o: CacheTableOptions): CacheTableOptions {
  if (!Number.isInteger(o.registrationsMax) || o.registrationsMax < 1 || o.registrationsMax > 16_777_216)
    throw new RangeError('cacheRegistrationsMax must be 1..16777216');
  if (
    !Number.isInteger(o.queuedPerSessionMax) ||
    o.queuedPerSessionMax < 1 ||
    o.queuedPerSessionMax > 1_048_576
  )
    throw new RangeError('invalidationsQueuedMax must be 1..1048576');
  return o;
}

export interface QueuedInval {
  seq: number;
  inval: Inval;
}

interface Queue {
  generation: string;
  items: QueuedInval[];
  /** Sequence of the last invalidation queued. */
  lastSeq: number;
  /** Everything up to this was acknowledged. */
  ackedSeq: number;
  lastPollMs: number;
}

export interface PollResult {
  generation: string;
  reset: boolean;
  lastSeq: number;
  items: QueuedInval[];
}

/** Where a pushed change must be acknowledged: each session's queue generation and sequence. */
export type PushTicket = Map<string, { generation: string; seq: number }>;

/**
 * Inodes whose last change is remembered (changedSince): a read that ran
 * across more changes than this sees each of its inodes as changed.
 */
export const CHANGES_REMEMBERED_MAX = 16_384;

export class CacheTable {
  /** ino -> session -> registered until (ms); Map order = least recently registered first. */
  private readonly regs = new Map<bigint, Map<string, number>>();
  private regCount = 0;
  /** Changes pushed so far (a count, not a time): a read notes it before it runs. */
  private changes = 0;
  /** ino -> the count when its attributes last changed; Map order = oldest change first. */
  private readonly changedAt = new Map<bigint, number>();
  /** Changes up to this count are no longer remembered one by one. */
  private changesForgottenUpTo = 0;
  private readonly queues = new Map<string, Queue>();
  /**
   * Counters for measurements (invalidations queued, registrations evicted, sessions dropped,
   * attributes kept out of a read's reply as changed while it ran).
   */
  readonly stats = { queued: 0, evicted: 0, dropped: 0, staleAttrsDropped: 0 };

  constructor(
    private readonly o: CacheTableOptions,
    private readonly newGeneration: () => string,
  ) {
    validateCacheTableOptions(o);
  }

  get registrations(): number {
    return this.regCount;
  }

  /**
   * `session` caches `ino` until `untilMs`. Over the bound, the least
   * recently registered inodes lose their registrations; their sessions are
   * sent FORGOTTEN (returned as a push, to be awaited like any change).
   */
  register(session: string, ino: bigint, untilMs: number, nowMs: number): PushTicket | undefined {
    let sessions = this.regs.get(ino);
    if (sessions) this.regs.delete(ino);
    else sessions = new Map();
    this.regs.set(ino, sessions);
    if (!sessions.has(session)) this.regCount++;
    sessions.set(session, Math.max(untilMs, sessions.get(session) ?? 0));
    if (this.regCount <= this.o.registrationsMax) return undefined;
    const ticket: PushTicket = new Map();
    for (const [victim, holders] of this.regs) {
      if (this.regCount <= this.o.registrationsMax) break;
      if (victim === ino) continue;
      this.regs.delete(victim);
      this.regCount -= holders.size;
      for (const [s, until] of holders) {
        if (until <= nowMs) continue;
        this.stats.evicted++;
        this.mergeTicket(ticket, this.pushTo(s, [forgottenOf(victim)], nowMs));
      }
    }
    return ticket;
  }

  /** Sessions other than `except` that cache `ino` now (expired registrations are dropped). */
  sessionsOf(ino: bigint, except: string, nowMs: number): string[] {
    const sessions = this.regs.get(ino);
    if (!sessions) return [];
    const out: string[] = [];
    for (const [s, until] of sessions) {
      if (until <= nowMs) {
        sessions.delete(s);
        this.regCount--;
      } else if (s !== except) out.push(s);
    }
    if (sessions.size === 0) this.regs.delete(ino);
    return out;
  }

  /**
   * Queues each change for every session, but `except`, registered under it
   * (an entry under its directory, attributes under the inode); the ticket
   * says which acknowledgements to wait for. A session sent nothing is not
   * in the ticket: traffic follows the sessions that cache, not the cluster.
   */
  push(changes: readonly Inval[], except: string, nowMs: number): PushTicket {
    const perSession = new Map<string, Inval[]>();
    for (const c of changes) {
      if (c.kind !== InvalKind.ENTRY) this.noteChanged(c.ino);
      for (const s of this.sessionsOf(registeredUnder(c), except, nowMs)) {
        let list = perSession.get(s);
        if (!list) perSession.set(s, (list = []));
        list.push(c);
      }
    }
    const ticket: PushTicket = new Map();
    for (const [s, list] of perSession) this.mergeTicket(ticket, this.pushTo(s, list, nowMs));
    return ticket;
  }

  /** The count of changes so far: pass it to changedSince after a read. */
  get changeCount(): number {
    return this.changes;
  }

  /**
   * Whether the attributes of `ino` changed (were pushed) after the count was
   * `count`. A read registers the inodes it returns only once it has run, so
   * a change committed after its snapshot and pushed before its registration
   * reaches nobody: the read must not hand those attributes out.
   */
  changedSince(ino: bigint, count: number): boolean {
    return count < this.changesForgottenUpTo || (this.changedAt.get(ino) ?? 0) > count;
  }

  private noteChanged(ino: bigint): void {
    if (ino === 0n) return;
    this.changedAt.delete(ino);
    this.changedAt.set(ino, ++this.changes);
    if (this.changedAt.size <= CHANGES_REMEMBERED_MAX) return;
    const [oldest, at] = this.changedAt.entries().next().value!;
    this.changedAt.delete(oldest);
    this.changesForgottenUpTo = at;
  }

  private mergeTicket(into: PushTicket, from: PushTicket): void {
    for (const [s, t] of from) into.set(s, t);
  }

  private pushTo(session: string, invals: Inval[], nowMs: number): PushTicket {
    const q = this.queueOf(session, nowMs);
    if (q.items.length + invals.length > this.o.queuedPerSessionMax) {
      // A session this far behind is not listening: it loses its registrations and learns
      // so from the generation (a reset), so nothing waits for it.
      this.dropSession(session);
      return new Map();
    }
    for (const inval of invals) q.items.push({ seq: ++q.lastSeq, inval });
    this.stats.queued += invals.length;
    return new Map([[session, { generation: q.generation, seq: q.lastSeq }]]);
  }

  private queueOf(session: string, nowMs: number): Queue {
    let q = this.queues.get(session);
    if (!q) {
      q = { generation: this.newGeneration(), items: [], lastSeq: 0, ackedSeq: 0, lastPollMs: nowMs };
      this.queues.set(session, q);
    }
    return q;
  }

  /**
   * A poll: acknowledges up to `ackSeq` of the queue `generation` and
   * returns what is still unacknowledged (at most `max`). A generation that
   * is not the current one (the brick restarted, or dropped the session)
   * answers `reset` with the current one and nothing acknowledged.
   */
  poll(session: string, generation: string, ackSeq: number, max: number, nowMs: number): PollResult {
    const q = this.queueOf(session, nowMs);
    q.lastPollMs = nowMs;
    if (generation !== q.generation) {
      return {
        generation: q.generation,
        reset: generation !== '',
        lastSeq: q.lastSeq,
        items: q.items.slice(0, max),
      };
    }
    if (ackSeq > q.ackedSeq) {
      q.ackedSeq = Math.min(ackSeq, q.lastSeq);
      let n = 0;
      while (n < q.items.length && q.items[n]!.seq <= q.ackedSeq) n++;
      if (n > 0) q.items.splice(0, n);
    }
    return { generation: q.generation, reset: false, lastSeq: q.lastSeq, items: q.items.slice(0, max) };
  }

  /** Whether every invalidation of the ticket was acknowledged (or its session dropped). */
  done(ticket: PushTicket): boolean {
    for (const [s, t] of ticket) {
      const q = this.queues.get(s);
      if (q && q.generation === t.generation && q.ackedSeq < t.seq) return false;
    }
    return true;
  }

  /** Sessions of the ticket that have not acknowledged yet. */
  pending(ticket: PushTicket): string[] {
    return [...ticket]
      .filter(([s, t]) => {
        const q = this.queues.get(s);
        return q !== undefined && q.generation === t.generation && q.ackedSeq < t.seq;
      })
      .map(([s]) => s);
  }

  /** When the session last polled (undefined: it has no queue here). */
  lastPollMs(session: string): number | undefined {
    return this.queues.get(session)?.lastPollMs;
  }

  /**
   * The session loses its queue and every registration: its next poll is
   * answered `reset`, and it drops what it cached from this brick.
   */
  dropSession(session: string): void {
    if (this.queues.delete(session)) this.stats.dropped++;
    for (const [ino, sessions] of this.regs) {
      if (sessions.delete(session)) {
        this.regCount--;
        if (sessions.size === 0) this.regs.delete(ino);
      }
    }
  }

  /** Sessions whose last poll is older than `idleMs` (ended, or cut off): candidates to drop. */
  idleSessions(idleMs: number, nowMs: number): string[] {
    return [...this.queues].filter(([, q]) => nowMs - q.lastPollMs > idleMs).map(([s]) => s);
  }
}
