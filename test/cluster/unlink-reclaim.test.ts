/**
 * Unlink reclaims in the same op: removing the last name of a file nobody
 * holds open deletes its inode before unlink(2) returns (one log entry, not
 * an Unlink and a later Reclaim), and its blocks follow. A file still open
 * on this mount stays readable and is reclaimed at its last close; an inode
 * whose last name is in a directory of another PG falls back to the
 * client's Reclaim. Nothing is left behind in any case, also when the
 * client dies holding an unlinked file open: the orphan carries its session
 * and the bricks reclaim it once that session is gone.
 */
import {
  closeSync,
  linkSync,
  mkdirSync,
  openSync,
  readSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { callUnary, pgOfIno, type wire } from '@dunix/proto';
import { statSync } from 'node:fs';
import t from 'tap';
import { spawn } from 'node:child_process';
import { startCluster, waitUntil, type Cluster } from '../src/cluster.js';
import { killClientAndAwaitReclaim } from '../src/failover.js';

const MiB = 1024 * 1024;

t.test('unlink reclaims closed files at once, open ones at the last close', async (t) => {
  const c = await startCluster(t, { pgs: 16 });
  const before = await c.counts();

  // Closed file with blocks: the inode is gone when unlink returns.
  const f = c.path('closed');
  writeFileSync(f, Buffer.alloc(3 * MiB, 7));
  const withFile = await c.counts();
  t.ok(
    withFile.inodes > before.inodes && withFile.blocks > before.blocks,
    'the file has an inode and blocks',
  );
  unlinkSync(f);
  t.equal((await c.counts()).inodes, before.inodes, 'the inode is gone when unlink returns');
  await waitUntil(
    async () => (await c.counts()).blocks === before.blocks,
    'blocks of the unlinked file trimmed',
  );

  // Open file: unlinked but readable until closed here.
  const g = c.path('open');
  const fd = openSync(g, 'w+');
  writeSync(fd, Buffer.alloc(2 * MiB, 9));
  unlinkSync(g);
  const buf = Buffer.alloc(16);
  t.equal(readSync(fd, buf, 0, 16, MiB), 16, 'the open file still reads');
  t.ok(buf.equals(Buffer.alloc(16, 9)), 'with its bytes');
  t.ok((await c.counts()).inodes > before.inodes, 'its inode waits for the last close');
  closeSync(fd);
  await waitUntil(async () => {
    const n = await c.counts();
    return n.inodes === before.inodes && n.blocks === before.blocks;
  }, 'the open file reclaimed after its last close');

  // Last name in another directory (likely another PG than the inode's).
  for (let i = 0; i < 8; i++) mkdirSync(c.path(`d${i}`));
  const h = c.path('linked');
  writeFileSync(h, Buffer.alloc(MiB + 5, 3));
  for (let i = 0; i < 8; i++) linkSync(h, c.path(`d${i}`, 'x'));
  unlinkSync(h);
  for (let i = 0; i < 8; i++) unlinkSync(c.path(`d${i}`, 'x'));
  const dirs = 8;
  await waitUntil(async () => {
    const n = await c.counts();
    return n.inodes === before.inodes + dirs && n.blocks === before.blocks;
  }, 'a file whose names were in other PGs reclaimed too');
  t.pass('no inode or block left behind');
});

/** The last log sequence of `pg` as a backup holds it (a backup has every acknowledged entry). */
async function backupLastSeq(c: Cluster, pg: number): Promise<bigint> {
  const a = (await c.placement()).find((p) => p.pg === pg)!;
  const backup = c.bricks.find((b) => b.id === a.bricks[1])!;
  const r = await callUnary<object, wire.PgPositionReply__Output>(
    backup.client(),
    'PgPosition',
    { header: { pg, epoch: a.epoch, requestId: '' } },
    10_000,
  );
  return BigInt(r.lastSeq);
}

t.test('unlinking a closed file is one log entry of its PG, not two', async (t) => {
  const c = await startCluster(t, { pgs: 16 });
  mkdirSync(c.path('p'));
  const pg = pgOfIno(statSync(c.path('p'), { bigint: true }).ino);
  for (let i = 0; i < 5; i++) closeSync(openSync(c.path('p', `e${i}`), 'w'));
  for (let i = 0; i < 5; i++) {
    const seq = await backupLastSeq(c, pg);
    unlinkSync(c.path('p', `e${i}`));
    await new Promise((r) => setTimeout(r, 300));
    t.equal(await backupLastSeq(c, pg), seq + 1n, `unlink ${i}: one entry, with the reclaim in it`);
  }
});

t.test(
  'an unlinked file held open by a client that is then killed is reclaimed once its session is gone',
  async (t) => {
    const c = await startCluster(t, {
      pgs: 16,
      replicas: 3,
      mountOptions: 'session_ttl_ms=2000',
      brickArgs: () => ['--orphan-owner-grace-ms', '1000'],
    });
    const before = await c.counts();
    // A process holds the file open and unlinks it: the orphan is the client's to reclaim at its last close.
    const path = c.path('held');
    const holder = spawn(
      'python3',
      [
        '-c',
        'import os,sys,time\n' +
          `f=open(${JSON.stringify(path)},"wb+")\n` +
          `f.write(b"x"*${2 * MiB}); f.flush(); os.fsync(f.fileno())\n` +
          `os.unlink(${JSON.stringify(path)})\n` +
          'print("held", flush=True)\n' +
          'time.sleep(600)\n',
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    t.teardown(() => {
      holder.kill('SIGKILL');
    });
    await new Promise<void>((res) => holder.stdout!.once('data', () => res()));
    const held = await c.counts();
    t.equal(held.inodes, before.inodes + 1, 'unlinked but open: the inode stays');
    await killClientAndAwaitReclaim(t, c, holder, before, 'orphan');
    t.pass('reclaimed with its blocks once the session record expired');
  },
);
