import { resolve } from 'node:path';
import {
  EtcdCoordinator,
  etcdTlsUser,
  loadEtcdTls,
  resolveEtcd,
  type EtcdConnection,
  type MountSession,
} from '@dunix/coord';
import {
  createLogger,
  FsError,
  INSECURE_TRANSPORT,
  initHashing,
  loadTlsDir,
  Router,
  warnInsecure,
  type TransportSecurity,
  type VolumeConfig,
} from '@dunix/proto';
import { BrickApi, brickApiDefaults } from '../client/brick-api.js';
import { DunixFs, dunixFsDefaults } from '../client/dunix-fs.js';
import { mountInfo, newMountId, volumeGone } from '../client/mount-record.js';
import { FuseMount } from '../fuse/mount.js';
import { InvalidationPoller, type InvalidationSink } from '@dunix/proto';
import {
  DUNIX_VERSION,
  installLogSignals,
  setLogFile,
  startMetricsServer,
  type MetricsServer,
} from '@dunix/proto';
import { ClientMetrics } from '../client/metrics.js';
import { writeFile, rename } from 'node:fs/promises';
import { constants } from 'node:os';
import { mountUsage, parseMountArgs, wantsHelp, wantsVersion } from './mount-args.js';

/**
 * dunixfs SPEC MOUNTPOINT [-o options]: mounts a volume and serves it in the
 * foreground until it is unmounted (umount, SIGTERM, SIGINT). SPEC is
 * ETCD_HOST:PORT[,HOST:PORT...]/VOLUME. /sbin/mount.dunixfs runs this in the
 * background for mount(8) and fstab.
 */
