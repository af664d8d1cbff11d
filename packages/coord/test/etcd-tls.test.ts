import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, FsError } from '@dunix/proto';
import t from 'tap';
import { Etcd3 } from 'etcd3';
import { initCa, issueCert } from '../src/ca.js';
import {
  EtcdCoordinator,
  EtcdKv,
  keys,
  loadEtcdTls,
  resolveEtcd,
  spawnEtcd,
  spawnEtcdCluster,
  type EtcdProcess,
  type EtcdTls,
} from '../src/index.js';

/**
 * etcd with TLS and client-certificate auth, as the launcher runs it: the
 * coordinator with a certificate of the cluster CA works; a client with no
 * credentials (plain HTTP, TLS without a certificate, a certificate of
 * another CA) is refused and writes nothing (a forged placement); a
 * 3-member TLS cluster keeps serving when one member is SIGKILLed.
 */

const log = createLogger('etcd-tls-test', () => undefined);
const PLACEMENT_PG = 0;

let dir = '';
let etcdDir = '';
let clientTls: EtcdTls;
let otherCaTls: EtcdTls;

t.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dunix-etcd-tls-'));
  await initCa(join(dir, 'ca'));
  await initCa(join(dir, 'other'));
  etcdDir = (await issueCert(join(dir, 'ca'), { role: 'etcd', name: 'etcd0' })).dir;
  clientTls = (await loadEtcdTls({
    tlsDir: (await issueCert(join(dir, 'ca'), { role: 'client', name: 'admin' })).dir,
  }))!;
  otherCaTls = (await loadEtcdTls({
    tlsDir: (await issueCert(join(dir, 'other'), { role: 'brick', name: 'b0' })).dir,
  }))!;
});
t.teardown(() => rm(dir, { recursive: true, force: true }));

const serverTls = () => ({
  caFile: join(etcdDir, 'ca.crt'),
  certFile: join(etcdDir, 'tls.crt'),
  keyFile: join(etcdDir, 'tls.key'),
});

t.test('resolveEtcd and loadEtcdTls: clear errors for a mix', async (t) => {
  t.same(resolveEtcd(['127.0.0.1:2379'], undefined), {
    endpoints: ['http://127.0.0.1:2379'],
    tls: undefined,
  });
  t.same(resolveEtcd(['127.0.0.1:2379', 'https://[::1]:2380'], clientTls).endpoints, [
    'https://127.0.0.1:2379',
    'https://[::1]:2380',
  ]);
  t.equal(resolveEtcd(['http://127.0.0.1:2379'], clientTls).tls, undefined, 'explicit http: plain, loopback');
  const err = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return e instanceof FsError ? `${e.code}: ${e.message}` : String(e);
    }
    return 'accepted';
  };
  t.match(
    err(() => resolveEtcd(['https://127.0.0.1:2379'], undefined)),
    /https but no etcd certificate/,
  );
  t.match(
    err(() => resolveEtcd(['http://10.1.2.3:2379'], undefined)),
    /^NOT_PERMITTED: .*non-loopback/,
  );
  t.match(
    err(() => resolveEtcd(['10.1.2.3:2379'], undefined)),
    /^NOT_PERMITTED/,
    'bare remote without TLS',
  );
  t.match(
    err(() => resolveEtcd(['http://127.0.0.1:1', 'https://127.0.0.1:2'], clientTls)),
    /mix http and https/,
  );
  t.match(
    err(() => resolveEtcd(['ftp://x:1'], undefined)),
    /expected \[https:\/\/\]HOST:PORT/,
  );
  t.match(
    err(() => resolveEtcd([], undefined)),
    /no etcd endpoints/,
  );
  await t.rejects(loadEtcdTls({ ca: '/x' }), /go together/);
  await t.rejects(loadEtcdTls({ tlsDir: join(dir, 'none') }), /^etcd (CA|certificate|key) .*ENOENT/);
  const loose = (await issueCert(join(dir, 'ca'), { role: 'client', name: 'loose' })).dir;
  await chmod(join(loose, 'tls.key'), 0o644);
  await t.rejects(loadEtcdTls({ tlsDir: loose }), /mode 0644/);
  t.equal(await loadEtcdTls({}), undefined, 'nothing given: plain');
  t.throws(
    () => new EtcdKv({ endpoints: ['https://127.0.0.1:1'], rpcTimeoutMs: 100, log }),
    /https without certificates/,
  );
});

