#!/usr/bin/env node
/**
 * FUSE overhead benchmark: runs the same workloads against a plain local
 * directory, the dunixfs passthrough mount and (when installed) bindfs, and
 * prints one markdown table plus bench/results/latest.json.
 *
 *   npm run bench                                   # 1 GiB file, 10,000 files
 *   npm run bench -- --size-mib 128 --files 2000    # quick run
 *   npm run bench -- --targets local,passthrough
 *
 * Needs root (mounting, /proc/sys/vm/drop_caches), fio and python3; the
 * passthrough must be built first (npx tsc -b). It only reports: nothing here
 * asserts a timing.
 *
 * Adding a target: push an object onto TARGETS with name, label, available()
 * (null or the reason to skip), async setup() -> { dir, pid? } and a
 * synchronous teardown() (it also runs from signal handlers). fuseTarget()
 * builds one for any FUSE daemon that stays in the foreground.
 */
import { spawn, spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const PASSTHROUGH_BIN = join(REPO, 'packages/mount/dist/src/bin/dunixfs-passthrough.cjs');
const RESULTS_FILE = join(REPO, 'bench/results/latest.json');
const MiB = 1024 * 1024;

// ---------------------------------------------------------------- options

const USAGE = `usage: node bench/fuse-bench.mjs [options]
  --size-mib N        size of the sequential / random-read file (default 1024)
  --files N           files for the create / stat / unlink rates (default 10000)
  --targets LIST      comma separated, in run order (default local,passthrough,bindfs)
  --runtime S         seconds per random-read run (default 5)
  --workdir DIR       parent of the scratch directory (default /var/tmp)
  --out FILE          JSON results (default bench/results/latest.json)`;

function parseArgs(argv) {
  const o = {
    sizeMiB: 1024,
    files: 10000,
    targets: ['local', 'passthrough', 'bindfs'],
    runtimeS: 5,
    workdir: '/var/tmp',
    out: RESULTS_FILE,
  };
  const int = (flag, v, min) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) die(`${flag} expects a whole number >= ${min}, got ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let v;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) {
      v = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    const next = () => {
      if (v !== undefined) return v;
      if (i + 1 >= argv.length) die(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--size-mib':
        o.sizeMiB = int(a, next(), 1);
        break;
      case '--files':
        o.files = int(a, next(), 1);
        break;
      case '--targets':
        o.targets = next()
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean);
        break;
      case '--runtime':
        o.runtimeS = int(a, next(), 1);
        break;
      case '--workdir':
        o.workdir = resolve(next());
        break;
      case '--out':
        o.out = resolve(next());
        break;
      case '-h':
      case '--help':
        console.log(USAGE);
        process.exit(0);
        break;
      default:
        die(`unknown option ${a}\n${USAGE}`);
    }
  }
  return o;
}

function die(msg) {
  console.error(`fuse-bench: ${msg}`);
  process.exit(2);
}

const log = (msg) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);

// ---------------------------------------------------------------- process helpers

/** Children currently running a workload; killed by PID on Ctrl-C. */
const running = new Set();

/** Runs a command to completion; resolves { code, signal, stdout, stderr, ms }. */
function run(cmd, args, { timeoutMs = 600_000, cwd } = {}) {
  return new Promise((resolvePromise, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      stderr += `\n[killed after ${timeoutMs} ms]`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      running.delete(child);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      running.delete(child);
      resolvePromise({ code, signal, stdout, stderr, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
    });
  });
}

async function runOk(cmd, args, opts) {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    const tail = (r.stderr || r.stdout).trim().split('\n').slice(-5).join('\n');
    throw new Error(`${cmd} exited ${r.code ?? r.signal}: ${tail}`);
  }
  return r;
}

const sleepBuf = new Int32Array(new SharedArrayBuffer(4));
/** Synchronous sleep, so teardown can run from signal and exit handlers. */
function sleepSync(ms) {
  Atomics.wait(sleepBuf, 0, 0, ms);
}

/** True if pid is gone or a zombie (a zombie has released its mount and descriptors). */
function processGone(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return true;
  }
}

function waitGoneSync(pid, ms) {
  const end = Date.now() + ms;
  while (!processGone(pid)) {
    if (Date.now() > end) return false;
    sleepSync(50);
  }
  return true;
}

function signalPid(pid, sig) {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

function commandVersion(cmd, args = ['--version']) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 5000 });
  if (r.error || r.status !== 0) return null;
  return (r.stdout || r.stderr).trim().split('\n')[0];
}

// ---------------------------------------------------------------- mounts

function mountsUnder(prefix) {
  const out = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'latin1').split('\n')) {
    const [pre, post] = line.split(' - ');
    if (!pre || !post) continue;
    const mp = pre.split(' ')[4].replace(/\\([0-7]{3})/g, (_m, o) => String.fromCharCode(parseInt(o, 8)));
    if (mp === prefix || mp.startsWith(`${prefix}/`))
      out.push({ mountpoint: mp, fstype: post.split(' ')[0] });
  }
  return out;
}

const isMounted = (mnt) => mountsUnder(mnt).some((m) => m.mountpoint === mnt);

/** Unmounts mnt from outside (lazily if busy or stuck). Returns true once it is gone. */
function unmountSync(mnt) {
  if (!isMounted(mnt)) return true;
  // SIGKILL on timeout: umount(8) may sit in a FUSE request the daemon never answers.
  spawnSync('umount', [mnt], { stdio: 'ignore', timeout: 20_000, killSignal: 'SIGKILL' });
  if (!isMounted(mnt)) return true;
  spawnSync('umount', ['-l', mnt], { stdio: 'ignore', timeout: 20_000, killSignal: 'SIGKILL' });
  return !isMounted(mnt);
}

function readProcStatus(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'latin1');
    const kib = (k) => {
      const m = new RegExp(`^${k}:\\s*(\\d+) kB`, 'm').exec(s);
      return m ? Number(m[1]) : null;
    };
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const tick = CLK_TCK;
    return {
      vmHWMKiB: kib('VmHWM'),
      vmRSSKiB: kib('VmRSS'),
      threads: Number(/^Threads:\s*(\d+)/m.exec(s)?.[1] ?? 0),
      cpuUserS: Number(f[11]) / tick,
      cpuSysS: Number(f[12]) / tick,
    };
  } catch {
    return null;
  }
}

const CLK_TCK = Number(commandVersion('getconf', ['CLK_TCK']) ?? 100) || 100;

/**
 * A target served by a FUSE daemon that stays in the foreground:
 * command(src, mnt) -> [cmd, args]. The daemon gets its own process group
 * so a terminal Ctrl-C reaches only us and teardown stays orderly.
 */
function fuseTarget({ name, label, fstype, required = false, available, command, parseLog }) {
  const t = {
    name,
    label,
    fstype,
    required,
    available,
    pid: undefined,
    exited: undefined,
    mnt: undefined,
    logFile: undefined,
    process: null,
    daemonStats: null,
    async setup(ctx) {
      const base = join(ctx.root, name);
      const src = join(base, 'src');
      const mnt = join(base, 'mnt');
      mkdirSync(src, { recursive: true });
      mkdirSync(mnt, { recursive: true });
      t.mnt = mnt;
      t.src = src;
      t.logFile = join(base, 'daemon.log');
      const logFd = openSync(t.logFile, 'a');
      const [cmd, args] = command(src, mnt);
      const child = spawn(cmd, args, { stdio: ['ignore', logFd, logFd], detached: true });
      closeSync(logFd);
      child.on('error', () => {});
      // Resolves once Node has reaped it (teardown itself is synchronous).
      t.exited = new Promise((r) => child.once('exit', r));
      child.unref();
      t.pid = child.pid;
      if (!t.pid) throw new Error(`could not start ${cmd}`);
      const end = Date.now() + 20_000;
      for (;;) {
        const m = mountsUnder(mnt).find((x) => x.mountpoint === mnt);
        if (m) {
          if (fstype && m.fstype !== fstype) throw new Error(`${mnt} mounted as ${m.fstype}, want ${fstype}`);
          if (statSync(mnt).dev !== statSync(src).dev) break;
        }
        if (processGone(t.pid)) throw new Error(`${name} daemon exited early:\n${t.logTail()}`);
        if (Date.now() > end) throw new Error(`${name} did not mount within 20 s:\n${t.logTail()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      return { dir: mnt, pid: t.pid };
    },
    /** Memory and CPU of the daemon so far (call before teardown). */
    sample() {
      if (t.pid && !processGone(t.pid)) t.process = readProcStatus(t.pid);
      return t.process;
    },
    logTail(n = 15) {
      try {
        return readFileSync(t.logFile, 'utf8').trim().split('\n').slice(-n).join('\n');
      } catch {
        return '';
      }
    },
    /**
     * Unmount from outside first: the daemon answers umount(8)'s stat of the
     * mount point and then sees the session end. (Asking the passthrough to
     * unmount itself with SIGTERM can deadlock: it runs umount(8) synchronously
     * on the thread that must answer that stat.) Then SIGTERM, then SIGKILL.
     */
    teardown() {
      const notes = [];
      if (t.mnt && !unmountSync(t.mnt)) notes.push(`could not unmount ${t.mnt}`);
      if (t.pid) {
        if (!waitGoneSync(t.pid, 10_000)) {
          notes.push('daemon still running 10 s after unmount; sent SIGTERM');
          signalPid(t.pid, 'SIGTERM');
          if (!waitGoneSync(t.pid, 5000)) {
            notes.push('sent SIGKILL');
            signalPid(t.pid, 'SIGKILL');
            waitGoneSync(t.pid, 5000);
          }
        }
        if (t.mnt && isMounted(t.mnt) && !unmountSync(t.mnt)) notes.push(`${t.mnt} still mounted`);
        if (parseLog) t.daemonStats = parseLog(t.logTail(50));
        t.pid = undefined;
      }
      t.mnt = undefined;
      return notes;
    },
  };
  return t;
}

