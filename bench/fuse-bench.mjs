#!/usr/bin/env node
/**
 * FUSE and file system benchmark: runs the same workloads against a plain
 * local directory, the dunixfs passthrough mount, bindfs (when installed) and
 * real dunixfs volumes (etcd, 3 bricks and 1 client, all on loopback; one
 * fresh cluster per replica count, replicas 1 and 3 by default), and prints
 * one markdown table with the GlusterFS floor and the replicas 3 / replicas 1
 * ratio per row, plus bench/results/latest.json.
 *
 * Besides the sequential, random-read and metadata rows, the rows issue 11
 * asks for (bench/small-io.mjs): rm -rf of the tar tree, git status on a
 * 10,000-file work tree, make -j2 of a small generated C project, buffered
 * 4 KiB random writes (1 and 4 jobs) and reads (1 job; the 4-job one is
 * rand_read_cold), fsync'd 4 KiB appends (p50, p99) and a mixed small-I/O
 * run; a second table gives each dunixfs column as a ratio to bindfs on
 * issue 11's rows, against its targets. --rows picks rows for a quick run
 * (--help lists them). Every workload run is also kept as
 * bench/results/runs/<UTC time>-<commit>[-dirty].json (local, not in git);
 * runs worth keeping go to bench/history/ (in git; the one ARCHITECTURE.md
 * quotes is there), and node bench/compare.mjs OLD.json NEW.json prints the
 * change per row.
 *
 *   npm run bench                                   # 1 GiB file, 10,000 files, replicas 1 and 3
 *   npm run bench -- --size-mib 256 --files 2000 --targets local,passthrough,dunixfs
 *   npm run bench -- --replicas 3                   # only the replicas 3 volume
 *   npm run bench -- --rows fsync_append,git_status # only those rows
 *   npm run bench -- --memory-only                  # RSS with 100,000 files on dunixfs, replicas 3
 *   npm run bench -- --rebalance                    # online rebalance from 3 to 4 bricks, 512 MiB
 *
 * --rebalance measures online rebalancing instead (rebalanceBench): a volume
 * (replicas 3, --pgs 64) created on 3 of 4 bricks is filled with
 * --rebalance-mib of 4 MiB files; then the 4th brick is added (dunixctl brick
 * add; the coordinator API when this dunixctl has no such command) and a
 * rebalance started at dunixctl's default throttle, while a 20 s
 * fio sequential write and a writer fsyncing a 64-byte record every 10 ms run
 * on the mount. It reports the rebalance's MiB/s against the disk's own copy
 * rate (cp on the scratch directory, same run), PGs/min and seconds, client
 * MiB/s during vs without the rebalance, the writer's worst pause and errors,
 * and PG replicas per brick before and after: a table and
 * bench/results/rebalance.json. It exits 0 whatever the numbers, 1 only if
 * the run itself failed (a process died, a step timed out).
 *
 * Needs root (mounting, /proc/sys/vm/drop_caches), fio, python3 and tar; the
 * packages must be built first (npx tsc -b); dunixfs also needs /usr/bin/etcd.
 * It only reports: nothing here asserts a timing (the memory check prints
 * whether each process stayed under its limit, and exits 0 either way).
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
import { createServer } from 'node:net';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { listensOn } from '../scripts/listens-on.mjs';
import { smallIoWorkloads } from './small-io.mjs';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const PASSTHROUGH_BIN = join(REPO, 'packages/mount/dist/src/bin/dunixfs-passthrough.cjs');
const DUNIX_BINS = {
  etcd: '/usr/bin/etcd',
  brickd: join(REPO, 'packages/brickd/dist/src/bin/brickd.js'),
  dunixctl: join(REPO, 'packages/coord/dist/src/bin/dunixctl.js'),
  client: join(REPO, 'packages/mount/dist/src/bin/dunixfs.cjs'),
};
/** The Node options every brick runs with (packages/proto/src/node-flags.ts); none before a build. */
const BRICKD_NODE_FLAGS = await import(
  pathToFileURL(join(REPO, 'packages/proto/dist/src/node-flags.js')).href
).then(
  (m) => m.brickdNodeFlags,
  () => [],
);
const RESULTS_FILE = join(REPO, 'bench/results/latest.json');
const RUNS_DIR = join(REPO, 'bench/results/runs');
const MEMORY_RESULTS_FILE = join(REPO, 'bench/results/memory.json');
const REBALANCE_RESULTS_FILE = join(REPO, 'bench/results/rebalance.json');
const MiB = 1024 * 1024;
/** Bricks in every dunixfs cluster the bench starts, whatever the replica count. */
const DUNIX_BRICKS = 3;

// ---------------------------------------------------------------- options

const USAGE = `usage: node bench/fuse-bench.mjs [options]
  --size-mib N        size of the sequential / random-read file (default 1024)
  --files N           files for the create / stat / rename / unlink rates (default 10000)
  --tar-files N       files in the tar extraction archive, also the rm -rf tree (default 4000)
  --rows LIST         workload rows to run, comma separated ids (default all; the ids are
                      listed below); a row that reads what another leaves (stat_cold needs
                      create) needs that one too
  --git-files N       files in the git status work tree (default 10000)
  --make-files N      .c files of the make -j2 project, besides main.c (default 40)
  --fsync-appends N   fsync'd 4 KiB appends timed for p50 / p99 (default 1000)
  --mixed-files N     16 KiB files of the mixed small-I/O run (default 300)
  --mixed-opens N     opens of the mixed small-I/O run, 4 calls each (default 1000)
  --loop-max-s S      the fsync'd-append and mixed small-I/O loops stop early after S seconds
                      (default 30); rates and percentiles cover the calls made, in the JSON
  --targets LIST      comma separated, in run order (default local,passthrough,bindfs,dunixfs);
                      dunixfs runs once per --replicas value, each on a fresh cluster
  --replicas LIST     replica counts of the dunixfs volumes, comma separated, in run order
                      (default 1,3; with --memory-only 3); the first is the baseline of
                      the ratio columns (e.g. r3/r1)
  --sequential        run the dunixfs volumes one after the other; by default all are
                      set up together and each workload runs on every volume before the
                      next one (order alternating), so drift of the machine hits both
  --runtime S         seconds per random-read run (default 5)
  --timeout S         longest one workload may run before it is killed (default 1200)
  --workdir DIR       parent of the scratch directory (default /var/tmp)
  --out FILE          JSON results (default bench/results/latest.json, memory.json); the
                      workload run also keeps a copy per run, bench/results/runs/
                      <UTC time>-<commit>.json, for bench/compare.mjs OLD.json NEW.json
  --memory-only       only the memory check: on dunixfs (one fresh cluster per
                      --replicas value), create --memory-files files in 100
                      directories, ls -lR them, report peak RSS
  --memory-files N    files for the memory check (default 100000)
  --memory-limit-mib N  per-process peak RSS limit the check reports (default 300)
  --pgs N             PGs of each dunixfs volume, a power of two (default 256; 64 with --rebalance)
  --rebalance         only the rebalance check: a volume (replicas 3) on 3 of 4 bricks,
                      filled, then the 4th brick added and a rebalance run under client load;
                      writes bench/results/rebalance.json
  --rebalance-mib N   data written before the rebalance, in 4 MiB files (default 512)
  --rebalance-max-mib-per-s N  rebalance throttle: backfill MiB/s per brick, 0 = none
                      (default: dunixctl's)
  --rebalance-max-concurrent N  rebalance throttle: PGs moved at once (default: dunixctl's)
  --client-options O  extra -o options of every dunixfs client (e.g. attr_ttl_ms=1000,entry_ttl_ms=1000)
  --brick-args A      extra arguments of every brickd, space separated (e.g. --no-kv-journal)
  --brick-node-args A  node options of every brickd, space separated (e.g. --heapsnapshot-signal=SIGTTIN)
  --client-node-args A  node options of every dunixfs client, space separated (e.g. --cpu-prof)
  --tls               also run every dunixfs volume with mutual TLS (a CA and certificates
                      made by dunixctl in the target's scratch dir), beside the same volume
                      without: columns dunixfs-rN-tls and ratio rN-tls/rN in one run`;

function parseArgs(argv) {
  const o = {
    sizeMiB: 1024,
    files: 10000,
    tarFiles: 4000,
    rows: undefined,
    gitFiles: 10_000,
    makeFiles: 40,
    fsyncAppends: 1000,
    mixedFiles: 300,
    mixedOpens: 1000,
    loopMaxS: 30,
    targets: ['local', 'passthrough', 'bindfs', 'dunixfs'],
    replicas: undefined,
    runtimeS: 5,
    timeoutS: 1200,
    workdir: '/var/tmp',
    out: undefined,
    memoryOnly: false,
    sequential: false,
    memoryFiles: 100_000,
    memoryLimitMiB: 300,
    pgs: undefined,
    rebalance: false,
    rebalanceMiB: 512,
    rebalanceMaxMiBPerS: undefined,
    rebalanceMaxConcurrent: undefined,
    tls: false,
    clientOptions: undefined,
    brickArgs: [],
    brickNodeArgs: [],
    clientNodeArgs: [],
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
      case '--replicas': {
        const list = next()
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean)
          .map((x) => int(a, x, 1));
        if (!list.length) die('--replicas needs at least one count');
        if (new Set(list).size !== list.length) die(`--replicas lists a count twice: ${list.join(',')}`);
        if (list.some((n) => n > DUNIX_BRICKS))
          die(`--replicas: at most ${DUNIX_BRICKS} (the bench runs ${DUNIX_BRICKS} bricks)`);
        o.replicas = list;
        break;
      }
      case '--tar-files':
        o.tarFiles = int(a, next(), 1);
        break;
      case '--rows':
        o.rows = next()
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean);
        if (!o.rows.length) die('--rows needs at least one row id');
        break;
      case '--git-files':
        o.gitFiles = int(a, next(), 1);
        break;
      case '--make-files':
        o.makeFiles = int(a, next(), 1);
        break;
      case '--fsync-appends':
        o.fsyncAppends = int(a, next(), 1);
        break;
      case '--mixed-files':
        o.mixedFiles = int(a, next(), 1);
        break;
      case '--mixed-opens':
        o.mixedOpens = int(a, next(), 1);
        break;
      case '--loop-max-s':
        o.loopMaxS = int(a, next(), 1);
        break;
      case '--runtime':
        o.runtimeS = int(a, next(), 1);
        break;
      case '--timeout':
        o.timeoutS = int(a, next(), 10);
        break;
      case '--memory-only':
        o.memoryOnly = true;
        break;
      case '--sequential':
        o.sequential = true;
        break;
      case '--memory-files':
        o.memoryFiles = int(a, next(), 100);
        break;
      case '--memory-limit-mib':
        o.memoryLimitMiB = int(a, next(), 1);
        break;
      case '--pgs':
        o.pgs = int(a, next(), 1);
        if ((o.pgs & (o.pgs - 1)) !== 0) die(`--pgs must be a power of two, got ${o.pgs}`);
        break;
      case '--tls':
        o.tls = true;
        break;
      case '--client-options':
        o.clientOptions = next();
        break;
      case '--brick-args':
        o.brickArgs = next().split(' ').filter(Boolean);
        break;
      case '--brick-node-args':
        o.brickNodeArgs = next().split(' ').filter(Boolean);
        break;
      case '--client-node-args':
        o.clientNodeArgs = next().split(' ').filter(Boolean);
        break;
      case '--rebalance':
        o.rebalance = true;
        break;
      case '--rebalance-mib':
        o.rebalanceMiB = int(a, next(), 4);
        break;
      case '--rebalance-max-mib-per-s':
        o.rebalanceMaxMiBPerS = int(a, next(), 0);
        break;
      case '--rebalance-max-concurrent':
        o.rebalanceMaxConcurrent = int(a, next(), 1);
        break;
      case '--workdir':
        o.workdir = resolve(next());
        break;
      case '--out':
        o.out = resolve(next());
        break;
      case '-h':
      case '--help':
        console.log(
          `${USAGE}\n\nrows (--rows):\n${WORKLOADS.map((w) => `  ${w.id.padEnd(20)}${w.label}`).join('\n')}`,
        );
        process.exit(0);
        break;
      default:
        die(`unknown option ${a}\n${USAGE}`);
    }
  }
  if (o.rebalance && o.memoryOnly) die('--rebalance and --memory-only are separate runs: pick one');
  o.out ??= o.rebalance ? REBALANCE_RESULTS_FILE : o.memoryOnly ? MEMORY_RESULTS_FILE : RESULTS_FILE;
  o.replicas ??= o.memoryOnly ? [3] : [1, 3];
  o.pgs ??= o.rebalance ? 64 : 256;
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

/**
 * Runs a command to completion; resolves { code, signal, stdout, stderr, ms }.
 * onChild(child) gets the process right after the spawn (to signal it early).
 * After timeoutMs it is SIGKILLed; if it still has not gone 15 s later (stuck
 * in a file system request that never returns) this resolves anyway, with
 * code null, so a hung mount cannot stall the run.
 */
function run(cmd, args, { timeoutMs = 600_000, cwd, env, ignoreStdout = false, onChild } = {}) {
  return new Promise((resolvePromise, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', ignoreStdout ? 'ignore' : 'pipe', 'pipe'] });
    running.add(child);
    onChild?.(child);
    let stdout = '';
    let stderr = '';
    let settled = false;
    const ms = () => Number(process.hrtime.bigint() - t0) / 1e6;
    child.stdout?.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    let abandon;
    const timer = setTimeout(() => {
      stderr += `\n[killed after ${timeoutMs} ms]`;
      child.kill('SIGKILL');
      abandon = setTimeout(() => {
        if (settled) return;
        settled = true;
        running.delete(child);
        stderr += `\n[pid ${child.pid} still there 15 s after SIGKILL; abandoned]`;
        resolvePromise({ code: null, signal: 'SIGKILL', stdout, stderr, ms: ms() });
      }, 15_000);
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      clearTimeout(abandon);
      running.delete(child);
      if (!settled) reject(err);
      settled = true;
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(abandon);
      running.delete(child);
      if (!settled) resolvePromise({ code, signal, stdout, stderr, ms: ms() });
      settled = true;
    });
  });
}

