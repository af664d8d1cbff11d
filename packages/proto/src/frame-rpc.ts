import * as grpc from '@grpc/grpc-js';
import net from 'node:net';
import tls from 'node:tls';
import { errorTable, FsError, GrpcStatus, type ErrorCode } from './errors.js';
import { giveBack, takeBuffer } from './buffer-pool.js';
import { connLimitDefaults, validateConnLimits, type ConnLimits } from './conn-limits.js';
import { limits } from './limits.js';
import { readIntoBuffer } from './socket-read.js';
import { brickProto, ERROR_CODE_METADATA_KEY, fromServiceError, type BrickHandlers } from './rpc.js';
import { identityFromCertificate, INSECURE_PEER, PEER_IDENTITY, type PeerIdentity } from './peer-identity.js';
import {
  assertInsecureAllowed,
  INSECURE_TRANSPORT,
  tlsClientOptions,
  tlsServerOptions,
  type TransportSecurity,
} from './transport-security.js';

/**
 * The brick data path: the same protobuf messages and handlers as the gRPC
 * service, carried in length-prefixed frames over one TCP connection per
 * peer. Measured on the 2-core test machine: ~40 µs per unary round trip,
 * against ~470 µs through @grpc/grpc-js (HTTP/2) for the same message; the
 * gRPC service stays up on the brick's main address for tools and tests.
 *
 * Frame: u32 payload length | u32 call id | u16 method index | u8 kind | u8 flags
 * then the payload: a request or reply message (protobuf, serialized by the
 * service definition), or for kind ERROR a JSON status {code, details, dunixCode}.
 * Flag TAIL: the message's `data` bytes travel after it, unencoded —
 * payload = u32 message length | message without data | data — so block
 * data is never copied into or out of a protobuf buffer.
 */
const HEADER_BYTES = 12;
/** A TLS peer has this long to finish its handshake (Node's default is 120 s). */
const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Socket read buffer of a client connection. */
const RECEIVE_BUFFER_BYTES = 256 * 1024;
const KIND_REQUEST = 0;
const KIND_REPLY = 1;
const KIND_ERROR = 2;
const FLAG_TAIL = 1;
/** `data` fields at least this large travel as a tail. */
const TAIL_MIN_BYTES = 4096;

interface MethodDef {
  path: string;
  requestSerialize(v: unknown): Buffer;
  requestDeserialize(b: Buffer): unknown;
  responseSerialize(v: unknown): Buffer;
  responseDeserialize(b: Buffer): unknown;
}

let methodTable: { names: string[]; defs: MethodDef[]; index: Map<string, number> } | undefined;
function methods() {
  if (!methodTable) {
    const svc = brickProto().dunix.v1.Brick.service as unknown as Record<string, MethodDef>;
    const names = Object.keys(svc).sort();
    methodTable = { names, defs: names.map((n) => svc[n]!), index: new Map(names.map((n, i) => [n, i])) };
  }
  return methodTable;
}

export function header(
  id: number,
  method: number,
  kind: number,
  flags: number,
  payloadBytes: number,
): Buffer {
  const out = Buffer.allocUnsafe(HEADER_BYTES);
  out.writeUInt32LE(payloadBytes, 0);
  out.writeUInt32LE(id, 4);
  out.writeUInt16LE(method, 8);
  out[10] = kind;
  out[11] = flags;
  return out;
}

/** Header and payload go out as one writev: no copy of the payload. */
function sendFrame(sock: net.Socket, id: number, method: number, kind: number, payload: Buffer): void {
  if (sock instanceof tls.TLSSocket) {
    // TLS copies a multi-buffer write into one fresh buffer anyway; one buffer here, one record.
    sock.write(Buffer.concat([header(id, method, kind, 0, payload.length), payload]));
    return;
  }
  sock.cork();
  sock.write(header(id, method, kind, 0, payload.length));
  sock.write(payload);
  sock.uncork();
}

const EMPTY = Buffer.alloc(0);

/**
 * Sends a message, its large `data` field (if any) as an unencoded tail.
 * `recycle`: the data is ours alone once written (a reply made for this
 * call), so a pooled buffer goes back to the pool. A request's data may be
 * shared (the same block bytes go to every replica): never recycled here.
 */