function passthroughStats(text) {
  for (const line of text.split('\n').reverse()) {
    try {
      const j = JSON.parse(line);
      if (j.msg === 'session ended') {
        const { t: _t, level: _l, component: _c, msg: _m, ...rest } = j;
        return rest;
      }
    } catch {
      // not a JSON log line
    }
  }
  return null;
}

const TARGETS = [
  {
    name: 'local',
    label: 'local',
    available: () => null,
    async setup(ctx) {
      const dir = join(ctx.root, 'local');
      mkdirSync(dir, { recursive: true });
      return { dir };
    },
    sample: () => null,
    teardown: () => [],
  },
  fuseTarget({
    name: 'passthrough',
    label: 'passthrough',
    fstype: 'fuse.dunixfs-passthrough',
    required: true, // the point of the benchmark: missing build is an error, not a skip
    available: () =>
      existsSync(PASSTHROUGH_BIN) ? null : `${PASSTHROUGH_BIN} is missing; build first (npx tsc -b)`,
    command: (src, mnt) => [process.execPath, [PASSTHROUGH_BIN, src, mnt]],
    parseLog: passthroughStats,
  }),
  fuseTarget({
    name: 'bindfs',
    label: 'bindfs',
    fstype: 'fuse',
    available: () => (commandVersion('bindfs') ? null : 'bindfs is not installed'),
    // -f: stay in the foreground so we own the PID (for VmHWM and teardown).
    command: (src, mnt) => ['bindfs', ['-f', '-o', 'big_writes,allow_other,dev,suid', src, mnt]],
  }),
];

