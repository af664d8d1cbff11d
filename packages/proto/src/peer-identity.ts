import { FsError } from './errors.js';

/**
 * Who is on the other end of a brick connection, as its certificate says,
 * and what it may do. The certificate format is part of the contract
 * (`dunixctl cert issue` writes it, every brick reads it):
 *
 * - subject `O=dunix, OU=<role>, CN=<kind>:<name>`, role `brick` or
 *   `client`; the CN's kind is the role, or `admin` in a client
 *   certificate (dunixctl's: etcd's root role). etcd takes a certificate's
 *   CN as its user name (--client-cert-auth), so the kind keeps a brick and
 *   a client of the same name apart there (etcd-access.ts in coord);
 *   certificates issued before the kind was added (CN=<name>) are still
 *   admitted by bricks but have no etcd user; the identity's name is the
 *   whole CN;
 * - a client's policy as URIs in its subjectAltName:
 *   `urn:dunix:policy:squash-root` (uid and gid 0, also in the groups, are
 *   served as nobody, 65534) and `urn:dunix:policy:uid-range:A-B` (a call
 *   whose uid, after squashing, is outside A..B and is not nobody is
 *   refused with EPERM).
 *
 * A certificate of our CA without a role is refused. `insecure` is the
 * peer of a server started without TLS (loopback development only): it is
 * trusted as a brick, as every peer was before certificates.
 */
export type PeerRole = 'brick' | 'client';

export interface ClientPolicy {
  squashRoot: boolean;
  /** Inclusive uid bounds, or none. */
  uidRange: { from: number; to: number } | undefined;
}

export type PeerIdentity =
  { kind: 'certificate'; role: PeerRole; name: string; policy: ClientPolicy } | { kind: 'insecure' };

export const INSECURE_PEER: PeerIdentity = Object.freeze({ kind: 'insecure' });

/** The organisation every dunix certificate names. */
export const CERT_ORGANIZATION = 'dunix';
export const POLICY_URI_PREFIX = 'urn:dunix:policy:';
/** uid and gid of nobody / nogroup on Debian, what root is squashed to. */
export const NOBODY_ID = 65534;
/** Largest uid a range may name (uid_t is 32 bits; (uid_t)-1 is "no change"). */
const UID_MAX = 0xffff_fffe;

/** What a certificate's CN says before the name: its etcd user's kind (one role there each). */
export type CertKind = PeerRole | 'admin' | 'etcd';

/** The CN (and etcd user name) of a certificate of `kind` NAME. */
export function certCommonName(kind: CertKind, name: string): string {
  return `${kind}:${name}`;
}

/** The OU a certificate of each kind carries: an admin is a client to the bricks. */
export const OU_OF_KIND: Readonly<Record<CertKind, string>> = Object.freeze({
  brick: 'brick',
  client: 'client',
  admin: 'client',
  etcd: 'etcd',
});

export const NO_POLICY: ClientPolicy = Object.freeze({ squashRoot: false, uidRange: undefined });

/** subjectAltName URIs for a client policy (what `dunixctl cert issue` writes). */
export function policyUris(p: ClientPolicy): string[] {
  const out: string[] = [];
  if (p.squashRoot) out.push(`${POLICY_URI_PREFIX}squash-root`);
  if (p.uidRange) out.push(`${POLICY_URI_PREFIX}uid-range:${p.uidRange.from}-${p.uidRange.to}`);
  return out;
}

/** "A-B" (inclusive, A <= B) as a range; throws a RangeError on anything else. */
export function parseUidRange(v: string): { from: number; to: number } {
  const m = /^(\d{1,10})-(\d{1,10})$/.exec(v.trim());
  const from = m ? Number(m[1]) : NaN;
  const to = m ? Number(m[2]) : NaN;
  if (!m || from > to || to > UID_MAX)
    throw new RangeError(`uid range ${JSON.stringify(v)}: expected A-B, 0 <= A <= B <= ${UID_MAX}`);
  return { from, to };
}

/** What Node's tls getPeerCertificate() (and grpc-js's auth context) gives for a certificate. */
export interface PeerCertificateLike {
  subject?: Record<string, string | string[] | undefined> | null;
  subjectaltname?: string | undefined;
}

/**
 * The identity a certificate carries. Throws a clear Error when it carries
 * no dunix role (a certificate of the right CA but not one we issued for a
 * brick or a client) or a malformed policy.
 */
export function identityFromCertificate(cert: PeerCertificateLike): PeerIdentity & { kind: 'certificate' } {
  const subject = cert.subject ?? {};
  const one = (k: string) => {
    const v = subject[k];
    return Array.isArray(v) ? (v.length === 1 ? v[0] : undefined) : v;
  };
  const cn = one('CN') ?? '';
  const org = one('O');
  const role = one('OU');
  if (org !== CERT_ORGANIZATION || (role !== 'brick' && role !== 'client'))
    throw new Error(
      `certificate CN=${cn || '?'} carries no dunix role (want O=${CERT_ORGANIZATION}, OU=brick or OU=client; ` +
        `has O=${org ?? '-'}, OU=${role ?? '-'})`,
    );
  // The whole CN is the name (a grant's holder): client:x and admin:x are two holders.
  const name = cn;
  const colon = cn.indexOf(':');
  if (colon >= 0) {
    const kind = cn.slice(0, colon) as CertKind;
    if (!Object.hasOwn(OU_OF_KIND, kind) || OU_OF_KIND[kind] !== role || colon === cn.length - 1)
      throw new Error(`certificate CN=${cn}: the CN's kind does not match OU=${role}`);
  }
  const policy: ClientPolicy = { squashRoot: false, uidRange: undefined };
  for (const uri of sanUris(cert.subjectaltname)) {
    if (!uri.startsWith(POLICY_URI_PREFIX)) continue;
    const rule = uri.slice(POLICY_URI_PREFIX.length);
    if (rule === 'squash-root') policy.squashRoot = true;
    else if (rule.startsWith('uid-range:')) policy.uidRange = parseUidRange(rule.slice('uid-range:'.length));
    else throw new Error(`certificate CN=${name}: unknown policy ${uri}`);
  }
  if (role === 'brick' && (policy.squashRoot || policy.uidRange))
    throw new Error(`certificate CN=${name}: a brick certificate carries a client policy`);
  return { kind: 'certificate', role, name, policy };
}

