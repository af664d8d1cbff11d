import t from 'tap';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import {
  brickProto,
  connLimitDefaults,
  FrameConn,
  FrameServer,
  FsError,
  header,
  limits,
  validateConnLimits,
  type BrickHandlers,
  type ConnLimits,
} from '../src/index.js';

/**
 * The frame server's limits against real sockets: a peer that sends calls
 * and never reads its socket holds a bounded number of calls and queued
 * bytes (and gets every reply once it reads); calls past the in-flight cap
 * wait; the connection past the cap closes the idlest one or is refused; an
 * idle connection is closed, a busy one is not.
 */

type Cb = (err: Partial<grpc.StatusObject> | null, reply?: unknown) => void;
type Call = { request: Record<string, unknown> };

const REPLY_BYTES = 1024 * 1024;

function world() {
  const hung: Cb[] = [];
  let served = 0;
  const handlers = {
    // Hangs until released: a call in flight as long as the test wants.
    GetAttr: (call: Call, cb: Cb) => {
      served++;
      hung.push(cb);
      void call;
    },
    // A large reply for a small request: what a reader that never reads would pile up.
    ReadBlock: (_call: Call, cb: Cb) => {
      served++;
      setImmediate(() => cb(null, { data: Buffer.alloc(REPLY_BYTES, 0xab) }));
    },
  } as unknown as BrickHandlers;
  return {
    handlers,
    hung,
    served: () => served,
    release: (n = hung.length) => {
      for (const cb of hung.splice(0, n)) cb(null, { attr: null });
    },
  };
}

async function serve(
  t: { teardown(fn: () => unknown): void },
  w: ReturnType<typeof world>,
  l: Partial<ConnLimits>,
) {
  const bad: string[] = [];
  const server = new FrameServer(w.handlers, (r) => bad.push(r), undefined, l);
  const port = await server.listen('127.0.0.1', 0);
  const conns: FrameConn[] = [];
  const socks: net.Socket[] = [];
  t.teardown(async () => {
    w.release();
    for (const c of conns) c.close();
    for (const s of socks) s.destroy();
    await server.close();
  });
  return {
    server,
    bad,
    conn: () => {
      const c = new FrameConn(`127.0.0.1:${port}`);
      conns.push(c);
      return c;
    },
    raw: () =>
      new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect({ host: '127.0.0.1', port }, () => resolve(s));
        s.once('error', reject);
        socks.push(s);
      }),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** A request frame as a client would send it, for raw sockets. */
/**
 * Waits until the server stops making progress (no call served for 30 polls
 * 20 ms apart); returns the most reply bytes it held queued meanwhile.
 */
async function untilStalled(
  server: { stats(): { queuedBytes: number } },
  w: { served(): number },
): Promise<number> {
  let last = -1;
  let peakQueued = 0;
  for (let stable = 0; stable < 30;) {
    await sleep(20);
    peakQueued = Math.max(peakQueued, server.stats().queuedBytes);
    if (w.served() === last) stable++;
    else {
      stable = 0;
      last = w.served();
    }
  }
  return peakQueued;
}

function requestFrame(method: string, id: number, request: object): Buffer {
  const svc = brickProto().dunix.v1.Brick.service as unknown as Record<
    string,
    { requestSerialize(v: unknown): Buffer }
  >;
  const names = Object.keys(svc).sort();
  const body = svc[method]!.requestSerialize(request);
  return Buffer.concat([header(id, names.indexOf(method), 0, 0, body.length), body]);
}

t.test(
  'a peer that sends calls and never reads: bounded calls and queued bytes, then every reply',
  async (t) => {
    const w = world();
    const queuedMax = 256 * 1024;
    const inflightMax = 4;
    const { server, raw } = await serve(t, w, {
      queuedBytesPerConnMax: queuedMax,
      inflightCallsPerConnMax: inflightMax,
    });
    const sock = await raw();
    sock.pause(); // never reads (until the end)
    const CALLS = 200; // 200 MiB of replies if the server answered them all
    const frames = Array.from({ length: CALLS }, (_v, i) =>
      requestFrame('ReadBlock', i + 1, { ino: '1', index: '0', offset: 0, length: REPLY_BYTES }),
    );
    sock.write(Buffer.concat(frames));
    const peakQueued = await untilStalled(server, w);
    const s = server.stats();
    t.comment(
      `served ${w.served()} of ${CALLS}; queued ${s.queuedBytes} bytes (peak ${peakQueued}); held ${s.heldFrames}`,
    );
    // The kernel's socket buffers take some replies (a few MiB on loopback); the rest wait as frames.
    t.ok(w.served() < CALLS / 4, `the server served only what fits (${w.served()} of ${CALLS} calls)`);
    t.ok(
      peakQueued <= queuedMax + (inflightMax + 1) * (REPLY_BYTES + 64),
      `unread reply bytes stayed bounded (peak ${peakQueued})`,
    );
    t.ok(s.heldFrames + w.served() <= CALLS, 'no call was served twice');
    // Nothing was dropped: once the peer reads, every call gets its reply.
    let replies = 0;
    let notReplies = 0;
    let buf = Buffer.alloc(0);
    let need = 12;
    let inHeader = true;
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        if (buf.length < need) return;
        if (inHeader) {
          if (buf[10] !== 1) notReplies++;
          need = buf.readUInt32LE(0);
          buf = buf.subarray(12);
          inHeader = false;
        } else {
          buf = buf.subarray(need);
          need = 12;
          inHeader = true;
          replies++;
        }
      }
    });
    sock.resume();
    await until(() => replies === CALLS, `${CALLS} replies (got ${replies})`, 60_000);
    t.equal(replies, CALLS, 'every call was answered once the peer read');
    t.equal(notReplies, 0, 'no call failed');
    t.equal(server.stats().heldFrames, 0);
  },
);

