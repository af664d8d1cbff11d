import { collectDefaultMetrics, Counter, Histogram, Registry } from 'prom-client';

/** Seconds; from a request the kernel's caches almost answered to one that waited out a failover. */
const OP_BUCKETS_S = [0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 60];

/** errno -> label, built once: a failed request allocates no string. */
const errnoNames = new Map<number, string>();

/**
 * The client's Prometheus metrics (one registry per mount process, served on
 * the metrics port): FUSE requests by opcode and result, the RPCs they
 * became, bytes through read(2)/write(2), and the client's own content cache.
 */
export class ClientMetrics {
  readonly registry = new Registry();
  private readonly fuseSeconds = new Histogram({
    name: 'dunix_client_fuse_request_seconds',
    help: 'Time to answer a FUSE request, by opcode and result (OK or the errno name)',
    labelNames: ['op', 'result'] as const,
    buckets: OP_BUCKETS_S,
    registers: [this.registry],
  });
  private readonly rpcSeconds = new Histogram({
    name: 'dunix_client_rpc_seconds',
    help: 'Time of an RPC to the bricks including its retries, by method and result code',
    labelNames: ['method', 'code'] as const,
    buckets: OP_BUCKETS_S,
    registers: [this.registry],
  });
  private readonly readBytes = new Counter({
    name: 'dunix_client_read_bytes_total',
    help: 'Bytes returned by READ requests',
    registers: [this.registry],
  });
  private readonly writtenBytes = new Counter({
    name: 'dunix_client_written_bytes_total',
    help: 'Bytes taken by WRITE requests',
    registers: [this.registry],
  });
  private readonly cacheHits = new Counter({
    name: 'dunix_client_cache_hits_total',
    help:
      "Reads answered from the client's copy (inline: a small file's content held since open; " +
      'names: a lookup of a name not in a directory whose every name the client knows; ' +
      "attrs: a directory's attributes as the client's own change left them; " +
      'xattrs: a getxattr or listxattr of an inode known to have no xattr; ' +
      'listing: a lookup answered from a directory read whole after several lookups in it)',
    labelNames: ['cache'] as const,
    registers: [this.registry],
  });
  private readonly cacheMisses = new Counter({
    name: 'dunix_client_cache_misses_total',
    help: 'Reads that had to fetch what the cache lacked',
    labelNames: ['cache'] as const,
    registers: [this.registry],
  });

  constructor(errnoName: (errno: number) => string) {
    // The process's own: CPU, resident memory, heap, file descriptors, event-loop delay.
    collectDefaultMetrics({ register: this.registry });
    this.errnoName = (e) => {
      let n = errnoNames.get(e);
      if (n === undefined) errnoNames.set(e, (n = errnoName(e)));
      return n;
    };
  }

  private readonly errnoName: (errno: number) => string;

  /** One FUSE request answered: errno 0 for success. */
  requestDone(op: string, startNs: bigint, errno: number, readBytes: number, writtenBytes: number): void {
    this.fuseSeconds.observe(
      { op, result: errno === 0 ? 'OK' : this.errnoName(errno) },
      Number(process.hrtime.bigint() - startNs) / 1e9,
    );
    if (readBytes > 0) this.readBytes.inc(readBytes);
    if (writtenBytes > 0) this.writtenBytes.inc(writtenBytes);
  }

  rpcDone(method: string, startNs: bigint, code: string): void {
    this.rpcSeconds.observe({ method, code }, Number(process.hrtime.bigint() - startNs) / 1e9);
  }

  cacheHit(cache: 'inline' | 'names' | 'attrs' | 'xattrs' | 'listing'): void {
    this.cacheHits.inc({ cache });
  }

  cacheMiss(cache: 'inline'): void {
    this.cacheMisses.inc({ cache });
  }
}
