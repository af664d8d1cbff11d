import { createLogger } from '@dunix/proto';
import t from 'tap';
import { MemoryCoordinator, MemoryKv, run } from '../src/index.js';
import { brick } from './compliance.js';
import { runCli } from './helpers/cli.js';

const log = createLogger('cli-test', () => undefined);

const cli = (kv: MemoryKv, ...argv: string[]) => runCli(kv, argv);

t.test('dunixctl volume create/list/status', async (t) => {
  const kv = new MemoryKv();
  const bricks = new MemoryCoordinator({ kv, log });
  t.teardown(() => bricks.stop());
  await bricks.start();

  let r = await cli(kv, 'volume', 'create', 'v1', '--replicas', '2');
  t.equal(r.code, 1);
  t.match(r.stderr, /^dunixctl: volume v1 needs 2 live bricks \(replicas\) but has 0 \(0 registered\)\n$/);

  for (let i = 0; i < 3; i++) await bricks.registerBrick('v1', brick(i, { weight: i === 2 ? 2 : 1 }), 2000);
  r = await cli(
    kv,
    'volume',
    'create',
    'v1',
    '--replicas',
    '2',
    '--pgs',
    '64',
    '--block-size',
    '131072',
    '--inline-max',
    '0',
  );
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^volume v1: 64 PGs, 2 replica\(s\), min in-sync 2, block 128 KiB, inline up to 0 B/);
  t.match(r.stdout, /BRICK\s+PGS\s+PRIMARIES\nb0\s+\d+\s+\d+\nb1/);

  r = await cli(kv, 'volume', 'create', 'v1');
  t.equal(r.code, 1);
  t.equal(r.stderr, 'dunixctl: volume v1 already exists\n');

  r = await cli(kv, 'volume', 'create', 'v2', '--pgs', '100');
  t.equal(r.code, 1);
  t.match(r.stderr, /pgCount 100 must be a power of two/);
  t.equal(r.stderr.split('\n').length, 2, 'one line');

  r = await cli(kv, 'volume', 'list');
  t.equal(r.code, 0);
  t.match(
    r.stdout,
    /NAME\s+PGS\s+REPLICAS\s+BLOCK\s+INLINE\s+BRICKS\s+ALIVE\nv1\s+64\s+2\s+128 KiB\s+0 B\s+3\s+3\n/,
  );

  r = await cli(kv, '--json', 'volume', 'status', 'v1');
  t.equal(r.code, 0);
  const status = JSON.parse(r.stdout);
  t.equal(status.config.pgCount, 64);
  t.equal(status.bricks.length, 3);
  t.equal(
    status.bricks.reduce(
      (n: number, b: { primaries: number; replicas: number }) => n + b.primaries + b.replicas,
      0,
    ),
    128,
    'every PG counted on 2 bricks',
  );
  t.equal(
    status.bricks.reduce((n: number, b: { primaries: number }) => n + b.primaries, 0),
    64,
  );
  t.same(status.pgsDegraded, []);
  t.same(status.isrHistogram, [
    { live: 2, pgs: 64 },
    { live: 1, pgs: 0 },
    { live: 0, pgs: 0 },
  ]);
  t.equal(status.controller, null, 'no controller running');
  t.equal(status.rebalance, null, 'no rebalance ever ran');

  r = await cli(kv, 'volume', 'status', 'v1');
  t.equal(r.code, 0);
  t.match(r.stdout, /min in-sync 2/);
  t.match(r.stdout, /\nin-sync: 2\/2: 64 PGs, 1\/2: 0 PGs, 0\/2: 0 PGs\n/);
  t.match(r.stdout, /PGs degraded: 0, read-only: 0, unavailable: 0, failover pending: 0/);
  t.match(r.stdout, /BRICK\s+STATE\s+ADDRESS\s+HOST\s+WEIGHT\s+PRIMARY\s+REPLICA\s+OUT-OF-SYNC\s+USE%\n/);
  t.match(r.stdout, /b0\s+alive\s+127\.0\.0\.1:7100\s+host0\s+1\s+\d+\s+\d+\s+0\s+-\n/);

  r = await cli(kv, 'volume', 'status', 'nope');
  t.equal(r.code, 1);
  t.equal(r.stderr, 'dunixctl: volume nope does not exist\n');

  r = await cli(kv, 'volume', 'create', 'v3', '--pgs', 'x');
  t.equal(r.code, 1);
  t.match(r.stderr, /--pgs must be a non-negative integer/);

  r = await cli(kv, 'volume', 'create', 'v1b', '--replicas', '2', '--min-insync', '3');
  t.equal(r.code, 1);
  t.match(r.stderr, /minInsync 3 must be 1\.\.replicas \(2\)/);
  r = await cli(kv, 'volume', 'create', 'v1c', '--replicas', '2', '--min-insync', '0');
  t.equal(r.code, 1, 'min-insync 0 refused');
});

