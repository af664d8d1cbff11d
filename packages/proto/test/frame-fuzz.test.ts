import t from 'tap';
import net from 'node:net';
import fc from 'fast-check';
import * as grpc from '@grpc/grpc-js';
import { brickProto, FrameConn, FrameServer, type BrickHandlers } from '../src/index.js';
import { FrameReader, header } from '../src/frame-rpc.js';

/**
 * Fuzzing the frame transport: arbitrary and mutated byte streams into the
 * frame decoder (it reports a malformed stream, never throws), and into a
 * real frame server over loopback (it answers or closes that connection,
 * never crashes, and serves the next connection). FUZZ_RUNS=N for a longer
 * run by hand (default: a CI-sized run).
 */
const RUNS = Number(process.env.FUZZ_RUNS ?? 200);

const names = Object.keys(brickProto().dunix.v1.Brick.service).sort();
const getAttrIndex = names.indexOf('GetAttr');

/** A well-formed request frame of GetAttr (the seed that mutations start from). */
function validFrame(id: number, ino: string): Buffer {
  const def = (
    brickProto().dunix.v1.Brick.service as unknown as Record<string, grpc.MethodDefinition<unknown, unknown>>
  ).GetAttr!;
  const body = def.requestSerialize({ ino });
  return Buffer.concat([header(id, getAttrIndex, 0, 0, body.length), body]);
}

/** A byte stream: random bytes, or valid frames with bytes flipped, cut or spliced in. */
const streams = fc.oneof(
  fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a)),
  fc
    .tuple(
      fc.array(fc.tuple(fc.nat(1000), fc.stringMatching(/^[0-9]{1,20}$/)), { minLength: 1, maxLength: 4 }),
      fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 6 }),
      fc.nat(),
    )
    .map(([frames, flips, cut]) => {
      const b = Buffer.concat(frames.map(([id, ino]) => validFrame(id, ino)));
      for (const [at, v] of flips) b[at % b.length] = v;
      return b.subarray(0, (cut % b.length) + 1);
    }),
);

t.test('the frame decoder reports bad streams and never throws', async (t) => {
  fc.assert(
    fc.property(
      streams,
      fc.array(fc.integer({ min: 1, max: 97 }), { minLength: 1, maxLength: 8 }),
      (s, cuts) => {
        let frames = 0;
        let payloadBytes = 0;
        const reader = new FrameReader((_id, _m, _k, payload) => {
          frames++;
          payloadBytes += payload.length;
        });
        let at = 0;
        for (let i = 0; at < s.length; i++) {
          const n = cuts[i % cuts.length]!;
          const err = reader.push(s.subarray(at, at + n));
          at += n;
          if (err !== undefined) {
            if (typeof err !== 'string' || err.length === 0) return false;
            break;
          }
        }
        // Nothing is made up: frames carry at most the bytes that came in.
        return payloadBytes + frames * 12 <= s.length;
      },
    ),
    { numRuns: RUNS * 5 },
  );
  t.pass(`${RUNS * 5} streams decoded or refused`);
});

t.test('a frame server survives fuzzed connections and serves the next one', async (t) => {
  let served = 0;
  const handlers = new Proxy({} as Record<string, unknown>, {
    get: (_t, method: string) => (call: { request: { ino?: string } }, cb: grpc.sendUnaryData<unknown>) => {
      served++;
      if (method === 'GetAttr') cb(null, { attr: { ino: String(call.request?.ino ?? '0'), mode: 0o100644 } });
      else cb(null, {});
    },
  }) as unknown as BrickHandlers;
  const malformed: string[] = [];
  const server = new FrameServer(handlers, (reason) => malformed.push(reason));
  const port = await server.listen('127.0.0.1', 0);
  const good = new FrameConn(`127.0.0.1:${port}`);
  t.teardown(async () => {
    good.close();
    await server.close();
  });
  /** Sends the bytes on a connection of their own; resolves once the server answered or closed it, or 300 ms passed. */
  const send = (bytes: Buffer) =>
    new Promise<void>((resolve) => {
      const sock = net.connect(port, '127.0.0.1', () => sock.end(bytes));
      const done = () => {
        clearTimeout(timer);
        sock.destroy();
        resolve();
      };
      const timer = setTimeout(done, 300);
      sock.on('data', () => undefined);
      sock.on('close', done);
      sock.on('error', done);
    });
  await fc.assert(
    fc.asyncProperty(streams, async (s) => {
      await send(s);
      // The server still answers, on a connection that was never fuzzed.
      const r = await good.unary<{ attr: { ino: string } }>('GetAttr', { ino: '77' }, 5000);
      return r.attr.ino === '77';
    }),
    { numRuns: RUNS },
  );
  t.ok(
    served >= RUNS,
    `the server kept serving (${served} calls; ${malformed.length} streams refused as malformed)`,
  );
});
