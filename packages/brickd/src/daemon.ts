import * as grpc from '@grpc/grpc-js';
import {
  Controller,
  EtcdCoordinator,
  leaseFenced,
  realClock,
  tcpProbe,
  type Coordinator,
  type EtcdTls,
  type Unsubscribe,
  type VolumeSnapshot,
} from '@dunix/coord';
import {
  assertInsecureAllowed,
  connLimitDefaults,
  limits,
  validateConnLimits,
  type ConnLimits,
  brickProto,
  fullThresholdPct,
  createLogger,
  connectBrick,
  FrameServer,
  ERROR_CODE_METADATA_KEY,
  FsError,
  INSECURE_TRANSPORT,
  initHashing,
  Router,
  startMetricsServer,
  type MetricsServer,
  warnInsecure,
  type TransportSecurity,
  toServiceError,
  type BrickHandlers,
  type Logger,
  type VolumeConfig,
} from '@dunix/proto';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { lookup } from 'node:dns/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Brick } from './brick.js';
import { brickDefaults, validateBrickKnobs, type BrickKnobs } from './config.js';
import { BlockGrants } from './rpc/block-grants.js';
import { NamespaceEngine } from './namespace/engine.js';
import { writePortFile } from './port-file.js';
import { RemotePeers } from './rpc/peers.js';
import { ReplicaPeers } from './rpc/replica-peers.js';
import { ScrubRunner } from './scrub-runner.js';
import { capacityWeight, SpaceKeeper } from './space.js';
import type { RecoveryReporter } from './replication/deps.js';
import { brickHandlers, startBrickServer } from './rpc/server.js';
import { BlockStore } from './store/block-store.js';
import { CachedKv } from './store/cached-kv.js';
import type { KvStore } from './store/kv.js';
import { GroupCommit, syncEachWrite, type Durability } from './store/group-commit.js';
import { brickKeys } from './store/keys.js';
import { JournalKv } from './store/journal-kv.js';
import { LevelKv } from './store/leveldb-kv.js';
import { mountSessions } from './mount-sessions.js';
import { LockService } from './lock-service.js';
import { CoherenceService, coherenceDefaults } from './coherence/coherence-service.js';
import { BrickMetrics } from './metrics.js';
import { brickAddresses, formatHostPort } from './net-address.js';

/** With TLS: block grants signed with this brick's key (rpc/block-grants.ts); insecure: none. */
function blockGrantsFor(security: TransportSecurity | undefined, knobs: BrickKnobs): BlockGrants | undefined {
  if (security?.kind !== 'tls') return undefined;
  return new BlockGrants({
    security,
    ttlMs: knobs.blockGrantTtlMs,
    cacheMax: knobs.blockGrantCacheMax,
    nowMs: () => Date.now(),
  });
}

export interface BrickdOptions {
  dataDir: string;
  /**
   * HOST:PORT both servers bind (port 0 picks free ones); an IPv6 literal
   * is bracketed. net-address.ts has the rules.
   */
  listen: string;
  /** The host clients and other bricks dial, as registered (default: the listen host). */
  advertise?: string;
  etcdEndpoints: string[];
  /** Client certificate for etcd (brickd --tls-dir or --etcd-ca/--etcd-cert/--etcd-key). */
  etcdTls?: EtcdTls | undefined;
  volume: string;
  /** Copies per PG the operator expects; the volume's config decides (a mismatch is logged). */
  replicas?: number;
  /** Port of the frame transport on the listen host (default: gRPC port + DATA_PORT_OFFSET; any free one with port 0). */
  dataPort?: number;
  /** Failure domain (default: this machine's hostname). */
  host?: string;
  /** Relative capacity for placement (default: capacity in GiB, space.ts capacityWeight). */
  weight?: number;
  /** Bytes this brick may fill (0 or absent: its filesystem's size). */
  capacityBytes?: number;
  knobs?: Partial<BrickKnobs>;
  log?: Logger;
  /** Where to report the ports actually bound (port-file.ts), once both servers listen. */
  portFile?: string;
  /**
   * The data dir served a volume that has been deleted since (or deleted
   * and created again): empty it and start as a new brick, instead of
   * refusing to start (brickd --wipe-deleted-volume).
   */
  wipeDeletedVolume?: boolean;
  /**
   * The volume was deleted while this brick served it: it has stopped
   * serving; the owner should stop() it and exit. Default: the daemon stops itself.
   */
  onVolumeDeleted?: () => void;
  /**
   * TLS for both servers and for calls to other bricks (brickd --tls-dir:
   * a brick certificate). Absent: insecure, loopback only, logged loudly.
   */
  security?: TransportSecurity;
  /** What one peer may hold on either server (docs/LIMITS.md "Server connections"); unset: the defaults. */
  connLimits?: Partial<ConnLimits>;
  /** HOST:PORT of the Prometheus /metrics endpoint (brickd --metrics-listen); absent: none. */
  metricsListen?: string;
}