/** Ratio columns: numerator / denominator, shown when both ran. */
const RATIOS = [
  ['passthrough', 'bindfs'],
  ['passthrough', 'local'],
];

// ---------------------------------------------------------------- caches

let coldOk = true;

/** Writes back the scratch file system, then drops page, dentry and inode caches. */
async function dropCaches(ctx) {
  await run('sync', ['-f', ctx.root], { timeoutMs: 120_000 });
  if (!coldOk) return false;
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch (err) {
    coldOk = false;
    log(`cannot drop caches (${err.code}); "cold" results below are warm`);
    return false;
  }
}

// ---------------------------------------------------------------- workloads

function fioArgs(name, file, extra) {
  return [
    `--name=${name}`,
    `--filename=${file}`,
    '--output-format=json',
    '--ioengine=psync',
    '--invalidate=0', // caches are ours to control (drop_caches), not fio's fadvise
    '--fallocate=none',
    '--randrepeat=0',
    ...extra,
  ];
}

async function fio(args) {
  const r = await runOk('fio', args, { timeoutMs: 900_000 });
  const start = r.stdout.indexOf('{');
  const j = JSON.parse(r.stdout.slice(start));
  const job = j.jobs[0];
  return { job, wallMs: r.ms };
}

function fioSide(side, wallMs) {
  const pct = side.clat_ns?.percentile ?? {};
  return {
    bwBytesPerS: side.bw_bytes,
    iops: side.iops,
    ioBytes: side.io_bytes,
    runtimeMs: side.runtime,
    clatMeanUs: side.clat_ns ? side.clat_ns.mean / 1000 : null,
    clatP99Us: pct['99.000000'] != null ? pct['99.000000'] / 1000 : null,
    fioWallMs: Math.round(wallMs),
  };
}

