import fc from 'fast-check';
import t from 'tap';
import {
  applyLock,
  beforeRequest,
  blockersOf,
  closesCycle,
  conflicts,
  decodeLockTable,
  encodeLockTable,
  firstConflict,
  grantInOrder,
  LOCK_END_MAX,
  ownerKey,
  releaseOwners,
  releaseSessions,
  sameLocks,
  validLockRequest,
  type HeldLock,
  type LockRequest,
  type LockTable,
} from '../../src/namespace/lock-table.js';

/**
 * The lock table against a naive model: per byte (0..15, and 16 standing for
 * every byte past 15, i.e. a lock to EOF), which owner holds which type;
 * flock: per owner, its type. Owners come from two sessions with two lock
 * owners each, so "same lock owner number in another session" is covered.
 */

const WIDTH = 17; // bytes 0..15 and the tail [16, EOF)
type Model = { bytes: Map<string, 'r' | 'w'>[]; flock: Map<string, 'r' | 'w'> };

const emptyModel = (): Model => ({ bytes: Array.from({ length: WIDTH }, () => new Map()), flock: new Map() });
const byteRange = (r: { start: bigint; end: bigint }): [number, number] => [
  Number(r.start),
  r.end === LOCK_END_MAX ? WIDTH - 1 : Number(r.end),
];

function modelConflicts(m: Model, r: LockRequest): boolean {
  if (r.type === 'u') return false;
  const me = ownerKey(r);
  const clash = (holder: string, type: 'r' | 'w') => holder !== me && (type === 'w' || r.type === 'w');
  if (r.kind === 'flock') return [...m.flock].some(([o, ty]) => clash(o, ty));
  const [a, b] = byteRange(r);
  for (let i = a; i <= b; i++) for (const [o, ty] of m.bytes[i]!) if (clash(o, ty)) return true;
  return false;
}

function modelApply(m: Model, r: LockRequest): void {
  const me = ownerKey(r);
  if (r.kind === 'flock') {
    if (r.type === 'u') m.flock.delete(me);
    else m.flock.set(me, r.type);
    return;
  }
  const [a, b] = byteRange(r);
  for (let i = a; i <= b; i++) {
    if (r.type === 'u') m.bytes[i]!.delete(me);
    else m.bytes[i]!.set(me, r.type);
  }
}

function tableAsModel(table: LockTable): Model {
  const m = emptyModel();
  for (const h of table) {
    const me = ownerKey(h);
    if (h.kind === 'flock') {
      if (m.flock.has(me)) throw new Error(`two flock locks of ${me}`);
      m.flock.set(me, h.type);
      continue;
    }
    const [a, b] = byteRange(h);
    for (let i = a; i <= b; i++) {
      if (m.bytes[i]!.has(me)) throw new Error(`owner ${me} holds byte ${i} twice`);
      m.bytes[i]!.set(me, h.type);
    }
  }
  return m;
}

const sameModel = (x: Model, y: Model) =>
  JSON.stringify([x.bytes.map((b) => [...b].sort()), [...x.flock].sort()]) ===
  JSON.stringify([y.bytes.map((b) => [...b].sort()), [...y.flock].sort()]);

/** Locks of one owner never overlap, and two of the same type are never adjacent (merged). */
function normalised(table: LockTable): boolean {
  const posix = table.filter((h) => h.kind === 'posix');
  for (const h of posix) {
    if (h.start > h.end) return false;
    for (const g of posix) {
      if (g === h || ownerKey(g) !== ownerKey(h)) continue;
      if (g.start <= h.end && h.start <= g.end) return false;
      if (g.type === h.type && (g.end + 1n === h.start || h.end + 1n === g.start)) return false;
    }
  }
  return true;
}

const arbEnd = fc.oneof(fc.integer({ min: 0, max: 15 }).map(BigInt), fc.constant(LOCK_END_MAX));
const arbRequest: fc.Arbitrary<LockRequest> = fc
  .record({
    session: fc.constantFrom('m-a', 'm-b'),
    owner: fc.constantFrom('1', '2'),
    flock: fc.boolean(),
    type: fc.constantFrom<'r' | 'w' | 'u'>('r', 'w', 'u'),
    start: fc.integer({ min: 0, max: 15 }).map(BigInt),
    end: arbEnd,
  })
  .map(({ flock, start, end, ...r }) =>
    flock
      ? { ...r, kind: 'flock' as const, start: 0n, end: LOCK_END_MAX, pid: 7 }
      : {
          ...r,
          kind: 'posix' as const,
          start: start <= end ? start : end,
          end: start <= end ? end : start,
          pid: 7,
        },
  );

t.test('SETLK sequences agree with the per-byte model', async (t) => {
  fc.assert(
    fc.property(fc.array(arbRequest, { maxLength: 40 }), (reqs) => {
      let table: HeldLock[] = [];
      const model = emptyModel();
      for (const r of reqs) {
        if (!validLockRequest(r)) throw new Error('generator made an invalid request');
        // SETLK: flock drops the owner's lock first (Linux), then conflicts are checked.
        const pre = beforeRequest(table, r);
        if (r.kind === 'flock' && r.type !== 'u') model.flock.delete(ownerKey(r));
        const expectConflict = modelConflicts(model, r);
        const conflict = firstConflict(pre, r);
        if ((conflict !== undefined) !== expectConflict) return false;
        if (conflict && !conflicts(pre, r).includes(conflict)) return false;
        const before = tableAsModel(pre);
        table = conflict ? pre : applyLock(pre, r);
        if (!conflict) modelApply(model, r);
        // sameLocks exactly when nothing changed (tables are normalised, so equal models mean equal locks).
        if (
          sameLocks(pre, table) !== sameModel(before, tableAsModel(table)) &&
          table.every((h) => h.pid === 7)
        )
          return false;
        if (!sameModel(tableAsModel(table), model) || !normalised(table)) return false;
      }
      return true;
    }),
    { numRuns: 3000 },
  );
  t.pass('3000 random sequences');
});

