import type * as grpc from '@grpc/grpc-js';
import { FsError } from './errors.js';
import type { PgAssignment } from './placement.js';
import { FrameConn, GrpcConn, type BrickConn, type ConnEvents } from './frame-rpc.js';
import type { Logger } from './log.js';
import {
  callWithRetry,
  realRetryClock,
  retryDefaults,
  validateRetryKnobs,
  type CallOptions,
  type RetryClock,
  type RetryKnobs,
  type Route,
  type RouteSource,
} from './retry-policy.js';
import { brickClient, fromServiceError, type BrickClient } from './rpc.js';
import type { TransportSecurity } from './transport-security.js';
import type { VolumeConfig } from './volume.js';

/** What a router needs of the control plane: the volume's current map and brick addresses. */
export interface RoutingSnapshot {
  config: VolumeConfig;
  placement: PgAssignment[];
  /** address: gRPC; dataAddress: the frame transport (preferred when present). */
  bricks: { id: string; address: string; dataAddress?: string; alive?: boolean }[];
}

export interface RouterOptions {
  knobs?: Partial<RetryKnobs>;
  clock?: RetryClock;
  log?: Logger;
  /**
   * A connection to this brick was refused: it is likely dead, and telling
   * the controller now starts failover well before its lease expires.
   * Called at most once per `suspectReportIntervalMs` per brick; must not throw.
   */
  onConnectionRefused?: (brickId: string) => void;
  /** Opens a connection to a brick (tests substitute fakes). */
  connect?: (brick: BrickAddress, events: Required<ConnEvents>) => BrickConn;
  /** How connections to bricks are secured (default: insecure, loopback only). */
  security?: TransportSecurity;
}

export type BrickAddress = RoutingSnapshot['bricks'][number];

/** A connection to a brick: frames when it registered a data address, else gRPC. */
export function connectBrick(b: BrickAddress, events: ConnEvents, security?: TransportSecurity): BrickConn {
  return b.dataAddress
    ? new FrameConn(b.dataAddress, events, security)
    : new GrpcConn(brickClient(b.address, security), events);
}

/**
 * Routes a PG to its primary brick from the latest placement snapshot, with
 * one connection per brick, and runs the one retry policy (`call`, see
 * retry-policy.ts). Used by clients and by bricks (for cross-PG transactions).
 */
export class Router implements RouteSource {
  private snapshot: RoutingSnapshot | undefined;
  private readonly clients = new Map<string, { address: string; conn: BrickConn }>();
  private readonly listeners = new Set<() => void>();
  private readonly lastSuspectMs = new Map<string, number>();
  private readonly knobs: RetryKnobs;
  private readonly clock: RetryClock;
  private closed = false;
  /** Why routing ended for good (fail()); undefined after a plain close(). */
  private failure: FsError | undefined;
  /** The client session every routed call carries (Header.session), with its cache TTL. */
  private cacheSession: { session: string; cacheTtlMs: number } | undefined;

  /**
   * Calls routed from now on name `session` (a client's mount record id)
   * and how long it caches what it reads: bricks register it and push it
   * invalidations (coherent caches).
   */
  setCacheSession(session: string, cacheTtlMs: number): void {
    this.cacheSession = { session, cacheTtlMs };
  }

  constructor(private readonly o: RouterOptions = {}) {
    this.knobs = validateRetryKnobs({ ...retryDefaults, ...o.knobs });
    this.clock = o.clock ?? realRetryClock;
  }

  update(s: RoutingSnapshot): void {
    this.snapshot = s;
    for (const [id, c] of this.clients) {
      const b = s.bricks.find((x) => x.id === id);
      if (!b || (b.dataAddress ?? b.address) !== c.address) {
        c.conn.close();
        this.clients.delete(id);
      }
    }
    this.notify();
  }

  private notify(): void {
    // A listener may unsubscribe itself (or others) while we iterate.
    for (const f of [...this.listeners]) f();
  }

  get config(): VolumeConfig {
    if (!this.snapshot) throw new FsError('UNAVAILABLE', 'no placement map yet');
    return this.snapshot.config;
  }

  get current(): RoutingSnapshot | undefined {
    return this.snapshot;
  }

