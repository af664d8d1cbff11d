/**
 * The lock table of one inode: POSIX byte-range locks (fcntl F_SETLK, and
 * OFD locks, which reach us the same way with one lock owner per open file)
 * and flock locks, as Linux keeps them (fs/locks.c). Pure: no I/O, no clock;
 * the brick stores the table in the inode's PG (through its log) and keeps
 * the waiters.
 *
 * An owner is a client session (the mount record id) plus the kernel's lock
 * owner: two processes on two machines never share one, so locks of two
 * mounts conflict exactly as locks of two processes on one machine do.
 */

/** Shared (F_RDLCK) or exclusive (F_WRLCK). */
export type LockType = 'r' | 'w';
/** fcntl / OFD byte-range locks, or flock (whole file). The two never conflict with each other. */
export type LockKind = 'posix' | 'flock';

/** The end of a lock that runs to the end of the file (OFFSET_MAX). */
export const LOCK_END_MAX = (1n << 63n) - 1n;

export interface LockOwner {
  /** The client session (mount record id). */
  session: string;
  /** The kernel's lock owner within the session (u64, decimal). */
  owner: string;
}

export interface HeldLock extends LockOwner {
  kind: LockKind;
  type: LockType;
  /** First byte. */
  start: bigint;
  /** Last byte, inclusive (LOCK_END_MAX: to the end of the file). flock: always [0, LOCK_END_MAX]. */
  end: bigint;
  /** Process that set it, on the owner's machine (reported by GETLK to that machine only). */
  pid: number;
}

/** A lock or unlock ('u') asked for by an owner. */
export interface LockRequest extends LockOwner {
  kind: LockKind;
  type: LockType | 'u';
  start: bigint;
  end: bigint;
  pid: number;
}

export type LockTable = readonly HeldLock[];

export function sameOwner(a: LockOwner, b: LockOwner): boolean {
  return a.session === b.session && a.owner === b.owner;
}

/** One string per owner (deadlock detection, maps). */
export function ownerKey(o: LockOwner): string {
  return `${o.session}/${o.owner}`;
}

/** A request's fields are in range: start <= end <= LOCK_END_MAX; flock covers the whole file. */
export function validLockRequest(r: LockRequest): boolean {
  if (r.start < 0n || r.end > LOCK_END_MAX || r.start > r.end) return false;
  if (r.kind === 'flock' && (r.start !== 0n || r.end !== LOCK_END_MAX)) return false;
  return r.type === 'r' || r.type === 'w' || r.type === 'u';
}

/** Whether `held` keeps `req` from being granted. Unlocks conflict with nothing. */
export function conflictsWith(held: HeldLock, req: LockRequest): boolean {
  if (req.type === 'u' || held.kind !== req.kind || sameOwner(held, req)) return false;
  if (held.type === 'r' && req.type === 'r') return false;
  return held.start <= req.end && req.start <= held.end;
}

/** Every lock of the table that keeps `req` from being granted, in table order. */
export function conflicts(table: LockTable, req: LockRequest): HeldLock[] {
  return table.filter((h) => conflictsWith(h, req));
}

/** The lock F_GETLK reports for `req`, or undefined (F_UNLCK). */
export function firstConflict(table: LockTable, req: LockRequest): HeldLock | undefined {
  return table.find((h) => conflictsWith(h, req));
}

/**
 * What a flock request does before it may wait: Linux drops the owner's
 * current flock lock first (a conversion is not atomic), so two holders of a
 * shared lock that both ask for an exclusive one do not deadlock.
 */
export function beforeRequest(table: LockTable, req: LockRequest): HeldLock[] {
  if (req.kind !== 'flock') return [...table];
  return table.filter((h) => !(h.kind === 'flock' && sameOwner(h, req)));
}

/**
 * The table after granting `req` (the caller has checked conflicts). POSIX:
 * the owner's locks in [start, end] are replaced, the ones it overlaps
 * partly are split, and adjacent or overlapping locks of the same type are
 * merged into one, as fs/locks.c does. flock: the owner's one lock is
 * replaced. An unlock removes what the range covers.
 */
