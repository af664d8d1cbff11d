/**
 * O_TMPFILE on a real mount (replicas 3): a file with no name, written, then
 * named by linkat(AT_EMPTY_PATH) or through /proc/self/fd, reads back under
 * its name; one that is never named is reclaimed at its last close (inode
 * and blocks); O_TMPFILE|O_EXCL cannot be named; one held by a client that
 * is SIGKILLed is reclaimed by the bricks once that mount's session record
 * is gone.
 */
import { spawn } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { run, startCluster, waitUntil } from '../src/cluster.js';
import { killClientAndAwaitReclaim } from '../src/failover.js';

const MiB = 1024 * 1024;
const tool = fileURLToPath(new URL('../../cluster/falloc-tool.py', import.meta.url));
const content = (n: number) => Buffer.from(Array.from({ length: n }, (_v, i) => (i * 7 + 3) % 251));
const tmpfile = (dir: string, name: string, size: number, how: string) =>
  run('python3', [tool, 'tmpfile', dir, name, String(size), how]);

t.test('O_TMPFILE: named by linkat, reclaimed when never named', async (t) => {
  const c = await startCluster(t, { pgs: 16, replicas: 3 });
  run('mkdir', [c.path('d')]);
  const before = await c.counts();

  let r = tmpfile(c.path('d'), 'empty-path', 3 * MiB + 17, 'empty');
  t.equal(r.status, 0, r.stderr);
  t.same(JSON.parse(r.stdout), { nlink: 1, size: 3 * MiB + 17 }, 'linkat(AT_EMPTY_PATH) gave it a name');
  t.ok(readFileSync(c.path('d', 'empty-path')).equals(content(3 * MiB + 17)), 'its bytes under the name');
  t.equal(statSync(c.path('d', 'empty-path')).mode & 0o7777, 0o640);

  r = tmpfile(c.path('d'), 'via-proc', 100, 'proc');
  t.equal(r.status, 0, r.stderr);
  t.ok(
    readFileSync(c.path('d', 'via-proc')).equals(content(100)),
    'named through /proc/self/fd (inline file)',
  );

  r = tmpfile(c.path('d'), 'excl', 10, 'excl');
  t.equal(r.stdout.trim(), 'ENOENT', 'O_TMPFILE|O_EXCL cannot be named');

  // The O_EXCL one is reclaimed at its last close (the client asks after answering the release).
  await waitUntil(
    async () => (await c.counts()).inodes === before.inodes + 2,
    'the named files have inodes; the O_EXCL one is gone',
  );
  const named = await c.counts();

  r = tmpfile(c.path('d'), 'never', 2 * MiB, 'none');
  t.equal(r.status, 0, r.stderr);
  t.same(JSON.parse(r.stdout), { nlink: 0, size: 2 * MiB }, 'never named: nlink 0');
  await waitUntil(async () => {
    const n = await c.counts();
    return n.inodes === named.inodes && n.blocks === named.blocks;
  }, 'the unnamed file reclaimed after its last close (inode and blocks)');
  t.same(
    run('ls', [c.path('d')])
      .stdout.split('\n')
      .filter(Boolean)
      .sort(),
    ['empty-path', 'via-proc'],
  );
});

t.test('O_TMPFILE held by a client that dies is reclaimed by the bricks', async (t) => {
  const c = await startCluster(t, {
    pgs: 16,
    replicas: 3,
    mountOptions: 'session_ttl_ms=2000',
    brickArgs: () => ['--orphan-owner-grace-ms', '1000'],
  });
  const before = await c.counts();
  const holder = spawn('python3', [tool, 'tmpfile', c.mountpoint, 'x', String(MiB + 1), 'hold'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((res) => holder.stdout!.once('data', () => res()));
  await waitUntil(async () => (await c.counts()).inodes === before.inodes + 1, 'the held file exists');
  await killClientAndAwaitReclaim(t, c, holder, before, 'O_TMPFILE');
  t.pass('reclaimed once the session record expired');
});
