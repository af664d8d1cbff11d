import * as grpc from '@grpc/grpc-js';
import { createServer, type Server as NetServer, type Socket } from 'node:net';
import { createLogger, type Logger } from '@dunix/proto';

/** How often a run of refused connections is logged (a flood must not flood the log too). */
const REFUSED_LOG_INTERVAL_MS = 10_000;

/**
 * The gRPC server with a cap on connections, which grpc-js lacks: our own
 * net.Server accepts each connection, counts it until it closes, and hands
 * it to grpc-js (`createConnectionInjector`), which runs TLS and HTTP/2 on
 * it as on a port it bound itself (same credentials, options and auth
 * context). Past `connectionsMax` a new connection is closed at once,
 * before TLS: the frame port closes its idlest connection instead, but
 * grpc-js does not say which session is idle, and this port serves tools
 * (dunixctl, tests), not the data path, whose clients use the frame port.
 */
export class CappedGrpcServer extends grpc.Server {
  private listener: NetServer | undefined;
  private readonly sockets = new Set<Socket>();
  private refusedSinceLog = 0;
  private lastRefusedLogMs = 0;
  /** Connections refused since start (tests, logs). */
  refused = 0;

  constructor(
    options: grpc.ServerOptions,
    private readonly connectionsMax: number,
    private readonly log: Logger = createLogger('grpc-server'),
  ) {
    super(options);
  }

  /** Connections open now. */
  get connections(): number {
    return this.sockets.size;
  }

  /** Listens on host:port (0: any free one); resolves with the port. */
  listenCapped(host: string, port: number, credentials: grpc.ServerCredentials): Promise<number> {
    const injector = this.createConnectionInjector(credentials);
    const listener = createServer((socket) => {
      if (this.sockets.size >= this.connectionsMax) {
        socket.destroy();
        this.noteRefused(socket);
        return;
      }
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
      injector.injectConnection(socket);
    });
    this.listener = listener;
    return new Promise((resolve, reject) => {
      listener.once('error', reject);
      listener.listen(port, host, () => {
        listener.off('error', reject);
        const a = listener.address();
        resolve(typeof a === 'object' && a ? a.port : port);
      });
    });
  }

  private noteRefused(socket: Socket): void {
    this.refused++;
    this.refusedSinceLog++;
    const now = Date.now();
    if (now - this.lastRefusedLogMs < REFUSED_LOG_INTERVAL_MS) return;
    this.log.warn('gRPC connections refused: connectionsMax reached', {
      refused: this.refusedSinceLog,
      connectionsMax: this.connectionsMax,
      last: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`,
    });
    this.refusedSinceLog = 0;
    this.lastRefusedLogMs = now;
  }

  override tryShutdown(callback: (error?: Error) => void): void {
    this.listener?.close();
    super.tryShutdown(callback);
  }

  override forceShutdown(): void {
    this.listener?.close();
    super.forceShutdown();
    for (const s of this.sockets) s.destroy();
  }
}
