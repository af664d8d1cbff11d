import t from 'tap';
import {
  assertInsecureAllowed,
  authorizeMethod,
  brickProto,
  callerUnderPolicy,
  FsError,
  identityFromCertificate,
  INSECURE_PEER,
  isLoopbackHost,
  NOBODY_ID,
  parseUidRange,
  PEER_IDENTITY,
  PEER_ONLY_METHODS,
  peerOf,
  policyUris,
  type PeerIdentity,
} from '../src/index.js';

/**
 * Certificates to identities (the role in OU, a client's policy in its
 * subjectAltName URIs), which RPCs a role may call, and how a client's
 * caller is served under its policy.
 */

const subject = (ou: string | undefined, cn = 'n1', o = 'dunix') => ({
  O: o,
  ...(ou ? { OU: ou } : {}),
  CN: cn,
});
const client = (squashRoot: boolean, uidRange?: { from: number; to: number }): PeerIdentity => ({
  kind: 'certificate',
  role: 'client',
  name: 'c',
  policy: { squashRoot, uidRange },
});

t.test('roles and policies from certificates', async (t) => {
  t.same(
    identityFromCertificate({ subject: subject('brick', 'b1'), subjectaltname: 'IP Address:127.0.0.1' }),
    {
      kind: 'certificate',
      role: 'brick',
      name: 'b1',
      policy: { squashRoot: false, uidRange: undefined },
    },
  );
  const san = policyUris({ squashRoot: true, uidRange: { from: 1000, to: 1999 } })
    .map((u) => `URI:${u}`)
    .join(', ');
  t.equal(san, 'URI:urn:dunix:policy:squash-root, URI:urn:dunix:policy:uid-range:1000-1999');
  t.same(identityFromCertificate({ subject: subject('client', 'c1'), subjectaltname: san }).policy, {
    squashRoot: true,
    uidRange: { from: 1000, to: 1999 },
  });
  // Node quotes a SAN entry holding special characters.
  t.same(
    identityFromCertificate({
      subject: subject('client'),
      subjectaltname: 'URI:"urn:dunix:policy:squash-root"',
    }).policy.squashRoot,
    true,
  );
  // The CN's kind (etcd's user) must agree with the OU; an admin is a client; no kind: an older certificate.
  t.equal(identityFromCertificate({ subject: subject('brick', 'brick:b1') }).name, 'brick:b1');
  t.same(
    [identityFromCertificate({ subject: subject('client', 'admin:ops') })].map((i) => [i.role, i.name]),
    [['client', 'admin:ops']],
  );
  t.equal(identityFromCertificate({ subject: subject('client', 'c1') }).name, 'c1', 'an older CN=NAME');
  for (const [ou, cn] of [
    ['client', 'brick:b1'],
    ['brick', 'client:b1'],
    ['brick', 'admin:b1'],
    ['client', 'etcd:e0'],
    ['client', 'root:x'],
    ['client', 'client:'],
  ])
    t.throws(
      () => identityFromCertificate({ subject: subject(ou, cn) }),
      /kind does not match/,
      `OU=${ou} CN=${cn}`,
    );
  t.throws(() => identityFromCertificate({ subject: subject(undefined) }), /carries no dunix role/);
  t.throws(() => identityFromCertificate({ subject: subject('admin') }), /carries no dunix role/);
  t.throws(
    () => identityFromCertificate({ subject: subject('brick', 'x', 'acme') }),
    /carries no dunix role/,
  );
  t.throws(
    () => identityFromCertificate({ subject: { O: 'dunix', OU: ['brick', 'client'], CN: 'x' } }),
    /no dunix role/,
  );
  t.throws(
    () =>
      identityFromCertificate({
        subject: subject('client'),
        subjectaltname: 'URI:urn:dunix:policy:all-squash',
      }),
    /unknown policy/,
  );
  t.throws(
    () =>
      identityFromCertificate({
        subject: subject('brick'),
        subjectaltname: 'URI:urn:dunix:policy:squash-root',
      }),
    /brick certificate carries a client policy/,
  );
  t.same(parseUidRange('5-5'), { from: 5, to: 5 });
  for (const bad of ['5', '9-3', 'a-b', '-1-4', '0-4294967295'])
    t.throws(() => parseUidRange(bad), RangeError, bad);
});

