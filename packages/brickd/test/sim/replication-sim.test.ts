/**
 * The seeded simulation of replication and the controller (simulation.ts):
 * a few hundred seeds, each a run of real bricks, coordinator sessions,
 * controllers and clients over a simulated network, etcd, disks and clock,
 * with faults chosen by the seed; every checker must pass. A failing seed
 * replays exactly with the command printed. Also: the same seed gives the
 * same trace; and a planted bug is caught.
 *
 * DUNIX_SIM_SEEDS (default 200: the suite's time; `npm run sim -- --seeds 1..N` runs more) and DUNIX_SIM_FIRST (default 1) pick the
 * seeds; they run on up to two worker threads.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import t from 'tap';
import type { PlantedBug } from '../../src/replication/deps.js';
import type { WorkerJob } from './sim-worker.js';
import { runSimulation, type SimResult } from './simulation.js';

const SEEDS = Number(process.env.DUNIX_SIM_SEEDS ?? 200);
const FIRST = Number(process.env.DUNIX_SIM_FIRST ?? 1);
const WORKERS = Math.max(1, Math.min(2, availableParallelism()));
const TEETH_SEEDS = 30;

const range = (from: number, n: number) => Array.from({ length: n }, (_v, i) => from + i);

/** Runs `seeds` on worker threads (round robin); results in seed order. */
async function runSeeds(seeds: number[], bug?: PlantedBug): Promise<SimResult[]> {
  const out: SimResult[] = [];
  await Promise.all(
    range(0, WORKERS).map(
      (w) =>
        new Promise<void>((resolve, reject) => {
          const job: WorkerJob = { seeds: seeds.filter((_s, i) => i % WORKERS === w), bug };
          if (job.seeds.length === 0) return resolve();
          const worker = new Worker(new URL('./sim-worker.js', import.meta.url), { workerData: job });
          worker.on('message', (r: SimResult) => out.push(r));
          worker.on('error', reject);
          worker.on('exit', (code) =>
            code === 0 ? resolve() : reject(new Error(`sim worker exited with ${code}`)),
          );
        }),
    ),
  );
  return out.sort((x, y) => x.seed - y.seed);
}

function replay(r: SimResult): string {
  return `npm run sim -- --seed ${r.seed}${r.bug ? ` --bug ${r.bug}` : ''} --verbose`;
}

const sum = (rs: SimResult[], f: (r: SimResult) => number) => rs.reduce((n, r) => n + f(r), 0);
const event = (r: SimResult, msg: string) =>
  Object.entries(r.events)
    .filter(([k]) => k.endsWith(msg))
    .reduce((n, [, v]) => n + v, 0);

let results: SimResult[] = [];

t.test(`${SEEDS} seeds from ${FIRST}: every checker passes`, async (t) => {
  const started = performance.now();
  results = await runSeeds(range(FIRST, SEEDS));
  t.equal(results.length, SEEDS, 'every seed ran');
  for (const r of results) {
    if (r.ok) continue;
    t.fail(`seed ${r.seed} failed: ${r.failures[0]}`, {
      failures: r.failures.slice(0, 10),
      config: r.config,
      replay: replay(r),
      traceTail: r.traceTail,
    });
  }
  const passed = results.filter((r) => r.ok).length;
  t.comment(
    `${passed}/${results.length} seeds passed in ${Math.round(performance.now() - started)} ms on ${WORKERS} worker(s); ` +
      `${sum(results, (r) => r.stats.ops ?? 0)} ops, ${sum(results, (r) => r.stats.acked ?? 0)} acknowledged, ` +
      `${sum(results, (r) => r.stats.failovers ?? 0)} failovers, ` +
      `${sum(results, (r) => event(r, 'backfilling a replica'))} backfills, ` +
      `${sum(results, (r) => event(r, 'replica rejoined the in-sync set'))} rejoins`,
  );
  // The simulation must keep exercising what it is for; a change that quietly stops faults is caught here.
  if (results.length < 100) return;
  const share = (f: (r: SimResult) => boolean) => results.filter(f).length / results.length;
  t.ok(share((r) => (r.stats.failovers ?? 0) > 0) > 0.3, 'most seeds fail a primary over');
  t.ok(share((r) => event(r, 'backfilling a replica') > 0) > 0.05, 'some seeds backfill a replica');
  t.ok(share((r) => event(r, 'replica rejoined the in-sync set') > 0) > 0.5, 'most seeds catch a replica up');
  t.ok(share((r) => (r.stats.maybe ?? 0) > 0) > 0.3, 'many seeds have ops of unknown outcome');
  t.ok(
    share((r) => (r.stats.scrubPlanted ?? 0) > 0 && event(r, 'scrub: repaired a replica') > 0) > 0.3,
    'the final scrub repairs the damage planted in many seeds',
  );
  for (const kind of ['crash', 'pause', 'suspend', 'etcd-cut', 'etcd-flaky', 'isolate', 'loss'])
    t.ok(share((r) => (r.stats[`fault.${kind}`] ?? 0) > 0) > 0.05, `fault ${kind} is injected`);
});

t.test('a seed replays exactly: the same trace and final state, on any thread', async (t) => {
  for (const r of results.slice(0, 3)) {
    const again = await runSimulation({ seed: r.seed });
    t.equal(again.traceHash, r.traceHash, `seed ${r.seed}: same trace hash in this thread as in a worker`);
    t.equal(again.traceLines, r.traceLines, `seed ${r.seed}: same number of trace lines`);
  }
});

t.test('planted bug: a primary acknowledging before its replicas have the op is caught', async (t) => {
  const caught = (await runSeeds(range(FIRST, TEETH_SEEDS), 'ack-before-replicas')).filter((r) => !r.ok);
  t.comment(
    `ack-before-replicas: ${caught.length}/${TEETH_SEEDS} seeds fail (${caught.map((r) => r.seed).join(' ')})`,
  );
  t.ok(caught.length > 0, 'some seed catches it');
});