function sendMessage(
  sock: net.Socket,
  id: number,
  method: number,
  kind: number,
  msg: unknown,
  serialize: (v: unknown) => Buffer,
  recycle: boolean,
): void {
  const data = (msg as { data?: unknown } | null)?.data;
  if (!Buffer.isBuffer(data) || data.length < TAIL_MIN_BYTES) {
    sendFrame(sock, id, method, kind, serialize(msg));
    return;
  }
  const body = serialize({ ...(msg as object), data: EMPTY });
  const len = Buffer.allocUnsafe(4);
  len.writeUInt32LE(body.length, 0);
  if (sock instanceof tls.TLSSocket) {
    // A corked write would reach TLS as several buffers, which it copies into
    // one fresh buffer (a page-faulting MiB per block): the small parts go as
    // one buffer, the block data on its own, encrypted from where it lies.
    sock.write(
      Buffer.concat([header(id, method, kind, FLAG_TAIL, 4 + body.length + data.length), len, body]),
    );
    if (recycle) sock.write(data, () => giveBack(data));
    else sock.write(data);
    return;
  }
  sock.cork();
  sock.write(header(id, method, kind, FLAG_TAIL, 4 + body.length + data.length));
  sock.write(len);
  sock.write(body);
  // Once written, block data from the buffer pool goes back to it.
  if (recycle) sock.write(data, () => giveBack(data));
  else sock.write(data);
  sock.uncork();
}

/** Inverse of sendMessage. Throws on a malformed payload. */
function decodeMessage(payload: Buffer, flags: number, deserialize: (b: Buffer) => unknown): unknown {
  if (!(flags & FLAG_TAIL)) return deserialize(payload);
  if (payload.length < 4) throw new Error('tail frame too short');
  const bodyLen = payload.readUInt32LE(0);
  if (4 + bodyLen > payload.length) throw new Error('tail frame body past its end');
  const msg = deserialize(payload.subarray(4, 4 + bodyLen)) as { data?: unknown };
  msg.data = payload.subarray(4 + bodyLen);
  return msg;
}

/**
 * Splits a byte stream into frames. Input chunks may be reused by the caller
 * as soon as push() returns (a socket reading into one static buffer): each
 * frame's bytes are copied once, into a buffer of exactly its size, which
 * the consumer then owns.
 */
export class FrameReader {
  private readonly head = Buffer.alloc(HEADER_BYTES);
  private headFill = 0;
  private payload: Buffer | undefined;
  private payloadFill = 0;

  constructor(
    private readonly onFrame: (
      id: number,
      method: number,
      kind: number,
      payload: Buffer,
      flags: number,
    ) => void,
  ) {}

  /** Returns an error message if the stream is malformed (the caller closes it). */
  push(chunk: Buffer): string | undefined {
    let at = 0;
    while (at < chunk.length) {
      if (!this.payload) {
        const n = Math.min(HEADER_BYTES - this.headFill, chunk.length - at);
        chunk.copy(this.head, this.headFill, at, at + n);
        this.headFill += n;
        at += n;
        if (this.headFill < HEADER_BYTES) return undefined;
        const len = this.head.readUInt32LE(0);
        if (len > limits.messageMaxBytes) return `frame of ${len} bytes exceeds ${limits.messageMaxBytes}`;
        if (this.head[10]! > KIND_ERROR || (this.head[11]! & ~FLAG_TAIL) !== 0) {
          return `frame kind ${this.head[10]} flags ${this.head[11]}`;
        }
        // Block data (tail frames) comes from the buffer pool; other large
        // payloads get memory of their own (not a slice of Node's shared pool).
        this.payload =
          this.head[11]! & FLAG_TAIL
            ? takeBuffer(len)
            : len >= 4096
              ? Buffer.allocUnsafeSlow(len)
              : Buffer.allocUnsafe(len);
        this.payloadFill = 0;
      }
      const n = Math.min(this.payload.length - this.payloadFill, chunk.length - at);
      chunk.copy(this.payload, this.payloadFill, at, at + n);
      this.payloadFill += n;
      at += n;
      if (this.payloadFill === this.payload.length) {
        const payload = this.payload;
        this.payload = undefined;
        this.headFill = 0;
        this.onFrame(
          this.head.readUInt32LE(4),
          this.head.readUInt16LE(8),
          this.head[10]!,
          payload,
          this.head[11]!,
        );
      }
    }
    return undefined;
  }
}

interface ErrorBody {
  code: number;
  details: string;
  dunixCode?: string;
}

