#!/usr/bin/env node
/**
 * Coherent caches, measured: one volume (3 bricks, replicas 3, real etcd) and
 * up to 8 mounts with attribute/entry TTLs of 60 s. For 1, 2 and 8 sessions
 * caching a file (each stats it), mount A chmods it --changes times; the
 * bricks' counters (BrickStatus invalidations_queued) give the invalidations
 * sent per change, and the timings give A's chmod latency and the time from
 * A's chmod returning to mount B's stat showing the new mode. Prints a table
 * and writes bench/results/coherence.json. Reports only; asserts nothing
 * (but a stale stat on B is counted and printed).
 *
 *   node bench/coherence-bench.mjs [--changes 50] [--sessions 1,2,8]
 *
 * Needs root (FUSE mounts) and the packages built (npx tsc -b).
 */
import { chmodSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { optionReader } from './cli-option.mjs';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { startCluster } = await import(join(REPO, 'test/dist/src/cluster.js'));
const { callUnary } = await import(join(REPO, 'packages/proto/dist/src/index.js'));

const opt = optionReader();
const changes = Number(opt('--changes', '50'));
const sessionCounts = opt('--sessions', '1,2,8').split(',').map(Number);
const TTL = 'attr_ttl_ms=60000,entry_ttl_ms=60000';

const teardowns = [];
const t = { teardown: (fn) => teardowns.push(fn), passing: () => true };
const c = await startCluster(t, { pgs: 16, replicas: 3, mountOptions: TTL });
const results = [];
try {
  const mounts = [{ path: (...p) => c.path(...p) }];
  for (let i = 1; i < Math.max(...sessionCounts); i++) mounts.push(await c.mountAnother(TTL));
  mkdirSync(c.path('bench'));
  const queued = async () => {
    let n = 0;
    for (const b of c.bricks) {
      if (!b.address) continue;
      const s = await callUnary(b.client(), 'BrickStatus', {}, 10_000);
      n += Number(s.invalidationsQueued);
    }
    return n;
  };
  const ms = (fn) => {
    const s = process.hrtime.bigint();
    fn();
    return Number(process.hrtime.bigint() - s) / 1e6;
  };
  const q = (l, p) => [...l].sort((a, b) => a - b)[Math.min(l.length - 1, Math.floor(l.length * p))];
  for (const n of sessionCounts) {
    const file = `f${n}`;
    writeFileSync(c.path('bench', file), '');
    const chmodMs = [];
    const visibleMs = [];
    let stale = 0;
    const before = await queued();
    for (let i = 0; i < changes; i++) {
      // Every session caches the file (a stat registers it); then A changes it.
      for (const m of mounts.slice(0, n)) statSync(m.path('bench', file));
      const mode = i % 2 ? 0o600 : 0o644;
      chmodMs.push(ms(() => chmodSync(c.path('bench', file), mode)));
      if (n > 1) {
        let seen = 0;
        visibleMs.push(ms(() => (seen = statSync(mounts[1].path('bench', file)).mode & 0o777)));
        if (seen !== mode) stale++;
      }
    }
    const perChange = ((await queued()) - before) / changes;
    const row = {
      sessions: n,
      invalidationsPerChange: perChange,
      chmodMedianMs: q(chmodMs, 0.5),
      chmodP90Ms: q(chmodMs, 0.9),
      visibleOnBMedianMs: n > 1 ? q(visibleMs, 0.5) : null,
      staleOnB: n > 1 ? stale : null,
    };
    results.push(row);
    console.log(JSON.stringify(row));
  }
} finally {
  for (const fn of teardowns.reverse()) await fn();
  await c.stop();
}
const fmt = (v) => (v === null ? '-' : typeof v === 'number' ? String(Math.round(v * 100) / 100) : v);
console.log(
  '\n| sessions caching | invalidations per change | chmod on A, median / p90 (ms) | stat on B after A returns, median (ms) | stale on B |',
);
console.log('| ---: | ---: | ---: | ---: | ---: |');
for (const r of results) {
  console.log(
    `| ${r.sessions} | ${fmt(r.invalidationsPerChange)} | ${fmt(r.chmodMedianMs)} / ${fmt(r.chmodP90Ms)} | ${fmt(r.visibleOnBMedianMs)} | ${fmt(r.staleOnB)} |`,
  );
}
mkdirSync(join(REPO, 'bench/results'), { recursive: true });
writeFileSync(join(REPO, 'bench/results/coherence.json'), JSON.stringify({ changes, results }, null, 2));
