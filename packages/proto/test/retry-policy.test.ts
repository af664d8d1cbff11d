import t from 'tap';
import net from 'node:net';
import {
  FrameServer,
  FsError,
  retryableCodes,
  retryDefaults,
  Router,
  validateRetryKnobs,
  type BrickConn,
  type BrickHandlers,
  type PgAssignment,
  type RetryClock,
  type RoutingSnapshot,
} from '../src/index.js';

/**
 * The one retry policy (Router.call) against fake connections and a fake
 * clock: failover mid-call, refused connections, final errors and the
 * deadline. Time only moves when a test advances it.
 */

/** Timers that fire only when the test advances time. */
class FakeClock implements RetryClock {
  private t = 0;
  private nextId = 1;
  private readonly timers = new Map<number, { atMs: number; fn: () => void }>();
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.set(id, { atMs: this.t + ms, fn });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number);
  }
  /** Moves time forward, firing due timers in order and letting promises settle after each. */
  async advance(ms: number): Promise<void> {
    const endMs = this.t + ms;
    // Let callers reach their next timer before time moves.
    await settle();
    for (;;) {
      let due: [number, { atMs: number; fn: () => void }] | undefined;
      for (const e of this.timers) if (e[1].atMs <= endMs && (!due || e[1].atMs < due[1].atMs)) due = e;
      if (!due) break;
      this.timers.delete(due[0]);
      this.t = due[1].atMs;
      due[1].fn();
      await settle();
    }
    this.t = endMs;
    await settle();
  }
}

const settle = () => new Promise<void>((r) => setImmediate(r));

interface Sent {
  method: string;
  request: { header: { pg: number; epoch: number; requestId: string; attempt: number } };
}

/** A brick connection whose answers the test scripts: a reply, an error, or never. */
class FakeConn implements BrickConn {
  readonly sent: Sent[] = [];
  constructor(private readonly answer: (s: Sent) => Promise<unknown>) {}
  unary<Rep>(method: string, request: object): Promise<Rep> {
    const s = { method, request } as Sent;
    this.sent.push(s);
    return this.answer(s) as Promise<Rep>;
  }
  close(): void {}
}

const hang = () => new Promise<never>(() => {});
const fail = (code: FsError['code']) => () => Promise.reject(new FsError(code, 'scripted'));
const ok = (s: Sent) => Promise.resolve({ from: s.request.header.epoch });

function snapshot(primary: string, epoch: number, bricks = ['a', 'b', 'c']): RoutingSnapshot {
  const placement: PgAssignment[] = [{ pg: 0, bricks: [primary], isr: [primary], epoch }];
  return {
    config: {
      name: 'v',
      pgCount: 1,
      replicas: 3,
      minInsync: 2,
      blockSizeBytes: 1 << 20,
      inlineMaxBytes: 4096,
      createdAtMs: 0,
    },
    placement,
    bricks: bricks.map((id) => ({ id, address: `${id}:1`, dataAddress: `${id}:2` })),
  };
}

function setup(conns: Record<string, FakeConn>, knobs = {}) {
  const clock = new FakeClock();
  const refused: string[] = [];
  const warnings: Record<string, unknown>[] = [];
  const log = {
    debug() {},
    info() {},
    warn: (_m: string, f?: Record<string, unknown>) => warnings.push(f ?? {}),
    error() {},
    enabled: () => true,
  };
  const router = new Router({
    clock,
    log,
    knobs,
    onConnectionRefused: (id) => refused.push(id),
    connect: (b) => {
      const c = conns[b.id];
      if (!c) throw new Error(`no fake conn ${b.id}`);
      return c;
    },
  });
  return { clock, router, refused, warnings };
}

/** The outcome of a promise, readable synchronously once it settled. */
function track<T>(p: Promise<T>) {
  const s: { done: boolean; value?: T; error?: unknown } = { done: false };
  p.then(
    (v) => Object.assign(s, { done: true, value: v }),
    (e: unknown) => Object.assign(s, { done: true, error: e }),
  );
  return s;
}

t.test('the retryable codes: failover signals, not final answers', async (t) => {
  t.same(
    [...retryableCodes].sort(),
    ['CONFLICT', 'NOT_PRIMARY', 'STALE_EPOCH', 'TIMED_OUT', 'UNAVAILABLE'],
    'one list',
  );
  t.notOk(retryableCodes.has('NOT_ENOUGH_REPLICAS'), 'NOT_ENOUGH_REPLICAS is final');
  t.throws(() => validateRetryKnobs({ ...retryDefaults, backoffMinMs: 2000 }), RangeError);
  t.throws(() => validateRetryKnobs({ ...retryDefaults, callTimeoutMs: 0 }), RangeError);
});