t.test('dunixctl volume create --min-insync', async (t) => {
  const kv = new MemoryKv();
  const bricks = new MemoryCoordinator({ kv, log });
  t.teardown(() => bricks.stop());
  await bricks.start();
  for (let i = 0; i < 3; i++) await bricks.registerBrick('m', brick(i), 2000);
  const r = await cli(kv, 'volume', 'create', 'm', '--replicas', '3', '--min-insync', '1', '--pgs', '8');
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /3 replica\(s\), min in-sync 1,/);
  t.equal((await bricks.getVolume('m'))!.minInsync, 1);
});

t.test('dunixctl: a dead brick shows as dead and its PGs as degraded', async (t) => {
  const kv = new MemoryKv();
  const a = new MemoryCoordinator({ kv, log });
  const b = new MemoryCoordinator({ kv, log });
  t.teardown(() => a.stop());
  await a.start();
  await b.start();
  await a.registerBrick('v', brick(0), 2000);
  await b.registerBrick('v', brick(1), 2000);
  t.equal((await cli(kv, 'volume', 'create', 'v', '--pgs', '16', '--replicas', '2')).code, 0);
  await b.stop();
  const r = await cli(kv, 'volume', 'status', 'v');
  t.equal(r.code, 0, 'degraded is not unavailable');
  t.match(r.stdout, /bricks: 1 alive of 2/);
  t.match(r.stdout, /in-sync: 2\/2: 0 PGs, 1\/2: 16 PGs, 0\/2: 0 PGs/);
  t.match(r.stdout, /PGs degraded: 16, read-only: 16, unavailable: 0, failover pending: [1-9]/);
  t.match(r.stdout, /read-only PGs: 0, 1, 2, /);
  t.match(r.stdout, /b1\s+dead\s+\S+\s+\S+\s+1\s+\d+\s+\d+\s+16\s+-\n/, 'every PG of b1 out of sync');
});

t.test('dunixctl volume status: unavailable PGs exit 2; controller and recovery shown', async (t) => {
  const kv = new MemoryKv();
  const a = new MemoryCoordinator({ kv, log });
  const b = new MemoryCoordinator({ kv, log });
  t.teardown(() => a.stop());
  await a.start();
  await b.start();
  await a.registerBrick('u', brick(0), 2000);
  await b.registerBrick('u', brick(1), 2000);
  t.equal((await cli(kv, 'volume', 'create', 'u', '--pgs', '8', '--replicas', '1')).code, 0);
  await a.campaign('u', 'b0', () => undefined, 2000);
  const p = await a.getPlacement('u');
  const onB0 = p.find((x) => x.bricks[0] === 'b0')!;
  await a.reportRecovery('u', 'b0', {
    pg: onB0.pg,
    brick: 'b0',
    mode: 'backfill',
    opsLeft: 0,
    bytesLeft: 300 * 1024 * 1024,
    ratePerS: 10 * 1024 * 1024,
    startedAtMs: 0,
  });
  let r = await cli(kv, 'volume', 'status', 'u');
  t.equal(r.code, 0);
  t.match(r.stdout, /controller: b0;/);
  t.match(
    r.stdout,
    /recovery: 1 replica\(s\) catching up\nPG\s+BRICK\s+MODE\s+OPS-LEFT\s+BYTES-LEFT\s+RATE\s+ETA\n/,
  );
  t.match(r.stdout, new RegExp(`${onB0.pg}\\s+b0\\s+backfill\\s+0\\s+300\\.0 MiB\\s+10\\.0 MiB/s\\s+30s\\n`));
  await b.stop();
  const onB1 = p.filter((x) => x.bricks[0] === 'b1').map((x) => x.pg);
  t.ok(onB1.length > 0);
  r = await cli(kv, 'volume', 'status', 'u');
  t.equal(r.code, 2, 'non-zero: some PGs have no live copy');
  t.match(r.stdout, `unavailable: ${onB1.length},`);
  t.match(r.stdout, `unavailable PGs: ${onB1.join(', ')}\n`);
  r = await cli(kv, '--json', 'volume', 'status', 'u');
  t.equal(r.code, 2);
  const s = JSON.parse(r.stdout);
  t.same(s.pgsUnavailable, onB1);
  t.same(s.isrHistogram, [
    { live: 1, pgs: 8 - onB1.length },
    { live: 0, pgs: onB1.length },
  ]);
  t.equal(s.recovery[0].etaS, 30);
  t.equal(s.controller, 'b0');
});

