/**
 * Mount records and volume delete, with real etcd, brickd processes and a
 * FUSE mount: the client's record appears while it is mounted and goes on
 * unmount and, after a SIGKILL, within its session TTL; `volume delete` is
 * refused while mounted; `--force` deletes every key of the volume, the
 * bricks stop serving it and exit 0, the mount answers EIO at once (no
 * hang) until unmounted, and a brick restarted on its data dir refuses to
 * start unless told to wipe it.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { mountsAt, startCluster, waitUntil, type Cluster } from '../src/cluster.js';

const SESSION_TTL_MS = 2000;

interface MountRow {
  id: string;
  host: string;
  pid: number;
  mountPoint: string;
  version: string;
  leaseTtlMs: number;
}

function mounts(c: Cluster): MountRow[] {
  const r = c.ctl(['--json', 'volume', 'mounts', c.volume]);
  if (r.status !== 0) throw new Error(`volume mounts failed: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { mounts: MountRow[] }).mounts;
}

/** Every key under the volume's prefix, read over etcd's JSON gateway (independent of the code under test). */
async function keysOf(c: Cluster): Promise<string[]> {
  const prefix = `/dunix/v1/volumes/${c.volume}/`;
  const end = Buffer.from(prefix);
  end[end.length - 1]!++;
  const res = await fetch(`${c.etcd.endpoint}/v3/kv/range`, {
    method: 'POST',
    body: JSON.stringify({
      key: Buffer.from(prefix).toString('base64'),
      range_end: end.toString('base64'),
      keys_only: true,
    }),
  });
  const body = (await res.json()) as { kvs?: { key: string }[] };
  return (body.kvs ?? []).map((kv) => Buffer.from(kv.key, 'base64').toString());
}

