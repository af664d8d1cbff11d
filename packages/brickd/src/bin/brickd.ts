#!/usr/bin/env node
import {
  createLogger,
  INSECURE_TRANSPORT,
  loadTlsDir,
  parseMetricsListen,
  DUNIX_VERSION,
  installLogSignals,
  isLogLevel,
  LOG_LEVELS,
  setLogFile,
  setLogLevel,
  type TransportSecurity,
  BRICKD_OLD_SPACE_MIB,
  brickdNodeFlags,
} from '@dunix/proto';
import { Command, InvalidArgumentError } from 'commander';
import { readFileSync } from 'node:fs';
import { getHeapStatistics } from 'node:v8';
import { configArgs, configFileOf } from '../config-file.js';
import { loadEtcdTls, resolveEtcd, type EtcdConnection } from '@dunix/coord';
import { BrickDaemon } from '../daemon.js';
import {
  DATA_PORT_OFFSET,
  GRPC_PORT_DEFAULT,
  parseFailureDomain,
  parseHost,
  parseListen,
} from '../net-address.js';

// The data dir 0700, LevelDB, block and log files 0600: nothing a brick writes is for other users.
process.umask(0o077);

const log = createLogger('brickd');

function intArg(name: string, min: number, max: number) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max)
      throw new InvalidArgumentError(`${name} must be an integer in ${min}..${max}`);
    return n;
  };
}

const SIZE_UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** A byte count: digits with an optional K, M, G or T (binary units; `iB`/`B` accepted). */
function sizeArg(name: string) {
  return (v: string) => {
    const m = /^([0-9]+)\s*([kmgt]?)(?:i?b)?$/i.exec(v.trim());
    const n = m ? Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]! : NaN;
    if (!Number.isSafeInteger(n) || n < 0)
      throw new InvalidArgumentError(`${name} must be a byte count such as 500G or 64MiB`);
    return n;
  };
}

