/**
 * Cluster harness: a real etcd, real brickd processes and a real FUSE mount
 * (the dunixfs client as a separate process), all on loopback, in one temp
 * dir. Bricks bind port 0 themselves and report what they got (--port-file),
 * so no port is ever chosen here and then taken by someone else; etcd cannot,
 * and spawnEtcd retries with new ports when it loses that race. Everything it starts is stopped by PID and
 * the temp dir removed in the test's teardown, also when the test fails; on a
 * failure the tail of every process's log is printed first.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EtcdCoordinator, loadEtcdTls, parseEtcdUser, spawnEtcd, type EtcdProcess } from '@dunix/coord';
import { certDir, initCa, issueCert } from '@dunix/coord/ca';
import {
  brickClient,
  callUnary,
  directoryPg,
  initHashing,
  loadTlsDir,
  pgOfIno,
  type BrickClient,
  type ClientPolicy,
  type TransportSecurity,
  type Logger,
  type PgAssignment,
  type wire,
  brickdNodeFlags,
} from '@dunix/proto';
import { reap } from './reaper.js';

const repo = resolve(fileURLToPath(new URL('../../..', import.meta.url)));
export const bins = {
  brickd: join(repo, 'packages/brickd/dist/src/bin/brickd.js'),
  dunixctl: join(repo, 'packages/coord/dist/src/bin/dunixctl.js'),
  dunixfs: join(repo, 'packages/mount/dist/src/bin/dunixfs.cjs'),
};

/** What startCluster needs of a tap Test. */
export interface TestLike {
  teardown(fn: () => unknown): void;
  passing(): boolean;
  comment(...args: unknown[]): void;
}

export interface ClusterOptions {
  bricks?: number;
  pgs?: number;
  /** Copies of each PG (default 3, as `npm start`; at most the brick count). */
  replicas?: number;
  /** The volume's min_insync (default: dunixctl's, min(2, replicas)). */
  minInsync?: number;
  volume?: string;
  /** Extra environment of every brick (an array: per brick). */
  brickEnv?: Record<string, string> | Record<string, string>[];
  /** Extra command-line arguments of brick `index` (e.g. ['--capacity', '64MiB']). */
  brickArgs?: (index: number) => string[];
  /**
   * The last this many of `bricks` are not started with the others: the
   * volume is created without them (start one with launch(), then e.g.
   * `dunixctl brick add`).
   */
  spareBricks?: number;
  /** Mount the client once the volume exists (default true). */
  mount?: boolean;
  /** Extra `-o` options of the client. */
  mountOptions?: string;
  /**
   * The --etcd one brick is started with instead of etcd's own endpoint (e.g.
   * a proxy that can cut it off); asked at every start of brick `index`,
   * undefined keeps the real one.
   */
  brickEtcd?: (index: number, etcdEndpoint: string) => string | undefined | Promise<string | undefined>;
  /**
   * Mutual TLS between the client, the bricks and this harness: a cluster
   * CA in BASE/tls, a brick certificate per brick (--tls-dir), a client
   * certificate `client` for the mount (tls_dir) and the harness's gRPC
   * clients. Default: insecure (loopback), as before.
   */
  tls?: boolean;
  /**
   * With `tls`: etcd's RBAC on (dunixctl etcd auth enable): a user per
   * brick, `client:client` and `admin:admin`; the harness and ctl() then use
   * the admin certificate, the mount its client one.
   */
  etcdAuth?: boolean;
}

/** The cluster's CA when started with `tls` (ClusterOptions). */
export interface ClusterTls {
  /** The CA directory (ca.crt, ca.key, bricks/, clients/). */
  readonly dir: string;
  /** What the mount and the harness's clients use: the certificate `client`. */
  readonly client: TransportSecurity;
  /** Issues another certificate (and its etcd user with `etcdAuth`); resolves with its TLS directory. */
  issue(role: 'brick' | 'client' | 'admin', name: string, policy?: ClientPolicy): Promise<string>;
  /** etcd's server certificate (etcd runs with TLS and --client-cert-auth). */
  readonly etcdDir: string;
}

