import {
  Controller,
  leaseFenced,
  type ControllerKnobs,
  type CoordinatorKnobs,
  type MemoryKv as EtcdStore,
  type VolumeSnapshot,
} from '@dunix/coord';
import { FsError, Router, type PgAssignment, type RetryKnobs } from '@dunix/proto';
import { Brick } from '../../src/brick.js';
import type { BrickKnobs } from '../../src/config.js';
import { NamespaceEngine } from '../../src/namespace/engine.js';
import type { PgState } from '../../src/pg/pg-state.js';
import type { PlantedBug, ReplicationDeps } from '../../src/replication/deps.js';
import { RemotePeers } from '../../src/rpc/peers.js';
import { ReplicaPeers } from '../../src/rpc/replica-peers.js';
import { brickHandlers } from '../../src/rpc/server.js';
import { keys } from '../../src/store/keys.js';
import type { MemoryBlockFiles } from '../../src/store/memory-block-files.js';
import { SessionKv, SimCoordinator } from './etcd.js';
import type { SimKv } from './sim-kv.js';
import type { SimNet, SimNode, UnaryHandler } from './net.js';
import type { SimRandom } from './random.js';
import type { Trace } from './trace.js';

/** An acknowledgement: a mutation's success reply leaving a brick. */
export interface Ack {
  pg: number;
  brick: string;
  /** The PG's epoch and role at the brick when it answered. */
  epoch: number;
  role: string;
  /** Simulation time. */
  atMs: number;
  method: string;
  requestId: string;
  /** Log sequence of the op, from its stored reply (undefined for block writes: they carry no request id). */
  seq: bigint | undefined;
  /**
   * The brick woke from a suspension less than a lease TTL ago: its clock
   * missed the suspension, so its lease may look valid to it after etcd
   * expired it and another primary took over. Only epochs fence it then.
   */
  staleClock: boolean;
}

export const MUTATIONS = new Set(['Mknod', 'Mkdir', 'SetXattr', 'WriteInline', 'WriteBlock']);

export interface BrickNodeDeps {
  net: SimNet;
  node: SimNode;
  etcd: EtcdStore;
  volume: string;
  /** The brick's disk: its key-value store and block files survive crashes. */
  kv: SimKv;
  blocks: MemoryBlockFiles;
  knobs: BrickKnobs;
  coordKnobs: Partial<CoordinatorKnobs>;
  controllerKnobs: Partial<ControllerKnobs>;
  retryKnobs: Partial<RetryKnobs>;
  trace: Trace;
  onBug(where: string, msg: string, fields?: Record<string, unknown>): void;
  onAck(ack: Ack): void;
  /** Draws the loss of etcd replies (node.etcdReplyLoss). */
  etcdRandom: SimRandom;
  /** The simulation's time (a brick's own clock may lag it after a suspension). */
  worldNow(): number;
  /** What a TCP probe of the brick would say. */
  probe(brickId: string): 'down' | 'up';
  plantedBug: PlantedBug | undefined;
}

/**
 * One simulated brick process, wired as the daemon (daemon.ts) wires it:
 * a coordinator session (lease, placement watch), a router to its peers,
 * the real Brick with RemotePeers and ReplicaPeers, the real RPC handlers,
 * the elected controller, and the recovery sweep on a timer. Only sockets,
 * etcd, disks and time are simulated.
 */
export class BrickNode {
  brick: Brick | undefined;
  session: SimCoordinator | undefined;
  router: Router | undefined;
  private nsTick = 0n;

  constructor(
    readonly id: string,
    private readonly d: BrickNodeDeps,
  ) {}

  get node(): SimNode {
    return this.d.node;
  }

  /** The brick's disk (what a crash leaves). */
  get kv(): SimKv {
    return this.d.kv;
  }

  get blocks(): MemoryBlockFiles {
    return this.d.blocks;
  }

  /** Starts the process (first start or restart after a crash): register, watch, serve, lead. */
  async start(): Promise<void> {
    const { node, trace, volume } = this.d;
    const incarnation = node.incarnation;
    const log = trace.logger(this.id, (msg, fields) => this.d.onBug(this.id, msg, fields));
    const session = new SimCoordinator(new SessionKv(this.d.etcd, node, this.d.etcdRandom), {
      knobs: this.d.coordKnobs,
      log,
      clock: node.clock,
    });
    this.session = session;
    const router = new Router({
      knobs: this.d.retryKnobs,
      clock: node.clock,
      log,
      connect: (b, events) => this.d.net.conn(node, b.id, events.onConnectionRefused),
      onConnectionRefused: (brickId) =>
        void session
          .reportSuspect(volume, brickId, this.id)
          .catch((err) => log.warn('suspect report failed', { brick: brickId, err: String(err) })),
    });
    this.router = router;
    this.brick = undefined;
    await session.start();
    await session.registerBrick(
      volume,
      {
        id: this.id,
        address: `${this.id}:7100`,
        dataAddress: `${this.id}:7101`,
        host: this.id,
        weight: 1,
        dataDir: `/sim/${this.id}`,
      },
      this.d.knobs.leaseTtlMs,
    );
    let applying = Promise.resolve();
    await session.watchVolume(volume, (s) => {
      applying = applying
        .then(() => this.applySnapshot(s, incarnation))
        .catch((err) => log.error('placement apply failed', { err: String(err) }));
    });
    await applying;
    const controller = new Controller({
      coordinator: session,
      volume,
      brickId: this.id,
      probe: async (brickId) => this.d.probe(brickId),
      clock: node.clock,
      log,
      knobs: { ...this.d.controllerKnobs, electionLeaseTtlMs: this.d.knobs.leaseTtlMs },
    });
    await controller.start();
    trace.add(this.id, 'started', { incarnation });
  }

