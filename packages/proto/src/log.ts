/**
 * Structured logs: one JSON object per line on stderr, each with a component.
 * DUNIX_LOG=debug|info|warn|error picks the threshold (default info).
 */
const levels = { debug: 10, info: 20, warn: 30, error: 40 } as const;
export type LogLevel = keyof typeof levels;

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  enabled(level: LogLevel): boolean;
}

function threshold(): number {
  const v = process.env.DUNIX_LOG as LogLevel | undefined;
  return v && v in levels ? levels[v] : levels.info;
}

function jsonSafe(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Error) return { name: value.name, message: value.message, stack: value.stack };
  return value;
}

export function createLogger(
  component: string,
  sink: (line: string) => void = (l) => process.stderr.write(l),
): Logger {
  const min = threshold();
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
