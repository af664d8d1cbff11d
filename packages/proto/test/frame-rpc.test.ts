import t from 'tap';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import {
  FrameConn,
  FrameServer,
  FsError,
  giveBack,
  takeBuffer,
  toServiceError,
  type BrickHandlers,
} from '../src/index.js';

/**
 * The frame transport against handlers shaped like the brick's: replies,
 * table errors, deadlines, dropped connections, large payloads, interleaved
 * calls, and bad bytes from a peer (the server closes that connection and
 * keeps serving the others).
 */

type Cb = (err: Partial<grpc.StatusObject> | null, reply?: unknown) => void;
type Call = { request: Record<string, unknown> };

let hang: Cb[] = [];
const handlers = {
  GetAttr: (call: Call, cb: Cb) => {
    const ino = String(call.request.ino);
    if (ino === '404') return cb(toServiceError(new FsError('NOT_FOUND', 'inode 404')));
    if (ino === '0') {
      hang.push(cb);
      return;
    }
    // Answer out of order: later calls may overtake earlier ones.
    setTimeout(() => cb(null, { attr: { ino, mode: 0o100644, size: ino } }), Number(ino) % 7);
  },
  WriteBlock: (call: Call, cb: Cb) => {
    const data = call.request.data as Buffer;
    cb(null, {});
    received.push(data);
  },
  ReadBlock: (call: Call, cb: Cb) => cb(null, { data: Buffer.alloc(Number(call.request.length), 0xab) }),
} as unknown as BrickHandlers;
const received: Buffer[] = [];

async function serve(t: { teardown(fn: () => unknown): void }) {
  const bad: string[] = [];
  const server = new FrameServer(handlers, (reason) => bad.push(reason));
  const port = await server.listen('127.0.0.1', 0);
  const conn = new FrameConn(`127.0.0.1:${port}`);
  t.teardown(async () => {
    for (const cb of hang) cb(null, { attr: null });
    hang = [];
    conn.close();
    await server.close();
  });
  return { server, port, conn, bad };
}

t.test('calls are answered and matched by id, errors keep their table code', async (t) => {
  const { conn } = await serve(t);
  const replies = await Promise.all(
    Array.from({ length: 200 }, (_v, i) =>
      conn.unary<{ attr: { ino: string; size: string } }>('GetAttr', { ino: String(i + 1) }, 5000),
    ),
  );
  t.ok(
    replies.every((r, i) => r.attr.ino === String(i + 1) && r.attr.size === String(i + 1)),
    '200 interleaved calls each got their own reply',
  );
  const err = await conn.unary('GetAttr', { ino: '404' }, 5000).catch((e: unknown) => e);
  t.ok(err instanceof FsError && err.code === 'NOT_FOUND', 'NOT_FOUND comes back as NOT_FOUND');
  t.match((err as Error).message, /inode 404/);
});

t.test('a call past its deadline fails with TIMED_OUT; the connection stays usable', async (t) => {
  const { conn } = await serve(t);
  const err = await conn.unary('GetAttr', { ino: '0' }, 100).catch((e: unknown) => e);
  t.ok(err instanceof FsError && err.code === 'TIMED_OUT', 'TIMED_OUT');
  const r = await conn.unary<{ attr: { ino: string } }>('GetAttr', { ino: '5' }, 5000);
  t.equal(r.attr.ino, '5');
});

t.test('1 MiB payloads cross intact in both directions', async (t) => {
  const { conn } = await serve(t);
  const data = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
  await conn.unary('WriteBlock', { ino: '1', index: '0', offset: 0, data }, 5000);
  t.ok(received.at(-1)?.equals(data), 'the server got every byte');
  const r = await conn.unary<{ data: Buffer }>(
    'ReadBlock',
    { ino: '1', index: '0', offset: 0, length: 1024 * 1024 },
    5000,
  );
  t.equal(r.data.length, 1024 * 1024);
  t.ok(r.data.every((b) => b === 0xab));
});

t.test(
  "pooled bytes sent in a request are not recycled (they may go to several peers); a reply's are",
  async (t) => {
    const { conn } = await serve(t);
    // A pooled buffer, as a brick holds block bytes it received: sent as a
    // request tail, it must still be ours afterwards (the next replica gets it too).
    const pooled = takeBuffer(1024 * 1024);
    pooled.fill(0x5a);
    await conn.unary('WriteBlock', { ino: '1', index: '0', offset: 0, data: pooled }, 5000);
    await conn.unary('WriteBlock', { ino: '1', index: '0', offset: 0, data: pooled }, 5000);
    const next = takeBuffer(1024 * 1024);
    t.not(next.buffer, pooled.buffer, "the pool did not hand out the sent request's buffer");
    t.ok(received.at(-1)?.equals(Buffer.alloc(1024 * 1024, 0x5a)), 'the second send carried the same bytes');
    giveBack(next);
  },
);