t.test('a call hung at the primary is re-sent to the new primary when the map changes', async (t) => {
  const a = new FakeConn(hang);
  const b = new FakeConn(ok);
  const { clock, router } = setup({ a, b });
  router.update(snapshot('a', 1));
  const call = track(router.call(0, 'Mkdir', { name: 'x' }, { requestId: 'req-1', deadlineMs: 60_000 }));
  await clock.advance(500);
  t.equal(a.sent.length, 1, 'sent to the first primary');
  t.notOk(call.done, 'still waiting: the hung primary neither answers nor times out yet');
  // Failover: b is promoted at a new epoch while the call is in flight.
  router.update(snapshot('b', 2));
  await settle();
  t.ok(call.done, 'done without waiting out the attempt timeout');
  t.same(call.value, { from: 2 }, 'answered by the new primary at the new epoch');
  t.equal(clock.now(), 500, 'no time passed after the map changed');
  t.equal(b.sent.length, 1);
  t.equal(b.sent[0]!.request.header.requestId, 'req-1', 'same request id');
  t.equal(b.sent[0]!.request.header.attempt, 1, 'marked as a retry');
  t.equal(b.sent[0]!.method, 'Mkdir');
});

t.test('a change to another PG or an unchanged map does not abandon a call', async (t) => {
  let answer: ((v: unknown) => void) | undefined;
  const a = new FakeConn(() => new Promise((r) => (answer = r)));
  const { clock, router } = setup({ a, b: new FakeConn(ok) });
  router.update(snapshot('a', 1));
  const call = track(router.call(0, 'GetAttr', {}, { deadlineMs: 60_000 }));
  await clock.advance(100);
  router.update(snapshot('a', 1, ['a', 'b', 'c', 'd']));
  await settle();
  t.notOk(call.done, 'same primary, same epoch: keep waiting');
  answer!({ fine: true });
  await settle();
  t.same(call.value, { fine: true });
  t.equal(a.sent.length, 1, 'sent once');
});

t.test('a primary that never answers and is never replaced: the attempt timeout retries it', async (t) => {
  const a = new FakeConn(hang);
  const { clock, router } = setup({ a }, { callTimeoutMs: 1000 });
  router.update(snapshot('a', 1));
  const call = track(router.call(0, 'GetAttr', {}, { deadlineMs: 60_000 }));
  await clock.advance(999);
  t.equal(a.sent.length, 1);
  await clock.advance(1 + retryDefaults.backoffMinMs);
  t.equal(a.sent.length, 2, 'retried after the attempt timeout and one backoff');
  t.notOk(call.done);
});

t.test('refused connections are retried, reported once per interval, and end at a new primary', async (t) => {
  const b = new FakeConn(ok);
  const clock = new FakeClock();
  const refused: string[] = [];
  let a: FakeConn | undefined;
  const router = new Router({
    clock,
    onConnectionRefused: (id) => refused.push(`${id}@${clock.now()}`),
    // As FrameConn does: a refused connect is reported, then fails the call with UNAVAILABLE.
    connect: (brick, events) =>
      brick.id === 'a'
        ? (a = new FakeConn(() => {
            events.onConnectionRefused();
            return Promise.reject(new FsError('UNAVAILABLE', 'connect ECONNREFUSED'));
          }))
        : b,
  });
  router.update(snapshot('a', 1));
  const call = track(router.call(0, 'Mkdir', {}, { requestId: 'r', deadlineMs: 60_000 }));
  await clock.advance(1200);
  // Backoff 10, 20, 40, ... ms: attempts at 0, 10, 30, 70, 150, 310, 630 ms.
  t.equal(a?.sent.length, 7, 'retried with backoff');
  t.notOk(call.done, 'no error while the deadline lasts');
  t.same(refused, ['a@0', 'a@630'], 'the controller is told at most once per 500 ms');
  router.update(snapshot('b', 2));
  await settle();
  t.same(call.value, { from: 2 });
  t.equal(b.sent[0]?.request.header.requestId, 'r', 'the request id travels to the new primary');
});

t.test('NOT_ENOUGH_REPLICAS fails at once (EROFS), without retries', async (t) => {
  const a = new FakeConn(fail('NOT_ENOUGH_REPLICAS'));
  const { router } = setup({ a });
  router.update(snapshot('a', 1));
  const err = await router.call(0, 'Mkdir', {}, { requestId: 'r', deadlineMs: 60_000 }).catch((e) => e);
  t.ok(err instanceof FsError && err.code === 'NOT_ENOUGH_REPLICAS', String(err));
  t.equal((err as FsError).errno, (await import('node:os')).constants.errno.EROFS, 'EROFS');
  t.equal(a.sent.length, 1, 'one attempt');
});

t.test('a bug (not an FsError) is not retried', async (t) => {
  const a = new FakeConn(() => Promise.reject(new TypeError('broken')));
  const { router } = setup({ a });
  router.update(snapshot('a', 1));
  await t.rejects(router.call(0, 'GetAttr', {}, { deadlineMs: 60_000 }), TypeError);
  t.equal(a.sent.length, 1);
});

