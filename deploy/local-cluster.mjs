#!/usr/bin/env node
/**
 * The one-command local cluster: etcd + 3 bricks + a FUSE mount on this
 * machine, every daemon detached, listening on 127.0.0.1 only.
 *
 *   node deploy/local-cluster.mjs start|stop|status [--json] [options]
 *
 * `start` installs what is missing, builds, starts whatever of ours is not
 * running (etcd, bricks, the FUSE client), creates the volume once, prints
 * the status table and returns leaving the daemons running. Running it again
 * only reports. Every daemon's PID goes to a pid file. `stop` unmounts, waits
 * for the client, then SIGTERMs whatever of ours still runs by those PIDs
 * (SIGKILL only after a timeout): nothing of the cluster is left running;
 * data stays. Plain Node ESM: no build step.
 * Usage and the state-dir layout: deploy/README.md.
 */
import { spawn, spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { stat } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { listensOn } from '../scripts/listens-on.mjs';
import { parseArgs } from 'node:util';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BIN = {
  etcd: '/usr/bin/etcd',
  brickd: join(REPO, 'packages/brickd/dist/src/bin/brickd.js'),
  dunixctl: join(REPO, 'packages/coord/dist/src/bin/dunixctl.js'),
  client: join(REPO, 'packages/mount/dist/src/bin/dunixfs.cjs'),
  mountHelper: join(REPO, 'packages/mount/dist/src/bin/mount-helper.cjs'),
};
const MOUNT_WRAPPER = '/sbin/mount.dunixfs';
/** mount(8) runs /sbin/mount.fuse.dunixfs for `-t fuse.dunixfs` and fstab type fuse.dunixfs. */
const MOUNT_WRAPPER_FUSE = '/sbin/mount.fuse.dunixfs';
const LOOPBACK = '127.0.0.1';
const BRICKS = ['b1', 'b2', 'b3'];
const FSTYPE = 'fuse.dunixfs';

/** Bounds of every wait, in one place. */
const limits = {
  etcdReadyMs: 30_000,
  /** etcd starts on new ports after losing a race for them (ports chosen here, DUNIX_ETCD_PORT=0). */
  etcdPortAttempts: 10,
  bricksReadyMs: 60_000,
  mountReadyMs: 30_000,
  /** After a clean unmount the client exits by itself once it has published buffered data. */
  clientExitMs: 10_000,
  /**
   * SIGTERM to SIGKILL: the client gives a detached mount still in use 5 s,
   * then up to 65 s to publish buffered data (packages/mount/src/fuse/mount.ts).
   */
  clientStopMs: 80_000,
  brickStopMs: 20_000,
  etcdStopMs: 15_000,
  umountTries: 5,
  umountRetryMs: 1_000,
  statMountMs: 5_000,
  etcdRequestMs: 2_000,
  dunixctlMs: 5_000,
  pollMs: 100,
  logTailLines: 8,
};

class UserError extends Error {}
const fail = (msg) => {
  throw new UserError(msg);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const say = (msg) => process.stdout.write(`[dunix] ${msg}\n`);

// ---------------------------------------------------------------- config

const USAGE = `usage: node deploy/local-cluster.mjs start|stop|status [options]
  --state DIR        state dir          ($DUNIX_STATE, default /var/lib/dunix)
  --mount DIR        mount point        ($DUNIX_MOUNT, default /mnt/dunix)
  --volume NAME      volume name        ($DUNIX_VOLUME, default dunix)
  --etcd-port N      etcd client port   ($DUNIX_ETCD_PORT, default 2379; 0: any free ports)
  --etcd-peer-port N etcd peer port     ($DUNIX_ETCD_PEER_PORT, default client port + 1)
  --brick-port N     first brick port; bricks use N, N+1, N+2 ($DUNIX_BRICK_PORT, default 7101;
                     0: each brick binds any free port and reports it)
  --pgs N            PGs of a new volume ($DUNIX_PGS, default 256)
  --replicas N       copies of each PG of a new volume ($DUNIX_REPLICAS, default 3)
  --no-install       start: skip apt, npm ci and /sbin/mount.dunixfs ($DUNIX_NO_INSTALL=1)
  --no-build         start: skip npm run build ($DUNIX_NO_BUILD=1)
  --json             status: print JSON
Options not given reuse the values the state dir's last start recorded (STATE/cluster.json).`;

function intValue(name, v, min, max) {
  if (!/^[0-9]+$/.test(String(v)) || Number(v) < min || Number(v) > max) {
    fail(`${name} must be an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
  }
  return Number(v);
}

function parseCli(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        state: { type: 'string' },
        mount: { type: 'string' },
        volume: { type: 'string' },
        'etcd-port': { type: 'string' },
        'etcd-peer-port': { type: 'string' },
        'brick-port': { type: 'string' },
        pgs: { type: 'string' },
        replicas: { type: 'string' },
        'no-install': { type: 'boolean' },
        'no-build': { type: 'boolean' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    fail(`${e.message}\n${USAGE}`);
  }
  return parsed;
}

/** flag > environment > what the last start recorded > default. */
function resolveConfig(values, env) {
  const stateDir = resolve(values.state ?? env.DUNIX_STATE ?? '/var/lib/dunix');
  let recorded = {};
  try {
    recorded = JSON.parse(readFileSync(join(stateDir, 'cluster.json'), 'utf8'));
  } catch {
    // none yet
  }
  const pick = (flag, envName, key, dflt) => values[flag] ?? env[envName] ?? recorded[key] ?? dflt;
  const etcdPort = intValue('etcd port', pick('etcd-port', 'DUNIX_ETCD_PORT', 'etcdPort', 2379), 0, 65535);
  const cfg = {
    stateDir,
    mountPoint: resolve(pick('mount', 'DUNIX_MOUNT', 'mountPoint', '/mnt/dunix')),
    volume: String(pick('volume', 'DUNIX_VOLUME', 'volume', 'dunix')),
    etcdPort,
    // The peer port follows an explicitly chosen client port unless it is chosen too.
    etcdPeerPort: intValue(
      'etcd peer port',
      values['etcd-peer-port'] ??
        env.DUNIX_ETCD_PEER_PORT ??
        ((values['etcd-port'] ?? env.DUNIX_ETCD_PORT) ? undefined : recorded.etcdPeerPort) ??
        (etcdPort === 0 ? 0 : etcdPort + 1),
      0,
      65535,
    ),
    brickPort: intValue('brick port', pick('brick-port', 'DUNIX_BRICK_PORT', 'brickPort', 7101), 0, 65533),
    pgs: intValue('PG count', pick('pgs', 'DUNIX_PGS', 'pgs', 256), 1, 65536),
    replicas: intValue('replicas', pick('replicas', 'DUNIX_REPLICAS', 'replicas', 3), 1, 3),
    install: !(values['no-install'] || env.DUNIX_NO_INSTALL === '1'),
    build: !(values['no-build'] || env.DUNIX_NO_BUILD === '1'),
    json: Boolean(values.json),
  };
  if (!/^[a-z0-9][a-z0-9_-]{0,62}$/.test(cfg.volume)) fail(`bad volume name ${JSON.stringify(cfg.volume)}`);
  if ((cfg.pgs & (cfg.pgs - 1)) !== 0) fail(`PG count ${cfg.pgs} is not a power of two`);
  if ((cfg.etcdPort === 0) !== (cfg.etcdPeerPort === 0))
    fail('etcd ports: either both are 0 (any) or neither');
  const brickPorts = cfg.brickPort === 0 ? [] : BRICKS.map((_, i) => cfg.brickPort + i);
  const ports = [cfg.etcdPort, cfg.etcdPeerPort, ...brickPorts].filter((p) => p !== 0);
  if (new Set(ports).size !== ports.length) fail(`ports overlap: ${ports.join(', ')}`);
  // With port 0 the ports become known when etcd starts (or from the running one): setEtcdPorts.
  if (cfg.etcdPort !== 0) setEtcdPorts(cfg, cfg.etcdPort, cfg.etcdPeerPort);
  cfg.etcdDir = join(stateDir, 'etcd');
  cfg.logDir = join(stateDir, 'logs');
  cfg.runDir = join(stateDir, 'run');
  cfg.bricks = BRICKS.map((name, i) => ({
    name,
    // 0: any free port, reported through portFile.
    port: cfg.brickPort === 0 ? 0 : cfg.brickPort + i,
    dataDir: join(stateDir, 'bricks', name),
    pidFile: join(cfg.runDir, `brick-${name}.pid`),
    portFile: join(cfg.runDir, `brick-${name}.ports.json`),
    logFile: join(cfg.logDir, `brick-${name}.log`),
  }));
  cfg.etcd = {
    pidFile: join(cfg.runDir, 'etcd.pid'),
    logFile: join(cfg.logDir, 'etcd.log'),
  };
  cfg.mountLog = join(cfg.logDir, 'mount.log');
  cfg.client = { pidFile: join(cfg.runDir, 'client.pid') };
  // TLS everywhere (made by dunixctl ca init / cert issue on first start): the CA of this state dir,
  // etcd's server certificate, one per brick, one for the mount, an admin's for dunixctl and this
  // launcher (etcd's root once its RBAC is on).
  const tlsDir = join(stateDir, 'tls');
  cfg.tls = {
    ca: tlsDir,
    etcd: join(tlsDir, 'etcd', 'etcd0'),
    client: join(tlsDir, 'clients', 'local'),
    admin: join(tlsDir, 'admins', 'local'),
  };
  for (const b of cfg.bricks) b.tlsDir = join(tlsDir, 'bricks', b.name);
  return cfg;
}

/** The etcd ports in use; endpoint and spec follow them. */
function setEtcdPorts(cfg, clientPort, peerPort) {
  cfg.etcdClientPort = clientPort;
  cfg.etcdPeerPortInUse = peerPort;
  cfg.endpoint = `https://${LOOPBACK}:${clientPort}`;
  cfg.spec = `${LOOPBACK}:${clientPort}/${cfg.volume}`;
}

/** With DUNIX_ETCD_PORT=0, the ports are those of this state dir's running etcd, if one runs. */
function adoptRunningEtcd(cfg) {
  if (cfg.etcdPort !== 0) return;
  const pid = ourPid(cfg.etcd.pidFile, (p) => isOurEtcd(p, cfg));
  if (pid === undefined) return;
  const argv = cmdline(pid) ?? [];
  const port = (flag) => Number(/:(\d+)$/.exec(argValue(argv, flag) ?? '')?.[1] ?? 0);
  setEtcdPorts(cfg, port('--listen-client-urls'), port('--listen-peer-urls'));
}

function recordConfig(cfg) {
  const keep = ['mountPoint', 'volume', 'etcdPort', 'etcdPeerPort', 'brickPort', 'pgs'];
  writeAtomic(
    join(cfg.stateDir, 'cluster.json'),
    JSON.stringify(Object.fromEntries(keep.map((k) => [k, cfg[k]])), null, 2) + '\n',
  );
}

function writeAtomic(path, text, mode = 0o644) {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode });
  renameSync(tmp, path);
}

// ---------------------------------------------------------------- processes

function readPid(pidFile) {
  try {
    const n = Number(readFileSync(pidFile, 'utf8').trim());
    return Number.isInteger(n) && n > 1 ? n : undefined;
  } catch {
    return undefined;
  }
}

function cmdline(pid) {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return undefined;
  }
}

/** Alive and not a zombie (a reparented daemon may wait for a reaper that never comes). */
function alive(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

function exeName(pid) {
  try {
    return basename(readlinkSync(`/proc/${pid}/exe`));
  } catch {
    return undefined;
  }
}

function isOurEtcd(pid, cfg) {
  const argv = cmdline(pid);
  return (
    alive(pid) &&
    argv !== undefined &&
    (exeName(pid) === 'etcd' || basename(argv[0] ?? '') === 'etcd') &&
    argv.includes(`--data-dir=${cfg.etcdDir}`)
  );
}

function isOurBrick(pid, brick) {
  const argv = cmdline(pid);
  if (!alive(pid) || !argv) return false;
  const i = argv.indexOf('--data');
  return argv.some((a) => a.endsWith('/brickd.js')) && i >= 0 && argv[i + 1] === brick.dataDir;
}

function isOurClient(pid, cfg) {
  const argv = cmdline(pid);
  return (
    alive(pid) &&
    argv !== undefined &&
    argv.some((a) => a.endsWith('/dunixfs.cjs')) &&
    argv.includes(cfg.mountPoint)
  );
}

/** The pid in the file when it is alive and ours; a stale file is removed. */
function ourPid(pidFile, isOurs) {
  const pid = readPid(pidFile);
  if (pid === undefined) return undefined;
  if (isOurs(pid)) return pid;
  rmSync(pidFile, { force: true });
  return undefined;
}

function argValue(argv, flag) {
  const eq = argv.find((a) => a.startsWith(`${flag}=`));
  if (eq) return eq.slice(flag.length + 1);
  const i = argv.indexOf(flag);
  return i >= 0 ? argv[i + 1] : undefined;
}

/** Starts a daemon in its own session, output appended to logFile; returns its pid. */
function spawnDetached(cmd, args, { logFile, pidFile, env, cwd }) {
  const fd = openSync(logFile, 'a');
  writeFileSync(
    fd,
    `--- ${new Date().toISOString()} started by local-cluster.mjs: ${cmd} ${args.join(' ')}\n`,
  );
  let child;
  try {
    child = spawn(cmd, args, { detached: true, stdio: ['ignore', fd, fd], env, cwd });
  } finally {
    closeSync(fd);
  }
  if (!child.pid) fail(`could not start ${cmd}`);
  child.on('error', () => undefined);
  child.unref();
  writeAtomic(pidFile, `${child.pid}\n`);
  return child.pid;
}

function fileSize(file) {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

/** What was appended to file after byte `from`. */
function textSince(file, from) {
  try {
    return readFileSync(file).subarray(from).toString('utf8');
  } catch {
    return '';
  }
}

function logTail(logFile, n = limits.logTailLines) {
  try {
    const lines = readFileSync(logFile, 'utf8').trimEnd().split('\n');
    return lines
      .slice(-n)
      .map((l) => `    ${l}`)
      .join('\n');
  } catch {
    return '    (no log)';
  }
}

async function terminate(name, pid, timeoutMs) {
  if (!alive(pid)) return 'not running';
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!alive(pid)) return 'stopped';
    await sleep(limits.pollMs);
  }
  say(`${name} (pid ${pid}) ignored SIGTERM for ${timeoutMs / 1000} s; sending SIGKILL`);
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // exited meanwhile
  }
  for (let i = 0; i < 50 && alive(pid); i++) await sleep(limits.pollMs);
  return alive(pid) ? 'still running after SIGKILL' : 'killed';
}

