import t from 'tap';
import { FsError, NOBODY_ID, PEER_IDENTITY, type PeerIdentity } from '@dunix/proto';
import { admit } from '../../src/rpc/admission.js';

/**
 * What a brick serves for a call, from its connection's certificate: the
 * role gates brick-to-brick RPCs, a client's policy rewrites the caller,
 * and a brick with TLS serves nothing without a certificate.
 */

const squashed: PeerIdentity = {
  kind: 'certificate',
  role: 'client',
  name: 'c',
  policy: { squashRoot: true, uidRange: undefined },
};
const call = (peer: PeerIdentity | undefined, request: object) =>
  (peer ? { request, [PEER_IDENTITY]: peer } : { request }) as { request: Record<string, unknown> };

t.test('admission', async (t) => {
  const req = { header: { pg: 1 }, caller: { uid: 0, gid: 0, groups: [0], pid: 3 }, ino: '5' };
  const served = admit('SetAttr', call(squashed, req), true);
  t.same(
    served.caller,
    { uid: NOBODY_ID, gid: NOBODY_ID, groups: [NOBODY_ID], pid: 3 },
    'root served as nobody',
  );
  t.equal(served.ino, '5', 'the rest of the request as sent');
  t.same(req.caller.uid, 0, 'the decoded request is not changed in place');
  const user = { caller: { uid: 7, gid: 7, groups: [], pid: 1 } };
  t.equal(admit('Lookup', call(squashed, user), true), user, 'nothing to squash: the same request');
  t.equal(admit('StatFs', call(squashed, {}), true).caller, undefined, 'RPCs without a caller pass');

  const refused = (f: () => unknown) => {
    try {
      f();
    } catch (err) {
      return err instanceof FsError ? err.code : String(err);
    }
    return 'served';
  };
  t.equal(
    refused(() => admit('TxCommit', call(squashed, {}), true)),
    'NOT_PERMITTED',
    'client: no TxCommit',
  );
  const brick: PeerIdentity = {
    ...squashed,
    role: 'brick',
    policy: { squashRoot: false, uidRange: undefined },
  };
  t.equal(
    refused(() => admit('TxCommit', call(brick, {}), true)),
    'served',
    'brick: TxCommit',
  );
  t.equal(
    refused(() => admit('GetAttr', call(undefined, req), true)),
    'NOT_PERMITTED',
    'TLS brick, no certificate',
  );
  t.equal(admit('TxCommit', call(undefined, req), false), req, 'insecure brick (development): as before');
  const roleless = {
    request: {},
    getAuthContext: () => ({ sslPeerCertificate: { subject: { O: 'x', CN: 'y' } } }),
  };
  t.equal(
    refused(() => admit('GetAttr', roleless, true)),
    'NOT_PERMITTED',
    'a certificate without a role',
  );
});