  route(pg: number): Route {
    // Final, not UNAVAILABLE: a call must not retry against a router that is gone.
    if (this.closed) throw this.failure ?? new FsError('INTERRUPTED', 'router closed');
    const s = this.snapshot;
    if (!s) throw new FsError('UNAVAILABLE', 'no placement map yet');
    const a = s.placement[pg];
    if (!a || a.pg !== pg) throw new FsError('INVALID_ARGUMENT', `pg ${pg} is not in the placement map`);
    const brickId = a.bricks[0];
    if (!brickId) throw new FsError('UNAVAILABLE', `pg ${pg} has no primary`);
    return { pg, epoch: a.epoch, brickId, conn: this.connFor(brickId) };
  }

  /**
   * `method` on the PG's primary under the retry policy: the same request id
   * on every attempt, retried through failover until `deadlineMs`.
   */
  call<Rep>(pg: number, method: string, body: object, options: CallOptions): Promise<Rep> {
    const o =
      this.cacheSession && options.session === undefined ? { ...this.cacheSession, ...options } : options;
    return callWithRetry<Rep>(this, pg, method, body, o, {
      clock: this.clock,
      knobs: this.knobs,
      log: this.o.log,
    });
  }

  onUpdate(listener: () => void): () => void {
    if (this.closed) {
      // Nothing will ever be routed again: wake the caller so it fails now.
      queueMicrotask(listener);
      return () => {};
    }
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The connection to a brick: frames when it offers them, else gRPC. */
  connFor(brickId: string): BrickConn {
    if (this.failure) throw this.failure;
    const cached = this.clients.get(brickId);
    if (cached) return cached.conn;
    const b = this.snapshot?.bricks.find((x) => x.id === brickId);
    if (!b) throw new FsError('UNAVAILABLE', `brick ${brickId} has no address`);
    const events = { onConnectionRefused: () => this.suspect(brickId) };
    const conn = this.o.connect ? this.o.connect(b, events) : connectBrick(b, events, this.o.security);
    this.clients.set(brickId, { address: b.dataAddress ?? b.address, conn });
    return conn;
  }

  /** Rate-limited report of a refused connection (one per brick per interval). */
  private suspect(brickId: string): void {
    const report = this.o.onConnectionRefused;
    if (!report || this.closed) return;
    const nowMs = this.clock.now();
    const lastMs = this.lastSuspectMs.get(brickId);
    if (lastMs !== undefined && nowMs - lastMs < this.knobs.suspectReportIntervalMs) return;
    this.lastSuspectMs.set(brickId, nowMs);
    report(brickId);
  }

  /** Resolves on the next snapshot or after `timeoutMs`. */
  waitForUpdate(timeoutMs: number): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.clock.clearTimeout(timer);
        unsubscribe();
        resolve();
      };
      const timer = this.clock.setTimeout(done, timeoutMs);
      const unsubscribe = this.onUpdate(done);
    });
  }

  /**
   * Ends routing for good because of `reason` (a non-retryable FsError, e.g.
   * the volume was deleted): calls in flight and every later call fail with
   * it at once instead of retrying until their deadline.
   */
  fail(reason: FsError): void {
    this.failure ??= reason;
    this.close();
  }

  close(): void {
    this.closed = true;
    for (const c of this.clients.values()) c.conn.close();
    this.clients.clear();
    this.notify();
    this.listeners.clear();
  }
}

type UnaryMethod<Req, Rep> = (
  req: Req,
  options: grpc.CallOptions,
  callback: (err: grpc.ServiceError | null, reply?: Rep) => void,
) => grpc.ClientUnaryCall;

/** One unary call with a deadline; failures come back as FsError from the one table. */
export function callUnary<Req, Rep>(
  client: BrickClient,
  method: string,
  req: Req,
  deadlineMs: number,
): Promise<Rep> {
  const fn = (client as unknown as Record<string, UnaryMethod<Req, Rep>>)[method];
  if (!fn) throw new Error(`no RPC method ${method}`);
  return new Promise((resolve, reject) => {
    fn.call(client, req, { deadline: Date.now() + deadlineMs }, (err, reply) => {
      if (err) reject(fromServiceError(err));
      else resolve(reply as Rep);
    });
  });
}
