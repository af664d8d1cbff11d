#!/usr/bin/env node
/**
 * Where the time of one call goes (issue 11 item 1): runs small-file calls
 * one at a time on a fresh dunixfs cluster per replica count (etcd + 3
 * bricks + 1 client on loopback, metrics on), reads the client's and every
 * brick's /metrics before and after each workload, and prints per call: the
 * syscall's time (measured by the caller), the FUSE requests it became and
 * their time in the client, the RPCs and their time at the client and at
 * the brick, the brick's stages (queues, engine, LevelDB, replication:
 * brickd/src/replication/deps.ts Stage), the log entries appended and the
 * CPU each process spent.
 *
 *   node bench/latency-breakdown.mjs [--replicas 1,3] [--calls 500] [--workloads create,rename,...]
 *                                    [--brick-args='--group-commit-ms 0'] [--json FILE]
 *
 * Times are means over the workload's calls; the machine's load (printed)
 * moves them, so compare columns of one run.
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
// Built by `npm run build` (tsc -b compiles test/ too).
import { startCluster as startHarness } from '../test/dist/src/cluster.js';

const BRICKS = 3;
const VOLUME = 'lat';

const { values } = parseArgs({
  options: {
    replicas: { type: 'string', default: '1,3' },
    calls: { type: 'string', default: '500' },
    pgs: { type: 'string', default: '64' },
    workloads: { type: 'string' },
    'brick-args': { type: 'string', default: '' },
    json: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]);
  process.exit(0);
}
const replicaCounts = values.replicas.split(',').map(Number);
const CALLS = Number(values.calls);
if (!replicaCounts.every((n) => n >= 1 && n <= BRICKS) || !(CALLS > 0)) {
  console.error('--replicas: counts 1-3, comma separated; --calls: a positive number');
  process.exit(2);
}

/** One workload per issue 11 row; each call timed alone by the caller (python, perf_counter). */
const PY = `
import json, os, sys, time, random
w, d, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.chdir(d)
names = ['f%06d' % i for i in range(n)]
lat = []
def timed(fn):
    t = time.perf_counter(); fn(); lat.append(time.perf_counter() - t)
if w == 'create':
    fl = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for p in names: timed(lambda: os.close(os.open(p, fl, 0o644)))
elif w == 'stat':
    for p in names: timed(lambda: os.stat(p))
elif w == 'rename':
    for p in names: timed(lambda: os.rename(p, 'r' + p[1:]))
elif w == 'truncate':
    for p in names:
        q = 'r' + p[1:]
        timed(lambda: os.truncate(q, 1000))
elif w == 'unlink':
    for p in names: timed(lambda: os.unlink('r' + p[1:]))
elif w == 'write_close':
    buf = b'x' * 100
    def wc(p):
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644); os.write(fd, buf); os.close(fd)
    for p in names: timed(lambda: wc('w' + p[1:]))
elif w == 'rand_write':
    fd = os.open('big', os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, 64 << 20)
    buf = os.urandom(4096); rnd = random.Random(1)
    for i in range(n): timed(lambda: os.pwrite(fd, buf, rnd.randrange(0, 64 << 8) << 12))
    os.close(fd)
elif w == 'fsync':
    fd = os.open('log', os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    buf = b'y' * 4096
    def ws(): os.write(fd, buf); os.fsync(fd)
    for i in range(n): timed(ws)
    os.close(fd)
elif w == 'idle':
    # No call at all: the CPU each process spends per 5 ms anyway (leases, sweeps, timers).
    for i in range(n): timed(lambda: time.sleep(0.005))
lat.sort()
print(json.dumps({'n': len(lat), 'mean': sum(lat) / len(lat), 'p50': lat[len(lat) // 2], 'p99': lat[int(len(lat) * 0.99)]}))
`;
const ALL_WORKLOADS = [
  'create',
  'stat',
  'rename',
  'truncate',
  'unlink',
  'write_close',
  'rand_write',
  'fsync',
  'idle',
];
/** A subset keeps the order above (stat, rename, truncate and unlink use the files create made). */
const WORKLOADS = values.workloads
  ? ALL_WORKLOADS.filter((w) => values.workloads.split(',').includes(w))
  : ALL_WORKLOADS;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function run(cmd, args, timeoutMs = 60_000) {
  return new Promise((res) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.on('close', (code) => {
      clearTimeout(timer);
      res({ code, out, err });
    });
  });
}

