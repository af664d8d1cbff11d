/**
 * Failover under a writer, with real processes: a writer process appends
 * 64-byte numbered records to a file on the mount and fsyncs after each one,
 * logging every acknowledged record and the time of every call, while the
 * brick leading the file's PGs (its inode's and block 0's) is
 *
 * - cut off from etcd while clients still reach it (etcd-cut): its lease
 *   expires, it fences itself and the controller promotes another;
 * - SIGKILLed, then a backup is (kill-primary);
 * - SIGSTOPped for 30 s and continued (sigstop).
 *
 * What must hold: the writer sees no error, no acknowledged record is lost
 * and the file holds nothing but records in their place, and every PG is
 * back to three in-sync copies within 60 s of the brick's return. Pauses and
 * recovery times are measured and printed, not asserted:
 * `# failover: scenario=NAME maxPauseMs=... errors=... lost=... redundancyMs=...`.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import t from 'tap';
import { startCluster, waitUntil, type BrickProc, type Cluster } from '../src/cluster.js';
import {
  checkWriter,
  errorSummary,
  fileLedBy,
  pauseAfter,
  recordWriter,
  keepLogs,
  report,
  waitFullRedundancy,
} from '../src/failover.js';
import { TcpProxy } from '../src/tcp-proxy.js';

const PGS = 16;
/** Generous bound on the time back to full redundancy (measured, printed, not a target). */
const REDUNDANCY_MS_MAX = 60_000;
/** Records acknowledged before and between the faults. */
const STEP = 100;
/** How long the hung brick stays stopped. */
const STOP_MS = 30_000;

/** A live brick in the in-sync set of every PG in `pgs` that leads none of them (`not` if there is another). */
async function backupOf(c: Cluster, pgs: number[], not: BrickProc): Promise<BrickProc> {
  const placement = await c.placement();
  const leaders = new Set(pgs.map((pg) => placement[pg]!.bricks[0]));
  const backups = c.bricks.filter(
    (x) => !leaders.has(x.id) && pgs.every((pg) => placement[pg]!.isr.includes(x.id)) && x.alive(),
  );
  const b = backups.find((x) => x !== not) ?? backups[0];
  if (!b) throw new Error(`no brick is a backup of every PG of ${pgs.join(',')}`);
  return b;
}