export interface BrickProc {
  readonly index: number;
  readonly dir: string;
  /** gRPC port of the current process (of the last one while none runs); a restart may change it. */
  readonly port: number;
  /** 127.0.0.1:port, as the brick registered it in etcd. */
  readonly address: string;
  /** Frame-transport address of the current (or last) process. */
  readonly dataAddress: string;
  readonly logFile: string;
  /** The brick's id (from DIR/brick.json, written on first start). */
  readonly id: string;
  /** PID of the current process (0 when none runs). */
  readonly pid: number;
  alive(): boolean;
  /** Resolves when the current process exits (immediately when none runs). */
  exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, SIGKILL after 10 s; resolves when the process is gone. */
  stop(): Promise<void>;
  /** Sends `signal` and, unless it is SIGSTOP/SIGCONT, waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /**
   * Starts it again on the same data dir, on the same ports if they are still
   * free (else on new ones; the brick re-registers, clients follow); `env`
   * replaces the brick's extra env.
   */
  restart(env?: Record<string, string>): Promise<void>;
  /** Starts the process (a spare brick's first start, or after stop()) without waiting for PGs. */
  launch(env?: Record<string, string>): Promise<void>;
  /** Resolves once the brick answers BrickStatus with its PGs. */
  ready(timeoutMs?: number): Promise<void>;
  /** A gRPC client to this brick's current address (closed at teardown). */
  client(): BrickClient;
}

export interface Cluster {
  readonly base: string;
  readonly etcd: EtcdProcess;
  /** e.g. 127.0.0.1:PORT (the client's spec form). */
  readonly etcdHostPort: string;
  readonly volume: string;
  readonly pgs: number;
  readonly bricks: BrickProc[];
  readonly mountpoint: string;
  readonly coord: EtcdCoordinator;
  /** PID of the client process (0 when not mounted). */
  readonly mountPid: number;
  /** Mounts the client; `options` replaces ClusterOptions.mountOptions for this mount. */
  mount(options?: string): Promise<void>;
  /** umount (retried while busy), umount -l as the last resort; waits for the client to exit. */
  unmount(): Promise<void>;
  /**
   * Mounts another client of the volume at BASE/mnt-N (its own process and
   * session, log BASE/logs/client-N.log); unmounted by stop() at the latest.
   */
  mountAnother(options?: string): Promise<ExtraMount>;
  /** Unmounts, stops every process, removes the temp dir. Idempotent. */
  stop(): Promise<void>;
  placement(): Promise<PgAssignment[]>;
  /** The brick that is primary of `pg`. */
  brickOfPg(pg: number): Promise<BrickProc>;
  /** Runs dunixctl with --etcd; returns its result. */
  ctl(args: string[]): { status: number | null; stdout: string; stderr: string };
  /** Inodes and blocks stored over all bricks (BrickStatus). */
  counts(): Promise<{ inodes: number; blocks: number }>;
  /** Last lines of every log file. */
  logTails(lines?: number): string;
  /** A path inside the mount. */
  path(...parts: string[]): string;
  /** The CA and the harness's certificate, when started with `tls`. */
  readonly tls: ClusterTls | undefined;
}

/** A further client of the cluster's volume (Cluster.mountAnother). */
export interface ExtraMount {
  readonly mountpoint: string;
  readonly logFile: string;
  /** PID of its client process (0 once it exited). */
  readonly pid: number;
  path(...parts: string[]): string;
  /** Sends `signal` to the client process and waits for it to exit (SIGKILL leaves the mount to its watchdog). */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** umount (retried while busy, -l as the last resort); waits for the client to exit. */
  unmount(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitUntil(
  cond: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 20_000,
  stepMs = 50,
): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(stepMs);
  }
}

