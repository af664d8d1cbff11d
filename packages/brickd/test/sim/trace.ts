import { createHash } from 'node:crypto';
import type { Logger, LogLevel } from '@dunix/proto';

function jsonSafe(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  if (Buffer.isBuffer(value)) return value.toString('hex');
  return value;
}

/**
 * What happened in a run, one line per event (simulated time, node, what),
 * hashed as it goes: the same seed gives the same lines and the same hash.
 * The last lines are kept for a failure report; all of them with --verbose.
 */
export class Trace {
  private readonly hash = createHash('sha256');
  private readonly recent: string[] = [];
  private readonly startMs: number;
  lines = 0;
  /** Log lines by level and message (what the run exercised). */
  readonly counts = new Map<string, number>();

  constructor(
    private readonly now: () => number,
    private readonly echo?: (line: string) => void,
    private readonly keep = 400,
  ) {
    this.startMs = now();
  }

  add(node: string, what: string, fields?: Record<string, unknown>): void {
    const t = (this.now() - this.startMs).toFixed(3).padStart(10);
    const line = `${t} ${node.padEnd(6)} ${what}${fields ? ` ${JSON.stringify(fields, jsonSafe)}` : ''}`;
    this.hash.update(line);
    this.hash.update('\n');
    this.lines++;
    this.recent.push(line);
    if (this.recent.length > this.keep) this.recent.shift();
    this.echo?.(line);
  }

  /** Feeds an event into the hash without keeping a line (every message delivered, say). */
  mix(event: string): void {
    this.hash.update(event);
    this.hash.update('\n');
  }

  /** The last lines (for a failure report). */
  tail(): string[] {
    return [...this.recent];
  }

  digest(): string {
    return this.hash.copy().digest('hex').slice(0, 16);
  }

  /**
   * A Logger for one node's components: lines go to the trace; error lines
   * (the code's own report of a bug or a broken invariant) also to `onError`.
   */
  logger(node: string, onError: (msg: string, fields?: Record<string, unknown>) => void): Logger {
    const emit = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => {
      this.add(node, `${level}: ${msg}`, fields);
      const key = `${level}: ${msg}`;
      this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
      if (level === 'error') onError(msg, fields);
    };
    return {
      debug: () => {},
      info: (m, f) => emit('info', m, f),
      warn: (m, f) => emit('warn', m, f),
      error: (m, f) => emit('error', m, f),
      enabled: (level) => level !== 'debug',
    };
  }
}
