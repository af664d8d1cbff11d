import { FsError, type Logger } from '@dunix/proto';
import type { BrickKnobs } from './config.js';
import type { MetaTxn } from './namespace/txn.js';
import {
  applyLock,
  decodeLockTable,
  beforeRequest,
  blockersOf,
  closesCycle,
  firstConflict,
  grantInOrder,
  ownerKey,
  releaseOwners,
  releaseSessions,
  sameLocks,
  type HeldLock,
  type LockKind,
  type LockRequest,
  type LockTableRecord,
} from './namespace/lock-table.js';
import { KeyKind, keys } from './store/keys.js';
import { prefixEnd, type KvStore } from './store/kv.js';

export interface LockReply {
  granted: boolean;
  /** SetLock with a wait: the slice ended, the waiter keeps its place; call again with the same wait id. */
  waiting: boolean;
  /** A lock in the way (GetLock, or SetLock not granted). */
  conflict?: HeldLock;
}

/** Timers, injected (tests drive them). */
export interface LockTimers {
  nowMs(): number;
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

export interface LockServiceDeps {
  /** Runs `op` in the PG's serial queue and appends its writes through the PG's log (Brick.mutate). */
  mutate<T>(pg: number, kind: string, op: (t: MetaTxn) => Promise<T>): Promise<T>;
  /** Reads through the PG's primary (Brick.read). */
  read<T>(pg: number, op: (t: MetaTxn) => Promise<T>): Promise<T>;
  /** PGs this brick serves as ready primary now. */
  ledPgs(): number[];
  kv: KvStore;
  /**
   * The mount sessions alive (their records in etcd), possibly cached;
   * `fresh`: listed now. Undefined when unknown (nothing is released).
   */
  mountsAlive?: (fresh?: boolean) => Promise<ReadonlySet<string> | undefined>;
  knobs: Pick<
    BrickKnobs,
    'lockWaitSliceMaxMs' | 'lockWaitKeepMs' | 'locksPerInodeMax' | 'lockSessionCheckMs'
  >;
  timers: LockTimers;
  log: Logger;
}

interface Waiter {
  id: string;
  pg: number;
  ino: bigint;
  req: LockRequest;
  /** Owners holding what it waits for (deadlock detection), refreshed by every grant pass. */
  blockers: string[];
  state: 'waiting' | 'granted';
  /** The SetLock call holding the waiter now, if any. */
  attached?: (r: LockReply) => void;
  /** Fails the attached call. */
  fail?: (err: unknown) => void;
  sliceTimer?: unknown;
  keepTimer?: unknown;
}

/** Cancelled wait ids remembered at most (the oldest go first). */
const CANCELLED_REMEMBERED_MAX = 65_536;

const inoKeyOf = (pg: number, ino: bigint) => `${pg}/${ino}`;

/**
 * The brick side of cluster-wide locks (fcntl, OFD, flock). The lock table of
 * an inode lives in the inode's PG (a `K` record written through the PG's
 * log, so every in-sync replica has it and a new primary finds it); the
 * rules are namespace/lock-table.ts. What lives only here, at the primary:
 * the waiters of SETLKW, in order of arrival. A failover loses them; their
 * clients call the new primary again. A lock whose session's mount record is
 * gone is dropped by the primary (checked every lockSessionCheckMs).
 */
export class LockService {
  private readonly lines = new Map<string, Waiter[]>();
  private readonly byId = new Map<string, Waiter>();
  private readonly waking = new Map<string, { again: boolean }>();
  /**
   * Wait ids cancelled lately (id -> when): a SetLock call of that wait still
   * on its way must not queue it again after the cancel.
   */
  private readonly cancelled = new Map<string, number>();
  private sweepTimer: unknown;
  private sweeping = false;
  private stopped = false;

  constructor(private readonly d: LockServiceDeps) {}

  start(): void {
    this.stopped = false;
    this.scheduleSweep();
  }

  stop(): void {
    this.stopped = true;
    if (this.sweepTimer !== undefined) this.d.timers.clear(this.sweepTimer);
    for (const w of [...this.byId.values()]) this.drop(w, new FsError('UNAVAILABLE', 'brick stopping'));
  }

