import { coordinatorDefaults, validateLeaseTtl } from '@dunix/coord';
import { parseMetricsListen } from '@dunix/proto';
import { dirListingsDefaults } from '../client/dir-listings.js';

/**
 * Arguments of dunixfs and mount.dunixfs: SPEC MOUNTPOINT [-o a,b=c] [-f]
 * [-t dunixfs|fuse.dunixfs] [-s -n -v (ignored, as mount(8) passes them)].
 */
export interface MountArgs {
  spec: string;
  endpoints: string[];
  volume: string;
  mountpoint: string;
  foreground: boolean;
  /** HOST:PORT of the Prometheus /metrics endpoint; undefined: none. */
  metricsListen: string | undefined;
  /** Where to write {"pid","metricsAddress"} once it listens (the port of a port-0 metrics_listen). */
  metricsPortFile: string | undefined;
  attrTtlMs: number;
  entryTtlMs: number;
  /** How long the kernel may cache that a name is not there (0: never); undefined: entryTtlMs. */
  negativeTtlMs: number | undefined;
  /** Lookups in one directory after which it is read whole (dir-listings.ts); 0: never. */
  stataheadLookups: number;
  dialTimeoutMs: number;
  /**
   * How long an operation keeps retrying through failover (a dead or hung
   * primary, placement changes) before it fails with ETIMEDOUT.
   */
  failoverTimeoutMs: number;
  /** Kernel readahead window of the mount. */
  readAheadKb: number;
  /**
   * TTL of the session lease the mount record is bound to: a killed client
   * is forgotten (`dunixctl volume mounts`) within about this long.
   */
  sessionTtlMs: number;
  /** Where mount.dunixfs sends the client's log. */
  logFile: string | undefined;
  /** Options passed on to the kernel mount (ro, noatime, ...). */
  extra: string;
  /** Mutual TLS to the bricks: a directory from `dunixctl cert issue --client NAME`. */
  tlsDir: string | undefined;
  /** Plain TCP to loopback bricks, said explicitly (development). */
  insecure: boolean;
  /** etcd's own CA, certificate and key (all three), when not the tls_dir's. */
  etcdCa: string | undefined;
  etcdCert: string | undefined;
  etcdKey: string | undefined;
}

/** Options fstab/mount(8) may pass that concern mount(8) itself, not the kernel. */
const USERSPACE_ONLY = new Set([
  'defaults',
  'auto',
  'noauto',
  'user',
  'nouser',
  'users',
  '_netdev',
  'nofail',
  'rw',
]);
const KERNEL_PASSTHROUGH = new Set([
  'ro',
  'noatime',
  'relatime',
  'strictatime',
  'nodiratime',
  'nosuid',
  'nodev',
  'noexec',
  'suid',
  'dev',
  'exec',
  'sync',
  'async',
  'dirsync',
]);

/**
 * Filesystem types we answer to: `dunixfs` (fstab, `mount -t dunixfs`) and
 * `fuse.dunixfs`, the type the kernel shows (findmnt) and fstab generators
 * write; mount(8) passes `-t TYPE` to a helper when the type has a subtype.
 */
export const FS_TYPES = ['dunixfs', 'fuse.dunixfs'] as const;

