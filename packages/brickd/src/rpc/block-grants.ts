import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign,
  verify,
  X509Certificate,
  type KeyObject,
} from 'node:crypto';
import { constants } from 'node:fs';
import {
  FsError,
  identityFromCertificate,
  subjectFields,
  type PeerIdentity,
  type TransportSecurity,
  type wire,
} from '@dunix/proto';

/**
 * Block grants: the permission a namespace check gave a client, carried to
 * the bricks that hold the file's blocks. A file's blocks live in other PGs
 * than its inode, so the brick serving a block cannot check the caller
 * against the inode itself; asking the inode's primary would cost a round
 * trip per block. Instead the inode's primary, when it answers an Open (or
 * creates a regular file) for a client certificate, signs what the check
 * allowed — inode, read and/or write, the certificate's name, an expiry —
 * and puts its certificate in the grant. The block's primary checks that
 * certificate against the cluster CA (a brick's, valid now), the signature,
 * and that the grant names the inode, the right and the certificate of the
 * connection.
 *
 * Grants are signed with an Ed25519 key the brick makes at start (the grant
 * key), itself signed once with the certificate's RSA key: an RSA-2048
 * signature per Open measured 5-7 ms on a loaded 2-core host, more than the
 * Open; Ed25519 costs tens of microseconds. A checker verifies a brick's
 * grant key once, each grant once (remembered by signature), so a block
 * call costs a map lookup; an Open of the same file again reuses its grant.
 *
 * As on a local filesystem, the check is at open: a descriptor keeps what
 * it was opened for after a chmod — until the grant expires and the client
 * renews it with a new Open, which checks again (blockGrantTtlMs).
 *
 * Brick certificates need no grant (replication, copies, recovery), nor do
 * insecure peers (loopback development, trusted as bricks).
 */
export const GRANT_READ = 1;
export const GRANT_WRITE = 2;

const GRANT_CONTEXT = 'dunix-block-grant-v1';
const GRANT_KEY_CONTEXT = 'dunix-block-grant-key-v1\n';

/** The bytes the certificate's key signs to vouch for a grant key. */
function grantKeyPayload(keyDer: Buffer): Buffer {
  return Buffer.concat([Buffer.from(GRANT_KEY_CONTEXT), keyDer]);
}

/** The bytes a grant's signature covers. */
export function grantPayload(g: {
  ino: string;
  rights: number;
  holder: string;
  expiresAtMs: string;
}): Buffer {
  return Buffer.from(`${GRANT_CONTEXT}\n${g.ino}\n${g.rights}\n${g.holder}\n${g.expiresAtMs}`);
}

/** The rights an open(2) with `flags` asks for. */
export function rightsOfOpenFlags(flags: number): number {
  const acc = flags & 3;
  if (acc === constants.O_RDONLY) return GRANT_READ;
  if (acc === constants.O_WRONLY) return GRANT_WRITE;
  return GRANT_READ | GRANT_WRITE;
}

export interface BlockGrantsOptions {
  security: TransportSecurity & { kind: 'tls' };
  ttlMs: number;
  cacheMax: number;
  /** Wall clock (grants cross hosts), ms since the epoch. */
  nowMs: () => number;
}

interface Verified {
  ino: string;
  rights: number;
  holder: string;
  expiresAtMs: number;
}

/** Insertion-ordered map that drops its oldest entry past `max`. */
function remember<K, V>(m: Map<K, V>, k: K, v: V, max: number): void {
  if (m.size >= max) m.delete(m.keys().next().value as K);
  m.set(k, v);
}

export class BlockGrants {
  private readonly key: KeyObject;
  private readonly grantKeyDer: Buffer;
  private readonly grantKeySignature: Buffer;
  private readonly selfDer: Buffer;
  private readonly ca: X509Certificate;
  private readonly issued = new Map<string, wire.BlockGrant__Output>();
  private readonly verified = new Map<string, Verified>();
  /** Issuer certificates checked against the CA, by sha256 of their DER: name, not-after. */
  private readonly issuers = new Map<
    string,
    { name: string; notAfterMs: number; cert: X509Certificate; hash: string }
  >();
  /** Grant keys their issuers vouched for. */
  private readonly grantKeys = new Map<string, KeyObject>();

  constructor(private readonly o: BlockGrantsOptions) {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    this.key = privateKey;
    this.grantKeyDer = publicKey.export({ type: 'spki', format: 'der' });
    this.grantKeySignature = sign(
      'sha256',
      grantKeyPayload(this.grantKeyDer),
      createPrivateKey(o.security.key),
    );
    this.selfDer = new X509Certificate(o.security.cert).raw;
    this.ca = new X509Certificate(o.security.ca);
  }