export function applyLock(table: LockTable, req: LockRequest): HeldLock[] {
  if (req.kind === 'flock') {
    const rest = table.filter((h) => !(h.kind === 'flock' && sameOwner(h, req)));
    if (req.type === 'u') return rest;
    return [
      ...rest,
      { ...pickOwner(req), kind: 'flock', type: req.type, start: 0n, end: LOCK_END_MAX, pid: req.pid },
    ];
  }
  const out: HeldLock[] = [];
  let start = req.start;
  let end = req.end;
  for (const h of table) {
    if (h.kind !== 'posix' || !sameOwner(h, req)) {
      out.push(h);
      continue;
    }
    if (req.type !== 'u' && h.type === req.type) {
      // Same type: merged when overlapping or adjacent.
      if (h.end + 1n >= req.start && h.start <= req.end + 1n) {
        if (h.start < start) start = h.start;
        if (h.end > end) end = h.end;
        continue;
      }
      out.push(h);
      continue;
    }
    if (h.end < req.start || h.start > req.end) {
      out.push(h);
      continue;
    }
    // Another type (or an unlock) over part of it: the parts outside the range stay.
    if (h.start < req.start) out.push({ ...h, end: req.start - 1n });
    if (h.end > req.end) out.push({ ...h, start: req.end + 1n });
  }
  if (req.type !== 'u')
    out.push({ ...pickOwner(req), kind: 'posix', type: req.type, start, end, pid: req.pid });
  return out;
}

/** Drops the locks of `kinds` held by the session's `owners` (close of a file, exit of a process). */
export function releaseOwners(
  table: LockTable,
  session: string,
  owners: ReadonlySet<string>,
  kinds: ReadonlySet<LockKind>,
): HeldLock[] {
  return table.filter((h) => !(h.session === session && owners.has(h.owner) && kinds.has(h.kind)));
}

/** Drops every lock of the sessions for which `gone` holds (ended or expired sessions). */
export function releaseSessions(table: LockTable, gone: (session: string) => boolean): HeldLock[] {
  return table.filter((h) => !gone(h.session));
}

/**
 * Grants waiters in their order of arrival: each one that conflicts with
 * nothing in the table (including the grants just made before it) is
 * granted; the others keep waiting. A later waiter whose range or type
 * does not conflict may pass an earlier one that still waits, as on Linux.
 */
export function grantInOrder<W extends { req: LockRequest }>(
  table: LockTable,
  waiters: readonly W[],
): { table: HeldLock[]; granted: W[] } {
  let t = [...table];
  const granted: W[] = [];
  for (const w of waiters) {
    const next = beforeRequest(t, w.req);
    if (next.some((h) => conflictsWith(h, w.req))) continue;
    t = applyLock(next, w.req);
    granted.push(w);
  }
  return { table: t, granted };
}

/**
 * Whether an owner that would wait for `blockers` closes a cycle of owners
 * each waiting for the next (fs/locks.c's posix_locks_deadlock): following
 * the owners the blockers themselves wait for, up to `depthMax` steps.
 * `waitsFor` gives the owners a waiting owner is blocked by (none if it does
 * not wait).
 */
export function closesCycle(
  self: string,
  blockers: readonly string[],
  waitsFor: (owner: string) => readonly string[],
  depthMax = 10,
): boolean {
  const seen = new Set<string>();
  let frontier = [...blockers];
  for (let depth = 0; depth <= depthMax && frontier.length > 0; depth++) {
    const next: string[] = [];
    for (const o of frontier) {
      if (o === self) return true;
      if (seen.has(o)) continue;
      seen.add(o);
      next.push(...waitsFor(o));
    }
    frontier = next;
  }
  return false;
}

/** The owners of the locks keeping `req` waiting. */
export function blockersOf(table: LockTable, req: LockRequest): string[] {
  return [...new Set(conflicts(beforeRequest(table, req), req).map(ownerKey))];
}

/** The same locks, in any order (a change that changed nothing needs no log entry). */
export function sameLocks(a: LockTable, b: LockTable): boolean {
  if (a.length !== b.length) return false;
  const key = (h: HeldLock) => `${h.session}/${h.owner}/${h.kind}/${h.type}/${h.start}/${h.end}/${h.pid}`;
  const ka = a.map(key).sort();
  const kb = b.map(key).sort();
  return ka.every((k, i) => k === kb[i]);
}

function pickOwner(o: LockOwner): LockOwner {
  return { session: o.session, owner: o.owner };
}

/** The stored form of a table (JSON; bigints as strings). */
export interface LockTableRecord {
  locks: { s: string; o: string; k: 'p' | 'f'; t: LockType; a: string; b: string; p: number }[];
}

export function encodeLockTable(table: LockTable): LockTableRecord {
  return {
    locks: table.map((h) => ({
      s: h.session,
      o: h.owner,
      k: h.kind === 'posix' ? 'p' : 'f',
      t: h.type,
      a: h.start.toString(),
      b: h.end.toString(),
      p: h.pid,
    })),
  };
}

export function decodeLockTable(rec: LockTableRecord): HeldLock[] {
  return rec.locks.map((l) => ({
    session: l.s,
    owner: l.o,
    kind: l.k === 'p' ? 'posix' : 'flock',
    type: l.t,
    start: BigInt(l.a),
    end: BigInt(l.b),
    pid: l.p,
  }));
}