async function runOk(cmd, args, opts) {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    const tail = (r.stderr || r.stdout).trim().split('\n').slice(-5).join('\n');
    const shown = args.map((a) => (a.length > 80 ? `${a.slice(0, 20)}…` : a)).join(' ');
    throw new Error(`${cmd} ${shown} exited ${r.code ?? r.signal}: ${tail}`);
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
    /** Every process the target runs: [{ role, pid, ...readProcStatus }]. */
    sampleAll() {
      const p = t.sample();
      return p ? [{ role: 'mount', pid: t.pid, ...p }] : [];
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

// ---------------------------------------------------------------- dunixfs cluster

/**
 * A free loopback TCP port (bound to 0, then released): only for etcd, which
 * cannot bind port 0 itself, and only with a retry (startEtcd) because the
 * port may be taken before etcd binds it. Bricks bind 0 and report.
 */
function freePort() {
  return new Promise((resolvePromise, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolvePromise(port));
    });
  });
}

/** Distinct free ports, none of those a cluster someone else runs on this host uses. */
async function freePorts(n) {
  const taken = new Set([23790, 24101, 24102, 24103]);
  const out = [];
  while (out.length < n) {
    const p = await freePort();
    if (!taken.has(p)) {
      taken.add(p);
      out.push(p);
    }
  }
  return out;
}

/** The ports a brick reported through --port-file, once the file names this pid. */
function brickPorts(file, pid) {
  try {
    const r = JSON.parse(readFileSync(file, 'utf8'));
    return r.pid === pid ? r : undefined;
  } catch {
    return undefined;
  }
}

function fileTail(file, n) {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-n).join('\n');
  } catch {
    return '';
  }
}

