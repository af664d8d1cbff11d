#!/usr/bin/env node
/**
 * The frame transport alone (proto's FrameServer and FrameConn over
 * loopback, no brick behind it): small calls per second with 64 in flight,
 * and 1 MiB block reads per second with 16 in flight; the median of three
 * runs. `node bench/frame-bench.mjs [REPO]` measures the build in REPO
 * (default: this one), so two checkouts can be compared (e.g. before and
 * after a change to frame-rpc.ts); run them alternately, the machine's load
 * moves the numbers more than small changes do.
 */
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';

const repo = resolve(process.argv[2] ?? fileURLToPath(new URL('..', import.meta.url)));
const { FrameServer, FrameConn } = await import(
  pathToFileURL(`${repo}/packages/proto/dist/src/index.js`).href
);
const BLOCK = 1 << 20;
const handlers = {
  GetAttr: (call, cb) => cb(null, { attr: { ino: String(call.request.ino), mode: 0o100644 } }),
  ReadBlock: (_call, cb) => cb(null, { data: Buffer.alloc(BLOCK, 1) }),
};
const server = new FrameServer(handlers);
const port = await server.listen('127.0.0.1', 0);
const conn = new FrameConn(`127.0.0.1:${port}`);

async function rate(method, request, calls, depth) {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: depth }, async () => {
      while (next < calls) {
        next++;
        await conn.unary(method, request, 30_000);
      }
    }),
  );
  return calls / ((performance.now() - t0) / 1000);
}

await rate('GetAttr', { ino: '5' }, 5000, 64); // warm-up
const small = [];
const reads = [];
for (let i = 0; i < 3; i++) {
  small.push(await rate('GetAttr', { ino: '5' }, 40_000, 64));
  reads.push(await rate('ReadBlock', { ino: '1', index: '0', offset: 0, length: BLOCK }, 800, 16));
}
const median = (a) => a.sort((x, y) => x - y)[1];
console.log(
  JSON.stringify({ repo, smallCallsPerS: Math.round(median(small)), readMiBPerS: Math.round(median(reads)) }),
);
conn.close();
await server.close();
