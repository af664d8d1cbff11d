import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { PgState } from './pg/pg-state.js';
import type { Stage, StageTimer } from './replication/deps.js';

/** Seconds; from a cached read (~50 µs) to a call that waited out a failover. */
const RPC_BUCKETS_S = [0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30];

/** Seconds; a stage of one mutation, from a queue found empty (~10 µs) to a replica timing out. */
const STAGE_BUCKETS_S = [
  0.00001, 0.00003, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.03, 0.1, 0.3, 1, 3,
];

/** What the gauges read at scrape time: the brick's PG table (absent until the volume exists). */
export interface PgTableView {
  brickId: string;
  pgs(): Iterable<PgState> | undefined;
  /** Copies per PG the volume asks for. */
  replicas(): number;
  catchUpsRunning(): number;
  /** Block bytes written with O_DIRECT so far (store/direct-io.ts). */
  directWriteBytes?(): number;
}

/**
 * brickd's Prometheus metrics (one registry per process, served on the
 * metrics port). Counters move on the RPC path: observeRpc is one histogram
 * observe and, on failure, one counter increment, with label values taken
 * from fixed tables (method names, error codes), nothing built per call.
 * PG gauges are computed from the PG table when scraped, not kept up to date
 * on every change.
 */
export class BrickMetrics {
  readonly registry = new Registry();
  private readonly rpcSeconds = new Histogram({
    name: 'dunix_brick_rpc_seconds',
    help: 'Time to answer an RPC, by method and result code (OK or the error table code)',
    labelNames: ['method', 'code'] as const,
    buckets: RPC_BUCKETS_S,
    registers: [this.registry],
  });
  private readonly rpcErrors = new Counter({
    name: 'dunix_brick_rpc_errors_total',
    help: 'RPCs answered with an error, by error table code',
    labelNames: ['code'] as const,
    registers: [this.registry],
  });
  private readonly readBytes = new Counter({
    name: 'dunix_brick_read_bytes_total',
    help: 'Block bytes returned by ReadBlock',
    registers: [this.registry],
  });
  private readonly writtenBytes = new Counter({
    name: 'dunix_brick_written_bytes_total',
    help: 'Bytes received by WriteBlock and WriteInline',
    registers: [this.registry],
  });
  private readonly stageSeconds = new Histogram({
    name: 'dunix_brick_stage_seconds',
    help: 'Time of one stage of a mutation (replication/deps.ts Stage): queues, engine, local log write, replication',
    labelNames: ['stage'] as const,
    buckets: STAGE_BUCKETS_S,
    registers: [this.registry],
  });
  private readonly logEntries = new Counter({
    name: 'dunix_brick_log_entries_total',
    help: 'Log entries this brick appended as primary, by kind (each one replication round)',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  private view: PgTableView | undefined;

  constructor() {
    const pgs = () => this.view?.pgs() ?? [];
    const registers = [this.registry];
    const view = () => this.view;
    new Gauge({
      name: 'dunix_brick_pgs',
      help: 'PG copies on this brick by state: primary (serving), primary_peering, replica, backfilling, lost',
      labelNames: ['state'] as const,
      registers,
      collect() {
        const n = { primary: 0, primary_peering: 0, replica: 0, backfilling: 0, lost: 0 };
        for (const st of pgs()) {
          if (st.role === 'primary') n[st.ready ? 'primary' : 'primary_peering']++;
          else n.replica++;
          if (st.backfilling) n.backfilling++;
          if (st.lost) n.lost++;
        }
        this.reset();
        for (const [state, v] of Object.entries(n)) this.set({ state }, v);
      },
    });
    new Gauge({
      name: 'dunix_brick_pg_insync_replicas',
      help: 'Size of the in-sync set of each PG this brick leads',
      labelNames: ['pg'] as const,
      registers,
      collect() {
        this.reset();
        for (const st of pgs())
          if (st.role === 'primary' && st.ready) this.set({ pg: String(st.pg) }, st.isr.length);
      },
    });
    new Gauge({
      name: 'dunix_brick_pgs_under_replicated',
      help: "PGs this brick leads whose in-sync set is smaller than the volume's replica count",
      registers,
      collect() {
        const want = view()?.replicas() ?? 0;
        let n = 0;
        for (const st of pgs()) if (st.role === 'primary' && st.ready && st.isr.length < want) n++;
        this.set(n);
      },
    });
    new Counter({
      name: 'dunix_brick_block_direct_write_bytes_total',
      help: 'Block bytes written with O_DIRECT (aligned writes of 64 KiB or more); the rest went through the page cache',
      registers,
      collect() {
        this.reset();
        this.inc(view()?.directWriteBytes?.() ?? 0);
      },
    });
    new Gauge({
      name: 'dunix_brick_recoveries_running',
      help: 'Catch-ups and backfills this brick runs as primary',
      registers,
      collect() {
        this.set(view()?.catchUpsRunning() ?? 0);
      },
    });
    new Gauge({
      name: 'dunix_brick_replication_lag_entries',
      help: "Log entries a copy lacks: the primary's last sequence minus the copy's last acknowledged one",
      labelNames: ['pg', 'replica'] as const,
      registers,
      collect() {
        this.reset();
        for (const st of pgs()) {
          if (st.role !== 'primary') continue;
          for (const b of st.bricks) {
            const acked = st.ackedSeq.get(b);
            if (acked === undefined) continue;
            this.set({ pg: String(st.pg), replica: b }, Number(st.opSeq > acked ? st.opSeq - acked : 0n));
          }
        }
      },
    });
    new Gauge({
      name: 'dunix_brick_replication_lag_max_entries',
      help: 'Largest replication lag over the copies of the PGs this brick leads (0: every copy caught up)',
      registers,
      collect() {
        let max = 0n;
        for (const st of pgs()) {
          if (st.role !== 'primary') continue;
          for (const b of st.bricks) {
            const acked = st.ackedSeq.get(b);
            if (acked !== undefined && st.opSeq - acked > max) max = st.opSeq - acked;
          }
        }
        this.set(Number(max));
      },
    });
  }

  /**
   * Adds the process's own metrics (CPU, resident memory, heap, open file
   * descriptors, event-loop delay: prom-client's defaults), once the
   * registry is served: their event-loop monitor is not worth running
   * for a registry nobody reads.
   */
  withProcessMetrics(): Registry {
    if (!this.processMetrics) collectDefaultMetrics({ register: this.registry });
    this.processMetrics = true;
    return this.registry;
  }
  private processMetrics = false;

  /** The PG table to report once the brick serves its volume. */
  attach(view: PgTableView): void {
    this.view = view;
  }

  /** method -> code -> the histogram's child: labels are resolved once, not hashed per call. */
  private readonly rpcChildren = new Map<string, Map<string, { observe(v: number): void }>>();

  /** One answered RPC: `startNs` from process.hrtime.bigint(), `code` 'OK' or the error table's code. */
  observeRpc(method: string, startNs: bigint, code: string): void {
    let byCode = this.rpcChildren.get(method);
    if (!byCode) this.rpcChildren.set(method, (byCode = new Map()));
    let child = byCode.get(code);
    if (!child) byCode.set(code, (child = this.rpcSeconds.labels(method, code)));
    child.observe(Number(process.hrtime.bigint() - startNs) / 1e9);
    if (code !== 'OK') this.rpcErrors.inc({ code });
  }

  /** stage -> the histogram's child; kind -> the counter's child. */
  private readonly stageChildren = new Map<Stage, { observe(v: number): void }>();
  private readonly entryChildren = new Map<string, { inc(): void }>();

  /** The latency breakdown's timer for the replication deps: performance.now() marks. */
  readonly stages: StageTimer = {
    now: () => performance.now(),
    done: (stage, startMs) => {
      let child = this.stageChildren.get(stage);
      if (!child) this.stageChildren.set(stage, (child = this.stageSeconds.labels(stage)));
      child.observe((performance.now() - startMs) / 1000);
    },
    entry: (kind) => {
      let child = this.entryChildren.get(kind);
      if (!child) this.entryChildren.set(kind, (child = this.logEntries.labels(kind)));
      child.inc();
    },
  };

  addRead(bytes: number): void {
    if (bytes > 0) this.readBytes.inc(bytes);
  }

  addWritten(bytes: number): void {
    if (bytes > 0) this.writtenBytes.inc(bytes);
  }
}