t.test('one TLS etcd: certificates of the CA in, everyone else out, nothing changed', async (t) => {
  const etcd = await spawnEtcd({ log, tls: serverTls() });
  t.teardown(() => etcd.stop());
  t.match(etcd.endpoint, /^https:\/\/127\.0\.0\.1:\d+$/);
  const coord = new EtcdCoordinator({ endpoints: [etcd.endpoint], tls: clientTls, log });
  t.teardown(() => coord.stop());
  await coord.start();
  const kv = new EtcdKv({ endpoints: [etcd.endpoint], tls: clientTls, rpcTimeoutMs: 5000, log });
  t.teardown(() => kv.close());
  const key = keys.placement('v', PLACEMENT_PG);
  const real = JSON.stringify({ pg: 0, bricks: ['b0'], isr: ['b0'], epoch: 1 });
  await kv.put({ key, value: real });
  t.equal((await kv.get(key))?.value, real, 'a client certificate of the CA reads and writes');

  const forged = JSON.stringify({ pg: 0, bricks: ['evil'], isr: ['evil'], epoch: 99 });
  const attempts: [string, () => EtcdKv][] = [
    [
      'plain http to the TLS port',
      () => new EtcdKv({ endpoints: [etcd.endpoint.replace('https', 'http')], rpcTimeoutMs: 3000, log }),
    ],
    [
      'a certificate of another CA',
      () =>
        new EtcdKv({
          endpoints: [etcd.endpoint],
          tls: { ...otherCaTls, ca: clientTls.ca },
          rpcTimeoutMs: 3000,
          log,
        }),
    ],
  ];
  // TLS that trusts the CA but presents no certificate (EtcdKv always presents one).
  const noCert = new Etcd3({ hosts: [etcd.endpoint], credentials: { rootCertificate: clientTls.ca } });
  try {
    await noCert
      .put(key)
      .value(forged)
      .options({ deadline: Date.now() + 3000 })
      .exec();
    t.fail('TLS without a client certificate: the forged placement write succeeded');
  } catch (err) {
    t.pass(
      `TLS without a client certificate: refused (${(err as Error).message.split('\n')[0]!.slice(0, 120)})`,
    );
  } finally {
    noCert.close();
  }
  t.equal((await kv.get(key))?.value, real, 'TLS without a client certificate: the placement is unchanged');
  for (const [what, make] of attempts) {
    let intruder: EtcdKv | undefined;
    try {
      intruder = make();
      await intruder.put({ key, value: forged });
      t.fail(`${what}: the forged placement write succeeded`);
    } catch (err) {
      t.pass(`${what}: refused (${(err as Error).message.split('\n')[0]!.slice(0, 120)})`);
    } finally {
      await intruder?.close();
    }
    t.equal((await kv.get(key))?.value, real, `${what}: the placement is unchanged`);
  }
});

t.test('a 3-member TLS etcd cluster survives a SIGKILLed member', async (t) => {
  const members: EtcdProcess[] = await spawnEtcdCluster({ size: 3, log, tls: serverTls() });
  t.teardown(() => Promise.all(members.map((m) => m.stop())));
  t.equal(new Set(members.map((m) => m.pid)).size, 3, 'three processes');
  const endpoints = members.map((m) => m.endpoint);
  const coord = new EtcdCoordinator({ endpoints, tls: clientTls, log, knobs: { rpcTimeoutMs: 3000 } });
  t.teardown(() => coord.stop());
  await coord.start();
  const kv = new EtcdKv({ endpoints, tls: clientTls, rpcTimeoutMs: 3000, log });
  t.teardown(() => kv.close());
  await kv.put({ key: '/dunix/v1/test/a', value: '1' });
  process.kill(members[0]!.pid, 'SIGKILL');
  // The client moves to another member: any call may still hit the dead one and fail (the
  // etcd3 client picks a member per call), so each is tried again until one answers.
  const deadline = Date.now() + 30_000;
  const eventually = async <T>(call: () => Promise<T>): Promise<T> => {
    for (;;) {
      try {
        return await call();
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  };
  const wrote = await eventually(() => kv.put({ key: '/dunix/v1/test/b', value: '2' })).then(
    () => true,
    () => false,
  );
  t.ok(wrote, 'writes go on with 2 of 3 members');
  t.equal(
    (await eventually(() => kv.get('/dunix/v1/test/a')))?.value,
    '1',
    'what was written before is there',
  );
  t.equal((await eventually(() => kv.get('/dunix/v1/test/b')))?.value, '2', 'and what was written after');
});