/** Usage text of dunixfs (foreground client) and mount.dunixfs (mount(8) helper). */
export function mountUsage(prog: 'dunixfs' | 'mount.dunixfs'): string {
  const what =
    prog === 'dunixfs'
      ? 'Mounts a dunixfs volume and serves it in the foreground until it is unmounted.'
      : 'mount(8) helper: starts the dunixfs client in the background and returns once the mount is live.';
  return `usage: ${prog} ETCD_HOST:PORT[,HOST:PORT...]/VOLUME MOUNTPOINT [-o OPTIONS] [-f] [-t TYPE]

${what}

  -o OPTIONS   comma-separated mount options:
                 attr_ttl_ms=MS, entry_ttl_ms=MS     kernel attribute/entry cache (default 10000; changes elsewhere are pushed)
                 negative_ttl_ms=MS                   kernel cache of names not there (default entry_ttl_ms; 0 = never)
                 statahead_lookups=N                  read a directory whole after N lookups in it (default ${dirListingsDefaults.lookupsBeforeRead}; 0 = never)
                 dial_timeout_ms=MS                   etcd connect timeout (default 10000)
                 failover_timeout_ms=MS               how long an op rides out a failover (default 60000, min 1000)
                 read_ahead_kb=KB                     kernel readahead window (default 32768)
                 metrics_listen=HOST:PORT             serve Prometheus metrics at http://HOST:PORT/metrics (default off)
                 metrics_port_file=FILE               write {"pid","metricsAddress"} there once listening
                 session_ttl_ms=MS                    lease of the mount record: a killed client is forgotten
                                                      within it (default ${coordinatorDefaults.mountLeaseTtlMs}, whole seconds, min 2000)
                 log=FILE                             client log of mount.dunixfs (default /var/log/dunixfs/<dir>.log)
                 tls_dir=DIR                          mutual TLS to the bricks: ca.crt, tls.crt, tls.key of
                                                      \`dunixctl cert issue --client NAME\`
                 insecure                             plain TCP to loopback bricks (development; the default
                                                      without tls_dir, logged loudly)
                 etcd_ca=FILE,etcd_cert=FILE,etcd_key=FILE
                                                      certificate for etcd (default: tls_dir's); etcd
                                                      endpoints are https with one, plain http (loopback
                                                      only) without
                 ${[...KERNEL_PASSTHROUGH].join(', ')}
                                                      passed to the kernel
                 ${[...USERSPACE_ONLY].join(', ')}, x-*, comment=*
                                                      accepted, ignored (mount(8) and fstab)
  -f           stay in the foreground
  -t TYPE      ${FS_TYPES.join(' or ')} (as mount(8) passes it)
  -s -n -v -w  accepted and ignored (mount(8) passes them); -r mounts read-only
  -h, --help   this text
  -V, --version
               print the version and exit

Examples:
  mount -t dunixfs 127.0.0.1:2379/dunix /mnt/dunix
  mount -t fuse.dunixfs 127.0.0.1:2379/dunix /mnt/dunix
  fstab: 127.0.0.1:2379/dunix  /mnt/dunix  fuse.dunixfs  defaults,_netdev  0 0
`;
}

/** True when argv asks for the version (-V, --version), whatever else it holds. */
export function wantsVersion(argv: string[]): boolean {
  return argv.some((a) => a === '-V' || a === '--version');
}

/** True when argv asks for the usage text (-h, --help), whatever else it holds. */
export function wantsHelp(argv: string[]): boolean {
  return argv.some((a) => a === '-h' || a === '--help');
}

function ms(name: string, v: string, minMs = 0): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isInteger(n) || n < minMs || n > 86_400_000)
    throw new Error(`${name} must be ${minMs}..86400000 ms`);
  return n;
}

/**
 * A floor that fits a failover after a crash (about 1 s); riding out a hung
 * primary takes longer than the bricks' lease TTL (2..10 s).
 */
const FAILOVER_TIMEOUT_MIN_MS = 1000;

export function parseSpec(spec: string): { endpoints: string[]; volume: string } {
  // HOST:PORT[,HOST:PORT]/VOLUME, also HOST:PORT:/VOLUME (the design's form).
  // Endpoints may carry a scheme (https://HOST:PORT): the volume is after the last slash.
  const m = /^((?:(?:https?:\/\/)?[^/,]+,)*(?:https?:\/\/)?[^/,]+?):?\/([a-z0-9][a-z0-9_-]{0,62})$/.exec(
    spec,
  );
  if (!m) throw new Error(`bad source ${JSON.stringify(spec)}: expected HOST:PORT[,HOST:PORT...]/VOLUME`);
  // The scheme, when absent, follows whether etcd certificates are given (resolveEtcd in coord).
  const endpoints = m[1]!.split(',').map((hp) => {
    const h = /^(https?:\/\/)?([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]):(\d{1,5})$/.exec(hp);
    if (!h || Number(h[3]) > 65535) throw new Error(`bad etcd endpoint ${JSON.stringify(hp)}`);
    return `${h[1] ?? ''}${h[2]}:${h[3]}`;
  });
  return { endpoints, volume: m[2]! };
}

