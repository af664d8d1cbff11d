import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, type Logger } from '@dunix/proto';

/**
 * Starts etcd as a child process, bound to 127.0.0.1 only, for tests and the
 * local cluster launcher: one member (spawnEtcd) or a cluster of several
 * (spawnEtcdCluster). Never listens on another address.
 */
export interface SpawnEtcdOptions {
  /** Kept after stop() when given; a temp dir (removed on stop) otherwise. */
  dataDir?: string;
  clientPort?: number;
  peerPort?: number;
  log?: Logger;
  /** Path of the etcd binary. */
  binary?: string;
  /** How long to wait for /health (default 20 s). */
  readyTimeoutMs?: number;
  /** SIGTERM → SIGKILL grace period in stop() (default 5 s). */
  stopTimeoutMs?: number;
  /**
   * TLS on client and peer URLs with client certificates required
   * (--client-cert-auth, --peer-client-cert-auth), all from one CA. The
   * server certificate (`dunixctl cert issue --etcd NAME`) is valid for
   * 127.0.0.1 and is also what the readiness probe presents.
   */
  tls?: EtcdTlsFilesOfServer;
}

/** The files of an etcd server certificate (a directory from `dunixctl cert issue --etcd NAME`). */
export interface EtcdTlsFilesOfServer {
  caFile: string;
  certFile: string;
  keyFile: string;
}

export interface EtcdProcess {
  /** 'http://127.0.0.1:PORT', or https:// with TLS */
  endpoint: string;
  /** The member's name in the cluster. */
  name: string;
  pid: number;
  dataDir: string;
  clientPort: number;
  peerPort: number;
  /** SIGTERM, SIGKILL after the grace period, then removes a temp data dir. Idempotent. */
  stop(): Promise<void>;
}

const LOOPBACK = '127.0.0.1';

export class PortInUseError extends Error {}
/** Placement of the largest volume (65536 PGs + config) goes in one transaction. */
const MAX_TXN_OPS = 65_600;
const MAX_REQUEST_BYTES = 32 * 1024 * 1024;

/**
 * Spawns with ports picked by freePort() before giving up. A picked port can
 * be taken before etcd binds it (etcd cannot bind port 0 itself: its HTTP
 * gateway would dial port 0); each such loss costs one attempt.
 */
const PORT_ATTEMPTS_MAX = 10;

/**
 * A free TCP port on 127.0.0.1, found by binding port 0 (or checks that
 * `port` is free). Racy by nature: the port is free now, not when the caller
 * binds it; use it only where a lost race is retried (spawnEtcd).
 */
export function freePort(port = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', (e: NodeJS.ErrnoException) =>
      reject(e.code === 'EADDRINUSE' ? new PortInUseError(`port ${port} on ${LOOPBACK} is in use`) : e),
    );
    srv.listen(port, LOOPBACK, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error('no port'))));
    });
  });
}

function checkPort(name: string, port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    throw new RangeError(`${name} ${port} is not a port`);
}

interface TlsPem {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

async function healthy(endpoint: string, timeoutMs: number, tls: TlsPem | undefined): Promise<boolean> {
  if (!tls) {
    try {
      const res = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(timeoutMs) });
      if (!res.ok) return false;
      const body = (await res.json()) as { health?: string };
      return body.health === 'true';
    } catch {
      return false;
    }
  }
  // fetch() cannot present a client certificate; with --client-cert-auth /health wants one.
  return new Promise((resolve) => {
    const req = httpsRequest(
      `${endpoint}/health`,
      { ca: tls.ca, cert: tls.cert, key: tls.key, timeout: timeoutMs },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => {
          try {
            resolve(res.statusCode === 200 && (JSON.parse(body) as { health?: string }).health === 'true');
          } catch {
            resolve(false);
          }
        });
        res.on('error', () => resolve(false));
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

async function readTls(f: EtcdTlsFilesOfServer | undefined): Promise<TlsPem | undefined> {
  if (!f) return undefined;
  const [ca, cert, key] = await Promise.all([readFile(f.caFile), readFile(f.certFile), readFile(f.keyFile)]);
  return { ca, cert, key };
}

function tlsArgs(f: EtcdTlsFilesOfServer | undefined): string[] {
  if (!f) return [];
  return [
    `--cert-file=${f.certFile}`,
    `--key-file=${f.keyFile}`,
    `--trusted-ca-file=${f.caFile}`,
    '--client-cert-auth',
    `--peer-cert-file=${f.certFile}`,
    `--peer-key-file=${f.keyFile}`,
    `--peer-trusted-ca-file=${f.caFile}`,
    '--peer-client-cert-auth',
  ];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Whether process `pid` holds a TCP socket listening on `port` (IPv4), from /proc. */
export function listensOn(pid: number, port: number): boolean {
  const hexPort = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const inodes = new Set<string>();
  const TCP_LISTEN = '0A';
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
    const f = line.trim().split(/\s+/);
    if (f[1]?.endsWith(hexPort) && f[3] === TCP_LISTEN && f[9]) inodes.add(`socket:[${f[9]}]`);
  }
  if (inodes.size === 0) return false;
  try {
    return readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        return inodes.has(readlinkSync(`/proc/${pid}/fd/${fd}`));
      } catch {
        return false;
      }
    });
  } catch {
    return false;
  }
}

