import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { initCa, issueCert } from '@dunix/coord/ca';
import { FsError, INSECURE_PEER, loadTlsDir, type PeerIdentity, type wire } from '@dunix/proto';
import {
  BlockGrants,
  checkBlockCall,
  GRANT_READ,
  GRANT_WRITE,
  rightsOfOpenFlags,
  withGrant,
} from '../../src/rpc/block-grants.js';

/**
 * Block grants: an Open answered for a client certificate carries a grant
 * signed by the inode's primary; a block call of a client certificate is
 * served only with a grant of a brick of this CA, for that inode, that
 * certificate and that right, not expired. Bricks and insecure peers need none.
 */

const client = (name: string): PeerIdentity => ({
  kind: 'certificate',
  role: 'client',
  name,
  policy: { squashRoot: false, uidRange: undefined },
});
const brickPeer: PeerIdentity = {
  kind: 'certificate',
  role: 'brick',
  name: 'b9',
  policy: { squashRoot: false, uidRange: undefined },
};

function code(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    return err instanceof FsError ? `${err.code}: ${err.message}` : `not an FsError: ${String(err)}`;
  }
  return 'served';
}

t.test('block grants', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'dunix-grants-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await initCa(join(dir, 'ca'));
  await initCa(join(dir, 'other'));
  const b0 = await loadTlsDir((await issueCert(join(dir, 'ca'), { role: 'brick', name: 'b0' })).dir, 'brick');
  const b1 = await loadTlsDir((await issueCert(join(dir, 'ca'), { role: 'brick', name: 'b1' })).dir, 'brick');
  const cl = await loadTlsDir(
    (await issueCert(join(dir, 'ca'), { role: 'client', name: 'c1' })).dir,
    'client',
  );
  const foreign = await loadTlsDir(
    (await issueCert(join(dir, 'other'), { role: 'brick', name: 'b0' })).dir,
    'brick',
  );
  let now = Date.now();
  const opts = { ttlMs: 60_000, cacheMax: 4, nowMs: () => now };
  const issuer = new BlockGrants({ ...opts, security: b0 });
  const checker = new BlockGrants({ ...opts, security: b1 });

  const rw = issuer.issue(5n, GRANT_READ | GRANT_WRITE, 'c1');
  const ro = issuer.issue(5n, GRANT_READ, 'c1');
  t.equal(
    issuer.issue(5n, GRANT_READ, 'c1'),
    ro,
    'the same open again reuses the grant (no second signature)',
  );
  t.equal(
    code(() => checker.check('ReadBlock', client('c1'), rw, 5n, GRANT_READ)),
    'served',
    'read with rw',
  );
  t.equal(
    code(() => checker.check('WriteBlock', client('c1'), rw, 5n, GRANT_WRITE)),
    'served',
    'write with rw',
  );
  t.match(
    code(() => checker.check('WriteBlock', client('c1'), ro, 5n, GRANT_WRITE)),
    /^PERMISSION_DENIED: .*opened for reading only/,
    'a read grant does not write',
  );
  t.match(
    code(() => checker.check('ReadBlock', client('c1'), rw, 6n, GRANT_READ)),
    /^PERMISSION_DENIED: .*the grant is for inode 5/,
    'another inode',
  );
  t.match(
    code(() => checker.check('ReadBlock', client('c2'), rw, 5n, GRANT_READ)),
    /^PERMISSION_DENIED: .*issued to CN=c1/,
    "another certificate's grant",
  );
  t.match(
    code(() => checker.check('ReadBlock', client('c1'), null, 5n, GRANT_READ)),
    /^PERMISSION_DENIED: .*ReadBlock of inode 5 by the client certificate CN=c1: no block grant/,
    'no grant',
  );
  const widened = { ...ro, rights: GRANT_READ | GRANT_WRITE };
  t.match(
    code(() => checker.check('WriteBlock', client('c1'), widened, 5n, GRANT_WRITE)),
    /^NOT_PERMITTED: .*signature does not verify/,
    'rights changed after signing',
  );
  const b1Grant = checker.issue(5n, GRANT_READ | GRANT_WRITE, 'c1');
  const keySwapped = {
    ...ro,
    rights: GRANT_READ | GRANT_WRITE,
    grantKey: b1Grant.grantKey,
    signature: b1Grant.signature,
  };
  t.match(
    code(() => checker.check('WriteBlock', client('c1'), keySwapped, 5n, GRANT_WRITE)),
    /^NOT_PERMITTED: .*not vouched for by its issuer CN=brick:b0/,
    "another brick's grant key under b0's certificate",
  );
  const byClient = new BlockGrants({ ...opts, security: cl }).issue(5n, GRANT_READ, 'c1');
  t.match(
    code(() => checker.check('ReadBlock', client('c1'), byClient, 5n, GRANT_READ)),
    /^NOT_PERMITTED: .*signed by the client CN=client:c1/,
    'a client cannot sign its own grant',
  );
  const byOtherCa = new BlockGrants({ ...opts, security: foreign }).issue(5n, GRANT_READ, 'c1');
  t.match(
    code(() => checker.check('ReadBlock', client('c1'), byOtherCa, 5n, GRANT_READ)),
    /^NOT_PERMITTED: .*not issued by a brick of this cluster's CA/,
    "a brick of another CA's grant",
  );
  t.equal(
    code(() => checker.check('ReadBlock', brickPeer, null, 5n, GRANT_READ)),
    'served',
    'bricks need none',
  );
  t.equal(
    code(() => checker.check('ReadBlock', INSECURE_PEER, null, 5n, GRANT_READ)),
    'served',
    'insecure: none',
  );

  now += 60_000;
  t.match(
    code(() => checker.check('ReadBlock', client('c1'), rw, 5n, GRANT_READ)),
    /^PERMISSION_DENIED: .*expired/,
    'expired (also once verified and remembered)',
  );
  const fresh = issuer.issue(5n, GRANT_READ, 'c1');
  t.not(fresh, ro, 'a grant past half its life is signed again');

  // The RPC hooks: which request fields are checked, which replies carry a grant.
  const read = { ino: '5', grant: fresh };
  t.equal(
    code(() => checkBlockCall(checker, 'ReadBlock', client('c1'), read)),
    'served',
  );
  t.match(
    code(() => checkBlockCall(checker, 'WriteBlock', client('c1'), read)),
    /^PERMISSION_DENIED/,
  );
  t.match(
    code(() =>
      checkBlockCall(checker, 'CopyBlock', client('c1'), { dstIno: '5', srcIno: '5', srcGrant: fresh }),
    ),
    /^PERMISSION_DENIED: .*CopyBlock .*no block grant/,
    'CopyBlock needs a write grant for its destination',
  );
  t.equal(
    code(() => checkBlockCall(checker, 'GetAttr', client('c1'), { ino: '5' })),
    'served',
    'others pass',
  );
  t.equal(rightsOfOpenFlags(0), GRANT_READ);
  t.equal(rightsOfOpenFlags(1), GRANT_WRITE);
  t.equal(rightsOfOpenFlags(2), GRANT_READ | GRANT_WRITE);
  const attr = { ino: '9', mode: 0o100644 } as wire.Attr;
  const opened = withGrant(issuer, 'Open', client('c1'), { flags: 0 }, { attr }) as unknown as {
    grant: wire.BlockGrant__Output;
  };
  t.match(opened.grant, { ino: '9', rights: GRANT_READ, holder: 'c1' }, 'Open gives the grant of its flags');
  const dirAttr = { ino: '9', mode: 0o40755 } as wire.Attr;
  t.notOk(
    (withGrant(issuer, 'Open', client('c1'), { flags: 0 }, { attr: dirAttr }) as { grant?: unknown }).grant,
    'no grant for a directory',
  );
  const created = withGrant(
    issuer,
    'Mknod',
    client('c1'),
    {},
    { entry: { attr }, existed: false },
  ) as unknown as {
    grant: wire.BlockGrant__Output;
  };
  t.equal(created.grant.rights, GRANT_READ | GRANT_WRITE, 'the creator reads and writes');
  t.notOk(
    (withGrant(issuer, 'Open', brickPeer, { flags: 0 }, { attr }) as { grant?: unknown }).grant,
    'bricks get none',
  );
});
