import {
  ManualClock,
  MemoryKv as EtcdStore,
  type ControllerKnobs,
  type CoordinatorKnobs,
  type VolumeSnapshot,
} from '@dunix/coord';
import {
  directoryPg,
  initHashing,
  pgOfIno,
  ROOT_INO,
  type PgAssignment,
  type RetryKnobs,
  type VolumeConfig,
} from '@dunix/proto';
import { brickDefaults, validateBrickKnobs, type BrickKnobs } from '../../src/config.js';
import type { PlantedBug } from '../../src/replication/deps.js';
import { MemoryBlockFiles } from '../../src/store/memory-block-files.js';
import { BrickNode, type Ack } from './brick-node.js';
import {
  checkAcks,
  checkHistory,
  checkInSyncLogs,
  checkModel,
  checkReplicasIdentical,
  stateDigest,
} from './checkers.js';
import { SessionKv, SimCoordinator } from './etcd.js';
import { SimNet, SimNode, type NetKnobs } from './net.js';
import { SimRandom } from './random.js';
import { checkScrub } from './scrub-check.js';
import { SimKv } from './sim-kv.js';
import { Trace } from './trace.js';
import { History, SimClient, type WorkloadKnobs } from './workload.js';

export interface SimOptions {
  seed: number;
  /** A deliberately broken protocol (see ReplicationDeps.plantedBug). */
  bug?: PlantedBug;
  /** Print every trace line as it happens. */
  verbose?: boolean;
  /** Length of the phase with workload and faults, simulated ms (default 3000). */
  runMs?: number;
  /** Where --verbose lines go (default console.log). */
  print?: (line: string) => void;
}

export interface SimResult {
  seed: number;
  bug: PlantedBug | undefined;
  ok: boolean;
  failures: string[];
  /** Hash of the whole trace: the same seed gives the same hash. */
  traceHash: string;
  traceLines: number;
  /** The last trace lines (for a failure report). */
  traceTail: string[];
  config: string;
  stats: Record<string, number>;
  /** Log lines of the run by level and message: what it exercised (failovers, backfills, ...). */
  events: Record<string, number>;
  realMs: number;
}

const VOLUME = 'sim';

/**
 * crash: SIGKILL, restarted after forMs from its stores. pause: SIGSTOP for
 * forMs. suspend: the machine sleeps for forMs and its monotonic clock does
 * not count it (so its lease looks younger than etcd knows it is: the case
 * where only epochs fence an old primary). etcd-cut: its etcd session fails
 * for forMs. etcd-flaky: `rate` of its etcd writes are applied but their
 * reply is lost. isolate: it and `other` cannot reach each other. loss:
 * `rate` of all messages are lost.
 */
type FaultKind = 'crash' | 'pause' | 'suspend' | 'etcd-cut' | 'etcd-flaky' | 'isolate' | 'loss';
interface Fault {
  kind: FaultKind;
  atMs: number;
  forMs: number;
  brick: string;
  other: string;
  rate: number;
}