  /** A grant of `rights` on `ino` to the client certificate `holder` (reused while it has half its life). */
  issue(ino: bigint, rights: number, holder: string): wire.BlockGrant__Output {
    const now = this.o.nowMs();
    const k = `${ino}:${rights}:${holder}`;
    const had = this.issued.get(k);
    if (had && Number(had.expiresAtMs) - now > this.o.ttlMs / 2) return had;
    const body = { ino: ino.toString(), rights, holder, expiresAtMs: String(now + this.o.ttlMs) };
    const grant: wire.BlockGrant__Output = {
      ...body,
      issuerCert: this.selfDer,
      grantKey: this.grantKeyDer,
      grantKeySignature: this.grantKeySignature,
      signature: sign(null, grantPayload(body), this.key),
    };
    this.issued.delete(k);
    remember(this.issued, k, grant, this.o.cacheMax);
    return grant;
  }

  /** A grant for the open `flags` to `peer`, when it is a client certificate. */
  forOpen(peer: PeerIdentity, ino: bigint, rights: number): wire.BlockGrant__Output | null {
    if (peer.kind !== 'certificate' || peer.role !== 'client') return null;
    return this.issue(ino, rights, peer.name);
  }

  /**
   * Throws unless `peer` may do `need` on the blocks of `ino`: PERMISSION_DENIED
   * (EACCES) for a missing, foreign, expired or insufficient grant, NOT_PERMITTED
   * (EPERM) for one not signed by a brick of this cluster.
   */
  check(
    method: string,
    peer: PeerIdentity,
    grant: wire.BlockGrant__Output | null | undefined,
    ino: bigint,
    need: number,
  ): void {
    if (peer.kind !== 'certificate' || peer.role !== 'client') return;
    const what = `${method} of inode ${ino} by the client certificate CN=${peer.name}`;
    if (!grant || !grant.signature?.length)
      throw new FsError('PERMISSION_DENIED', `${what}: no block grant (an Open of the file gives one)`);
    const v = this.verify(grant, what);
    if (v.ino !== ino.toString())
      throw new FsError('PERMISSION_DENIED', `${what}: the grant is for inode ${v.ino}`);
    if (v.holder !== peer.name)
      throw new FsError('PERMISSION_DENIED', `${what}: the grant was issued to CN=${v.holder}`);
    if ((v.rights & need) !== need)
      throw new FsError(
        'PERMISSION_DENIED',
        `${what}: the file was opened for ${v.rights & GRANT_WRITE ? 'writing' : 'reading'} only`,
      );
    if (v.expiresAtMs <= this.o.nowMs())
      throw new FsError('PERMISSION_DENIED', `${what}: the grant expired (open the file again)`);
  }

  private verify(g: wire.BlockGrant__Output, what: string): Verified {
    const body = {
      ino: String(g.ino),
      rights: g.rights,
      holder: g.holder,
      expiresAtMs: String(g.expiresAtMs),
    };
    // Keyed by what was signed and the signature: a grant altered after signing is verified (and refused).
    const sigKey = `${g.signature.toString('base64')} ${body.ino} ${body.rights} ${body.holder} ${body.expiresAtMs}`;
    const known = this.verified.get(sigKey);
    if (known) return known;
    const grantKey = this.grantKey(g, what);
    let ok = false;
    try {
      ok = verify(null, grantPayload(body), grantKey, g.signature);
    } catch {
      ok = false;
    }
    if (!ok) throw new FsError('NOT_PERMITTED', `${what}: the grant's signature does not verify`);
    const v: Verified = { ...body, expiresAtMs: Number(body.expiresAtMs) };
    remember(this.verified, sigKey, v, this.o.cacheMax);
    return v;
  }

  /** The grant's Ed25519 key, once its issuer's certificate vouched for it (remembered). */
  private grantKey(g: wire.BlockGrant__Output, what: string): KeyObject {
    const issuer = this.issuer(g.issuerCert, what);
    const k = `${issuer.hash} ${g.grantKey.toString('base64')}`;
    const known = this.grantKeys.get(k);
    if (known) return known;
    let ok = false;
    let key: KeyObject | undefined;
    try {
      ok = verify('sha256', grantKeyPayload(g.grantKey), issuer.cert.publicKey, g.grantKeySignature);
      key = createPublicKey({ key: g.grantKey, format: 'der', type: 'spki' });
    } catch {
      ok = false;
    }
    if (!ok || !key || key.asymmetricKeyType !== 'ed25519')
      throw new FsError(
        'NOT_PERMITTED',
        `${what}: the grant's key is not vouched for by its issuer CN=${issuer.name}`,
      );
    remember(this.grantKeys, k, key, 1024);
    return key;
  }