/** How often a brick adds the bytes its backfills moved to the running rebalance job. */
const MOVED_REPORT_MS = 2000;

interface Identity {
  id: string;
  volume: string;
  /**
   * createdAtMs of the volume's config when this brick first served it: a
   * volume of that name with no config, or another createdAtMs, is not the
   * one this data belongs to (it was deleted).
   */
  volumeCreatedAtMs?: number;
}

/**
 * The brick daemon: owns the store, the block files, the gRPC server and the
 * control-plane session. start() brings them up in order (and undoes what it
 * did if a step fails); stop() takes them down in reverse. SIGKILL at any
 * point loses nothing acknowledged: every acknowledged change is in a synced
 * batch.
 */
export class BrickDaemon {
  private readonly log: Logger;
  private readonly knobs: BrickKnobs;
  private kv: KvStore | undefined;
  private blocks: BlockStore | undefined;
  private durability: Durability = syncEachWrite;
  private server: grpc.Server | undefined;
  private frames: FrameServer | undefined;
  private memoryTimer: NodeJS.Timeout | undefined;
  private coord: Coordinator | undefined;
  /** Every brick runs one; the election picks the one that acts. */
  private controller: Controller | undefined;
  private unwatch: Unsubscribe | undefined;
  private locks: LockService | undefined;
  private coherence: CoherenceService | undefined;
  /** Routes to primaries (cross-PG transactions) and to replicas; a refused connection is reported. */
  private readonly router = new Router({
    // TLS as brickd was given (read at connect time: this.o is not set yet here).
    connect: (brick, events) => connectBrick(brick, events, this.o.security),
    onConnectionRefused: (brickId) =>
      void this.coord
        ?.reportSuspect(this.o.volume, brickId, this.brickId)
        .catch((err) => this.log.warn('suspect report failed', { brick: brickId, err: String(err) })),
  });
  private brick: Brick | undefined;
  private scrubRunner: ScrubRunner | undefined;
  private space: SpaceKeeper | undefined;
  private movedTimer: NodeJS.Timeout | undefined;
  /** State of the volume's rebalance job in the last snapshot. */
  private jobState: string | undefined;
  private handlers: BrickHandlers | undefined;
  private identity: Identity | undefined;
  private applying: Promise<void> = Promise.resolve();
  private replicasWarned = false;
  /** The volume served was found deleted: nothing is applied any more. */
  private volumeDeleted = false;
  private storeLost = false;
  port = 0;
  private readonly connLimits: ConnLimits;
  readonly metrics = new BrickMetrics();
  private metricsServer: MetricsServer | undefined;

