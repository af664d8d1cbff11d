/**
 * A record writer for fault tests, run as its own process so that a hung
 * mount stalls it and not the test. It writes fixed-size numbered records one
 * after another into one file (record n at offset n * size: an append, and a
 * rewrite of the same bytes when retried), fsyncs after every `fsyncEvery`
 * records, and logs every call to a file off the mount:
 *
 *   w N START_MS DURATION_MS          write of record N returned
 *   f N START_MS DURATION_MS          fsync after record N returned: 0..N are acknowledged
 *   e N OP CODE START_MS DURATION_MS  a call failed (OP w, f or c for close) with errno CODE
 *   d                                 the writer ended by itself
 *
 * (times in ms since the epoch). After an error it waits `errorSleepMs` and
 * writes again from the first record not acknowledged, so it rides out a
 * failover and shows when writes resume. It stops when the stop file
 * appears, after `maxRecords` or after `maxMs`, with a last fsync of what it
 * wrote since the previous one.
 *
 * The parent side (startRecordWriter, WriterLog, checkRecords) reads that
 * log and checks the file read back: every acknowledged record present and
 * intact, nothing else but records in their place or zeros.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import {
  closeSync,
  constants,
  existsSync,
  fsyncSync,
  openSync,
  readSync,
  writeFileSync,
  writeSync,
  fstatSync,
} from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';

export interface WriterOptions {
  /** The file on the mount (created if missing, never truncated). */
  file: string;
  /** The writer's log, off the mount. */
  log: string;
  /** The writer stops once this file exists. */
  stopFile: string;
  recordBytes: number;
  /** fsync after every this-many records (1: each). */
  fsyncEvery: number;
  maxRecords: number;
  maxMs: number;
  /** Pause after a failed call before writing again. */
  errorSleepMs: number;
}

const HEADER = 'rec ';

/** Record n: "rec " + n (12 digits) + " " and bytes derived from n. */
export function recordBytes(n: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  const head = `${HEADER}${String(n).padStart(12, '0')} `;
  b.write(head, 0, 'latin1');
  let x = (n * 2654435761 + 12345) >>> 0;
  for (let k = head.length; k < size; k++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[k] = (x >>> 16) & 0xff;
  }
  return b;
}

// ------------------------------------------------------------------ the child

const nowMs = () => performance.timeOrigin + performance.now();
const sleeper = new Int32Array(new SharedArrayBuffer(4));

function runWriter(o: WriterOptions): void {
  const logFd = openSync(o.log, 'a');
  const log = (line: string) => writeSync(logFd, `${line}\n`);
  const fix = (t: number) => t.toFixed(1);
  // Positional writes: O_APPEND would ignore the offset of a retried record.
  const fd = openSync(o.file, constants.O_RDWR | constants.O_CREAT, 0o644);
  const startedAt = nowMs();
  let acked = -1;
  let n = 0;
  let unsynced = false;
  const failed = (op: string, err: unknown, t0: number) => {
    const code = (err as NodeJS.ErrnoException).code ?? 'UNKNOWN';
    log(`e ${n} ${op} ${code} ${fix(t0)} ${fix(nowMs() - t0)}`);
    Atomics.wait(sleeper, 0, 0, o.errorSleepMs);
    n = acked + 1;
    unsynced = false;
  };
  const sync = (): boolean => {
    const t0 = nowMs();
    try {
      fsyncSync(fd);
    } catch (err) {
      failed('f', err, t0);
      return false;
    }
    log(`f ${n - 1} ${fix(t0)} ${fix(nowMs() - t0)}`);
    acked = n - 1;
    unsynced = false;
    return true;
  };
  while (n < o.maxRecords && nowMs() - startedAt < o.maxMs && !existsSync(o.stopFile)) {
    const buf = recordBytes(n, o.recordBytes);
    const t0 = nowMs();
    try {
      const wrote = writeSync(fd, buf, 0, buf.length, n * o.recordBytes);
      if (wrote !== buf.length) throw Object.assign(new Error('short write'), { code: 'SHORT_WRITE' });
    } catch (err) {
      failed('w', err, t0);
      continue;
    }
    log(`w ${n} ${fix(t0)} ${fix(nowMs() - t0)}`);
    n++;
    unsynced = true;
    if (n % o.fsyncEvery === 0) sync();
  }
  // What was written since the last fsync: once more (a failure here is logged, not retried).
  if (unsynced) sync();
  const t0 = nowMs();
  try {
    closeSync(fd);
  } catch (err) {
    log(`e ${n} c ${(err as NodeJS.ErrnoException).code ?? 'UNKNOWN'} ${fix(t0)} ${fix(nowMs() - t0)}`);
  }
  log('d');
  closeSync(logFd);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runWriter(JSON.parse(process.argv[2]!) as WriterOptions);
}