/** Everything a seed decides before the run: sizes, knobs, the network, the fault plan. */
function plan(seed: number, runMs: number) {
  const r = new SimRandom(seed, 1);
  const brickCount = r.chance(0.25) ? 4 : 3;
  const bricks = Array.from({ length: brickCount }, (_v, i) => `b${i}`);
  const pgCount = r.pick([4, 8]);
  const minInsync = r.chance(0.2) ? 1 : 2;
  // Small: entries and stored replies are trimmed, and replicas that fall behind are backfilled.
  const opLogRetain = r.chance(0.25) ? r.int(16, 64) : 50_000;
  const knobs: BrickKnobs = validateBrickKnobs({
    ...brickDefaults,
    leaseTtlMs: 2000,
    leaseFenceMarginMs: 500,
    replicateTimeoutMs: r.pick([200, 300, 500]),
    peerCallTimeoutMs: 1000,
    recoveryIntervalMs: r.pick([100, 200, 300]),
    opLogRetain,
    catchUpBatchEntries: r.pick([4, 16, 256]),
    catchUpFinalEntries: Math.min(opLogRetain, r.pick([1, 4, 16])),
    backfillChunkKeys: r.pick([8, 64, 1024]),
    backfillChunkBytes: r.pick([64 * 1024, 1024 * 1024]),
    seqReserveBatch: r.pick([8, 4096]),
    // Pipelined appends: one at a time, a few, and the default depth.
    replicateInflightMax: Math.min(Math.floor(opLogRetain / 2), r.pick([1, 4, 32])),
    replicateBatchBytesMax: r.pick([64 * 1024, 8 * 1024 * 1024]),
  });
  const coordKnobs: Partial<CoordinatorKnobs> = {
    leaseTtlMs: 2000,
    keepaliveIntervalMs: 500,
    regrantRetryMs: 200,
    watchCoalesceMs: r.pick([10, 50]),
    fenceMarginMs: 500,
    suspectTtlMs: 2000,
  };
  const controllerKnobs: Partial<ControllerKnobs> = {
    retryMs: 200,
    probeTimeoutMs: 500,
    probeConnectTimeoutMs: 100,
  };
  const callTimeoutMs = r.pick([300, 1000]);
  const retryKnobs: Partial<RetryKnobs> = { callTimeoutMs, backoffMinMs: 10, backoffMaxMs: 200 };
  const net: NetKnobs = {
    dropRate: r.pick([0, 0.001, 0.01, 0.03]),
    delayMinMs: 0.05,
    delayMaxMs: r.pick([0.5, 2]),
    spikeRate: r.pick([0, 0.002, 0.01]),
    spikeMaxMs: r.pick([10, 50, 250]),
  };
  const volume: VolumeConfig = {
    name: VOLUME,
    pgCount,
    replicas: 3,
    minInsync,
    blockSizeBytes: 128 * 1024,
    inlineMaxBytes: 1024,
    createdAtMs: 0,
  };
  const workload: Omit<WorkloadKnobs, 'pgCount' | 'blockSizeBytes'> = {
    thinkMaxMs: r.pick([20, 50, 100]),
    opDeadlineMs: 5000,
    callTimeoutMs,
  };
  const f = new SimRandom(seed, 3);
  const faults: Fault[] = [];
  const n = f.chance(0.05) ? 0 : f.int(1, 6);
  for (let i = 0; i < n; i++) {
    const kind = (['crash', 'pause', 'suspend', 'etcd-cut', 'etcd-flaky', 'isolate', 'loss'] as const)[
      f.weighted([3, 2, 1, 2, 1, 1, 1])
    ]!;
    const brick = f.pick(bricks);
    const others = bricks.filter((b) => b !== brick);
    const forMs =
      kind === 'crash'
        ? f.int(50, 2500)
        : kind === 'pause' || kind === 'suspend' || kind === 'etcd-cut'
          ? // Often past the lease TTL (2 s): the brick is then replaced.
            f.pick([f.int(50, 1500), f.int(2000, 3000)])
          : f.int(100, 1500);
    faults.push({
      kind,
      // Mostly over before the heal (which ends every fault).
      atMs: f.int(100, Math.max(100, runMs - forMs - 200)),
      forMs,
      brick,
      other: f.pick(others),
      rate: 0.2 + f.float() * 0.5,
    });
  }
  faults.sort((x, y) => x.atMs - y.atMs);
  // Moves (4 bricks, replicas 3: a PG can move): an operator drains a brick
  // (and maybe takes it back), or gives one more weight and starts a
  // rebalance - while the faults go on. Their own random stream, so the
  // fault plans of earlier seeds stay as they were.
  const m = new SimRandom(seed, 4);
  const moves: MoveEvent[] = [];
  if (brickCount === 4 && m.chance(0.6)) {
    const atMs = m.int(100, Math.max(101, Math.floor(runMs / 2)));
    moves.push({
      kind: m.pick(['drain', 'weight'] as const),
      brick: m.pick(bricks),
      atMs,
      undoAtMs: m.chance(0.5) ? m.int(atMs + 100, Math.max(atMs + 101, runMs - 100)) : undefined,
      maxConcurrent: m.pick([1, 2, 8]),
    });
  }
  // Clients: more of them put several ops of one PG on their way to its
  // replicas at once (pipelined appends). Their own stream, as above.
  const clientCount = new SimRandom(seed, 5).pick([3, 3, 6, 10]);
  return {
    bricks,
    knobs,
    coordKnobs,
    controllerKnobs,
    retryKnobs,
    net,
    volume,
    workload,
    faults,
    moves,
    clientCount,
  };
}

/**
 * drain: the brick's operator record becomes `draining` (its replicas move
 * off); undone: `in` again. weight: its weight becomes 3 and a rebalance
 * starts (maxConcurrent PGs at a time); undone: weight 1 and another one.
 */
interface MoveEvent {
  kind: 'drain' | 'weight';
  brick: string;
  atMs: number;
  undoAtMs: number | undefined;
  maxConcurrent: number;
}

