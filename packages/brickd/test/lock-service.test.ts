/**
 * The primary's side of locks (lock-service.ts) over an in-memory store, a
 * serial queue and fake timers: waiters in order, slices and a waiter's
 * place between them, cancel before and after a grant, EDEADLK, sessions
 * gone.
 */
import { createLogger, FsError } from '@dunix/proto';
import t from 'tap';
import { brickDefaults } from '../src/config.js';
import { LockService } from '../src/lock-service.js';
import { LOCK_END_MAX, type HeldLock, type LockRequest } from '../src/namespace/lock-table.js';
import type { MetaTxn } from '../src/namespace/txn.js';
import { MemoryKv } from '../src/store/memory-kv.js';
import { RecordTxn, KvTxn } from '../src/namespace/txn.js';

const PG = 3;
const INO = (3n << 48n) | 7n;

/** `cached`: what a cached listing of the mount records says (default: the truth, `alive`). */
function world(alive: Set<string> = new Set(['s1', 's2', 's3']), cached?: Set<string>) {
  const kv = new MemoryKv();
  const writes = { n: 0 };
  let queue: Promise<unknown> = Promise.resolve();
  let now = 0;
  const timers = new Map<number, { at: number; fn: () => void }>();
  let nextTimer = 1;
  const mutate = <T>(_pg: number, _kind: string, op: (t: MetaTxn) => Promise<T>): Promise<T> => {
    const run = queue.then(async () => {
      const k = new KvTxn({ get: (key) => kv.get(key), range: (o) => kv.range(o) });
      const txn = new RecordTxn(k, 0n, () => Promise.reject(new Error('no alloc')));
      const r = await op(txn);
      const batch = k.writeBatch();
      if (batch.length > 0) writes.n++;
      await kv.write(batch, false);
      return r;
    });
    queue = run.catch(() => {});
    return run;
  };
  const svc = new LockService({
    mutate,
    read: (pg, op) => mutate(pg, 'read', op),
    ledPgs: () => [PG],
    kv,
    mountsAlive: async (fresh) => (fresh ? alive : (cached ?? alive)),
    knobs: { ...brickDefaults, lockWaitSliceMaxMs: 1000, lockWaitKeepMs: 3000, lockSessionCheckMs: 100_000 },
    timers: {
      nowMs: () => now,
      set: (fn, ms) => {
        const id = nextTimer++;
        timers.set(id, { at: now + ms, fn });
        return id;
      },
      clear: (h) => void timers.delete(h as number),
    },
    log: createLogger('t', () => {}),
  });
  const advance = async (ms: number) => {
    now += ms;
    for (const [id, tm] of [...timers].sort((a, b) => a[1].at - b[1].at)) {
      if (tm.at <= now && timers.has(id)) {
        timers.delete(id);
        tm.fn();
      }
    }
    await settle();
  };
  const table = () => mutate(PG, 'read', (t) => t.getLocks(INO));
  return { svc, advance, table, alive, writes };
}

const settle = async () => {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
};

const lk = (
  session: string,
  type: 'r' | 'w' | 'u',
  start = 0n,
  end = LOCK_END_MAX,
  owner = '1',
): LockRequest => ({
  session,
  owner,
  kind: 'posix',
  type,
  start,
  end,
  pid: 1,
});

/** A promise's state without waiting for it. */
function track<T>(p: Promise<T>) {
  const s: { value?: T; error?: unknown; done: boolean } = { done: false };
  p.then(
    (v) => Object.assign(s, { value: v, done: true }),
    (e: unknown) => Object.assign(s, { error: e, done: true }),
  );
  return s;
}

t.test('SETLK, and SETLKW woken in order', async (t) => {
  const w = world();
  t.same(await w.svc.setLock(PG, INO, lk('s1', 'w'), 0, ''), { granted: true, waiting: false });
  const busy = await w.svc.setLock(PG, INO, lk('s2', 'r'), 0, '');
  t.equal(busy.granted, false);
  t.equal(busy.conflict?.session, 's1', 'the lock in the way');
  const got = await w.svc.getLock(PG, INO, lk('s2', 'r'));
  t.equal(got.conflict?.type, 'w', 'GETLK sees it');

  const a = track(w.svc.setLock(PG, INO, lk('s2', 'w'), 1000, 'wa'));
  await settle();
  const b = track(w.svc.setLock(PG, INO, lk('s3', 'w'), 1000, 'wb'));
  await settle();
  t.notOk(a.done || b.done, 'both wait');
  await w.svc.setLock(PG, INO, lk('s1', 'u'), 0, '');
  await settle();
  t.same(a.value, { granted: true, waiting: false }, 'the first waiter is granted');
  t.notOk(b.done, 'the second still waits');
  t.same(
    (await w.table()).map((h: HeldLock) => h.session),
    ['s2'],
    'the table has the grant',
  );
  await w.svc.release(PG, INO, 's2', new Set(['1']), new Set(['posix']));
  await settle();
  t.same(b.value, { granted: true, waiting: false }, 'then the second (a release wakes it)');
});