// ---------------------------------------------------------------- ports

/** A port free right now (bound to 0, then released): racy, so only where a lost race is retried. */
function pickPort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, LOOPBACK, () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

/** The address a brick reported through --port-file, when the report is from this pid. */
function reportedAddress(brick, pid) {
  try {
    const r = JSON.parse(readFileSync(brick.portFile, 'utf8'));
    return r.pid === pid ? r.address : undefined;
  } catch {
    return undefined;
  }
}

function portFree(port) {
  return new Promise((res) => {
    const srv = createServer();
    srv.once('error', () => res(false));
    srv.listen(port, LOOPBACK, () => srv.close(() => res(true)));
  });
}

/** "pid 123 (etcd)" of the listener on a TCP port, from ss; '' when unknown. */
function portOwner(port) {
  const r = spawnSync('ss', ['-Hltnp', `sport = :${port}`], { encoding: 'utf8' });
  const m = /users:\(\("([^"]*)",pid=(\d+)/.exec(r.stdout ?? '');
  return m ? `pid ${m[2]} (${m[1]})` : '';
}

async function requirePortFree(what, port, envName) {
  if (await portFree(port)) return;
  const owner = portOwner(port);
  fail(
    `${what} port ${port} is in use by ${owner || 'another process'}, not by this cluster; ` +
      `stop it or choose another port (${envName})`,
  );
}