export async function main(argv: string[]): Promise<number> {
  if (wantsHelp(argv)) {
    process.stdout.write(mountUsage('dunixfs'));
    return 0;
  }
  if (wantsVersion(argv)) {
    process.stdout.write(`dunixfs ${DUNIX_VERSION}\n`);
    return 0;
  }
  // A mount's log and what it learns of its files are for root only.
  process.umask(0o077);
  const log = createLogger('dunixfs');
  let args;
  try {
    args = parseMountArgs(argv);
  } catch (err) {
    process.stderr.write(`dunixfs: ${(err as Error).message}\n`);
    return 2;
  }
  const mountpoint = resolve(args.mountpoint);
  // log=FILE (mount.dunixfs's log): written by name, so SIGHUP after logrotate moves on to a new file.
  if (args.logFile) {
    try {
      setLogFile(resolve(args.logFile));
    } catch (err) {
      process.stderr.write(`dunixfs: log=${args.logFile}: ${(err as Error).message}\n`);
      return 1;
    }
  }
  installLogSignals(log);
  const startedAtMs = Date.now();
  let security: TransportSecurity = INSECURE_TRANSPORT;
  let etcd: EtcdConnection;
  try {
    if (args.tlsDir) security = await loadTlsDir(resolve(args.tlsDir), 'client');
    etcd = resolveEtcd(
      args.endpoints,
      await loadEtcdTls({
        tlsDir: args.tlsDir ? resolve(args.tlsDir) : undefined,
        ca: args.etcdCa,
        cert: args.etcdCert,
        key: args.etcdKey,
      }),
    );
  } catch (err) {
    log.error('cannot load the TLS files', { tlsDir: args.tlsDir, err: (err as Error).message });
    return 1;
  }
  if (security.kind === 'insecure') warnInsecure(log, 'dunixfs', !args.insecure);
  await initHashing();
  const coord = new EtcdCoordinator({
    endpoints: etcd.endpoints,
    tls: etcd.tls,
    log,
    dialTimeoutMs: args.dialTimeoutMs,
    knobs: { mountLeaseTtlMs: args.sessionTtlMs },
  });
  // This session's id: its record's key, and the reporter of its suspect reports (both under
  // the client certificate's name, which alone may write them).
  const mountId = newMountId(etcdTlsUser(etcd.tls));
  const router = new Router({
    log,
    security,
    // A refused connection is the quickest sign of a dead brick: telling the
    // controller starts failover now instead of when the brick's lease expires.
    onConnectionRefused: (brickId) => {
      coord.reportSuspect(args.volume, brickId, mountId).catch((err: unknown) => {
        log.warn('could not report a suspect brick', { brick: brickId, err: (err as Error).message });
      });
    },
  });
  let unwatch: (() => Promise<void>) | undefined;
  let poller: InvalidationPoller | undefined;
  // The poller starts before the kernel mount; what it receives reaches the filesystem once it exists.
  const sinkTarget: { fs?: DunixFs } = {};
  const invalidationSink: InvalidationSink = {
    apply: async (invals) => sinkTarget.fs?.applyInvalidations(invals),
    dropPgs: async (pgs) => sinkTarget.fs?.dropCachedOf(pgs),
  };
  let session: MountSession | undefined;
  /** Set once the volume mounted is found deleted (or re-created): every call fails with EIO from then on. */
  let gone = false;
  const volumeEnded = (how: 'deleted' | 're-created') => {
    if (gone) return;
    gone = true;
    log.error('volume deleted: every call on this mount now fails with EIO; unmount it', {
      volume: args.volume,
      how,
      mountpoint,
    });
    router.fail(new FsError('IO', `volume ${args.volume} was ${how} (dunixctl volume delete)`));
    void session?.close();
  };
  try {
    await coord.start();
    const config: VolumeConfig | undefined = await coord.getVolume(args.volume);
    if (!config)
      throw new Error(`volume ${args.volume} does not exist (dunixctl volume create ${args.volume})`);
    unwatch = await coord.watchVolume(args.volume, (s) => {
      const ended = volumeGone(config, s);
      if (ended) volumeEnded(ended);
      else if (s.config) router.update({ config: s.config, placement: s.placement, bricks: s.bricks });
    });
    // The mount record (the client session), before the kernel mount: while mounted, it is listed
    // (`dunixctl volume mounts`) and holds off `volume delete`.
    session = await coord.registerMount(args.volume, mountInfo(mountId, mountpoint, startedAtMs));
    // Coherent caches: every call names this session, so what it reads is registered at the
    // primaries, which push invalidations to the poller (applied once the kernel is mounted).
    router.setCacheSession(session.id, Math.max(args.attrTtlMs, args.entryTtlMs));
    poller = new InvalidationPoller(router, session.id, invalidationSink, log);
    poller.start();
    if (gone) void session.close();
  } catch (err) {
    log.error('cannot reach the volume', { spec: args.spec, err: (err as Error).message });
    await coord.stop().catch(() => {});
    return 1;
  }
  const api = new BrickApi(router, { ...brickApiDefaults, opDeadlineMs: args.failoverTimeoutMs });
  const fs = new DunixFs(api, log, {
    ...dunixFsDefaults,
    attrTtlMs: args.attrTtlMs,
    entryTtlMs: args.entryTtlMs,
    stataheadLookups: args.stataheadLookups,
    // Owner of this mount's O_TMPFILE inodes: bricks reclaim them once the session is gone.
    ...(session ? { mountId: session.id } : {}),
  });
  let metrics: ClientMetrics | undefined;
  let metricsServer: MetricsServer | undefined;
  let mount: FuseMount;
  try {
    if (args.metricsListen) {
      metrics = new ClientMetrics(errnoName);
      api.metrics = metrics;
      const { registry } = metrics;
      metricsServer = await startMetricsServer(
        args.metricsListen,
        { contentType: registry.contentType, render: () => registry.metrics() },
        log,
      );
      if (args.metricsPortFile) {
        const tmp = `${args.metricsPortFile}.tmp-${process.pid}`;
        await writeFile(
          tmp,
          `${JSON.stringify({ pid: process.pid, metricsAddress: metricsServer.address })}\n`,
        );
        await rename(tmp, args.metricsPortFile);
      }
    }
    mount = await FuseMount.start(fs, {
      mountpoint,
      source: args.spec,
      subtype: 'dunixfs',
      allowOther: true,
      readAheadKb: args.readAheadKb,
      ...(args.extra ? { extra: args.extra } : {}),
      // Inode numbers are never reused and route by themselves: file handles outlive the kernel's cache.
      // POSIX ACLs: the bricks keep and enforce them, the kernel checks them too (default_permissions).
      session: {
        attrTtlMs: args.attrTtlMs,
        entryTtlMs: args.entryTtlMs,
        // A name created elsewhere is pushed like any change of its directory (see DunixFs.lookup).
        negativeTtlMs: args.negativeTtlMs ?? args.entryTtlMs,
        posixAcl: true,
        exportSupport: true,
        // fcntl, OFD and flock locks are cluster-wide: kept by each inode's primary, owned by this session.
        locks: true,
      },
    });
  } catch (err) {
    log.error('mount failed', { mountpoint, err: (err as Error).message });
    await metricsServer?.close();
    await session.close().catch(() => {});
    await unwatch?.().catch(() => {});
    await coord.stop().catch(() => {});
    router.close();
    return 1;
  }
  mount.session.observer = metrics;
  fs.kernel = {
    invalInode: (ino, offset) => mount.session.notifyInvalInode(ino, offset),
    invalEntry: (parent, name) => mount.session.notifyInvalEntry(parent, name),
    deleteEntry: (parent, child, name) => mount.session.notifyDelete(parent, child, name),
  };
  sinkTarget.fs = fs;
  log.info('mounted', { spec: args.spec, mountpoint, pid: process.pid, mount: session.id });
  await mount.serveUntilUnmounted();
  poller?.stop();
  await metricsServer?.close();
  router.close();
  // etcd may be gone already (cluster shutdown): never let its reconnect loop keep us alive.
  const cleanup = (async () => {
    await session?.close().catch(() => {});
    await unwatch?.().catch(() => {});
    await coord.stop().catch(() => {});
  })();
  await Promise.race([cleanup, new Promise((r) => setTimeout(r, 2000).unref())]);
  process.exit(0);
}

/** errno number -> its name (ENOENT), for the metrics' result label. */
function errnoName(errno: number): string {
  for (const [name, n] of Object.entries(constants.errno)) if (n === errno) return name;
  return `E${errno}`;
}
