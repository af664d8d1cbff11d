#!/usr/bin/env node
/**
 * Many clients, one directory: one volume (3 bricks, replicas 3, real etcd)
 * and --mounts mounts of it; each mount runs one process that creates
 * --files empty files in the same directory (its own names), all at once.
 * The directory's entries and the new inodes are one PG, so this is what
 * a PG's concurrent ops cost - the case pipelined appends are for - where
 * fuse-bench's rows come from one mount (whose kernel runs the creates of
 * one directory one at a time). Each --inflight value (brickd
 * --replicate-inflight-max) gets a fresh cluster, --rounds times, the values
 * alternating. Prints creates per second; asserts nothing.
 *
 *   node bench/shared-dir-bench.mjs [--mounts 4] [--files 500] [--inflight 1,32] [--rounds 2]
 *
 * Needs root (FUSE mounts) and the packages built (npx tsc -b).
 */
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { optionReader } from './cli-option.mjs';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { startCluster } = await import(join(REPO, 'test/dist/src/cluster.js'));

const opt = optionReader();
const mountCount = Number(opt('--mounts', '4'));
const files = Number(opt('--files', '500'));
const inflights = opt('--inflight', '1,32').split(',').map(Number);
const rounds = Number(opt('--rounds', '2'));

const PY = `
import os, sys, time
d, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
sys.stdin.read(1)
t = time.perf_counter()
for i in range(n):
    os.close(os.open(os.path.join(d, '%s%07d' % (prefix, i)), flags, 0o644))
print(time.perf_counter() - t)
`;

/** Starts the creators, lets them go at once; resolves to the wall time of the slowest. */
async function createAll(dirs) {
  const procs = dirs.map((d, i) => {
    const p = spawn('python3', ['-c', PY, d, `m${i}-`, String(files)], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    let out = '';
    p.stdout.on('data', (b) => (out += b));
    const done = new Promise((res, rej) =>
      p.on('exit', (code) =>
        code === 0 ? res(Number(out.trim())) : rej(new Error(`creator ${i}: ${code}`)),
      ),
    );
    return { p, done };
  });
  await new Promise((r) => setTimeout(r, 300));
  const t0 = performance.now();
  for (const { p } of procs) p.stdin.end('x');
  await Promise.all(procs.map((x) => x.done));
  return (performance.now() - t0) / 1000;
}

async function once(inflight) {
  const teardowns = [];
  const t = { teardown: (fn) => teardowns.push(fn), passing: () => true };
  try {
    const c = await startCluster(t, {
      pgs: 16,
      replicas: 3,
      brickArgs: () => ['--replicate-inflight-max', String(inflight)],
    });
    const paths = [(...p) => c.path(...p)];
    for (let i = 1; i < mountCount; i++) {
      const m = await c.mountAnother();
      paths.push((...p) => m.path(...p));
    }
    mkdirSync(c.path('shared'));
    const seconds = await createAll(paths.map((p) => p('shared')));
    return (mountCount * files) / seconds;
  } finally {
    for (const fn of teardowns.reverse()) await fn();
  }
}

const results = new Map(inflights.map((v) => [v, []]));
for (let r = 0; r < rounds; r++) {
  const order = r % 2 === 0 ? inflights : [...inflights].reverse();
  for (const v of order) {
    const rate = await once(v);
    results.get(v).push(rate);
    console.log(`round ${r + 1}: --replicate-inflight-max ${v}: ${Math.round(rate)} creates/s`);
  }
}
console.log(`\n${mountCount} mounts x ${files} creates in one directory, replicas 3:`);
for (const [v, rates] of results)
  console.log(`  --replicate-inflight-max ${v}: ${rates.map((x) => Math.round(x)).join(', ')} creates/s`);