  /** F_GETLK: the first lock in the way of `req`, if any. */
  async getLock(pg: number, ino: bigint, req: LockRequest): Promise<LockReply> {
    const table = await this.d.read(pg, (t) => t.getLocks(ino));
    const conflict = firstConflict(beforeRequest(table, req), req);
    return { granted: conflict === undefined, waiting: false, ...(conflict ? { conflict } : {}) };
  }

  /**
   * F_SETLK (waitMs 0) or one slice of F_SETLKW: granted at once when
   * nothing is in the way; else with a wait the call is held until the lock
   * is granted or the slice ends (the waiter keeps its place until the next
   * call with the same wait id, or lockWaitKeepMs).
   */
  async setLock(
    pg: number,
    ino: bigint,
    req: LockRequest,
    waitMs: number,
    waitId: string,
  ): Promise<LockReply> {
    const slice = Math.min(waitMs, this.d.knobs.lockWaitSliceMaxMs);
    const known = waitId ? this.byId.get(waitId) : undefined;
    if (known && known.pg === pg && known.ino === ino) return this.attach(known, slice);
    const r = await this.d.mutate(pg, 'lock', async (t) => {
      if (waitId && this.cancelled.has(waitId)) return { granted: false as const, cancelled: true as const };
      const table = await t.getLocks(ino);
      const pre = beforeRequest(table, req);
      const conflict = firstConflict(pre, req);
      if (!conflict) {
        const next = applyLock(pre, req);
        if (next.length > this.d.knobs.locksPerInodeMax && next.length > table.length)
          throw new FsError('NO_LOCKS', `inode ${ino} carries ${table.length} locks`);
        // A lock already held, an unlock of nothing: no entry, and no one to wake.
        if (sameLocks(next, table)) return { granted: true as const, changed: false };
        t.setLocks(ino, next);
        return { granted: true as const, changed: true };
      }
      // A flock conversion dropped the old lock before waiting (as Linux does).
      if (pre.length !== table.length) t.setLocks(ino, pre);
      if (slice <= 0 || !waitId) return { granted: false as const, conflict };
      const blockers = blockersOf(pre, req);
      if (req.kind === 'posix' && closesCycle(ownerKey(req), blockers, (o) => this.waitsFor(o)))
        throw new FsError('DEADLOCK', `inode ${ino}`);
      // Registered inside the PG's queue: a release queued after this sees the waiter.
      const w: Waiter = { id: waitId, pg, ino, req, blockers, state: 'waiting' };
      this.byId.set(waitId, w);
      const line = this.lines.get(inoKeyOf(pg, ino)) ?? [];
      line.push(w);
      this.lines.set(inoKeyOf(pg, ino), line);
      return { granted: false as const, waiter: w };
    });
    if (r.granted) {
      // An unlock (or a downgrade) may let waiters in.
      if (r.changed) this.wakeSoon(pg, ino);
      return { granted: true, waiting: false };
    }
    if ('waiter' in r && r.waiter) return this.attach(r.waiter, slice);
    if ('cancelled' in r) return { granted: false, waiting: false };
    return { granted: false, waiting: false, conflict: r.conflict };
  }

  /**
   * The client stopped waiting (FUSE INTERRUPT). Runs in the PG's queue, so
   * a grant pass already under way has finished: `granted` tells the caller
   * it holds the lock after all.
   */
  async cancel(pg: number, ino: bigint, waitId: string): Promise<LockReply> {
    const w = await this.d.mutate(pg, 'lock-cancel', async () => {
      this.noteCancelled(waitId);
      const found = this.byId.get(waitId);
      if (!found || found.pg !== pg || found.ino !== ino) return undefined;
      this.forget(found);
      return found;
    });
    if (!w) return { granted: false, waiting: false };
    const granted = w.state === 'granted';
    w.attached?.({ granted: false, waiting: false });
    w.attached = undefined;
    // Leaving the line may let a later waiter in.
    if (!granted) this.wakeSoon(pg, ino);
    return { granted, waiting: false };
  }