t.test('dunixctl: unreachable etcd fails within the timeout', async (t) => {
  let stderr = '';
  const started = Date.now();
  const code = await run(['--etcd', 'http://127.0.0.1:1', '--timeout', '1500', 'volume', 'list'], {
    stdout: () => undefined,
    stderr: (s) => (stderr += s),
  });
  t.equal(code, 1);
  t.match(stderr, /^dunixctl: etcd unreachable: .*\n$/);
  t.ok(Date.now() - started < 4000, 'did not hang');
});

t.test('dunixctl df and volume status: the space the bricks published', async (t) => {
  const kv = new MemoryKv();
  const bricks = new MemoryCoordinator({ kv, log });
  t.teardown(() => bricks.stop());
  await bricks.start();
  for (let i = 0; i < 3; i++) await bricks.registerBrick('v', brick(i), 2000);
  t.equal((await cli(kv, 'volume', 'create', 'v', '--replicas', '3', '--pgs', '8')).code, 0);
  const MiB = 1024 * 1024;
  const usage = (usedMiB: number, state: 'ok' | 'nearfull' | 'full') => ({
    capacityBytes: 100 * MiB,
    usedBytes: usedMiB * MiB,
    freeBytes: (100 - usedMiB) * MiB,
    blockBytes: (usedMiB - 1) * MiB,
    metaBytes: MiB,
    state,
    atMs: Date.now(),
  });

  let r = await cli(kv, 'df', 'v');
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^volume v: 0 B free of 0 B usable/, 'nothing published yet');
  t.match(r.stdout, /3 brick\(s\) have not reported their space/);
  t.match(r.stdout, /\nb0\s+host0\s+unknown\s+-\s+-/);

  await bricks.publishUsage('v', 'b0', usage(20, 'ok'));
  await bricks.publishUsage('v', 'b1', usage(90, 'nearfull'));
  await bricks.publishUsage('v', 'b2', usage(96, 'full'));
  await t.rejects(
    bricks.publishUsage('v', 'b9', usage(1, 'ok')),
    { code: 'NOT_FOUND' },
    'only bricks registered here',
  );

  r = await cli(kv, '--json', 'df', 'v');
  t.equal(r.code, 0);
  const df = JSON.parse(r.stdout);
  t.match(df.total, {
    rawCapacityBytes: 300 * MiB,
    rawUsedBytes: 206 * MiB,
    rawFreeBytes: 94 * MiB,
    usableCapacityBytes: 100 * MiB,
    bricksFull: 1,
    bricksNearfull: 1,
    bricksUnknown: 0,
  });
  t.equal(df.total.usableFreeBytes, Math.floor((94 * MiB) / 3));
  t.equal(df.bricks.length, 3);
  t.match(df.bricks[2], { id: 'b2', pgs: 8, usage: { state: 'full' } });

  r = await cli(kv, 'df', 'v');
  t.match(
    r.stdout,
    /^volume v: 31\.3 MiB free of 100\.0 MiB usable \(3 copies of each byte; raw 206\.0 MiB used/,
  );
  t.match(r.stdout, /\n1 brick\(s\) full: writes that add data to their PGs get ENOSPC/);
  t.match(
    r.stdout,
    /\nb1\s+host1\s+nearfull\s+100\.0 MiB\s+90\.0 MiB\s+10\.0 MiB\s+90%\s+89\.0 MiB\s+1\.0 MiB\s+8\s+\d+s\n/,
  );

  r = await cli(kv, 'volume', 'status', 'v');
  t.equal(r.code, 0);
  t.match(
    r.stdout,
    /\nspace: 31\.3 MiB free of 100\.0 MiB usable; 1 brick\(s\) full \(writes that add data to their PGs: ENOSPC\); 1 brick\(s\) near full\n/,
  );
  t.match(r.stdout, /\nb2\s+alive\s+\S+\s+\S+\s+1\s+\d+\s+\d+\s+0\s+96% full\n/);
  r = await cli(kv, '--json', 'volume', 'status', 'v');
  t.match(JSON.parse(r.stdout).space, { bricksFull: 1, usableCapacityBytes: 100 * MiB });

  // A record goes with its brick's lease.
  await bricks.stop();
  const other = new MemoryCoordinator({ kv, log });
  t.teardown(() => other.stop());
  await other.start();
  t.equal((await other.listUsage('v')).size, 0, 'no usage record outlives its lease');
  r = await cli(kv, 'df', 'nope');
  t.equal(r.code, 1);
  t.match(r.stderr, /volume nope does not exist/);
});
