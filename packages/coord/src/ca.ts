import { generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import { chmod, mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import forge from 'node-forge';
import {
  CERT_ORGANIZATION,
  certCommonName,
  OU_OF_KIND,
  policyUris,
  TLS_FILES,
  type CertKind,
  type ClientPolicy,
} from '@dunix/proto';

/**
 * The cluster CA: `dunixctl ca init` makes it, `dunixctl cert issue` signs a
 * certificate for a brick or a client with it. Keys come from Node's crypto
 * (RSA, OpenSSL underneath); node-forge builds and signs the X.509
 * structures, which Node's crypto cannot.
 *
 * Layout under the CA directory (default /etc/dunix):
 *   ca.crt, ca.key (0600)            the CA; ca.key never leaves this host
 *   bricks/NAME/ca.crt tls.crt tls.key   what brickd --tls-dir NAME's dir reads
 *   clients/NAME/ca.crt tls.crt tls.key  what the mount option tls_dir reads
 *   admins/NAME/ca.crt tls.crt tls.key   dunixctl's --tls-dir: a client to the bricks, etcd's root
 *   etcd/NAME/ca.crt tls.crt tls.key     an etcd member's server (and peer) certificate
 * The role and a client's policy are in the certificate (peer-identity.ts
 * in proto: OU=brick|client, CN=<kind>:NAME, policy URIs in the
 * subjectAltName); the CN is the certificate's etcd user.
 */
export const CA_FILES = { cert: 'ca.crt', key: 'ca.key' } as const;
export const CA_DAYS_DEFAULT = 3650;
export const CERT_DAYS_DEFAULT = 825;
const CA_KEY_BITS = 3072;
const CERT_KEY_BITS = 2048;
/** notBefore this far in the past: hosts whose clocks run a little behind accept a new certificate. */
const BACKDATE_MS = 5 * 60_000;

/** Names of bricks and clients in certificates (and directory names). */
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
/** Addresses every brick certificate is valid for (loopback), whatever else --san adds. */
export const LOOPBACK_SANS = ['127.0.0.1', '::1', 'localhost'];

export interface CaInfo {
  dir: string;
  cert: string;
  key: string;
  subject: string;
  notAfter: string;
  fingerprint256: string;
}

/**
 * What a certificate is for: a brick or a client (roles a brick admits), an
 * admin (dunixctl: a client to the bricks, etcd's root role), or an etcd
 * member (OU=etcd: serves etcd's client and peer ports; a brick refuses it
 * as a peer, having no dunix role).
 */
export type CertRole = CertKind;

export interface IssueOptions {
  role: CertRole;
  name: string;
  /** Client policy (clients only). */
  policy?: ClientPolicy;
  /** Extra host names and IP addresses the certificate is valid for (bricks, etcd members). */
  sans?: string[];
  days?: number;
  /** Replace an existing certificate of that name. */
  force?: boolean;
}

export interface IssuedCert {
  /** The directory to hand to brickd --tls-dir or the mount option tls_dir. */
  dir: string;
  role: CertRole;
  name: string;
  subject: string;
  subjectAltName: string;
  notAfter: string;
  serial: string;
  fingerprint256: string;
}

function days(n: number | undefined, dflt: number): number {
  const d = n ?? dflt;
  if (!Number.isInteger(d) || d < 1 || d > 36500) throw new RangeError(`--days ${d} must be 1..36500`);
  return d;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Writes a file whole (temp file, rename) with `mode`, whatever the umask. */
async function writeFileMode(path: string, data: string, mode: number): Promise<void> {
  const tmp = `${path}.tmp-${randomBytes(4).toString('hex')}`;
  await writeFile(tmp, data, { mode });
  await chmod(tmp, mode);
  await rename(tmp, path);
}

function rsaKeys(bits: number): { privatePem: string; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: bits });
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }) as string,
  };
}

/** A positive 128-bit serial number (hex). */
function serialHex(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return b.toString('hex');
}

function validity(cert: forge.pki.Certificate, d: number): void {
  const now = Date.now();
  cert.validity.notBefore = new Date(now - BACKDATE_MS);
  cert.validity.notAfter = new Date(now + d * 86_400_000);
}

/** Creates the cluster CA in `dir` (refused when one is there, unless `force`). */
export async function initCa(dir: string, o: { days?: number; force?: boolean } = {}): Promise<CaInfo> {
  const d = days(o.days, CA_DAYS_DEFAULT);
  const certPath = join(dir, CA_FILES.cert);
  const keyPath = join(dir, CA_FILES.key);
  if (!o.force && ((await exists(keyPath)) || (await exists(certPath))))
    throw new Error(
      `a CA already exists in ${dir} (${CA_FILES.cert}, ${CA_FILES.key}); every certificate it issued depends on it. ` +
        'Use --force to replace it (then issue every certificate again)',
    );
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const keys = rsaKeys(CA_KEY_BITS);
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(keys.publicPem);
  cert.serialNumber = serialHex();
  validity(cert, d);
  const subject = [
    { shortName: 'O', value: CERT_ORGANIZATION },
    { shortName: 'CN', value: 'dunix cluster CA' },
  ];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(forge.pki.privateKeyFromPem(keys.privatePem), forge.md.sha256.create());
  const pem = forge.pki.certificateToPem(cert);
  await writeFileMode(keyPath, keys.privatePem, 0o600);
  await writeFileMode(certPath, pem, 0o644);
  const x = new X509Certificate(pem);
  return {
    dir,
    cert: certPath,
    key: keyPath,
    subject: x.subject.replace(/\n/g, ', '),
    notAfter: new Date(x.validTo).toISOString(),
    fingerprint256: x.fingerprint256,
  };
}