t.test('reads in flight count the reply bytes they ask for', async (t) => {
  // Many calls allowed in flight, but their replies would exceed the bytes allowed:
  // a peer that never reads gets only as many reads started as fit.
  const w = world();
  const { server, raw } = await serve(t, w, {
    inflightCallsPerConnMax: 1024,
    inflightBytesPerConnMax: limits.messageMaxBytes,
    queuedBytesPerConnMax: 256 * 1024,
  });
  const sock = await raw();
  sock.pause();
  const CALLS = 200;
  sock.write(
    Buffer.concat(
      Array.from({ length: CALLS }, (_v, i) =>
        requestFrame('ReadBlock', i + 1, { ino: '1', index: '0', offset: 0, length: REPLY_BYTES }),
      ),
    ),
  );
  const peakQueued = await untilStalled(server, w);
  t.comment(`served ${w.served()} of ${CALLS}; peak queued ${peakQueued} bytes`);
  const fit = Math.floor(limits.messageMaxBytes / REPLY_BYTES);
  t.ok(
    w.served() < fit + 32,
    `${w.served()} reads started (${fit} fit in the bytes allowed, plus what the kernel took)`,
  );
  t.ok(
    peakQueued <= limits.messageMaxBytes + 2 * (REPLY_BYTES + 64),
    `queued reply bytes bounded (peak ${peakQueued})`,
  );
});

t.test('calls past the in-flight cap wait and are served as earlier ones finish', async (t) => {
  const w = world();
  const { server, conn } = await serve(t, w, { inflightCallsPerConnMax: 3 });
  const c = conn();
  const calls = Array.from({ length: 10 }, (_v, i) => c.unary('GetAttr', { ino: String(i + 1) }, 30_000));
  await until(() => w.served() === 3, '3 calls in flight');
  await sleep(200);
  t.equal(w.served(), 3, 'only 3 calls reached the handler');
  t.equal(server.stats().inflightCalls, 3);
  w.release(1);
  await until(() => w.served() === 4, 'a fourth call');
  // Each release lets as many waiting calls in as finished.
  await until(() => {
    w.release();
    return w.served() === 10;
  }, 'all 10 served');
  w.release();
  await Promise.all(calls);
  t.pass('all 10 answered');
});

t.test('past connectionsMax the idlest connection is closed, or the new one refused', async (t) => {
  const w = world();
  const { server, conn, bad } = await serve(t, w, { connectionsMax: 2 });
  const idle = conn();
  const busy = conn();
  // idle: one call done; busy: a call in flight.
  const first = idle.unary('GetAttr', { ino: '1' }, 30_000);
  await until(() => w.hung.length === 1, 'first call');
  w.release();
  await first;
  const held = busy.unary('GetAttr', { ino: '2' }, 30_000);
  await until(() => w.hung.length === 1, 'busy call');
  const third = conn();
  const p3 = third.unary('GetAttr', { ino: '3' }, 30_000);
  await until(() => w.hung.length === 2, 'third connection served');
  t.equal(server.stats().idleClosed, 1, 'the idle connection was closed for it');
  t.equal(server.stats().connections, 2);
  // Both connections busy now: a fourth is refused.
  const fourth = conn();
  const err = await fourth.unary('GetAttr', { ino: '4' }, 5000).catch((e: unknown) => e);
  t.ok(
    err instanceof FsError && err.code === 'UNAVAILABLE',
    'the fourth connection is refused (UNAVAILABLE)',
  );
  t.equal(server.stats().refused, 1);
  t.match(bad.join('\n'), /connection refused: 2 connections, every one busy \(connectionsMax 2\)/);
  w.release();
  await Promise.all([held, p3]);
  // The closed idle connection redials on its next call.
  const again = idle.unary('GetAttr', { ino: '5' }, 30_000);
  await until(() => w.hung.length === 1, 'redialled call');
  w.release();
  await again;
  t.pass('a closed idle connection redials');
});

t.test('an idle connection is closed after idleTimeoutMs; one with a call in flight is not', async (t) => {
  const w = world();
  const { server, conn, raw } = await serve(t, w, { idleTimeoutMs: 1000 });
  const idle = await raw();
  let closedAt = 0;
  const openedAt = Date.now();
  idle.on('close', () => (closedAt = Date.now()));
  const busy = conn();
  const held = busy.unary('GetAttr', { ino: '1' }, 30_000);
  await until(() => closedAt > 0, 'the idle connection to close', 15_000);
  t.ok(closedAt - openedAt >= 900, `closed after ${closedAt - openedAt} ms idle`);
  await sleep(1500);
  t.equal(server.stats().connections, 1, 'the connection with a call in flight stays');
  w.release();
  await held;
  t.equal(server.stats().idleClosed, 1);
});

t.test('limits are validated', async (t) => {
  t.same(validateConnLimits({ ...connLimitDefaults }, limits.messageMaxBytes), connLimitDefaults);
  t.throws(
    () => validateConnLimits({ ...connLimitDefaults, connectionsMax: 0 }, limits.messageMaxBytes),
    /connectionsMax 0 must be 1\.\./,
  );
  t.throws(
    () => validateConnLimits({ ...connLimitDefaults, inflightBytesPerConnMax: 1024 }, limits.messageMaxBytes),
    /inflightBytesPerConnMax/,
  );
  t.throws(
    () => validateConnLimits({ ...connLimitDefaults, idleTimeoutMs: 10 }, limits.messageMaxBytes),
    /idleTimeoutMs/,
  );
  t.throws(() => new FrameServer({} as BrickHandlers, undefined, undefined, { queuedBytesPerConnMax: 1 }));
});