  /** Drops the locks of `kinds` held by the session's owners on the inode (FLUSH, RELEASE). */
  async release(
    pg: number,
    ino: bigint,
    session: string,
    owners: ReadonlySet<string>,
    kinds: ReadonlySet<LockKind>,
  ): Promise<void> {
    const changed = await this.d.mutate(pg, 'lock-release', async (t) => {
      const table = await t.getLocks(ino);
      const next = releaseOwners(table, session, owners, kinds);
      if (next.length === table.length) return false;
      t.setLocks(ino, next);
      return true;
    });
    if (changed) this.wakeSoon(pg, ino);
  }

  private noteCancelled(waitId: string): void {
    const now = this.d.timers.nowMs();
    this.cancelled.set(waitId, now);
    // Forgotten once no call of the wait can still be on its way.
    for (const [id, at] of this.cancelled) {
      if (now - at < 2 * this.d.knobs.lockWaitKeepMs && this.cancelled.size <= CANCELLED_REMEMBERED_MAX)
        break;
      this.cancelled.delete(id);
    }
  }

  /** Owners the waiter of `owner` (if any) waits for. */
  private waitsFor(owner: string): string[] {
    const out: string[] = [];
    for (const w of this.byId.values())
      if (w.state === 'waiting' && ownerKey(w.req) === owner) out.push(...w.blockers);
    return out;
  }

  private attach(w: Waiter, sliceMs: number): Promise<LockReply> {
    if (w.keepTimer !== undefined) this.d.timers.clear(w.keepTimer);
    w.keepTimer = undefined;
    if (w.state === 'granted') {
      this.forget(w);
      return Promise.resolve({ granted: true, waiting: false });
    }
    // A call replacing one still attached (a retry): the older one is answered `waiting`.
    this.detach(w);
    return new Promise<LockReply>((resolve, reject) => {
      w.attached = (r) => {
        if (w.sliceTimer !== undefined) this.d.timers.clear(w.sliceTimer);
        w.sliceTimer = undefined;
        resolve(r);
      };
      w.fail = reject;
      w.sliceTimer = this.d.timers.set(
        () => {
          w.sliceTimer = undefined;
          this.detach(w);
          w.keepTimer = this.d.timers.set(() => {
            // The client never came back for it: a waiter leaves the line; a grant stays
            // (the session's end or the owner's close releases it).
            if (w.attached === undefined && this.byId.get(w.id) === w) {
              this.forget(w);
              if (w.state === 'waiting') this.wakeSoon(w.pg, w.ino);
            }
          }, this.d.knobs.lockWaitKeepMs);
        },
        Math.max(1, sliceMs),
      );
    });
  }

  /** Answers the attached call `waiting`; the waiter stays in line. */
  private detach(w: Waiter): void {
    const a = w.attached;
    w.attached = undefined;
    w.fail = undefined;
    a?.({ granted: false, waiting: true });
  }

  private forget(w: Waiter): void {
    if (this.byId.get(w.id) === w) this.byId.delete(w.id);
    const key = inoKeyOf(w.pg, w.ino);
    const line = this.lines.get(key);
    if (line) {
      const i = line.indexOf(w);
      if (i >= 0) line.splice(i, 1);
      if (line.length === 0) this.lines.delete(key);
    }
    if (w.sliceTimer !== undefined) this.d.timers.clear(w.sliceTimer);
    if (w.keepTimer !== undefined) this.d.timers.clear(w.keepTimer);
    w.sliceTimer = w.keepTimer = undefined;
  }

  /** The waiter's call fails (this brick no longer leads the PG): the client retries elsewhere. */
  private drop(w: Waiter, err: unknown): void {
    this.forget(w);
    const fail = w.fail;
    w.attached = w.fail = undefined;
    fail?.(err);
  }

  /** Grants the inode's waiters that fit now, in order (one log entry for all of them). */
  private wakeSoon(pg: number, ino: bigint): void {
    const key = inoKeyOf(pg, ino);
    if (!this.lines.has(key)) return;
    const running = this.waking.get(key);
    if (running) {
      running.again = true;
      return;
    }
    const mark = { again: false };
    this.waking.set(key, mark);
    void (async () => {
      try {
        do {
          mark.again = false;
          await this.grantPass(pg, ino);
        } while (mark.again && this.lines.has(key));
      } finally {
        this.waking.delete(key);
      }
    })();
  }

