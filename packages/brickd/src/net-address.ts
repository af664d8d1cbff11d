import net from 'node:net';

/**
 * Where a brick listens and what it tells etcd (`--listen`, `--advertise`,
 * `--data-port`): parsing and the rules, with name resolution injected so
 * the rules are unit-tested without DNS. docs/OPERATIONS.md "Ports and
 * firewall" documents the ports.
 */

/** The brick's gRPC port when `--listen` names none (docs/OPERATIONS.md). */
export const GRPC_PORT_DEFAULT = 7101;
/**
 * The data (frame) port is the gRPC port plus this, unless `--data-port`
 * says otherwise: 7101 -> 8101. Far from the gRPC port: the local launcher
 * gives a host's bricks consecutive gRPC ports (7101, 7102, 7103), and a
 * second cluster beside them starts at 7201 (deploy/README.md).
 */
export const DATA_PORT_OFFSET = 1000;

export interface HostPort {
  /** Without brackets (an IPv6 literal is bare here). */
  host: string;
  port: number;
}

/** HOST:PORT with an IPv6 literal bracketed (`[::1]:7101`), as URLs and gRPC targets want it. */
export function formatHostPort(host: string, port: number): string {
  return `${net.isIPv6(host) ? `[${host}]` : host}:${port}`;
}

const HOSTNAME_RE =
  /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** An IPv4 or IPv6 literal (brackets allowed) or a DNS name; the bare form, or an Error's message. */
export function parseHost(v: string): string {
  const bracketed = /^\[(.*)\]$/.exec(v);
  if (bracketed) {
    if (!net.isIPv6(bracketed[1]!)) throw new Error(`${v} is not an IPv6 address`);
    return bracketed[1]!;
  }
  if (net.isIP(v) || HOSTNAME_RE.test(v)) return v;
  throw new Error(`${JSON.stringify(v)} is neither an IP address nor a host name`);
}

/**
 * HOST:PORT, HOST alone (the default port) or :PORT (loopback); an IPv6
 * literal with a port must be bracketed (`[fd00::1]:7101`).
 */
export function parseListen(v: string): HostPort {
  if (net.isIPv6(v)) return { host: v, port: GRPC_PORT_DEFAULT };
  const m = /^(.*?)(?::([0-9]{1,5}))?$/.exec(v)!;
  const port = m[2] === undefined ? GRPC_PORT_DEFAULT : Number(m[2]);
  if (port > 65535) throw new Error(`port ${port} is past 65535`);
  return { host: m[1] === '' ? '127.0.0.1' : parseHost(m[1]!), port };
}

/** 0.0.0.0 / :: (any address): fine to listen on, meaningless to dial. */
export function isUnspecifiedHost(host: string): boolean {
  return host === '0.0.0.0' || (net.isIPv6(host) && /^[0:]+$/.test(host));
}

/** Resolves a host name to its addresses (dns.lookup with all: true in the daemon). */
export type HostLookup = (host: string) => Promise<string[]>;

export interface BrickAddresses {
  /** Where the servers bind (bare host). */
  listenHost: string;
  listenPort: number;
  /** Port of the frame server; 0 when the gRPC port is 0 (any free one, reported in the port file). */
  dataPort: number;
  /** The host other bricks and clients dial, as registered in etcd (bare; formatHostPort brackets it). */
  advertiseHost: string;
}

/**
 * The rules: an advertised host is one others can dial (never 0.0.0.0 or ::,
 * a name must resolve); listening on any address needs --advertise; the
 * data port follows the gRPC port unless given.
 */
export async function brickAddresses(
  o: { listen: string; advertise?: string; dataPort?: number },
  lookup: HostLookup,
): Promise<BrickAddresses> {
  const listen = parseListen(o.listen);
  if (!isUnspecifiedHost(listen.host) && !net.isIP(listen.host))
    await resolves(listen.host, '--listen', lookup);
  let advertiseHost: string;
  if (o.advertise !== undefined) {
    advertiseHost = parseHost(o.advertise);
    if (isUnspecifiedHost(advertiseHost))
      throw new Error(
        `--advertise ${o.advertise}: the any-address cannot be dialled; give this host's address or name as the others reach it`,
      );
    if (!net.isIP(advertiseHost)) await resolves(advertiseHost, '--advertise', lookup);
  } else if (isUnspecifiedHost(listen.host)) {
    throw new Error(
      `--listen ${o.listen} binds every address: say which one others dial with --advertise HOST`,
    );
  } else advertiseHost = listen.host;
  let dataPort = o.dataPort;
  if (dataPort === undefined) {
    dataPort = listen.port === 0 ? 0 : listen.port + DATA_PORT_OFFSET;
    if (dataPort > 65535)
      throw new Error(
        `--listen port ${listen.port} leaves no default data port (port + ${DATA_PORT_OFFSET}): pass --data-port`,
      );
  }
  if (dataPort !== 0 && dataPort === listen.port)
    throw new Error(`--data-port ${dataPort} is the gRPC port; they must differ`);
  return { listenHost: listen.host, listenPort: listen.port, dataPort, advertiseHost };
}

async function resolves(host: string, flag: string, lookup: HostLookup): Promise<void> {
  let found: string[];
  try {
    found = await lookup(host);
  } catch (err) {
    throw new Error(`${flag} ${host}: the name does not resolve (${(err as Error).message})`);
  }
  if (found.length === 0) throw new Error(`${flag} ${host}: the name resolves to no address`);
}

/** A failure-domain label (`--host`): what placement keeps copies apart by. */
export function parseFailureDomain(v: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$/.test(v))
    throw new Error(`--host ${JSON.stringify(v)}: a failure domain is 1..255 of A-Z a-z 0-9 . _ : -`);
  return v;
}
