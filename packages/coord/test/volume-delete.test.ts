import { createLogger } from '@dunix/proto';
import t, { type Test } from 'tap';
import { keys, MemoryCoordinator, MemoryKv, type MountInfo, volumeConfig } from '../src/index.js';
import { brick, waitFor } from './compliance.js';
import { runCli } from './helpers/cli.js';

const log = createLogger('volume-delete-test', () => undefined);

const mountInfo = (id: string, over: Partial<MountInfo> = {}): MountInfo => ({
  id,
  host: 'client1',
  pid: 1234,
  mountPoint: `/mnt/${id}`,
  startedAtMs: Date.now() - 90_000,
  version: '0.1.0',
  ...over,
});

/** A volume `v` (2 bricks, 8 PGs) whose bricks' session is returned, and a client session. */
async function setup(t: Test) {
  const kv = new MemoryKv();
  const bricks = new MemoryCoordinator({ kv, log });
  const client = new MemoryCoordinator({ kv, log });
  t.teardown(async () => {
    await bricks.stop();
    await client.stop();
  });
  await bricks.start();
  await client.start();
  for (let i = 0; i < 2; i++) await bricks.registerBrick('v', brick(i), 2000);
  await bricks.createVolume(volumeConfig('v', { pgCount: 8, replicas: 2 }));
  return { kv, bricks, client };
}

t.test('a killed client: its mount record goes when the session lease expires', async (t) => {
  const { kv, client } = await setup(t);
  const crashing = new MemoryCoordinator({ kv, log });
  await crashing.start();
  await crashing.registerMount('v', mountInfo('dead'), 2000);
  await client.registerMount('v', mountInfo('live'), 2000);
  await crashing.crash();
  const crashedAt = Date.now();
  t.same(
    (await client.listMounts('v')).map((m) => m.id),
    ['dead', 'live'],
    'still listed right after the crash',
  );
  await waitFor('the dead mount forgotten', async () => (await client.listMounts('v')).length === 1, 10_000);
  const after = Date.now() - crashedAt;
  // The upper bound only says it went by expiry, not never: a loaded machine delays timers by seconds.
  t.ok(after >= 1900 && after < 8000, `gone after the 2 s TTL (${after} ms)`);
  t.same(
    (await client.listMounts('v')).map((m) => m.id),
    ['live'],
    'a live session keeps its record past the TTL',
  );
});

t.test('dunixctl volume mounts: table and --json', async (t) => {
  const { kv, client } = await setup(t);
  let r = await runCli(kv, ['volume', 'mounts', 'v']);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, 'volume v is not mounted\n');
  await client.registerMount('v', mountInfo('m-a'), 2000);
  await client.registerMount('v', mountInfo('m-b', { host: 'client2', pid: 99 }));
  r = await runCli(kv, ['volume', 'mounts', 'v']);
  t.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  t.match(lines[0], /^MOUNT\s+HOST\s+PID\s+MOUNT POINT\s+STARTED\s+UP\s+VERSION\s+SESSION TTL$/);
  t.match(
    lines[1],
    /^m-a\s+client1\s+1234\s+\/mnt\/m-a\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+(1m|9\ds)\s+0\.1\.0\s+2s$/,
  );
  t.match(lines[2], /^m-b\s+client2\s+99\s+\/mnt\/m-b\s+.*\s+6s$/);
  r = await runCli(kv, ['--json', 'volume', 'mounts', 'v']);
  t.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { volume: string; mounts: { id: string; leaseTtlMs: number }[] };
  t.equal(j.volume, 'v');
  t.same(
    j.mounts.map((m) => [m.id, m.leaseTtlMs]),
    [
      ['m-a', 2000],
      ['m-b', 6_000],
    ],
  );
  r = await runCli(kv, ['volume', 'mounts', 'nope']);
  t.equal(r.code, 1);
  t.match(r.stderr, /volume nope does not exist/);
});

t.test('dunixctl volume delete: refused while mounted or running, --force deletes every key', async (t) => {
  const { kv, bricks, client } = await setup(t);
  const m = await client.registerMount('v', mountInfo('m-a'), 2000);
  let r = await runCli(kv, ['volume', 'delete', 'v']);
  t.equal(r.code, 1, 'non-zero exit');
  t.match(
    r.stderr,
    /^dunixctl: volume v is mounted by 1 client: client1:\/mnt\/m-a \(pid 1234\); unmount first/,
  );
  t.match(r.stderr, /--force/);
  t.ok(await client.getVolume('v'), 'nothing deleted');
  await m.close();
  r = await runCli(kv, ['volume', 'delete', 'v']);
  t.equal(r.code, 1);
  t.match(r.stderr, /volume v has 2 running bricks: b0, b1; stop their brickd first/);
  await client.registerMount('v', mountInfo('m-b'), 2000);
  r = await runCli(kv, ['volume', 'delete', 'v', '--force']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^volume v deleted: \d+ control-plane keys removed \(forced\)/);
  t.match(r.stdout, /1 mount now fails every call with EIO until unmounted: client1:\/mnt\/m-b$/m);
  t.match(r.stdout, /running bricks stop serving it and exit: b0, b1/);
  t.match(r.stdout, /data directories are kept on disk/);
  t.same((await kv.range(keys.volume('v'))).entries, [], 'nothing left under the volume');
  r = await runCli(kv, ['volume', 'delete', 'v']);
  t.equal(r.code, 1);
  t.match(r.stderr, /volume v does not exist/);
  // --json: the deletion as data.
  await bricks.registerBrick('w', brick(0), 2000);
  await bricks.createVolume(volumeConfig('w', { pgCount: 4, replicas: 1 }));
  await bricks.stop();
  r = await runCli(kv, ['--json', 'volume', 'delete', 'w']);
  t.equal(r.code, 0, r.stderr);
  t.match(JSON.parse(r.stdout), {
    volume: 'w',
    forced: false,
    config: { name: 'w', pgCount: 4 },
    mounts: [],
    bricks: [{ id: 'b0', alive: false }],
  });
});