/** The reply bytes a request asks for: its `length` field (block reads), capped at one message. */
function replyBytesAsked(request: unknown): number {
  const n = (request as { length?: unknown } | null)?.length;
  return typeof n === 'number' && n > 0 ? Math.min(n, limits.messageMaxBytes) : 0;
}

/** A request frame read but not yet handed to its handler. */
interface HeldFrame {
  id: number;
  method: number;
  kind: number;
  payload: Buffer;
  flags: number;
}

/** What the server tracks of one connection to apply ConnLimits. */
interface ConnState {
  sock: net.Socket;
  inflightCalls: number;
  inflightBytes: number;
  /** Frames read past a limit: served as calls finish (at most one socket read's worth). */
  held: HeldFrame[];
  lastActiveMs: number;
}

/** FrameServer counters (tests, metrics). */
export interface FrameServerStats {
  connections: number;
  inflightCalls: number;
  /** Reply bytes written to sockets and not yet taken by the kernel, over all connections. */
  queuedBytes: number;
  /** Request frames read and waiting for a limit to clear. */
  heldFrames: number;
  /** Connections refused at connectionsMax (nothing idle to close instead). */
  refused: number;
  /** Connections closed to make room for a new one, or for idling past idleTimeoutMs. */
  idleClosed: number;
}

/**
 * Serves a brick's handlers over frames. One listener; connections are
 * independent. With TLS, every connection is mutually authenticated before
 * its first frame, and each call carries the peer's identity (peerOf).
 *
 * Limits (ConnLimits): past a connection's in-flight calls or bytes, or
 * with more unread reply bytes queued than allowed, the server stops
 * reading that connection (TCP pushes back on the peer) and serves what it
 * holds as calls finish and the peer drains; a peer that never reads costs
 * at most queuedBytesPerConnMax plus the replies of its in-flight calls.
 */
export class FrameServer {
  private readonly server: net.Server;
  private readonly conns = new Map<net.Socket, ConnState>();
  private readonly limits: ConnLimits;
  private refused = 0;
  private idleClosed = 0;
  /** Where connections' reads land (socket-read.ts); made at the first. */
  private receiveBuffer: Buffer | undefined;

  constructor(
    private readonly handlers: BrickHandlers,
    private readonly onBadStream?: (reason: string) => void,
    private readonly security: TransportSecurity = INSECURE_TRANSPORT,
    connLimits: Partial<ConnLimits> = {},
  ) {
    this.limits = validateConnLimits({ ...connLimitDefaults, ...connLimits }, limits.messageMaxBytes);
    if (security.kind === 'tls') {
      this.server = tls.createServer(
        // A peer that never finishes its handshake is not a connection yet: it must not hold a socket long.
        { ...tlsServerOptions(security), handshakeTimeout: HANDSHAKE_TIMEOUT_MS },
        (sock) => this.serveTls(sock),
      );
      // A handshake that fails (no client certificate, another CA) never reaches serve().
      this.server.on('tlsClientError', (err) => this.onBadStream?.(`TLS handshake refused: ${err.message}`));
    } else this.server = net.createServer((sock) => this.serve(sock, INSECURE_PEER));
  }

