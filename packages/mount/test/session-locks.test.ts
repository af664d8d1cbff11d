/**
 * Lock requests through a FuseSession without a device: INIT offers
 * POSIX_LOCKS and FLOCK_LOCKS only with the `locks` option, GETLK / SETLK /
 * SETLKW reach the backend with the owner and the flock flag, an INTERRUPT
 * of a waiting SETLKW is answered EINTR at once, and RELEASE carries the
 * flock owner.
 */
import { constants } from 'node:os';
import { createLogger, FsError } from '@dunix/proto';
import t from 'tap';
import { FUSE_LK_FLOCK, FUSE_RELEASE_FLOCK_UNLOCK, InitFlag, Opcode } from '../src/fuse/abi.js';
import type { FuseChannel } from '../src/fuse/channel.js';
import { In, InHeader, Out, OutHeader } from '../src/fuse/codec.js';
import type { FileLock, FileSystem } from '../src/fuse/filesystem.js';
import { FuseSession } from '../src/fuse/session.js';

const E = constants.errno;

class Channel implements FuseChannel {
  readonly blocksThreads = false;
  readonly written: Buffer[] = [];
  read(): Promise<number> {
    return new Promise(() => {});
  }
  write(parts: readonly Buffer[]): boolean {
    this.written.push(Buffer.concat(parts));
    return true;
  }
  notify(): Promise<void> {
    return Promise.resolve();
  }
  close(): void {}
}

type Calls = unknown[][];

/** A backend with only what these tests call; anything else is absent. */
function backend(calls: Calls, impl: Partial<FileSystem>): FileSystem {
  return new Proxy(impl, {
    get: (target, p) => {
      const v = (target as Record<string | symbol, unknown>)[p];
      if (v !== undefined || typeof p !== 'string') return v;
      if (p === 'release')
        return async (...args: unknown[]) => {
          calls.push(['release', ...args.slice(1)]);
        };
      return undefined;
    },
  }) as FileSystem;
}

let unique = 100n;
function request(opcode: number, body: Buffer, nodeid = 9n): { unique: bigint; msg: Buffer } {
  unique += 2n;
  const head = InHeader.build({ len: 40 + body.length, opcode, unique, nodeid, uid: 1, gid: 1, pid: 0 });
  return { unique, msg: Buffer.concat([head, body]) };
}

async function session(locks: boolean, fs: FileSystem) {
  const ch = new Channel();
  const s = new FuseSession(
    fs,
    ch,
    { locks },
    createLogger('t', () => {}),
  );
  const init = request(
    Opcode.INIT,
    In.init.build({ major: 7, minor: 38, maxReadahead: 65536, flags: 0xffffffff }),
  );
  await s.handle(init.msg);
  const initOut = Out.init.decode(ch.written[0]!, 16);
  const reply = (u: bigint) => {
    const raw = ch.written.find((b) => OutHeader.decode(b, 0).unique === u);
    return raw && { ...OutHeader.decode(raw, 0), body: raw.subarray(16) };
  };
  return { s, ch, flags: BigInt(initOut.flags), reply };
}

t.test('INIT offers POSIX_LOCKS and FLOCK_LOCKS only with the option', async (t) => {
  const both = InitFlag.POSIX_LOCKS | InitFlag.FLOCK_LOCKS;
  t.equal((await session(true, backend([], {}))).flags & both, both);
  t.equal((await session(false, backend([], {}))).flags & both, 0n);
});

