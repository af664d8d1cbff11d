#!/usr/bin/env node
/**
 * Pipelined appends where a round trip is long: three in-process bricks
 * (brickd's test trio: real Brick and Replication over in-memory stores),
 * every Replicate held --rtt-ms on a timer (standing for the network), and
 * --writers concurrent writers of 4 KiB blocks into one PG. Prints appends
 * per second for each --inflight value (replicateInflightMax), alternating
 * --rounds times. This host's kernel has no netem to delay a real link.
 *
 *   node bench/pipeline-rtt.mjs [--rtt-ms 1] [--writers 8] [--appends 400] [--inflight 1,32] [--rounds 2]
 *
 * Needs the packages built (npx tsc -b).
 */
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { optionReader } from './cli-option.mjs';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { trio, pattern, PG_COUNT } = await import(join(REPO, 'packages/brickd/dist/test/replication/trio.js'));
const { blockPg, initHashing } = await import(join(REPO, 'packages/proto/dist/src/index.js'));

const opt = optionReader();
const rttMs = Number(opt('--rtt-ms', '1'));
const writers = Number(opt('--writers', '8'));
const appends = Number(opt('--appends', '400'));
const inflights = opt('--inflight', '1,32').split(',').map(Number);
const rounds = Number(opt('--rounds', '2'));

await initHashing();
const INO = (1n << 48n) | 5n;
const pg = blockPg(INO, 0n, PG_COUNT);
const indexes = [];
for (let i = 0n; indexes.length < 64; i++) if (blockPg(INO, i, PG_COUNT) === pg) indexes.push(i);
const data = pattern(1, 4096);

async function once(inflight) {
  const tr = await trio(
    { replicateInflightMax: inflight },
    { beforeReplicate: () => new Promise((r) => setTimeout(r, rttMs)) },
  );
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: writers }, async () => {
      while (next < appends) {
        const i = next++;
        await tr.bricks.A.writeBlock(pg, INO, indexes[i % indexes.length], 0, data);
      }
    }),
  );
  return appends / ((performance.now() - t0) / 1000);
}

for (let r = 0; r < rounds; r++)
  for (const v of r % 2 === 0 ? inflights : [...inflights].reverse())
    console.log(
      `round ${r + 1}: rtt ${rttMs} ms, ${writers} writers, replicateInflightMax ${v}: ` +
        `${Math.round(await once(v))} appends/s`,
    );