/** Polls check() (sync or async, truthy = done) every everyMs; throws after ms or when a watched process dies. */
async function waitUntil(what, ms, check, watch = [], everyMs = 100) {
  const end = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    for (const p of watch) {
      if (processGone(p.pid))
        throw new Error(
          `${p.role} (pid ${p.pid}) exited while waiting for ${what}:\n${fileTail(p.logFile, 10)}`,
        );
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * A whole dunixfs volume on loopback: etcd, three bricks, the volume (with
 * `replicas` copies of each PG, min in-sync the dunixctl default) and one
 * client mount, each process in its own process group (so a terminal Ctrl-C
 * reaches only us) with its log in the target's scratch directory. Teardown
 * unmounts, then stops the client, the bricks and etcd in that order, each by
 * PID: SIGTERM, then SIGKILL if it lingers. Named dunixfs-r<replicas>; every
 * setup starts a fresh cluster.
 *
 * bricks: how many the cluster has; the last spareBricks of them are not
 * started by setup (the volume is created without them): startSpareBrick()
 * starts the next one later, registered but not yet added to the volume.
 */
/**
 * The peak of each field of a daemon's "memory" log lines (heap used and
 * total, external, array buffers, MiB; written every 10 s at debug level,
 * so with DUNIX_LOG=debug): where a peak RSS came from. Undefined without
 * such lines.
 */
function heapPeaks(logFile) {
  let text;
  try {
    text = readFileSync(logFile, 'utf8');
  } catch {
    return undefined;
  }
  let peaks;
  for (const line of text.split('\n')) {
    if (!line.includes('"msg":"memory"')) continue;
    let m;
    try {
      m = JSON.parse(line);
    } catch {
      continue;
    }
    peaks ??= {};
    for (const k of ['rssMiB', 'heapUsedMiB', 'heapTotalMiB', 'externalMiB', 'arrayBuffersMiB'])
      if (typeof m[k] === 'number') peaks[k] = Math.max(peaks[k] ?? 0, m[k]);
  }
  return peaks;
}

/** `-o` with the client options given, joined (none: no -o). */
const clientOptionArgs = (opts) => (opts.length > 0 ? ['-o', opts.join(',')] : []);

function dunixfsTarget(
  replicas,
  {
    pgs = 256,
    bricks: BRICKS = DUNIX_BRICKS,
    spareBricks = 0,
    name,
    tls = false,
    clientOptions,
    brickArgs = [],
    brickNodeArgs = [],
    clientNodeArgs = [],
  } = {},
) {
  const VOLUME = 'bench';
  /** etcd starts before giving up when its ports keep being taken first. */
  const ETCD_PORT_ATTEMPTS = 10;
  const INITIAL = BRICKS - spareBricks;
  const t = {
    name: name ?? `dunixfs-r${replicas}${tls ? '-tls' : ''}`,
    label: `dunixfs replicas ${replicas}${tls ? ', TLS' : ''}`,
    replicas,
    pgs,
    volumeName: VOLUME,
    base: undefined,
    etcdUrl: undefined,
    bricksStarted: 0,
    fstype: 'fuse.dunixfs',
    required: false,
    procs: [], // { role, pid, logFile, exited, last }
    mnt: undefined,
    exited: undefined,
    volume: null,
    available() {
      const missing = Object.values(DUNIX_BINS).filter((f) => !existsSync(f));
      return missing.length ? `missing ${missing.join(', ')} (build first: npx tsc -b; etcd-server)` : null;
    },
    start(role, cmd, args, base) {
      const logFile = join(base, `${role}.log`);
      const logFd = openSync(logFile, 'a');
      const child = spawn(cmd, args, { stdio: ['ignore', logFd, logFd], detached: true, cwd: base });
      closeSync(logFd);
      child.on('error', () => {});
      child.unref();
      if (!child.pid) throw new Error(`could not start ${role} (${cmd})`);
      const p = {
        role,
        pid: child.pid,
        logFile,
        exited: new Promise((r) => child.once('exit', r)),
        last: null,
      };
      t.procs.push(p);
      return p;
    },
    /** Starts brick<n> (1-based) on port 0; its id is known once it registered (brickRegistered). */
    startBrick(n) {
      const data = join(t.base, `brick${n}`);
      mkdirSync(data, { recursive: true });
      // Port 0: the brick binds its own ports and reports them (no port chosen here can be taken).
      const b = t.start(
        `brick${n}`,
        process.execPath,
        [
          ...BRICKD_NODE_FLAGS,
          ...brickNodeArgs,
          DUNIX_BINS.brickd,
          '--data',
          data,
          '--listen',
          '127.0.0.1:0',
          '--port-file',
          join(data, 'ports.json'),
          '--etcd',
          t.etcdUrl,
          '--volume',
          VOLUME,
          ...(tls ? ['--tls-dir', join(t.base, 'tls', 'bricks', `brick${n}`)] : []),
          ...brickArgs,
        ],
        t.base,
      );
      b.portFile = join(data, 'ports.json');
      b.dataDir = data;
      t.bricksStarted = Math.max(t.bricksStarted, n);
      return b;
    },
    /** True once b reported its ports and logged its start; sets b.id from its data directory. */
    brickRegistered(b) {
      if (!brickPorts(b.portFile, b.pid) || !fileTail(b.logFile, 50).includes('"msg":"brick started"'))
        return false;
      try {
        b.id = JSON.parse(readFileSync(join(b.dataDir, 'brick.json'), 'utf8')).id;
      } catch {
        return false;
      }
      return true;
    },
    /** Starts the next brick setup left out; resolves it ({ role, pid, id, ... }) once registered. */
    async startSpareBrick() {
      if (t.bricksStarted >= BRICKS) throw new Error(`all ${BRICKS} bricks already run`);
      const b = t.startBrick(t.bricksStarted + 1);
      t.exited = Promise.all(t.procs.map((p) => p.exited));
      const others = t.procs.filter((p) => p !== b && p.role !== 'client');
      await waitUntil(`${b.role} to register`, 30_000, () => t.brickRegistered(b), [b, ...others]);
      return b;
    },
    async setup(ctx) {
      const base = join(ctx.root, t.name);
      t.base = base;
      const mnt = join(base, 'mnt');
      mkdirSync(mnt, { recursive: true });
      if (tls) await t.makeCertificates(base);
      const { etcd, etcdUrl, clientPort } = await t.startEtcd(base);
      t.etcdUrl = etcdUrl;
      const bricks = Array.from({ length: INITIAL }, (_, i) => t.startBrick(i + 1));
      await waitUntil('all bricks to register', 30_000, () => bricks.every((b) => t.brickRegistered(b)), [
        etcd,
        ...bricks,
      ]);
      let created;
      await waitUntil(
        `dunixctl volume create ${VOLUME}`,
        30_000,
        async () => {
          const r = await run(
            process.execPath,
            [
              DUNIX_BINS.dunixctl,
              '--etcd',
              etcdUrl,
              'volume',
              'create',
              VOLUME,
              '--pgs',
              String(pgs),
              '--replicas',
              String(replicas),
            ],
            { timeoutMs: 20_000 },
          );
          created = r;
          return r.code === 0;
        },
        [etcd, ...bricks],
      ).catch((err) => {
        throw new Error(`${err.message}\n${(created?.stderr || created?.stdout || '').trim()}`);
      });
      t.volume = created.stdout.trim();
      const brickRows = t.volume.split('\n').filter((l) => /^brick-/.test(l)).length;
      if (brickRows !== INITIAL)
        throw new Error(`volume spans ${brickRows} bricks, want ${INITIAL}:\n${t.volume}`);
      if (!new RegExp(`\\b${replicas} replica\\(s\\)`).test(t.volume))
        throw new Error(`volume was not created with ${replicas} replica(s):\n${t.volume}`);
      // Every PG with all its copies live and in sync before the client mounts.
      let status;
      await waitUntil(
        `every PG of ${VOLUME} to have ${replicas} in-sync copies`,
        60_000,
        async () => {
          const r = await run(
            process.execPath,
            [DUNIX_BINS.dunixctl, '--etcd', etcdUrl, '--json', 'volume', 'status', VOLUME],
            { timeoutMs: 20_000 },
          );
          if (r.code !== 0) return false;
          try {
            status = JSON.parse(r.stdout);
          } catch {
            return false;
          }
          return (
            status.pgsDegraded.length === 0 &&
            status.isrHistogram.find((h) => h.live === replicas)?.pgs === status.config.pgCount
          );
        },
        [etcd, ...bricks],
      );
      t.minInsync = status.config.minInsync;
      t.mnt = mnt;
      const client = t.start(
        'client',
        process.execPath,
        [
          ...clientNodeArgs,
          DUNIX_BINS.client,
          // etcd runs plain HTTP on loopback here (never on the data path): said explicitly, since
          // with tls_dir a HOST:PORT endpoint means https.
          `http://127.0.0.1:${clientPort}/${VOLUME}`,
          mnt,
          ...clientOptionArgs([
            ...(tls ? [`tls_dir=${join(base, 'tls', 'clients', 'bench')}`] : []),
            ...(clientOptions ? [clientOptions] : []),
          ]),
        ],
        base,
      );
      await waitUntil(
        'the client to mount',
        30_000,
        () => mountsUnder(mnt).some((m) => m.mountpoint === mnt && m.fstype === t.fstype),
        [client, etcd, ...bricks],
      );
      t.exited = Promise.all(t.procs.map((p) => p.exited));
      return { dir: mnt, pid: client.pid };
    },
    /** A cluster CA in BASE/tls, a certificate per brick and one for the client (dunixctl). */
    async makeCertificates(base) {
      const dir = join(base, 'tls');
      const ctl = async (args) => {
        const r = await run(process.execPath, [DUNIX_BINS.dunixctl, ...args, '--dir', dir], {
          timeoutMs: 60_000,
        });
        if (r.code !== 0) throw new Error(`dunixctl ${args.join(' ')}: ${r.stderr || r.stdout}`);
      };
      await ctl(['ca', 'init']);
      for (let n = 1; n <= BRICKS; n++) await ctl(['cert', 'issue', '--brick', `brick${n}`]);
      await ctl(['cert', 'issue', '--client', 'bench']);
    },
    /**
     * etcd on ports picked by freePorts(); when one was taken before etcd
     * bound it (etcd exits: address already in use), again on new ports.
     */
    async startEtcd(base) {
      for (let attempt = 1; ; attempt++) {
        const [clientPort, peerPort] = await freePorts(2);
        const etcdUrl = `http://127.0.0.1:${clientPort}`;
        const peerUrl = `http://127.0.0.1:${peerPort}`;
        const dataDir = join(base, 'etcd');
        rmSync(dataDir, { recursive: true, force: true });
        const etcd = t.start(
          'etcd',
          DUNIX_BINS.etcd,
          [
            '--name=bench',
            `--data-dir=${dataDir}`,
            `--listen-client-urls=${etcdUrl}`,
            `--advertise-client-urls=${etcdUrl}`,
            `--listen-peer-urls=${peerUrl}`,
            `--initial-advertise-peer-urls=${peerUrl}`,
            `--initial-cluster=bench=${peerUrl}`,
            // Volume creation writes every PG in one transaction.
            '--max-txn-ops=65600',
            `--max-request-bytes=${32 * MiB}`,
            '--log-level=warn',
          ],
          base,
        );
        try {
          await waitUntil(
            'etcd /health',
            20_000,
            async () =>
              (await globalThis
                .fetch(`${etcdUrl}/health`)
                .then((r) => r.ok)
                .catch(() => false)) && listensOn(etcd.pid, clientPort),
            [etcd],
          );
          return { etcd, etcdUrl, clientPort };
        } catch (err) {
          const lost = processGone(etcd.pid) && /address already in use/.test(fileTail(etcd.logFile, 20));
          if (!lost || attempt >= ETCD_PORT_ATTEMPTS) throw err;
          t.procs = t.procs.filter((p) => p !== etcd);
          log(`etcd lost a race for port ${clientPort} or ${peerPort}; retrying on new ports`);
        }
      }
    },
    proc: (role) => t.procs.find((p) => p.role === role),
    /** The client's memory and CPU so far (the rows every FUSE target has). */
    sample() {
      return t.sampleAll().find((p) => p.role === 'client') ?? null;
    },
    sampleAll() {
      for (const p of t.procs) if (!processGone(p.pid)) p.last = readProcStatus(p.pid) ?? p.last;
      return t.procs.filter((p) => p.last).map((p) => ({ role: p.role, pid: p.pid, ...p.last }));
    },
    /** Log tails of the client and bricks, for error reports. */
    logTails(n = 15) {
      return Object.fromEntries(
        t.procs.filter((p) => p.role !== 'etcd').map((p) => [p.role, fileTail(p.logFile, n)]),
      );
    },
    teardown() {
      const notes = [];
      if (t.procs.length) t.sampleAll();
      if (t.mnt && !unmountSync(t.mnt)) notes.push(`could not unmount ${t.mnt}`);
      const stop = (p, graceMs) => {
        if (waitGoneSync(p.pid, graceMs)) return;
        signalPid(p.pid, 'SIGTERM');
        if (waitGoneSync(p.pid, 10_000)) return;
        notes.push(`${p.role} (pid ${p.pid}) ignored SIGTERM for 10 s; sent SIGKILL`);
        signalPid(p.pid, 'SIGKILL');
        waitGoneSync(p.pid, 5000);
      };
      // The client exits by itself once unmounted; bricks before etcd, so
      // they can revoke their leases.
      const order = ['client', ...t.procs.map((p) => p.role).filter((r) => r.startsWith('brick')), 'etcd'];
      for (const role of order) {
        const p = t.proc(role);
        if (p) stop(p, role === 'client' ? 10_000 : 0);
      }
      if (t.mnt && isMounted(t.mnt) && !unmountSync(t.mnt)) notes.push(`${t.mnt} still mounted`);
      t.mnt = undefined;
      t.procs = t.procs.filter((p) => !processGone(p.pid));
      for (const p of t.procs) notes.push(`${p.role} (pid ${p.pid}) still running`);
      return notes;
    },
  };
  return t;
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
    sampleAll: () => [],
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
  // dunixfs-r<N>, one per --replicas value: added by addDunixfsTargets().
];

/**
 * Adds one dunixfs target per --replicas value and expands 'dunixfs' in
 * o.targets to their names (dunixfs-r1,dunixfs-r3), in --replicas order.
 */
function addDunixfsTargets(o) {
  for (const n of o.replicas) {
    const common = {
      pgs: o.pgs,
      clientOptions: o.clientOptions,
      brickArgs: o.brickArgs,
      brickNodeArgs: o.brickNodeArgs,
      clientNodeArgs: o.clientNodeArgs,
    };
    TARGETS.push(dunixfsTarget(n, common));
    if (o.tls) TARGETS.push(dunixfsTarget(n, { ...common, tls: true }));
  }
  const names = o.replicas.flatMap((n) =>
    o.tls ? [`dunixfs-r${n}`, `dunixfs-r${n}-tls`] : [`dunixfs-r${n}`],
  );
  o.targets = o.targets.flatMap((n) => (n === 'dunixfs' ? names : [n]));
}

/** The baseline dunixfs target (the first --replicas value) and the others, which ratio columns compare with it. */
function dunixfsNames(o) {
  const names = o.replicas.map((n) => `dunixfs-r${n}`).filter((n) => o.targets.includes(n));
  return { base: names[0], others: names.slice(1) };
}

/**
 * GlusterFS replica 3 on this kind of machine: the reference numbers dunixfs
 * must not fall below (given, not measured here). MB/s are converted to MiB/s.
 */
const GLUSTER_FLOOR = {
  seq_write: 127e6 / MiB,
  seq_read_cold: 622e6 / MiB,
  create: 287,
  stat_cold: 1100,
  rename: 248,
  unlink: 378,
  tar_extract: 46,
};

/**
 * Ratio columns: numerator / denominator, shown when both ran ('floor' is
 * GLUSTER_FLOOR). The dunixfs ones are filled in by setRatios().
 */
const RATIOS = [
  ['passthrough', 'bindfs'],
  ['passthrough', 'local'],
];

function setRatios(o) {
  const { base, others } = dunixfsNames(o);
  if (!base) return;
  RATIOS.push([base, 'local'], [base, 'passthrough']);
  for (const n of [base, ...others]) RATIOS.push([n, 'floor']);
  for (const n of others) RATIOS.push([n, base]);
  // --tls: each volume with TLS against the same volume without.
  for (const n of o.replicas)
    if (o.targets.includes(`dunixfs-r${n}-tls`)) RATIOS.push([`dunixfs-r${n}-tls`, `dunixfs-r${n}`]);
}

/**
 * The replication target: on every workload row, replicas N (N > 1) at least
 * this fraction of replicas 1's rate, in the same run (times are inverted:
 * r1 seconds / rN seconds). Sequential write may halve, since every copy
 * lands on the same disk here.
 */
const REPLICA_FLOOR = { default: 0.8, seq_write: 0.5 };
const replicaFloor = (id) => REPLICA_FLOOR[id] ?? REPLICA_FLOOR.default;

/** rN's rate as a fraction of base's (higher is better for every unit), or undefined. */
function speedRatio(results, n, base, w) {
  const x = valueOf(results, n, w.id);
  const y = valueOf(results, base, w.id);
  if (x == null || !y || !x) return undefined;
  return w.lowerBetter ? y / x : x / y;
}

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

async function fio(ctx, args) {
  const r = await runOk('fio', args, { timeoutMs: ctx.timeoutMs });
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

/**
 * Create, stat, rename (f0000000 -> r0000000, same directory) or unlink the
 * files f0000000.. in dir, timed inside a separate python3 process. unlink
 * removes whatever the directory holds (listed before the clock starts), so
 * it runs whether or not rename did.
 */
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
elif mode == 'rename':
    t = time.perf_counter()
    for p in names:
        os.rename(p, 'r' + p[1:])
elif mode == 'unlink':
    names = sorted(os.listdir('.'))
    n = len(names)
    t = time.perf_counter()
    for p in names:
        os.unlink(p)
s = time.perf_counter() - t
os.chdir('/')
if mode == 'unlink':
    os.rmdir(d)
print(json.dumps({'n': n, 'seconds': s}))
`;

/**
 * W forked processes create n empty files at once, n / W each in a
 * directory of its own (in one directory the kernel would run them one at a
 * time: a create holds the directory's lock): what concurrent calls cost
 * (a parallel build's outputs), where the single-process rows measure one
 * call's latency.
 */
const PY_PARALLEL_CREATE = `
import json, os, sys, time
d, n, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.mkdir(d)
for k in range(w):
    os.mkdir(os.path.join(d, 'd%d' % k))
each = n // w
flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
r, wr = os.pipe()
pids = []
for k in range(w):
    pid = os.fork()
    if pid == 0:
        os.close(wr)
        os.read(r, 1)
        sub = os.path.join(d, 'd%d' % k)
        for i in range(each):
            os.close(os.open(os.path.join(sub, 'f%07d' % i), flags, 0o644))
        os._exit(0)
    pids.append(pid)
os.close(r)
t = time.perf_counter()
os.write(wr, b'x' * w)
bad = 0
for pid in pids:
    if os.waitpid(pid, 0)[1] != 0:
        bad += 1
s = time.perf_counter() - t
if bad:
    sys.exit('%d creators failed' % bad)
print(json.dumps({'n': each * w, 'seconds': s}))
`;

async function fileOps(ctx, mode, dir, n) {
  const r = await runOk('python3', ['-c', PY_FILES, mode, dir, String(n)], { timeoutMs: ctx.timeoutMs });
  const j = JSON.parse(r.stdout.trim().split('\n').pop());
  return { value: j.n / j.seconds, detail: { files: j.n, seconds: j.seconds } };
}

/**
 * Each runs in this order on every target. value is "higher is better"
 * except where lowerBetter is set. rightAfterPrevious: measures what the
 * workload before left warm, so when targets interleave (runGroups) it runs
 * on a target directly after that one, before any other target's turn.
 */
const WORKLOADS = [
  {
    id: 'seq_write',
    label: 'seq write 1 MiB blocks, incl. fsync',
    unit: 'MiB/s',
    async run(ctx, t) {
      await dropCaches(ctx);
      const { job, wallMs } = await fio(
        ctx,
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
        ctx,
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
    rightAfterPrevious: true,
    needs: 'seq_read_cold',
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
      return fileOps(ctx, 'create', t.filesDir, ctx.o.files);
    },
  },
  {
    id: 'stat_cold',
    label: 'stat files, cold cache',
    unit: 'ops/s',
    needs: 'create',
    async run(ctx, t) {
      const cold = await dropCaches(ctx);
      const r = await fileOps(ctx, 'stat', t.filesDir, ctx.o.files);
      return { ...r, detail: { ...r.detail, cold } };
    },
  },
  {
    id: 'stat_warm',
    label: 'stat files, warm (right after)',
    unit: 'ops/s',
    rightAfterPrevious: true,
    needs: 'stat_cold',
    run: (ctx, t) => fileOps(ctx, 'stat', t.filesDir, ctx.o.files),
  },
  {
    id: 'rename',
    label: 'rename files (same dir, new names)',
    unit: 'ops/s',
    needs: 'create',
    run: (ctx, t) => fileOps(ctx, 'rename', t.filesDir, ctx.o.files),
  },
  {
    id: 'unlink',
    label: 'unlink files',
    unit: 'ops/s',
    run: (ctx, t) => fileOps(ctx, 'unlink', t.filesDir, ctx.o.files),
  },
  {
    id: 'create_parallel',
    label: 'create empty files, 8 processes (a dir each)',
    unit: 'ops/s',
    async run(ctx, t) {
      const dir = join(t.dir, 'pcreate');
      const r = await runOk('python3', ['-c', PY_PARALLEL_CREATE, dir, String(ctx.o.files), '8'], {
        timeoutMs: ctx.timeoutMs,
      });
      const j = JSON.parse(r.stdout.trim().split('\n').pop());
      rmSync(dir, { recursive: true, force: true });
      return { value: j.n / j.seconds, detail: { files: j.n, seconds: j.seconds, processes: 8 } };
    },
  },
  {
    id: 'tar_extract',
    label: 'tar -xf small files, cold',
    unit: 's',
    lowerBetter: true,
    async run(ctx, t) {
      const dest = join(t.dir, 'tarx');
      await runOk('mkdir', [dest], { timeoutMs: 60_000 });
      const cold = await dropCaches(ctx);
      const r = await runOk('tar', ['-xf', ctx.tarball.file, '-C', dest], { timeoutMs: ctx.timeoutMs });
      // Not part of the time (tar does not sync either); shows what was left dirty.
      const s = await runOk('sync', ['-f', dest], { timeoutMs: ctx.timeoutMs });
      return {
        value: r.ms / 1000,
        detail: { ...ctx.tarball.detail, seconds: r.ms / 1000, syncAfterSeconds: s.ms / 1000, cold },
      };
    },
  },
];

// Issue 11's standing rows (rm -rf, git status, make, random writes, fsync'd
// appends, mixed small I/O): after the rows above, so those keep their order.
WORKLOADS.push(...smallIoWorkloads({ run, runOk, dropCaches, fio, fioArgs, fioSide }));

/**
 * The rows --rows selects, in WORKLOADS order: a row filled from another's
 * run (from) comes with it, and a row that reads what another left (needs)
 * is an error without that one.
 */
function selectRows(ids) {
  if (!ids) return [...WORKLOADS];
  const unknown = ids.filter((id) => !WORKLOADS.some((w) => w.id === id));
  if (unknown.length)
    die(`--rows: unknown row(s) ${unknown.join(', ')}; known: ${WORKLOADS.map((w) => w.id).join(', ')}`);
  const want = new Set(ids.map((id) => WORKLOADS.find((w) => w.id === id).from ?? id));
  for (const w of WORKLOADS) if (w.from && want.has(w.from)) want.add(w.id);
  for (const w of WORKLOADS)
    if (want.has(w.id) && w.needs && !want.has(w.needs))
      die(`--rows: ${w.id} measures what ${w.needs} leaves behind; add ${w.needs}`);
  return WORKLOADS.filter((w) => want.has(w.id));
}

/** Rows whose tools are missing: id -> the reason they are skipped. */
function rowsWithoutTools(rows) {
  const why = {};
  for (const w of rows) {
    const missing = (w.tools ?? []).filter((cmd) => !commandVersion(cmd));
    if (missing.length)
      why[w.id] = `${missing.join(', ')} not installed (scripts/install-deps.sh installs it)`;
  }
  for (const w of rows) if (w.from && why[w.from]) why[w.id] = why[w.from];
  return why;
}

/**
 * The tar extraction's archive: files of 100 B..20 KiB (log-uniform) in 25 x 4
 * nested directories, from a fixed seed, with fixed owners and mtimes, so the
 * same --tar-files gives a byte-identical archive on every host.
 */
const PY_TARBALL = `
import hashlib, io, json, math, random, sys, tarfile
out, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(20261121)
pool = rng.randbytes(1 << 16) * 2
lo, hi = math.log(100), math.log(20 * 1024)
def info(name, kind, size=0):
    ti = tarfile.TarInfo(name)
    ti.type, ti.size, ti.mtime, ti.uid, ti.gid = kind, size, 1700000000, 0, 0
    ti.uname, ti.gname = 'root', 'root'
    ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return ti
files = []
for i in range(n):
    d = 'tree/m%02d/s%d' % (i % 25, (i // 25) % 4)
    if i % 3 == 0:
        d += '/deep'
    files.append((d, '%s/f%05d.dat' % (d, i), int(math.exp(rng.uniform(lo, hi)))))
total = 0
with tarfile.open(out, 'w', format=tarfile.GNU_FORMAT) as tar:
    seen = set()
    for d, name, size in sorted(files, key=lambda f: f[1]):
        parts = d.split('/')
        for k in range(1, len(parts) + 1):
            p = '/'.join(parts[:k])
            if p not in seen:
                seen.add(p)
                tar.addfile(info(p, tarfile.DIRTYPE))
        off = rng.randrange(1 << 16)
        tar.addfile(info(name, tarfile.REGTYPE, size), io.BytesIO(pool[off:off + size]))
        total += size
h = hashlib.sha256(open(out, 'rb').read()).hexdigest()
print(json.dumps({'files': n, 'dirs': len(seen), 'bytes': total, 'sha256': h}))
`;

async function buildTarball(ctx) {
  const file = join(ctx.root, 'tree.tar');
  const r = await runOk('python3', ['-c', PY_TARBALL, file, String(ctx.o.tarFiles)], { timeoutMs: 300_000 });
  const detail = JSON.parse(r.stdout.trim().split('\n').pop());
  log(
    `tarball ${file}: ${detail.files} files, ${detail.dirs} dirs, ${(detail.bytes / MiB).toFixed(1)} MiB of data, sha256 ${detail.sha256.slice(0, 12)}`,
  );
  return { file, detail };
}

async function randRead(ctx, t, cold, direct = false) {
  const wasCold = cold ? await dropCaches(ctx) : false;
  const { job, wallMs } = await fio(
    ctx,
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
  { id: 'daemon_rss', label: 'mount process RSS at the end (VmRSS)', unit: 'MiB', lowerBetter: true },
  { id: 'daemon_cpu', label: 'mount process CPU time (user+sys)', unit: 's', lowerBetter: true },
  { id: 'brick_peak_rss', label: 'largest brick peak RSS (VmHWM)', unit: 'MiB', lowerBetter: true },
  { id: 'brick_rss', label: 'largest brick RSS at the end (VmRSS)', unit: 'MiB', lowerBetter: true },
];

/** Fills PROCESS_ROWS from target.sampleAll(). */
function processRows(procs) {
  const r = {};
  const mount = procs.find((p) => p.role === 'mount' || p.role === 'client');
  if (mount) {
    r.daemon_peak_rss = { value: mount.vmHWMKiB / 1024, detail: mount };
    r.daemon_rss = { value: mount.vmRSSKiB / 1024, detail: mount };
    r.daemon_cpu = { value: mount.cpuUserS + mount.cpuSysS, detail: mount };
  }
  const bricks = procs.filter((p) => p.role.startsWith('brick'));
  if (bricks.length) {
    r.brick_peak_rss = { value: Math.max(...bricks.map((b) => b.vmHWMKiB)) / 1024, detail: bricks };
    r.brick_rss = { value: Math.max(...bricks.map((b) => b.vmRSSKiB)) / 1024, detail: bricks };
  }
  return r;
}

// ---------------------------------------------------------------- report

function fmt(v, unit) {
  if (v == null || Number.isNaN(v)) return '—';
  if (typeof v === 'string') return v;
  if (unit === 's' && v < 10) return v.toFixed(2); // rm -rf, git status: well under a second locally
  if (unit === 's' || unit === 'MiB') return v.toFixed(1);
  if (v >= 100) return Math.round(v).toLocaleString('en-US');
  return v.toPrecision(3);
}

/** value of workload id on target name; 'floor' is the GlusterFS reference. */
function valueOf(results, name, id) {
  if (name === 'floor') return GLUSTER_FLOOR[id];
  const c = results[name]?.[id];
  return c && !c.error ? c.value : undefined;
}

function markdown(results, names, ctx, processes) {
  const labelOf = (n) =>
    n === 'floor' ? 'GlusterFS floor' : (TARGETS.find((t) => t.name === n)?.label ?? n);
  /** dunixfs-r3 -> r3 in the ratio headers. */
  const shortOf = (n) => (n === 'floor' ? 'floor' : n.replace(/^dunixfs-/, ''));
  const ratios = RATIOS.filter(([a, b]) => names.includes(a) && (b === 'floor' || names.includes(b)));
  const { base, others } = dunixfsNames(ctx.o);
  const checks = base && results[base] ? others.filter((n) => results[n]) : [];
  const head = [
    'workload',
    'unit',
    ...names.map(labelOf),
    'GlusterFS floor',
    ...ratios.map(([a, b]) => `${shortOf(a)}/${shortOf(b)}`),
    ...checks.map((n) => `${shortOf(n)} vs ${shortOf(base)} target`),
  ];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i < 2 ? '---' : '---:')).join('|')}|`];
  for (const w of [...WORKLOADS, ...PROCESS_ROWS]) {
    const cells = names.map((n) => {
      const c = results[n]?.[w.id];
      if (!c) return '—';
      return c.error ? 'error' : fmt(c.value, w.unit);
    });
    const rs = ratios.map(([a, b]) => {
      const x = valueOf(results, a, w.id);
      const y = valueOf(results, b, w.id);
      return x != null && y ? `${(x / y).toFixed(2)}×` : '—';
    });
    const cs = checks.map((n) => {
      if (!WORKLOADS.includes(w)) return '';
      const r = speedRatio(results, n, base, w);
      if (r == null) return '—';
      return r >= replicaFloor(w.id) ? `ok (≥ ${replicaFloor(w.id)})` : `**MISS** (< ${replicaFloor(w.id)})`;
    });
    if (cells.every((c) => c === '—')) continue;
    const unit = w.lowerBetter ? `${w.unit} (lower is better)` : w.unit;
    lines.push(
      `| ${w.label} | ${unit} | ${[...cells, fmt(GLUSTER_FLOOR[w.id], w.unit), ...rs, ...cs].join(' | ')} |`,
    );
  }
  const errors = [];
  for (const n of names) {
    for (const w of WORKLOADS) {
      if (w.from) continue; // its error is the row's it comes from
      const e = results[n]?.[w.id]?.error;
      if (e) errors.push(`- ${n} / ${w.id}: ${e.split('\n').slice(0, 3).join(' ⏎ ')}`);
    }
  }
  lines.push('');
  if (errors.length) lines.push('Errors (first lines; full text and log tails in the JSON):', ...errors, '');
  if (processes.length) {
    lines.push(
      '| target | process | peak RSS (VmHWM) MiB | RSS at the end (VmRSS) MiB | CPU (user+sys) s | threads |',
      '|---|---|---:|---:|---:|---:|',
    );
    for (const p of processes)
      lines.push(
        `| ${p.target} | ${p.role} (pid ${p.pid}) | ${fmt(p.vmHWMKiB / 1024, 'MiB')} | ` +
          `${fmt(p.vmRSSKiB / 1024, 'MiB')} | ${fmt(p.cpuUserS + p.cpuSysS, 's')} | ${p.threads} |`,
      );
    lines.push('');
  }
  const tar = ctx.tarball.detail;
  const dunix = names.filter((n) => n.startsWith('dunixfs-'));
  lines.push(
    (dunix.length
      ? `${dunix.map(shortOf).join(', ')}: dunixfs volume${dunix.length > 1 ? 's' : ''} with replicas ` +
        `${dunix.map((n) => TARGETS.find((t) => t.name === n)?.replicas).join(', ')} ` +
        `(each on a fresh etcd, ${DUNIX_BRICKS} bricks and 1 client; ${ctx.o.pgs} PGs; min in-sync min(2, replicas))` +
        (dunix.length > 1 && !ctx.o.sequential
          ? ', set up together, each workload run on every volume before the next, in alternating order. '
          : '. ')
      : '') +
      'Ratios are value/value: for ops/s, MiB/s and IOPS below 1× the first is slower; for seconds, ' +
      'MiB and CPU (lower is better) above 1× it is slower or uses more. ' +
      (checks.length
        ? `Target: ${checks.map(shortOf).join(', ')} reaches at least ${REPLICA_FLOOR.default}× of ` +
          `${shortOf(base)}'s rate on every workload row (seq write ${REPLICA_FLOOR.seq_write}×; ` +
          'for seconds, the inverse ratio), within this run. '
        : '') +
      'GlusterFS floor: GlusterFS replica 3 on this kind of machine (reference numbers, not measured in ' +
      'this run; 127 and 622 MB/s shown as MiB/s). ' +
      `File ${ctx.o.sizeMiB} MiB, ${ctx.o.files} files in one directory; ` +
      `tar: ${tar.files} files of 100 B..20 KiB in ${tar.dirs} directories, ` +
      `${(tar.bytes / MiB).toFixed(1)} MiB, time of tar -xf alone; ` +
      `random reads: psync, 4 jobs (1 where the row says), ${ctx.o.runtimeS} s each ` +
      '(buffered ones mix page-cache hits and misses, so they depend on file size and duration); ' +
      `random writes: psync, ${ctx.o.runtimeS} s over the file's first ` +
      `${Math.min(ctx.o.sizeMiB, 256)} MiB, the closing fsync not in the rate; ` +
      `rm -rf: the tar tree; git status: ${ctx.o.gitFiles} files of 1-2 KiB in 110 directories, ` +
      'committed and packed (one untimed status first); ' +
      `make -j2: ${ctx.o.makeFiles} .c files + main.c at -O1, linked; ` +
      `fsync'd appends: ${ctx.o.fsyncAppends} x (write 4 KiB + fsync), each timed; ` +
      `mixed small I/O: ${ctx.o.mixedOpens} opens of ${ctx.o.mixedFiles} 16 KiB files, 4 calls each ` +
      '(pread / pwrite 4 KiB, fstat, ftruncate), all calls counted, per-call p50 / p99 in the JSON; ' +
      `both loops stop early after ${ctx.o.loopMaxS} s; ` +
      `"cold" = after sync and drop_caches (the dunixfs bricks' and client's own caches stay); ` +
      `one run per cell${coldOk ? '' : '; drop_caches was unavailable, so "cold" is warm'}. ` +
      `Load average (1 min) ${ctx.loadStart.toFixed(1)} at the start, ${os.loadavg()[0].toFixed(1)} ` +
      `at the end, ${os.cpus().length} CPUs (per workload in the JSON).`,
  );
  return lines.join('\n');
}

/**
 * Issue 11's targets for dunixfs replica 3, as value / bindfs's value in the
 * same run: at least min for rates, at most max for times and latencies.
 * Rows without a bound are shown for their ratio alone.
 */
const ISSUE11_ROWS = [
  { id: 'create', min: 0.6 },
  { id: 'stat_cold', min: 0.5 },
  { id: 'rename', min: 0.5 },
  { id: 'unlink', min: 0.5 },
  { id: 'create_parallel' },
  { id: 'tar_extract', max: 4 },
  { id: 'rm_rf', max: 2 },
  { id: 'rand_write_1j', min: 0.3 },
  { id: 'rand_write_4j' },
  { id: 'rand_read_cold', min: 0.3 },
  { id: 'rand_read_cold_1j' },
  { id: 'fsync_append', max: 3 },
  { id: 'fsync_append_p99' },
  { id: 'seq_write', min: 0.25 },
  { id: 'seq_read_cold', min: 0.6 },
  { id: 'mixed_small_io' },
  { id: 'git_status' },
  { id: 'make_build' },
];
const ISSUE11_TARGET = 'dunixfs-r3';

const boundOf = (row) => (row.min != null ? `≥ ${row.min}×` : row.max != null ? `≤ ${row.max}×` : '');
const meets = (row, ratio) => (row.min != null ? ratio >= row.min : ratio <= row.max);

/** { table, json }: each dunixfs column against bindfs on issue 11's rows; null without bindfs. */
function issue11Report(results, names) {
  if (!names.includes('bindfs') || !results.bindfs) return null;
  const dunix = names.filter((n) => n.startsWith('dunixfs-'));
  if (!dunix.length) return null;
  const short = (n) => n.replace(/^dunixfs-/, '');
  const judged = dunix.includes(ISSUE11_TARGET) ? ISSUE11_TARGET : null;
  const head = [
    'row',
    'unit',
    'bindfs',
    ...dunix.flatMap((n) => [short(n), `${short(n)}/bindfs`]),
    ...(judged ? [`target ${short(judged)}/bindfs`, `${short(judged)} meets it`] : []),
  ];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i < 2 ? '---' : '---:')).join('|')}|`];
  const json = {};
  for (const row of ISSUE11_ROWS) {
    const w = WORKLOADS.find((x) => x.id === row.id);
    const b = valueOf(results, 'bindfs', row.id);
    const ratio = (n) => {
      const v = valueOf(results, n, row.id);
      return v != null && b ? v / b : undefined;
    };
    const cells = dunix.flatMap((n) => {
      const r = ratio(n);
      return [fmt(valueOf(results, n, row.id), w.unit), r != null ? `${r.toFixed(2)}×` : '—'];
    });
    if (b == null && cells.every((c) => c === '—')) continue;
    const bound = boundOf(row);
    const r = judged ? ratio(judged) : undefined;
    const verdict = !bound || r == null ? '—' : meets(row, r) ? 'yes' : '**no**';
    lines.push(
      `| ${w.label} | ${w.lowerBetter ? `${w.unit} (lower is better)` : w.unit} | ${fmt(b, w.unit)} | ` +
        `${[...cells, ...(judged ? [bound || '—', verdict] : [])].join(' | ')} |`,
    );
    json[row.id] = {
      bindfs: b ?? null,
      ...(row.min != null ? { targetMin: row.min } : {}),
      ...(row.max != null ? { targetMax: row.max } : {}),
      ratioToBindfs: Object.fromEntries(dunix.map((n) => [n, ratio(n) ?? null])),
      ...(judged && bound && r != null ? { meets: meets(row, r) } : {}),
    };
  }
  lines.push(
    '',
    'Ratios are value / bindfs value in this run: for rates below 1× dunixfs is slower, for seconds ' +
      `and µs above 1× it is slower. Targets are issue 11's, for ${short(judged ?? ISSUE11_TARGET)}; ` +
      `the rm -rf tree is the tar tree (${results.bindfs?.rm_rf?.detail?.files ?? '—'} files), ` +
      'the issue measured 10,000.',
  );
  return { table: lines.join('\n'), json };
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