t.test('failover under a writer: etcd cut, SIGKILL, SIGSTOP', async (t) => {
  let proxy: TcpProxy | undefined;
  t.teardown(() => proxy?.close());
  // brick2 reaches etcd through a proxy that can cut it off.
  const c = await startCluster(t, {
    pgs: PGS,
    brickEtcd: async (i, endpoint) => {
      if (i !== 2) return undefined;
      proxy ??= await TcpProxy.forEndpoint(endpoint);
      return proxy.endpoint;
    },
  });
  keepLogs(t, c);
  mkdirSync(c.path('w'));

  await t.test('etcd-cut', async (t) => {
    // brick2 leads the file's PGs and loses etcd; the mount and the other bricks still reach it.
    const cutBrick = c.bricks[2]!;
    const f = await fileLedBy(c, c.path('w'), 'etcd-cut', cutBrick);
    const w = recordWriter(c, f.path, 'etcd-cut');
    const logFrom = readFileSync(cutBrick.logFile, 'utf8').length;
    let cutAt = 0;
    let redundancyMs = -1;
    let failoverMs = -1;
    let stats;
    try {
      await w.waitForAcked(STEP, 30_000);
      cutAt = Date.now();
      await proxy!.cut();
      t.comment(`cut brick${cutBrick.index} (primary of PGs ${f.pgs.join(',')}) off from etcd`);
      // Its lease expires; the controller moves its PGs and takes it out of every in-sync set.
      await waitUntil(
        async () => {
          const placement = await c.placement();
          return placement.every((a) => a.bricks[0] !== cutBrick.id && !a.isr.includes(cutBrick.id));
        },
        'the cut brick to lose every PG',
        30_000,
        50,
      );
      failoverMs = Date.now() - cutAt;
      await w.waitForAcked(w.progress().acked + STEP, 60_000);
      t.ok(cutBrick.alive(), 'the cut brick still runs');
      const restoreAt = Date.now();
      await proxy!.restore();
      redundancyMs = await waitFullRedundancy(c, restoreAt, REDUNDANCY_MS_MAX);
      await w.waitForAcked(w.progress().acked + STEP, 60_000);
    } finally {
      await proxy!.restore();
      stats = await w.stop(30_000);
    }
    const log = readFileSync(cutBrick.logFile, 'utf8').slice(logFrom);
    t.match(log, /lease unconfirmed for its TTL less the fencing margin/, 'the cut brick fenced itself');
    t.equal(stats.errorCount, 0, `the writer saw no error (${errorSummary(stats.errors)})`);
    const check = await checkWriter(t, c, f.path, stats);
    report(t, 'etcd-cut', {
      maxPauseMs: stats.maxPauseMs,
      pauseCutMs: pauseAfter(stats, cutAt),
      failoverMs,
      errors: errorSummary(stats.errors),
      lost: check.lost,
      redundancyMs,
      records: stats.acked,
    });
    t.ok(redundancyMs >= 0, 'full redundancy after the brick reached etcd again');
  });

  await t.test('kill-primary', async (t) => {
    const f = await fileLedBy(c, c.path('w'), 'kill-primary');
    const w = recordWriter(c, f.path, 'kill-primary');
    let killPrimaryAt = 0;
    let killBackupAt = 0;
    let redundancyMs = -1;
    let redundancyBackupMs = -1;
    let stats;
    try {
      await w.waitForAcked(STEP, 30_000);
      killPrimaryAt = Date.now();
      await f.primary.kill('SIGKILL');
      t.comment(`killed brick${f.primary.index}, primary of PGs ${f.pgs.join(',')}`);
      await w.waitForAcked(w.progress().acked + STEP, 60_000);
      const back = Date.now();
      await f.primary.restart();
      redundancyMs = await waitFullRedundancy(c, back, REDUNDANCY_MS_MAX);
      const backup = await backupOf(c, f.pgs, f.primary);
      await w.waitForAcked(w.progress().acked + STEP, 60_000);
      killBackupAt = Date.now();
      await backup.kill('SIGKILL');
      t.comment(`killed brick${backup.index}, a backup of PGs ${f.pgs.join(',')}`);
      await w.waitForAcked(w.progress().acked + STEP, 60_000);
      const back2 = Date.now();
      await backup.restart();
      redundancyBackupMs = await waitFullRedundancy(c, back2, REDUNDANCY_MS_MAX);
      await w.waitForAcked(w.progress().acked + STEP, 60_000);
    } finally {
      stats = await w.stop(30_000);
    }
    t.equal(stats.errorCount, 0, `the writer saw no error (${errorSummary(stats.errors)})`);
    const check = await checkWriter(t, c, f.path, stats);
    report(t, 'kill-primary', {
      maxPauseMs: stats.maxPauseMs,
      pauseKillPrimaryMs: pauseAfter(stats, killPrimaryAt),
      pauseKillBackupMs: pauseAfter(stats, killBackupAt),
      errors: errorSummary(stats.errors),
      lost: check.lost,
      redundancyMs,
      redundancyBackupMs,
      records: stats.acked,
    });
    t.ok(redundancyMs >= 0 && redundancyBackupMs >= 0, 'full redundancy after each return');
  });

  await t.test('sigstop', async (t) => {
    const f = await fileLedBy(c, c.path('w'), 'sigstop');
    const w = recordWriter(c, f.path, 'sigstop');
    let stopAt = 0;
    let redundancyMs = -1;
    let ackedWhileStopped = 0;
    let stats;
    try {
      await w.waitForAcked(STEP, 30_000);
      stopAt = Date.now();
      await f.primary.kill('SIGSTOP');
      t.comment(`stopped brick${f.primary.index}, primary of PGs ${f.pgs.join(',')}, for ${STOP_MS} ms`);
      try {
        const before = w.progress().acked;
        await w.waitForAcked(before + STEP, STOP_MS);
        await new Promise((r) => setTimeout(r, stopAt + STOP_MS - Date.now()));
        ackedWhileStopped = w.progress().acked - before;
      } finally {
        await f.primary.kill('SIGCONT');
      }
      const contAt = Date.now();
      redundancyMs = await waitFullRedundancy(c, contAt, REDUNDANCY_MS_MAX);
      await w.waitForAcked(w.progress().acked + STEP, 60_000);
    } finally {
      await f.primary.kill('SIGCONT');
      stats = await w.stop(30_000);
    }
    t.ok(ackedWhileStopped >= STEP, `the writer went on while the brick was stopped (${ackedWhileStopped})`);
    t.equal(stats.errorCount, 0, `the writer saw no error (${errorSummary(stats.errors)})`);
    t.ok(f.primary.alive(), 'the stopped brick runs on after SIGCONT');
    const check = await checkWriter(t, c, f.path, stats);
    report(t, 'sigstop', {
      maxPauseMs: stats.maxPauseMs,
      pauseStopMs: pauseAfter(stats, stopAt),
      errors: errorSummary(stats.errors),
      lost: check.lost,
      redundancyMs,
      records: stats.acked,
    });
    t.ok(redundancyMs >= 0, 'full redundancy after SIGCONT');
  });
});