// ---------------------------------------------------------------- etcd over HTTP

/**
 * A request to etcd's HTTP side with the launcher's client certificate (etcd
 * runs with --client-cert-auth; fetch() cannot present one). Resolves with
 * the status and the parsed body.
 */
function etcdRequest(cfg, path, body) {
  cfg.tlsPem ??= {
    ca: readFileSync(join(cfg.tls.client, 'ca.crt')),
    cert: readFileSync(join(cfg.tls.client, 'tls.crt')),
    key: readFileSync(join(cfg.tls.client, 'tls.key')),
  };
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      `${cfg.endpoint}${path}`,
      { method: body === undefined ? 'GET' : 'POST', ...cfg.tlsPem, timeout: limits.etcdRequestMs },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (text += c));
        res.on('end', () => {
          try {
            resolve({ status: res.statusCode, body: JSON.parse(text) });
          } catch (err) {
            reject(err);
          }
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`etcd ${path}: no answer in ${limits.etcdRequestMs} ms`)));
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

async function etcdHealthy(cfg) {
  try {
    const res = await etcdRequest(cfg, '/health');
    return res.status === 200 && res.body.health === 'true';
  } catch {
    return false;
  }
}

/**
 * etcd's gRPC API with the admin certificate (the client's before it exists:
 * a state dir of an older version). Not the JSON gateway: it cannot carry a
 * certificate's user, so etcd's RBAC refuses it.
 */
async function etcdKv(cfg) {
  if (cfg.kv?.endpoint !== cfg.endpoint) {
    cfg.kv?.kv.close().catch(() => {});
    const { EtcdKv } = await import(join(REPO, 'packages/coord/dist/src/etcd-kv.js'));
    const { loadEtcdTls } = await import(join(REPO, 'packages/coord/dist/src/etcd-security.js'));
    const { createLogger } = await import(join(REPO, 'packages/proto/dist/src/log.js'));
    const tlsDir = existsSync(join(cfg.tls.admin, 'tls.crt')) ? cfg.tls.admin : cfg.tls.client;
    const kv = new EtcdKv({
      endpoints: [cfg.endpoint],
      tls: await loadEtcdTls({ tlsDir }),
      rpcTimeoutMs: limits.etcdRequestMs,
      log: createLogger('launcher', () => {}),
    });
    cfg.kv = { endpoint: cfg.endpoint, kv };
  }
  return cfg.kv.kv;
}

/** Keys under a prefix, as {key: value}. */
async function etcdPrefix(cfg, prefix) {
  const r = await (await etcdKv(cfg)).range(prefix);
  return Object.fromEntries(r.entries.map((e) => [e.key, e.value]));
}

const volumeKey = (volume) => `/dunix/v1/volumes/${volume}/`;

function brickId(brick) {
  try {
    return JSON.parse(readFileSync(join(brick.dataDir, 'brick.json'), 'utf8')).id;
  } catch {
    return undefined;
  }
}