export async function spawnEtcd(opts: SpawnEtcdOptions = {}): Promise<EtcdProcess> {
  const log = opts.log ?? createLogger('etcd-process');
  const fixedPorts = opts.clientPort !== undefined || opts.peerPort !== undefined;
  // Ports found by binding 0 can be taken before etcd binds them: try again with new ones.
  for (let attempt = 1; ; attempt++) {
    try {
      return await spawnOnce(opts, log);
    } catch (e) {
      if (fixedPorts || attempt >= PORT_ATTEMPTS_MAX || !(e instanceof PortInUseError)) throw e;
      log.warn('etcd port taken; retrying with new ports', { attempt, err: e.message });
    }
  }
}

async function spawnOnce(opts: SpawnEtcdOptions, log: Logger): Promise<EtcdProcess> {
  const clientPort = opts.clientPort ?? (await freePort());
  let peerPort = opts.peerPort ?? (await freePort());
  while (peerPort === clientPort) peerPort = await freePort();
  checkPort('clientPort', clientPort);
  checkPort('peerPort', peerPort);
  // A given port must be free: /health on a busy port would be answered by someone else.
  if (opts.clientPort !== undefined) await freePort(opts.clientPort);
  if (opts.peerPort !== undefined) await freePort(opts.peerPort);
  const scheme = opts.tls ? 'https' : 'http';
  const name = 'dunix-etcd';
  return startMember(opts, log, {
    name,
    clientPort,
    peerPort,
    dataDir: opts.dataDir,
    initialCluster: `${name}=${scheme}://${LOOPBACK}:${peerPort}`,
    token: `dunix-${process.pid}-${clientPort}`,
  });
}

export interface SpawnEtcdClusterOptions extends Omit<
  SpawnEtcdOptions,
  'dataDir' | 'clientPort' | 'peerPort'
> {
  /** Members (3 or 5 for a quorum that survives 1 or 2 losses). */
  size: number;
}

/**
 * A cluster of `size` etcd members on loopback, each its own process with
 * its own temp data dir; resolves once every member is healthy (which needs
 * a quorum). stop() each member, or all of them.
 */
export async function spawnEtcdCluster(opts: SpawnEtcdClusterOptions): Promise<EtcdProcess[]> {
  if (!Number.isInteger(opts.size) || opts.size < 1 || opts.size > 7)
    throw new RangeError(`etcd cluster size ${opts.size} must be 1..7`);
  const log = opts.log ?? createLogger('etcd-process');
  for (let attempt = 1; ; attempt++) {
    const ports = new Set<number>();
    while (ports.size < opts.size * 2) ports.add(await freePort());
    const p = [...ports];
    const scheme = opts.tls ? 'https' : 'http';
    const members = Array.from({ length: opts.size }, (_, i) => ({
      name: `dunix-etcd-${i}`,
      clientPort: p[2 * i]!,
      peerPort: p[2 * i + 1]!,
      dataDir: undefined,
    }));
    const initialCluster = members.map((m) => `${m.name}=${scheme}://${LOOPBACK}:${m.peerPort}`).join(',');
    const token = `dunix-${process.pid}-${p[0]}`;
    const started = await Promise.allSettled(
      members.map((m) => startMember(opts, log, { ...m, initialCluster, token })),
    );
    const failed = started.find((r) => r.status === 'rejected');
    if (!failed) return started.map((r) => (r as PromiseFulfilledResult<EtcdProcess>).value);
    await Promise.all(started.map((r) => (r.status === 'fulfilled' ? r.value.stop() : undefined)));
    const e = failed.reason as Error;
    if (attempt >= PORT_ATTEMPTS_MAX || !(e instanceof PortInUseError)) throw e;
    log.warn('etcd port taken; retrying the cluster with new ports', { attempt, err: e.message });
  }
}

