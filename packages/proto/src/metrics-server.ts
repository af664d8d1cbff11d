import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from './log.js';

/** What a scrape answers: Prometheus text exposition (prom-client's registry renders it). */
export interface MetricsSource {
  contentType: string;
  render(): Promise<string>;
}

export interface MetricsServer {
  /** host:port actually bound (port 0 picks one). */
  readonly address: string;
  close(): Promise<void>;
}

/** HOST:PORT of `--metrics-listen` / `-o metrics_listen=`; throws RangeError with what is wrong. */
export function parseMetricsListen(v: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535)
    throw new RangeError(`metrics listen address ${v}: expected HOST:PORT, e.g. 127.0.0.1:9101`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

/**
 * The metrics port: GET /metrics answers the registry, anything else 404.
 * Its own port, apart from the data ports, so a firewall can open it to the
 * Prometheus server only; plain HTTP and read-only (nothing here changes the
 * process). Off unless asked for.
 */
export async function startMetricsServer(
  listen: string,
  source: MetricsSource,
  log: Logger,
): Promise<MetricsServer> {
  const { host, port } = parseMetricsListen(listen);
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url !== '/metrics' && !req.url?.startsWith('/metrics?'))) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: GET /metrics\n');
      return;
    }
    source.render().then(
      (body) => res.writeHead(200, { 'content-type': source.contentType }).end(body),
      (err: unknown) => {
        log.error('metrics render failed', { err });
        res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics render failed\n');
      },
    );
  });
  // A scraper that keeps a connection open must not hold up a shutdown.
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.unref();
  const a = server.address() as AddressInfo;
  const address = `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  log.info('metrics listening', { address });
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
