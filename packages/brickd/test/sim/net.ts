import * as grpc from '@grpc/grpc-js';
import { brickProto, FsError, fromServiceError, type BrickConn } from '@dunix/proto';
import type { SimRandom } from './random.js';
import type { Clock } from '@dunix/coord';
import { NodeClock, type ClockOwner } from './node-clock.js';
import type { Trace } from './trace.js';

/** A unary handler as brickHandlers() builds them (the gRPC shape). */
export type UnaryHandler = (
  call: { request: unknown; metadata: grpc.Metadata },
  callback: (err: Partial<grpc.StatusObject> | null, reply?: unknown) => void,
) => void;

export type NodeState = 'up' | 'paused' | 'crashed';

/**
 * A simulated process: a brick or a client. A crash ends its incarnation
 * (its timers, pending calls and replies die with it); a pause holds its
 * timers and every message to or from it until it resumes; a partition
 * from etcd makes its coordinator session fail.
 */
export class SimNode implements ClockOwner {
  incarnation = 0;
  state: NodeState = 'up';
  lostMs = 0;
  /** When the node last woke from a suspension (simulation time). */
  suspendEndedAtMs: number | undefined;
  /** The pause is a suspension: the node's clock does not count it (see NodeClock). */
  private suspendedAtMs: number | undefined;
  /** Cut off from etcd: its coordinator calls fail and its watches hear nothing. */
  etcdCut = false;
  /** Chance that the reply to one of its etcd writes is lost after etcd applied the write. */
  etcdReplyLoss = 0;
  readonly deferred = new Map<unknown, () => void>();
  /** Messages that reached it, or that it sent, while it was paused. */
  readonly held: (() => void)[] = [];
  /** Called when a cut from etcd heals (its watches resynchronize). */
  readonly onEtcdHeal = new Set<() => void>();
  handlers: Record<string, UnaryHandler> | undefined;
  readonly clock: NodeClock;

  constructor(
    readonly id: string,
    readonly kind: 'brick' | 'client',
    private readonly world: Clock,
  ) {
    this.clock = new NodeClock(world, this);
  }

  get paused(): boolean {
    return this.state === 'paused';
  }

  /** SIGKILL: everything in memory is gone. */
  crash(): void {
    this.incarnation++;
    this.state = 'crashed';
    this.suspendedAtMs = undefined;
    this.deferred.clear();
    this.held.length = 0;
    this.handlers = undefined;
    this.onEtcdHeal.clear();
  }

  /** A new process on the same stores. */
  restart(): void {
    if (this.state !== 'crashed') throw new Error(`restart of ${this.id}, which is ${this.state}`);
    this.incarnation++;
    this.state = 'up';
  }

  /** SIGSTOP; with `suspend`, a machine suspend: the node's clock stops too. */
  pause(suspend = false): void {
    if (this.state !== 'up') return;
    this.state = 'paused';
    this.suspendedAtMs = suspend ? this.world.now() : undefined;
  }

  /** SIGCONT: overdue timers fire, then held messages go. */
  resume(): void {
    if (this.state !== 'paused') return;
    this.state = 'up';
    if (this.suspendedAtMs !== undefined) {
      this.lostMs += this.world.now() - this.suspendedAtMs;
      this.suspendEndedAtMs = this.world.now();
    }
    this.suspendedAtMs = undefined;
    const timers = [...this.deferred.values()];
    this.deferred.clear();
    for (const fn of timers) fn();
    for (const m of this.held.splice(0)) m();
  }

  cutFromEtcd(cut: boolean): void {
    const healed = this.etcdCut && !cut;
    this.etcdCut = cut;
    if (healed) for (const f of [...this.onEtcdHeal]) f();
  }
}

export interface NetKnobs {
  /** Chance that one message (request or reply) is lost. */
  dropRate: number;
  delayMinMs: number;
  delayMaxMs: number;
  /** Chance of a much longer delay (reorders messages). */
  spikeRate: number;
  spikeMaxMs: number;
}

interface MethodDef {
  requestSerialize(v: unknown): Buffer;
  requestDeserialize(b: Buffer): unknown;
  responseSerialize(v: unknown): Buffer;
  responseDeserialize(b: Buffer): unknown;
}

let methodDefs: Record<string, MethodDef> | undefined;
function methodDef(method: string): MethodDef {
  methodDefs ??= brickProto().dunix.v1.Brick.service as unknown as Record<string, MethodDef>;
  const def = methodDefs[method];
  if (!def) throw new Error(`no RPC method ${method}`);
  return def;
}

/**
 * The network between simulated nodes. Every call is serialized with the
 * service's own protobuf codecs (as the frame transport does), travels after
 * a seeded delay, may be lost (the caller then sees TIMED_OUT at its own
 * deadline), and its reply travels back the same way. Messages between
 * bricks take independent delays (so they reorder); a client's requests to
 * one brick keep their order (one connection). A message to a crashed node
 * is refused (UNAVAILABLE, and the router hears of the refusal); a message
 * to a restarted node from before its restart finds the connection reset.
 */
export class SimNet {
  readonly nodes = new Map<string, SimNode>();
  /** Pairs of nodes ("a|b", sorted) that cannot reach each other. */
  readonly blocked = new Set<string>();
  private readonly fifoAt = new Map<string, number>();
  messages = 0;
  dropped = 0;