/** Reads the CA of `dir`, with a clear error when there is none. */
async function loadCa(
  dir: string,
): Promise<{ pem: string; cert: forge.pki.Certificate; key: forge.pki.rsa.PrivateKey }> {
  let pem: string;
  let keyPem: string;
  try {
    [pem, keyPem] = await Promise.all([
      readFile(join(dir, CA_FILES.cert), 'utf8'),
      readFile(join(dir, CA_FILES.key), 'utf8'),
    ]);
  } catch (err) {
    throw new Error(`no CA in ${dir} (dunixctl ca init --dir ${dir}): ${(err as Error).message}`);
  }
  const key = forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey;
  return { pem, cert: forge.pki.certificateFromPem(pem), key };
}

/** Where the certificate of `role` NAME lives under the CA directory. */
export function certDir(caDir: string, role: CertRole, name: string): string {
  const sub = { brick: 'bricks', client: 'clients', admin: 'admins', etcd: 'etcd' } as const;
  return join(caDir, sub[role], name);
}

/** Issues a brick or client certificate signed by the CA in `caDir`; writes its TLS directory. */
export async function issueCert(caDir: string, o: IssueOptions): Promise<IssuedCert> {
  if (!NAME_RE.test(o.name))
    throw new Error(`name ${JSON.stringify(o.name)}: letters, digits, '.', '_' and '-', at most 63`);
  const policy = o.policy ?? { squashRoot: false, uidRange: undefined };
  if (!Object.hasOwn(OU_OF_KIND, o.role)) throw new Error(`unknown certificate role ${String(o.role)}`);
  if (o.role !== 'client' && (policy.squashRoot || policy.uidRange))
    throw new Error(
      `--squash-root and --uid-range are client policies; a ${o.role} certificate carries none`,
    );
  const serves = o.role === 'brick' || o.role === 'etcd';
  const d = days(o.days, CERT_DAYS_DEFAULT);
  const out = certDir(caDir, o.role, o.name);
  if (!o.force && (await exists(join(out, TLS_FILES.cert))))
    throw new Error(`a certificate for ${o.role} ${o.name} exists in ${out}; --force replaces it`);
  const ca = await loadCa(caDir);

  const altNames: { type: number; value?: string; ip?: string }[] = [];
  if (serves) {
    for (const san of [...LOOPBACK_SANS, ...(o.sans ?? [])]) {
      const host = san.trim();
      if (!host) continue;
      if (isIP(host)) altNames.push({ type: 7, ip: host });
      else if (/^[A-Za-z0-9.-]{1,253}$/.test(host)) altNames.push({ type: 2, value: host });
      else throw new Error(`--san ${JSON.stringify(host)} is neither a host name nor an IP address`);
    }
  } else if (o.sans?.length)
    throw new Error('--san is for brick and etcd certificates (the addresses they serve on)');
  for (const uri of policyUris(policy)) altNames.push({ type: 6, value: uri });

  const keys = rsaKeys(CERT_KEY_BITS);
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(keys.publicPem);
  cert.serialNumber = serialHex();
  validity(cert, d);
  cert.setSubject([
    { shortName: 'O', value: CERT_ORGANIZATION },
    { shortName: 'OU', value: OU_OF_KIND[o.role] },
    { shortName: 'CN', value: certCommonName(o.role, o.name) },
  ]);
  cert.setIssuer(ca.cert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    // Every process is both: a brick serves and calls other bricks; TLS needs clientAuth to present it.
    // An etcd member is a client of its peers too (peer TLS), and the launcher probes /health with it.
    { name: 'extKeyUsage', serverAuth: serves, clientAuth: true },
    ...(altNames.length ? [{ name: 'subjectAltName', altNames }] : []),
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: ca.cert.generateSubjectKeyIdentifier().getBytes() },
  ]);
  cert.sign(ca.key, forge.md.sha256.create());
  const pem = forge.pki.certificateToPem(cert);

  await mkdir(out, { recursive: true, mode: 0o755 });
  await writeFileMode(join(out, TLS_FILES.key), keys.privatePem, 0o600);
  await writeFileMode(join(out, TLS_FILES.cert), pem, 0o644);
  await writeFileMode(join(out, TLS_FILES.ca), ca.pem, 0o644);
  const x = new X509Certificate(pem);
  return {
    dir: out,
    role: o.role,
    name: o.name,
    subject: x.subject.replace(/\n/g, ', '),
    subjectAltName: x.subjectAltName ?? '',
    notAfter: new Date(x.validTo).toISOString(),
    serial: x.serialNumber,
    fingerprint256: x.fingerprint256,
  };
}
