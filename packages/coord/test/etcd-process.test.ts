import { existsSync, readFileSync } from 'node:fs';
import { createLogger } from '@dunix/proto';
import t from 'tap';
import { freePort, listensOn, spawnEtcd } from '../src/index.js';

const log = createLogger('etcd-process-test', () => undefined);

t.test('spawnEtcd: loopback only, healthy, stop removes its temp dir', async (t) => {
  const e = await spawnEtcd({ log });
  t.teardown(() => e.stop());
  t.match(e.endpoint, /^http:\/\/127\.0\.0\.1:\d+$/);
  const args = readFileSync(`/proc/${e.pid}/cmdline`, 'utf8').split('\0');
  const urls = args
    .filter((a) => /urls?=|initial-cluster=/.test(a))
    .flatMap((a) => a.split('=').slice(1).join('=').split(','));
  t.ok(urls.length >= 5, 'all listen/advertise/cluster URLs given');
  for (const u of urls) t.match(u, /^(dunix-etcd=)?http:\/\/127\.0\.0\.1:\d+$/, `${u} is loopback`);
  const res = await fetch(`${e.endpoint}/health`);
  t.match(await res.json(), { health: 'true' }, 'healthy');
  t.ok(listensOn(e.pid, e.clientPort), 'the child itself listens on the client port');
  t.notOk(listensOn(process.pid, e.clientPort), 'another process does not');
  t.ok(existsSync(e.dataDir));
  await e.stop();
  await e.stop();
  t.notOk(existsSync(e.dataDir), 'temp data dir removed');
  t.throws(() => process.kill(e.pid, 0), 'process gone');
});

t.test('spawnEtcd: a given data dir is kept; a busy port fails clearly', async (t) => {
  const fs = await import('node:fs/promises');
  const dir = await fs.mkdtemp('/tmp/dunix-etcd-test-');
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  const e = await spawnEtcd({ dataDir: `${dir}/data`, log });
  t.teardown(() => e.stop());
  await t.rejects(
    spawnEtcd({ clientPort: e.clientPort, log, readyTimeoutMs: 5000 }),
    /in use|not healthy|exited/,
  );
  await e.stop();
  t.ok(existsSync(`${dir}/data/member`), 'data dir kept');
});

t.test('freePort gives distinct usable ports', async (t) => {
  const a = await freePort();
  const b = await freePort();
  t.ok(a > 0 && b > 0);
});