  constructor(private readonly o: BrickdOptions) {
    this.log = o.log ?? createLogger('brickd');
    this.connLimits = validateConnLimits({ ...connLimitDefaults, ...o.connLimits }, limits.messageMaxBytes);
    this.knobs = validateBrickKnobs({ ...brickDefaults, ...o.knobs });
    if (o.replicas !== undefined && (!Number.isInteger(o.replicas) || o.replicas < 1 || o.replicas > 5)) {
      throw new RangeError(`--replicas ${o.replicas} must be 1..5`);
    }
  }

  get brickId(): string {
    return this.identity?.id ?? '';
  }

  async start(): Promise<void> {
    try {
      // Bad addresses fail before anything is opened or registered.
      const at = await brickAddresses(this.o, async (h) =>
        (await lookup(h, { all: true })).map((a) => a.address),
      );
      // Others would refuse to dial a non-loopback address without TLS: refuse it here.
      if ((this.o.security ?? INSECURE_TRANSPORT).kind === 'insecure')
        assertInsecureAllowed(at.advertiseHost, 'advertised address');
      await initHashing();
      await mkdir(this.o.dataDir, { recursive: true, mode: 0o700 });
      // The state dir is the brick's alone, also when it was made by someone else (an installer, a test).
      await chmod(this.o.dataDir, 0o700);
      if (this.o.metricsListen) {
        const registry = this.metrics.withProcessMetrics();
        this.metricsServer = await startMetricsServer(
          this.o.metricsListen,
          { contentType: registry.contentType, render: () => registry.metrics() },
          this.log,
        );
      }
      this.coord = new EtcdCoordinator({
        endpoints: this.o.etcdEndpoints,
        tls: this.o.etcdTls,
        log: this.log,
      });
      await this.coord.start();
      const { identity, created } = await this.checkedIdentity(this.coord);
      this.identity = identity;
      const level = new LevelKv(join(this.o.dataDir, 'meta'), { syncReads: this.knobs.kvSyncReads });
      const store =
        this.knobs.kvJournal && this.knobs.groupCommitMs > 0
          ? // Batches wait for the group commit's sync, which takes them all in one LevelDB batch.
            new JournalKv(level, join(this.o.dataDir, 'meta.journal'), {
              flushDelayMs: this.knobs.groupCommitMs,
            })
          : level;
      // A read cache pays only in front of reads that go through the thread
      // pool: with LevelDB read on the main thread (kvSyncReads), its
      // memtable and block cache answer as fast as the cache's own
      // bookkeeping (a latin1 key, a copy and two Map updates per key read or
      // written), and without it creates, renames and unlinks ran 10-20%
      // faster (ARCHITECTURE.md, "A brick").
      this.kv = this.knobs.kvSyncReads ? store : new CachedKv(store);
      await this.kv.open();
      // A known brick whose store is empty lost its disk: no copy here may count as in sync.
      const owner = await this.kv.get(brickKeys.storeOwner);
      // (A store written before the owner key existed is not empty: it is only marked.)
      const empty =
        (await this.kv.range({ gte: Buffer.alloc(2), lt: brickKeys.storeOwner, limit: 1 })).length === 0;
      this.storeLost = !created && owner === undefined && empty;
      if (this.storeLost)
        this.log.warn('store lost (empty under a known brick id): leaving every in-sync set');
      if (owner === undefined)
        await this.kv.write([{ key: brickKeys.storeOwner, value: Buffer.from(identity.id) }], true);
      else if (owner.toString() !== identity.id)
        throw new Error(
          `store in ${this.o.dataDir} belongs to brick ${owner.toString()}, not ${identity.id}`,
        );
      this.blocks = new BlockStore({
        dataDir: this.o.dataDir,
        syncEachWrite: this.knobs.groupCommitMs === 0,
        directIo: this.knobs.directIo,
      });
      await this.blocks.open();
      if (this.blocks.directIoOff)
        this.log.warn('block writes go through the page cache', { reason: this.blocks.directIoOff });
      this.durability =
        this.knobs.groupCommitMs === 0
          ? syncEachWrite
          : new GroupCommit(this.kv, this.blocks, this.knobs.groupCommitMs);
      const security = this.o.security ?? INSECURE_TRANSPORT;
      if (security.kind === 'insecure') warnInsecure(this.log, 'brickd', this.o.security === undefined);
      const { server, port } = await startBrickServer(
        formatHostPort(at.listenHost, at.listenPort),
        this.delegatingHandlers(),
        security,
        this.connLimits,
      );
      this.server = server;
      this.port = port;
      const address = formatHostPort(at.advertiseHost, port);
      // The data path: the same handlers over frames, on its own port.
      this.frames = new FrameServer(
        this.delegatingHandlers(),
        (reason) => this.log.warn('malformed frame stream; connection closed', { reason }),
        security,
        this.connLimits,
      );
      const dataPort = await this.frames.listen(at.listenHost, at.dataPort);
      const dataAddress = formatHostPort(at.advertiseHost, dataPort);
      if (this.o.portFile)
        await writePortFile(this.o.portFile, {
          pid: process.pid,
          address,
          dataAddress,
          ...(this.metricsServer ? { metricsAddress: this.metricsServer.address } : {}),
        });
      await this.coord.registerBrick(
        this.o.volume,
        {
          id: this.identity.id,
          address,
          dataAddress,
          host: this.o.host ?? hostname(),
          weight: this.o.weight ?? (await capacityWeight(this.o.dataDir, this.o.capacityBytes ?? 0)),
          dataDir: this.o.dataDir,
        },
        this.knobs.leaseTtlMs,
      );
      this.unwatch = await this.coord.watchVolume(this.o.volume, (s) => {
        this.applying = this.applying
          .then(() => this.applySnapshot(s))
          .catch((err) => this.log.error('placement apply failed', { err }));
      });
      await this.applying;
      this.controller = new Controller({
        coordinator: this.coord,
        volume: this.o.volume,
        brickId: this.identity.id,
        probe: tcpProbe(),
        log: this.log,
        // A hung controller is replaced as fast as a hung primary.
        knobs: { electionLeaseTtlMs: this.knobs.leaseTtlMs },
      });
      await this.controller.start();
      this.log.info('brick started', {
        brick: this.identity.id,
        volume: this.o.volume,
        address,
        dataAddress,
        dataDir: this.o.dataDir,
      });
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** Resolves once the volume exists and this brick serves its PGs. */
  async ready(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.brick) {
      if (Date.now() > deadline) throw new Error('volume not created in time');
      await new Promise((r) => setTimeout(r, 50));
      await this.applying;
    }
  }

  private async applySnapshot(s: VolumeSnapshot): Promise<void> {
    if (this.volumeGone(s) || !s.config) return;
    const config: VolumeConfig = s.config;
    if (this.o.replicas !== undefined && config.replicas !== this.o.replicas && !this.replicasWarned) {
      // The volume's config is what counts; the flag states what the operator expects.
      this.replicasWarned = true;
      this.log.warn('--replicas differs from the volume: the volume config wins', {
        flag: this.o.replicas,
        volume: config.replicas,
      });
    }
    this.router.update({ config, placement: s.placement, bricks: s.bricks });
    if (!this.brick) {
      if (this.identity?.volumeCreatedAtMs === undefined) await this.recordVolume(config.createdAtMs);
      const coord = this.coord!;
      const space = new SpaceKeeper({
        brickId: this.brickId,
        dataDir: this.o.dataDir,
        metaDir: join(this.o.dataDir, 'meta'),
        capacityBytes: this.o.capacityBytes ?? 0,
        intervalMs: this.knobs.usageIntervalMs,
        blockBytes: () => this.brick?.blockBytesHeld() ?? Promise.resolve(0),
        thresholdPct: () => fullThresholdPct(this.router.current?.config ?? config),
        control: {
          publish: (u) => coord.publishUsage(config.name, this.brickId, u),
          list: () => coord.listUsage(config.name),
        },
        log: this.log,
      });
      this.space = space;
      const brick = new Brick({
        brickId: this.brickId,
        // Its own copy: adoptConfig changes the options that may change.
        volume: { ...config },
        kv: this.kv!,
        blocks: space.counting(this.blocks!),
        engine: new NamespaceEngine({
          pgCount: config.pgCount,
          inlineMaxBytes: config.inlineMaxBytes,
          blockSizeBytes: config.blockSizeBytes,
        }),
        knobs: this.knobs,
        log: this.log,
        clockNs: () => BigInt(Date.now()) * 1_000_000n + (process.hrtime.bigint() % 1_000_000n),
        remote: new RemotePeers(this.router, this.knobs.peerCallTimeoutMs),
        fault: faultInjector(this.log),
        replication: {
          transport: new ReplicaPeers(this.router, this.knobs.replicateTimeoutMs),
          placement: {
            read: async (pg) => {
              const a = (await coord.getPlacement(config.name))[pg];
              if (!a) throw new FsError('NOT_FOUND', `pg ${pg} has no placement record`);
              return a;
            },
            update: (pg, epoch, bricks, isr) => coord.updatePlacement(config.name, pg, epoch, bricks, isr),
          },
          lease: { fenced: () => this.fenced() },
          recovery: this.recoveryReporter(config.name),
          durability: this.durability,
          clock: monotonicClock,
          ...(this.o.metricsListen ? { stages: this.metrics.stages } : {}),
        },
        storeLost: this.storeLost,
        brickAlive: (id) => this.router.current?.bricks.find((b) => b.id === id)?.alive ?? false,
        anyFull: (bricks) => space.anyFull(bricks),
        roomBytes: (bricks) => space.roomBytes(bricks),
        mountsAlive: mountSessions(coord, config.name),
      });
      await brick.applyPlacement(s.placement);
      const locks = new LockService({
        mutate: (pg, kind, op) => brick.mutate(pg, '', kind, op, false),
        read: (pg, op) => brick.read(pg, op),
        ledPgs: () => [...brick.pgs.keys()].filter((pg) => brick.leads(pg)),
        kv: this.kv!,
        mountsAlive: mountSessions(coord, config.name),
        knobs: this.knobs,
        timers: {
          nowMs: () => performance.now(),
          set: (fn, ms) => setTimeout(fn, ms).unref(),
          clear: (h) => clearTimeout(h as NodeJS.Timeout),
        },
        log: this.log,
      });
      this.locks = locks;
      const coherence = new CoherenceService({
        knobs: coherenceDefaults,
        timers: {
          nowMs: () => performance.now(),
          set: (fn, ms) => setTimeout(fn, ms).unref(),
          clear: (h) => clearTimeout(h as NodeJS.Timeout),
        },
        log: this.log,
        newGeneration: () => randomBytes(8).toString('hex'),
        leads: (pg) => brick.leads(pg),
        forward: async (pg, invals, session) => {
          await this.router.call(
            pg,
            'Invalidate',
            {
              session,
              invalidations: invals.map((i) => ({ ...i, ino: String(i.ino), parent: String(i.parent) })),
            },
            {
              deadlineMs: coherenceDefaults.invalAckTimeoutMs * 2,
              callTimeoutMs: coherenceDefaults.invalAckTimeoutMs * 2,
            },
          );
        },
      });
      this.coherence = coherence;
      this.handlers = brickHandlers({
        locks,
        coherence,
        brick,
        brickId: this.brickId,
        dataDir: this.o.dataDir,
        log: this.log,
        startedAtMs: Date.now(),
        usage: () => space.meter.current(),
        requireCertificate: this.o.security?.kind === 'tls',
        grants: blockGrantsFor(this.o.security, this.knobs),
      });
      this.brick = brick;
      this.metrics.attach({
        brickId: this.brickId,
        pgs: () => brick.pgs.values(),
        replicas: () => brick.volume.replicas,
        catchUpsRunning: () => brick.repl.catchUpsRunning,
        directWriteBytes: () => this.blocks?.directBytes ?? 0,
      });
      this.scrubRunner = new ScrubRunner({
        brick,
        brickId: this.brickId,
        control: {
          result: (pg) => coord.getScrubResult(config.name, pg),
          report: (r) => coord.reportScrubPg(config.name, r),
          orphansRemoved: async (jobId, count) => {
            await coord.updateScrub(config.name, (j) =>
              j?.id === jobId
                ? { ...j, orphanBlocksRemoved: (j.orphanBlocksRemoved ?? 0) + count }
                : undefined,
            );
          },
        },
        knobs: this.knobs,
        log: this.log,
        clock: monotonicClock,
        wallMs: () => Date.now(),
      });
      brick.start();
      locks.start();
      space.start();
      void brick.recoverySweep();
      this.memoryTimer = setInterval(() => {
        const m = process.memoryUsage();
        const mib = (n: number) => Math.round(n / 1048576);
        this.log.debug('memory', {
          rssMiB: mib(m.rss),
          heapUsedMiB: mib(m.heapUsed),
          heapTotalMiB: mib(m.heapTotal),
          externalMiB: mib(m.external),
          arrayBuffersMiB: mib(m.arrayBuffers),
        });
      }, 10_000);
      this.memoryTimer.unref();
    } else {
      this.brick.adoptConfig(config);
      await this.brick.applyPlacement(s.placement);
    }
    // A running rebalance paces this brick's backfills, and counts the bytes they move.
    const job = s.rebalance;
    this.brick.repl.setBackfillLimit(job?.state === 'running' ? job.maxMiBPerS * 1024 * 1024 : 0);
    this.jobState = job?.state;
    if (job?.state === 'running' && !this.movedTimer) {
      this.movedTimer = setInterval(() => void this.reportMoved(config.name), MOVED_REPORT_MS);
      this.movedTimer.unref();
    }
    // A running scrub: this brick scrubs the PGs it leads.
    this.scrubRunner?.setJob(s.scrub);
  }

  /** Handlers that answer UNAVAILABLE until the volume exists. */
  private delegatingHandlers(): BrickHandlers {
    const out: Record<string, grpc.handleUnaryCall<unknown, unknown>> = {};
    for (const method of Object.keys(brickProto().dunix.v1.Brick.service)) {
      out[method] = (call, callback) => {
        const h = (
          this.handlers as unknown as Record<string, grpc.handleUnaryCall<unknown, unknown>> | undefined
        )?.[method];
        const done = this.observed(method, call, callback);
        if (!h)
          done(
            toServiceError(
              new FsError('UNAVAILABLE', `brick is waiting for volume ${this.o.volume} to be created`),
            ),
          );
        else h(call, done);
      };
    }
    return out as unknown as BrickHandlers;
  }

  /** `callback` counting the call in the metrics: latency by result code, bytes of block reads and writes. */
  private observed(
    method: string,
    call: { request: unknown },
    callback: grpc.sendUnaryData<unknown>,
  ): grpc.sendUnaryData<unknown> {
    const startNs = process.hrtime.bigint();
    return (err, reply, ...rest) => {
      const m = this.metrics;
      if (err) {
        const code = (err as Partial<grpc.ServiceError>).metadata?.get(ERROR_CODE_METADATA_KEY)[0];
        m.observeRpc(method, startNs, typeof code === 'string' ? code : 'UNKNOWN');
      } else {
        m.observeRpc(method, startNs, 'OK');
        if (method === 'ReadBlock') m.addRead((reply as { data?: Buffer } | null)?.data?.length ?? 0);
        else if (method === 'WriteBlock' || method === 'WriteInline')
          m.addWritten((call.request as { data?: Buffer } | null)?.data?.length ?? 0);
      }
      callback(err, reply, ...rest);
    };
  }

  /**
   * Adds the bytes this brick's backfills sent since the last report to the
   * running rebalance job (one compare-and-swap per brick every
   * MOVED_REPORT_MS at most); stops once no job runs.
   */
  private async reportMoved(volume: string): Promise<void> {
    const brick = this.brick;
    const coord = this.coord;
    if (!brick || !coord) return;
    const bytes = brick.repl.takePacedBytes();
    if (this.jobState !== 'running') {
      clearInterval(this.movedTimer);
      this.movedTimer = undefined;
    }
    if (bytes === 0) return;
    try {
      // Also once the job is done: its last moves' bytes arrive up to MOVED_REPORT_MS late.
      await coord.updateRebalance(volume, (j) =>
        j ? { ...j, bytesMoved: j.bytesMoved + bytes } : undefined,
      );
    } catch (err) {
      this.log.debug('rebalance bytes not recorded', { bytes, err: String(err) });
    }
  }

  /** Recovery progress to etcd for `dunixctl volume status`, at most every 500 ms per replica. */
  private recoveryReporter(volume: string): RecoveryReporter {
    const lastMs = new Map<string, number>();
    return {
      report: (p, pg, brick) => {
        const key = `${pg}/${brick}`;
        const coord = this.coord;
        if (!coord) return;
        const warn = (err: unknown) =>
          this.log.debug('recovery report failed', { pg, brick, err: String(err) });
        if (!p) {
          lastMs.delete(key);
          void coord.clearRecovery(volume, pg, brick).catch(warn);
          return;
        }
        const now = monotonicClock.nowMs();
        if (now - (lastMs.get(key) ?? -Infinity) < 500) return;
        lastMs.set(key, now);
        void coord.reportRecovery(volume, this.brickId, p).catch(warn);
      },
    };
  }

  /**
   * Fenced: etcd may have expired this brick's lease by now (no keepalive
   * confirmed within the TTL less a margin), so a successor may lead our PGs.
   */
  private fenced(): boolean {
    const health = this.coord?.leaseHealth(this.o.volume, this.brickId);
    return leaseFenced(health, realClock.now(), this.knobs.leaseFenceMarginMs);
  }

  /**
   * Whether the volume this brick served is gone from `s`: no config, or a
   * config of another incarnation. The first time, logs it and stops
   * serving (onVolumeDeleted, or stop()); the data dir is left as it is.
   */
  private volumeGone(s: VolumeSnapshot): boolean {
    if (this.volumeDeleted) return true;
    const servedAt = this.identity?.volumeCreatedAtMs;
    // Never served a volume (registered, waiting for `volume create`): gone only if its registration
    // went too (a forced delete of the volume it waits for; removeBrick refuses while it runs).
    if (!this.brick && servedAt === undefined && (s.config || s.bricks.some((b) => b.id === this.brickId)))
      return false;
    if (s.config && (servedAt === undefined || s.config.createdAtMs === servedAt)) return false;
    this.volumeDeleted = true;
    this.log.error(
      'volume deleted: this brick stops serving it and exits; its data stays in the data dir ' +
        '(brickd refuses to start into the deleted volume without --wipe-deleted-volume)',
      {
        volume: this.o.volume,
        brick: this.brickId,
        dataDir: this.o.dataDir,
        ...(s.config ? { recreatedAtMs: s.config.createdAtMs } : {}),
      },
    );
    if (this.o.onVolumeDeleted) this.o.onVolumeDeleted();
    else void this.stop();
    return true;
  }

  /** Notes in brick.json which incarnation of the volume this data dir serves. */
  private async recordVolume(createdAtMs: number): Promise<void> {
    const identity: Identity = { ...this.identity!, volumeCreatedAtMs: createdAtMs };
    const path = join(this.o.dataDir, 'brick.json');
    await writeFile(`${path}.tmp`, JSON.stringify(identity));
    await rename(`${path}.tmp`, path);
    this.identity = identity;
  }

  /**
   * The identity in the data dir, once the volume it served is known to
   * exist still. A data dir of a deleted volume (or of an earlier
   * incarnation of a re-created one) is refused, or with wipeDeletedVolume
   * emptied (store, block files, identity) and started as a new brick.
   */
  private async checkedIdentity(coord: Coordinator): Promise<{ identity: Identity; created: boolean }> {
    const loaded = await this.loadIdentity();
    const servedAt = loaded.identity.volumeCreatedAtMs;
    if (servedAt === undefined) return loaded;
    const config = await coord.getVolume(this.o.volume);
    if (config?.createdAtMs === servedAt) return loaded;
    const how = config ? 'deleted and created again' : 'deleted';
    const dir = this.o.dataDir;
    if (!this.o.wipeDeletedVolume) {
      throw new Error(
        `volume ${this.o.volume}, which ${dir} served as brick ${loaded.identity.id} ` +
          `(volume created ${new Date(servedAt).toISOString()}), was ${how}; its data is kept in ${dir}: ` +
          'remove the directory, or start brickd with --wipe-deleted-volume to empty it and join as a new brick',
      );
    }
    this.log.warn('the volume this data dir served was deleted: wiping it (--wipe-deleted-volume)', {
      volume: this.o.volume,
      brick: loaded.identity.id,
      dataDir: dir,
      how,
    });
    for (const name of ['meta', 'blocks', 'brick.json'])
      await rm(join(dir, name), { recursive: true, force: true });
    return this.loadIdentity();
  }

  private async loadIdentity(): Promise<{ identity: Identity; created: boolean }> {
    const path = join(this.o.dataDir, 'brick.json');
    try {
      const id = JSON.parse(await readFile(path, 'utf8')) as Identity;
      if (id.volume !== this.o.volume) {
        throw new Error(`data dir ${this.o.dataDir} belongs to volume ${id.volume}, not ${this.o.volume}`);
      }
      return { identity: id, created: false };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      const id: Identity = { id: `brick-${randomBytes(6).toString('hex')}`, volume: this.o.volume };
      await writeFile(`${path}.tmp`, JSON.stringify(id));
      await rename(`${path}.tmp`, path);
      return { identity: id, created: true };
    }
  }

  private stopping: Promise<void> | undefined;
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.controller?.stop().catch(() => {});
      this.locks?.stop();
      this.coherence?.stop();
      this.brick?.stop();
      await this.scrubRunner?.stop().catch(() => {});
      clearInterval(this.memoryTimer);
      this.space?.stop();
      clearInterval(this.movedTimer);
      if (this.server) {
        const server = this.server;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            server.forceShutdown();
            resolve();
          }, 3000);
          server.tryShutdown(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
      await this.frames?.close().catch(() => {});
      await this.unwatch?.().catch(() => {});
      await this.coord?.stop().catch(() => {});
      this.router.close();
      if (this.durability instanceof GroupCommit) await this.durability.stop().catch(() => {});
      await this.blocks?.close().catch(() => {});
      await this.kv?.close().catch(() => {});
      await this.metricsServer?.close();
    })();
    return this.stopping;
  }
}

/** Monotonic milliseconds (never wall clock) and sleeping, for the replication protocol. */
const monotonicClock = {
  nowMs: () => performance.now(),
  sleep: (ms: number) => new Promise<void>((r) => setTimeout(r, ms)),
};

/** DUNIX_FAULTS=point[,point]: crash (SIGKILL self) when a listed point is reached. For fault tests only. */
function faultInjector(log: Logger): ((point: string) => void) | undefined {
  const points = new Set((process.env.DUNIX_FAULTS ?? '').split(',').filter(Boolean));
  if (points.size === 0) return undefined;
  return (point) => {
    if (!points.has(point)) return;
    log.warn('fault injection: crashing', { point });
    process.kill(process.pid, 'SIGKILL');
  };
}