interface MemberSpec {
  name: string;
  clientPort: number;
  peerPort: number;
  dataDir: string | undefined;
  initialCluster: string;
  token: string;
}

async function startMember(opts: SpawnEtcdOptions, log: Logger, m: MemberSpec): Promise<EtcdProcess> {
  const { name, clientPort, peerPort } = m;
  const tls = await readTls(opts.tls);
  const ownDir = m.dataDir === undefined;
  const base = ownDir ? await mkdtemp(join(tmpdir(), 'dunix-etcd-')) : undefined;
  const dataDir = m.dataDir ?? join(base!, 'data');
  const scheme = opts.tls ? 'https' : 'http';
  const clientUrl = `${scheme}://${LOOPBACK}:${clientPort}`;
  const peerUrl = `${scheme}://${LOOPBACK}:${peerPort}`;
  const args = [
    `--name=${name}`,
    `--data-dir=${dataDir}`,
    `--listen-client-urls=${clientUrl}`,
    `--advertise-client-urls=${clientUrl}`,
    `--listen-peer-urls=${peerUrl}`,
    `--initial-advertise-peer-urls=${peerUrl}`,
    `--initial-cluster=${m.initialCluster}`,
    '--initial-cluster-state=new',
    `--initial-cluster-token=${m.token}`,
    `--max-txn-ops=${MAX_TXN_OPS}`,
    `--max-request-bytes=${MAX_REQUEST_BYTES}`,
    ...tlsArgs(opts.tls),
    '--logger=zap',
    '--log-level=warn',
  ];
  // No ETCD_* variable from our environment may override the flags (e.g. a listen address).
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ETCD_')));
  const removeDir = async () => {
    if (base) await rm(base, { recursive: true, force: true });
  };
  let child: ChildProcess;
  try {
    child = spawn(opts.binary ?? '/usr/bin/etcd', args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    await removeDir();
    throw e;
  }
  const tail: string[] = [];
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (chunk: string) => {
    for (const line of chunk.split('\n')) {
      if (!line) continue;
      tail.push(line);
      if (tail.length > 20) tail.shift();
      log.debug('etcd', { line });
    }
  });
  let exited = false;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exited = true;
      log.debug('etcd exited', { pid: child.pid, code, signal });
      resolve();
    });
    child.once('error', (err) => {
      exited = true;
      tail.push(String(err));
      resolve();
    });
  });
  // Our own exit must not leave etcd behind (a crashed test, an uncaught exception).
  // (A SIGTERM with no handler ends Node without 'exit': the owner must stop() or handle signals.)
  const killOnExit = () => {
    if (!exited) child.kill('SIGKILL');
    if (base) rmSync(base, { recursive: true, force: true });
  };
  process.on('exit', killOnExit);

  let stopping: Promise<void> | undefined;
  const stop = (timeoutMs = opts.stopTimeoutMs ?? 5000): Promise<void> => {
    stopping ??= (async () => {
      if (!exited) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => {
          if (!exited) {
            log.warn('etcd ignored SIGTERM; sending SIGKILL', { pid: child.pid });
            child.kill('SIGKILL');
          }
        }, timeoutMs);
        await exit;
        clearTimeout(timer);
      }
      process.off('exit', killOnExit);
      await removeDir();
    })();
    return stopping;
  };

  const deadline = Date.now() + (opts.readyTimeoutMs ?? 20_000);
  for (;;) {
    if (exited) {
      await stop();
      const text = tail.join('\n');
      if (/address already in use/.test(text))
        throw new PortInUseError(`etcd: ports ${clientPort}/${peerPort} in use`);
      throw new Error(`etcd exited before it was ready:\n${text}`);
    }
    // Whoever won a race for our port answers /health too: it must be our child that listens.
    if ((await healthy(clientUrl, 1000, tls)) && !exited && listensOn(child.pid!, clientPort)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(
        `etcd at ${clientUrl} not healthy after ${opts.readyTimeoutMs ?? 20_000} ms:\n${tail.join('\n')}`,
      );
    }
    await sleep(50);
  }
  log.info('etcd ready', { endpoint: clientUrl, pid: child.pid, dataDir });
  return { endpoint: clientUrl, name, pid: child.pid!, dataDir, clientPort, peerPort, stop: () => stop() };
}