/** Rejects if promise has not settled within ms (run() kills the child; this bounds the rest). */
function withDeadline(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_r, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${what} did not finish within ${Math.round(ms / 1000)} s`)),
        ms,
      );
    }),
  ]).finally(() => clearTimeout(timer));
}

function checkTools(tools) {
  for (const [cmd, args] of tools) {
    if (!commandVersion(cmd, args)) die(`${cmd} is required`);
  }
}

function hostInfo() {
  return {
    kernel: os.release(),
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memMiB: Math.round(os.totalmem() / MiB),
    node: process.version,
    fio: commandVersion('fio'),
    bindfs: commandVersion('bindfs'),
    etcd: commandVersion(DUNIX_BINS.etcd),
    git: commandVersion('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD']),
    loadavgStart: os.loadavg(),
  };
}

/**
 * The order targets run in: one group at a time, set up together, torn down
 * together. The dunixfs volumes (one per --replicas value) form one group
 * whose workloads interleave, unless --sequential; every other target is a
 * group of its own.
 */
function runGroups(o) {
  const groups = [];
  for (const name of o.targets) {
    const prev = groups.at(-1);
    if (!o.sequential && name.startsWith('dunixfs-') && prev?.[0].startsWith('dunixfs-')) prev.push(name);
    else groups.push([name]);
  }
  return groups;
}

function setupFailed(m, err) {
  m.tj.status = 'failed';
  m.tj.notes.push(err.message);
  log(`${m.name}: FAILED: ${err.message}`);
  for (const [role, tail] of Object.entries(m.target.logTails?.(20) ?? {}))
    log(`${m.name}: ${role} log tail:\n${tail}`);
}

/** Stops the target and removes its scratch directory; notes go to tj. */
async function finishTarget(target, tj) {
  tj.notes.push(...target.teardown());
  active.delete(target);
  if (target.exited) {
    await Promise.race([target.exited, new Promise((r) => setTimeout(r, 2000))]);
    target.exited = undefined;
  }
  if (target.daemonStats) tj.daemonStats = target.daemonStats;
  const left = mountsUnder(join(scratch, target.name));
  if (left.length) tj.notes.push(`left mounted: ${left.map((m) => m.mountpoint).join(', ')}`);
  else rmSync(join(scratch, target.name), { recursive: true, force: true });
}

function installCleanup(o) {
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => onSignal(sig));
  process.on('exit', cleanupAll);
  scratch = mkdtempSync(join(o.workdir, 'dunix-bench-'));
  return { o, root: scratch, timeoutMs: o.timeoutS * 1000 };
}

/**
 * A copy of every workload run under bench/results/runs/, named by start
 * time and commit (-dirty when tracked files had changes), so runs can be
 * compared later (bench/compare.mjs); returns its path, or null if it could
 * not be written (the run's results are in --out anyway).
 */
function keepRun(json) {
  const dirty = spawnSync('git', ['-C', REPO, 'status', '--porcelain', '--untracked-files=no'], {
    encoding: 'utf8',
  });
  const commit = (json.host.git ?? 'nocommit') + (dirty.stdout?.trim() ? '-dirty' : '');
  const stamp = json.startedAt.replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  const file = join(RUNS_DIR, `${stamp}-${commit}.json`);
  try {
    mkdirSync(RUNS_DIR, { recursive: true });
    writeFileSync(file, `${JSON.stringify(json, null, 2)}\n`);
    return file;
  } catch (err) {
    log(`could not keep a copy of this run in ${RUNS_DIR}: ${err.message}`);
    return null;
  }
}

function writeJson(o, json) {
  mkdirSync(dirname(o.out), { recursive: true });
  writeFileSync(o.out, `${JSON.stringify(json, null, 2)}\n`);
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) die('must run as root (mounts FUSE file systems, drops caches)');
  if (o.rebalance) return rebalanceBench(o);
  addDunixfsTargets(o);
  if (o.memoryOnly) return memoryCheck(o);
  setRatios(o);
  checkTools([
    ['fio', ['--version']],
    ['python3', ['--version']],
    ['tar', ['--version']],
  ]);
  const unknown = o.targets.filter((n) => !TARGETS.some((t) => t.name === n));
  if (unknown.length)
    die(
      `unknown target(s) ${unknown.join(', ')}; known: ${TARGETS.map((t) => t.name).join(', ')} ` +
        '(dunixfs = one per --replicas value)',
    );
  if (new Set(o.targets).size !== o.targets.length) die(`--targets lists a target twice: ${o.targets}`);
  for (const t of TARGETS) {
    const why = t.required && o.targets.includes(t.name) ? t.available() : null;
    if (why) die(`${t.name}: ${why}`);
  }

  const rows = selectRows(o.rows);
  const noTools = rowsWithoutTools(rows);
  for (const [id, why] of Object.entries(noTools)) log(`skipping row ${id}: ${why}`);

  const ctx = installCleanup(o);
  ctx.rows = rows.filter((w) => !noTools[w.id]);
  const t0 = Date.now();
  ctx.loadStart = os.loadavg()[0];
  ctx.tarball = await buildTarball(ctx);
  const json = {
    startedAt: new Date().toISOString(),
    params: {
      sizeMiB: o.sizeMiB,
      files: o.files,
      tarFiles: o.tarFiles,
      rows: ctx.rows.map((w) => w.id),
      gitFiles: o.gitFiles,
      makeFiles: o.makeFiles,
      fsyncAppends: o.fsyncAppends,
      mixedFiles: o.mixedFiles,
      mixedOpens: o.mixedOpens,
      loopMaxS: o.loopMaxS,
      randReadSeconds: o.runtimeS,
      workloadTimeoutS: o.timeoutS,
      targets: o.targets,
      replicas: o.replicas,
      dunixfsBricks: DUNIX_BRICKS,
      dunixfsInterleaved: !o.sequential,
      replicaFloor: REPLICA_FLOOR,
      brickArgs: o.brickArgs,
      brickNodeArgs: o.brickNodeArgs,
      clientOptions: o.clientOptions,
    },
    host: hostInfo(),
    tarball: ctx.tarball.detail,
    glusterFloor: GLUSTER_FLOOR,
    workloads: Object.fromEntries(
      [...WORKLOADS, ...PROCESS_ROWS].map((w) => [
        w.id,
        { label: w.label, unit: w.unit, ...(w.lowerBetter ? { lowerBetter: true } : {}) },
      ]),
    ),
    targets: {},
    notes: Object.entries(noTools).map(([id, why]) => `row ${id} skipped: ${why}`),
  };
  log(`scratch ${scratch}; file ${o.sizeMiB} MiB; ${o.files} files; targets ${o.targets.join(',')}`);

  const results = {};
  const ran = [];
  const processes = [];
  for (const group of runGroups(o)) {
    // Set up every target of the group (a fresh cluster each for dunixfs).
    const live = [];
    for (const name of group) {
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
      if (target.replicas) tj.replicas = target.replicas;
      const r = {};
      results[name] = r;
      ran.push(name);
      const m = { name, target, tj, r, started: Date.now(), ok: false };
      live.push(m);
      try {
        active.add(target);
        const { dir, pid } = await withDeadline(target.setup(ctx), 120_000, `${name} setup`);
        tj.dir = dir;
        if (pid) tj.pid = pid;
        if (target.minInsync) tj.minInsync = target.minInsync;
        log(`${name}: ready at ${dir}${pid ? ` (pid ${pid})` : ''}`);
        m.t = { dir, file: join(dir, 'seq.dat'), filesDir: join(dir, 'files') };
        m.ok = true;
      } catch (err) {
        setupFailed(m, err);
        await finishTarget(target, tj);
      }
    }
    // Each workload on every target of the group before the next workload,
    // in alternating order (A B, B A, ...), so that a slow spell of the
    // machine falls on both sides of a ratio; a rightAfterPrevious workload
    // stays with the one before it.
    const units = [];
    for (const w of ctx.rows) {
      if (w.from) continue; // filled by the run of the row it names
      if (w.rightAfterPrevious && units.length) units.at(-1).push(w);
      else units.push([w]);
    }
    for (let i = 0; i < units.length; i++) {
      const order = i % 2 === 0 ? live : [...live].reverse();
      for (const [m, w] of order.flatMap((m) => units[i].map((w) => [m, w]))) {
        if (!m.ok) continue;
        const { name, target, r } = m;
        try {
          const before = target.sample();
          const load0 = os.loadavg()[0];
          const { rows: derived, ...result } = await withDeadline(
            w.run(ctx, m.t),
            ctx.timeoutMs + 60_000,
            `${name} ${w.id}`,
          );
          r[w.id] = result;
          for (const [id, v] of Object.entries(derived ?? {})) r[id] = v;
          const after = target.sample();
          const extra = { loadavg1: [load0, os.loadavg()[0]].map((x) => Number(x.toFixed(2))) };
          if (before && after) {
            const cpu = after.cpuUserS + after.cpuSysS - before.cpuUserS - before.cpuSysS;
            extra.daemonCpuS = Number(cpu.toFixed(2));
          }
          r[w.id].detail = { ...r[w.id].detail, ...extra };
          log(`${name}: ${w.id} = ${fmt(r[w.id].value, w.unit)} ${w.unit}`);
          for (const d of ctx.rows)
            if (d.from === w.id && r[d.id]) log(`${name}: ${d.id} = ${fmt(r[d.id].value, d.unit)} ${d.unit}`);
        } catch (err) {
          const logs = target.logTails?.(20);
          r[w.id] = { error: err.message, ...(logs ? { logs } : {}) };
          for (const d of ctx.rows) if (d.from === w.id) r[d.id] = { error: err.message };
          log(`${name}: ${w.id} FAILED: ${err.message}`);
          for (const [role, tail] of Object.entries(logs ?? {})) log(`${name}: ${role} log tail:\n${tail}`);
        }
      }
    }
    for (const m of live) {
      const { name, target, tj, r } = m;
      if (m.ok) {
        try {
          const procs = target.sampleAll();
          Object.assign(r, processRows(procs));
          if (procs.length) tj.processes = procs;
          processes.push(...procs.map((p) => ({ target: name, ...p })));
        } finally {
          await finishTarget(target, tj);
        }
      }
      tj.seconds = (Date.now() - m.started) / 1000;
      tj.results = r;
      log(`${name}: done in ${tj.seconds.toFixed(0)} s`);
    }
  }

  json.ratios = {};
  for (const [a, b] of RATIOS) {
    if (!results[a] || (b !== 'floor' && !results[b])) continue;
    const m = {};
    for (const w of [...WORKLOADS, ...PROCESS_ROWS]) {
      const x = valueOf(results, a, w.id);
      const y = valueOf(results, b, w.id);
      if (x != null && y) m[w.id] = x / y;
    }
    json.ratios[`${a}/${b}`] = m;
  }
  // Replication target (rN vs the baseline, as rates: times inverted).
  const { base, others } = dunixfsNames(o);
  json.replicaCheck = {};
  for (const n of others) {
    if (!results[base] || !results[n]) continue;
    const m = {};
    for (const w of WORKLOADS) {
      const r = speedRatio(results, n, base, w);
      if (r != null) m[w.id] = { rateRatio: r, floor: replicaFloor(w.id), ok: r >= replicaFloor(w.id) };
    }
    json.replicaCheck[`${n}/${base}`] = m;
    const missed = Object.entries(m).filter(([, v]) => !v.ok);
    json.notes.push(
      missed.length
        ? `${n} below the replication target vs ${base} on: ` +
            missed.map(([id, v]) => `${id} ${v.rateRatio.toFixed(2)}× (< ${v.floor}×)`).join(', ')
        : `${n} meets the replication target vs ${base} on every workload row`,
    );
  }
  json.coldCache = coldOk;
  json.host.loadavgEnd = os.loadavg();
  json.seconds = (Date.now() - t0) / 1000;
  json.table = markdown(results, ran, ctx, processes);
  const i11 = issue11Report(results, ran);
  if (i11) {
    json.issue11 = i11.json;
    json.table += `\n\nIssue 11 rows, each dunixfs column as a ratio to bindfs:\n\n${i11.table}`;
  }

  cleanupAll();
  writeJson(o, json);
  const kept = keepRun(json);
  console.log(json.table);
  for (const n of json.notes) console.log(`\nNote: ${n}`);
  log(`done in ${json.seconds.toFixed(0)} s; results in ${o.out}${kept ? ` and ${kept}` : ''}`);
}

// ---------------------------------------------------------------- memory check

/**
 * Creates n files of 200 B spread over dirs directories with W parallel
 * workers (one process each, so the client sees concurrent requests), timed.
 */
const PY_MANY_FILES = `
import json, os, sys, time
from multiprocessing import Pool
root, n, dirs, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
body = b'x' * 200
def work(k):
    d = os.path.join(root, 'd%03d' % k)
    os.mkdir(d)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for i in range(k, n, dirs):
        fd = os.open(os.path.join(d, 'f%07d' % i), flags, 0o644)
        os.write(fd, body)
        os.close(fd)
os.mkdir(root)
t = time.perf_counter()
with Pool(workers) as p:
    p.map(work, range(dirs), chunksize=1)
print(json.dumps({'files': n, 'dirs': dirs, 'workers': workers, 'seconds': time.perf_counter() - t}))
`;

/**
 * --memory-only: for each --replicas value, on a fresh dunixfs cluster,
 * create --memory-files files, then ls -lR them once (cold), and report every
 * process's peak RSS against --memory-limit-mib.
 */
async function memoryCheck(o) {
  checkTools([
    ['python3', ['--version']],
    ['ls', ['--version']],
  ]);
  const targets = o.replicas.map((n) => TARGETS.find((t) => t.name === `dunixfs-r${n}`));
  const why = targets[0].available();
  if (why) die(`dunixfs: ${why}`);
  const ctx = installCleanup(o);
  const t0 = Date.now();
  const DIRS = 100;
  const WORKERS = 8;
  const json = {
    startedAt: new Date().toISOString(),
    params: {
      memoryFiles: o.memoryFiles,
      dirs: DIRS,
      workers: WORKERS,
      limitMiB: o.memoryLimitMiB,
      replicas: o.replicas,
      dunixfsBricks: DUNIX_BRICKS,
      brickArgs: o.brickArgs,
      brickNodeArgs: o.brickNodeArgs,
      clientOptions: o.clientOptions,
    },
    host: hostInfo(),
    runs: {},
    notes: [],
  };
  const tables = [];
  for (const target of targets) {
    const run1 = await memoryRun(o, ctx, target, DIRS, WORKERS);
    json.runs[target.name] = run1.json;
    tables.push(memoryTable(o, target, run1.phases, run1.json.target));
    const over = (run1.phases.at(-1)?.procs ?? []).filter(
      (p) => p.role !== 'etcd' && p.vmHWMKiB / 1024 >= o.memoryLimitMiB,
    );
    json.notes.push(
      run1.json.target.status !== 'ok'
        ? `${target.name}: FAILED`
        : over.length
          ? `${target.name}: over ${o.memoryLimitMiB} MiB: ${over.map((p) => p.role).join(', ')}`
          : `${target.name}: every brick and the client stayed under ${o.memoryLimitMiB} MiB`,
    );
  }
  json.host.loadavgEnd = os.loadavg();
  json.seconds = (Date.now() - t0) / 1000;
  json.table = tables.join('\n\n');
  cleanupAll();
  writeJson(o, json);
  console.log(json.table);
  for (const n of json.notes) console.log(`\nNote: ${n}`);
  log(`done in ${json.seconds.toFixed(0)} s; results in ${o.out}`);
}

/** One memory check on target (a fresh cluster): { phases, json }. */
async function memoryRun(o, ctx, target, DIRS, WORKERS) {
  const t0 = Date.now();
  const json = { replicas: target.replicas, phases: {} };
  const tj = { status: 'ok', notes: [] };
  json.target = tj;
  const phases = [];
  const name = target.name;
  try {
    active.add(target);
    const { dir } = await withDeadline(target.setup(ctx), 120_000, `${name} setup`);
    if (target.minInsync) json.minInsync = target.minInsync;
    log(`${name}: ready at ${dir}; creating ${o.memoryFiles} files in ${DIRS} directories`);
    const snap = (phase, seconds, extra = {}) => {
      // Only here: the memory lines are read from each daemon's whole log (workload rows sample often).
      const procs = target.sampleAll().map((p) => {
        const heap = heapPeaks(target.procs.find((q) => q.pid === p.pid)?.logFile);
        return heap ? { ...p, heapPeaksMiB: heap } : p;
      });
      phases.push({ phase, seconds, procs, ...extra });
      json.phases[phase] = { seconds, ...extra, processes: procs };
      log(
        `${name} ${phase}: ${seconds.toFixed(1)} s; ` +
          procs
            .map(
              (p) =>
                `${p.role} VmHWM ${(p.vmHWMKiB / 1024).toFixed(0)} MiB` +
                (p.heapPeaksMiB
                  ? ` (peaks: heap used ${p.heapPeaksMiB.heapUsedMiB}, heap ${p.heapPeaksMiB.heapTotalMiB}, ` +
                    `external ${p.heapPeaksMiB.externalMiB}, array buffers ${p.heapPeaksMiB.arrayBuffersMiB})`
                  : ''),
            )
            .join(', '),
      );
    };
    snap('mounted', 0);
    const tree = join(dir, 'many');
    // Budget: 20 ms per file plus 10 minutes, whatever --timeout says.
    const timeoutMs = o.memoryFiles * 20 + 600_000;
    try {
      const r = await runOk(
        'python3',
        ['-c', PY_MANY_FILES, tree, String(o.memoryFiles), String(DIRS), String(WORKERS)],
        { timeoutMs },
      );
      const c = JSON.parse(r.stdout.trim().split('\n').pop());
      snap('create', c.seconds, { filesPerS: c.files / c.seconds });
      await dropCaches(ctx);
      const ls = await runOk('ls', ['-lR', tree], { timeoutMs, ignoreStdout: true });
      snap('ls -lR (cold)', ls.ms / 1000, { entriesPerS: o.memoryFiles / (ls.ms / 1000) });
    } catch (err) {
      tj.status = 'failed';
      tj.notes.push(err.message);
      tj.logs = target.logTails(20);
      log(`${name}: FAILED: ${err.message}`);
      for (const [role, tail] of Object.entries(tj.logs)) log(`${role} log tail:\n${tail}`);
      snap('after failure', (Date.now() - t0) / 1000);
    }
  } catch (err) {
    tj.status = 'failed';
    tj.notes.push(err.message);
    log(`${name}: FAILED: ${err.message}`);
    for (const [role, tail] of Object.entries(target.logTails(20))) log(`${role} log tail:\n${tail}`);
  } finally {
    await finishTarget(target, tj);
  }
  json.seconds = (Date.now() - t0) / 1000;
  return { phases, json };
}

function memoryTable(o, target, phases, tj) {
  const last = phases.at(-1)?.procs ?? [];
  const lines = [
    `**replicas ${target.replicas}**`,
    '',
    `| process | peak RSS (VmHWM) MiB | RSS at the end (VmRSS) MiB | limit MiB | within limit |`,
    '|---|---:|---:|---:|---|',
  ];
  for (const p of last.filter((x) => x.role !== 'etcd')) {
    const peak = p.vmHWMKiB / 1024;
    lines.push(
      `| ${p.role} (pid ${p.pid}) | ${fmt(peak, 'MiB')} | ${fmt(p.vmRSSKiB / 1024, 'MiB')} | ` +
        `${o.memoryLimitMiB} | ${peak < o.memoryLimitMiB ? 'yes' : '**NO**'} |`,
    );
  }
  lines.push('', '| phase | seconds | rate | ' + last.map((p) => `${p.role} VmHWM MiB`).join(' | ') + ' |');
  lines.push(`|---|---:|---:|${last.map(() => '---:').join('|')}|`);
  for (const ph of phases) {
    const rate = ph.filesPerS
      ? `${fmt(ph.filesPerS)} files/s`
      : ph.entriesPerS
        ? `${fmt(ph.entriesPerS)} entries/s`
        : '';
    const cells = last.map((p) => {
      const q = ph.procs.find((x) => x.role === p.role);
      return q ? fmt(q.vmHWMKiB / 1024, 'MiB') : '—';
    });
    lines.push(`| ${ph.phase} | ${ph.seconds.toFixed(1)} | ${rate} | ${cells.join(' | ')} |`);
  }
  lines.push(
    '',
    `${o.memoryFiles} files of 200 B in 100 directories on a fresh dunixfs volume (1 client, ` +
      `${DUNIX_BRICKS} bricks, replicas ${target.replicas}), created by 8 parallel workers, then one ` +
      'ls -lR after drop_caches. ' +
      (tj.status === 'ok' ? '' : `FAILED: ${tj.notes.join('; ')}`),
  );
  return lines.join('\n');
}

// ---------------------------------------------------------------- rebalance check

/** Bricks of the rebalance check's cluster: the volume is created on all but the last. */
const REBALANCE_BRICKS = 4;
const REBALANCE_REPLICAS = 3;
/** Size of each file the rebalance check fills the volume with. */
const REBALANCE_FILE_MIB = 4;
/** Seconds of the fio sequential write without the rebalance, and at most during it. */
const REBALANCE_FIO_S = 20;
/** The file those fio runs write, looping over it (a fresh file each run). */
const REBALANCE_FIO_FILE_MIB = 256;
/** The record writer: a 64-byte record every this many ms, each fsynced. */
const WRITER_PERIOD_MS = 10;
/** Gaps between two of the writer's fsyncs at least this long are listed one by one. */
const WRITER_GAP_MS = 50;
/** The throttle `dunixctl volume rebalance start` uses when not told otherwise. */
const DUNIXCTL_THROTTLE = { maxMiBPerS: 64, maxConcurrent: 4 };
/** PG replicas per brick after the rebalance: within this fraction of an even share. */
const BALANCE_TOLERANCE = 0.1;

const delay = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Appends a 64-byte record and fsyncs it every period, until SIGTERM. On
 * stdout, one JSON line per event: the start, each gap of at least gapMin
 * between two successful fsyncs ({gap: [from, to]}, epoch seconds), each
 * error, a heartbeat every second (records so far, last acknowledged one,
 * longest gap since the last beat), and the end.
 */
const PY_RECORD_WRITER = `
import json, os, signal, sys, time
path, period, gap_min = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
stop = False
def on_signal(_s, _f):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)
def emit(**o):
    sys.stdout.write(json.dumps(o) + '\\n')
    sys.stdout.flush()