  listen(host: string, port: number): Promise<number> {
    if (this.security.kind === 'insecure') assertInsecureAllowed(host, 'frame listen address');
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve((this.server.address() as net.AddressInfo).port);
      });
    });
  }

  close(): Promise<void> {
    for (const s of this.conns.keys()) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  /** The open connections' sockets (tests drop them as a brick restart would). */
  get sockets(): ReadonlySet<net.Socket> {
    return new Set(this.conns.keys());
  }

  stats(): FrameServerStats {
    let inflightCalls = 0;
    let queuedBytes = 0;
    let heldFrames = 0;
    for (const c of this.conns.values()) {
      inflightCalls += c.inflightCalls;
      queuedBytes += c.sock.writableLength;
      heldFrames += c.held.length;
    }
    return {
      connections: this.conns.size,
      inflightCalls,
      queuedBytes,
      heldFrames,
      refused: this.refused,
      idleClosed: this.idleClosed,
    };
  }

  private serveTls(sock: tls.TLSSocket): void {
    let peer: PeerIdentity;
    try {
      peer = identityFromCertificate(sock.getPeerCertificate());
    } catch (err) {
      this.onBadStream?.(`connection refused: ${(err as Error).message}`);
      sock.destroy();
      return;
    }
    this.serve(sock, peer);
  }

  /** Room for one more connection: the longest idle one goes, or false (refuse the new one). */
  private makeRoom(): boolean {
    if (this.conns.size < this.limits.connectionsMax) return true;
    let idlest: ConnState | undefined;
    for (const c of this.conns.values())
      if (c.inflightCalls === 0 && c.held.length === 0 && (!idlest || c.lastActiveMs < idlest.lastActiveMs))
        idlest = c;
    if (!idlest) return false;
    this.idleClosed++;
    this.conns.delete(idlest.sock);
    idlest.sock.destroy();
    return true;
  }

  private serve(sock: net.Socket, peer: PeerIdentity): void {
    if (!this.makeRoom()) {
      this.refused++;
      this.onBadStream?.(
        `connection refused: ${this.conns.size} connections, every one busy (connectionsMax ${this.limits.connectionsMax})`,
      );
      sock.destroy();
      return;
    }
    sock.setNoDelay(true);
    const lim = this.limits;
    const conn: ConnState = { sock, inflightCalls: 0, inflightBytes: 0, held: [], lastActiveMs: Date.now() };
    this.conns.set(sock, conn);
    sock.on('close', () => this.conns.delete(sock));
    sock.on('error', () => sock.destroy());
    sock.setTimeout(lim.idleTimeoutMs);
    sock.on('timeout', () => {
      // A call in flight (a lock wait, a slow disk) is not idleness.
      if (conn.inflightCalls > 0 || conn.held.length > 0) return;
      this.idleClosed++;
      sock.destroy();
    });
    const { names, defs } = methods();
    const handlers = this.handlers as unknown as Record<string, grpc.handleUnaryCall<unknown, unknown>>;
    const blocked = () =>
      conn.inflightCalls >= lim.inflightCallsPerConnMax ||
      conn.inflightBytes >= lim.inflightBytesPerConnMax ||
      sock.writableLength >= lim.queuedBytesPerConnMax;
    let pumping = false;
    /** Serves held frames while the limits allow; reads again once nothing is held. */
    const pump = () => {
      // A handler that answers at once calls back in here: the loop below goes on instead.
      if (pumping) return;
      pumping = true;
      try {
        while (conn.held.length > 0 && !blocked() && !sock.destroyed) dispatch(conn.held.shift()!);
      } finally {
        pumping = false;
      }
      if (sock.destroyed) return;
      if (conn.held.length === 0 && !blocked()) {
        if (sock.isPaused()) sock.resume();
      } else if (!sock.isPaused()) sock.pause();
    };
    const finished = (bytes: number) => {
      conn.inflightCalls--;
      conn.inflightBytes -= bytes;
      conn.lastActiveMs = Date.now();
      pump();
    };
    // The peer took queued replies: held frames may go on.
    sock.on('drain', pump);
    const dispatch = (f: HeldFrame) => {
      const { id, method: mi, kind, payload, flags } = f;
      const fail = (code: number, details: string, dunixCode?: ErrorCode) =>
        !sock.destroyed &&
        sendFrame(
          sock,
          id,
          mi,
          KIND_ERROR,
          Buffer.from(JSON.stringify({ code, details, dunixCode } satisfies ErrorBody)),
        );
      const def = defs[mi];
      const handler = def && handlers[names[mi]!];
      if (kind !== KIND_REQUEST || !def || !handler) {
        fail(GrpcStatus.UNIMPLEMENTED, `no method ${mi}`, 'UNIMPLEMENTED');
        return;
      }
      let request: unknown;
      try {
        request = decodeMessage(payload, flags, (b) => def.requestDeserialize(b));
      } catch (err) {
        fail(
          GrpcStatus.INVALID_ARGUMENT,
          `malformed ${names[mi]} request: ${(err as Error).message}`,
          'INVALID_ARGUMENT',
        );
        return;
      }
      const call = {
        request,
        metadata: new grpc.Metadata(),
        [PEER_IDENTITY]: peer,
      } as unknown as grpc.ServerUnaryCall<unknown, unknown>;
      conn.inflightCalls++;
      // A read's reply is as large as it asks for: counted now, so that calls
      // in flight cannot queue more reply bytes than the limit (a peer that
      // never reads would otherwise get every read in flight answered).
      const bytes = payload.length + replyBytesAsked(request);
      conn.inflightBytes += bytes;
      let answered = false;
      handler(call, (err, reply) => {
        // A handler answers once; a second answer must not free a slot twice.
        if (answered) return;
        answered = true;
        try {
          if (sock.destroyed) return;
          if (err) {
            const dunixCode = err.metadata?.get(ERROR_CODE_METADATA_KEY)[0];
            fail(
              err.code ?? GrpcStatus.UNKNOWN,
              err.details ?? '',
              typeof dunixCode === 'string' ? (dunixCode as ErrorCode) : undefined,
            );
            return;
          }
          try {
            sendMessage(sock, id, mi, KIND_REPLY, reply, (v) => def.responseSerialize(v), true);
          } catch (e) {
            fail(
              GrpcStatus.INTERNAL,
              `reply of ${names[mi]} did not serialize: ${(e as Error).message}`,
              'IO',
            );
          }
        } finally {
          finished(bytes);
        }
      });
    };
    const reader = new FrameReader((id, method, kind, payload, flags) => {
      const f = { id, method, kind, payload, flags };
      // In order: nothing overtakes a held frame.
      if (conn.held.length > 0 || blocked()) conn.held.push(f);
      else dispatch(f);
    });
    const onChunk = (chunk: Buffer) => {
      conn.lastActiveMs = Date.now();
      const bad = reader.push(chunk);
      if (bad) {
        this.onBadStream?.(bad);
        sock.destroy();
        return;
      }
      pump();
    };
    // The reader copies each frame out of the chunk before returning: one
    // receive buffer serves every connection of this server.
    this.receiveBuffer ??= Buffer.allocUnsafeSlow(RECEIVE_BUFFER_BYTES);
    if (!readIntoBuffer(sock, this.receiveBuffer, onChunk)) sock.on('data', onChunk);
  }
}

