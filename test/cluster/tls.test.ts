/**
 * A cluster with mutual TLS everywhere the data goes (etcd stays plain):
 * bricks with brick certificates (--tls-dir), the mount with a client
 * certificate (tls_dir). Files written through the mount are replicated and
 * renamed across PGs (brick-to-brick calls over TLS); a client certificate
 * calling a brick-to-brick RPC is refused with a clear error on both
 * transports; a connection without a certificate, or with one of another
 * CA, is refused; a mount whose certificate squashes root cannot chown,
 * chmod or write root's files, and what it creates belongs to nobody.
 */
import {
  appendFileSync,
  chmodSync,
  chownSync,
  mkdirSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { initCa, issueCert } from '@dunix/coord/ca';
import {
  brickClient,
  callUnary,
  FrameConn,
  FsError,
  loadTlsDir,
  type BrickConn,
  type TransportSecurity,
} from '@dunix/proto';
import { startCluster } from '../src/cluster.js';
import { withoutClientCertificate } from '../src/tls-probe.js';

const NOBODY = 65534;

type TlsSecurity = TransportSecurity & { kind: 'tls' };

/** The FsError a call failed with (fails the test if it succeeded). */
async function refusal(
  t: { fail(msg: string): void },
  p: Promise<unknown>,
  what: string,
): Promise<FsError | undefined> {
  try {
    await p;
    t.fail(`${what}: succeeded`);
    return undefined;
  } catch (err) {
    if (!(err instanceof FsError)) {
      t.fail(`${what}: not an FsError: ${String(err)}`);
      return undefined;
    }
    return err;
  }
}

t.test('mutual TLS: data path, roles, unauthenticated peers, root squash', async (t) => {
  const c = await startCluster(t, { pgs: 8, tls: true });
  const tls = c.tls!;
  for (const b of c.bricks)
    t.notMatch(readFileSync(b.logFile, 'utf8'), /INSECURE TRANSPORT/, `brick${b.index} runs with TLS`);
  t.notMatch(
    readFileSync(join(c.base, 'logs/client.log'), 'utf8'),
    /INSECURE TRANSPORT/,
    'so does the client',
  );

  // The data path: replicated writes, a rename across directories (a cross-PG transaction between bricks).
  const data = Buffer.alloc(3 * 1024 * 1024 + 17, 7);
  mkdirSync(c.path('a'));
  mkdirSync(c.path('b'));
  writeFileSync(c.path('a', 'big'), data);
  writeFileSync(c.path('a', 'small'), 'hello over TLS\n');
  renameSync(c.path('a', 'big'), c.path('b', 'big'));
  t.ok(
    readFileSync(c.path('b', 'big')).equals(data),
    '3 MiB file reads back after a rename across directories',
  );
  t.equal(readFileSync(c.path('a', 'small'), 'utf8'), 'hello over TLS\n');
  const counts = await c.counts();
  t.ok(counts.blocks >= 4, `blocks counted (BrickStatus over gRPC with TLS): ${counts.blocks}`);

  const brick = c.bricks[0]!;
  const header = { pg: 0, epoch: '1', requestId: '' };
  const conns: BrickConn[] = [];
  t.teardown(() => conns.forEach((x) => x.close()));
  const frames = (sec: TransportSecurity | undefined) => {
    const conn = new FrameConn(brick.dataAddress, {}, sec);
    conns.push(conn);
    return conn;
  };

  // A client certificate calling brick-to-brick RPCs: refused, on frames and on gRPC.
  const client = frames(tls.client);
  for (const method of ['TxPrepare', 'Replicate', 'AllocIno', 'FetchBlock']) {
    const err = await refusal(
      t,
      client.unary(
        method,
        { header, txId: 'x.1', coordinatorPg: 0, reads: [], writes: [], ino: '1', index: '0' },
        5000,
      ),
      `${method} with a client certificate`,
    );
    t.equal(err?.code, 'NOT_PERMITTED', `${method} over frames: NOT_PERMITTED`);
    t.match(
      err?.message ?? '',
      /brick-to-brick RPC and needs a brick certificate.*client certificate CN=client/,
    );
  }
  const grpcClient = brickClient(brick.address, tls.client);
  t.teardown(() => grpcClient.close());
  const viaGrpc = await refusal(
    t,
    callUnary(
      grpcClient,
      'TxPrepare',
      { header, txId: 'x.1', coordinatorPg: 0, reads: [], writes: [] },
      5000,
    ),
    'TxPrepare over gRPC with a client certificate',
  );
  t.equal(viaGrpc?.code, 'NOT_PERMITTED', 'TxPrepare over gRPC: NOT_PERMITTED');
  t.match(viaGrpc?.message ?? '', /needs a brick certificate/);
  // The same client may call what clients call.
  const status = await client.unary<{ brickId: string }>('BrickStatus', {}, 5000);
  t.equal(status.brickId, brick.id, 'BrickStatus with the client certificate');

  // A brick certificate may call them (the answer is the brick's, not a refusal).
  const peer = frames(await loadTlsDir(await tls.issue('brick', 'tool'), 'brick'));
  const asBrick = await peer.unary('TxStatus', { header, txId: 'x.1' }, 5000).catch((e: unknown) => e);
  t.not(
    (asBrick as FsError).code,
    'NOT_PERMITTED',
    `TxStatus with a brick certificate is served: ${String(asBrick)}`,
  );

  // No certificate at all: plain TCP to a TLS port, a TLS client without a certificate.
  const plain = await refusal(
    t,
    frames(undefined).unary('BrickStatus', {}, 3000),
    'plain TCP to the TLS data port',
  );
  t.ok(plain?.code === 'UNAVAILABLE' || plain?.code === 'TIMED_OUT', `plain TCP refused: ${plain?.message}`);
  const noCert = await withoutClientCertificate(brick.dataAddress, (tls.client as TlsSecurity).ca);
  t.match(
    noCert,
    /certificate required|alert|reset|closed/i,
    `TLS without a client certificate: refused (${noCert})`,
  );

  // Another CA's client certificate, and a brick is not trusted by another CA's client.
  const otherDir = join(c.base, 'other-ca');
  await initCa(otherDir);
  const other = await loadTlsDir(
    (await issueCert(otherDir, { role: 'client', name: 'client' })).dir,
    'client',
  );
  const foreign = await refusal(
    t,
    frames(other).unary('BrickStatus', {}, 3000),
    'a certificate of another CA',
  );
  t.equal(foreign?.code, 'UNAVAILABLE', `another CA's certificate: refused (${foreign?.message})`);
  t.match(
    foreign?.message ?? '',
    /certificate|self.signed|unknown ca|alert/i,
    'the reason names the certificate',
  );
  const stranger = await refusal(
    t,
    frames({ ...(other as TlsSecurity), ca: (tls.client as TlsSecurity).ca }).unary('BrickStatus', {}, 3000),
    "another CA's client certificate, our CA trusted",
  );
  t.equal(stranger?.code, 'UNAVAILABLE', `the brick refuses another CA's client (${stranger?.message})`);
  t.match(stranger?.message ?? '', /unknown ca|certificate|alert|closed|reset/i);
  const logs = c.bricks.map((b) => readFileSync(b.logFile, 'utf8')).join('');
  t.match(logs, /TLS handshake refused/, 'the brick logs the refused handshakes');

  // Root squash: files of root made through the harness's mount, then a mount whose certificate squashes root.
  writeFileSync(c.path('rootfile'), 'root only\n');
  chmodSync(c.path('rootfile'), 0o644);
  mkdirSync(c.path('rootdir'), { mode: 0o755 });
  mkdirSync(c.path('open'));
  chmodSync(c.path('open'), 0o777);
  await c.unmount();
  const squashed = await tls.issue('client', 'squashed', { squashRoot: true, uidRange: undefined });
  await c.mount(`tls_dir=${squashed},attr_ttl_ms=0,entry_ttl_ms=0`);
  const errno = (f: () => void) => {
    try {
      f();
      return 'ok';
    } catch (err) {
      return (err as NodeJS.ErrnoException).code;
    }
  };
  t.equal(
    errno(() => chownSync(c.path('rootfile'), 1000, 1000)),
    'EPERM',
    'squashed root cannot chown a root file',
  );
  t.equal(
    errno(() => chmodSync(c.path('rootfile'), 0o666)),
    'EPERM',
    'nor chmod it',
  );
  t.equal(
    errno(() => appendFileSync(c.path('rootfile'), 'more')),
    'EACCES',
    'nor write it',
  );
  t.equal(
    errno(() => writeFileSync(c.path('rootdir', 'new'), 'x')),
    'EACCES',
    "nor create in root's 0755 dir",
  );
  t.equal(
    readFileSync(c.path('rootfile'), 'utf8'),
    'root only\n',
    'the file is unchanged (others may read it)',
  );
  writeFileSync(c.path('open', 'mine'), 'made by squashed root\n');
  const st = statSync(c.path('open', 'mine'));
  t.same([st.uid, st.gid], [NOBODY, NOBODY], 'what it creates belongs to nobody');
  const owner = statSync(c.path('rootfile'));
  t.same([owner.uid, owner.mode & 0o777], [0, 0o644], 'root still owns its file, mode unchanged');
});