export function parseMountArgs(argv: string[]): MountArgs {
  const positional: string[] = [];
  const opts: string[] = [];
  let foreground = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-o') {
      const v = argv[++i];
      if (v === undefined) throw new Error('-o needs a value');
      opts.push(...v.split(',').filter(Boolean));
    } else if (a.startsWith('-o') && a.length > 2) opts.push(...a.slice(2).split(',').filter(Boolean));
    else if (a === '-f' || a === '--foreground') foreground = true;
    else if (a === '-t' || (a.startsWith('-t') && a.length > 2)) {
      const type = a === '-t' ? argv[++i] : a.slice(2);
      if (type === undefined) throw new Error('-t needs a filesystem type');
      if (!(FS_TYPES as readonly string[]).includes(type))
        throw new Error(
          `unsupported filesystem type ${JSON.stringify(type)}: expected ${FS_TYPES.join(' or ')}`,
        );
    } else if (a === '-N') throw new Error('-N (mount namespaces) is not supported');
    else if (a === '-s' || a === '-n' || a === '-v' || a === '-r' || a === '-w') {
      if (a === '-r') opts.push('ro');
    } else if (a.startsWith('-')) throw new Error(`unknown option ${a}`);
    else positional.push(a);
  }
  if (positional.length !== 2)
    throw new Error('usage: dunixfs HOST:PORT/VOLUME MOUNTPOINT [-o options] [-f] (--help for more)');
  const [spec, mountpoint] = positional as [string, string];
  const { endpoints, volume } = parseSpec(spec);
  const out: MountArgs = {
    spec,
    endpoints,
    volume,
    mountpoint,
    foreground,
    metricsListen: undefined,
    metricsPortFile: undefined,
    // Long, because bricks push invalidations: a change elsewhere is seen at once anyway (coherent caches).
    attrTtlMs: 10_000,
    entryTtlMs: 10_000,
    negativeTtlMs: undefined,
    stataheadLookups: dirListingsDefaults.lookupsBeforeRead,
    dialTimeoutMs: 10_000,
    failoverTimeoutMs: 60_000,
    readAheadKb: 32768,
    sessionTtlMs: coordinatorDefaults.mountLeaseTtlMs,
    logFile: undefined,
    extra: '',
    tlsDir: undefined,
    insecure: false,
    etcdCa: undefined,
    etcdCert: undefined,
    etcdKey: undefined,
  };
  const extra: string[] = [];
  for (const o of opts) {
    const [k, v] = o.includes('=')
      ? [o.slice(0, o.indexOf('=')), o.slice(o.indexOf('=') + 1)]
      : [o, undefined];
    if (k === 'attr_ttl_ms' && v !== undefined) out.attrTtlMs = ms(k, v);
    else if (k === 'entry_ttl_ms' && v !== undefined) out.entryTtlMs = ms(k, v);
    else if (k === 'negative_ttl_ms' && v !== undefined) out.negativeTtlMs = ms(k, v);
    else if (k === 'statahead_lookups' && v !== undefined) {
      const n = Number(v);
      if (!/^[0-9]+$/.test(v) || n > 1_000_000) throw new Error('statahead_lookups must be 0..1000000');
      out.stataheadLookups = n;
    } else if (k === 'metrics_listen' && v) out.metricsListen = (parseMetricsListen(v), v);
    else if (k === 'metrics_port_file' && v) out.metricsPortFile = v;
    else if (k === 'dial_timeout_ms' && v !== undefined) out.dialTimeoutMs = ms(k, v);
    else if (k === 'failover_timeout_ms' && v !== undefined)
      out.failoverTimeoutMs = ms(k, v, FAILOVER_TIMEOUT_MIN_MS);
    else if (k === 'read_ahead_kb' && v !== undefined) {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0 || n > 1024 * 1024)
        throw new Error('read_ahead_kb must be 0..1048576');
      out.readAheadKb = n;
    } else if (k === 'session_ttl_ms' && v !== undefined) {
      const n = ms(k, v);
      try {
        out.sessionTtlMs = validateLeaseTtl(n, coordinatorDefaults.keepaliveIntervalMs);
      } catch (err) {
        throw new Error(`session_ttl_ms: ${(err as Error).message}`);
      }
    } else if (k === 'log' && v !== undefined) out.logFile = v;
    else if (k === 'tls_dir' && v) out.tlsDir = v;
    else if (k === 'insecure' && v === undefined) out.insecure = true;
    else if (k === 'etcd_ca' && v) out.etcdCa = v;
    else if (k === 'etcd_cert' && v) out.etcdCert = v;
    else if (k === 'etcd_key' && v) out.etcdKey = v;
    else if (k === 'foreground') out.foreground = true;
    else if (USERSPACE_ONLY.has(k!) || k!.startsWith('x-') || k!.startsWith('comment=')) continue;
    else if (KERNEL_PASSTHROUGH.has(k!)) extra.push(o);
    else throw new Error(`unknown mount option ${JSON.stringify(o)}`);
  }
  out.extra = extra.join(',');
  if (out.tlsDir && out.insecure) throw new Error('tls_dir and insecure exclude each other');
  return out;
}