/** A peer reachable over some transport: what routers hand out. */
export interface BrickConn {
  unary<Rep>(method: string, request: object, deadlineMs: number): Promise<Rep>;
  close(): void;
}

/**
 * What a connection tells its owner beyond a call's error. Every connection
 * failure reaches callers as UNAVAILABLE (retryable); a refusal is reported
 * here too because it is the fastest sign that the brick is dead.
 */
export interface ConnEvents {
  onConnectionRefused?(): void;
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: unknown): void;
  timer: NodeJS.Timeout;
  method: number;
}

/** Client side of the frame transport: one connection, reopened on demand. */
export class FrameConn implements BrickConn {
  private sock: net.Socket | undefined;
  private connected: Promise<net.Socket> | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;

  constructor(
    private readonly address: string,
    private readonly events: ConnEvents = {},
    private readonly security: TransportSecurity = INSECURE_TRANSPORT,
  ) {}

  private connect(): Promise<net.Socket> {
    if (this.connected) return this.connected;
    const at = this.address.lastIndexOf(':');
    const host = this.address.slice(0, at).replace(/^\[|\]$/g, '');
    const port = Number(this.address.slice(at + 1));
    const { defs } = methods();
    const security = this.security;
    if (security.kind === 'insecure') {
      try {
        assertInsecureAllowed(host, 'brick address');
      } catch (err) {
        return Promise.reject(err);
      }
    }
    this.connected = new Promise((resolve, reject) => {
      // Replies are read into one buffer of ours (no allocation per socket read);
      // the reader copies each frame out once.
      const onread = {
        buffer: Buffer.allocUnsafeSlow(RECEIVE_BUFFER_BYTES),
        callback: (nread: number, buf: Buffer) => {
          if (reader.push(buf.subarray(0, nread))) sock.destroy(new Error('malformed stream from brick'));
          return true;
        },
      };
      const sock: net.Socket =
        security.kind === 'tls'
          ? // Node's tls.connect takes onread too (its typings lack it).
            tls.connect({ host, port, onread, ...tlsClientOptions(security, host) } as tls.ConnectionOptions)
          : net.connect({ host, port, onread });
      sock.setNoDelay(true);
      const reader = new FrameReader((id, mi, kind, payload, flags) => {
        const p = this.pending.get(id);
        if (!p) return;
        this.pending.delete(id);
        clearTimeout(p.timer);
        if (kind === KIND_REPLY) {
          try {
            p.resolve(decodeMessage(payload, flags, (b) => defs[p.method]!.responseDeserialize(b)));
          } catch (err) {
            p.reject(new FsError('IO', `malformed reply: ${(err as Error).message}`));
          }
        } else {
          p.reject(errorFromBody(payload));
        }
      });
      // With TLS the connection is usable once the handshake verified the brick.
      sock.on(security.kind === 'tls' ? 'secureConnect' : 'connect', () => {
        this.sock = sock;
        resolve(sock);
      });
      const down = (err?: NodeJS.ErrnoException) => {
        if (err?.code === 'ECONNREFUSED') this.events.onConnectionRefused?.();
        if (this.sock === sock) this.sock = undefined;
        this.connected = undefined;
        reject(new FsError('UNAVAILABLE', `${this.address}: ${err?.message ?? 'connection closed'}`));
        for (const [id, p] of this.pending) {
          if ((p as Pending & { sock?: net.Socket }).sock !== sock) continue;
          this.pending.delete(id);
          clearTimeout(p.timer);
          p.reject(new FsError('UNAVAILABLE', `${this.address}: ${err?.message ?? 'connection closed'}`));
        }
      };
      sock.on('error', down);
      sock.on('close', () => down());
    });
    // A failed connect must not stay cached.
    this.connected.catch(() => {});
    return this.connected;
  }

