/**
 * The client's side of locks (client/file-locks.ts) against a fake brick
 * API: which owners FLUSH and RELEASE release (POSIX locks of the closing
 * process; OFD and flock locks of the open file), waits in slices, and an
 * interrupt that cancels (EINTR) or finds the lock granted.
 */
import { FsError } from '@dunix/proto';
import t from 'tap';
import type { BrickApi } from '../src/client/brick-api.js';
import { FileLocks } from '../src/client/file-locks.js';
import type { FileLock } from '../src/fuse/filesystem.js';

const INO = (2n << 48n) | 5n;
const END = (1n << 63n) - 1n;

type Call = { method: string; body: Record<string, unknown> };

function fakeApi(answer: (c: Call) => Promise<unknown> | unknown) {
  const calls: Call[] = [];
  let id = 0;
  const call = async (_pg: number, method: string, body: object) => {
    const c = { method, body: body as Record<string, unknown> };
    calls.push(c);
    return answer(c);
  };
  const api = { mutate: call, read: call, newRequestId: () => `r${++id}` } as unknown as BrickApi;
  return { api, calls };
}

const lock = (owner: bigint, type: number, flock = false): FileLock => ({
  owner,
  start: 0n,
  end: END,
  type,
  pid: 9,
  flock,
});
const never = new AbortController().signal;
const releases = (calls: Call[]) =>
  calls.filter((c) => c.method === 'ReleaseLocks').map((c) => [c.body.owners, c.body.posix, c.body.flock]);

t.test('FLUSH releases the closing process; RELEASE the open file (OFD, flock)', async (t) => {
  const { api, calls } = fakeApi(() => ({ granted: true, waiting: false }));
  const l = new FileLocks(api, () => 'm-1', { waitSliceMs: 5000 });
  await l.setlk(INO, 1n, lock(100n, 1), false, never); // POSIX lock of process 100 through fh 1
  await l.setlk(INO, 2n, lock(200n, 1), false, never); // OFD lock: the owner is open file 2
  await l.setlk(INO, 3n, lock(300n, 1, true), false, never); // flock through fh 3
  t.equal(calls.filter((c) => c.method === 'SetLock').length, 3);
  t.same((calls[0]!.body.lock as Record<string, unknown>).session, 'm-1', 'as this session');

  await l.flushed(INO, 2n, 100n); // process 100 closes fh 2: its POSIX locks go
  t.same(releases(calls), [[['100'], true, false]]);
  await l.flushed(INO, 1n, 100n); // and fh 1: nothing left of it to release
  t.equal(releases(calls).length, 1, 'released once');
  await l.released(INO, 1n, undefined);
  t.equal(releases(calls).length, 1, 'fh 1 took only the process lock: nothing at its release');
  await l.released(INO, 2n, undefined);
  t.same(releases(calls)[1], [['200'], true, true], "fh 2's OFD lock goes with it");
  await l.released(INO, 3n, 300n);
  t.same(releases(calls)[2], [['300'], true, true], 'the flock owner RELEASE names');
});

t.test('SETLK not granted is EAGAIN; without a session ENOLCK', async (t) => {
  const { api } = fakeApi(() => ({ granted: false, waiting: false }));
  const l = new FileLocks(api, () => 'm-1', { waitSliceMs: 5000 });
  await t.rejects(l.setlk(INO, 1n, lock(1n, 1), false, never), new FsError('TRY_AGAIN'));
  const none = new FileLocks(api, () => undefined, { waitSliceMs: 5000 });
  await t.rejects(none.setlk(INO, 1n, lock(1n, 1), false, never), new FsError('NO_LOCKS'));
});

t.test('SETLKW calls again while `waiting`, with one wait id', async (t) => {
  let n = 0;
  const { api, calls } = fakeApi(() => ({ granted: ++n === 3, waiting: n < 3 }));
  const l = new FileLocks(api, () => 'm-1', { waitSliceMs: 1234 });
  await l.setlk(INO, 1n, lock(1n, 1), true, never);
  t.equal(calls.length, 3);
  t.same(new Set(calls.map((c) => c.body.waitId)).size, 1, 'the same wait id');
  t.equal(calls[0]!.body.waitMs, 1234);
});

t.test('an interrupt cancels: EINTR, or success when the lock was granted first', async (t) => {
  for (const grantedFirst of [false, true]) {
    const { api, calls } = fakeApi((c) =>
      c.method === 'CancelLock' ? { granted: grantedFirst, waiting: false } : new Promise(() => {}),
    );
    const l = new FileLocks(api, () => 'm-1', { waitSliceMs: 5000 });
    const abort = new AbortController();
    const p = l.setlk(INO, 1n, lock(1n, 1), true, abort.signal);
    await new Promise((r) => setImmediate(r));
    abort.abort();
    if (grantedFirst) await t.resolves(p, 'granted before the cancel: the caller holds it');
    else await t.rejects(p, new FsError('INTERRUPTED'));
    const cancel = calls.find((c) => c.method === 'CancelLock');
    t.equal(cancel?.body.waitId, calls[0]!.body.waitId, 'the wait is cancelled by its id');
  }
});