/** URI entries of a subjectAltName string as Node renders it ("DNS:a, IP Address:1.2.3.4, URI:x"). */
function sanUris(san: string | undefined): string[] {
  if (!san) return [];
  const out: string[] = [];
  for (const part of san.split(/,\s*/)) {
    // Node quotes entries holding special characters (JSON string syntax).
    let p = part.trim();
    if (p.startsWith('URI:"')) {
      try {
        p = `URI:${JSON.parse(p.slice(4)) as string}`;
      } catch {
        continue;
      }
    }
    if (p.startsWith('URI:')) out.push(p.slice(4));
  }
  return out;
}

/**
 * RPCs only a brick may call: they read or write a PG's records and block
 * files below the namespace rules (transactions, inode allocation,
 * replication, recovery, block trimming, scrub). Reclaim is not here: the
 * client reclaims an unlinked file at its last close, and Reclaim removes
 * nothing but an inode with no names left (nlink 0).
 */
export const PEER_ONLY_METHODS: ReadonlySet<string> = new Set([
  'TxRead',
  'TxPrepare',
  'TxCommit',
  'TxAbort',
  'TxStatus',
  'AllocIno',
  'Replicate',
  'PgPosition',
  'FetchLog',
  'Backfill',
  'FetchBlock',
  'SyncCopy',
  'ScrubDigest',
  'TruncateBlocks',
  'PunchBlocks',
  'Invalidate',
]);

/** Throws NOT_PERMITTED unless `peer` may call `method`. */
export function authorizeMethod(peer: PeerIdentity, method: string): void {
  if (peer.kind === 'insecure' || peer.role === 'brick') return;
  if (PEER_ONLY_METHODS.has(method))
    throw new FsError(
      'NOT_PERMITTED',
      `${method} is a brick-to-brick RPC and needs a brick certificate; ` +
        `the caller presented the ${peer.role} certificate CN=${peer.name}`,
    );
}

export interface CallerLike {
  uid: number;
  gid: number;
  groups: number[];
}

/**
 * The caller a request is served as under `peer`'s policy: root squashed to
 * nobody, a uid outside the certificate's range refused (NOT_PERMITTED).
 * Returns the caller itself when nothing changes.
 */
export function callerUnderPolicy<C extends CallerLike>(peer: PeerIdentity, caller: C): C {
  if (peer.kind === 'insecure' || peer.role === 'brick') return caller;
  const { squashRoot, uidRange } = peer.policy;
  let c = caller;
  if (squashRoot && (c.uid === 0 || c.gid === 0 || c.groups.includes(0))) {
    const squash = (id: number) => (id === 0 ? NOBODY_ID : id);
    c = { ...c, uid: squash(c.uid), gid: squash(c.gid), groups: c.groups.map(squash) };
  }
  if (uidRange && c.uid !== NOBODY_ID && (c.uid < uidRange.from || c.uid > uidRange.to))
    throw new FsError(
      'NOT_PERMITTED',
      `uid ${c.uid} is outside ${uidRange.from}-${uidRange.to}, the range of the certificate CN=${peer.name}`,
    );
  return c;
}

/** Where the frame transport puts the identity of a connection on each call object. */
export const PEER_IDENTITY = Symbol.for('dunix.peerIdentity');

/** A parse of each certificate seen (by fingerprint): gRPC hands us the certificate on every call. */
const byFingerprint = new Map<string, PeerIdentity>();
const FINGERPRINT_CACHE_MAX = 4096;

/**
 * The identity of the peer of a server call: set by the frame transport, or
 * from the TLS certificate grpc-js reports; INSECURE_PEER when the
 * connection carries no certificate (a server without TLS). Throws when a
 * certificate carries no role.
 */
export function peerOf(call: unknown): PeerIdentity {
  const c = call as {
    [PEER_IDENTITY]?: PeerIdentity;
    getAuthContext?: () => { sslPeerCertificate?: PeerCertificateLike & { fingerprint256?: string } } | null;
  };
  const set = c[PEER_IDENTITY];
  if (set) return set;
  const cert = c.getAuthContext?.()?.sslPeerCertificate;
  if (!cert) return INSECURE_PEER;
  const key = cert.fingerprint256;
  const known = key ? byFingerprint.get(key) : undefined;
  if (known) return known;
  const id = identityFromCertificate(cert);
  if (key) {
    if (byFingerprint.size >= FINGERPRINT_CACHE_MAX) byFingerprint.clear();
    byFingerprint.set(key, id);
  }
  return id;
}
