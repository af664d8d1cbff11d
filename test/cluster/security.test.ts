/**
 * Issue 9 item 5, against one TLS cluster (etcd with client-certificate
 * auth, bricks and the mount with certificates of the cluster CA). Each
 * attack is refused with a clear error and changes nothing, checked after:
 * - an unauthenticated peer (plain TCP, TLS without a client certificate);
 * - a client certificate calling TxPrepare (a brick-to-brick RPC);
 * - a squashed client claiming uid 0 (served as nobody);
 * - a client reading and writing blocks of a file it may not read (block
 *   RPCs called directly: no grant, a grant of another file, of another
 *   certificate, a read grant used to write), and the inode's data calls
 *   (WriteInline, Extend, ConvertInline, Fallocate and ftruncate's SetAttr
 *   need a write grant, Seek any grant of the file; the mount's own calls
 *   carry theirs);
 * - a placement write to etcd without credentials (plain HTTP, TLS without
 *   a client certificate) and with a client's (etcd's RBAC: a client
 *   certificate writes only its mount record and suspect reports, also one
 *   named as a brick; the JSON gateway ignores certificate CNs).
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import t from 'tap';
import { EtcdCoordinator, EtcdKv, keys, loadEtcdTls } from '@dunix/coord';
import {
  blockPg,
  createLogger,
  FrameConn,
  FsError,
  initHashing,
  loadTlsDir,
  pgOfIno,
  type TransportSecurity,
  type wire,
} from '@dunix/proto';
import { bins, startCluster } from '../src/cluster.js';
import { withoutClientCertificate } from '../src/tls-probe.js';

type TlsSecurity = TransportSecurity & { kind: 'tls' };
const NOBODY = 65534;

async function refusal(p: Promise<unknown>): Promise<FsError | string> {
  try {
    await p;
    return 'served';
  } catch (err) {
    return err instanceof FsError ? err : String(err);
  }
}

/** POST to etcd's JSON gateway with the given TLS material; resolves with the status or the error. */
function etcdGateway(
  endpoint: string,
  path: string,
  body: unknown,
  tls: { ca: Buffer; cert?: Buffer; key?: Buffer },
): Promise<string> {
  return new Promise((resolve) => {
    const req = httpsRequest(`${endpoint}${path}`, { method: 'POST', ...tls, timeout: 5000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(`HTTP ${res.statusCode}`));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (err) => resolve(`refused: ${err.message}`));
    req.end(JSON.stringify(body));
  });
}