/** Mount points in /proc/self/mountinfo (octal escapes decoded) with their fs type. */
export function mountsAt(path: string): { fstype: string; source: string }[] {
  const out: { fstype: string; source: string }[] = [];
  const unescape = (s: string) =>
    s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (!line) continue;
    const [pre, post] = line.split(' - ');
    const f = pre!.split(' ');
    const g = (post ?? '').split(' ');
    if (unescape(f[4]!) === path) out.push({ fstype: g[0]!, source: unescape(g[1] ?? '') });
  }
  return out;
}

/** Children of this process still running, killed if the test process exits abruptly. */
const live = new Set<ChildProcess>();
const liveMounts = new Set<string>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const c of live) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const m of liveMounts) spawnSync('umount', ['-l', m], { stdio: 'ignore', timeout: 5000 });
  });
}

interface Proc {
  child: ChildProcess;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  done: boolean;
}

/**
 * Spawns a process with stdout and stderr appended to `logFile` (our event
 * loop is not needed). `marker`, a path in its command line, lets the reaper
 * tell it from a later process with the same pid.
 */
function spawnLogged(
  cmd: string,
  args: string[],
  logFile: string,
  env: NodeJS.ProcessEnv,
  marker: string,
): Proc {
  const fd = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(cmd, args, { stdio: ['ignore', fd, fd], env });
  } finally {
    closeSync(fd);
  }
  live.add(child);
  const reaped = child.pid ? { kind: 'pid' as const, pid: child.pid, marker } : undefined;
  if (reaped) reap.add(reaped);
  const gone = () => {
    p.done = true;
    live.delete(child);
    if (reaped) reap.remove(reaped);
  };
  const p: Proc = {
    child,
    done: false,
    exit: new Promise((res) => {
      child.once('exit', (code, signal) => {
        gone();
        res({ code, signal });
      });
      child.once('error', () => {
        gone();
        res({ code: -1, signal: null });
      });
    }),
  };
  return p;
}

async function terminate(p: Proc | undefined, graceMs = 10_000): Promise<void> {
  if (!p || p.done) return;
  p.child.kill('SIGTERM');
  const timer = setTimeout(() => {
    if (!p.done) p.child.kill('SIGKILL');
  }, graceMs);
  await p.exit;
  clearTimeout(timer);
}

/** What a brick writes to --port-file (packages/brickd/src/port-file.ts). */
interface PortReport {
  pid: number;
  address: string;
  dataAddress: string;
}

/**
 * How long a starting brick may take to listen and report its ports: a start
 * takes 1-3 s, but 30 s was once not enough with two suites' clusters
 * starting at once on 2 cores (load 35); waiting longer costs nothing when
 * the brick does start.
 */
const PORT_REPORT_TIMEOUT_MS = 90_000;

const portOf = (hostPort: string) => Number(hostPort.slice(hostPort.lastIndexOf(':') + 1));

/** Waits for the port report of process `p` (a stale file of an earlier process has another pid). */
async function portReport(p: Proc, file: string, name: string, logFile: string): Promise<PortReport> {
  let report: PortReport | undefined;
  await waitUntil(
    () => {
      try {
        const r = JSON.parse(readFileSync(file, 'utf8')) as PortReport;
        if (r.pid === p.child.pid) report = r;
      } catch {
        // not written yet (it is renamed into place whole)
      }
      if (report) return true;
      if (p.done) throw new Error(`${name} exited before listening:\n${tail(logFile, 20)}`);
      return false;
    },
    `${name} to report its ports`,
    PORT_REPORT_TIMEOUT_MS,
    20,
  );
  return report!;
}