/** Runs one seed: setup, workload with faults, heal, checkers. */
export async function runSimulation(o: SimOptions): Promise<SimResult> {
  const realStart = performance.now();
  await initHashing();
  const runMs = o.runMs ?? 3000;
  // Healing takes a lease TTL (2 s) and catch-up, under 3 s in practice: five times that is a hang.
  const healMaxMs = 15_000;
  const p = plan(o.seed, runMs);
  const world = new ManualClock();
  const print = o.print ?? ((l: string) => console.log(l));
  const trace = new Trace(() => world.now(), o.verbose ? print : undefined);
  const failures: string[] = [];
  const bug = (where: string, msg: string, fields?: Record<string, unknown>) =>
    failures.push(
      `${where} logged an error (a bug or a broken invariant): ${msg} ${JSON.stringify(fields ?? {})}`,
    );
  const onProcessError = (err: unknown) => failures.push(`uncaught: ${String((err as Error)?.stack ?? err)}`);
  process.on('unhandledRejection', onProcessError);
  process.on('uncaughtException', onProcessError);
  const config = [
    `bricks=${p.bricks.length}`,
    `pgs=${p.volume.pgCount}`,
    `min_insync=${p.volume.minInsync}`,
    `retain=${p.knobs.opLogRetain}`,
    `drop=${p.net.dropRate}`,
    `faults=${p.faults.map((f) => `${f.kind}:${f.brick}@${f.atMs}+${f.forMs}`).join(',') || 'none'}`,
    ...(p.moves.length
      ? [
          `moves=${p.moves.map((m) => `${m.kind}:${m.brick}@${m.atMs}${m.undoAtMs ? `..${m.undoAtMs}` : ''}/${m.maxConcurrent}`).join(',')}`,
        ]
      : []),
  ].join(' ');
  trace.add('sim', `seed ${o.seed}${o.bug ? ` bug ${o.bug}` : ''}`, { config });

  const etcd = new EtcdStore(world);
  // Setup runs on a network that loses nothing; the seed's network starts with the faults.
  const net = new SimNet(world, new SimRandom(o.seed, 2), { ...p.net, dropRate: 0, spikeRate: 0 }, trace);
  const acks: Ack[] = [];
  const history = new History();
  const nodes = new Map<string, BrickNode>();
  for (const id of p.bricks) {
    const node = net.add(new SimNode(id, 'brick', world));
    nodes.set(
      id,
      new BrickNode(id, {
        net,
        node,
        etcd,
        volume: VOLUME,
        kv: new SimKv(),
        blocks: new MemoryBlockFiles(),
        knobs: p.knobs,
        coordKnobs: p.coordKnobs,
        controllerKnobs: p.controllerKnobs,
        retryKnobs: p.retryKnobs,
        trace,
        onBug: bug,
        onAck: (a) => {
          acks.push(a);
          trace.add(a.brick, `ack ${a.method}`, { pg: a.pg, epoch: a.epoch, req: a.requestId });
        },
        etcdRandom: new SimRandom(o.seed, 20 + p.bricks.indexOf(id)),
        worldNow: () => world.now(),
        probe: (b) => (net.node(b).state === 'crashed' ? 'down' : 'up'),
        plantedBug: o.bug,
      }),
    );
  }
  const admin = net.add(new SimNode('admin', 'client', world));
  const adminLog = trace.logger('admin', (msg, fields) => bug('admin', msg, fields));
  const coord = new SimCoordinator(new SessionKv(etcd, admin, new SimRandom(o.seed, 5)), {
    knobs: p.coordKnobs,
    log: adminLog,
    clock: admin.clock,
  });
  const stats: Record<string, number> = {};

  /** Incarnations whose start() has not settled yet, by brick, with when it began. */
  const starting = new Map<string, { incarnation: number; atMs: number }>();
  const startBrick = async (b: BrickNode): Promise<void> => {
    const incarnation = b.node.incarnation;
    starting.set(b.id, { incarnation, atMs: world.now() });
    try {
      await b.start();
      if (starting.get(b.id)?.incarnation === incarnation) starting.delete(b.id);
    } catch (err) {
      if (starting.get(b.id)?.incarnation === incarnation) starting.delete(b.id);
      // As a supervisor would: the process exits, and is started again a moment later.
      trace.add(b.id, 'start failed', { err: String(err) });
      b.crash();
      world.setTimeout(() => restartBrick(b), 300);
    }
  };
  const restartBrick = (b: BrickNode) => {
    if (b.node.state !== 'crashed') return;
    b.node.restart();
    trace.add(b.id, 'restart');
    void startBrick(b);
  };
  /** Advances the clock until `done` holds (checked every `stepMs`) or `maxMs` passed. */
  const until = async (
    done: () => boolean | Promise<boolean>,
    maxMs: number,
    stepMs = 50,
  ): Promise<boolean> => {
    const end = world.now() + maxMs;
    while (!(await done())) {
      if (world.now() >= end) return false;
      await world.advance(stepMs);
    }
    return true;
  };
  const settled = <T>(promise: Promise<T>) => {
    const s = { done: false, value: undefined as T | undefined };
    void promise.then((v) => {
      s.done = true;
      s.value = v;
    });
    return s;
  };
  let snapshot: VolumeSnapshot | undefined;

  try {
    await coord.start();
    for (const b of nodes.values()) await startBrick(b);
    await coord.createVolume(p.volume);
    const clients = Array.from(
      { length: p.clientCount },
      (_v, i) =>
        new SimClient(
          `c${i}`,
          net.add(new SimNode(`c${i}`, 'client', world)),
          net,
          history,
          new SimRandom(o.seed, 10 + i),
          { ...p.workload, pgCount: p.volume.pgCount, blockSizeBytes: p.volume.blockSizeBytes },
          trace,
          p.retryKnobs,
          (brickId) => void coord.reportSuspect(VOLUME, brickId, `c${i}`).catch(() => {}),
        ),
    );
    await coord.watchVolume(VOLUME, (s) => {
      if (!s.config) return;
      const moved =
        snapshot &&
        s.placement.filter((a, i) => a.bricks[0] !== snapshot!.placement[i]?.bricks[0]).map((a) => a.pg);
      if (moved?.length) stats.failovers = (stats.failovers ?? 0) + moved.length;
      snapshot = s;
      trace.add('etcd', 'placement', {
        pgs: s.placement.map((a) => `${a.pg}@${a.epoch}:${a.isr.join('+')}/${a.bricks.join('+')}`).join(' '),
        dead: s.bricks.filter((b) => !b.alive).map((b) => b.id),
      });
      for (const c of clients) c.update({ config: s.config, placement: s.placement, bricks: s.bricks });
    });

    // Setup, without faults: every PG served, then a directory in every PG other than the root's.
    const healthy = async () => healthyCluster(await coord.getSnapshot(VOLUME), nodes);
    if (!(await until(healthy, 20_000))) throw new Error('setup: the volume never became healthy');
    history.dirs.push(ROOT_INO);
    for (let pg = 1; pg < p.volume.pgCount; pg++) {
      let name = '';
      for (let i = 0; !name; i++)
        if (directoryPg(ROOT_INO, Buffer.from(`d${pg}.${i}`), p.volume.pgCount) === pg) name = `d${pg}.${i}`;
      const made = settled(clients[0]!.mkdir(ROOT_INO, name));
      await until(() => made.done, 20_000, 10);
      if (made.value === undefined || pgOfIno(made.value) !== pg)
        throw new Error(`setup: mkdir ${name} failed`);
      history.dirs.push(made.value);
    }

    // Workload and faults.
    const t0 = world.now();
    trace.add('sim', 'faults and workload begin');
    net.knobs = { ...p.net };
    for (const f of p.faults) world.setTimeout(() => startFault(f), f.atMs);
    const operate = (what: string, fn: () => Promise<unknown>) => {
      trace.add('sim', what);
      stats[`move.${what.split(' ')[0]}`] = (stats[`move.${what.split(' ')[0]}`] ?? 0) + 1;
      // The operator's etcd calls may fail like anyone's: retried until they land.
      const attempt = (n: number): void => {
        fn().catch((err) => {
          trace.add('sim', `${what} failed`, { err: String(err) });
          if (n < 20) world.setTimeout(() => attempt(n + 1), 100);
        });
      };
      attempt(1);
    };
    const job = (id: string, maxConcurrent: number) => () =>
      coord.updateRebalance(VOLUME, () => ({
        id,
        state: 'running',
        maxMiBPerS: 0,
        maxConcurrent,
        startedAtMs: world.now(),
        updatedAtMs: world.now(),
        pgsTotal: 0,
        pgsDone: 0,
        bytesMoved: 0,
      }));
    for (const mv of p.moves) {
      const admin = (state: 'in' | 'draining', weight: number) => () =>
        coord.setBrickAdmin(VOLUME, mv.brick, { state, weight, updatedAtMs: world.now() });
      world.setTimeout(() => {
        if (mv.kind === 'drain') operate(`drain ${mv.brick}`, admin('draining', 1));
        else {
          operate(`weight ${mv.brick} 3`, admin('in', 3));
          operate('rebalance start', job('r1', mv.maxConcurrent));
        }
      }, mv.atMs);
      if (mv.undoAtMs !== undefined)
        world.setTimeout(() => {
          operate(`undo ${mv.kind} ${mv.brick}`, admin('in', 1));
          operate('rebalance start', job('r2', mv.maxConcurrent));
        }, mv.undoAtMs);
    }
    const startFault = (f: Fault) => {
      const b = nodes.get(f.brick)!;
      trace.add('sim', `fault ${f.kind}`, { brick: f.brick, forMs: f.forMs, other: f.other, rate: f.rate });
      stats[`fault.${f.kind}`] = (stats[`fault.${f.kind}`] ?? 0) + 1;
      const end = (fn: () => void) => world.setTimeout(() => world.now() < t0 + runMs && fn(), f.forMs);
      if (f.kind === 'crash') {
        if (b.node.state === 'crashed') return;
        b.crash();
        end(() => restartBrick(b));
      } else if (f.kind === 'pause' || f.kind === 'suspend') {
        b.node.pause(f.kind === 'suspend');
        end(() => b.node.resume());
      } else if (f.kind === 'etcd-cut') {
        b.node.cutFromEtcd(true);
        end(() => b.node.cutFromEtcd(false));
      } else if (f.kind === 'etcd-flaky') {
        b.node.etcdReplyLoss = f.rate;
        end(() => (b.node.etcdReplyLoss = 0));
      } else if (f.kind === 'isolate') {
        net.blocked.add(SimNet.pair(f.brick, f.other));
        end(() => net.blocked.delete(SimNet.pair(f.brick, f.other)));
      } else {
        net.knobs.dropRate = f.rate;
        end(() => (net.knobs.dropRate = p.net.dropRate));
      }
    };
    // Checker 2 all along: in-sync logs match (read from etcd and the bricks' stores between two events).
    const seen = new Set<string>();
    const watchLogs = () =>
      world.setTimeout(() => {
        void (async () => {
          const s = await coord.getSnapshot(VOLUME);
          for (const v of await checkInSyncLogs(s.placement, nodes)) {
            const key = v.slice(0, v.indexOf(':'));
            if (seen.has(key)) continue;
            seen.add(key);
            failures.push(`at ${(world.now() - t0).toFixed(0)} ms: ${v}`);
            trace.add('check', v);
          }
        })().catch((err) => failures.push(`in-sync log check failed: ${String(err)}`));
        if (!checking) watchLogs();
      }, 50);
    let checking = false;
    watchLogs();
    const running = clients.map((c) => settled(c.run(t0 + runMs)));
    await world.advance(t0 + runMs - world.now());

    // Heal: everything up and connected, no more loss; wait for the clients and for full in-sync sets.
    trace.add('sim', 'heal');
    net.blocked.clear();
    net.knobs = { ...p.net, dropRate: 0 };
    for (const b of nodes.values()) {
      b.node.etcdReplyLoss = 0;
      b.node.cutFromEtcd(false);
      b.node.resume();
      restartBrick(b);
    }
    const healStart = world.now();
    const healed = await until(async () => running.every((r) => r.done) && (await healthy()), healMaxMs, 50);
    stats.healMs = world.now() - healStart;
    // A start (registration, placement, controller) settles, one way or the other, within moments.
    for (const [id, st] of starting)
      if (nodes.get(id)!.node.incarnation === st.incarnation && world.now() - st.atMs > 5000)
        failures.push(
          `${id}: start() of the process started at ${(st.atMs - t0).toFixed(0)} ms never settled`,
        );
    if (!healed) {
      failures.push(`not healed ${healMaxMs} ms after the faults ended: ${describeHealth(snapshot, nodes)}`);
    } else {
      trace.add('sim', 'healed; checking');
      checking = true;
      const checks = settled(
        (async () => {
          const s = await coord.getSnapshot(VOLUME);
          for (const a of s.placement) await checkReplicasIdentical(a, nodes, failures);
          const replays = { fullReplays: 0, windowReplays: 0, reappliedAfterTrim: 0 };
          for (const a of s.placement)
            await checkHistory(a, nodes, history, acks, p.knobs.opLogRetain, failures, replays);
          Object.assign(stats, replays);
          checkAcks(acks, failures);
          await checkModel(s.placement, nodes, history, p.volume.blockSizeBytes, failures);
          trace.add('sim', 'final state', { digest: await stateDigest(nodes) });
        })().catch((err) => failures.push(`checker failed: ${String((err as Error)?.stack ?? err)}`)),
      );
      // The checkers read local stores only; the clock is driven in case one waits anyway.
      if (!(await until(() => checks.done, 10_000, 10))) failures.push('checkers did not finish');
      // Scrub last (it may repair what it plants): messages travel, so the clock is driven.
      const scrubbed = settled(
        (async () => {
          const s = await coord.getSnapshot(VOLUME);
          await checkScrub(s.placement, nodes, new SimRandom(o.seed, 6), failures, stats, (msg, fields) =>
            trace.add('sim', msg, fields),
          );
        })().catch((err) => failures.push(`scrub checker failed: ${String((err as Error)?.stack ?? err)}`)),
      );
      if (!(await until(() => scrubbed.done, 30_000, 10))) failures.push('scrub did not finish');
    }
    failures.push(...history.anomalies);
  } catch (err) {
    failures.push(`simulation aborted: ${String((err as Error)?.stack ?? err)}`);
  } finally {
    process.off('unhandledRejection', onProcessError);
    process.off('uncaughtException', onProcessError);
  }
  const count = (st: OpStatus) => history.ops.filter((x) => x.status === st).length;
  Object.assign(stats, {
    ops: history.ops.length,
    acked: count('acked'),
    maybe: count('maybe'),
    acks: acks.length,
    messages: net.messages,
    dropped: net.dropped,
    simMs: world.now() - 1_000_000,
  });
  trace.add('sim', failures.length ? `FAILED (${failures.length})` : 'ok', stats);
  return {
    seed: o.seed,
    bug: o.bug,
    ok: failures.length === 0,
    failures,
    traceHash: trace.digest(),
    traceLines: trace.lines,
    traceTail: trace.tail(),
    config,
    stats,
    events: Object.fromEntries(trace.counts),
    realMs: Math.round(performance.now() - realStart),
  };
}