t.test('GETLK, SETLK and flock reach the backend', async (t) => {
  const calls: Calls = [];
  const fs = backend(calls, {
    getlk: async (_c, ino, fh, lock) => {
      calls.push(['getlk', ino, fh, lock]);
      return { owner: 5n, start: 10n, end: 19n, type: 1, pid: 77, flock: false };
    },
    setlk: async (_c, ino, fh, lock, wait) => {
      calls.push(['setlk', ino, fh, lock, wait]);
      if (lock.start === 666n) throw new FsError('TRY_AGAIN');
    },
  });
  const { s, reply } = await session(true, fs);
  const g = request(
    Opcode.GETLK,
    In.lk.build({ fh: 3n, owner: 0xabcn, start: 0n, end: 100n, type: 1, pid: 4 }),
  );
  await s.handle(g.msg);
  const r = reply(g.unique)!;
  t.equal(r.error, 0);
  t.strictSame(Out.lk.decode(r.body, 0), { start: 10n, end: 19n, type: 1, pid: 77 });
  const want: FileLock = { owner: 0xabcn, start: 0n, end: 100n, type: 1, pid: 4, flock: false };
  t.strictSame(calls[0], ['getlk', 9n, 3n, want]);

  const f = request(
    Opcode.SETLK,
    In.lk.build({
      fh: 3n,
      owner: 0xdefn,
      start: 0n,
      end: (1n << 63n) - 1n,
      type: 0,
      pid: 4,
      lkFlags: FUSE_LK_FLOCK,
    }),
  );
  await s.handle(f.msg);
  t.equal(reply(f.unique)!.error, 0);
  t.strictSame((calls[1]![3] as FileLock).flock, true, 'FUSE_LK_FLOCK is flock');
  t.equal(calls[1]![4], false, 'SETLK does not wait');

  const busy = request(Opcode.SETLK, In.lk.build({ fh: 3n, owner: 1n, start: 666n, end: 667n, type: 1 }));
  await s.handle(busy.msg);
  t.equal(reply(busy.unique)!.error, -E.EAGAIN!, 'a lock in the way: EAGAIN');
});

t.test('INTERRUPT of a waiting SETLKW answers EINTR at once', async (t) => {
  const calls: Calls = [];
  const fs = backend(calls, {
    setlk: (_c, _ino, _fh, lock, wait, signal) => {
      calls.push(['setlk', lock.owner, wait]);
      return new Promise<void>((_resolve, reject) => {
        signal.addEventListener('abort', () => reject(new FsError('INTERRUPTED')), { once: true });
      });
    },
  });
  const { s, reply } = await session(true, fs);
  const w = request(Opcode.SETLKW, In.lk.build({ fh: 3n, owner: 2n, start: 0n, end: 9n, type: 1, pid: 4 }));
  const pending = s.handle(w.msg);
  await new Promise((r) => setImmediate(r));
  t.equal(reply(w.unique), undefined, 'waiting');
  t.strictSame(calls, [['setlk', 2n, true]]);
  const i = request(Opcode.INTERRUPT, In.interrupt.build({ unique: w.unique }));
  await s.handle(i.msg);
  await pending;
  t.equal(reply(w.unique)!.error, -E.EINTR!, 'EINTR');
  t.equal(reply(i.unique), undefined, 'the interrupt itself is not answered');
});

t.test('RELEASE carries the flock owner; without locks it does not', async (t) => {
  for (const locks of [true, false]) {
    const calls: Calls = [];
    const { s } = await session(locks, backend(calls, {}));
    const r = request(
      Opcode.RELEASE,
      In.release.build({ fh: 3n, flags: 2, releaseFlags: FUSE_RELEASE_FLOCK_UNLOCK, lockOwner: 0x55n }),
    );
    await s.handle(r.msg);
    t.strictSame(calls, [
      locks ? ['release', 9n, 3n, 2, { owner: 0x55n, flock: true }] : ['release', 9n, 3n, 2],
    ]);
  }
});

t.test('without the option lock requests get ENOSYS', async (t) => {
  const { s, reply } = await session(false, backend([], { setlk: async () => {} }));
  const q = request(Opcode.SETLK, In.lk.build({ fh: 3n, type: 1 }));
  await s.handle(q.msg);
  t.equal(reply(q.unique)!.error, -E.ENOSYS!);
});