function dunixctl(cfg, args) {
  return spawnSync(
    process.execPath,
    [
      BIN.dunixctl,
      '--etcd',
      cfg.endpoint,
      '--tls-dir',
      existsSync(join(cfg.tls.admin, 'tls.crt')) ? cfg.tls.admin : cfg.tls.client,
      '--timeout',
      String(limits.dunixctlMs),
      ...args,
    ],
    { encoding: 'utf8', timeout: limits.dunixctlMs + 5_000 },
  );
}

// ---------------------------------------------------------------- mounts

const unescapeMount = (s) => s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));

function mountsAt(path) {
  const out = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (!line) continue;
    const [left, right] = line.split(' - ');
    const mp = unescapeMount(left.split(' ')[4]);
    const [fstype, source] = (right ?? '').split(' ');
    if (path === undefined || mp === path)
      out.push({ mountpoint: mp, fstype, source: unescapeMount(source) });
  }
  return out;
}

/** 'ok', 'stale' (ENOTCONN: the client is gone) or 'hung' (no answer within ms). */
async function probeMount(path, ms = limits.statMountMs) {
  const timeout = sleep(ms).then(() => 'hung');
  const probe = stat(path).then(
    () => 'ok',
    (e) => (e.code === 'ENOTCONN' ? 'stale' : 'ok'),
  );
  return Promise.race([probe, timeout]);
}

/** "pid (comm)" of processes whose cwd, root or an open file is under path: what keeps a mount busy. */
function usersOf(path) {
  const out = [];
  const under = (p) => p === path || p.startsWith(`${path}/`);
  for (const pid of readdirSync('/proc').filter((d) => /^[0-9]+$/.test(d))) {
    const links = ['cwd', 'root'].map((l) => `/proc/${pid}/${l}`);
    try {
      for (const fd of readdirSync(`/proc/${pid}/fd`)) links.push(`/proc/${pid}/fd/${fd}`);
    } catch {
      // gone, or not ours to read
    }
    const hit = links.some((l) => {
      try {
        return under(readlinkSync(l));
      } catch {
        return false;
      }
    });
    if (hit) out.push(`${pid} (${readFileSync(`/proc/${pid}/comm`, 'utf8').trim()})`);
  }
  return out;
}

function umount(args) {
  const r = spawnSync('umount', args, { encoding: 'utf8' });
  return { ok: r.status === 0, err: (r.stderr || '').trim() };
}

// ---------------------------------------------------------------- status

async function collectStatus(cfg) {
  adoptRunningEtcd(cfg);
  const etcdPid = ourPid(cfg.etcd.pidFile, (p) => isOurEtcd(p, cfg));
  const runningPort = etcdPid ? argValue(cmdline(etcdPid), '--listen-client-urls') : undefined;
  const healthy = etcdPid && cfg.endpoint ? await etcdHealthy(cfg) : false;
  const clientPid = ourPid(cfg.client.pidFile, (p) => isOurClient(p, cfg));
  const status = {
    stateDir: cfg.stateDir,
    etcd: {
      pid: etcdPid ?? null,
      port: cfg.etcdClientPort ?? cfg.etcdPort,
      peerPort: cfg.etcdPeerPortInUse ?? cfg.etcdPeerPort,
      alive: etcdPid !== undefined,
      healthy,
      endpoint: runningPort ?? cfg.endpoint ?? null,
      log: cfg.etcd.logFile,
    },
    bricks: [],
    volume: { name: cfg.volume, exists: false },
    mount: {
      path: cfg.mountPoint,
      mounted: false,
      state: 'not mounted',
      source: null,
      clientPid: clientPid ?? null,
      log: cfg.mountLog,
    },
    ok: false,
  };
  // One read of the volume's keys (layout: packages/coord/src/keys.ts) answers everything below.
  const alive = {};
  const members = {};
  const placement = [];
  let config;
  if (healthy) {
    try {
      const kv = await etcdPrefix(cfg, volumeKey(cfg.volume));
      for (const [k, v] of Object.entries(kv)) {
        const m = /\/(config|alive|members|placement)(?:\/([^/]+))?$/.exec(
          k.slice(volumeKey(cfg.volume).length - 1),
        );
        if (!m) continue;
        if (m[1] === 'config') config = JSON.parse(v);
        else if (m[1] === 'alive') alive[m[2]] = true;
        else if (m[1] === 'members') members[m[2]] = true;
        else placement.push(JSON.parse(v));
      }
    } catch (e) {
      status.volume.error = e.message;
    }
  }
  for (const b of cfg.bricks) {
    const pid = ourPid(b.pidFile, (p) => isOurBrick(p, b));
    const id = brickId(b);
    const address = pid === undefined ? undefined : reportedAddress(b, pid);
    status.bricks.push({
      name: b.name,
      pid: pid ?? null,
      port: address ? Number(address.slice(address.lastIndexOf(':') + 1)) : b.port,
      alive: pid !== undefined,
      id: id ?? null,
      registered: Boolean(id && members[id]),
      live: Boolean(id && alive[id]),
      dataDir: b.dataDir,
      log: b.logFile,
    });
  }
  if (config) {
    const up = (pg) => pg.bricks.filter((id) => alive[id]).length;
    Object.assign(status.volume, {
      exists: true,
      pgCount: config.pgCount,
      replicas: config.replicas,
      bricks: Object.keys(members).length,
      bricksAlive: Object.keys(members).filter((id) => alive[id]).length,
      pgsDegraded: placement.filter((pg) => up(pg) < pg.bricks.length).length,
      pgsUnavailable:
        placement.filter((pg) => up(pg) === 0).length + Math.max(0, config.pgCount - placement.length),
    });
  }
  const m = mountsAt(cfg.mountPoint).filter((x) => x.fstype === FSTYPE);
  if (m.length > 0) {
    const probe = await probeMount(cfg.mountPoint);
    Object.assign(status.mount, {
      mounted: probe === 'ok',
      state: probe === 'ok' ? 'mounted' : probe === 'stale' ? 'stale (client gone)' : 'not answering',
      source: m[m.length - 1].source,
    });
  }
  status.ok =
    status.etcd.healthy &&
    status.bricks.every((b) => b.alive && b.live) &&
    status.volume.exists &&
    status.volume.pgsUnavailable === 0 &&
    status.mount.mounted;
  return status;
}

