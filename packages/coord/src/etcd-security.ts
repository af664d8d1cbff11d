import { X509Certificate } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { FsError, isLoopbackHost, TLS_FILES } from '@dunix/proto';

/**
 * How a process reaches etcd: TLS with a client certificate of the cluster
 * CA (etcd runs with --client-cert-auth and trusts only that CA), or plain
 * HTTP, which is allowed on loopback only (development, as the insecure
 * brick transport). Every component takes the same three files: the TLS
 * directory it already has (`ca.crt`, `tls.crt`, `tls.key`), or explicit
 * --etcd-ca/--etcd-cert/--etcd-key when etcd has a CA of its own.
 */
export interface EtcdTls {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
  /** Where the files came from, for messages. */
  from: string;
}

export interface EtcdTlsFiles {
  /** A TLS directory (`dunixctl cert issue --brick|--client NAME`). */
  tlsDir?: string | undefined;
  ca?: string | undefined;
  cert?: string | undefined;
  key?: string | undefined;
}

async function readPem(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new Error(`etcd ${what} ${path}: ${(err as Error).message}`);
  }
}

/**
 * Loads the etcd client's TLS files: explicit files (all three) win over a
 * TLS directory; neither gives undefined (plain HTTP). The key must not be
 * readable by group or others; the certificate must be issued by the CA.
 */
export async function loadEtcdTls(f: EtcdTlsFiles): Promise<EtcdTls | undefined> {
  const explicit = [f.ca, f.cert, f.key].filter((v) => v !== undefined && v !== '').length;
  if (explicit !== 0 && explicit !== 3)
    throw new Error('--etcd-ca, --etcd-cert and --etcd-key go together: give all three or none');
  let paths: { ca: string; cert: string; key: string; from: string };
  if (explicit === 3) paths = { ca: f.ca!, cert: f.cert!, key: f.key!, from: f.cert! };
  else if (f.tlsDir)
    paths = {
      ca: join(f.tlsDir, TLS_FILES.ca),
      cert: join(f.tlsDir, TLS_FILES.cert),
      key: join(f.tlsDir, TLS_FILES.key),
      from: f.tlsDir,
    };
  else return undefined;
  const [ca, cert, key] = await Promise.all([
    readPem(paths.ca, 'CA'),
    readPem(paths.cert, 'certificate'),
    readPem(paths.key, 'key'),
  ]);
  const mode = (await stat(paths.key)).mode & 0o777;
  if (mode & 0o077)
    throw new Error(
      `etcd key ${paths.key} has mode 0${mode.toString(8)}; it must not be readable by group or others (chmod 600)`,
    );
  try {
    const x = new X509Certificate(cert);
    const caX = new X509Certificate(ca);
    if (!x.checkIssued(caX) || !x.verify(caX.publicKey))
      throw new Error(`${paths.cert} was not issued by ${paths.ca}`);
  } catch (err) {
    throw new Error(`etcd TLS from ${paths.from}: ${(err as Error).message}`);
  }
  return { ca, cert, key, from: paths.from };
}

/** The etcd user a certificate authenticates as: its CN (`client:NAME`...), undefined without one. */
export function etcdTlsUser(tls: EtcdTls | undefined): string | undefined {
  if (!tls) return undefined;
  const cn = /^CN=(.*)$/m.exec(new X509Certificate(tls.cert).subject);
  return cn?.[1];
}

export interface EtcdConnection {
  /** Full URLs, all https:// (with `tls`) or all http://. */
  endpoints: string[];
  tls: EtcdTls | undefined;
}

/**
 * Endpoints as the etcd client wants them, with the TLS to use: `host:port`
 * gets `https://` when certificates are given and `http://` otherwise. An
 * explicit `https://` without certificates is refused (it would fail at the
 * first call with an obscure handshake error), and so is a list mixing both
 * schemes. An explicit `http://` reaches etcd in plain text even when
 * certificates are given (they then serve the bricks only): plain HTTP is
 * allowed to loopback addresses only, as the insecure brick transport.
 */
export function resolveEtcd(endpoints: string[], tls: EtcdTls | undefined): EtcdConnection {
  if (endpoints.length === 0) throw new FsError('INVALID_ARGUMENT', 'no etcd endpoints');
  const parsed = endpoints.map((raw) => {
    const e = raw.trim();
    const m = /^(?:(https?):\/\/)?(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})\/?$/.exec(e);
    if (!m || Number(m[3]) < 1 || Number(m[3]) > 65535)
      throw new FsError(
        'INVALID_ARGUMENT',
        `etcd endpoint ${JSON.stringify(raw)}: expected [https://]HOST:PORT`,
      );
    return { scheme: m[1] ?? (tls ? 'https' : 'http'), host: m[2]!, port: m[3]! };
  });
  const schemes = new Set(parsed.map((p) => p.scheme));
  if (schemes.size > 1)
    throw new FsError('INVALID_ARGUMENT', `etcd endpoints ${endpoints.join(',')} mix http and https`);
  const secure = schemes.has('https');
  if (secure && !tls)
    throw new FsError(
      'INVALID_ARGUMENT',
      `etcd endpoint ${endpoints[0]} is https but no etcd certificate was given ` +
        '(--tls-dir / -o tls_dir=, or --etcd-ca, --etcd-cert and --etcd-key)',
    );
  for (const p of parsed)
    if (!secure && !isLoopbackHost(p.host))
      throw new FsError(
        'NOT_PERMITTED',
        `etcd endpoint ${p.host}:${p.port} is plain http to a non-loopback address: etcd must run with TLS and ` +
          'client certificates there (docs/OPERATIONS.md, "etcd")',
      );
  return {
    endpoints: parsed.map((p) => `${p.scheme}://${p.host}:${p.port}`),
    tls: secure ? tls : undefined,
  };
}