fd = None
acked = errors = 0
last = time.time()
worst = None
beat = last + 1
emit(start=last)
while not stop:
    try:
        if fd is None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        os.write(fd, ('%012d %.6f' % (acked, time.time())).ljust(63).encode() + b'\\n')
        os.fsync(fd)
        now = time.time()
        acked += 1
        if now - last >= gap_min:
            emit(gap=[last, now])
        if worst is None or now - last > worst[1] - worst[0]:
            worst = [last, now]
        last = now
    except OSError as e:
        errors += 1
        emit(error=[time.time(), e.errno, e.strerror or str(e)])
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
            fd = None
    now = time.time()
    if now >= beat:
        emit(beat=now, acked=acked, last=last, worst=worst)
        worst = None
        beat = now + 1
    time.sleep(period)
emit(end=time.time(), acked=acked, errors=errors, last=last, worst=worst)
`;

/**
 * Starts PY_RECORD_WRITER on file; returns its running account ({ pauses,
 * maxima, errors, acked, lastAckMs, ... }) and stop(), which resolves once it
 * has exited (SIGTERM; SIGKILL after 10 s, the blocked time then counting as
 * a pause). It is in `running`, so cleanupAll kills it on any exit.
 */
function startRecordWriter(file) {
  const child = spawn(
    'python3',
    ['-c', PY_RECORD_WRITER, file, String(WRITER_PERIOD_MS / 1000), String(WRITER_GAP_MS / 1000)],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  running.add(child);
  const w = {
    pid: child.pid,
    startedAtMs: null,
    /** [fromMs, toMs] of every gap of at least WRITER_GAP_MS. */
    pauses: [],
    /** The longest gap of each second, [fromMs, toMs]. */
    maxima: [],
    errorCount: 0,
    errors: [],
    acked: 0,
    lastAckMs: Date.now(),
    ended: false,
    killed: false,
    stderr: '',
  };
  const ms = (x) => x * 1000;
  let buf = '';
  child.stdout.on('data', (d) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      let e;
      try {
        e = JSON.parse(line);
      } catch {
        continue;
      }
      if (e.start) {
        w.startedAtMs = ms(e.start);
        w.lastAckMs = ms(e.start);
      }
      if (e.gap) w.pauses.push(e.gap.map(ms));
      if (e.error) {
        w.errorCount++;
        if (w.errors.length < 20)
          w.errors.push({ atMs: ms(e.error[0]), errno: e.error[1], message: e.error[2] });
      }
      if (e.worst) w.maxima.push(e.worst.map(ms));
      if (e.last) w.lastAckMs = ms(e.last);
      if (e.acked != null) w.acked = e.acked;
      if (e.end) w.ended = true;
    }
  });
  child.stderr.on('data', (d) => {
    w.stderr = (w.stderr + d).slice(-4000);
  });
  child.on('error', () => {});
  const closed = new Promise((r) =>
    child.once('close', () => {
      running.delete(child);
      r(true);
    }),
  );
  w.stop = async () => {
    signalPid(child.pid, 'SIGTERM');
    if (await Promise.race([closed, delay(10_000)])) return w;
    // Blocked in a write or fsync the file system never answered.
    w.killed = true;
    w.pauses.push([w.lastAckMs, Date.now()]);
    signalPid(child.pid, 'SIGKILL');
    await Promise.race([closed, delay(5000)]);
    return w;
  };
  return w;
}

/** The writer's longest pause (ms) overlapping [fromMs, toMs], and the pauses of at least WRITER_GAP_MS there. */
function writerWindow(w, fromMs, toMs) {
  const inside = ([a, b]) => b >= fromMs && a <= toMs;
  const all = [...w.pauses, ...w.maxima].filter(inside);
  const worst = all.reduce((m, [a, b]) => Math.max(m, b - a), 0);
  const pauses = w.pauses.filter(inside);
  return {
    worstPauseMs: all.length ? Math.round(worst) : null,
    pausesOver50Ms: pauses.length,
    errors: w.errors.filter((e) => e.atMs >= fromMs && e.atMs <= toMs).length,
  };
}

/** Jiffies of all CPUs since boot: { idle (incl. iowait), total }. */
function hostCpuTimes() {
  const f = readFileSync('/proc/stat', 'latin1').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
  return { idle: f[3] + (f[4] ?? 0), total: f.reduce((a, b) => a + b, 0) };
}

/** A point to measure CPU from: the host's, every cluster process's, the bench's own. */
function cpuMark(target) {
  return { host: hostCpuTimes(), procs: target.sampleAll(), bench: process.cpuUsage(), ms: Date.now() };
}

/**
 * CPU between two marks: how busy the host was (% of all CPUs), CPU
 * seconds of each cluster process, of fio (from its own report, when
 * given), of the bench, and of everything else on the host (other users'
 * work included: the machine is shared).
 */
function cpuWindow(a, b, fioDetail) {
  const cpuOf = (list, role) => {
    const p = list.find((x) => x.role === role);
    return p ? p.cpuUserS + p.cpuSysS : 0;
  };
  const perProcess = Object.fromEntries(
    b.procs.map((p) => [p.role, Number((cpuOf(b.procs, p.role) - cpuOf(a.procs, p.role)).toFixed(2))]),
  );
  const dTotal = b.host.total - a.host.total;
  const busyS = (dTotal - (b.host.idle - a.host.idle)) / CLK_TCK;
  const clusterS = Object.values(perProcess).reduce((n, x) => n + x, 0);
  const benchS = (b.bench.user + b.bench.system - a.bench.user - a.bench.system) / 1e6;
  const fioS = fioDetail?.cpuS ?? 0;
  const round = (x) => Number(x.toFixed(2));
  return {
    seconds: round((b.ms - a.ms) / 1000),
    hostBusyPct: dTotal > 0 ? round((busyS / (dTotal / CLK_TCK)) * 100) : null,
    hostBusyCpuS: round(busyS),
    clusterCpuS: round(clusterS),
    fioCpuS: round(fioS),
    benchCpuS: round(benchS),
    otherCpuS: round(Math.max(0, busyS - clusterS - fioS - benchS)),
    perProcess,
  };
}

/** PG replicas per brick id in a placement. */
function replicasPerBrick(placement) {
  const out = new Map();
  for (const a of placement) for (const b of a.bricks) out.set(b, (out.get(b) ?? 0) + 1);
  return out;
}

const sameSet = (a, b) => a.length === b.length && a.every((x) => b.includes(x));

/** Bytes under dir (du -sb), or null. */
async function diskBytes(dir, apparent = false) {
  const r = await run('du', ['-sb', ...(apparent ? ['--apparent-size'] : []), dir], { timeoutMs: 120_000 });
  const n = Number(r.stdout.split(/\s/)[0]);
  return r.code === 0 && Number.isFinite(n) ? n : null;
}

/** The fio sequential write of the rebalance check: REBALANCE_FIO_S s of 1 MiB blocks on a fresh file, fsync at the end. */
function rebalanceFioArgs(file) {
  return fioArgs('seqwrite', file, [
    '--rw=write',
    '--bs=1M',
    `--size=${REBALANCE_FIO_FILE_MIB}M`,
    '--time_based',
    `--runtime=${REBALANCE_FIO_S}`,
    '--end_fsync=1',
  ]);
}

/**
 * Runs the fio job of rebalanceFioArgs; stopEarly() (if called while it
 * runs) interrupts it with SIGINT, then the file is fsynced here and the
 * rate is its bytes over fio's run time plus that fsync (what end_fsync
 * would have added). Resolves { value: MiB/s, detail } or { error }.
 */
function fioWrite(ctx, file) {
  let child;
  let interrupted = false;
  const done = (async () => {
    const r = await run('fio', rebalanceFioArgs(file), {
      timeoutMs: (REBALANCE_FIO_S + 600) * 1000,
      onChild: (c) => {
        child = c;
      },
    });
    const start = r.stdout.indexOf('{');
    let job;
    try {
      job = JSON.parse(r.stdout.slice(start)).jobs[0];
    } catch {
      job = undefined;
    }
    if (!job || (r.code !== 0 && !interrupted)) {
      const tail = (r.stderr || r.stdout).trim().split('\n').slice(-5).join('\n');
      return { error: `fio exited ${r.code ?? r.signal}: ${tail}` };
    }
    const d = fioSide(job.write, r.ms);
    d.cpuS = (((job.usr_cpu ?? 0) + (job.sys_cpu ?? 0)) / 100) * ((job.elapsed ?? 0) || d.runtimeMs / 1000);
    if (job.error) d.fioError = job.error;
    if (!interrupted) return { value: d.bwBytesPerS / MiB, detail: d };
    const s = await run(
      'python3',
      ['-c', 'import os, sys\nfd = os.open(sys.argv[1], os.O_WRONLY)\nos.fsync(fd)', file],
      { timeoutMs: 600_000 },
    );
    if (s.code !== 0)
      return { error: `fsync after the interrupted fio failed: ${s.stderr.trim()}`, detail: d };
    const seconds = (d.runtimeMs + s.ms) / 1000;
    return {
      value: d.ioBytes / MiB / seconds,
      detail: { ...d, interrupted: true, fsyncAfterMs: Math.round(s.ms), seconds },
    };
  })();
  return {
    done,
    stopEarly() {
      if (child && child.exitCode === null && child.signalCode === null) {
        interrupted = true;
        signalPid(child.pid, 'SIGINT');
      }
    },
  };
}

/** The coordinator API of packages/coord (built), connected to the bench's etcd; warnings go to our log. */
async function connectCoordinator(etcdUrl) {
  const { EtcdCoordinator } = await import(
    pathToFileURL(join(REPO, 'packages/coord/dist/src/index.js')).href
  );
  const say = (level) => (msg, fields) =>
    log(`coordinator ${level}: ${msg} ${fields ? JSON.stringify(fields) : ''}`);
  const quiet = {
    debug() {},
    info() {},
    warn: say('warn'),
    error: say('error'),
    enabled: (level) => level === 'warn' || level === 'error',
  };
  const coord = new EtcdCoordinator({ endpoints: [etcdUrl], log: quiet });
  await coord.start();
  return coord;
}

/** Whether this build of dunixctl has `brick add` and `volume rebalance start`. */
async function dunixctlCanRebalance() {
  for (const args of [
    ['brick', 'add', '--help'],
    ['volume', 'rebalance', 'start', '--help'],
  ]) {
    const r = await run(process.execPath, [DUNIX_BINS.dunixctl, ...args], { timeoutMs: 20_000 });
    if (r.code !== 0) return false;
  }
  return true;
}

/**
 * --rebalance: on a fresh cluster of 4 bricks whose volume (replicas 3,
 * --pgs) was created on the first 3, fill --rebalance-mib, measure the
 * disk's copy rate and the client's sequential write, then add the 4th
 * brick and run a rebalance (dunixctl, or the coordinator API when this
 * dunixctl has no such commands) while fio and a record writer run on the
 * mount; reports, never asserts.
 */
async function rebalanceBench(o) {
  checkTools([
    ['fio', ['--version']],
    ['python3', ['--version']],
    ['cp', ['--version']],
    ['du', ['--version']],
  ]);
  const target = dunixfsTarget(REBALANCE_REPLICAS, {
    pgs: o.pgs,
    bricks: REBALANCE_BRICKS,
    spareBricks: 1,
    name: 'dunixfs-rebalance',
  });
  const why = target.available();
  if (why) die(`dunixfs: ${why}`);
  const ctx = installCleanup(o);
  const t0 = Date.now();
  ctx.loadStart = os.loadavg()[0];
  const VOLUME = target.volumeName;
  const json = {
    startedAt: new Date().toISOString(),
    params: {
      rebalanceMiB: o.rebalanceMiB,
      fileMiB: REBALANCE_FILE_MIB,
      pgs: o.pgs,
      replicas: REBALANCE_REPLICAS,
      bricksBefore: REBALANCE_BRICKS - 1,
      bricksAfter: REBALANCE_BRICKS,
      fioSeconds: REBALANCE_FIO_S,
      fioFileMiB: REBALANCE_FIO_FILE_MIB,
      writerPeriodMs: WRITER_PERIOD_MS,
      balanceTolerance: BALANCE_TOLERANCE,
    },
    host: hostInfo(),
    status: 'ok',
    results: {},
    notes: [],
  };
  const res = json.results;
  const tj = { status: 'ok', notes: [] };
  json.target = tj;
  let coord;
  let writer;
  let fioDuring;
  try {
    active.add(target);
    const { dir: mnt } = await withDeadline(target.setup(ctx), 120_000, 'dunixfs setup');
    json.minInsync = target.minInsync;
    log(`volume ${VOLUME} (${o.pgs} PGs, replicas ${REBALANCE_REPLICAS}) on 3 bricks, mounted at ${mnt}`);
    coord = await connectCoordinator(target.etcdUrl);

    // 1. The data the rebalance will move.
    const files = Math.max(1, Math.round(o.rebalanceMiB / REBALANCE_FILE_MIB));
    await runOk('mkdir', [join(mnt, 'data')], { timeoutMs: 60_000 });
    log(`writing ${files} files of ${REBALANCE_FILE_MIB} MiB`);
    const fill = await fio(
      ctx,
      fioArgs('fill', '', [
        `--directory=${join(mnt, 'data')}`,
        '--filename_format=f$filenum',
        `--nrfiles=${files}`,
        `--filesize=${REBALANCE_FILE_MIB}M`,
        `--size=${files * REBALANCE_FILE_MIB}M`,
        '--file_service_type=sequential',
        '--rw=write',
        '--bs=1M',
        '--fsync_on_close=1',
      ]).filter((a) => a !== '--filename='),
    );
    const fillSync = await runOk('sync', ['-f', mnt], { timeoutMs: ctx.timeoutMs });
    const fillS = (fill.job.write.runtime + fillSync.ms) / 1000;
    // The client runs overwrite this file, so the volume holds the same data before and after.
    const seqFile = join(mnt, 'seq.dat');
    await fio(
      ctx,
      fioArgs('seqfile', seqFile, [
        '--rw=write',
        '--bs=1M',
        `--size=${REBALANCE_FIO_FILE_MIB}M`,
        '--end_fsync=1',
      ]),
    );
    res.fill = {
      files,
      mib: files * REBALANCE_FILE_MIB,
      seconds: fillS,
      mibPerS: (files * REBALANCE_FILE_MIB) / fillS,
    };
    log(`filled ${res.fill.mib} MiB at ${fmt(res.fill.mibPerS)} MiB/s`);

    // 2. The disk's own copy rate, same size, on the scratch directory.
    const cpDir = join(ctx.root, 'diskcopy');
    mkdirSync(cpDir, { recursive: true });
    const src = join(cpDir, 'src.dat');
    const mib = files * REBALANCE_FILE_MIB;
    await fio(ctx, fioArgs('cpsrc', src, ['--rw=write', '--bs=1M', `--size=${mib}M`, '--end_fsync=1']));
    const cold = await dropCaches(ctx);
    const cp = await runOk('cp', [src, join(cpDir, 'dst.dat')], { timeoutMs: ctx.timeoutMs });
    const cpSync = await runOk('sync', ['-f', cpDir], { timeoutMs: ctx.timeoutMs });
    rmSync(cpDir, { recursive: true, force: true });
    const cpS = (cp.ms + cpSync.ms) / 1000;
    res.diskCopy = { mib, cpSeconds: cp.ms / 1000, syncSeconds: cpSync.ms / 1000, mibPerS: mib / cpS, cold };
    log(`disk copy: ${mib} MiB in ${cpS.toFixed(1)} s = ${fmt(res.diskCopy.mibPerS)} MiB/s`);

    // 3. The record writer, from now to the end; then the client's rate without a rebalance.
    writer = startRecordWriter(join(mnt, 'records.log'));
    await delay(2000);
    await dropCaches(ctx);
    log(`client fio sequential write, ${REBALANCE_FIO_S} s, no rebalance`);
    const b0 = cpuMark(target);
    res.fioBaseline = await fioWrite(ctx, seqFile).done;
    res.fioBaseline.window = [b0.ms, Date.now()];
    res.fioBaseline.cpu = cpuWindow(b0, cpuMark(target), res.fioBaseline.detail);
    if (res.fioBaseline.error) throw new Error(`fio without rebalance: ${res.fioBaseline.error}`);
    log(`client without rebalance: ${fmt(res.fioBaseline.value)} MiB/s`);

    // 4. The 4th brick: registered, not yet holding anything.
    const spare = await target.startSpareBrick();
    await waitUntil(
      `${spare.role} (${spare.id}) to be a live member of ${VOLUME}`,
      30_000,
      async () => (await coord.getSnapshot(VOLUME)).bricks.some((b) => b.id === spare.id && b.alive),
      target.procs,
    );
    const bricks = target.procs.filter((p) => p.role.startsWith('brick'));
    const roleOf = new Map(bricks.map((b) => [b.id, b.role]));
    const before = await coord.getSnapshot(VOLUME);
    const dataBytes = await diskBytes(mnt, true);
    const diskBefore = {};
    for (const b of bricks) diskBefore[b.role] = await diskBytes(b.dataDir);
    await dropCaches(ctx);
    const r0 = cpuMark(target);

    // 5. Add it and start the rebalance.
    const viaCli = await dunixctlCanRebalance();
    res.started = { via: viaCli ? 'dunixctl' : 'coordinator API' };
    const throttle = {
      maxMiBPerS: o.rebalanceMaxMiBPerS ?? DUNIXCTL_THROTTLE.maxMiBPerS,
      maxConcurrent: o.rebalanceMaxConcurrent ?? DUNIXCTL_THROTTLE.maxConcurrent,
    };
    const defaultThrottle = o.rebalanceMaxMiBPerS == null && o.rebalanceMaxConcurrent == null;
    const ctl = (...args) =>
      runOk(process.execPath, [DUNIX_BINS.dunixctl, '--etcd', target.etcdUrl, ...args], {
        timeoutMs: 30_000,
      });
    let startMs;
    if (viaCli) {
      await ctl('brick', 'add', VOLUME, spare.id);
      const flags = [
        ...(o.rebalanceMaxMiBPerS != null ? ['--max-mib-per-s', String(o.rebalanceMaxMiBPerS)] : []),
        ...(o.rebalanceMaxConcurrent != null ? ['--max-concurrent', String(o.rebalanceMaxConcurrent)] : []),
      ];
      startMs = Date.now();
      const r = await ctl('--json', 'volume', 'rebalance', 'start', VOLUME, ...flags);
      const out = JSON.parse(r.stdout);
      if (!out.started) throw new Error(`dunixctl volume rebalance start: nothing started:\n${r.stdout}`);
      res.started.pgsDiffering = out.pgsDiffering;
    } else {
      // The weight it registered with (its capacity in GiB), like the bricks the volume started with.
      const weight = (await coord.listBricks(VOLUME)).find((b) => b.id === spare.id).weight;
      await coord.setBrickAdmin(VOLUME, spare.id, { state: 'in', weight, updatedAtMs: Date.now() });
      startMs = Date.now();
      await coord.updateRebalance(VOLUME, () => ({
        id: `bench-${startMs.toString(36)}`,
        state: 'running',
        ...throttle,
        startedAtMs: startMs,
        updatedAtMs: startMs,
        pgsTotal: 0,
        pgsDone: 0,
        bytesMoved: 0,
      }));
    }
    fioDuring = fioWrite(ctx, seqFile);
    const duringStart = Date.now();
    let job = (await coord.getSnapshot(VOLUME)).rebalance;
    if (!job) throw new Error('no rebalance record after the start');
    res.throttle = {
      maxMiBPerS: job.maxMiBPerS,
      maxConcurrent: job.maxConcurrent,
      default: defaultThrottle,
    };
    log(
      `rebalance ${job.id} started via ${res.started.via}; throttle ${job.maxMiBPerS} MiB/s per brick, ` +
        `${job.maxConcurrent} PGs at once${defaultThrottle ? ' (default)' : ''}`,
    );

    // 6. Until it is done: progress, and the catch-ups the bricks report.
    const catchUps = new Map();
    const timeline = [];
    let peakRate = 0;
    let lastLog = Date.now();
    let lastSample = 0;
    let fioStopped = false;
    let snap;
    await waitUntil(
      'the rebalance to finish',
      ctx.timeoutMs,
      async () => {
        const [s, reports] = await Promise.all([coord.getSnapshot(VOLUME), coord.listRecovery(VOLUME)]);
        snap = s;
        job = s.rebalance ?? job;
        let rate = 0;
        for (const rep of reports) {
          if (rep.mode === 'backfill') rate += rep.ratePerS;
          const key = `${rep.pg}/${rep.brick}/${rep.startedAtMs}`;
          const c = catchUps.get(key) ?? { mode: rep.mode, bytes: 0, ops: 0 };
          c.bytes = Math.max(c.bytes, rep.bytesLeft);
          c.ops = Math.max(c.ops, rep.opsLeft);
          catchUps.set(key, c);
        }
        peakRate = Math.max(peakRate, rate);
        const now = Date.now();
        if (now - lastSample >= 1000) {
          lastSample = now;
          timeline.push({
            s: Number(((now - startMs) / 1000).toFixed(1)),
            pgsDone: job.pgsDone,
            pgsTotal: job.pgsTotal,
            moving: s.placement.filter((a) => a.bricks.length > REBALANCE_REPLICAS).length,
            backfillMiBPerS: Number((rate / MiB).toFixed(1)),
          });
        }
        if (now - lastLog >= 5000) {
          lastLog = now;
          const moving = s.placement.filter((a) => a.bricks.length > REBALANCE_REPLICAS).length;
          log(`rebalance: ${job.pgsDone}/${job.pgsTotal} PGs done, ${moving} moving`);
        }
        const finished = job.state === 'done' || job.state === 'stopped';
        if (finished && !fioStopped) {
          fioStopped = true;
          fioDuring.stopEarly();
        }
        return finished;
      },
      target.procs,
      250,
    );
    const r1 = cpuMark(target);
    const doneMs = r1.ms;
    res.fioDuring = await fioDuring.done;
    fioDuring = undefined;
    res.fioDuring.window = [duringStart, Date.now()];
    if (res.fioDuring.error) log(`fio during the rebalance FAILED: ${res.fioDuring.error}`);
    else log(`client during rebalance: ${fmt(res.fioDuring.value)} MiB/s`);
    await waitUntil(
      `every PG to have ${REBALANCE_REPLICAS} in-sync copies`,
      60_000,
      async () => {
        snap = await coord.getSnapshot(VOLUME);
        return snap.placement.every(
          (a) => a.bricks.length === REBALANCE_REPLICAS && a.isr.length === REBALANCE_REPLICAS,
        );
      },
      target.procs,
    );
    const settledMs = Date.now();
    await delay(2000);
    await writer.stop();

    // 7. What moved, how fast, how even.
    const after = snap;
    job = after.rebalance ?? job;
    const beforeOf = new Map(before.placement.map((a) => [a.pg, a.bricks]));
    let pgsMoved = 0;
    let replicasMoved = 0;
    for (const a of after.placement) {
      const was = beforeOf.get(a.pg) ?? [];
      if (!sameSet(was, a.bricks)) pgsMoved++;
      replicasMoved += a.bricks.filter((b) => !was.includes(b)).length;
    }
    const wallMs = (job.finishedAtMs ?? doneMs) - job.startedAtMs;
    // Each PG holds about dataBytes / PGs (file data of the volume), every replica of it all of that.
    const estimate = dataBytes != null ? (dataBytes * replicasMoved) / o.pgs : null;
    const diskAfter = {};
    for (const b of bricks) diskAfter[b.role] = await diskBytes(b.dataDir);
    // The new brick holds nothing but the replicas moved onto it (the client overwrote, never added).
    const landed =
      diskAfter[spare.role] != null && diskBefore[spare.role] != null
        ? diskAfter[spare.role] - diskBefore[spare.role]
        : null;
    const [bytesMoved, bytesMovedSource] =
      job.bytesMoved > 0
        ? [job.bytesMoved, 'rebalance record (bytesMoved)']
        : landed > 0
          ? [landed, `growth of ${spare.role}'s data directory`]
          : [estimate, 'estimate'];
    const seen = [...catchUps.values()];
    const countsBefore = replicasPerBrick(before.placement);
    const countsAfter = replicasPerBrick(after.placement);
    const even = (o.pgs * REBALANCE_REPLICAS) / REBALANCE_BRICKS;
    const perBrick = bricks.map((b) => {
      const n = countsAfter.get(b.id) ?? 0;
      return {
        role: b.role,
        id: b.id,
        before: countsBefore.get(b.id) ?? 0,
        after: n,
        even,
        withinTolerance: Math.abs(n - even) <= even * BALANCE_TOLERANCE + 1e-9,
        diskBytesBefore: diskBefore[b.role],
        diskBytesAfter: diskAfter[b.role],
      };
    });
    const strays = [...countsAfter.keys()].filter((id) => !roleOf.has(id));
    if (strays.length) json.notes.push(`PG replicas on unknown bricks after: ${strays.join(', ')}`);
    res.rebalance = {
      jobId: job.id,
      state: job.state,
      startedAtMs: job.startedAtMs,
      finishedAtMs: job.finishedAtMs ?? null,
      seconds: wallMs / 1000,
      observedDoneSeconds: (doneMs - startMs) / 1000,
      settledSeconds: (settledMs - startMs) / 1000,
      pgsTotal: job.pgsTotal,
      pgsDone: job.pgsDone,
      pgsMoved,
      replicasMoved,
      pgsPerMin: pgsMoved / (wallMs / 60_000),
      dataBytes,
      bytesMoved,
      bytesMovedSource,
      bytesMovedEstimate: estimate,
      bytesMovedByJob: job.bytesMoved,
      newBrickBytes: landed,
      catchUpsSeen: {
        backfill: seen.filter((c) => c.mode === 'backfill').length,
        log: seen.filter((c) => c.mode === 'log').length,
        bytesLeftAtFirstSight: seen.reduce((n, c) => n + c.bytes, 0),
        opsLeftAtFirstSight: seen.reduce((n, c) => n + c.ops, 0),
      },
      peakBackfillMiBPerS: peakRate / MiB,
      mibPerS: bytesMoved != null ? bytesMoved / MiB / (wallMs / 1000) : null,
      perBrick,
      balanced: perBrick.every((b) => b.withinTolerance),
      cpu: cpuWindow(r0, r1, res.fioDuring.detail),
      timeline,
    };
    const rb = res.rebalance;
    rb.vsDiskCopy = rb.mibPerS != null ? rb.mibPerS / res.diskCopy.mibPerS : null;
    res.clientRatio =
      res.fioDuring.value != null && res.fioBaseline.value
        ? res.fioDuring.value / res.fioBaseline.value
        : null;
    res.writer = {
      records: writer.acked,
      errors: writer.errorCount,
      firstErrors: writer.errors,
      killedAtStop: writer.killed,
      withoutRebalance: writerWindow(writer, ...res.fioBaseline.window),
      duringRebalance: writerWindow(writer, startMs, doneMs),
      wholeRun: writerWindow(writer, writer.startedAtMs ?? t0, Date.now()),
      pausesOver50Ms: writer.pauses.map(([a, b]) => ({
        atS: Number(((a - startMs) / 1000).toFixed(2)),
        ms: Math.round(b - a),
      })),
    };
    if (writer.stderr.trim()) res.writer.stderr = writer.stderr.trim();
    log(
      `rebalance done in ${rb.seconds.toFixed(1)} s: ${pgsMoved} PGs moved, ` +
        `${rb.mibPerS != null ? fmt(rb.mibPerS) : '?'} MiB/s, writer worst pause ` +
        `${res.writer.duringRebalance.worstPauseMs} ms`,
    );
  } catch (err) {
    json.status = 'failed';
    tj.status = 'failed';
    json.error = err.message;
    json.logs = target.logTails(20);
    log(`rebalance check FAILED: ${err.message}`);
    for (const [role, tail] of Object.entries(json.logs)) log(`${role} log tail:\n${tail}`);
  } finally {
    fioDuring?.stopEarly();
    if (fioDuring) await withDeadline(fioDuring.done, 30_000, 'fio').catch(() => {});
    if (writer && !writer.ended && !writer.killed) await writer.stop();
    if (coord) await withDeadline(coord.stop(), 10_000, 'coordinator stop').catch(() => {});
    await finishTarget(target, tj);
  }
  for (const [what, c] of [
    ['without the rebalance', res.fioBaseline?.cpu],
    ['during the rebalance', res.rebalance?.cpu],
  ]) {
    if (c && c.otherCpuS > 0.25 * c.seconds)
      json.notes.push(
        `other processes on this host used ${c.otherCpuS.toFixed(1)} CPU-s in the ${c.seconds.toFixed(0)} s ` +
          `${what} (${os.cpus().length} CPUs): the client and rebalance rates shared the machine`,
      );
  }
  if (res.rebalance && !res.rebalance.balanced)
    json.notes.push(
      `PG replicas per brick are not within ${BALANCE_TOLERANCE * 100}% of even after the rebalance`,
    );
  json.host.loadavgEnd = os.loadavg();
  json.seconds = (Date.now() - t0) / 1000;
  json.table = rebalanceTable(o, json, ctx);
  cleanupAll();
  writeJson(o, json);
  console.log(json.table);
  for (const n of json.notes) console.log(`\nNote: ${n}`);
  log(`done in ${json.seconds.toFixed(0)} s; results in ${o.out}`);
  // Numbers never fail the run; a run that could not measure does.
  if (json.status !== 'ok') process.exitCode = 1;
}