function fileSize(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

/** The text appended to `file` after byte `from`. */
function textSince(file: string, from: number): string {
  try {
    return readFileSync(file).subarray(from).toString('utf8');
  } catch {
    return '';
  }
}

function tail(file: string, lines: number): string {
  if (!existsSync(file)) return '';
  const all = readFileSync(file, 'utf8').split('\n');
  return all.slice(Math.max(0, all.length - lines - 1)).join('\n');
}

function fileLogger(file: string): Logger {
  const fd = openSync(file, 'a');
  const emit = (level: string) => (msg: string, fields?: Record<string, unknown>) => {
    try {
      writeSync(fd, `${JSON.stringify({ t: new Date().toISOString(), level, msg, ...fields }, jsonSafe)}\n`);
    } catch {
      /* the log file is gone at teardown */
    }
  };
  return {
    debug: emit('debug'),
    info: emit('info'),
    warn: emit('warn'),
    error: emit('error'),
    enabled: () => true,
  };
}

function jsonSafe(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value instanceof Error ? value.message : value;
}

export async function startCluster(t: TestLike, opts: ClusterOptions = {}): Promise<Cluster> {
  installExitHook();
  await initHashing();
  const nBricks = opts.bricks ?? 3;
  const spareBricks = opts.spareBricks ?? 0;
  if (spareBricks < 0 || spareBricks >= nBricks) throw new Error(`spareBricks ${spareBricks} of ${nBricks}`);
  const pgs = opts.pgs ?? 64;
  const volume = opts.volume ?? 'vol';
  const base = mkdtempSync(join(tmpdir(), 'dunix-cluster-'));
  reap.add({ kind: 'dir', path: base });
  spawnSync('chmod', ['0755', base]);
  const logDir = join(base, 'logs');
  mkdirSync(logDir);
  const mountpoint = join(base, 'mnt');
  mkdirSync(mountpoint, { mode: 0o755 });
  const clientLog = join(logDir, 'client.log');
  const etcdLog = join(logDir, 'etcd.log');

  const clients: BrickClient[] = [];
  const started: { etcd?: EtcdProcess; coord?: EtcdCoordinator } = {};
  const brickProcs: BrickProc[] = [];
  const stops: (() => Promise<void>)[] = [];
  let client: Proc | undefined;

  const logTails = (lines = 40) => {
    const files = [etcdLog, clientLog, ...brickProcs.map((b) => b.logFile)];
    return files.map((f) => `---- ${f} (last ${lines} lines)\n${tail(f, lines)}`).join('\n');
  };

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      await unmount().catch(() => {});
      for (const c of clients) c.close();
      for (const s of stops) await s().catch(() => {});
      await started.coord?.stop().catch(() => {});
      await started.etcd?.stop().catch(() => {});
      if (started.etcd) {
        reap.remove({ kind: 'pid', pid: started.etcd.pid, marker: started.etcd.dataDir });
        reap.remove({ kind: 'dir', path: dirname(started.etcd.dataDir) });
      }
      // Never remove a dir that is still a mount point (it would recurse into the mount).
      if (mountsAt(mountpoint).length === 0) {
        rmSync(base, { recursive: true, force: true });
        reap.remove({ kind: 'dir', path: base });
      }
    })();
    return stopping;
  };
  t.teardown(async () => {
    if (!t.passing()) process.stderr.write(`\n==== cluster logs (${base})\n${logTails()}\n====\n`);
    await stop();
  });

  const brickEnv = (i: number): Record<string, string> =>
    Array.isArray(opts.brickEnv) ? (opts.brickEnv[i] ?? {}) : (opts.brickEnv ?? {});

  let tlsInfo: ClusterTls | undefined;
  if (opts.tls) {
    const dir = join(base, 'tls');
    await initCa(dir);
    const issue = async (role: 'brick' | 'client' | 'admin', name: string, policy?: ClientPolicy) => {
      const issued = (await issueCert(dir, { role, name, ...(policy ? { policy } : {}) })).dir;
      if (opts.etcdAuth && started.coord)
        await started.coord.access.addUsers(
          [parseEtcdUser(`${role}:${name}`)],
          (await started.coord.listVolumes()).map((v) => v.name),
        );
      return issued;
    };
    for (let i = 0; i < nBricks; i++) await issue('brick', `brick${i}`);
    if (opts.etcdAuth) await issue('admin', 'admin');
    const client = await loadTlsDir(await issue('client', 'client'), 'client');
    const etcdDir = (await issueCert(dir, { role: 'etcd', name: 'etcd0' })).dir;
    tlsInfo = { dir, client, issue, etcdDir };
  }
  const brickTlsArgs = (i: number) =>
    tlsInfo ? ['--tls-dir', certDir(tlsInfo.dir, 'brick', `brick${i}`)] : [];

  const etcd = await spawnEtcd({
    log: fileLogger(etcdLog),
    ...(tlsInfo
      ? {
          tls: {
            caFile: join(tlsInfo.etcdDir, 'ca.crt'),
            certFile: join(tlsInfo.etcdDir, 'tls.crt'),
            keyFile: join(tlsInfo.etcdDir, 'tls.key'),
          },
        }
      : {}),
  });
  // The harness talks to etcd (and runs dunixctl) with the mount's client certificate, or the
  // admin's when etcd's RBAC is on.
  const clientTlsDir = tlsInfo
    ? certDir(tlsInfo.dir, opts.etcdAuth ? 'admin' : 'client', opts.etcdAuth ? 'admin' : 'client')
    : undefined;
  const etcdHostPort = `127.0.0.1:${etcd.clientPort}`;
  started.etcd = etcd;
  reap.add({ kind: 'pid', pid: etcd.pid, marker: etcd.dataDir });
  reap.add({ kind: 'dir', path: dirname(etcd.dataDir) }); // spawnEtcd's temp dir
  const coord = new EtcdCoordinator({
    endpoints: [etcd.endpoint],
    tls: await loadEtcdTls({ tlsDir: clientTlsDir }),
    log: fileLogger(join(logDir, 'coord.log')),
  });
  started.coord = coord;
  await coord.start();
  if (opts.etcdAuth) {
    if (!tlsInfo) throw new Error('etcdAuth needs tls');
    const users = [
      ...Array.from({ length: nBricks }, (_, i) => `brick:brick${i}`),
      'client:client',
      'admin:admin',
    ];
    await coord.access.enable(users.map(parseEtcdUser), []);
  }

  const ctl = (args: string[]) => {
    const r = spawnSync(
      process.execPath,
      [bins.dunixctl, '--etcd', etcd.endpoint, ...(clientTlsDir ? ['--tls-dir', clientTlsDir] : []), ...args],
      {
        encoding: 'utf8',
        timeout: 60_000,
      },
    );
    return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  };

  const childEnv = (extra: Record<string, string>): NodeJS.ProcessEnv => {
    const env: NodeJS.ProcessEnv = { ...process.env, DUNIX_LOG: process.env.DUNIX_LOG ?? 'info' };
    delete env.DUNIX_FAULTS;
    return { ...env, ...extra };
  };

  const launches: Promise<void>[] = [];
  for (let i = 0; i < nBricks; i++) {
    const dir = join(base, `brick${i}`);
    mkdirSync(dir);
    const logFile = join(logDir, `brick${i}.log`);
    const portFile = join(dir, 'ports.json');
    let proc: Proc | undefined;
    let ports: PortReport | undefined;
    let grpcClient: BrickClient | undefined;
    let grpcClientAddress = '';
    let etcdEndpoint = etcd.endpoint;
    const spawnBrick = (env: Record<string, string>, listen: string, dataPort: number | undefined) => {
      rmSync(portFile, { force: true });
      proc = spawnLogged(
        process.execPath,
        [
          ...brickdNodeFlags,
          // Node flags for brick processes when profiling by hand (e.g. --cpu-prof); the last of a flag wins.
          ...(process.env.DUNIX_TEST_BRICK_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
          bins.brickd,
          '--data',
          dir,
          '--listen',
          listen,
          ...(dataPort === undefined ? [] : ['--data-port', String(dataPort)]),
          '--port-file',
          portFile,
          '--etcd',
          etcdEndpoint,
          '--volume',
          volume,
          ...brickTlsArgs(i),
          ...(opts.brickArgs?.(i) ?? []),
        ],
        logFile,
        childEnv(env),
        base,
      );
      return proc;
    };
    /**
     * Starts a process and waits for its port report. A restart first asks
     * for the ports it had (as a restarted daemon would); if another process
     * took them meanwhile, it takes any free ones.
     */
    const start = async (env: Record<string, string>, samePorts: boolean) => {
      const last = samePorts ? ports : undefined;
      etcdEndpoint = (await opts.brickEtcd?.(i, etcd.endpoint)) ?? etcd.endpoint;
      const logStart = fileSize(logFile);
      const p = last
        ? spawnBrick(env, last.address, portOf(last.dataAddress))
        : spawnBrick(env, '127.0.0.1:0', undefined);
      try {
        ports = await portReport(p, portFile, `brick${i}`, logFile);
      } catch (err) {
        if (!last || !p.done || !/EADDRINUSE/.test(textSince(logFile, logStart))) throw err;
        ports = await portReport(spawnBrick(env, '127.0.0.1:0', undefined), portFile, `brick${i}`, logFile);
      }
    };
    const b: BrickProc = {
      index: i,
      dir,
      get port() {
        return ports ? portOf(ports.address) : 0;
      },
      get address() {
        return ports?.address ?? '';
      },
      get dataAddress() {
        return ports?.dataAddress ?? '';
      },
      logFile,
      get id() {
        return (JSON.parse(readFileSync(join(dir, 'brick.json'), 'utf8')) as { id: string }).id;
      },
      get pid() {
        return proc && !proc.done ? proc.child.pid! : 0;
      },
      alive: () => !!proc && !proc.done,
      exited: async () => (proc ? proc.exit : { code: null, signal: null }),
      stop: () => terminate(proc),
      kill: async (signal: NodeJS.Signals = 'SIGKILL') => {
        if (!proc || proc.done) return;
        proc.child.kill(signal);
        if (signal !== 'SIGSTOP' && signal !== 'SIGCONT') await proc.exit;
      },
      restart: async (env?: Record<string, string>) => {
        await terminate(proc);
        await start(env ?? brickEnv(i), true);
        await b.ready();
      },
      launch: async (env?: Record<string, string>) => {
        await terminate(proc);
        await start(env ?? brickEnv(i), ports !== undefined);
      },
      ready: async (timeoutMs = 30_000) => {
        await waitUntil(
          async () => {
            if (!proc || proc.done) throw new Error(`brick${i} exited:\n${tail(logFile, 20)}`);
            try {
              const s = await callUnary<object, wire.BrickStatusReply__Output>(
                b.client(),
                'BrickStatus',
                {},
                2000,
              );
              return s.pgs.length > 0;
            } catch {
              return false;
            }
          },
          `brick${i} to serve its PGs`,
          timeoutMs,
          100,
        );
      },
      client: () => {
        // A restart may have moved the brick: a client of an old address is replaced.
        if (grpcClient && grpcClientAddress !== b.address) {
          grpcClient.close();
          clients.splice(clients.indexOf(grpcClient), 1);
          grpcClient = undefined;
        }
        if (!grpcClient) {
          grpcClient = brickClient(b.address, tlsInfo?.client);
          grpcClientAddress = b.address;
          clients.push(grpcClient);
        }
        return grpcClient;
      },
    };
    stops.push(() => terminate(proc));
    if (i < nBricks - spareBricks) launches.push(start(brickEnv(i), false));
    brickProcs.push(b);
  }
  await Promise.all(launches);

  // Every brick registered (and alive) before the volume is placed over them.
  await waitUntil(
    async () => {
      for (const b of brickProcs.slice(0, nBricks - spareBricks))
        if (!b.alive()) throw new Error(`brick${b.index} exited:\n${tail(b.logFile, 20)}`);
      const listed = await coord.listBricks(volume).catch(() => []);
      return listed.filter((x) => x.alive).length === nBricks - spareBricks;
    },
    'all bricks to register',
    30_000,
    100,
  );
  const replicas = opts.replicas ?? Math.min(3, nBricks - spareBricks);
  const created = ctl([
    'volume',
    'create',
    volume,
    '--pgs',
    String(pgs),
    '--replicas',
    String(replicas),
    ...(opts.minInsync !== undefined ? ['--min-insync', String(opts.minInsync)] : []),
  ]);
  if (created.status !== 0) throw new Error(`volume create failed: ${created.stderr}${created.stdout}`);
  for (const b of brickProcs.slice(0, nBricks - spareBricks)) await b.ready();

  async function mount(options = opts.mountOptions): Promise<void> {
    if (client && !client.done) throw new Error('already mounted');
    const args = [bins.dunixfs, `${etcdHostPort}/${volume}`, mountpoint];
    // The harness's client certificate unless the options name another TLS directory.
    const tlsOption =
      tlsInfo && !/(^|,)tls_dir=/.test(options ?? '')
        ? `tls_dir=${certDir(tlsInfo.dir, 'client', 'client')}`
        : '';
    const all = [options, tlsOption].filter(Boolean).join(',');
    if (all) args.push('-o', all);
    client = spawnLogged(process.execPath, args, clientLog, childEnv({}), base);
    liveMounts.add(mountpoint);
    reap.add({ kind: 'mount', path: mountpoint });
    const c = client;
    await waitUntil(
      () => {
        if (c.done) throw new Error(`dunixfs exited before mounting:\n${tail(clientLog, 20)}`);
        return mountsAt(mountpoint).some((m) => m.fstype === 'fuse.dunixfs');
      },
      'the dunixfs mount',
      30_000,
    );
  }

  async function unmount(): Promise<void> {
    for (let i = 0; i < 20 && mountsAt(mountpoint).length > 0; i++) {
      const r = spawnSync('umount', [mountpoint], { encoding: 'utf8', timeout: 15_000 });
      if (r.status === 0) break;
      await sleep(250);
    }
    if (mountsAt(mountpoint).length > 0) spawnSync('umount', ['-l', mountpoint], { timeout: 15_000 });
    liveMounts.delete(mountpoint);
    reap.remove({ kind: 'mount', path: mountpoint });
    if (client && !client.done) {
      // The client exits by itself once the kernel ends the session.
      const c = client;
      const timer = setTimeout(() => void terminate(c, 5000), 10_000);
      await c.exit;
      clearTimeout(timer);
    }
  }

  let extraMounts = 0;
  async function mountAnother(options = opts.mountOptions): Promise<ExtraMount> {
    const n = ++extraMounts;
    const mp = join(base, `mnt-${n}`);
    mkdirSync(mp, { mode: 0o755 });
    const log = join(logDir, `client-${n}.log`);
    const args = [bins.dunixfs, `${etcdHostPort}/${volume}`, mp];
    const tlsOption =
      tlsInfo && !/(^|,)tls_dir=/.test(options ?? '')
        ? `tls_dir=${certDir(tlsInfo.dir, 'client', 'client')}`
        : '';
    const all = [options, tlsOption].filter(Boolean).join(',');
    if (all) args.push('-o', all);
    const p = spawnLogged(process.execPath, args, log, childEnv({}), base);
    liveMounts.add(mp);
    reap.add({ kind: 'mount', path: mp });
    const unmountIt = async () => {
      for (let i = 0; i < 20 && mountsAt(mp).length > 0; i++) {
        const r = spawnSync('umount', [mp], { encoding: 'utf8', timeout: 15_000 });
        if (r.status === 0) break;
        await sleep(250);
      }
      if (mountsAt(mp).length > 0) spawnSync('umount', ['-l', mp], { timeout: 15_000 });
      liveMounts.delete(mp);
      reap.remove({ kind: 'mount', path: mp });
      if (!p.done) {
        const timer = setTimeout(() => void terminate(p, 5000), 10_000);
        await p.exit;
        clearTimeout(timer);
      }
    };
    // Before the bricks stop: unmounting needs no brick, but the client exits sooner with them.
    stops.unshift(unmountIt);
    await waitUntil(
      () => {
        if (p.done) throw new Error(`dunixfs exited before mounting:\n${tail(log, 20)}`);
        return mountsAt(mp).some((m) => m.fstype === 'fuse.dunixfs');
      },
      'another dunixfs mount',
      30_000,
    );
    return {
      mountpoint: mp,
      logFile: log,
      get pid() {
        return p.done ? 0 : p.child.pid!;
      },
      path: (...parts) => join(mp, ...parts),
      kill: async (signal = 'SIGKILL') => {
        if (p.done) return;
        p.child.kill(signal);
        await p.exit;
      },
      unmount: unmountIt,
    };
  }

  const cluster: Cluster = {
    base,
    etcd,
    etcdHostPort,
    volume,
    pgs,
    bricks: brickProcs,
    mountpoint,
    coord,
    get mountPid() {
      return client && !client.done ? client.child.pid! : 0;
    },
    mount,
    unmount,
    mountAnother,
    stop,
    placement: () => coord.getPlacement(volume),
    brickOfPg: async (pg) => {
      const a = (await coord.getPlacement(volume))[pg];
      const b = brickProcs.find((x) => x.id === a?.bricks[0]);
      if (!b) throw new Error(`pg ${pg} has no primary among our bricks`);
      return b;
    },
    ctl,
    counts: async () => {
      let inodes = 0;
      let blocks = 0;
      for (const b of brickProcs) {
        if (!b.address) continue; // a spare never started
        const s = await callUnary<object, wire.BrickStatusReply__Output>(
          b.client(),
          'BrickStatus',
          {},
          10_000,
        );
        inodes += Number(s.inodes);
        blocks += Number(s.blocks);
      }
      return { inodes, blocks };
    },
    logTails,
    path: (...parts) => join(mountpoint, ...parts),
    tls: tlsInfo,
  };
  if (opts.mount ?? true) await mount();
  return cluster;
}

