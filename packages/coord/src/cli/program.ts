import { Command, CommanderError, InvalidArgumentError } from 'commander';
import {
  createLogger,
  DUNIX_VERSION,
  errorTable,
  FsError,
  INSECURE_TRANSPORT,
  loadTlsDir,
  type Logger,
} from '@dunix/proto';
import type { Coordinator } from '../coordinator.js';
import { EtcdCoordinator } from '../etcd-coordinator.js';
import { loadEtcdTls, resolveEtcd } from '../etcd-security.js';
import { withTimeout } from '../etcd-kv.js';
import { renderDf, volumeDf } from './df.js';
import {
  etcdAuthEnable,
  etcdUserAdd,
  grantVolumeToClients,
  renderEtcdAuthEnable,
  renderEtcdUserAdd,
  revokeVolumeFromClients,
} from './etcd-auth.js';
import {
  caInit,
  certIssue,
  DEFAULT_CA_DIR,
  renderCaInit,
  renderCertIssue,
  type CertIssueArgs,
} from './cert.js';
import {
  brickAdd,
  brickDrain,
  brickList,
  brickRemove,
  brickSetWeight,
  renderBrickChange,
  renderBrickList,
  renderBrickRemove,
} from './brick.js';
import {
  type RebalanceAction,
  rebalanceAction,
  rebalanceStart,
  rebalanceStatus,
  type RebalanceStatusResult,
  renderRebalanceAction,
  renderRebalanceStart,
  renderRebalanceStatus,
  watchRebalance,
} from './rebalance.js';
import {
  renderScrubSchedule,
  renderScrubStart,
  renderScrubStatus,
  renderScrubStop,
  scrubSchedule,
  scrubStart,
  scrubStatus,
  scrubStop,
} from './scrub.js';
import {
  renderVolumeCreate,
  renderVolumeList,
  renderVolumeSet,
  renderVolumeStatus,
  volumeCreate,
  volumeList,
  volumeSet,
  volumeStatus,
  volumeStatusExitCode,
} from './volume.js';
import { renderVolumeDelete, renderVolumeMounts, volumeDelete, volumeMounts } from './volume-lifecycle.js';
import { renderWatchTarget, watchChanges, watchTarget, type WatchTarget } from './watch.js';

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
  /** Where `--watch` draws its progress bar (default process.stdout): in place on a terminal, a line per poll otherwise. */
  progress?: NodeJS.WritableStream;
  /** Calls `stop` on an interrupt (default: SIGINT); returns the unsubscribe. */
  onInterrupt?(stop: () => void): () => void;
}

function onSigint(stop: () => void): () => void {
  const handler = () => stop();
  process.on('SIGINT', handler);
  return () => void process.removeListener('SIGINT', handler);
}

/** No scheme: https with a certificate (--tls-dir, DUNIX_TLS_DIR), http (loopback only) without. */
export const DEFAULT_ETCD = '127.0.0.1:2379';
export const DEFAULT_TIMEOUT_MS = 5000;

function intArg(name: string) {
  return (v: string): number => {
    if (!/^[0-9]+$/.test(v) || !Number.isSafeInteger(Number(v))) {
      throw new InvalidArgumentError(`${name} must be a non-negative integer`);
    }
    return Number(v);
  };
}

/** A number in min..max (decimals allowed). */
function numArg(name: string, min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^[0-9]+(\.[0-9]+)?$/.test(v) || !(n >= min && n <= max)) {
      throw new InvalidArgumentError(`${name} must be a number in ${min}..${max}`);
    }
    return n;
  };
}

/** An integer in min..max. */
function rangeArg(name: string, min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^[0-9]+$/.test(v) || !(n >= min && n <= max)) {
      throw new InvalidArgumentError(`${name} must be an integer in ${min}..${max}`);
    }
    return n;
  };
}

const weightArg = numArg('weight', 0, 1e6);