// ------------------------------------------------------------------ the parent

/** What the writer's log says. */
export interface WriterStats {
  /** Records acknowledged: 0 .. acked-1 (an fsync after them returned). */
  acked: number;
  /** Highest record whose write returned, + 1. */
  written: number;
  /** Completion times of the acknowledging fsyncs, in order. */
  ackTimes: number[];
  /** Longest gap between two consecutive acknowledgements (ms). */
  maxPauseMs: number;
  /** When that gap began (ms since the epoch; 0 if none). */
  maxPauseAt: number;
  /** Longest single call (ms). */
  maxCallMs: number;
  /** Longest failed call (ms): how long the writer waited for an error. */
  maxErrorCallMs: number;
  /** Failed calls per errno code. */
  errors: Record<string, number>;
  errorCount: number;
  /** First and last failure (ms since the epoch; 0 if none). */
  firstErrorAt: number;
  lastErrorAt: number;
  /** The writer ended by itself (not killed). */
  finished: boolean;
}

/** Reads the writer's log incrementally. */
export class WriterLog {
  private offset = 0;
  private rest = '';
  readonly stats: WriterStats = {
    acked: 0,
    written: 0,
    ackTimes: [],
    maxPauseMs: 0,
    maxPauseAt: 0,
    maxCallMs: 0,
    maxErrorCallMs: 0,
    errors: {},
    errorCount: 0,
    firstErrorAt: 0,
    lastErrorAt: 0,
    finished: false,
  };

  constructor(readonly file: string) {}

  /** Takes what was appended since the last call. */
  update(): WriterStats {
    if (!existsSync(this.file)) return this.stats;
    const fd = openSync(this.file, 'r');
    try {
      const size = fstatSync(fd).size;
      if (size > this.offset) {
        const buf = Buffer.alloc(size - this.offset);
        const got = readSync(fd, buf, 0, buf.length, this.offset);
        this.offset += got;
        const text = this.rest + buf.subarray(0, got).toString('latin1');
        const lines = text.split('\n');
        this.rest = lines.pop() ?? '';
        for (const line of lines) this.take(line);
      }
    } finally {
      closeSync(fd);
    }
    return this.stats;
  }

  private take(line: string): void {
    const s = this.stats;
    const f = line.split(' ');
    switch (f[0]) {
      case 'w': {
        s.written = Math.max(s.written, Number(f[1]) + 1);
        s.maxCallMs = Math.max(s.maxCallMs, Number(f[3]));
        break;
      }
      case 'f': {
        const end = Number(f[2]) + Number(f[3]);
        s.maxCallMs = Math.max(s.maxCallMs, Number(f[3]));
        const prev = s.ackTimes[s.ackTimes.length - 1];
        if (prev !== undefined && end - prev > s.maxPauseMs) {
          s.maxPauseMs = end - prev;
          s.maxPauseAt = prev;
        }
        s.ackTimes.push(end);
        s.acked = Math.max(s.acked, Number(f[1]) + 1);
        break;
      }
      case 'e': {
        const code = f[3]!;
        const at = Number(f[4]) + Number(f[5]);
        s.errors[code] = (s.errors[code] ?? 0) + 1;
        s.errorCount++;
        s.maxCallMs = Math.max(s.maxCallMs, Number(f[5]));
        s.maxErrorCallMs = Math.max(s.maxErrorCallMs, Number(f[5]));
        if (!s.firstErrorAt) s.firstErrorAt = at;
        s.lastErrorAt = at;
        break;
      }
      case 'd':
        s.finished = true;
        break;
      default:
        throw new Error(`writer log ${this.file}: unexpected line ${JSON.stringify(line)}`);
    }
  }

  /** Acknowledgement times within [from, to) (ms since the epoch). */
  acksBetween(from: number, to: number): number {
    return this.stats.ackTimes.filter((x) => x >= from && x < to).length;
  }
}