/** Commander's parser from one of net-address.ts's (their message becomes the usage error). */
function checked<T>(parse: (v: string) => T) {
  return (v: string) => {
    try {
      return parse(v);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };
}

const program = new Command('brickd')
  .description('dunixfs storage daemon: serves the placement groups the volume map assigns to it')
  .version(`brickd ${DUNIX_VERSION}`, '-V, --version', 'print the version and exit')
  // A usage error exits 2, as a bad config file: systemd's RestartPreventExitStatus=2 stops retrying it.
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2))
  .option(
    '--config <file>',
    'read options from FILE, one "name = value" per line (long option names; flags: "name" or "name = true"); ' +
      'command-line options win',
  )
  .option('--log-file <file>', 'append logs to FILE (0600; reopened on SIGHUP) instead of stderr')
  .option(
    '--log-level <level>',
    `${LOG_LEVELS.join(', ')} (default: $DUNIX_LOG or info); SIGUSR2 switches debug on and off while running`,
    (v: string) => {
      if (!isLogLevel(v)) throw new InvalidArgumentError(`expected one of ${LOG_LEVELS.join(', ')}`);
      return v;
    },
  )
  .requiredOption('--data <dir>', 'data directory (LevelDB metadata and block files)')
  .option(
    '--listen <host:port>',
    `address both servers bind: IPv4, [IPv6] or a name; 0.0.0.0 / [::] need --advertise (default 127.0.0.1:${GRPC_PORT_DEFAULT})`,
    checked((v) => (parseListen(v), v)),
    `127.0.0.1:${GRPC_PORT_DEFAULT}`,
  )
  .option(
    '--advertise <host>',
    'address or name clients and other bricks dial, registered in etcd (default: the --listen host; never 0.0.0.0 or ::)',
    checked(parseHost),
  )
  .requiredOption(
    '--etcd <urls>',
    'etcd endpoints, comma-separated: HOST:PORT (https with --tls-dir or --etcd-cert, else http, loopback only)',
  )
  .requiredOption('--volume <name>', 'volume this brick belongs to')
  .option(
    '--replicas <n>',
    'copies per PG the operator expects (the volume config decides; a mismatch is logged)',
    intArg('--replicas', 1, 5),
  )
  .option(
    '--data-port <port>',
    `port of the frame transport (default: the --listen port + ${DATA_PORT_OFFSET}; any free one with port 0)`,
    intArg('--data-port', 1, 65535),
  )
  .option(
    '--host <name>',
    'failure domain: copies of a PG go to bricks of distinct hosts (default: hostname)',
    checked(parseFailureDomain),
  )
  .option(
    '--weight <n>',
    'relative capacity for placement (default: the capacity in GiB, at least 1)',
    intArg('--weight', 0, 1_000_000),
  )
  .option(
    '--capacity <bytes>',
    'space this brick may fill, e.g. 500G (default: its filesystem); a full brick refuses growth (ENOSPC)',
    sizeArg('--capacity'),
  )
  .option(
    '--usage-interval-ms <ms>',
    'how often the brick measures and publishes its space',
    intArg('--usage-interval-ms', 1, 3_600_000),
  )
  .option('--lease-ttl-ms <ms>', 'liveness lease in etcd', intArg('--lease-ttl-ms', 2000, 600000))
  .option(
    '--group-commit-ms <ms>',
    'sync writes to disk within this window (fsync syncs at once); 0: sync every write',
    intArg('--group-commit-ms', 0, 1000),
  )
  .option(
    '--no-kv-journal',
    'wait for each LevelDB batch instead of journaling unsynced writes (for comparison)',
  )
  .option('--no-direct-io', 'write every block through the page cache (no O_DIRECT; for comparison)')
  .option(
    '--no-kv-sync-reads',
    "read LevelDB through libuv's thread pool, not on the main thread (for comparison)",
  )
  .option(
    '--replicate-inflight-max <n>',
    'entries of a PG sent to its replicas and not yet acknowledged; 1: one at a time (for comparison)',
    intArg('--replicate-inflight-max', 1, 512),
  )
  .option(
    '--orphan-owner-grace-ms <ms>',
    "an O_TMPFILE file whose mount's session is gone is reclaimed once this old",
    intArg('--orphan-owner-grace-ms', 1, 86_400_000),
  )
  .option(
    '--connections-max <n>',
    'connections each server keeps; one more closes the idlest, or is refused when all are busy',
    intArg('--connections-max', 1, 1_000_000),
  )
  .option(
    '--conn-inflight-max <n>',
    "calls of one connection served at once; more wait (that peer's socket is not read meanwhile)",
    intArg('--conn-inflight-max', 1, 65_536),
  )
  .option(
    '--conn-queued-bytes-max <bytes>',
    'replies one peer has not read before the brick stops serving its calls, e.g. 32MiB',
    sizeArg('--conn-queued-bytes-max'),
  )
  .option(
    '--conn-idle-timeout-ms <ms>',
    'a connection with nothing in flight and no traffic for this long is closed',
    intArg('--conn-idle-timeout-ms', 1000, 86_400_000),
  )
  .option(
    '--port-file <file>',
    'once listening, write {"pid","address","dataAddress"} here (atomically): the ports of a port-0 --listen',
  )
  .option(
    '--tls-dir <dir>',
    'mutual TLS on both ports and to other bricks: a directory from `dunixctl cert issue --brick NAME` ' +
      '(ca.crt, tls.crt, tls.key)',
  )
  .option(
    '--insecure',
    'plain TCP without authentication, loopback addresses only (development; the default when --tls-dir is absent, logged loudly)',
  )
  .option(
    '--metrics-listen <host:port>',
    'serve Prometheus metrics at http://HOST:PORT/metrics (port 0: any free one, reported in --port-file); default: off',
    (v: string) => {
      try {
        return (parseMetricsListen(v), v);
      } catch (err) {
        throw new InvalidArgumentError((err as Error).message);
      }
    },
  )
  .option('--etcd-ca <file>', "etcd's CA, with --etcd-cert and --etcd-key (default: the --tls-dir files)")
  .option('--etcd-cert <file>', 'certificate this brick presents to etcd')
  .option('--etcd-key <file>', 'its key (mode 0600)')
  .option(
    '--wipe-deleted-volume',
    'if the volume this data dir served was deleted (dunixctl volume delete), empty the dir and start as a new brick ' +
      '(without it, brickd refuses to start there)',
  )
  .action(async (opts) => {
    try {
      if (opts.logFile) setLogFile(String(opts.logFile));
    } catch (err) {
      log.error('start failed', { err: `--log-file: ${(err as Error).message}` });
      process.exit(1);
    }
    if (opts.logLevel) setLogLevel(opts.logLevel);
    installLogSignals(log);
    // Started by hand with plain `node`, V8's heap may grow to several times what is live.
    const heapLimitMiB = Math.round(getHeapStatistics().heap_size_limit / 1048576);
    if (heapLimitMiB > 2 * BRICKD_OLD_SPACE_MIB)
      log.warn('started without the old-space limit: resident memory may grow past its budget', {
        heapLimitMiB,
        nodeOptions: brickdNodeFlags.join(' '),
      });
    if (opts.tlsDir && opts.insecure) {
      log.error('start failed', { err: '--tls-dir and --insecure exclude each other' });
      process.exit(2);
    }
    let security: TransportSecurity | undefined;
    let etcd: EtcdConnection;
    try {
      if (opts.tlsDir) security = await loadTlsDir(String(opts.tlsDir), 'brick');
      else if (opts.insecure) security = INSECURE_TRANSPORT;
      // etcd with client-certificate auth: the brick's own certificate, unless etcd's are given.
      etcd = resolveEtcd(
        String(opts.etcd).split(',').filter(Boolean),
        await loadEtcdTls({ tlsDir: opts.tlsDir, ca: opts.etcdCa, cert: opts.etcdCert, key: opts.etcdKey }),
      );
    } catch (err) {
      log.error('start failed', { err: (err as Error).message });
      process.exit(1);
    }
    const daemon = new BrickDaemon({
      security,
      dataDir: opts.data,
      listen: opts.listen,
      advertise: opts.advertise,
      etcdEndpoints: etcd.endpoints,
      etcdTls: etcd.tls,
      volume: opts.volume,
      replicas: opts.replicas,
      host: opts.host,
      dataPort: opts.dataPort,
      weight: opts.weight,
      capacityBytes: opts.capacity,
      knobs: {
        ...(opts.leaseTtlMs ? { leaseTtlMs: opts.leaseTtlMs } : {}),
        ...(opts.groupCommitMs !== undefined ? { groupCommitMs: opts.groupCommitMs } : {}),
        ...(opts.kvJournal === false ? { kvJournal: false } : {}),
        ...(opts.directIo === false ? { directIo: false } : {}),
        ...(opts.kvSyncReads === false ? { kvSyncReads: false } : {}),
        ...(opts.replicateInflightMax !== undefined
          ? { replicateInflightMax: opts.replicateInflightMax }
          : {}),
        ...(opts.usageIntervalMs !== undefined ? { usageIntervalMs: opts.usageIntervalMs } : {}),
        ...(opts.orphanOwnerGraceMs !== undefined ? { orphanOwnerGraceMs: opts.orphanOwnerGraceMs } : {}),
      },
      connLimits: {
        ...(opts.connectionsMax !== undefined ? { connectionsMax: opts.connectionsMax } : {}),
        ...(opts.connInflightMax !== undefined ? { inflightCallsPerConnMax: opts.connInflightMax } : {}),
        ...(opts.connQueuedBytesMax !== undefined ? { queuedBytesPerConnMax: opts.connQueuedBytesMax } : {}),
        ...(opts.connIdleTimeoutMs !== undefined ? { idleTimeoutMs: opts.connIdleTimeoutMs } : {}),
      },
      log,
      portFile: opts.portFile,
      wipeDeletedVolume: !!opts.wipeDeletedVolume,
      metricsListen: opts.metricsListen,
      // The volume went: stop serving and exit 0 (nothing failed; a restart would be refused).
      onVolumeDeleted: () => shutdown('volume deleted'),
    });
    let stopping = false;
    const shutdown = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info('stopping', { signal });
      daemon.stop().then(
        () => process.exit(0),
        (err) => {
          log.error('stop failed', { err });
          process.exit(1);
        },
      );
    };
    process.on('SIGTERM', () => shutdown('SIGTERM'));
    process.on('SIGINT', () => shutdown('SIGINT'));
    try {
      await daemon.start();
    } catch (err) {
      if (stopping) return; // stopped while starting (the volume was deleted meanwhile): shutdown exits
      log.error('start failed', { err: err instanceof Error ? err.message : String(err) });
      process.exit(1);
    }
  });

/** The config file's options first: the command line's, parsed after them, win. */
function argvWithConfig(argv: string[]): string[] {
  const file = configFileOf(argv);
  if (file === undefined) return argv;
  try {
    const options = program.options
      .filter((o) => o.long)
      .map((o) => ({ name: o.long!.slice(2), takesValue: o.required || o.optional }));
    return [...configArgs(readFileSync(file, 'utf8'), options, file), ...argv];
  } catch (err) {
    process.stderr.write(`brickd: --config: ${(err as Error).message}\n`);
    process.exit(2);
  }
}

program.parseAsync(argvWithConfig(process.argv.slice(2)), { from: 'user' }).catch((err) => {
  log.error('fatal', { err });
  process.exit(1);
});