t.test('the deadline ends retries with TIMED_OUT naming the PG, and a log line', async (t) => {
  const a = new FakeConn(fail('UNAVAILABLE'));
  const { clock, router, warnings } = setup({ a });
  router.update(snapshot('a', 1));
  const call = track(router.call(0, 'Mkdir', {}, { requestId: 'r', deadlineMs: 5000 }));
  await clock.advance(4990);
  t.notOk(call.done, 'still retrying before the deadline');
  await clock.advance(10);
  t.ok(call.done, 'done at the deadline');
  const err = call.error as FsError;
  t.ok(err instanceof FsError && err.code === 'TIMED_OUT', String(err));
  t.match(err.message, /pg 0 Mkdir: no primary answered within 5000 ms \(last tried a at epoch 1/);
  t.equal(warnings.length, 1, 'one log line');
  t.match(warnings[0], { pg: 0, method: 'Mkdir', primary: 'a', epoch: 1, deadlineMs: 5000 });
});

t.test('a hung primary never replaced: the last attempt is cut at the deadline', async (t) => {
  const a = new FakeConn(hang);
  const { clock, router } = setup({ a });
  router.update(snapshot('a', 1));
  const call = track(router.call(0, 'GetAttr', {}, { deadlineMs: 3000 }));
  await clock.advance(3000);
  t.ok(call.done);
  t.match((call.error as FsError).code, 'TIMED_OUT');
  t.equal(a.sent.length, 1, 'one attempt, bounded by the op deadline rather than the 10 s backstop');
});

t.test('a PG without a primary waits for the map, then goes at once', async (t) => {
  const b = new FakeConn(ok);
  const { clock, router } = setup({ b });
  const s = snapshot('b', 1);
  s.placement[0]!.bricks = [];
  router.update(s);
  const call = track(router.call(0, 'GetAttr', {}, { deadlineMs: 60_000 }));
  await clock.advance(300);
  t.notOk(call.done);
  router.update(snapshot('b', 2));
  await settle();
  t.same(call.value, { from: 2 });
});

t.test('NOT_PRIMARY from a brick ahead of our map: wait for the map, not a busy loop', async (t) => {
  const a = new FakeConn(fail('NOT_PRIMARY'));
  const b = new FakeConn(ok);
  const { clock, router } = setup({ a, b });
  router.update(snapshot('a', 1));
  const call = track(router.call(0, 'Mkdir', {}, { requestId: 'r', deadlineMs: 60_000 }));
  await clock.advance(35);
  t.ok(a.sent.length <= 3, `backed off (${a.sent.length} attempts in 35 ms)`);
  router.update(snapshot('b', 2));
  await settle();
  t.same(call.value, { from: 2 });
});

t.test('closing the router ends calls at once', async (t) => {
  const a = new FakeConn(hang);
  const { router } = setup({ a });
  router.update(snapshot('a', 1));
  const call = router.call(0, 'GetAttr', {}, { deadlineMs: 60_000 });
  await settle();
  router.close();
  const err = await call.catch((e: unknown) => e);
  t.ok(err instanceof FsError && err.code === 'INTERRUPTED', String(err));
});

t.test(
  'a failed router (the volume was deleted) ends calls in flight and later ones with its reason',
  async (t) => {
    const a = new FakeConn(hang);
    const { router } = setup({ a });
    router.update(snapshot('a', 1));
    const call = router.call(0, 'GetAttr', {}, { deadlineMs: 60_000 });
    await settle();
    router.fail(new FsError('IO', 'volume v was deleted'));
    const err = await call.catch((e: unknown) => e);
    t.ok(err instanceof FsError && err.code === 'IO' && /deleted/.test(err.message), String(err));
    const later = await router.call(1, 'GetAttr', {}, { deadlineMs: 60_000 }).catch((e: unknown) => e);
    t.ok(
      later instanceof FsError && later.code === 'IO',
      'a later call fails at once, not after the deadline',
    );
    t.throws(() => router.connFor('a'), { code: 'IO' }, 'no new connection');
  },
);

t.test('real frames: a killed brick is refused, reported and retried until a live one serves', async (t) => {
  const handlers = {
    GetAttr: (call: { request: { header: { epoch: number } } }, cb: (e: null, r: unknown) => void) =>
      cb(null, { attr: { ino: String(call.request.header.epoch), mode: 0o100644 } }),
  } as unknown as BrickHandlers;
  const server = new FrameServer(handlers);
  const livePort = await server.listen('127.0.0.1', 0);
  const deadPort = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const refused: string[] = [];
  const router = new Router({ onConnectionRefused: (id) => refused.push(id) });
  t.teardown(async () => {
    router.close();
    await server.close();
  });
  const snap = (primary: string, epoch: number): RoutingSnapshot => ({
    ...snapshot(primary, epoch),
    bricks: [
      { id: 'dead', address: 'unused:1', dataAddress: `127.0.0.1:${deadPort}` },
      { id: 'live', address: 'unused:1', dataAddress: `127.0.0.1:${livePort}` },
    ],
  });
  router.update(snap('dead', 1));
  const call = router.call<{ attr: { ino: string } }>(0, 'GetAttr', { ino: '1' }, { deadlineMs: 10_000 });
  await new Promise((r) => setTimeout(r, 100));
  t.same(refused, ['dead'], 'the refusal was reported (once within 500 ms)');
  router.update(snap('live', 7));
  const r = await call;
  t.equal(r.attr.ino, '7', 'served by the new primary at its epoch');
});
