/**
 * Runs simulation seeds in a worker thread (replication-sim.test.ts spreads
 * its seeds over the machine's cores); posts one SimResult per seed.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { PlantedBug } from '../../src/replication/deps.js';
import { runSimulation } from './simulation.js';

export interface WorkerJob {
  seeds: number[];
  bug: PlantedBug | undefined;
}

const job = workerData as WorkerJob;
for (const seed of job.seeds) {
  const r = await runSimulation({ seed, ...(job.bug ? { bug: job.bug } : {}) });
  parentPort!.postMessage({ ...r, traceTail: r.ok ? [] : r.traceTail.slice(-40) });
}
