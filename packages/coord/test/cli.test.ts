import { createLogger } from '@dunix/proto';
import t from 'tap';
import { type Coordinator, MemoryCoordinator, MemoryKv, run } from '../src/index.js';
import { brick } from './compliance.js';

const log = createLogger('cli-test', () => undefined);

async function cli(kv: MemoryKv, ...argv: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await run(argv, {
    stdout: (s) => (stdout += s),
    stderr: (s) => (stderr += s),
    connect: (): Coordinator => new MemoryCoordinator({ kv, log }),
  });
  return { code, stdout, stderr };
}

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
  t.match(r.stdout, /^volume v1: 64 PGs, 2 replica\(s\), block 128 KiB, inline up to 0 B/);
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
    status.bricks.reduce((n: number, b: { pgs: number }) => n + b.pgs, 0),
    128,
    'every PG counted on 2 bricks',
  );
  t.equal(
    status.bricks.reduce((n: number, b: { primaries: number }) => n + b.primaries, 0),
    64,
  );
  t.equal(status.pgsDegraded, 0);

  r = await cli(kv, 'volume', 'status', 'v1');
  t.match(r.stdout, /b0\s+alive\s+127\.0\.0\.1:7100\s+host0\s+1\s+\d+\s+\d+/);

  r = await cli(kv, 'volume', 'status', 'nope');
  t.equal(r.code, 1);
  t.equal(r.stderr, 'dunixctl: volume nope does not exist\n');

  r = await cli(kv, 'volume', 'create', 'v3', '--pgs', 'x');
  t.equal(r.code, 1);
  t.match(r.stderr, /--pgs must be a non-negative integer/);
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
  t.match(r.stdout, /bricks: 1 alive of 2; PGs degraded: 16, unavailable: 0/);
  t.match(r.stdout, /b1\s+dead/);
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