  /** SIGKILL: the process and its etcd session end; its stores stay. */
  crash(): void {
    const session = this.session;
    this.d.node.crash();
    this.brick = undefined;
    this.router = undefined;
    this.session = undefined;
    void session?.crash().catch(() => {});
  }

  private async applySnapshot(s: VolumeSnapshot, incarnation: number): Promise<void> {
    if (!s.config || this.d.node.incarnation !== incarnation) return;
    const config = s.config;
    const router = this.router!;
    const session = this.session!;
    router.update({ config, placement: s.placement, bricks: s.bricks });
    if (this.brick) {
      await this.brick.applyPlacement(s.placement);
      return;
    }
    const { knobs, node, volume } = this.d;
    const log = this.d.trace.logger(this.id, (msg, fields) => this.d.onBug(this.id, msg, fields));
    const replication: BrickReplication = {
      transport: new ReplicaPeers(router, knobs.replicateTimeoutMs),
      placement: {
        read: async (pg) => {
          const a = (await session.getPlacement(volume))[pg];
          if (!a) throw new FsError('NOT_FOUND', `pg ${pg} has no placement record`);
          return a;
        },
        update: (pg, epoch, bricks, isr) => session.updatePlacement(volume, pg, epoch, bricks, isr),
      },
      lease: { fenced: () => this.fenced() },
      clock: node.clock.protocol(),
      // Travels to Replication through Brick's spread of BrickDeps.replication.
      plantedBug: this.d.plantedBug,
    };
    const brick = new Brick({
      brickId: this.id,
      volume: config,
      kv: this.d.kv,
      blocks: this.d.blocks,
      engine: new NamespaceEngine({
        pgCount: config.pgCount,
        inlineMaxBytes: config.inlineMaxBytes,
        blockSizeBytes: config.blockSizeBytes,
      }),
      knobs,
      log,
      clockNs: () => BigInt(Math.round(node.clock.now() * 1000)) * 1000n + (this.nsTick++ % 1000n),
      remote: new RemotePeers(router, knobs.peerCallTimeoutMs),
      replication,
      brickAlive: (id) => router.current?.bricks.find((b) => b.id === id)?.alive ?? false,
    });
    await brick.applyPlacement(s.placement);
    if (this.d.node.incarnation !== incarnation) return;
    const handlers = brickHandlers({
      brick,
      brickId: this.id,
      dataDir: `/sim/${this.id}`,
      log,
      startedAtMs: 0,
    }) as unknown as Record<string, UnaryHandler>;
    this.d.node.handlers = this.recordAcks(brick, handlers);
    this.brick = brick;
    // What brick.start() does with a real interval, as the daemon calls it here.
    const sweep = () =>
      node.clock.setTimeout(() => {
        void brick.recoverySweep();
        sweep();
      }, knobs.recoveryIntervalMs);
    sweep();
    void brick.recoverySweep();
  }

  /** Wraps the mutation handlers: every success reply is recorded as an acknowledgement. */
  private recordAcks(brick: Brick, handlers: Record<string, UnaryHandler>): Record<string, UnaryHandler> {
    const out = { ...handlers };
    for (const method of MUTATIONS) {
      const h = handlers[method]!;
      out[method] = (call, callback) =>
        h(call, (err, reply) => {
          if (err) return callback(err, reply);
          const header = (call.request as { header: { pg: number; requestId: string } }).header;
          const st: PgState | undefined = brick.pgs.get(header.pg);
          const ack: Ack = {
            pg: header.pg,
            brick: this.id,
            epoch: st?.epoch ?? -1,
            role: st ? `${st.role}${st.ready ? '' : ' (not ready)'}` : 'none',
            atMs: this.d.worldNow(),
            method,
            requestId: header.requestId,
            seq: undefined,
            staleClock:
              this.d.node.suspendEndedAtMs !== undefined &&
              this.d.worldNow() - this.d.node.suspendEndedAtMs < this.d.knobs.leaseTtlMs,
          };
          this.d.onAck(ack);
          if (!header.requestId) return callback(null, reply);
          // The op's sequence, from the reply stored with it (read before the answer leaves).
          void this.d.kv.get(keys.request(header.pg, header.requestId)).then((v) => {
            if (v) ack.seq = BigInt((JSON.parse(v.toString()) as { seq: string }).seq);
            callback(null, reply);
          });
        });
    }
    return out;
  }

  /** The daemon's fencing rule: the lease may have expired in etcd (or was just replaced). */
  fenced(): boolean {
    const session = this.session;
    if (!session) return true;
    return leaseFenced(
      session.leaseHealth(this.d.volume, this.id),
      this.d.node.clock.now(),
      this.d.knobs.leaseFenceMarginMs,
    );
  }

  /** The brick's copy of `pg`, if it runs and holds one. */
  pg(pg: number): PgState | undefined {
    return this.brick?.pgs.get(pg);
  }

  /** Whether this brick serves `a` as it should once healed. */
  serves(a: PgAssignment): boolean {
    const st = this.pg(a.pg);
    if (!st || st.epoch !== a.epoch) return false;
    return a.bricks[0] === this.id ? st.role === 'primary' && st.ready : st.role === 'replica';
  }
}

type BrickReplication = Pick<ReplicationDeps, 'transport' | 'placement' | 'lease' | 'clock' | 'plantedBug'>;