/** Errors as "CODE:count,..." ("none" when there were none), for reports. */
export function errorSummary(errors: Record<string, number>): string {
  const parts = Object.entries(errors).map(([code, n]) => `${code}:${n}`);
  return parts.length ? parts.join(',') : 'none';
}

export interface RecordCheck {
  /** Acknowledged records missing or not intact. */
  lost: number;
  /** The first few of them, described. */
  lostSample: string[];
  /** Records past the acknowledged ones that are present and intact. */
  extra: number;
  /** Slots past the acknowledged ones holding zeros, or a record's bytes partly (not acknowledged: allowed). */
  zeroOrPartial: number;
  /** Slots holding bytes no write put there (another record, garbage). */
  bad: number;
  badSample: string[];
  /** Slots in the file (size / record size, rounded up). */
  slots: number;
}

/** Checks a file's content against the records acknowledged (0 .. acked-1). */
export function checkRecords(data: Buffer, recordSize: number, acked: number): RecordCheck {
  const r: RecordCheck = {
    lost: 0,
    lostSample: [],
    extra: 0,
    zeroOrPartial: 0,
    bad: 0,
    badSample: [],
    slots: Math.ceil(data.length / recordSize),
  };
  const describe = (i: number, got: Buffer) =>
    `record ${i}: ${got.length} bytes, starts ${JSON.stringify(got.subarray(0, 18).toString('latin1'))}`;
  for (let i = 0; i < Math.max(acked, r.slots); i++) {
    const want = recordBytes(i, recordSize);
    const got = data.subarray(i * recordSize, (i + 1) * recordSize);
    if (got.equals(want)) {
      if (i >= acked) r.extra++;
      continue;
    }
    if (i < acked) {
      r.lost++;
      if (r.lostSample.length < 10) r.lostSample.push(describe(i, got));
      continue;
    }
    // Not acknowledged: zeros, or this record's bytes in places (a write cut short), are fine.
    let ok = true;
    for (let k = 0; k < got.length && ok; k++) ok = got[k] === 0 || got[k] === want[k];
    if (ok) r.zeroOrPartial++;
    else {
      r.bad++;
      if (r.badSample.length < 10) r.badSample.push(describe(i, got));
    }
  }
  return r;
}

export interface RecordWriter {
  readonly child: ChildProcess;
  readonly log: WriterLog;
  /** The log so far. */
  progress(): WriterStats;
  /** Resolves once `records` are acknowledged (or rejects when the writer exits or time runs out). */
  waitForAcked(records: number, timeoutMs: number): Promise<WriterStats>;
  /** Asks the writer to stop; SIGKILLs it after `timeoutMs` (then `hung` is true). */
  stop(timeoutMs: number): Promise<WriterStats & { hung: boolean; exitCode: number | null }>;
}

const children = new Set<ChildProcess>();
let exitHook = false;

/** Starts the writer process (node, this file) on `o.file`. */
export function startRecordWriter(o: WriterOptions): RecordWriter {
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    });
  }
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), JSON.stringify(o)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.add(child);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      children.delete(child);
      resolve(code);
    });
    child.once('error', () => {
      children.delete(child);
      resolve(-1);
    });
  });
  let exitCode: number | null | undefined;
  void exited.then((c) => (exitCode = c));
  const log = new WriterLog(o.log);
  return {
    child,
    log,
    progress: () => log.update(),
    async waitForAcked(records, timeoutMs) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const s = log.update();
        if (s.acked >= records) return s;
        if (exitCode !== undefined)
          throw new Error(`writer exited (${exitCode}) at ${s.acked} records: ${stderr}`);
        if (Date.now() > until)
          throw new Error(`writer: ${s.acked} of ${records} records acknowledged after ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 25));
      }
    },
    async stop(timeoutMs) {
      writeFileSync(o.stopFile, '');
      let hung = false;
      const timer = setTimeout(() => {
        hung = true;
        child.kill('SIGKILL');
      }, timeoutMs);
      const code = await exited;
      clearTimeout(timer);
      if (code !== 0 && !hung && stderr) process.stderr.write(`record writer: ${stderr}\n`);
      return { ...log.update(), hung, exitCode: code };
    },
  };
}