  private issuer(der: Buffer, what: string): { name: string; cert: X509Certificate; hash: string } {
    const h = createHash('sha256').update(der).digest('base64');
    const now = this.o.nowMs();
    const known = this.issuers.get(h);
    if (known && known.notAfterMs > now) return known;
    let x: X509Certificate;
    try {
      x = new X509Certificate(der);
    } catch {
      throw new FsError('NOT_PERMITTED', `${what}: the grant's issuer certificate is malformed`);
    }
    if (!x.checkIssued(this.ca) || !x.verify(this.ca.publicKey))
      throw new FsError('NOT_PERMITTED', `${what}: the grant was not issued by a brick of this cluster's CA`);
    if (Date.parse(x.validFrom) > now || Date.parse(x.validTo) <= now)
      throw new FsError('NOT_PERMITTED', `${what}: the grant's issuer certificate is not valid now`);
    let id;
    try {
      id = identityFromCertificate({ subject: subjectFields(x.subject), subjectaltname: x.subjectAltName });
    } catch (err) {
      throw new FsError('NOT_PERMITTED', `${what}: ${(err as Error).message}`);
    }
    if (id.role !== 'brick')
      throw new FsError('NOT_PERMITTED', `${what}: the grant was signed by the ${id.role} CN=${id.name}`);
    const entry = { name: id.name, notAfterMs: Date.parse(x.validTo), cert: x, hash: h };
    remember(this.issuers, h, entry, 1024);
    return entry;
  }
}

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;

/** An inode field of a request as a bigint (malformed: INVALID_ARGUMENT, as the handler would say). */
function inoOf(v: unknown, field: string): bigint {
  if (typeof v !== 'string' || !/^\d{1,20}$/.test(v))
    throw new FsError('INVALID_ARGUMENT', `${field} ${String(v)}`);
  return BigInt(v);
}

type GrantCarrier = {
  ino?: unknown;
  viaOpenFile?: boolean;
  grant?: wire.BlockGrant__Output | null;
  dstIno?: unknown;
  srcIno?: unknown;
  dstGrant?: wire.BlockGrant__Output | null;
  srcGrant?: wire.BlockGrant__Output | null;
};

/**
 * Calls that write a file's data or its map, the blocks' (WriteBlock) and
 * the inode's: WriteInline (an inline file's content), Extend (size and
 * allocation map after block writes), ConvertInline (inline to blocks),
 * Fallocate (preallocate, punch, zero). They are checked as at open, like
 * the block writes they go with, not against the mode now: open(O_CREAT) of
 * a 0444 file writes it, and a descriptor keeps its access after a chmod.
 */
const WRITE_GRANT_METHODS: ReadonlySet<string> = new Set([
  'WriteBlock',
  'WriteInline',
  'Extend',
  'ConvertInline',
  'Fallocate',
]);

/** Seek (SEEK_DATA, SEEK_HOLE) reveals the allocation map: any open of the file, as lseek on any descriptor. */
const GRANT_ANY = 0;

/** Block RPCs of a client certificate: the grant they carry must allow them (before anything is read or written). */
export function checkBlockCall(g: BlockGrants, method: string, peer: PeerIdentity, request: unknown): void {
  if (peer.kind !== 'certificate' || peer.role !== 'client') return;
  const r = request as GrantCarrier;
  if (method === 'ReadBlock') g.check(method, peer, r.grant, inoOf(r.ino, 'ino'), GRANT_READ);
  else if (WRITE_GRANT_METHODS.has(method)) g.check(method, peer, r.grant, inoOf(r.ino, 'ino'), GRANT_WRITE);
  else if (method === 'Seek') g.check(method, peer, r.grant, inoOf(r.ino, 'ino'), GRANT_ANY);
  // ftruncate: the mode is not checked again (the open checked it), so the open's grant must show it.
  else if (method === 'SetAttr' && r.viaOpenFile)
    g.check(method, peer, r.grant, inoOf(r.ino, 'ino'), GRANT_WRITE);
  else if (method === 'CopyBlock') {
    g.check(method, peer, r.dstGrant, inoOf(r.dstIno, 'dst_ino'), GRANT_WRITE);
    g.check(method, peer, r.srcGrant, inoOf(r.srcIno, 'src_ino'), GRANT_READ);
  }
}

/** Methods whose reply carries a grant to a client certificate. */
export const GRANTING_METHODS: ReadonlySet<string> = new Set(['Open', 'Mknod', 'Tmpfile']);

/**
 * The reply of an Open (the namespace check passed for `flags`), or of the
 * creation of a regular file (its creator may read and write it, whatever
 * its mode: open(O_CREAT) of a 0444 file gives a writable descriptor), with
 * the grant for a client certificate.
 */
export function withGrant<Rep>(
  g: BlockGrants,
  method: string,
  peer: PeerIdentity,
  request: unknown,
  reply: Rep,
): Rep {
  if (peer.kind !== 'certificate' || peer.role !== 'client') return reply;
  if (method === 'Open') {
    const rep = reply as { attr?: wire.Attr | null };
    if (!rep.attr || ((rep.attr.mode ?? 0) & S_IFMT) !== S_IFREG) return reply;
    const flags = (request as { flags?: number }).flags ?? 0;
    return { ...reply, grant: g.forOpen(peer, inoOf(String(rep.attr.ino), 'ino'), rightsOfOpenFlags(flags)) };
  }
  const rep = reply as { entry?: wire.Dirent | null; existed?: boolean };
  const attr = rep.entry?.attr;
  if (!attr || rep.existed || ((attr.mode ?? 0) & S_IFMT) !== S_IFREG) return reply;
  return { ...reply, grant: g.forOpen(peer, inoOf(String(attr.ino), 'ino'), GRANT_READ | GRANT_WRITE) };
}
