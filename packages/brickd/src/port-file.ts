import { rename, rm, writeFile } from 'node:fs/promises';

/**
 * What `brickd --port-file FILE` writes once both servers listen: the
 * addresses actually bound. A brick asked for port 0 picks its own ports, so
 * whoever starts it (test harness, launcher, bench) learns them here instead
 * of choosing ports beforehand, which races with every other bind on the
 * machine. `pid` tells a fresh file from a stale one.
 */
export interface PortReport {
  pid: number;
  /** gRPC, host:port. */
  address: string;
  /** Frame transport, host:port. */
  dataAddress: string;
  /** Prometheus /metrics, host:port (only with --metrics-listen). */
  metricsAddress?: string;
}

/** Writes the report atomically: a reader sees no file or the whole of it, never a part. */
export async function writePortFile(file: string, report: PortReport): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    await writeFile(tmp, `${JSON.stringify(report)}\n`);
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
