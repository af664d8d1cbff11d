import { closeSync, openSync, writeSync } from 'node:fs';

/**
 * Structured logs: one JSON object per line on stderr (or the process's log
 * file, setLogFile), each with a component. DUNIX_LOG=debug|info|warn|error
 * picks the threshold at start (default info); setLogLevel changes it while
 * the process runs, for every logger of the process at once.
 */
const levels = { debug: 10, info: 20, warn: 30, error: 40 } as const;
export type LogLevel = keyof typeof levels;
export const LOG_LEVELS = Object.keys(levels) as LogLevel[];

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  enabled(level: LogLevel): boolean;
}

export function isLogLevel(v: unknown): v is LogLevel {
  return typeof v === 'string' && v in levels;
}

function initialLevel(): LogLevel {
  const v = process.env.DUNIX_LOG;
  return isLogLevel(v) ? v : 'info';
}

let current: LogLevel = initialLevel();
let min: number = levels[current];

export function logLevel(): LogLevel {
  return current;
}

/** The threshold of every logger in this process from now on. */
export function setLogLevel(level: LogLevel): void {
  if (!isLogLevel(level)) throw new RangeError(`log level ${String(level)}: one of ${LOG_LEVELS.join(', ')}`);
  current = level;
  min = levels[level];
}

/** Where default-sink loggers write: stderr, or a file opened by setLogFile. */
let logFile: { path: string; fd: number } | undefined;

const defaultSink = (line: string) => {
  if (logFile) {
    try {
      writeSync(logFile.fd, line);
      return;
    } catch {
      // The file went bad (disk full, fd closed): stderr still tells the story.
    }
  }
  process.stderr.write(line);
};

/**
 * Appends this process's logs to `path` (created 0600: logs name files and
 * users). reopenLogFile() closes and opens it again by name: after logrotate
 * has moved it away (SIGHUP), new lines go to a new file.
 */
export function setLogFile(path: string): void {
  const fd = openSync(path, 'a', 0o600);
  const old = logFile;
  logFile = { path, fd };
  if (old) closeSync(old.fd);
}

export function reopenLogFile(): void {
  if (logFile) setLogFile(logFile.path);
}

function jsonSafe(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Error) return { name: value.name, message: value.message, stack: value.stack };
  return value;
}

export function createLogger(component: string, sink: (line: string) => void = defaultSink): Logger {
  const emit = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => {
    if (levels[level] < min) return;
    sink(`${JSON.stringify({ t: new Date().toISOString(), level, component, msg, ...fields }, jsonSafe)}\n`);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    enabled: (level) => levels[level] >= min,
  };
}

/**
 * What a daemon does on its operator signals: SIGHUP reopens the log file
 * (logrotate's postrotate), SIGUSR2 switches between debug and the level it
 * started with (`kill -USR2 PID` twice: a window of debug logs). Each change
 * is logged at warn so it shows at any level but error.
 */
export function installLogSignals(log: Logger): void {
  const base = current === 'debug' ? 'info' : current;
  process.on('SIGHUP', () => {
    reopenLogFile();
    log.warn('log file reopened (SIGHUP)', { file: logFile?.path ?? 'stderr' });
  });
  process.on('SIGUSR2', () => {
    const next = current === 'debug' ? base : 'debug';
    setLogLevel(next);
    log.warn('log level changed (SIGUSR2)', { logLevel: next });
  });
}