/** Create, stat or unlink files f0000000.. in dir, timed inside a separate python3 process. */
const PY_FILES = `
import json, os, sys, time
mode, d, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == 'create':
    os.mkdir(d)
os.chdir(d)
names = ['f%07d' % i for i in range(n)]
if mode == 'create':
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    t = time.perf_counter()
    for p in names:
        os.close(os.open(p, flags, 0o644))
elif mode == 'stat':
    t = time.perf_counter()
    for p in names:
        os.stat(p)
elif mode == 'unlink':
    t = time.perf_counter()
    for p in names:
        os.unlink(p)
s = time.perf_counter() - t
os.chdir('/')
if mode == 'unlink':
    os.rmdir(d)
print(json.dumps({'n': n, 'seconds': s}))
`;

async function fileOps(mode, dir, n) {
  const r = await runOk('python3', ['-c', PY_FILES, mode, dir, String(n)], { timeoutMs: 900_000 });
  const j = JSON.parse(r.stdout.trim().split('\n').pop());
  return { value: j.n / j.seconds, detail: { files: j.n, seconds: j.seconds } };
}

/**
 * Each runs in this order on every target. value is "higher is better"
 * except where lowerBetter is set.
 */
const WORKLOADS = [
  {
    id: 'seq_write',
    label: 'seq write 1 MiB blocks, incl. fsync',
    unit: 'MiB/s',
    async run(ctx, t) {
      await dropCaches(ctx);
      const { job, wallMs } = await fio(
        fioArgs('seqwrite', t.file, ['--rw=write', '--bs=1M', `--size=${ctx.o.sizeMiB}M`, '--end_fsync=1']),
      );
      const d = fioSide(job.write, wallMs);
      return { value: d.bwBytesPerS / MiB, detail: d };
    },
  },
  {
    id: 'seq_read_cold',
    label: 'seq read 1 MiB blocks, cold cache',
    unit: 'MiB/s',
    async run(ctx, t) {
      const cold = await dropCaches(ctx);
      const { job, wallMs } = await fio(
        fioArgs('seqread', t.file, ['--rw=read', '--bs=1M', `--size=${ctx.o.sizeMiB}M`]),
      );
      const d = fioSide(job.read, wallMs);
      return { value: d.bwBytesPerS / MiB, detail: { ...d, cold } };
    },
  },
  {
    id: 'rand_read_warm',
    label: '4 KiB rand read, buffered, warm',
    unit: 'IOPS',
    async run(ctx, t) {
      // The file was just read through the target: whatever cache the target
      // keeps across open() is warm (FUSE drops its own unless keep_cache).
      return randRead(ctx, t, false);
    },
  },
  {
    id: 'rand_read_cold',
    label: '4 KiB rand read, buffered, cold start',
    unit: 'IOPS',
    run: (ctx, t) => randRead(ctx, t, true),
  },
  {
    id: 'rand_read_direct',
    label: '4 KiB rand read, O_DIRECT',
    unit: 'IOPS',
    // Bypasses the page cache at every layer, so each read is one request to
    // the daemon (and one to the disk): the per-request cost, uncached.
    run: (ctx, t) => randRead(ctx, t, false, true),
  },
  {
    id: 'create',
    label: 'create empty files (one dir)',
    unit: 'ops/s',
    async run(ctx, t) {
      await run('sync', ['-f', ctx.root]);
      return fileOps('create', t.filesDir, ctx.o.files);
    },
  },
  {
    id: 'stat_cold',
    label: 'stat files, cold cache',
    unit: 'ops/s',
    async run(ctx, t) {
      const cold = await dropCaches(ctx);
      const r = await fileOps('stat', t.filesDir, ctx.o.files);
      return { ...r, detail: { ...r.detail, cold } };
    },
  },
  {
    id: 'stat_warm',
    label: 'stat files, warm (right after)',
    unit: 'ops/s',
    run: (ctx, t) => fileOps('stat', t.filesDir, ctx.o.files),
  },
  {
    id: 'unlink',
    label: 'unlink files',
    unit: 'ops/s',
    run: (ctx, t) => fileOps('unlink', t.filesDir, ctx.o.files),
  },
];