t.test('release of owners and sessions drops exactly theirs', async (t) => {
  fc.assert(
    fc.property(fc.array(arbRequest, { maxLength: 30 }), fc.constantFrom('1', '2'), (reqs, owner) => {
      let table: HeldLock[] = [];
      for (const r of reqs) {
        const pre = beforeRequest(table, r);
        table = firstConflict(pre, r) ? pre : applyLock(pre, r);
      }
      const flushed = releaseOwners(table, 'm-a', new Set([owner]), new Set(['posix']));
      const gone = releaseSessions(table, (s) => s === 'm-b');
      return (
        flushed.every((h) => !(h.session === 'm-a' && h.owner === owner && h.kind === 'posix')) &&
        flushed.length ===
          table.filter((h) => !(h.session === 'm-a' && h.owner === owner && h.kind === 'posix')).length &&
        gone.every((h) => h.session === 'm-a') &&
        gone.length === table.filter((h) => h.session === 'm-a').length &&
        JSON.stringify(decodeLockTable(encodeLockTable(table)), (_k, v) =>
          typeof v === 'bigint' ? `${v}` : v,
        ) === JSON.stringify(table, (_k, v) => (typeof v === 'bigint' ? `${v}` : v))
      );
    }),
    { numRuns: 1000 },
  );
  t.pass('1000 random tables');
});

const req = (
  session: string,
  owner: string,
  type: 'r' | 'w' | 'u',
  start = 0n,
  end = LOCK_END_MAX,
): LockRequest => ({
  session,
  owner,
  kind: 'posix',
  type,
  start,
  end,
  pid: 1,
});

t.test('split, upgrade, downgrade and merge of one owner', async (t) => {
  let tab = applyLock([], req('a', '1', 'w', 0n, 99n));
  tab = applyLock(tab, req('a', '1', 'r', 10n, 19n)); // downgrade the middle: split in three
  t.same(
    tab.map((h) => [h.type, h.start, h.end]).sort((x, y) => Number(x[1]) - Number(y[1])),
    [
      ['w', 0n, 9n],
      ['r', 10n, 19n],
      ['w', 20n, 99n],
    ],
  );
  tab = applyLock(tab, req('a', '1', 'w', 10n, 19n)); // upgrade it back: one lock again
  t.same(
    tab.map((h) => [h.type, h.start, h.end]),
    [['w', 0n, 99n]],
  );
  tab = applyLock(tab, req('a', '1', 'u', 50n, 59n));
  t.equal(tab.length, 2, 'unlock in the middle splits');
  t.ok(firstConflict(tab, req('b', '1', 'r', 55n, 55n)) === undefined, 'the hole is free');
  t.ok(firstConflict(tab, req('b', '1', 'r', 45n, 55n)), 'the rest is not');
  t.same(
    firstConflict(tab, req('a', '2', 'r', 0n, 0n))?.owner,
    '1',
    'another lock owner of the same session conflicts',
  );
});

t.test('waiters are granted in order; compatible later waiters pass', async (t) => {
  const table = applyLock([], req('a', '1', 'w'));
  const ws = [
    { id: 1, req: req('b', '1', 'w') },
    { id: 2, req: req('c', '1', 'w') },
    { id: 3, req: req('d', '1', 'r') },
  ];
  t.same(grantInOrder(table, ws).granted, [], 'nothing while the holder holds');
  const freed = applyLock(table, req('a', '1', 'u'));
  const g = grantInOrder(freed, ws);
  t.same(
    g.granted.map((w) => w.id),
    [1],
    'the first waiter gets it; the others wait for it',
  );
  const shared = grantInOrder(freed, [ws[2]!, { id: 4, req: req('e', '1', 'r') }, ws[0]!]);
  t.same(
    shared.granted.map((w) => w.id),
    [3, 4],
    'two readers together, the writer after them waits',
  );
});

t.test('a two-owner cycle is a deadlock; a chain is not', async (t) => {
  // A holds x, B holds y; B waits for x (blocked by A). A now asks for y (blocked by B).
  const waiting = new Map<string, string[]>([['s2/1', ['s1/1']]]);
  t.ok(closesCycle('s1/1', ['s2/1'], (o) => waiting.get(o) ?? []));
  t.notOk(closesCycle('s3/1', ['s2/1'], (o) => waiting.get(o) ?? []));
  const tab = applyLock([], req('s2', '1', 'w', 0n, 0n));
  t.same(blockersOf(tab, req('s1', '1', 'w', 0n, 5n)), ['s2/1']);
});

t.test('flock conversion drops the old lock first (no upgrade deadlock)', async (t) => {
  const f = (session: string, type: 'r' | 'w' | 'u'): LockRequest => ({
    session,
    owner: '9',
    kind: 'flock',
    type,
    start: 0n,
    end: LOCK_END_MAX,
    pid: 1,
  });
  let tab = applyLock(applyLock([], f('a', 'r')), f('b', 'r'));
  const pre = beforeRequest(tab, f('a', 'w'));
  t.ok(firstConflict(pre, f('a', 'w')), 'b still shares');
  tab = pre;
  t.notOk(firstConflict(beforeRequest(tab, f('b', 'w')), f('b', 'w')), 'b upgrades once a dropped its lock');
  t.notOk(firstConflict(tab, req('c', '1', 'w')), 'flock and POSIX locks do not meet');
  t.notOk(validLockRequest({ ...f('a', 'r'), start: 1n }), 'flock is whole-file');
});