function table(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => String(c).padEnd(widths[i]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function renderStatus(s) {
  const yes = (b) => (b ? 'yes' : 'no');
  const rows = [['COMPONENT', 'PID', 'PORT', 'ALIVE', 'DETAIL']];
  rows.push([
    'etcd',
    s.etcd.pid ?? '-',
    s.etcd.port,
    yes(s.etcd.alive),
    s.etcd.alive ? (s.etcd.healthy ? `healthy, ${s.etcd.endpoint}` : 'not healthy') : `log ${s.etcd.log}`,
  ]);
  for (const b of s.bricks) {
    const detail = !b.alive
      ? `log ${b.log}`
      : b.live
        ? `registered, id ${b.id}`
        : `not registered in etcd yet${b.id ? `, id ${b.id}` : ''}`;
    rows.push([`brick ${b.name}`, b.pid ?? '-', b.port, yes(b.alive), detail]);
  }
  const v = s.volume;
  let vDetail = 'does not exist';
  if (v.exists && v.pgCount !== undefined) {
    vDetail =
      `${v.pgCount} PGs, ${v.replicas} replica(s), bricks ${v.bricksAlive}/${v.bricks} alive, ` +
      `PGs unavailable ${v.pgsUnavailable}`;
  } else if (v.exists) vDetail = `exists (${v.error ?? 'status unknown'})`;
  else if (!s.etcd.healthy) vDetail = 'unknown (etcd down)';
  rows.push([`volume ${v.name}`, '-', '-', yes(v.exists && v.pgsUnavailable === 0), vDetail]);
  rows.push([
    `mount ${s.mount.path}`,
    s.mount.clientPid ?? '-',
    '-',
    yes(s.mount.mounted),
    s.mount.source ? `${s.mount.state}, ${s.mount.source}` : s.mount.state,
  ]);
  return `${table(rows)}\nstate dir ${s.stateDir}: ${s.ok ? 'cluster is up' : 'cluster is NOT fully up'}\n`;
}

function stopHint(cfg) {
  const envs = [];
  if (cfg.stateDir !== '/var/lib/dunix') envs.push(`DUNIX_STATE=${cfg.stateDir}`);
  const prefix = envs.length ? `${envs.join(' ')} ` : '';
  return (
    `stop it with: ${prefix}npm stop   (or ${prefix}node deploy/local-cluster.mjs stop); ` +
    `data stays in ${cfg.stateDir}`
  );
}

// ---------------------------------------------------------------- start

function run(cmd, args, what) {
  const r = spawnSync(cmd, args, { cwd: REPO, stdio: 'inherit' });
  if (r.status !== 0) fail(`${what} failed (${cmd} ${args.join(' ')}: exit ${r.status ?? r.signal})`);
}

async function step(name, fn) {
  const t0 = Date.now();
  const detail = await fn();
  say(`${name}${detail ? `: ${detail}` : ''} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}

function mtimeMs(path) {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}

function installAndBuild(cfg) {
  if (cfg.install) {
    run('bash', ['scripts/install-deps.sh'], 'installing system packages');
    const lock = mtimeMs(join(REPO, 'package-lock.json'));
    const installed = mtimeMs(join(REPO, 'node_modules/.package-lock.json'));
    if (installed === undefined || (lock !== undefined && installed < lock)) {
      say('node_modules is missing or older than package-lock.json: npm ci');
      run('npm', ['ci', '--no-audit', '--no-fund'], 'npm ci');
    }
  }
  if (cfg.build) {
    const build = (args) =>
      spawnSync('npx', ['tsc', '-b', ...args], { cwd: REPO, stdio: 'inherit' }).status === 0;
    // A broken test file elsewhere must not keep the daemons from building.
    if (!build([]) && !build(['packages/proto', 'packages/coord', 'packages/brickd', 'packages/mount'])) {
      if (!Object.values(BIN).every((f) => existsSync(f))) fail('the build failed (errors above)');
      say('WARNING: the build failed (errors above); running the dist built before, which may be stale');
    }
  }
  for (const f of Object.values(BIN))
    if (!existsSync(f)) fail(`${f} is missing: build first (npm run build)`);
}

function installMountWrapper() {
  const text =
    '#!/bin/sh\n' +
    '# mount(8) helper for `mount -t dunixfs`, `mount -t fuse.dunixfs` and fstab entries;\n' +
    `# installed by ${join(REPO, 'deploy/local-cluster.mjs')}.\n` +
    `exec ${process.execPath} ${BIN.mountHelper} "$@"\n`;
  const done = [];
  for (const path of [MOUNT_WRAPPER, MOUNT_WRAPPER_FUSE]) {
    let old;
    try {
      old = readFileSync(path, 'utf8');
    } catch {
      old = undefined;
    }
    if (old === text) continue;
    writeAtomic(path, text, 0o755);
    done.push(`${old === undefined ? 'installed' : 'updated'} ${path}`);
  }
  return done.length ? done.join(', ') : 'up to date';
}

function daemonEnv(strip) {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !strip.some((p) => k.startsWith(p))));
}

/**
 * The CA of this state dir and the certificates of etcd, each brick and the
 * local client, made on first start (dunixctl ca init, cert issue); kept
 * across stop and start like the data.
 */
async function ensureCertificates(cfg) {
  // In this process (what dunixctl ca init / cert issue run): a node start per certificate
  // cost most of a cold start on a loaded host.
  const { initCa, issueCert } = await import(join(REPO, 'packages/coord/dist/src/ca.js'));
  const made = [];
  if (!existsSync(join(cfg.tls.ca, 'ca.key'))) {
    await initCa(cfg.tls.ca);
    made.push('CA');
  }
  const want = [
    [cfg.tls.etcd, 'etcd'],
    [cfg.tls.client, 'client'],
    [cfg.tls.admin, 'admin'],
    ...cfg.bricks.map((b) => [b.tlsDir, 'brick']),
  ];
  for (const [dir, role] of want) {
    const file = join(dir, 'tls.crt');
    // A certificate of an older version (CN=NAME, without its kind) has no etcd user: issued again.
    const current = existsSync(file) && /CN=[a-z]+:/.test(new X509Certificate(readFileSync(file)).subject);
    if (current) continue;
    await issueCert(cfg.tls.ca, { role, name: basename(dir), force: true });
    made.push(`${role}:${basename(dir)}`);
  }
  return made.length ? `made ${made.join(', ')} in ${cfg.tls.ca}` : `in ${cfg.tls.ca}`;
}

async function startEtcd(cfg) {
  adoptRunningEtcd(cfg);
  const pid = ourPid(cfg.etcd.pidFile, (p) => isOurEtcd(p, cfg));
  if (pid !== undefined) {
    const url = argValue(cmdline(pid), '--listen-client-urls');
    if (url !== cfg.endpoint) {
      fail(`etcd of this state dir runs (pid ${pid}) on ${url}, not ${cfg.endpoint}: stop the cluster first`);
    }
    if (!(await etcdHealthy(cfg))) await waitEtcd(cfg, pid);
    return `already running, pid ${pid}`;
  }
  if (cfg.etcdPort !== 0) {
    await requirePortFree('etcd client', cfg.etcdPort, 'DUNIX_ETCD_PORT');
    await requirePortFree('etcd peer', cfg.etcdPeerPort, 'DUNIX_ETCD_PEER_PORT');
    const logStart = fileSize(cfg.etcd.logFile);
    const newPid = spawnEtcd(cfg);
    if ((await waitEtcd(cfg, newPid, logStart)) === 'port taken') {
      fail(`etcd: port ${cfg.etcdPort} or ${cfg.etcdPeerPort} was taken while it started; start again`);
    }
    return `started, pid ${newPid}, ${cfg.endpoint}`;
  }
  // Any ports: chosen here (etcd cannot bind 0: its HTTP gateway would dial port 0), so another
  // process may bind one first; then etcd exits and starts again on new ones.
  for (let attempt = 1; attempt <= limits.etcdPortAttempts; attempt++) {
    const clientPort = await pickPort();
    let peerPort = await pickPort();
    while (peerPort === clientPort) peerPort = await pickPort();
    setEtcdPorts(cfg, clientPort, peerPort);
    const logStart = fileSize(cfg.etcd.logFile);
    const newPid = spawnEtcd(cfg);
    if ((await waitEtcd(cfg, newPid, logStart)) === 'ready') return `started, pid ${newPid}, ${cfg.endpoint}`;
    say(`etcd: port ${clientPort} or ${peerPort} was taken while it started; new ports (try ${attempt})`);
  }
  return fail(`etcd lost the race for its ports ${limits.etcdPortAttempts} times; log ${cfg.etcd.logFile}`);
}

/** Starts etcd of this state dir on cfg's current ports; returns its pid. */
function spawnEtcd(cfg) {
  const client = cfg.endpoint;
  const peer = `https://${LOOPBACK}:${cfg.etcdPeerPortInUse}`;
  const cert = (f) => join(cfg.tls.etcd, f);
  const name = 'dunix-local';
  const args = [
    `--name=${name}`,
    `--data-dir=${cfg.etcdDir}`,
    `--listen-client-urls=${client}`,
    `--advertise-client-urls=${client}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=${name}=${peer}`,
    '--initial-cluster-state=new',
    '--initial-cluster-token=dunix-local',
    // Placement of the largest volume (65536 PGs + config) goes in one transaction.
    '--max-txn-ops=65600',
    `--max-request-bytes=${32 * 1024 * 1024}`,
    // TLS with client certificates of this state dir's CA, on the client and the peer port.
    `--cert-file=${cert('tls.crt')}`,
    `--key-file=${cert('tls.key')}`,
    `--trusted-ca-file=${cert('ca.crt')}`,
    '--client-cert-auth',
    `--peer-cert-file=${cert('tls.crt')}`,
    `--peer-key-file=${cert('tls.key')}`,
    `--peer-trusted-ca-file=${cert('ca.crt')}`,
    '--peer-client-cert-auth',
    '--logger=zap',
    '--log-level=warn',
  ];
  // No ETCD_* variable may override the flags (a listen address above all).
  return spawnDetached(BIN.etcd, args, {
    logFile: cfg.etcd.logFile,
    pidFile: cfg.etcd.pidFile,
    env: daemonEnv(['ETCD_']),
    cwd: cfg.stateDir,
  });
}

/**
 * 'ready' once etcd `pid` answers /health on its own socket (whoever won a
 * race for the port would answer too); 'port taken' if it exited because a
 * port was in use. Fails otherwise.
 */
async function waitEtcd(cfg, pid, logStart = fileSize(cfg.etcd.logFile)) {
  const deadline = Date.now() + limits.etcdReadyMs;
  while (!((await etcdHealthy(cfg)) && listensOn(pid, cfg.etcdClientPort))) {
    if (!alive(pid)) {
      rmSync(cfg.etcd.pidFile, { force: true });
      if (/address already in use/.test(textSince(cfg.etcd.logFile, logStart))) return 'port taken';
      fail(`etcd exited before it was ready; log ${cfg.etcd.logFile}:\n${logTail(cfg.etcd.logFile)}`);
    }
    if (Date.now() > deadline) {
      fail(`etcd (pid ${pid}) not healthy after ${limits.etcdReadyMs / 1000} s; log ${cfg.etcd.logFile}`);
    }
    await sleep(limits.pollMs);
  }
  return 'ready';
}

async function startBricks(cfg) {
  // The Node options every brick runs with (packages/proto/src/node-flags.ts); the build is done by now.
  const { brickdNodeFlags } = await import(join(REPO, 'packages/proto/dist/src/node-flags.js'));
  const pids = new Map();
  const started = [];
  for (const b of cfg.bricks) {
    const pid = ourPid(b.pidFile, (p) => isOurBrick(p, b));
    if (pid !== undefined) {
      const listen = argValue(cmdline(pid), '--listen');
      if (listen !== `${LOOPBACK}:${b.port}`) {
        fail(
          `brick ${b.name} runs (pid ${pid}) on ${listen}, not ${LOOPBACK}:${b.port}: stop the cluster first`,
        );
      }
      const etcd = argValue(cmdline(pid), '--etcd');
      if (etcd !== cfg.endpoint) {
        fail(
          `brick ${b.name} runs (pid ${pid}) with etcd ${etcd}, not ${cfg.endpoint}: stop the cluster first`,
        );
      }
      pids.set(b, pid);
      continue;
    }
    // Port 0: the brick binds any free port itself and reports it in its port file (status reads it).
    if (b.port !== 0) await requirePortFree(`brick ${b.name}`, b.port, 'DUNIX_BRICK_PORT');
    mkdirSync(b.dataDir, { recursive: true });
    rmSync(b.portFile, { force: true });
    const args = [
      ...brickdNodeFlags,
      BIN.brickd,
      '--data',
      b.dataDir,
      '--listen',
      `${LOOPBACK}:${b.port}`,
      '--port-file',
      b.portFile,
      '--etcd',
      cfg.endpoint,
      '--volume',
      cfg.volume,
      '--tls-dir',
      b.tlsDir,
    ];
    pids.set(
      b,
      spawnDetached(process.execPath, args, { logFile: b.logFile, pidFile: b.pidFile, cwd: cfg.stateDir }),
    );
    started.push(b.name);
  }
  // Ready = each brick's liveness key is in etcd (it registered; volume create needs that).
  const deadline = Date.now() + limits.bricksReadyMs;
  for (;;) {
    for (const [b, pid] of pids) {
      if (!alive(pid)) {
        rmSync(b.pidFile, { force: true });
        fail(`brick ${b.name} exited; log ${b.logFile}:\n${logTail(b.logFile)}`);
      }
    }
    let live = {};
    try {
      live = await etcdPrefix(cfg, `${volumeKey(cfg.volume)}alive/`);
    } catch {
      live = {};
    }
    const waiting = cfg.bricks.filter((b) => {
      const id = brickId(b);
      return !id || !(`${volumeKey(cfg.volume)}alive/${id}` in live);
    });
    if (waiting.length === 0) break;
    if (Date.now() > deadline) {
      fail(
        `bricks ${waiting.map((b) => b.name).join(', ')} did not register in etcd within ` +
          `${limits.bricksReadyMs / 1000} s; logs in ${cfg.logDir}`,
      );
    }
    await sleep(limits.pollMs);
  }
  const pidList = cfg.bricks.map((b) => `${b.name}=${pids.get(b)}`).join(' ');
  return started.length
    ? `started ${started.join(', ')}; pids ${pidList}`
    : `already running, pids ${pidList}`;
}

/**
 * etcd's RBAC (dunixctl etcd auth enable): a user per certificate of this
 * state dir, each with its kind's role, then auth on. Run at every start: it
 * may be run again, and adds a user a new certificate needs.
 */
function ensureEtcdAuth(cfg) {
  const users = [...cfg.bricks.map((b) => `brick:${b.name}`), 'client:local', 'admin:local'];
  const r = dunixctl(cfg, ['etcd', 'auth', 'enable', ...users]);
  if (r.status !== 0) fail(`etcd auth enable failed: ${(r.stderr || r.stdout).trim()}`);
  return `on; users ${users.join(', ')}`;
}

async function ensureVolume(cfg) {
  const configKey = `${volumeKey(cfg.volume)}config`;
  const exists = async () => configKey in (await etcdPrefix(cfg, configKey));
  if (await exists()) return `${cfg.volume} exists`;
  const r = dunixctl(cfg, [
    'volume',
    'create',
    cfg.volume,
    '--pgs',
    String(cfg.pgs),
    '--replicas',
    String(cfg.replicas),
  ]);
  if (r.status !== 0) {
    if (await exists()) return `${cfg.volume} exists (created concurrently)`;
    fail(`creating volume ${cfg.volume} failed: ${(r.stderr || r.stdout).trim()}`);
  }
  return `created ${cfg.volume} with ${cfg.pgs} PGs`;
}

async function ensureMounted(cfg) {
  const here = mountsAt(cfg.mountPoint);
  const ours = here.filter((m) => m.fstype === FSTYPE);
  if (ours.length > 0) {
    const probe = await probeMount(cfg.mountPoint);
    if (probe === 'ok') return `already mounted (${ours[ours.length - 1].source})`;
    if (probe === 'hung') fail(`${cfg.mountPoint} is mounted but does not answer; run stop, then start`);
    say(`${cfg.mountPoint}: stale dunixfs mount (client gone): umount -l`);
    const u = umount(['-l', cfg.mountPoint]);
    if (!u.ok) fail(`umount -l ${cfg.mountPoint} failed: ${u.err}`);
  } else if (here.length > 0) {
    const m = here[here.length - 1];
    fail(
      `${cfg.mountPoint} already has a ${m.fstype} mount (${m.source}); choose another mount point (DUNIX_MOUNT)`,
    );
  }
  mkdirSync(cfg.mountPoint, { recursive: true });
  // The client is started like the other daemons (not through mount(8), whose helper forgets
  // its PID): stop waits for this PID to exit and signals it if it does not.
  const args = [BIN.client, cfg.spec, cfg.mountPoint, '-o', `tls_dir=${cfg.tls.client}`];
  const pid = spawnDetached(process.execPath, args, {
    logFile: cfg.mountLog,
    pidFile: cfg.client.pidFile,
    cwd: cfg.stateDir,
  });
  const deadline = Date.now() + limits.mountReadyMs;
  while (!mountsAt(cfg.mountPoint).some((m) => m.fstype === FSTYPE)) {
    if (!alive(pid)) {
      rmSync(cfg.client.pidFile, { force: true });
      fail(`the client exited before mounting; log ${cfg.mountLog}:\n${logTail(cfg.mountLog)}`);
    }
    if (Date.now() > deadline) {
      await terminate('client', pid, limits.clientStopMs);
      if (!alive(pid)) rmSync(cfg.client.pidFile, { force: true });
      fail(`${cfg.mountPoint} not mounted after ${limits.mountReadyMs / 1000} s; log ${cfg.mountLog}`);
    }
    await sleep(limits.pollMs);
  }
  // Mounted is not yet answering: after a restart the PG of the root may still be peering
  // (seconds under load). One stat, given what is left of the deadline (a stat that hangs
  // holds a thread-pool thread, so it is not repeated).
  const probe = await probeMount(cfg.mountPoint, Math.max(limits.statMountMs, deadline - Date.now()));
  if (probe !== 'ok')
    fail(
      `${cfg.mountPoint} is mounted but ${probe === 'stale' ? 'its client is gone' : 'does not answer'}; log ${cfg.mountLog}`,
    );
  return `mounted ${cfg.spec} on ${cfg.mountPoint}, client pid ${pid} (log ${cfg.mountLog})`;
}

async function cmdStart(cfg) {
  if (process.getuid?.() !== 0) fail('start needs root (apt, /dev/fuse, mount)');
  const t0 = Date.now();
  for (const d of [cfg.stateDir, cfg.logDir, cfg.runDir]) mkdirSync(d, { recursive: true });
  await step('dependencies and build', () => {
    installAndBuild(cfg);
    return cfg.install || cfg.build ? 'ok' : 'skipped';
  });
  await step(MOUNT_WRAPPER, () => (cfg.install ? installMountWrapper() : 'skipped'));
  await step('certificates', () => ensureCertificates(cfg));
  await step('etcd', () => startEtcd(cfg));
  recordConfig(cfg); // stop and status of this state dir use it
  await step('etcd auth', () => ensureEtcdAuth(cfg));
  await step('bricks', () => startBricks(cfg));
  await step('volume', () => ensureVolume(cfg));
  await step('mount', () => ensureMounted(cfg));
  const s = await collectStatus(cfg);
  process.stdout.write(`\n${renderStatus(s)}`);
  say(`start took ${((Date.now() - t0) / 1000).toFixed(1)} s; ${stopHint(cfg)}`);
  return s.ok ? 0 : 1;
}

// ---------------------------------------------------------------- stop

/** Unmounts our mount; lazy: it had to be detached lazily (busy or stale), so the client may not end by itself. */
async function unmountOurs(cfg) {
  const isOurs = () => mountsAt(cfg.mountPoint).some((m) => m.fstype === FSTYPE);
  if (!isOurs()) return { detail: 'not mounted', lazy: false };
  for (let i = 1; i <= limits.umountTries; i++) {
    const u = umount([cfg.mountPoint]);
    if (u.ok || !isOurs()) return { detail: `unmounted ${cfg.mountPoint}`, lazy: false };
    if (/not connected/i.test(u.err)) break; // stale: only a lazy unmount helps
    const users = usersOf(cfg.mountPoint);
    say(
      `umount: ${u.err} (try ${i}/${limits.umountTries}${users.length ? `; in use by ${users.join(', ')}` : ''})`,
    );
    await sleep(limits.umountRetryMs);
  }
  const u = umount(['-l', cfg.mountPoint]);
  if (!u.ok && isOurs()) fail(`umount -l ${cfg.mountPoint} failed: ${u.err}`);
  return { detail: `lazily unmounted ${cfg.mountPoint} (was busy or stale)`, lazy: true };
}

/**
 * After a clean unmount the client ends by itself (once it has published
 * buffered data); after a lazy one it may not (a process still has a file
 * open in the detached mount), so it gets SIGTERM at once: it aborts the
 * connection after a grace period and exits. SIGKILL if it does not.
 */
async function stopClient(cfg, lazy) {
  const pid = ourPid(cfg.client.pidFile, (p) => isOurClient(p, cfg));
  let result = 'not running';
  if (pid !== undefined) {
    const deadline = Date.now() + (lazy ? 0 : limits.clientExitMs);
    while (alive(pid) && Date.now() < deadline) await sleep(limits.pollMs);
    result = alive(pid) ? await terminate('client', pid, limits.clientStopMs) : 'exited';
    if (!alive(pid)) rmSync(cfg.client.pidFile, { force: true });
    result = `${result} (pid ${pid})`;
  }
  // A killed client leaves a dead mount behind (its watchdog detaches it too, moments later).
  if (
    mountsAt(cfg.mountPoint).some((m) => m.fstype === FSTYPE) &&
    (await probeMount(cfg.mountPoint)) !== 'ok'
  ) {
    umount(['-l', cfg.mountPoint]);
    result += `; detached the dead mount ${cfg.mountPoint}`;
  }
  return result;
}

async function cmdStop(cfg) {
  if (process.getuid?.() !== 0) fail('stop needs root (umount, signals to root daemons)');
  adoptRunningEtcd(cfg);
  // A failed unmount must not keep the daemons running: carry on, fail at the end.
  let lazy = true;
  let mountError;
  await step('mount', async () => {
    try {
      const u = await unmountOurs(cfg);
      lazy = u.lazy;
      return u.detail;
    } catch (e) {
      mountError = e;
      return `failed: ${e.message}`;
    }
  });
  await step('client', () => stopClient(cfg, lazy));
  const port = cfg.etcdClientPort ?? cfg.etcdPort;
  const others = mountsAt()
    .filter((m) => m.fstype === FSTYPE && m.source.startsWith(`${LOOPBACK}:${port}/`))
    .map((m) => m.mountpoint);
  if (others.length) say(`warning: still mounted from this cluster (left alone): ${others.join(', ')}`);
  await step('bricks', async () => {
    const results = await Promise.all(
      cfg.bricks.map(async (b) => {
        const pid = ourPid(b.pidFile, (p) => isOurBrick(p, b));
        const r =
          pid === undefined ? 'not running' : await terminate(`brick ${b.name}`, pid, limits.brickStopMs);
        if (!pid || !alive(pid)) rmSync(b.pidFile, { force: true });
        return `${b.name} ${r}`;
      }),
    );
    return results.join(', ');
  });
  await step('etcd', async () => {
    const pid = ourPid(cfg.etcd.pidFile, (p) => isOurEtcd(p, cfg));
    const r = pid === undefined ? 'not running' : await terminate('etcd', pid, limits.etcdStopMs);
    if (!pid || !alive(pid)) rmSync(cfg.etcd.pidFile, { force: true });
    return r;
  });
  const left = [
    ['client', cfg.client.pidFile, (p) => isOurClient(p, cfg)],
    ...cfg.bricks.map((b) => [`brick ${b.name}`, b.pidFile, (p) => isOurBrick(p, b)]),
    ['etcd', cfg.etcd.pidFile, (p) => isOurEtcd(p, cfg)],
  ]
    .map(([name, pidFile, isOurs]) => [name, ourPid(pidFile, isOurs)])
    .filter(([, pid]) => pid !== undefined);
  if (left.length)
    fail(`still running after stop: ${left.map(([n, pid]) => `${n} (pid ${pid})`).join(', ')}`);
  if (mountError) throw mountError;
  say(`stopped; data stays in ${cfg.stateDir}`);
  return 0;
}

// ---------------------------------------------------------------- main

async function main(argv) {
  const { values, positionals } = parseCli(argv);
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const [cmd, ...extra] = positionals;
  if (!['start', 'stop', 'status'].includes(cmd) || extra.length) fail(USAGE);
  const cfg = resolveConfig(values, process.env);
  if (cmd === 'start') return cmdStart(cfg);
  if (cmd === 'stop') return cmdStop(cfg);
  const s = await collectStatus(cfg);
  process.stdout.write(cfg.json ? `${JSON.stringify(s, null, 2)}\n` : renderStatus(s));
  return s.ok ? 0 : 3;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`local-cluster: ${e instanceof UserError ? e.message : (e?.stack ?? e)}\n`);
    process.exit(1);
  },
);