t.test('security: unauthenticated peers, roles, root squash, block grants, etcd', async (t) => {
  await initHashing();
  const c = await startCluster(t, {
    pgs: 8,
    tls: true,
    etcdAuth: true,
    mountOptions: 'attr_ttl_ms=0,entry_ttl_ms=0',
  });
  const tls = c.tls!;
  const clientSec = tls.client as TlsSecurity;
  const conns: FrameConn[] = [];
  t.teardown(() => conns.forEach((x) => x.close()));
  const frames = (address: string, sec: TransportSecurity | undefined) => {
    const conn = new FrameConn(address, {}, sec);
    conns.push(conn);
    return conn;
  };
  const placement = async (pg: number) => {
    const a = (await c.placement()).find((p) => p.pg === pg)!;
    return {
      header: { pg, epoch: String(a.epoch), requestId: '', attempt: 0 },
      brick: await c.brickOfPg(pg),
    };
  };

  // Files made through the harness's mount (root): a secret 0600 file of three blocks, a public one.
  const blockSize = 1024 * 1024;
  const secret = Buffer.alloc(2 * blockSize + 100, 's');
  mkdirSync(c.path('open'));
  chmodSync(c.path('open'), 0o777);
  writeFileSync(c.path('secret'), secret);
  chmodSync(c.path('secret'), 0o600);
  writeFileSync(c.path('public'), Buffer.alloc(blockSize + 1, 'p'));
  chmodSync(c.path('public'), 0o644);
  writeFileSync(c.path('tiny'), 'tiny secret');
  chmodSync(c.path('tiny'), 0o600);
  const secretIno = statSync(c.path('secret'), { bigint: true }).ino;
  const publicIno = statSync(c.path('public'), { bigint: true }).ino;
  const before = { root: readdirSync(c.path()).sort(), counts: await c.counts() };

  // ---- 1. unauthenticated peers
  const anyBrick = c.bricks[0]!;
  const plain = await refusal(frames(anyBrick.dataAddress, undefined).unary('BrickStatus', {}, 3000));
  t.ok(
    plain instanceof FsError && (plain.code === 'UNAVAILABLE' || plain.code === 'TIMED_OUT'),
    `plain TCP to a brick refused: ${String(plain)}`,
  );
  const noCert = await withoutClientCertificate(anyBrick.dataAddress, clientSec.ca);
  t.match(noCert, /certificate required|alert|reset|closed/i, `TLS without a client certificate: ${noCert}`);

  // ---- 2. a client certificate calling TxPrepare: refused before anything is prepared
  const rootPg = await placement(pgOfIno(1n));
  const client = frames(rootPg.brick.dataAddress, clientSec);
  const prepare = await refusal(
    client.unary(
      'TxPrepare',
      {
        header: rootPg.header,
        txId: 'forged.1',
        coordinatorPg: rootPg.header.pg,
        reads: [],
        writes: [{ key: Buffer.from('forged'), value: Buffer.from('x') }],
      },
      5000,
    ),
  );
  t.equal((prepare as FsError).code, 'NOT_PERMITTED', 'TxPrepare with a client certificate: EPERM');
  t.match(String(prepare), /TxPrepare is a brick-to-brick RPC and needs a brick certificate.*CN=client/);
  const status = await refusal(client.unary('TxStatus', { header: rootPg.header, txId: 'forged.1' }, 5000));
  t.equal((status as FsError).code, 'NOT_PERMITTED', 'nor may it ask what became of it');

  // ---- 3. a squashed client claiming uid 0
  const squashed = await loadTlsDir(
    await tls.issue('client', 'squashed', { squashRoot: true, uidRange: undefined }),
    'client',
  );
  const asRoot = { uid: 0, gid: 0, groups: [0], pid: 1 };
  const openDirIno = statSync(c.path('open'), { bigint: true }).ino;
  const dirPg = await placement(pgOfIno(openDirIno));
  const sq = frames(dirPg.brick.dataAddress, squashed);
  const made = await sq.unary<wire.EntryReply__Output>(
    'Mknod',
    {
      header: { ...dirPg.header, requestId: 'sec-mknod-1' },
      caller: asRoot,
      parent: openDirIno.toString(),
      name: Buffer.from('claimed-root'),
      mode: 0o100644,
      exclusive: true,
      umask: 0,
    },
    5000,
  );
  t.same(
    [made.entry?.attr?.uid, made.entry?.attr?.gid],
    [NOBODY, NOBODY],
    'a file made by "uid 0" belongs to nobody',
  );
  const secretPg = await placement(pgOfIno(secretIno));
  const chmodAsRoot = await refusal(
    frames(secretPg.brick.dataAddress, squashed).unary(
      'SetAttr',
      {
        header: { ...secretPg.header, requestId: 'sec-setattr-1' },
        caller: asRoot,
        ino: secretIno.toString(),
        setMode: true,
        mode: 0o644,
      },
      5000,
    ),
  );
  t.equal((chmodAsRoot as FsError).code, 'NOT_PERMITTED', `chmod of root's file as squashed "root": EPERM`);
  t.equal(statSync(c.path('secret')).mode & 0o777, 0o600, 'the mode is unchanged');

  // ---- 4. blocks of a file the caller may not read
  const user = { uid: 1000, gid: 1000, groups: [1000], pid: 1 };
  const open = (sec: TransportSecurity, ino: bigint, caller: typeof user, flags: number) =>
    placement(pgOfIno(ino)).then((p) =>
      frames(p.brick.dataAddress, sec).unary<wire.AttrReply__Output>(
        'Open',
        { header: p.header, caller, ino: ino.toString(), flags },
        5000,
      ),
    );
  const openSecret = await refusal(open(clientSec, secretIno, user, 0));
  t.equal((openSecret as FsError).code, 'PERMISSION_DENIED', 'uid 1000 may not open the 0600 file: no grant');
  const publicGrant = (await open(clientSec, publicIno, user, 0)).grant;
  t.ok(publicGrant?.signature.length, 'an Open of a readable file gives a grant');
  const rootGrant = (await open(clientSec, secretIno, asRoot, 0)).grant!;
  const otherDir = await tls.issue('client', 'other');
  const otherClient = await loadTlsDir(otherDir, 'client');
  const block0 = await placement(blockPg(secretIno, 0n, 8));
  const readBlock = (sec: TransportSecurity, grant: wire.BlockGrant__Output | null) =>
    frames(block0.brick.dataAddress, sec).unary<wire.ReadBlockReply__Output>(
      'ReadBlock',
      { header: block0.header, ino: secretIno.toString(), index: '0', offset: 0, length: 4096, grant },
      5000,
    );
  const cases: [string, TransportSecurity, wire.BlockGrant__Output | null, RegExp][] = [
    ['no grant', clientSec, null, /no block grant/],
    ['a grant of another file (one it may read)', clientSec, publicGrant, /the grant is for inode/],
    ["another certificate's grant", otherClient, rootGrant, /issued to CN=client/],
  ];
  for (const [what, sec, grant, why] of cases) {
    const r = await refusal(readBlock(sec, grant));
    t.equal((r as FsError).code, 'PERMISSION_DENIED', `ReadBlock of the 0600 file with ${what}: EACCES`);
    t.match(String(r), why, `the reason: ${String(r)}`);
  }
  const served = await readBlock(clientSec, rootGrant);
  t.ok(served.data.equals(secret.subarray(0, 4096)), "with the holder's own grant the block is served");
  const writeBlock = await refusal(
    frames(block0.brick.dataAddress, clientSec).unary(
      'WriteBlock',
      {
        header: block0.header,
        ino: secretIno.toString(),
        index: '0',
        offset: 0,
        data: Buffer.from('PWNED'),
        grant: rootGrant,
      },
      5000,
    ),
  );
  t.equal((writeBlock as FsError).code, 'PERMISSION_DENIED', 'WriteBlock with a read grant: EACCES');
  t.match(String(writeBlock), /opened for reading only/);
  t.ok(readFileSync(c.path('secret')).equals(secret), 'the file is unchanged');

  // The harness's own mount still copies server-side (CopyBlock carries a grant for each file).
  const copied = spawnSync(
    'python3',
    [
      '-c',
      'import os,sys\ns=os.open(sys.argv[1],os.O_RDONLY)\nd=os.open(sys.argv[2],os.O_WRONLY|os.O_CREAT,0o644)\n' +
        'n=0\nwhile True:\n  k=os.copy_file_range(s,d,1<<20)\n  n+=k\n  if k==0: break\nprint(n)',
      c.path('public'),
      c.path('open', 'copy'),
    ],
    { encoding: 'utf8', timeout: 60_000 },
  );
  t.equal(copied.status, 0, `copy_file_range through the mount: ${copied.stderr.trim()}`);
  t.ok(
    readFileSync(c.path('open', 'copy')).equals(readFileSync(c.path('public'))),
    'the server-side copy (CopyBlock with grants) has the bytes',
  );

  // ---- 5. a placement write to etcd without credentials
  const etcd = c.etcd.endpoint;
  t.match(etcd, /^https:/, 'etcd runs with TLS');
  const placementBefore = JSON.stringify(await c.placement());
  const forged = {
    key: Buffer.from(keys.placement(c.volume, 0)).toString('base64'),
    value: Buffer.from(JSON.stringify({ pg: 0, bricks: ['evil'], isr: ['evil'], epoch: 999 })).toString(
      'base64',
    ),
  };
  const plainEtcd = await fetch(`${etcd.replace('https:', 'http:')}/v3/kv/put`, {
    method: 'POST',
    body: JSON.stringify(forged),
    signal: AbortSignal.timeout(5000),
  }).then(
    (r) => `HTTP ${r.status}`,
    (err: Error) => `refused: ${err.message}`,
  );
  t.match(plainEtcd, /^refused/, `plain HTTP to etcd: ${plainEtcd}`);
  const noCertEtcd = await etcdGateway(etcd, '/v3/kv/put', forged, { ca: clientSec.ca });
  t.match(
    noCertEtcd,
    /^refused: .*(certificate|alert|reset|hang up)/i,
    `TLS without a certificate: ${noCertEtcd}`,
  );
  const withCert = await etcdGateway(etcd, '/v3/kv/put', forged, clientSec);
  t.equal(
    withCert,
    'HTTP 400',
    "the JSON gateway refuses a client certificate (it cannot check the CN's rights)",
  );

  // etcd's RBAC: a client certificate (one named like a brick too) reads placement, writes none.
  const etcdAs = async (tlsDir: string) => {
    const kv = new EtcdKv({
      endpoints: [etcd],
      tls: await loadEtcdTls({ tlsDir }),
      rpcTimeoutMs: 5000,
      log: createLogger('security-test', () => undefined),
    });
    t.teardown(() => kv.close());
    return kv;
  };
  const asClient = await etcdAs(clientSec.dir);
  const asBrickNamedClient = await etcdAs(await tls.issue('client', 'brick0'));
  const evil = JSON.stringify({ pg: 0, bricks: ['evil'], isr: ['evil'], epoch: 999 });
  t.ok((await asClient.get(keys.placement(c.volume, 0)))?.value, 'a client certificate reads placement');
  for (const [who, kv] of [
    ["the mount's client certificate", asClient],
    ['a client certificate named brick0 (CN=client:brick0)', asBrickNamedClient],
  ] as const) {
    for (const [what, op] of [
      ['put placement/0', () => kv.put({ key: keys.placement(c.volume, 0), value: evil })],
      ['delete placement/0', () => kv.txn([], [], [keys.placement(c.volume, 0)])],
      ['put config', () => kv.put({ key: keys.config(c.volume), value: '{}' })],
      ['put members/evil', () => kv.put({ key: keys.member(c.volume, 'evil'), value: '{}' })],
      [
        'put a key of another volume',
        () => kv.put({ key: keys.mount('other', 'm-000000000001'), value: '{}' }),
      ],
    ] as const) {
      const r = await refusal(op());
      t.equal((r as FsError).code, 'NOT_PERMITTED', `${who}: ${what} refused`);
      t.match(String(r), /permission denied/, `with etcd's reason: ${String(r)}`);
    }
  }
  // A client reports suspects under its own name only (keys.ts); the rest of suspects/ and the
  // `mounted` stamp of earlier versions are not its to write.
  const suspectKey = keys.suspect(c.volume, 'client~m-000000000001', 'no-such-brick');
  await asClient.put({ key: suspectKey, value: '{}' });
  t.equal((await asClient.get(suspectKey))?.value, '{}', 'a client may report a suspect in its name');
  await asClient.txn([], [], [suspectKey]);
  for (const [what, key] of [
    ["another client's report", keys.suspect(c.volume, 'other~m-000000000001', 'no-such-brick')],
    ["a brick's report", keys.suspect(c.volume, 'brick0', 'no-such-brick')],
    ['a report without a reporter', `${keys.suspects(c.volume)}no-such-brick`],
    ['the mounted stamp', keys.mountStamp(c.volume)],
  ] as const) {
    const r = await refusal(asClient.put({ key, value: '{}' }));
    t.equal((r as FsError).code, 'NOT_PERMITTED', `the client may not write ${what}`);
  }
  t.equal(JSON.stringify(await c.placement()), placementBefore, 'the placement is unchanged');
  const configBefore = (await c.coord.getVolume(c.volume))!;
  const asCtl = spawnSync(
    process.execPath,
    [bins.dunixctl, '--etcd', etcd, '--tls-dir', clientSec.dir, 'volume', 'set', c.volume, 'min_insync', '1'],
    { encoding: 'utf8', timeout: 60_000 },
  );
  t.equal(asCtl.status, 1, 'dunixctl with a client certificate may not change a volume');
  t.match(asCtl.stderr, /permission denied/, `dunixctl says why: ${asCtl.stderr.trim().split('\n').pop()}`);
  t.same(await c.coord.getVolume(c.volume), configBefore, 'the config is unchanged');
  t.equal(c.ctl(['volume', 'mounts', c.volume]).status, 0, 'the admin certificate lists the mounts');
  t.match(c.ctl(['volume', 'mounts', c.volume]).stdout, /m-[0-9a-f]{12}/, 'the mount registered its record');

  // A client's session records are its own: another client certificate (an etcd user too)
  // reads them but may neither rewrite nor delete them (the bricks would drop that
  // session's locks and reclaim its O_TMPFILE orphans); it writes under its own name.
  const [record] = await c.coord.listMounts(c.volume);
  t.match(record?.id, /^client~m-[0-9a-f]{12}$/, `the mount is named after its certificate: ${record?.id}`);
  const added = c.ctl(['etcd', 'user', 'add', 'client:other']);
  t.equal(added.status, 0, `dunixctl etcd user add client:other: ${added.stderr.trim()}`);
  const asOther = await etcdAs(otherDir);
  const recordKey = keys.mount(c.volume, record!.id);
  const recordBefore = (await asOther.get(recordKey))?.value;
  t.ok(recordBefore, "another client reads the mount's record");
  for (const [what, op] of [
    ['rewrite', () => asOther.put({ key: recordKey, value: '{}' })],
    ['delete', () => asOther.txn([], [], [recordKey])],
    [
      'add a record in its name',
      () => asOther.put({ key: keys.mount(c.volume, 'client~m-000000000001'), value: '{}' }),
    ],
    [
      'add a record outside any name',
      () => asOther.put({ key: keys.mount(c.volume, 'm-000000000001'), value: '{}' }),
    ],
  ] as const) {
    const r = await refusal(op());
    t.equal((r as FsError).code, 'NOT_PERMITTED', `client:other may not ${what}`);
  }
  t.equal((await c.coord.listMounts(c.volume))[0]?.id, record!.id, 'the record is still there');
  t.equal((await asOther.get(recordKey))?.value, recordBefore, 'unchanged');
  const ownKey = keys.mount(c.volume, 'other~m-000000000001');
  await asOther.put({ key: ownKey, value: '{}' });
  await asOther.txn([], [], [ownKey]);
  t.pass('client:other writes and deletes records under its own name');

  // The mount's own path for a refused connection (Coordinator.reportSuspect, as dunixfs calls it
  // with its session id): allowed in its name, refused in another's.
  const reporting = new EtcdCoordinator({
    endpoints: [etcd],
    tls: await loadEtcdTls({ tlsDir: clientSec.dir }),
    log: createLogger('security-test', () => undefined),
  });
  await reporting.start();
  t.teardown(() => reporting.stop());
  const reports: string[][] = [];
  const unwatch = await c.coord.watchSuspects(c.volume, (s) => reports.push(s.map((x) => x.brickId)));
  await reporting.reportSuspect(c.volume, 'no-such-brick', record!.id);
  const reportDeadline = Date.now() + 10_000;
  while (!reports.at(-1)?.includes('no-such-brick') && Date.now() < reportDeadline)
    await new Promise((r) => setTimeout(r, 50));
  t.same(
    reports.at(-1),
    ['no-such-brick'],
    "the mount's report in its own name reaches the controller's watch",
  );
  await unwatch();
  const forgedReport = await refusal(reporting.reportSuspect(c.volume, 'brick0', 'other~m-000000000001'));
  t.equal((forgedReport as FsError).code, 'NOT_PERMITTED', "a report in another client's name is refused");

  // Nothing else changed either: the root directory, the stored inodes and blocks (but the one file made).
  t.same(readdirSync(c.path()).sort(), before.root, 'the root directory is as it was');
  const after = await c.counts();
  t.equal(after.blocks, before.counts.blocks + 2, "no block was added or removed but the copy's two");
  t.ok(
    readdirSync(c.path('open')).includes('claimed-root'),
    "the squashed client's file is where it made it",
  );

  // ---- 6. the inode's data calls (size, map, inline content) of a file the caller may not write
  const tinyIno = statSync(c.path('tiny'), { bigint: true }).ino;
  const inodeCall = async (
    ino: bigint,
    method: string,
    body: Record<string, unknown>,
    grant: wire.BlockGrant__Output | null,
    n: number,
  ) => {
    const p = await placement(pgOfIno(ino));
    return frames(p.brick.dataAddress, clientSec).unary(
      method,
      { header: { ...p.header, requestId: `sec-inode-${n}` }, ino: ino.toString(), grant, ...body },
      5000,
    );
  };
  const sizeBefore = statSync(c.path('secret')).size;
  const tinyOpened = await open(clientSec, tinyIno, asRoot, 0);
  const tinyVersion = tinyOpened.attr!.dataVersion;
  const readGrants = new Map([
    [secretIno, rootGrant],
    [tinyIno, tinyOpened.grant!],
  ]);
  const inodeCases: [string, bigint, string, Record<string, unknown>][] = [
    ['WriteInline', tinyIno, 'WriteInline', { caller: asRoot, offset: '0', data: Buffer.from('PWNED') }],
    ['Extend', secretIno, 'Extend', { caller: asRoot, end: String(8 * blockSize), allocMap: true }],
    ['ConvertInline', tinyIno, 'ConvertInline', { dataVersion: tinyVersion }],
    ['Fallocate (punch)', secretIno, 'Fallocate', { caller: asRoot, mode: 3, offset: '0', length: '4096' }],
    [
      'ftruncate (SetAttr from an open file)',
      secretIno,
      'SetAttr',
      { caller: user, setSize: true, size: '0', viaOpenFile: true },
    ],
  ];
  let n = 0;
  for (const [what, ino, method, body] of inodeCases) {
    for (const [how, grant, why] of [
      ['no grant', null, /no block grant/],
      ['a read grant of it', readGrants.get(ino)!, /opened for reading only/],
      ["another file's write grant", publicGrant, /the grant is for inode/],
    ] as const) {
      const r = await refusal(inodeCall(ino, method, body, grant, n++));
      t.equal(
        (r as FsError).code,
        'PERMISSION_DENIED',
        `${what} of a file not opened for writing, ${how}: EACCES`,
      );
      t.match(String(r), why, `the reason: ${String(r)}`);
    }
  }
  const seekCall = (grant: wire.BlockGrant__Output | null) =>
    inodeCall(secretIno, 'Seek', { offset: '0', whence: 3 }, grant, n++);
  const seekRefused = await refusal(seekCall(null));
  t.equal((seekRefused as FsError).code, 'PERMISSION_DENIED', 'Seek (SEEK_DATA) without a grant: EACCES');
  t.match(
    String(await refusal(seekCall(publicGrant))),
    /the grant is for inode/,
    "nor with another file's grant",
  );
  t.same(await seekCall(rootGrant), { offset: '0' }, 'Seek with a grant of the file (read) is served');
  t.equal(statSync(c.path('secret')).size, sizeBefore, 'the size is unchanged');
  t.ok(readFileSync(c.path('secret')).equals(secret), 'the content is unchanged');
  t.equal(readFileSync(c.path('tiny'), 'utf8'), 'tiny secret', 'the inline file is unchanged');
  t.equal((await open(clientSec, tinyIno, asRoot, 0)).attr!.inline, true, 'and still inline');

  // The mount's own calls carry their grants: an inline write, a conversion to blocks, fallocate, SEEK_DATA.
  const py = (code: string, ...args: string[]) =>
    spawnSync('python3', ['-c', code, ...args], { encoding: 'utf8', timeout: 60_000 });
  const viaMount = py(
    'import os,sys\n' +
      'd=os.open(sys.argv[1],os.O_RDWR|os.O_CREAT,0o600)\nos.write(d,b"x"*100)\nos.fsync(d)\n' +
      'os.write(d,b"y"*200000)\nos.fsync(d)\nos.posix_fallocate(d,0,3000000)\nos.fsync(d)\n' +
      'print(os.lseek(d,0,os.SEEK_DATA), os.fstat(d).st_size)\nos.ftruncate(d,1000)\nprint(os.fstat(d).st_size)',
    c.path('open', 'mine'),
  );
  t.equal(
    viaMount.status,
    0,
    `write, grow past inline, fallocate, SEEK_DATA through the mount: ${viaMount.stderr.trim()}`,
  );
  t.equal(
    viaMount.stdout.trim(),
    '0 3000000\n1000',
    'SEEK_DATA and the size after fallocate, then ftruncate',
  );
});
