import type * as grpc from '@grpc/grpc-js';
import { FsError } from './errors.js';
import type { PgAssignment } from './placement.js';
import { FrameConn, GrpcConn, type BrickConn } from './frame-rpc.js';
import { brickClient, fromServiceError, type BrickClient } from './rpc.js';
import type { VolumeConfig } from './volume.js';

/** What a router needs of the control plane: the volume's current map and brick addresses. */
export interface RoutingSnapshot {
  config: VolumeConfig;
  placement: PgAssignment[];
  /** address: gRPC; dataAddress: the frame transport (preferred when present). */
  bricks: { id: string; address: string; dataAddress?: string; alive?: boolean }[];
}

export interface Route {
  pg: number;
  epoch: number;
  brickId: string;
  conn: BrickConn;
}

/**
 * Routes a PG to its primary brick from the latest placement snapshot, with
 * one gRPC channel per brick. Used by clients and by bricks (for cross-PG
 * transactions). Callers that get NOT_PRIMARY / STALE_EPOCH / UNAVAILABLE
 * wait for the next snapshot (or a short backoff) and retry.
 */
export class Router {
  private snapshot: RoutingSnapshot | undefined;
  private readonly clients = new Map<string, { address: string; conn: BrickConn }>();
  private waiters: (() => void)[] = [];
  private closed = false;

  update(s: RoutingSnapshot): void {
    this.snapshot = s;
    for (const [id, c] of this.clients) {
      const b = s.bricks.find((x) => x.id === id);
      if (!b || (b.dataAddress ?? b.address) !== c.address) {
        c.conn.close();
        this.clients.delete(id);
      }
    }
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  get config(): VolumeConfig {
    if (!this.snapshot) throw new FsError('UNAVAILABLE', 'no placement map yet');
    return this.snapshot.config;
  }

  get current(): RoutingSnapshot | undefined {
    return this.snapshot;
  }

  route(pg: number): Route {
    const s = this.snapshot;
    if (!s) throw new FsError('UNAVAILABLE', 'no placement map yet');
    const a = s.placement[pg];
    if (!a || a.pg !== pg) throw new FsError('INVALID_ARGUMENT', `pg ${pg} is not in the placement map`);
    const brickId = a.bricks[0];
    if (!brickId) throw new FsError('UNAVAILABLE', `pg ${pg} has no primary`);
    return { pg, epoch: a.epoch, brickId, conn: this.connFor(brickId) };
  }

  /** The connection to a brick: frames when it offers them, else gRPC. */
  connFor(brickId: string): BrickConn {
    const cached = this.clients.get(brickId);
    if (cached) return cached.conn;
    const b = this.snapshot?.bricks.find((x) => x.id === brickId);
    if (!b) throw new FsError('UNAVAILABLE', `brick ${brickId} has no address`);
    const conn = b.dataAddress ? new FrameConn(b.dataAddress) : new GrpcConn(brickClient(b.address));
    this.clients.set(brickId, { address: b.dataAddress ?? b.address, conn });
    return conn;
  }

  /** Resolves on the next snapshot or after `timeoutMs`. */
  waitForUpdate(timeoutMs: number): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.waiters.push(done);
    });
  }

  close(): void {
    this.closed = true;
    for (const c of this.clients.values()) c.conn.close();
    this.clients.clear();
    for (const w of this.waiters) w();
    this.waiters = [];
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