t.test('a dropped connection fails its calls with UNAVAILABLE and the next call reconnects', async (t) => {
  const { conn, server } = await serve(t);
  await conn.unary('GetAttr', { ino: '3' }, 5000);
  const pending = conn.unary('GetAttr', { ino: '0' }, 5000).catch((e: unknown) => e);
  await new Promise((r) => setTimeout(r, 20));
  // Drop every server-side socket (as a brick restart does).
  (server as unknown as { sockets: Set<net.Socket> }).sockets.forEach((s) => s.destroy());
  const err = await pending;
  t.ok(err instanceof FsError && err.code === 'UNAVAILABLE', 'in-flight call: UNAVAILABLE');
  const r = await conn.unary<{ attr: { ino: string } }>('GetAttr', { ino: '9' }, 5000);
  t.equal(r.attr.ino, '9', 'reconnected');
});

t.test('nothing listening: UNAVAILABLE, not a hang', async (t) => {
  const port = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const conn = new FrameConn(`127.0.0.1:${port}`);
  t.teardown(() => conn.close());
  const err = await conn.unary('GetAttr', { ino: '1' }, 2000).catch((e: unknown) => e);
  t.ok(err instanceof FsError && err.code === 'UNAVAILABLE', String(err));
});

t.test(
  'bad bytes from a peer: bad payloads are answered, a bad stream is closed, others go on',
  async (t) => {
    const { port, conn, bad } = await serve(t);
    const raw = net.connect(port, '127.0.0.1');
    await new Promise((r) => raw.on('connect', r));
    const got: Buffer[] = [];
    raw.on('data', (d) => got.push(d));
    const closed = new Promise((r) => raw.on('close', r));
    // A GetAttr frame whose payload is not protobuf.
    const methods = Object.keys((await import('../src/index.js')).brickProto().dunix.v1.Brick.service).sort();
    const mi = methods.indexOf('GetAttr');
    const payload = Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff]);
    const head = Buffer.alloc(12);
    head.writeUInt32LE(payload.length, 0);
    head.writeUInt32LE(7, 4);
    head.writeUInt16LE(mi, 8);
    raw.write(Buffer.concat([head, payload]));
    // An unknown method index.
    const head2 = Buffer.alloc(12);
    head2.writeUInt32LE(0, 0);
    head2.writeUInt32LE(8, 4);
    head2.writeUInt16LE(60000, 8);
    raw.write(head2);
    await new Promise((r) => setTimeout(r, 100));
    const replies = Buffer.concat(got);
    t.equal(replies[10], 2, 'the malformed request is answered with an error frame');
    t.match(replies.subarray(12, 12 + replies.readUInt32LE(0)).toString(), /INVALID_ARGUMENT/);
    const second = replies.subarray(12 + replies.readUInt32LE(0));
    t.match(second.subarray(12).toString(), /UNIMPLEMENTED/, 'an unknown method is UNIMPLEMENTED');
    // A frame claiming 4 GiB: the server gives up on this stream.
    const huge = Buffer.alloc(12);
    huge.writeUInt32LE(0xffffffff, 0);
    raw.write(huge);
    await closed;
    t.equal(bad.length, 1, 'the server reported the bad stream');
    const r = await conn.unary<{ attr: { ino: string } }>('GetAttr', { ino: '11' }, 5000);
    t.equal(r.attr.ino, '11', 'other connections are unaffected');
  },
);

t.test('property: frames split at any byte boundaries reassemble exactly', async (t) => {
  const fc = (await import('fast-check')).default;
  const { FrameReader, header } = await import('../src/frame-rpc.js');
  fc.assert(
    fc.property(
      fc.array(
        fc.record({ id: fc.nat(), method: fc.nat(65535), payload: fc.uint8Array({ maxLength: 300 }) }),
        {
          maxLength: 20,
        },
      ),
      fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 50 }),
      (frames, cuts) => {
        const stream = Buffer.concat(
          frames.flatMap((f) => [header(f.id, f.method, 1, 0, f.payload.length), Buffer.from(f.payload)]),
        );
        const got: { id: number; method: number; payload: Buffer }[] = [];
        const reader = new FrameReader((id, method, _kind, payload) =>
          got.push({ id, method, payload: Buffer.from(payload) }),
        );
        let at = 0;
        for (let i = 0; at < stream.length; i++) {
          const n = cuts[i % cuts.length]!;
          if (reader.push(stream.subarray(at, at + n)) !== undefined) return false;
          at += n;
        }
        return (
          got.length === frames.length &&
          got.every(
            (g, i) =>
              g.id === frames[i]!.id &&
              g.method === frames[i]!.method &&
              g.payload.equals(Buffer.from(frames[i]!.payload)),
          )
        );
      },
    ),
    { numRuns: 300 },
  );
  t.pass('300 random streams reassembled');
});