t.test('a slice ends with `waiting`; the next call keeps the place and finds a grant', async (t) => {
  const w = world();
  await w.svc.setLock(PG, INO, lk('s1', 'w'), 0, '');
  const first = track(w.svc.setLock(PG, INO, lk('s2', 'w'), 1000, 'wa'));
  await settle();
  await w.advance(1000);
  t.same(first.value, { granted: false, waiting: true }, 'slice over');
  const later = track(w.svc.setLock(PG, INO, lk('s3', 'w'), 1000, 'wb'));
  await settle();
  await w.svc.setLock(PG, INO, lk('s1', 'u'), 0, '');
  await settle();
  t.notOk(later.done, 'the waiter between calls kept its place: the later one waits');
  t.same(
    await w.svc.setLock(PG, INO, lk('s2', 'w'), 1000, 'wa'),
    { granted: true, waiting: false },
    'granted at the next call',
  );
  await w.advance(3000);
  t.equal((await w.table())[0]?.session, 's2');
});

t.test('cancel: before the grant the waiter leaves; after it the caller holds the lock', async (t) => {
  const w = world();
  await w.svc.setLock(PG, INO, lk('s1', 'w'), 0, '');
  const a = track(w.svc.setLock(PG, INO, lk('s2', 'w'), 1000, 'wa'));
  await settle();
  t.same(await w.svc.cancel(PG, INO, 'wa'), { granted: false, waiting: false });
  await settle();
  t.same(a.value, { granted: false, waiting: false }, 'the held call is answered');
  t.same(
    await w.svc.setLock(PG, INO, lk('s2', 'w'), 1000, 'wa'),
    { granted: false, waiting: false },
    'a late call of the cancelled wait is not queued again',
  );
  const b = track(w.svc.setLock(PG, INO, lk('s3', 'w'), 1000, 'wb'));
  await settle();
  await w.advance(1000); // slice over: detached
  await w.svc.setLock(PG, INO, lk('s1', 'u'), 0, '');
  await settle();
  t.same(b.value, { granted: false, waiting: true });
  t.same(await w.svc.cancel(PG, INO, 'wb'), { granted: true, waiting: false }, 'granted before the cancel');
});

t.test('a two-session cycle is EDEADLK', async (t) => {
  const w = world();
  await w.svc.setLock(PG, INO, lk('s1', 'w', 0n, 0n), 0, '');
  await w.svc.setLock(PG, INO, lk('s2', 'w', 1n, 1n), 0, '');
  const s2waits = track(w.svc.setLock(PG, INO, lk('s2', 'w', 0n, 0n), 1000, 'w2'));
  await settle();
  const err = await w.svc.setLock(PG, INO, lk('s1', 'w', 1n, 1n), 1000, 'w1').then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof FsError && err.code === 'DEADLOCK', 'EDEADLK');
  t.notOk(s2waits.done, 'the first waiter still waits');
  await w.svc.release(PG, INO, 's1', new Set(['1']), new Set(['posix']));
  await settle();
  t.same(s2waits.value, { granted: true, waiting: false });
});

t.test("a gone session's locks are released and its waiters dropped", async (t) => {
  const w = world();
  await w.svc.setLock(PG, INO, lk('s1', 'w'), 0, '');
  const a = track(w.svc.setLock(PG, INO, lk('s2', 'w'), 1000, 'wa'));
  await settle();
  t.equal(await w.svc.sweepSessions(), 0, 'everyone alive: nothing');
  w.alive.delete('s1');
  t.equal(await w.svc.sweepSessions(), 1, 'one lock of the dead session');
  await settle();
  t.same(a.value, { granted: true, waiting: false }, 'the waiter has it');
  t.same(
    (await w.table()).map((h: HeldLock) => h.session),
    ['s2'],
  );
});

t.test('a session missing from a cached listing is listed again before its locks go', async (t) => {
  const w = world(new Set(['s1', 's2']), new Set(['s2']));
  await w.svc.setLock(PG, INO, lk('s1', 'w'), 0, '');
  t.equal(await w.svc.sweepSessions(), 0, 'the fresh listing has s1: kept');
  t.equal((await w.table()).length, 1);
});

t.test('a lock already held and an unlock of nothing write no entry', async (t) => {
  const w = world();
  await w.svc.setLock(PG, INO, lk('s1', 'w', 0n, 9n), 0, '');
  const n = w.writes.n;
  t.same(await w.svc.setLock(PG, INO, lk('s1', 'w', 2n, 5n), 0, ''), { granted: true, waiting: false });
  t.same(await w.svc.setLock(PG, INO, lk('s1', 'u', 20n, 29n), 0, ''), { granted: true, waiting: false });
  t.equal(w.writes.n, n, 'no write');
  await w.svc.setLock(PG, INO, lk('s1', 'r', 2n, 5n), 0, '');
  t.equal(w.writes.n, n + 1, 'a downgrade writes');
});