  async unary<Rep>(method: string, request: object, deadlineMs: number): Promise<Rep> {
    if (this.closed) throw new FsError('UNAVAILABLE', 'connection closed');
    const { index, defs } = methods();
    const mi = index.get(method);
    if (mi === undefined) throw new Error(`no RPC method ${method}`);
    const serialize = (v: unknown) => defs[mi]!.requestSerialize(v);
    const sock = this.sock ?? (await withDeadline(this.connect(), deadlineMs, this.address));
    // Closed between connecting and now: its close handler has already failed
    // the pending calls and would never fail this one.
    if (sock.destroyed) throw new FsError('UNAVAILABLE', `${this.address}: connection closed`);
    return new Promise<Rep>((resolve, reject) => {
      const id = this.nextId;
      this.nextId = this.nextId >= 0xffff_fff0 ? 1 : this.nextId + 1;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new FsError('TIMED_OUT', `${method} to ${this.address} after ${deadlineMs} ms`));
      }, deadlineMs);
      const p: Pending & { sock: net.Socket } = {
        resolve: resolve as (v: unknown) => void,
        reject,
        timer,
        method: mi,
        sock,
      };
      this.pending.set(id, p);
      sendMessage(sock, id, mi, KIND_REQUEST, request, serialize, false);
    });
  }

  close(): void {
    this.closed = true;
    this.sock?.destroy();
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new FsError('UNAVAILABLE', 'connection closed'));
    }
    this.pending.clear();
  }
}

function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new FsError('TIMED_OUT', `connecting to ${what}`)), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

function errorFromBody(payload: Buffer): FsError {
  let body: ErrorBody;
  try {
    body = JSON.parse(payload.toString()) as ErrorBody;
  } catch {
    return new FsError('IO', 'malformed error from brick');
  }
  const metadata = new grpc.Metadata();
  if (body.dunixCode && body.dunixCode in errorTable) metadata.set(ERROR_CODE_METADATA_KEY, body.dunixCode);
  return fromServiceError({ code: body.code, details: body.details, metadata } as grpc.ServiceError);
}

/** gRPC as a BrickConn (for bricks that only offer gRPC). */
export class GrpcConn implements BrickConn {
  constructor(
    private readonly client: grpc.Client,
    private readonly events: ConnEvents = {},
  ) {}

  unary<Rep>(method: string, request: object, deadlineMs: number): Promise<Rep> {
    const fn = (this.client as unknown as Record<string, unknown>)[method] as
      | ((req: object, opts: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: Rep) => void) => void)
      | undefined;
    if (!fn) throw new Error(`no RPC method ${method}`);
    return new Promise((resolve, reject) => {
      fn.call(this.client, request, { deadline: Date.now() + deadlineMs }, (err, reply) => {
        if (!err) return resolve(reply as Rep);
        // grpc-js reports a failed connect only in the status details.
        if (err.code === GrpcStatus.UNAVAILABLE && /ECONNREFUSED/.test(err.details ?? '')) {
          this.events.onConnectionRefused?.();
        }
        reject(fromServiceError(err));
      });
    });
  }

  close(): void {
    this.client.close();
  }
}