interface GlobalOpts {
  etcd: string;
  tlsDir?: string;
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
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
    .version(`dunixctl ${DUNIX_VERSION}`, '-V, --version', 'print the version and exit')
    .option('--etcd <urls>', 'etcd endpoints, comma-separated', process.env.DUNIX_ETCD ?? DEFAULT_ETCD)
    .option(
      '--tls-dir <dir>',
      'certificate for an etcd with client-certificate auth: a directory from `dunixctl cert issue` ' +
        '(ca.crt, tls.crt, tls.key); endpoints then default to https',
      process.env.DUNIX_TLS_DIR,
    )
    .option('--etcd-ca <file>', "etcd's CA (with --etcd-cert and --etcd-key; instead of --tls-dir)")
    .option('--etcd-cert <file>', 'client certificate to present to etcd')
    .option('--etcd-key <file>', 'its key (mode 0600)')
    .option('--json', 'print JSON instead of a table')
    .option('--timeout <ms>', 'give up after this many milliseconds', intArg('--timeout'), DEFAULT_TIMEOUT_MS)
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout(s), writeErr: (s) => io.stderr(s) });

  let action: ((coord: Coordinator) => Promise<string | object>) | undefined;
  let render: ((data: never) => string) | undefined;
  let exitCode: ((data: never) => number) | undefined;
  /** Runs after the first result instead of printing it (--watch); returns the exit code. */
  let follow:
    | ((
        coord: Coordinator,
        data: never,
        g: GlobalOpts,
        bound: <T>(p: Promise<T>) => Promise<T>,
      ) => Promise<number>)
    | undefined;

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
        action = async (c) => {
          const r = await volumeCreate(c, { name, ...o });
          await grantVolumeToClients(c, name);
          return r;
        };
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

  volume
    .command('set <name> <option> <value>')
    .description(
      'change a volume option: min_insync (integer 1..replicas) or down_out_interval ' +
        '(90s, 5m, 1h or milliseconds: how long a brick may be down before its PGs are re-created elsewhere)',
    )
    .action((name: string, option: string, value: string) => {
      action = (c) => volumeSet(c, name, option, value);
      render = renderVolumeSet as (d: never) => string;
    });

  volume
    .command('mounts <name>')
    .description('list the clients that have the volume mounted (their session records)')
    .action((name: string) => {
      action = (c) => volumeMounts(c, name);
      render = renderVolumeMounts as (d: never) => string;
    });

  volume
    .command('delete <name>')
    .description(
      'delete the volume from the control plane (every key, in one transaction); refused while it is ' +
        'mounted or a brick of it runs: unmount, stop its brickd processes, then delete (brick data stays on disk)',
    )
    .option(
      '--force',
      'delete even while mounted or bricks run: mounts then fail with EIO, bricks stop and exit',
    )
    .action((name: string, o: { force?: boolean }) => {
      action = async (c) => {
        const r = await volumeDelete(c, name, { force: !!o.force });
        await revokeVolumeFromClients(c, name);
        return r;
      };
      render = renderVolumeDelete as (d: never) => string;
    });

  const etcd = program.command('etcd').description("etcd's users and roles (RBAC) for dunix");
  etcd
    .command('auth')
    .description('access control in etcd')
    .command('enable [users...]')
    .description(
      'create the dunix roles (bricks: every key; clients: read, and write their mount records and ' +
        'suspect reports), the users named (brick:NAME, client:NAME, admin:NAME: certificate CNs), then turn ' +
        'etcd auth on; may be run again (as an admin) to add users and re-grant every volume',
    )
    .action((users: string[]) => {
      action = (c) => etcdAuthEnable(c, users);
      render = renderEtcdAuthEnable as (d: never) => string;
    });
  etcd
    .command('user')
    .description('etcd users (one per certificate CN)')
    .command('add <users...>')
    .description('add users brick:NAME, client:NAME or admin:NAME with their role')
    .action((users: string[]) => {
      action = (c) => etcdUserAdd(c, users);
      render = renderEtcdUserAdd as (d: never) => string;
    });

  const rebalance = volume
    .command('rebalance')
    .description('move PG replicas toward the target placement (after brick add, set-weight)');
  rebalance
    .command('start <name>')
    .description('start moving every PG whose bricks differ from the target placement')
    .option(
      '--max-mib-per-s <n>',
      'backfill MiB/s per brick (0: no limit)',
      numArg('--max-mib-per-s', 0, 1e6),
      64,
    )
    .option('--max-concurrent <n>', 'PGs moved at once', rangeArg('--max-concurrent', 1, 1024), 4)
    .option('--restart', 'replace a rebalance that is running or paused')
    .action((name: string, o: { maxMibPerS: number; maxConcurrent: number; restart?: boolean }) => {
      action = (c) =>
        rebalanceStart(c, name, {
          maxMiBPerS: o.maxMibPerS,
          maxConcurrent: o.maxConcurrent,
          restart: !!o.restart,
        });
      render = renderRebalanceStart as (d: never) => string;
    });
  for (const [verb, what] of [
    ['pause', 'pause the running rebalance (PGs mid-move finish their step)'],
    ['resume', 'resume a paused rebalance'],
    ['stop', 'stop the rebalance for good (drains go on without one)'],
  ] as const) {
    rebalance
      .command(`${verb} <name>`)
      .description(what)
      .action((name: string) => {
        action = (c) => rebalanceAction(c, name, verb as RebalanceAction);
        render = renderRebalanceAction as (d: never) => string;
      });
  }
  rebalance
    .command('status <name>')
    .description('progress of the rebalance, drains and heal: PGs done, rate, bytes left, ETA, slowest PG')
    .option('--watch', 'redraw until no rebalance runs and nothing drains or heals (Ctrl-C stops)')
    .option('--interval <ms>', 'poll interval of --watch', rangeArg('--interval', 100, 3_600_000), 1000)
    .action((name: string, o: { watch?: boolean; interval: number }) => {
      action = (c) => rebalanceStatus(c, name);
      render = renderRebalanceStatus as (d: never) => string;
      if (o.watch) {
        follow = ((c: Coordinator, first: RebalanceStatusResult, g: GlobalOpts, bound) =>
          watchRebalance(c, name, first, {
            intervalMs: o.interval,
            timeoutMs: g.timeout,
            json: !!g.json,
            write: (text) => io.stdout(text),
            stream: io.progress ?? process.stdout,
            onInterrupt: io.onInterrupt ?? onSigint,
            bound,
          })) as typeof follow;
      }
    });

  const scrub = volume
    .command('scrub')
    .description(
      'verify every chunk of every block on every copy and compare the copies of each PG; ' +
        'a bad or missing copy is repaired from a good one',
    );
  scrub
    .command('start <name>')
    .description("start a scrub of every PG (each PG's primary does its own, in the background)")
    .option(
      '--max-mib-per-s <n>',
      "scrub reads MiB/s per brick (0: no limit; default: each brick's scrubBytesPerS)",
      numArg('--max-mib-per-s', 0, 1e6),
    )
    .option('--restart', 'replace a scrub that is running')
    .action((name: string, o: { maxMibPerS?: number; restart?: boolean }) => {
      action = (c) => scrubStart(c, name, { maxMiBPerS: o.maxMibPerS, restart: !!o.restart });
      render = renderScrubStart as (d: never) => string;
    });
  scrub
    .command('stop <name>')
    .description('stop the running scrub (PGs done keep their results)')
    .action((name: string) => {
      action = (c) => scrubStop(c, name);
      render = renderScrubStop as (d: never) => string;
    });
  scrub
    .command('status <name>')
    .description(
      'state, PGs done, bytes verified and rate, problems found, repaired and unrecoverable (PG, inode, block)',
    )
    .action((name: string) => {
      action = (c) => scrubStatus(c, name);
      render = renderScrubStatus as (d: never) => string;
    });
  scrub
    .command('schedule <name> <interval>')
    .description('scrub on its own every INTERVAL (e.g. 7d, 12h), or off, or default (7d)')
    .action((name: string, interval: string) => {
      action = (c) => scrubSchedule(c, name, interval);
      render = renderScrubSchedule as (d: never) => string;
    });

  program
    .command('df <volume>')
    .description(
      'space of each brick (capacity, used, free, state) and of the volume: raw, and usable (one copy of each byte)',
    )
    .action((name: string) => {
      action = (c) => volumeDf(c, name);
      render = renderDf as (d: never) => string;
    });

  program
    .command('watch <path>')
    .description(
      'stream the changes of one directory (names made, removed, renamed) or file (attributes, data) on a dunixfs mount, one line each, until Ctrl-C',
    )
    .option('--volume <name>', 'the volume (default: that of the dunixfs mount holding PATH)')
    .action((path: string, o: { volume?: string }) => {
      action = async () => watchTarget(path, o.volume);
      render = renderWatchTarget as (d: never) => string;
      follow = (async (c: Coordinator, first: WatchTarget, g: GlobalOpts) => {
        return watchChanges(c, first, {
          json: !!g.json,
          write: (text) => io.stdout(text),
          onInterrupt: io.onInterrupt ?? onSigint,
          // The bricks are dialled with the client certificate of --tls-dir, as a mount's are.
          security: g.tlsDir ? await loadTlsDir(g.tlsDir, 'client') : INSECURE_TRANSPORT,
          log: createLogger('dunixctl'),
        });
      }) as typeof follow;
    });

  const brick = program.command('brick').description("add, drain, weigh and remove a volume's bricks");
  brick
    .command('list <volume>')
    .description('bricks with their role, weight, PGs held and PGs the target placement gives them')
    .action((name: string) => {
      action = (c) => brickList(c, name);
      render = renderBrickList as (d: never) => string;
    });
  brick
    .command('add <volume> <brick>')
    .description('let a registered brick (brickd --volume) hold PGs; a rebalance then moves PGs onto it')
    .option('--weight <w>', 'relative capacity (default: the weight it registered with)', weightArg)
    .action((name: string, id: string, o: { weight?: number }) => {
      action = (c) => brickAdd(c, name, id, o.weight);
      render = renderBrickChange as (d: never) => string;
    });
  brick
    .command('drain <volume> <brick>')
    .description('move every PG replica off a brick (then it can be removed)')
    .action((name: string, id: string) => {
      action = (c) => brickDrain(c, name, id);
      render = renderBrickChange as (d: never) => string;
    });
  brick
    .command('set-weight <volume> <brick>')
    .argument('<weight>', 'relative capacity, 0..1000000', weightArg)
    .description("change a brick's relative capacity; a rebalance then moves PGs to match")
    .action((name: string, id: string, weight: number) => {
      action = (c) => brickSetWeight(c, name, id, weight);
      render = renderBrickChange as (d: never) => string;
    });
  brick
    .command('remove <volume> <brick>')
    .description('forget a brick that holds no PG replicas and is stopped')
    .action((name: string, id: string) => {
      action = (c) => brickRemove(c, name, id);
      render = renderBrickRemove as (d: never) => string;
    });

  /** A command run on this host alone (no etcd): the CA and certificates. */
  let local: (() => Promise<object>) | undefined;
  const dirOption = [
    '--dir <dir>',
    'directory of the cluster CA',
    process.env.DUNIX_CA_DIR ?? DEFAULT_CA_DIR,
  ] as const;
  program
    .command('ca')
    .description('the cluster certificate authority (mutual TLS between clients and bricks)')
    .command('init')
    .description('create the cluster CA: DIR/ca.crt and DIR/ca.key (0600)')
    .option(...dirOption)
    .option('--days <n>', 'validity in days', rangeArg('--days', 1, 36500))
    .option('--force', 'replace an existing CA (every certificate must then be issued again)')
    .action((o: { dir: string; days?: number; force?: boolean }) => {
      local = () => caInit(o.dir, o);
      render = renderCaInit as (d: never) => string;
    });
  program
    .command('cert')
    .description('certificates signed by the cluster CA')
    .command('issue')
    .description(
      'issue a brick or client certificate into DIR/bricks/NAME or DIR/clients/NAME (ca.crt, tls.crt, tls.key 0600); ' +
        'the role and the client policy are in the certificate',
    )
    .option(...dirOption)
    .option('--brick <name>', 'a brick certificate (may call brick-to-brick RPCs)')
    .option('--client <name>', 'a client certificate (namespace and data RPCs only)')
    .option(
      '--admin <name>',
      "dunixctl's certificate (into DIR/admins/NAME): a client to the bricks, etcd's root",
    )
    .option('--etcd-server <name>', "an etcd member's server and peer certificate (into DIR/etcd/NAME)")
    .option('--squash-root', 'client policy: uid and gid 0 are served as nobody (65534)')
    .option(
      '--uid-range <a-b>',
      'client policy: calls with a uid outside A..B are refused (nobody is allowed)',
    )
    .option(
      '--san <list>',
      'brick, etcd: more host names or IPs it serves on, comma-separated (loopback always)',
    )
    .option('--days <n>', 'validity in days', rangeArg('--days', 1, 36500))
    .option('--force', 'replace an existing certificate of that name')
    .action((o: CertIssueArgs & { dir: string }) => {
      local = () => certIssue(o.dir, o);
      render = renderCertIssue as (d: never) => string;
    });

  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 1;
    throw e;
  }
  if (local && render) {
    const json = !!program.opts<GlobalOpts>().json;
    try {
      const data = await local();
      io.stdout(json ? `${JSON.stringify(data, null, 2)}\n` : render(data as never));
      return 0;
    } catch (e) {
      io.stderr(`dunixctl: ${oneLine(e)}\n`);
      return 1;
    }
  }
  if (!action || !render) {
    io.stderr(program.helpInformation());
    return 1;
  }
  const g = program.opts<GlobalOpts>();
  const log = createLogger('dunixctl');
  let coord: Coordinator | undefined;
  try {
    const listed = g.etcd
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    const { endpoints, tls } = io.connect
      ? { endpoints: listed, tls: undefined }
      : resolveEtcd(
          listed,
          await loadEtcdTls({ tlsDir: g.tlsDir, ca: g.etcdCa, cert: g.etcdCert, key: g.etcdKey }),
        );
    coord = io.connect
      ? io.connect(endpoints, g.timeout, log)
      : new EtcdCoordinator({
          endpoints,
          tls,
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
    if (follow) return await follow(c, data as never, g, (p) => withTimeout(p, g.timeout + 1000, 'dunixctl'));
    io.stdout(g.json ? `${JSON.stringify(data, null, 2)}\n` : render(data as never));
    return exitCode ? exitCode(data as never) : 0;
  } catch (e) {
    io.stderr(`dunixctl: ${oneLine(e)}\n`);
    return 1;
  } finally {
    await coord?.stop().catch(() => undefined);
  }
}