async function randRead(ctx, t, cold, direct = false) {
  const wasCold = cold ? await dropCaches(ctx) : false;
  const { job, wallMs } = await fio(
    fioArgs('randread', t.file, [
      `--direct=${direct ? 1 : 0}`,
      '--rw=randread',
      '--bs=4k',
      `--size=${ctx.o.sizeMiB}M`,
      '--numjobs=4',
      '--group_reporting',
      '--norandommap',
      '--time_based',
      `--runtime=${ctx.o.runtimeS}`,
    ]),
  );
  const d = fioSide(job.read, wallMs);
  return { value: d.iops, detail: { ...d, cold: wasCold } };
}

/** Extra rows about the daemon, filled from target.sample(). */
const PROCESS_ROWS = [
  { id: 'daemon_peak_rss', label: 'mount process peak RSS (VmHWM)', unit: 'MiB', lowerBetter: true },
  { id: 'daemon_cpu', label: 'mount process CPU time (user+sys)', unit: 's', lowerBetter: true },
];

// ---------------------------------------------------------------- report

function fmt(v, unit) {
  if (v == null || Number.isNaN(v)) return '—';
  if (typeof v === 'string') return v;
  if (unit === 's' || unit === 'MiB') return v.toFixed(1);
  if (v >= 100) return Math.round(v).toLocaleString('en-US');
  return v.toPrecision(3);
}

