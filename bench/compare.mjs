#!/usr/bin/env node
/**
 * Compares two result files of `npm run bench` (bench/results/latest.json,
 * bench/results/runs/*.json, bench/history/*.json): one markdown table per
 * target both ran, every row both measured, with the change as a speed
 * factor (new rate / old rate; old time / new time for rows where lower is
 * better), so above 1x the newer run is faster. The load averages of both
 * runs are printed with it: on a shared machine they explain much of the
 * difference.
 *
 *   node bench/compare.mjs OLD.json NEW.json [--targets LIST]
 */
import { readFileSync } from 'node:fs';

const USAGE = 'usage: node bench/compare.mjs OLD.json NEW.json [--targets LIST]';

/** Units where a smaller number is better, for result files written before rows said so. */
const LOWER_BETTER_UNITS = new Set(['s', 'µs', 'MiB']);

function die(msg) {
  process.stderr.write(`compare: ${msg}\n`);
  process.exit(2);
}

function load(file) {
  let j;
  try {
    j = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    die(`${file}: ${err.message}`);
  }
  if (!j.targets || !j.workloads)
    die(`${file} is not a workload run of bench/fuse-bench.mjs (no targets / workloads)`);
  return j;
}

function fmt(v) {
  if (v == null) return '—';
  if (v >= 100) return Math.round(v).toLocaleString('en-US');
  return v.toPrecision(3);
}

const valueOf = (j, target, id) => {
  const c = j.targets[target]?.results?.[id];
  return c && !c.error && typeof c.value === 'number' ? c.value : undefined;
};

function main() {
  const args = process.argv.slice(2);
  let only;
  const files = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--targets') {
      if (i + 1 >= args.length) die('--targets needs a value');
      only = args[++i].split(',').filter(Boolean);
    } else if (args[i] === '-h' || args[i] === '--help') {
      console.log(USAGE);
      return;
    } else files.push(args[i]);
  }
  if (files.length !== 2) die(USAGE);
  const [a, b] = files.map(load);
  const targets = Object.keys(b.targets).filter(
    (t) => a.targets[t]?.results && b.targets[t]?.results && (!only || only.includes(t)),
  );
  if (!targets.length) die('the two runs have no target in common');
  const load1 = (j) => [j.host?.loadavgStart?.[0], j.host?.loadavgEnd?.[0]].map((x) => fmt(x)).join(' -> ');
  console.log(
    `old: ${files[0]} (${a.startedAt}, commit ${a.host?.git}, load ${load1(a)})\n` +
      `new: ${files[1]} (${b.startedAt}, commit ${b.host?.git}, load ${load1(b)})\n`,
  );
  for (const t of targets) {
    const lines = [`### ${t}`, '', '| row | unit | old | new | speed new/old |', '|---|---|---:|---:|---:|'];
    for (const [id, w] of Object.entries(b.workloads)) {
      const x = valueOf(a, t, id);
      const y = valueOf(b, t, id);
      if (x == null && y == null) continue;
      const lower = w.lowerBetter ?? LOWER_BETTER_UNITS.has(w.unit);
      const speed = x && y ? (lower ? x / y : y / x) : undefined;
      lines.push(
        `| ${w.label} | ${w.unit} | ${fmt(x)} | ${fmt(y)} | ${speed ? `${speed.toFixed(2)}×` : '—'} |`,
      );
    }
    console.log(`${lines.join('\n')}\n`);
  }
}

main();