t.test('brick-to-brick RPCs need a brick certificate', async (t) => {
  const methods = Object.keys(brickProto().dunix.v1.Brick.service);
  for (const m of PEER_ONLY_METHODS) t.ok(methods.includes(m), `${m} is an RPC of the service`);
  for (const m of ['TxPrepare', 'TxCommit', 'TxAbort', 'TxStatus', 'AllocIno', 'Replicate', 'ScrubDigest'])
    t.ok(PEER_ONLY_METHODS.has(m), `${m} is peer-only`);
  const brick: PeerIdentity = {
    kind: 'certificate',
    role: 'brick',
    name: 'b',
    policy: { squashRoot: false, uidRange: undefined },
  };
  for (const m of methods) {
    t.doesNotThrow(() => authorizeMethod(brick, m), `a brick may call ${m}`);
    t.doesNotThrow(() => authorizeMethod(INSECURE_PEER, m), `an insecure peer may call ${m} (development)`);
    if (PEER_ONLY_METHODS.has(m)) {
      const err = (() => {
        try {
          authorizeMethod(client(false), m);
        } catch (e) {
          return e;
        }
      })();
      t.ok(err instanceof FsError && err.code === 'NOT_PERMITTED', `a client may not call ${m}`);
      t.match((err as Error).message, new RegExp(`${m} is a brick-to-brick RPC.*client certificate CN=c`));
    } else t.doesNotThrow(() => authorizeMethod(client(false), m), `a client may call ${m}`);
  }
});

t.test('root squash and uid ranges', async (t) => {
  const root = { uid: 0, gid: 0, groups: [0, 4, 27], pid: 9 };
  t.same(callerUnderPolicy(client(true), root), {
    uid: NOBODY_ID,
    gid: NOBODY_ID,
    groups: [NOBODY_ID, 4, 27],
    pid: 9,
  });
  t.same(root, { uid: 0, gid: 0, groups: [0, 4, 27], pid: 9 }, 'the request is not changed in place');
  const user = { uid: 1000, gid: 1000, groups: [1000], pid: 1 };
  t.equal(callerUnderPolicy(client(true), user), user, 'other users pass unchanged (same object)');
  t.same(callerUnderPolicy(client(true), { uid: 1000, gid: 0, groups: [] }).gid, NOBODY_ID, 'gid 0 too');
  t.equal(callerUnderPolicy(client(false), root), root, 'no squash without the policy');
  const ranged = client(true, { from: 1000, to: 1999 });
  t.equal(callerUnderPolicy(ranged, user), user, 'inside the range');
  t.same(callerUnderPolicy(ranged, root).uid, NOBODY_ID, 'squashed root is nobody, which a range allows');
  t.throws(
    () => callerUnderPolicy(ranged, { uid: 2000, gid: 1, groups: [] }),
    /uid 2000 is outside 1000-1999/,
  );
  t.throws(() => callerUnderPolicy(client(false, { from: 1, to: 10 }), root), /uid 0 is outside 1-10/);
  const brick: PeerIdentity = {
    kind: 'certificate',
    role: 'brick',
    name: 'b',
    policy: { squashRoot: false, uidRange: undefined },
  };
  t.equal(callerUnderPolicy(brick, root), root, 'bricks are not squashed');
  t.equal(callerUnderPolicy(INSECURE_PEER, root), root);
});

t.test('the identity of a call: frames set it, gRPC reports the certificate', async (t) => {
  const id = client(true);
  t.equal(peerOf({ [PEER_IDENTITY]: id }), id);
  t.equal(peerOf({ getAuthContext: () => ({}) }), INSECURE_PEER, 'no certificate: a server without TLS');
  const cert = { subject: subject('client', 'g'), subjectaltname: '', fingerprint256: 'AA:BB' };
  const a = peerOf({ getAuthContext: () => ({ sslPeerCertificate: cert }) });
  t.match(a, { kind: 'certificate', role: 'client', name: 'g' });
  t.equal(peerOf({ getAuthContext: () => ({ sslPeerCertificate: cert }) }), a, 'parsed once per certificate');
});

t.test('insecure transport is for loopback only', async (t) => {
  for (const h of ['127.0.0.1', '127.3.4.5', 'localhost', '::1', '[::1]', '::ffff:127.0.0.1'])
    t.ok(isLoopbackHost(h), h);
  for (const h of ['0.0.0.0', '192.0.2.1', '::', 'example.org', '128.0.0.1', '::ffff:192.0.2.1'])
    t.notOk(isLoopbackHost(h), h);
  t.doesNotThrow(() => assertInsecureAllowed('127.0.0.1', 'listen address'));
  t.throws(
    () => assertInsecureAllowed('0.0.0.0', 'listen address'),
    /listen address 0.0.0.0 is not loopback/,
  );
});
