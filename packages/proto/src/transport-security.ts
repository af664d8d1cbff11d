import * as grpc from '@grpc/grpc-js';
import { readFile, stat } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { join } from 'node:path';
import { FsError } from './errors.js';
import type { Logger } from './log.js';
import { identityFromCertificate, type PeerIdentity, type PeerRole } from './peer-identity.js';

/**
 * How a process's brick connections are secured, both ends and both
 * transports (frames and gRPC): mutual TLS with the cluster CA, or
 * `insecure` (plain TCP, loopback only, for development; logged loudly).
 *
 * A TLS directory (`--tls-dir`, mount option `tls_dir`) holds what
 * `dunixctl cert issue` writes: `ca.crt` (the cluster CA), `tls.crt` (this
 * process's certificate) and `tls.key` (its key, mode 0600).
 */
export type TransportSecurity =
  | {
      kind: 'tls';
      ca: Buffer;
      cert: Buffer;
      key: Buffer;
      /** What our own certificate says (role, name, policy). */
      self: PeerIdentity & { kind: 'certificate' };
      dir: string;
    }
  | { kind: 'insecure' };

export const INSECURE_TRANSPORT: TransportSecurity = Object.freeze({ kind: 'insecure' });

export const TLS_FILES = { ca: 'ca.crt', cert: 'tls.crt', key: 'tls.key' } as const;

/**
 * Loads a TLS directory and checks it: the three files present, the key not
 * readable by group or others, the certificate issued by the CA and valid
 * now, and of `role` when given (a brick needs a brick certificate).
 */
export async function loadTlsDir(dir: string, role?: PeerRole): Promise<TransportSecurity & { kind: 'tls' }> {
  const read = async (name: string) => {
    try {
      return await readFile(join(dir, name));
    } catch (err) {
      throw new Error(`TLS directory ${dir}: cannot read ${name}: ${(err as Error).message}`);
    }
  };
  const [ca, cert, key] = await Promise.all([read(TLS_FILES.ca), read(TLS_FILES.cert), read(TLS_FILES.key)]);
  const mode = (await stat(join(dir, TLS_FILES.key))).mode & 0o777;
  if (mode & 0o077)
    throw new Error(
      `TLS directory ${dir}: ${TLS_FILES.key} has mode 0${mode.toString(8)}; it must not be readable by group or others (chmod 600)`,
    );
  let x: X509Certificate;
  let caX: X509Certificate;
  try {
    x = new X509Certificate(cert);
    caX = new X509Certificate(ca);
  } catch (err) {
    throw new Error(`TLS directory ${dir}: malformed certificate: ${(err as Error).message}`);
  }
  if (!x.checkIssued(caX) || !x.verify(caX.publicKey))
    throw new Error(`TLS directory ${dir}: ${TLS_FILES.cert} was not issued by ${TLS_FILES.ca}`);
  const now = Date.now();
  if (Date.parse(x.validFrom) > now || Date.parse(x.validTo) < now)
    throw new Error(
      `TLS directory ${dir}: ${TLS_FILES.cert} is valid from ${x.validFrom} to ${x.validTo}, not now`,
    );
  const self = identityFromCertificate({
    subject: subjectFields(x.subject),
    subjectaltname: x.subjectAltName,
  });
  if (role && self.role !== role)
    throw new Error(
      `TLS directory ${dir}: ${TLS_FILES.cert} is a ${self.role} certificate; this needs a ${role} certificate`,
    );
  return { kind: 'tls', ca, cert, key, self, dir };
}

/** X509Certificate's subject ("O=dunix\nOU=brick\nCN=b1") as getPeerCertificate's object. */
export function subjectFields(subject: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const line of subject.split('\n')) {
    const at = line.indexOf('=');
    if (at <= 0) continue;
    const k = line.slice(0, at);
    const v = line.slice(at + 1);
    const had = out[k];
    out[k] = had === undefined ? v : Array.isArray(had) ? [...had, v] : [had, v];
  }
  return out;
}

/** Whether `host` (an IP or name, brackets allowed) is a loopback address. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  if (net.isIPv4(h)) return h.startsWith('127.');
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h);
  return !!mapped && mapped[1]!.startsWith('127.');
}

/**
 * Insecure transport is for loopback development only: refuses any other
 * address. `what` names the address in the error (e.g. "listen address").
 */
export function assertInsecureAllowed(host: string, what: string): void {
  if (!isLoopbackHost(host))
    throw new FsError(
      'NOT_PERMITTED',
      `${what} ${host} is not loopback: without TLS (--tls-dir, mount option tls_dir) dunix talks to loopback addresses only`,
    );
}

/** The loud line an insecure process logs once at start. */
export function warnInsecure(log: Logger, who: string, defaulted: boolean): void {
  log.error(
    `INSECURE TRANSPORT: ${who} talks to bricks over plain TCP with no authentication; anyone who can reach ` +
      `a brick port can act as root on the volume. For loopback development only` +
      (defaulted
        ? ' (no TLS directory was given: pass --tls-dir / -o tls_dir=DIR, or --insecure / -o insecure to say so)'
        : ''),
    { insecure: true },
  );
}

/** Server side of the frame transport: our certificate, client certificates required and checked. */
export function tlsServerOptions(s: TransportSecurity & { kind: 'tls' }): tls.TlsOptions {
  return {
    ca: s.ca,
    cert: s.cert,
    key: s.key,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
  };
}

/**
 * Client side: the server must present a certificate of our CA for the
 * address dialled (its subjectAltName), and it must be a brick's.
 */
export function tlsClientOptions(
  s: TransportSecurity & { kind: 'tls' },
  host: string,
): tls.ConnectionOptions {
  return {
    ca: s.ca,
    cert: s.cert,
    key: s.key,
    minVersion: 'TLSv1.3',
    ...(net.isIP(host) ? {} : { servername: host }),
    checkServerIdentity: checkBrickServer,
  };
}

/** Hostname check, then the role: only a brick certificate may serve brick RPCs. */
export function checkBrickServer(host: string, cert: tls.PeerCertificate): Error | undefined {
  const bad = tls.checkServerIdentity(host, cert);
  if (bad) return bad;
  try {
    const id = identityFromCertificate(cert);
    if (id.role !== 'brick')
      return new Error(`server ${host} presented the ${id.role} certificate CN=${id.name}, not a brick's`);
  } catch (err) {
    return err as Error;
  }
  return undefined;
}

export function grpcServerCredentials(s: TransportSecurity): grpc.ServerCredentials {
  if (s.kind === 'insecure') return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(s.ca, [{ private_key: s.key, cert_chain: s.cert }], true);
}

export function grpcChannelCredentials(s: TransportSecurity): grpc.ChannelCredentials {
  if (s.kind === 'insecure') return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(s.ca, s.key, s.cert, {
    // grpc-js checks the hostname first; this adds the role.
    checkServerIdentity: (host, cert) => checkBrickServer(host, cert),
  });
}
