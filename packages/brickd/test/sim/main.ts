/**
 * npm run sim -- [--seed N | --seeds A..B] [--bug ack-before-replicas|accept-lower-epoch]
 *                [--run-ms MS] [--verbose]
 *
 * Runs the replication simulation for one seed or a range; a seed replays
 * exactly (the same trace, the same trace hash, printed per seed). Exits 1
 * if any seed failed, printing its failures, the end of its trace and the
 * command that replays it.
 */
import type { PlantedBug } from '../../src/replication/deps.js';
import { runSimulation } from './simulation.js';

const BUGS: readonly PlantedBug[] = ['ack-before-replicas', 'accept-lower-epoch'];

function usage(msg: string): never {
  console.error(`${msg}
usage: npm run sim -- [--seed N | --seeds A..B] [--bug ${BUGS.join('|')}] [--run-ms MS] [--verbose]`);
  process.exit(2);
}

function parse(argv: string[]) {
  let from = 1;
  let to = 1;
  let bug: PlantedBug | undefined;
  let verbose = false;
  let runMs: number | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = () => argv[++i] ?? usage(`${a} needs a value`);
    if (a === '--seed') {
      from = to = Number(next());
    } else if (a === '--seeds') {
      const m = /^(\d+)\.\.(\d+)$/.exec(next());
      if (!m) usage('--seeds wants A..B');
      from = Number(m[1]);
      to = Number(m[2]);
    } else if (a === '--bug') {
      const b = next() as PlantedBug;
      if (!BUGS.includes(b)) usage(`unknown bug ${b}`);
      bug = b;
    } else if (a === '--run-ms') {
      runMs = Number(next());
    } else if (a === '--verbose' || a === '-v') {
      verbose = true;
    } else usage(`unknown argument ${a}`);
  }
  if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to) || from < 0 || to < from)
    usage('bad seed range');
  if (runMs !== undefined && (!Number.isInteger(runMs) || runMs < 500)) usage('--run-ms must be >= 500');
  return { from, to, bug, verbose, runMs };
}

const args = parse(process.argv.slice(2));
let failed = 0;
const started = performance.now();
for (let seed = args.from; seed <= args.to; seed++) {
  const r = await runSimulation({
    seed,
    ...(args.bug ? { bug: args.bug } : {}),
    verbose: args.verbose,
    ...(args.runMs ? { runMs: args.runMs } : {}),
  });
  const s = r.stats;
  console.log(
    `seed ${seed}: ${r.ok ? 'ok' : 'FAILED'} trace ${r.traceHash} (${r.traceLines} lines) ` +
      `ops ${s.ops} acked ${s.acked} failovers ${s.failovers ?? 0} heal ${s.healMs ?? '-'} ms ` +
      `sim ${s.simMs} ms real ${r.realMs} ms | ${r.config}`,
  );
  if (!r.ok) {
    failed++;
    if (!args.verbose) for (const l of r.traceTail.slice(-60)) console.log(`    ${l}`);
    for (const f of r.failures.slice(0, 20)) console.log(`  ! ${f}`);
    if (r.failures.length > 20) console.log(`  ! ... ${r.failures.length - 20} more`);
    console.log(
      `  replay: npm run sim -- --seed ${seed}${args.bug ? ` --bug ${args.bug}` : ''}${args.runMs ? ` --run-ms ${args.runMs}` : ''} --verbose`,
    );
  }
}
const n = args.to - args.from + 1;
console.log(
  `${n - failed}/${n} seeds passed${args.bug ? ` with bug ${args.bug} planted` : ''} ` +
    `(${Math.round(performance.now() - started)} ms)`,
);
process.exit(failed > 0 ? 1 : 0);