/** PG of a new directory `name` under `parent`. */
export function newDirPg(parent: bigint, name: string, pgCount: number): number {
  return directoryPg(parent, Buffer.from(name), pgCount);
}

export { pgOfIno };

/** Runs a command to completion (never throws); a timeout kills it. */
export function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; input?: string | Buffer; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, {
    encoding: 'utf8',
    timeout: opts.timeoutMs ?? 120_000,
    maxBuffer: 64 * 1024 * 1024,
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
    ...(opts.input !== undefined ? { input: opts.input } : {}),
    ...(opts.env ? { env: opts.env } : {}),
  });
  return {
    status: r.status,
    signal: r.signal,
    stdout: r.stdout ?? '',
    stderr: r.stderr ?? String(r.error ?? ''),
  };
}

/** Runs a command and throws with its stderr unless it exits 0; returns stdout. */
export function ok(
  cmd: string,
  args: string[],
  opts: { cwd?: string; input?: string | Buffer; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): string {
  const r = run(cmd, args, opts);
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.status ?? r.signal}: ${r.stderr.slice(0, 2000)}`);
  }
  return r.stdout;
}

/** A shell script, run with bash -c; throws unless it exits 0. */
export function sh(script: string, opts: { cwd?: string; timeoutMs?: number } = {}): string {
  return ok('bash', ['-euo', 'pipefail', '-c', script], opts);
}

/** Starts a command in the background; `done` resolves with its result (a timeout kills it). */
export function runAsync(
  cmd: string,
  args: string[],
  opts: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): {
  child: ChildProcess;
  done: Promise<{ status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
} {
  const child = spawn(cmd, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
    ...(opts.env ? { env: opts.env } : {}),
  });
  live.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
  const done = new Promise<{
    status: number | null;
    signal: NodeJS.Signals | null;
    stdout: string;
    stderr: string;
  }>((res) => {
    child.once('close', (status, signal) => {
      clearTimeout(timer);
      live.delete(child);
      res({ status, signal, stdout, stderr });
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      live.delete(child);
      res({ status: -1, signal: null, stdout, stderr: stderr + String(err) });
    });
  });
  return { child, done };
}
