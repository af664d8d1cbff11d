import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { createLogger, errorTable, FsError, type Logger } from '@dunix/proto';
import type { Coordinator } from '../coordinator.js';
import { EtcdCoordinator } from '../etcd-coordinator.js';
import { withTimeout } from '../etcd-kv.js';
import {
  renderVolumeCreate,
  renderVolumeList,
  renderVolumeStatus,
  volumeCreate,
  volumeList,
  volumeStatus,
  volumeStatusExitCode,
} from './volume.js';

/**
 * dunixctl: the admin CLI. `run` parses argv, runs one handler against the
 * coordinator, prints its result (a table, or JSON with --json) and returns
 * the exit code: 0, or 1 with one line on stderr, or a command's own status
 * (`volume status`: 2 when a PG is unavailable). Nothing waits longer than
 * --timeout.
 */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  /** Makes the coordinator (tests pass a MemoryCoordinator). */
  connect?(endpoints: string[], timeoutMs: number, log: Logger): Coordinator;
}

export const DEFAULT_ETCD = 'http://127.0.0.1:2379';
export const DEFAULT_TIMEOUT_MS = 5000;

function intArg(name: string) {
  return (v: string): number => {
    if (!/^[0-9]+$/.test(v) || !Number.isSafeInteger(Number(v))) {
      throw new InvalidArgumentError(`${name} must be a non-negative integer`);
    }
    return Number(v);
  };
}

interface GlobalOpts {
  etcd: string;
  json?: boolean;
  timeout: number;
}

/** The error as one line; an FsError shows its detail (the table's summary would mislead here). */
export function oneLine(e: unknown): string {
  let text = e instanceof Error ? e.message : String(e);
  if (e instanceof FsError) {
    const summary = `${errorTable[e.code].summary}: `;
    if (text.startsWith(summary)) text = text.slice(summary.length);
  }
  return text
    .replace(/\s+/g, ' ')
    .replace(/ Resolution note:.*$/, '')
    .trim();
}

export async function run(argv: string[], io: CliIo): Promise<number> {
  const program = new Command('dunixctl')
    .description('dunixfs administration')
    .option('--etcd <urls>', 'etcd endpoints, comma-separated', process.env.DUNIX_ETCD ?? DEFAULT_ETCD)
    .option('--json', 'print JSON instead of a table')
    .option('--timeout <ms>', 'give up after this many milliseconds', intArg('--timeout'), DEFAULT_TIMEOUT_MS)
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout(s), writeErr: (s) => io.stderr(s) });

  let action: ((coord: Coordinator) => Promise<string | object>) | undefined;
  let render: ((data: never) => string) | undefined;
  let exitCode: ((data: never) => number) | undefined;

  const volume = program.command('volume').description('create and inspect volumes');
  volume
    .command('create <name>')
    .description('create a volume over the bricks registered for it')
    .option('--pgs <n>', 'placement groups (power of two)', intArg('--pgs'))
    .option('--replicas <n>', 'copies of each PG', intArg('--replicas'))
    .option(
      '--min-insync <n>',
      'in-sync copies a PG needs to accept writes (1..replicas; default min(2, replicas))',
      intArg('--min-insync'),
    )
    .option('--block-size <bytes>', 'block size (multiple of 64 KiB)', intArg('--block-size'))
    .option('--inline-max <bytes>', 'largest file stored inline', intArg('--inline-max'))
    .action(
      (
        name: string,
        o: { pgs?: number; replicas?: number; minInsync?: number; blockSize?: number; inlineMax?: number },
      ) => {
        action = (c) => volumeCreate(c, { name, ...o });
        render = renderVolumeCreate as (d: never) => string;
      },
    );
  volume
    .command('list')
    .description('list volumes')
    .action(() => {
      action = (c) => volumeList(c);
      render = renderVolumeList as (d: never) => string;
    });
  volume
    .command('status <name>')
    .description(
      'in-sync health of the PGs, bricks (alive/dead, PGs as primary and replica), recovery; ' +
        'exits 2 when a PG is unavailable',
    )
    .action((name: string) => {
      action = (c) => volumeStatus(c, name);
      render = renderVolumeStatus as (d: never) => string;
      exitCode = volumeStatusExitCode as (d: never) => number;
    });

  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 1;
    throw e;
  }
  if (!action || !render) {
    io.stderr(program.helpInformation());
    return 1;
  }
  const g = program.opts<GlobalOpts>();
  const endpoints = g.etcd
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const log = createLogger('dunixctl');
  let coord: Coordinator | undefined;
  try {
    coord = io.connect
      ? io.connect(endpoints, g.timeout, log)
      : new EtcdCoordinator({
          endpoints,
          dialTimeoutMs: Math.max(100, g.timeout),
          knobs: { rpcTimeoutMs: Math.max(100, g.timeout) },
          log,
        });
    const c = coord;
    const data = await withTimeout(
      (async () => {
        await c.start();
        return action!(c);
      })(),
      g.timeout + 1000,
      'dunixctl',
    );
    io.stdout(g.json ? `${JSON.stringify(data, null, 2)}\n` : render(data as never));
    return exitCode ? exitCode(data as never) : 0;
  } catch (e) {
    io.stderr(`dunixctl: ${oneLine(e)}\n`);
    return 1;
  } finally {
    await coord?.stop().catch(() => undefined);
  }
}