  private async grantPass(pg: number, ino: bigint): Promise<void> {
    const key = inoKeyOf(pg, ino);
    let granted: Waiter[];
    try {
      granted = await this.d.mutate(pg, 'lock-grant', async (t) => {
        const line = (this.lines.get(key) ?? []).filter((w) => w.state === 'waiting');
        if (line.length === 0) return [];
        const table = await t.getLocks(ino);
        const r = grantInOrder(table, line);
        if (r.granted.length > 0) {
          t.setLocks(ino, r.table);
          for (const w of r.granted) w.state = 'granted';
        }
        for (const w of line) if (w.state === 'waiting') w.blockers = blockersOf(r.table, w.req);
        return r.granted;
      });
    } catch (err) {
      // Not the primary any more (or the PG is read-only): every waiter's call fails and is retried.
      for (const w of [...(this.lines.get(key) ?? [])]) this.drop(w, err);
      if (!(err instanceof FsError)) throw err;
      return;
    }
    for (const w of granted) {
      if (w.attached) {
        const a = w.attached;
        this.forget(w);
        w.attached = undefined;
        a({ granted: true, waiting: false });
      } else {
        // Between two calls: kept (granted) for the next call with its wait id.
        const line = this.lines.get(key);
        if (line) {
          const i = line.indexOf(w);
          if (i >= 0) line.splice(i, 1);
          if (line.length === 0) this.lines.delete(key);
        }
      }
    }
  }

  // ---------------------------------------------------------------- sessions

  private scheduleSweep(): void {
    if (this.stopped) return;
    this.sweepTimer = this.d.timers.set(() => {
      void this.sweepSessions()
        .catch((err) => this.d.log.warn('lock session check failed', { err: String(err) }))
        .finally(() => this.scheduleSweep());
    }, this.d.knobs.lockSessionCheckMs);
  }

  /**
   * Drops the locks (and waiters) of sessions whose mount record is gone: a
   * client that died, or unmounted without closing. Only PGs this brick
   * leads, only when some lock is there, and never while etcd's answer is
   * unknown.
   */
  async sweepSessions(): Promise<number> {
    if (this.sweeping || !this.d.mountsAlive) return 0;
    this.sweeping = true;
    let dropped = 0;
    try {
      let alive: ReadonlySet<string> | undefined;
      let fresh = false;
      for (const pg of this.d.ledPgs()) {
        const prefix = keys.kindPrefix(pg, KeyKind.lock);
        const rows = await this.d.kv.range({ gte: prefix, lt: prefixEnd(prefix), limit: 4096 });
        for (const row of rows) {
          const ino = row.key.readBigUInt64BE(3);
          const sessions = new Set(
            decodeLockTable(JSON.parse(row.value.toString()) as LockTableRecord).map((h) => h.session),
          );
          alive ??= await this.d.mountsAlive();
          if (alive === undefined) return dropped;
          if (!fresh && ![...sessions].every((s) => alive!.has(s))) {
            // A session that registered after the cached listing is not gone: list again, now.
            alive = await this.d.mountsAlive(true);
            fresh = true;
            if (alive === undefined) return dropped;
          }
          const live = alive;
          if ([...sessions].every((s) => live.has(s))) continue;
          const n = await this.d.mutate(pg, 'lock-session-gone', async (t) => {
            const table = await t.getLocks(ino);
            const next = releaseSessions(table, (s) => !live.has(s));
            if (next.length !== table.length) t.setLocks(ino, next);
            return table.length - next.length;
          });
          if (n > 0) {
            dropped += n;
            this.d.log.info('locks of ended sessions released', { pg, ino: ino.toString(), locks: n });
            for (const w of [...(this.lines.get(inoKeyOf(pg, ino)) ?? [])])
              if (!live.has(w.req.session)) this.drop(w, new FsError('UNAVAILABLE', 'the session has ended'));
            this.wakeSoon(pg, ino);
          }
        }
      }
    } finally {
      this.sweeping = false;
    }
    return dropped;
  }
}