type OpStatus = 'acked' | 'maybe' | 'pending';

/**
 * Every brick alive, no move to come (no rebalance running, nothing left on
 * a draining brick), every PG's in-sync set full, its primary serving and
 * its replicas caught up.
 */
function healthyCluster(s: VolumeSnapshot, nodes: Map<string, BrickNode>): boolean {
  if (!s.config || s.bricks.some((b) => !b.alive)) return false;
  // Moves still to come would change the map under the checkers.
  if (s.rebalance?.state === 'running') return false;
  const draining = new Set(s.bricks.filter((b) => b.admin?.state === 'draining').map((b) => b.id));
  if (s.placement.some((a) => a.bricks.some((b) => draining.has(b)))) return false;
  return s.placement.every((a) => pgHealthy(a, nodes));
}

function pgHealthy(a: PgAssignment, nodes: Map<string, BrickNode>): boolean {
  if (a.isr.length !== a.bricks.length) return false;
  if (!a.bricks.every((b) => nodes.get(b)?.serves(a))) return false;
  if (nodes.get(a.bricks[0]!)!.fenced()) return false;
  const seqs = a.bricks.map((b) => nodes.get(b)!.pg(a.pg)!.opSeq);
  const primary = nodes.get(a.bricks[0]!)!.brick!;
  return seqs.every((x) => x === seqs[0]) && primary.repl.catchUpsRunning === 0;
}

function describeHealth(s: VolumeSnapshot | undefined, nodes: Map<string, BrickNode>): string {
  if (!s) return 'no placement seen';
  const dead = s.bricks.filter((b) => !b.alive).map((b) => b.id);
  const pgs = s.placement
    .filter((a) => !pgHealthy(a, nodes))
    .map((a) => {
      const copies = a.bricks.map((b) => {
        const st = nodes.get(b)?.pg(a.pg);
        return st ? `${b}:${st.role}${st.ready ? '' : '(not ready)'}@${st.epoch}#${st.opSeq}` : `${b}:none`;
      });
      return `pg ${a.pg} epoch ${a.epoch} isr ${a.isr.join('+')} [${copies.join(' ')}]`;
    });
  return `dead: [${dead.join(', ')}]; ${pgs.join('; ')}`;
}