  constructor(
    private readonly world: Clock,
    private readonly rng: SimRandom,
    public knobs: NetKnobs,
    private readonly trace: Trace,
  ) {}

  add(node: SimNode): SimNode {
    this.nodes.set(node.id, node);
    return node;
  }

  node(id: string): SimNode {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  static pair(a: string, b: string): string {
    return a < b ? `${a}|${b}` : `${b}|${a}`;
  }

  /** A connection from `from` to `to`, as a Router's connect() hands out. */
  conn(from: SimNode, to: string, onRefused: () => void): BrickConn {
    return {
      unary: <Rep>(method: string, request: object, deadlineMs: number) =>
        this.call<Rep>(from, to, method, request, deadlineMs, onRefused),
      close: () => {},
    };
  }

  private call<Rep>(
    from: SimNode,
    toId: string,
    method: string,
    request: object,
    deadlineMs: number,
    onRefused: () => void,
  ): Promise<Rep> {
    const def = methodDef(method);
    const payload = def.requestSerialize(request);
    const to = this.node(toId);
    const inc = from.incarnation;
    const toInc = to.incarnation;
    return new Promise<Rep>((resolve, reject) => {
      let settled = false;
      const timer = from.clock.setTimeout(() => {
        if (settled) return;
        settled = true;
        reject(new FsError('TIMED_OUT', `${method} to ${toId} after ${deadlineMs} ms`));
      }, deadlineMs);
      const finish = (err: FsError | undefined, reply?: Buffer) => {
        if (settled || from.incarnation !== inc) return;
        settled = true;
        from.clock.clearTimeout(timer);
        if (err) reject(err);
        else resolve(def.responseDeserialize(reply!) as Rep);
      };
      const fifo = from.kind === 'client';
      this.trace.mix(`${this.world.now()} ${from.id}>${toId} ${method}`);
      this.transmit(from, inc, to, fifo, {
        arrive: () => {
          if (to.incarnation !== toInc) {
            // The process this connection reached is gone: reset.
            this.answer(to, from, () => finish(new FsError('UNAVAILABLE', `${toId}: connection reset`)));
            return;
          }
          this.serve(to, method, payload, (err, reply) => {
            this.transmit(to, to.incarnation, from, fifo, {
              arrive: () => finish(err, reply),
              refused: () => {},
            });
          });
        },
        refused: () =>
          this.answer(to, from, () => {
            if (from.incarnation !== inc) return;
            onRefused();
            finish(new FsError('UNAVAILABLE', `${toId}: connection refused`));
          }),
      });
    });
  }

  /**
   * Sends one message from `src` (of incarnation `inc`) to `dst`: held while
   * `src` is paused, lost by chance or partition, delivered after a delay;
   * at arrival held while `dst` is paused, refused if it is down.
   */
  private transmit(
    src: SimNode,
    inc: number,
    dst: SimNode,
    fifo: boolean,
    on: { arrive: () => void; refused: () => void },
  ): void {
    if (src.incarnation !== inc) return;
    if (src.paused) {
      src.held.push(() => this.transmit(src, inc, dst, fifo, on));
      return;
    }
    this.messages++;
    if (this.rng.chance(this.knobs.dropRate) || this.blocked.has(SimNet.pair(src.id, dst.id))) {
      this.dropped++;
      return;
    }
    const k = this.knobs;
    let delay = k.delayMinMs + this.rng.float() * (k.delayMaxMs - k.delayMinMs);
    if (this.rng.chance(k.spikeRate)) delay += this.rng.float() * k.spikeMaxMs;
    let at = this.world.now() + delay;
    if (fifo) {
      const link = `${src.id}>${dst.id}`;
      at = Math.max(at, this.fifoAt.get(link) ?? 0);
      this.fifoAt.set(link, at);
    }
    const arrive = () => {
      if (this.blocked.has(SimNet.pair(src.id, dst.id))) {
        this.dropped++;
        return;
      }
      if (dst.state === 'crashed') on.refused();
      else if (dst.paused) dst.held.push(arrive);
      else on.arrive();
    };
    this.world.setTimeout(arrive, at - this.world.now());
  }

  /** An answer from the network itself (refused, reset) back to `dst` after a delay. */
  private answer(from: SimNode, dst: SimNode, deliver: () => void): void {
    const k = this.knobs;
    const delay = k.delayMinMs + this.rng.float() * (k.delayMaxMs - k.delayMinMs);
    const arrive = () => {
      if (dst.paused) dst.held.push(arrive);
      else if (dst.state === 'up') deliver();
    };
    this.trace.mix(`${this.world.now()} ${from.id}>${dst.id} refused`);
    this.world.setTimeout(arrive, delay);
  }

  /** Runs the handler on `node`; the reply leaves only if the same incarnation still runs. */
  private serve(
    node: SimNode,
    method: string,
    payload: Buffer,
    reply: (err: FsError | undefined, bytes?: Buffer) => void,
  ): void {
    const inc = node.incarnation;
    const handler = node.handlers?.[method];
    if (!handler) {
      reply(new FsError('UNAVAILABLE', `${node.id} does not serve yet`));
      return;
    }
    const def = methodDef(method);
    const request = def.requestDeserialize(payload);
    handler({ request, metadata: new grpc.Metadata() }, (err, rep) => {
      if (node.incarnation !== inc) return;
      if (err) reply(fromServiceError(err as grpc.ServiceError));
      else reply(undefined, def.responseSerialize(rep));
    });
  }
}