function rebalanceTable(o, json, ctx) {
  const r = json.results;
  const rb = r.rebalance;
  const num = (v, d = 1) => (v == null || Number.isNaN(v) ? '—' : v.toFixed(d));
  const mibOf = (bytes) => (bytes == null ? '—' : num(bytes / MiB, 0));
  const ratio = (v) => (v == null ? '—' : `${v >= 0.1 ? v.toFixed(2) : v.toPrecision(2)}×`);
  const lines = ['| measure | value |', '|---|---:|'];
  const row = (k, v) => lines.push(`| ${k} | ${v} |`);
  if (r.diskCopy)
    row(
      `disk copy rate (cp ${r.diskCopy.mib} MiB + sync on the scratch directory${r.diskCopy.cold ? ', cold' : ''})`,
      `${num(r.diskCopy.mibPerS)} MiB/s`,
    );
  if (rb) {
    row(`rebalance rate (${mibOf(rb.bytesMoved)} MiB moved / wall time)`, `${num(rb.mibPerS)} MiB/s`);
    row('rebalance rate / disk copy rate', ratio(rb.vsDiskCopy));
    row(
      `file data on the volume at the start (${r.fill.mib} MiB in ${REBALANCE_FILE_MIB} MiB files + the ` +
        `${REBALANCE_FIO_FILE_MIB} MiB fio file)`,
      `${mibOf(rb.dataBytes)} MiB`,
    );
    row(`PGs moved (of ${o.pgs}; ${rb.replicasMoved} replicas)`, `${rb.pgsMoved}`);
    row('PGs moved per minute', num(rb.pgsPerMin, 0));
    row(
      `rebalance wall time (start to done${rb.state === 'done' ? '' : `; ended ${rb.state}`})`,
      `${num(rb.seconds)} s`,
    );
  }
  if (r.throttle)
    row(
      `throttle${r.throttle.default ? ' (dunixctl default)' : ''}`,
      `${r.throttle.maxMiBPerS ? `${r.throttle.maxMiBPerS} MiB/s per brick` : 'no rate limit'}, ${r.throttle.maxConcurrent} PGs at once`,
    );
  const fioCell = (f) => (!f ? '—' : f.error ? 'error' : `${num(f.value)} MiB/s`);
  if (r.fioBaseline)
    row(
      `client seq write, 1 MiB blocks, ${REBALANCE_FIO_S} s, fsync at end: no rebalance`,
      fioCell(r.fioBaseline),
    );
  if (r.fioDuring) {
    const s = r.fioDuring.detail?.interrupted
      ? `${num(r.fioDuring.detail.seconds)} s, until it ended`
      : `${REBALANCE_FIO_S} s`;
    row(`client seq write during the rebalance (${s})`, fioCell(r.fioDuring));
    row(
      'client during / without (target ≥ 0.7)',
      `${ratio(r.clientRatio)}${r.clientRatio != null ? (r.clientRatio >= 0.7 ? ' ok' : ' **below**') : ''}`,
    );
  }
  if (r.writer) {
    const w = r.writer;
    row(
      `writer (64 B + fsync every ${WRITER_PERIOD_MS} ms) worst pause during the rebalance`,
      `${w.duringRebalance.worstPauseMs ?? '—'} ms`,
    );
    row(
      'writer worst pause without the rebalance (same fio load)',
      `${w.withoutRebalance.worstPauseMs ?? '—'} ms`,
    );
    row('writer errors (during the rebalance / whole run)', `${w.duringRebalance.errors} / ${w.errors}`);
  }
  const cpuCell = (c) =>
    c
      ? `${num(c.hostBusyPct, 0)}% busy; CPU-s: cluster ${num(c.clusterCpuS)}, fio ${num(c.fioCpuS)}, ` +
        `others ${num(c.otherCpuS)} in ${num(c.seconds)} s`
      : '—';
  if (r.fioBaseline?.cpu) row(`host CPUs (${os.cpus().length}), no rebalance`, cpuCell(r.fioBaseline.cpu));
  if (rb?.cpu) row(`host CPUs (${os.cpus().length}), during the rebalance`, cpuCell(rb.cpu));
  if (rb) {
    lines.push(
      '',
      '| brick | id | PG replicas before | after | even share | within 10% | MiB on disk before | after |',
    );
    lines.push('|---|---|---:|---:|---:|---|---:|---:|');
    for (const b of rb.perBrick)
      lines.push(
        `| ${b.role} | ${b.id} | ${b.before} | ${b.after} | ${num(b.even)} | ${b.withinTolerance ? 'yes' : '**no**'} | ` +
          `${mibOf(b.diskBytesBefore)} | ${mibOf(b.diskBytesAfter)} |`,
      );
  }
  lines.push('');
  if (json.status !== 'ok') lines.push(`FAILED: ${json.error.split('\n')[0]} (log tails in the JSON)`, '');
  const f = r.fill;
  lines.push(
    `A fresh dunixfs volume (etcd, ${REBALANCE_BRICKS} bricks and 1 client on loopback; replicas ` +
      `${REBALANCE_REPLICAS}, ${o.pgs} PGs, min in-sync ${json.minInsync ?? '—'}) created on 3 bricks; ` +
      (f
        ? `${f.files} files of ${REBALANCE_FILE_MIB} MiB written (${num(f.mibPerS)} MiB/s incl. sync); `
        : '') +
      `then brick4 started, added and a rebalance started` +
      (r.started ? ` (${r.started.via})` : '') +
      '. Rebalance rate: bytes moved over the wall time from the start to the record saying done' +
      (rb
        ? `; bytes moved: ${rb.bytesMovedSource} (cross-check: the volume's ${mibOf(rb.dataBytes)} MiB of ` +
          `file data × replicas moved / PGs = ${mibOf(rb.bytesMovedEstimate)} MiB)`
        : '') +
      '. Disk copy: cp of one file of the same size on the same file system after drop_caches, plus sync. ' +
      `Client rows: fio overwriting one ${REBALANCE_FIO_FILE_MIB} MiB file (written with the fill) in a ` +
      'loop; during the rebalance it is cut short if the rebalance ends first (then the file is fsynced and ' +
      'that time counted). The writer runs from before the first client row to the end; its pause is the ' +
      'longest time between two acknowledged fsyncs. Host CPUs: from /proc/stat; "others" is every process ' +
      'on the host but the cluster, fio and the bench (other work on a shared machine shows there). ' +
      `Load average (1 min) ${ctx.loadStart.toFixed(1)} at the start, ${os.loadavg()[0].toFixed(1)} at the end, ` +
      `${os.cpus().length} CPUs; one run, nothing asserted.`,
  );
  return lines.join('\n');
}

main().catch((err) => {
  console.error(err);
  cleanupAll();
  process.exitCode = 1;
});