/** A shell command with a deadline (a hung FUSE call must not block the test): status, output, ms taken. */
function shell(script: string, timeoutMs = 30_000) {
  const started = Date.now();
  const r = spawnSync('sh', ['-c', script], { encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}`, ms: Date.now() - started };
}

t.test('mount records, and volume delete refused while mounted, then forced', async (t) => {
  let wipe = false;
  const c = await startCluster(t, {
    bricks: 3,
    pgs: 16,
    replicas: 2,
    volume: 'delvol',
    mountOptions: `session_ttl_ms=${SESSION_TTL_MS}`,
    brickArgs: () => (wipe ? ['--wipe-deleted-volume'] : []),
  });

  // While mounted: one record naming this client.
  const rows = mounts(c);
  t.equal(rows.length, 1, 'one mount record');
  t.match(rows[0], {
    id: /^m-[0-9a-f]{12}$/,
    host: hostname(),
    pid: c.mountPid,
    mountPoint: c.mountpoint,
    version: '0.1.0',
    leaseTtlMs: SESSION_TTL_MS,
  });
  const table = c.ctl(['volume', 'mounts', c.volume]);
  t.equal(table.status, 0, table.stderr);
  t.match(
    table.stdout,
    new RegExp(`^MOUNT .*\\n${rows[0]!.id} +${hostname()} +${c.mountPid} +${c.mountpoint} `),
  );

  // Unmount: the record goes at once (the lease is revoked).
  await c.unmount();
  await waitUntil(() => mounts(c).length === 0, 'the record to go on unmount', 5000);
  t.pass('gone after unmount');

  // SIGKILL of the client: the record outlives it, then goes within the session TTL.
  await c.mount();
  await waitUntil(() => mounts(c).length === 1, 'the record of the new mount', 10_000);
  writeFileSync(c.path('kept.txt'), 'written before the delete\n');
  const killedPid = c.mountPid;
  process.kill(killedPid, 'SIGKILL');
  const killedAt = Date.now();
  // Read in-process (a dunixctl run may take longer than the TTL on a loaded machine).
  t.equal((await c.coord.listMounts(c.volume))[0]?.pid, killedPid, 'still listed right after the kill');
  // Polled in-process too: each dunixctl run costs seconds on a loaded machine, which the
  // measurement would add to the lease's expiry (CI once saw 10 s at load 28); dunixctl checks below.
  await waitUntil(
    async () => (await c.coord.listMounts(c.volume)).length === 0,
    'the killed client forgotten',
    SESSION_TTL_MS + 8000,
    100,
  );
  const forgottenMs = Date.now() - killedAt;
  t.equal(mounts(c).length, 0, 'dunixctl lists no mount either');
  t.comment(`killed client forgotten after ${forgottenMs} ms (session TTL ${SESSION_TTL_MS} ms)`);
  // The lease runs from the last keepalive (up to keepaliveIntervalMs before the kill); etcd checks expiry every 0.5 s.
  t.ok(forgottenMs < SESSION_TTL_MS + 3000, `within the TTL and etcd's expiry tick (${forgottenMs} ms)`);
  await waitUntil(() => mountsAt(c.mountpoint).length === 0, 'the watchdog to detach the dead mount', 10_000);
  await waitUntil(() => c.mountPid === 0, 'the killed client to be reaped', 10_000);

  // Mounted again: delete refused (non-zero exit, a message naming the mount), nothing changes.
  await c.mount();
  await waitUntil(() => mounts(c).length === 1, 'the record of the third mount', 10_000);
  const refused = c.ctl(['volume', 'delete', c.volume]);
  t.equal(refused.status, 1, 'non-zero exit');
  t.match(
    refused.stderr,
    new RegExp(`volume delvol is mounted by 1 client: ${hostname()}:${c.mountpoint} \\(pid ${c.mountPid}\\)`),
  );
  t.equal(readFileSync(c.path('kept.txt'), 'utf8'), 'written before the delete\n', 'the volume still serves');
  const brickIds = c.bricks.map((b) => b.id);

  // Forced: every key goes in one transaction.
  const forced = c.ctl(['volume', 'delete', c.volume, '--force']);
  t.equal(forced.status, 0, forced.stderr);
  t.match(forced.stdout, /^volume delvol deleted: \d+ control-plane keys removed \(forced\)/);
  t.match(forced.stdout, /1 mount now fails every call with EIO until unmounted/);
  t.match(forced.stdout, /running bricks stop serving it and exit/);

  // The bricks stop serving it and exit 0, each with a log line.
  for (const b of c.bricks) {
    const exit = await Promise.race([
      b.exited(),
      new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 20_000)),
    ]);
    t.same(exit, { code: 0, signal: null }, `brick${b.index} exited 0`);
    t.match(readFileSync(b.logFile, 'utf8'), /volume deleted: this brick stops serving it and exits/);
  }
  // Nothing is left under the volume once the bricks have stopped (their leased keys went with them).
  await waitUntil(async () => (await keysOf(c)).length === 0, 'no key left under the volume', 10_000);
  t.same(await keysOf(c), [], 'no key left under the volume');
  const list = c.ctl(['volume', 'list']);
  t.notMatch(list.stdout, /delvol/, 'not listed');

  // The mount answers EIO at once, and stays mounted until unmounted.
  for (const script of [`cat ${c.path('kept.txt')}`, `ls ${c.mountpoint}`, `echo x > ${c.path('new.txt')}`]) {
    const r = shell(script);
    t.not(r.status, 0, `${script}: fails`);
    t.match(r.out, /Input\/output error/, `${script}: EIO`);
    t.ok(r.ms < 10_000, `${script}: at once (${r.ms} ms), no hang`);
  }
  t.ok(mountsAt(c.mountpoint).length > 0, 'still mounted (nothing falls through to the directory below)');
  t.ok(c.mountPid > 0, 'the client still runs');
  t.match(
    readFileSync(join(c.base, 'logs', 'client.log'), 'utf8'),
    /volume deleted: every call on this mount now fails with EIO; unmount it/,
  );
  await c.unmount();
  t.equal(mountsAt(c.mountpoint).length, 0, 'unmounts cleanly');

  // A brick restarted on its data dir refuses: the data stays.
  const b0 = c.bricks[0]!;
  t.ok(existsSync(join(b0.dir, 'meta')) && existsSync(join(b0.dir, 'blocks')), 'data dir kept');
  await b0.launch().catch(() => undefined);
  const refusedStart = await b0.exited();
  t.equal(refusedStart.code, 1, 'brickd refuses to start into the deleted volume');
  t.match(
    readFileSync(b0.logFile, 'utf8'),
    new RegExp(
      `volume delvol, which ${b0.dir} served as brick ${brickIds[0]} .* was deleted; its data is kept`,
    ),
  );
  t.ok(existsSync(join(b0.dir, 'meta')), 'still kept');

  // Told to wipe: it empties the dir and registers as a new brick (waiting for a volume of that name).
  wipe = true;
  await b0.launch();
  await waitUntil(
    async () => (await c.coord.listBricks(c.volume)).some((b) => b.alive && b.id === b0.id),
    'the wiped brick to register',
    15_000,
  );
  t.not(b0.id, brickIds[0], 'a new brick id');
  t.match(readFileSync(b0.logFile, 'utf8'), /wiping it \(--wipe-deleted-volume\)/);

  // A brick waiting for its volume to be created: a forced delete of that name takes its registration,
  // and it exits 0 too (instead of waiting, unregistered, forever).
  const again = c.ctl(['volume', 'delete', c.volume]);
  t.equal(again.status, 1, 'refused while it runs');
  t.match(again.stderr, new RegExp(`1 running brick: ${b0.id}`));
  t.equal(c.ctl(['volume', 'delete', c.volume, '--force']).status, 0);
  const waitingExit = await Promise.race([
    b0.exited(),
    new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 20_000)),
  ]);
  t.same(waitingExit, { code: 0, signal: null }, 'the waiting brick exited 0');
  await waitUntil(async () => (await keysOf(c)).length === 0, 'no key left again', 10_000);
});