async function waitUntil(what, ms, check) {
  const end = Date.now() + ms;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not yet
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

function readJson(file) {
  return JSON.parse(readFileSync(file, 'utf8'));
}

/** Prometheus text -> Map("name{labels}" -> value), histogram sums and counts and counters alike. */
async function scrape(address) {
  const r = await globalThis.fetch(`http://${address}/metrics`);
  const out = new Map();
  for (const line of (await r.text()).split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    out.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return out;
}

function delta(after, before) {
  const d = new Map();
  for (const [k, v] of after) {
    const x = v - (before.get(k) ?? 0);
    if (x !== 0) d.set(k, x);
  }
  return d;
}

/** label value of `key` for `label`, or undefined. */
function label(key, name) {
  const m = key.match(new RegExp(`${name}="([^"]*)"`));
  return m?.[1];
}

/** {label value: {count, sumS}} over the histogram `metric`, grouped by `by`. */
function histogram(d, metric, by) {
  const out = {};
  for (const [k, v] of d) {
    const isSum = k.startsWith(`${metric}_sum`);
    const isCount = k.startsWith(`${metric}_count`);
    if (!isSum && !isCount) continue;
    const g = by.map((b) => label(k, b)).join(' ');
    out[g] ??= { count: 0, sumS: 0 };
    if (isSum) out[g].sumS += v;
    else out[g].count += v;
  }
  return out;
}

function counter(d, metric, by) {
  const out = {};
  for (const [k, v] of d) {
    if (!k.startsWith(`${metric}{`) && k !== metric) continue;
    const g = label(k, by) ?? '';
    out[g] = (out[g] ?? 0) + v;
  }
  return out;
}

/**
 * The test suite's cluster launcher (test/src/cluster.ts: etcd without port
 * races, bricks on ports they report, everything stopped by PID), with
 * metrics on every brick and on the client.
 */
async function startCluster(replicas) {
  const teardowns = [];
  const t = { teardown: (fn) => teardowns.push(fn), passing: () => true, comment: () => {} };
  const c = await startHarness(t, {
    replicas,
    pgs: Number(values.pgs),
    volume: VOLUME,
    mount: false,
    brickArgs: () => ['--metrics-listen', '127.0.0.1:0', ...values['brick-args'].split(' ').filter(Boolean)],
  });
  const cluster = { c, teardowns, mnt: c.mountpoint };
  try {
    await waitUntil('every PG in sync', 90_000, async () => {
      const s = JSON.parse(c.ctl(['--json', 'volume', 'status', VOLUME]).stdout);
      return (
        s.pgsDegraded.length === 0 &&
        s.isrHistogram.find((h) => h.live === replicas)?.pgs === s.config.pgCount
      );
    });
    const clientPorts = join(c.base, 'client-metrics.json');
    await c.mount(`metrics_listen=127.0.0.1:0,metrics_port_file=${clientPorts}`);
    cluster.clientMetrics = readJson(clientPorts).metricsAddress;
    cluster.brickMetrics = c.bricks.map((b) => readJson(join(b.dir, 'ports.json')).metricsAddress);
    return cluster;
  } catch (err) {
    await stopCluster(cluster);
    throw err;
  }
}

async function stopCluster(cluster) {
  if (!cluster) return;
  await cluster.c.stop();
  for (const fn of cluster.teardowns.reverse()) await fn();
}

async function scrapeAll(c) {
  const client = await scrape(c.clientMetrics);
  const bricks = await Promise.all(c.brickMetrics.map((a) => scrape(a)));
  return { client, bricks };
}

async function measure(c, w) {
  const dir = join(c.mnt, 'd');
  mkdirSync(dir, { recursive: true });
  if (w === 'stat') {
    // Cold: the kernel's dentries and attributes dropped (the client's own caches stay).
    writeFileSync('/proc/sys/vm/drop_caches', '2');
  }
  const before = await scrapeAll(c);
  const r = await run('python3', ['-c', PY, w, dir, String(CALLS)], 600_000);
  if (r.code !== 0) throw new Error(`${w}: ${r.err}`);
  const py = JSON.parse(r.out.trim().split('\n').pop());
  const after = await scrapeAll(c);
  const dc = delta(after.client, before.client);
  const db = after.bricks.map((b, i) => delta(b, before.bricks[i]));
  const merged = new Map();
  for (const d of db) for (const [k, v] of d) merged.set(k, (merged.get(k) ?? 0) + v);
  const per = (x) => x / py.n;
  const ms = (h) => (h.count ? (h.sumS / h.count) * 1000 : 0);
  const out = {
    workload: w,
    calls: py.n,
    syscallMs: py.mean * 1000,
    p50Ms: py.p50 * 1000,
    p99Ms: py.p99 * 1000,
    fuse: {},
    clientRpc: {},
    brickRpc: {},
    stages: {},
    entries: {},
    cpuMsPerCall: {
      client: per((dc.get('process_cpu_seconds_total') ?? 0) * 1000),
      bricks: db.map((d) => per((d.get('process_cpu_seconds_total') ?? 0) * 1000)),
    },
  };
  for (const [k, h] of Object.entries(histogram(dc, 'dunix_client_fuse_request_seconds', ['op'])))
    out.fuse[k] = { perCall: per(h.count), ms: ms(h) };
  for (const [k, h] of Object.entries(histogram(dc, 'dunix_client_rpc_seconds', ['method'])))
    out.clientRpc[k] = { perCall: per(h.count), ms: ms(h) };
  for (const [k, h] of Object.entries(histogram(merged, 'dunix_brick_rpc_seconds', ['method'])))
    out.brickRpc[k] = { perCall: per(h.count), ms: ms(h) };
  for (const [k, h] of Object.entries(histogram(merged, 'dunix_brick_stage_seconds', ['stage'])))
    out.stages[k] = { perCall: per(h.count), ms: ms(h) };
  for (const [k, v] of Object.entries(counter(merged, 'dunix_brick_log_entries_total', 'kind')))
    out.entries[k] = per(v);
  return out;
}

const f = (x, d = 2) => x.toFixed(d);
const row = (o) =>
  Object.entries(o)
    .filter(([, v]) => (typeof v === 'number' ? v : v.perCall) >= 0.005)
    .map(([k, v]) => (typeof v === 'number' ? `${k} ${f(v)}` : `${k} ${f(v.perCall)}x${f(v.ms, 3)}`))
    .join(', ');

/**
 * Brick-to-brick calls and long polls: not a step of the caller's request
 * (Replicate and SyncCopy are inside the primary's time, TruncateBlocks
 * runs after an unlink is answered, PollInvalidations waits for news).
 */
const NOT_ON_PATH = new Set(['Replicate', 'SyncCopy', 'TruncateBlocks', 'PollInvalidations']);

const total = (o, skip = new Set()) =>
  Object.entries(o)
    .filter(([k]) => !skip.has(k))
    .reduce((a, [, v]) => a + v.perCall * v.ms, 0);

/**
 * One call's time split into layers (ms, means): kernel and caller (the
 * syscall minus the FUSE requests' time in the client), the client (FUSE
 * requests minus their RPCs), network and wakeups (client RPC time minus
 * the brick's), the brick's queues, engine, own LevelDB batch, what the
 * replicas added after it, Sync (disk sync on every copy), and the rest of
 * the brick's handling (reads, coherence, replies).
 */
function layers(w) {
  const fuse = total(w.fuse);
  const rpc = total(w.clientRpc);
  const brick = total(w.brickRpc, NOT_ON_PATH);
  const st = (k) => (w.stages[k] ? w.stages[k].perCall * w.stages[k].ms : 0);
  const sync = w.brickRpc.Sync ? w.brickRpc.Sync.perCall * w.brickRpc.Sync.ms : 0;
  const queues = st('pg_queue') + st('append_queue');
  const parts = {
    kernel: w.syscallMs - fuse,
    client: fuse - rpc,
    network: rpc - brick,
    queues,
    engine: st('engine'),
    leveldb: st('log_write'),
    replication: st('replicas_after_local'),
    sync,
  };
  parts.brickOther = brick - queues - parts.engine - parts.leveldb - parts.replication - sync;
  return parts;
}

function markdownTable(results) {
  const cols = [
    'kernel',
    'client',
    'network',
    'queues',
    'engine',
    'leveldb',
    'replication',
    'sync',
    'brickOther',
  ];
  const head =
    '| call | R | syscall | FUSE req | RPCs | entries | kernel+caller | client | network+wakeups | brick queues | engine | LevelDB | replication | Sync | brick other |';
  const lines = [head, `|${' --- |'.repeat(15)}`];
  for (const w of results[0].workloads.map((x) => x.workload))
    for (const r of results) {
      const x = r.workloads.find((y) => y.workload === w);
      if (!x) continue;
      const l = layers(x);
      const n = (o, skip) =>
        f(
          Object.entries(o)
            .filter(([k]) => !skip?.has(k))
            .reduce((a, [, v]) => a + v.perCall, 0),
          1,
        );
      const entries = f(
        Object.values(x.entries).reduce((a, v) => a + v, 0),
        1,
      );
      lines.push(
        `| ${w} | ${r.replicas} | ${f(x.syscallMs)} | ${n(x.fuse)} | ${n(x.clientRpc)} | ${entries} | ` +
          cols.map((c) => (l[c] < -0.005 ? '*' : f(l[c]))).join(' | ') +
          ' |',
      );
    }
  lines.push(
    '',
    '*: below zero, i.e. work that runs after the call is answered (write-behind WriteBlocks, the trim after an ' +
      'unlink) outweighs the layer; the stages still count it.',
  );
  return lines.join('\n');
}

function print(results) {
  console.log(
    `load average ${loadavg()
      .map((x) => x.toFixed(1))
      .join(' ')}; means per call (count per call x ms each)`,
  );
  for (const r of results) {
    console.log(`\n## replicas ${r.replicas}`);
    for (const w of r.workloads) {
      console.log(
        `- ${w.workload}: syscall ${f(w.syscallMs, 3)} ms (p50 ${f(w.p50Ms, 3)}, p99 ${f(w.p99Ms, 3)})\n` +
          `  fuse: ${row(w.fuse)}\n  client rpc: ${row(w.clientRpc)}\n  brick rpc: ${row(w.brickRpc)}\n` +
          `  stages: ${row(w.stages)}\n  entries: ${row(w.entries)}\n` +
          `  cpu ms/call: client ${f(w.cpuMsPerCall.client, 3)}, bricks ${w.cpuMsPerCall.bricks.map((x) => f(x, 3)).join(' / ')}`,
      );
    }
  }
  console.log(`\nms per call:\n\n${markdownTable(results)}`);
}

const results = [];
let current;
const cleanup = async () => {
  await stopCluster(current);
  current = undefined;
};
process.on('SIGINT', () => void cleanup().then(() => process.exit(130)));
try {
  for (const n of replicaCounts) {
    current = await startCluster(n);
    const workloads = [];
    for (const w of WORKLOADS) workloads.push(await measure(current, w));
    results.push({ replicas: n, workloads });
    await cleanup();
  }
  print(results);
  if (values.json) writeFileSync(values.json, JSON.stringify({ load: loadavg(), results }, null, 2));
} finally {
  await cleanup();
}