function markdown(results, names, ctx) {
  const labelOf = (n) => TARGETS.find((t) => t.name === n)?.label ?? n;
  const ratios = RATIOS.filter(([a, b]) => names.includes(a) && names.includes(b));
  const head = [
    'workload',
    'unit',
    ...names.map(labelOf),
    ...ratios.map(([a, b]) => `${labelOf(a)}/${labelOf(b)}`),
  ];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i < 2 ? '---' : '---:')).join('|')}|`];
  for (const w of [...WORKLOADS, ...PROCESS_ROWS]) {
    const cell = (n) => results[n]?.[w.id];
    const cells = names.map((n) => {
      const c = cell(n);
      if (!c) return '—';
      return c.error ? 'error' : fmt(c.value, w.unit);
    });
    const rs = ratios.map(([a, b]) => {
      const x = cell(a)?.value;
      const y = cell(b)?.value;
      return x != null && y ? `${(x / y).toFixed(2)}×` : '—';
    });
    if (cells.every((c) => c === '—')) continue;
    lines.push(`| ${w.label} | ${w.unit} | ${[...cells, ...rs].join(' | ')} |`);
  }
  const errors = [];
  for (const n of names) {
    for (const w of WORKLOADS) {
      const e = results[n]?.[w.id]?.error;
      if (e) errors.push(`- ${n} / ${w.id}: ${e.split('\n')[0]}`);
    }
  }
  lines.push('');
  if (errors.length) lines.push('Errors (first line; full text in the JSON):', ...errors, '');
  lines.push(
    `Ratios are value/value: below 1× the passthrough is slower (or, for RSS/CPU, uses less). ` +
      `File ${ctx.o.sizeMiB} MiB, ${ctx.o.files} files; random reads: psync, 4 jobs, ${ctx.o.runtimeS} s each ` +
      '(buffered ones mix page-cache hits and misses, so they depend on file size and duration); ' +
      `one run per cell${coldOk ? '' : '; drop_caches was unavailable, so "cold" is warm'}.`,
  );
  return lines.join('\n');
}

// ---------------------------------------------------------------- main

const active = new Set();
let scratch;
let cleanedUp = false;

/** Synchronous and idempotent: unmounts, stops daemons, removes the scratch directory. */
function cleanupAll() {
  if (cleanedUp) return;
  cleanedUp = true;
  for (const child of running) signalPid(child.pid, 'SIGTERM');
  for (const child of running) {
    if (!waitGoneSync(child.pid, 3000)) signalPid(child.pid, 'SIGKILL');
  }
  for (const t of active) {
    for (const n of t.teardown()) log(`${t.name}: ${n}`);
    active.delete(t);
  }
  if (scratch) {
    let left = mountsUnder(scratch);
    for (const m of left.reverse()) unmountSync(m.mountpoint);
    left = mountsUnder(scratch);
    if (left.length)
      log(`NOT removing ${scratch}: still mounted: ${left.map((m) => m.mountpoint).join(', ')}`);
    else rmSync(scratch, { recursive: true, force: true });
    scratch = undefined;
  }
}

function onSignal(sig) {
  log(`${sig}: cleaning up`);
  cleanupAll();
  process.exit(128 + (os.constants.signals[sig] ?? 1));
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) die('must run as root (mounts FUSE file systems, drops caches)');
  for (const [cmd, args] of [
    ['fio', ['--version']],
    ['python3', ['--version']],
  ]) {
    if (!commandVersion(cmd, args)) die(`${cmd} is required`);
  }
  const unknown = o.targets.filter((n) => !TARGETS.some((t) => t.name === n));
  if (unknown.length)
    die(`unknown target(s) ${unknown.join(', ')}; known: ${TARGETS.map((t) => t.name).join(', ')}`);
  for (const t of TARGETS) {
    const why = t.required && o.targets.includes(t.name) ? t.available() : null;
    if (why) die(`${t.name}: ${why}`);
  }

  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => onSignal(sig));
  process.on('exit', cleanupAll);

  scratch = mkdtempSync(join(o.workdir, 'dunix-bench-'));
  const ctx = { o, root: scratch };
  const t0 = Date.now();
  const json = {
    startedAt: new Date().toISOString(),
    params: { sizeMiB: o.sizeMiB, files: o.files, randReadSeconds: o.runtimeS, targets: o.targets },
    host: {
      kernel: os.release(),
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      memMiB: Math.round(os.totalmem() / MiB),
      node: process.version,
      fio: commandVersion('fio'),
      bindfs: commandVersion('bindfs'),
      git: commandVersion('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD']),
      loadavgStart: os.loadavg(),
    },
    workloads: Object.fromEntries(
      [...WORKLOADS, ...PROCESS_ROWS].map((w) => [w.id, { label: w.label, unit: w.unit }]),
    ),
    targets: {},
    notes: [],
  };
  log(`scratch ${scratch}; file ${o.sizeMiB} MiB; ${o.files} files; targets ${o.targets.join(',')}`);

  const results = {};
  const ran = [];
  for (const name of o.targets) {
    const target = TARGETS.find((t) => t.name === name);
    const tj = { status: 'ok', notes: [] };
    json.targets[name] = tj;
    const why = target.available();
    if (why) {
      tj.status = 'skipped';
      tj.notes.push(why);
      json.notes.push(`${name} skipped: ${why}`);
      log(`skipping ${name}: ${why}`);
      continue;
    }
    const r = {};
    results[name] = r;
    ran.push(name);
    const started = Date.now();
    try {
      active.add(target);
      const { dir, pid } = await target.setup(ctx);
      tj.dir = dir;
      if (pid) tj.pid = pid;
      log(`${name}: ready at ${dir}${pid ? ` (pid ${pid})` : ''}`);
      const t = { dir, file: join(dir, 'seq.dat'), filesDir: join(dir, 'files') };
      for (const w of WORKLOADS) {
        try {
          const before = target.sample();
          r[w.id] = await w.run(ctx, t);
          const after = target.sample();
          if (before && after) {
            const cpu = after.cpuUserS + after.cpuSysS - before.cpuUserS - before.cpuSysS;
            r[w.id].detail = { ...r[w.id].detail, daemonCpuS: Number(cpu.toFixed(2)) };
          }
          log(`${name}: ${w.id} = ${fmt(r[w.id].value, w.unit)} ${w.unit}`);
        } catch (err) {
          r[w.id] = { error: err.message };
          log(`${name}: ${w.id} FAILED: ${err.message}`);
        }
      }
      const p = target.sample();
      if (p) {
        tj.process = p;
        r.daemon_peak_rss = { value: p.vmHWMKiB / 1024, detail: p };
        r.daemon_cpu = { value: p.cpuUserS + p.cpuSysS, detail: p };
      }
    } catch (err) {
      tj.status = 'failed';
      tj.notes.push(err.message);
      log(`${name}: FAILED: ${err.message}`);
    } finally {
      tj.notes.push(...target.teardown());
      active.delete(target);
      if (target.exited) {
        await Promise.race([target.exited, new Promise((r) => setTimeout(r, 2000))]);
        target.exited = undefined;
      }
      if (target.daemonStats) tj.daemonStats = target.daemonStats;
      const left = mountsUnder(join(scratch, name));
      if (left.length) tj.notes.push(`left mounted: ${left.map((m) => m.mountpoint).join(', ')}`);
      else rmSync(join(scratch, name), { recursive: true, force: true });
    }
    tj.seconds = (Date.now() - started) / 1000;
    tj.results = r;
    log(`${name}: done in ${tj.seconds.toFixed(0)} s`);
  }

  json.ratios = {};
  for (const [a, b] of RATIOS) {
    if (!results[a] || !results[b]) continue;
    const m = {};
    for (const w of [...WORKLOADS, ...PROCESS_ROWS]) {
      const x = results[a][w.id]?.value;
      const y = results[b][w.id]?.value;
      if (x != null && y) m[w.id] = x / y;
    }
    json.ratios[`${a}/${b}`] = m;
  }
  json.coldCache = coldOk;
  json.host.loadavgEnd = os.loadavg();
  json.seconds = (Date.now() - t0) / 1000;
  json.table = markdown(results, ran, ctx);

  cleanupAll();
  mkdirSync(dirname(o.out), { recursive: true });
  writeFileSync(o.out, `${JSON.stringify(json, null, 2)}\n`);
  console.log(json.table);
  for (const n of json.notes) console.log(`\nNote: ${n}`);
  log(`done in ${json.seconds.toFixed(0)} s; results in ${o.out}`);
}

main().catch((err) => {
  console.error(err);
  cleanupAll();
  process.exitCode = 1;
});
