/**
 * min_insync 1 under a writer, with real processes (see fault-failover for
 * the writer): the brick leading the file's PGs and one other are SIGKILLed;
 * the last survivor takes the writes (no error, nothing acknowledged lost)
 * and `dunixctl volume status` exits 0 showing every PG degraded, none
 * read-only; both come back and every PG returns to three in-sync copies.
 * (min_insync 2, where the same kill makes the PGs read-only, is in
 * fault-durability.)
 *
 * Measured and printed, not asserted:
 * `# failover: scenario=kill-two-min-insync-1 maxPauseMs=... errors=... lost=... redundancyMs=...`.
 */
import { mkdirSync } from 'node:fs';
import t from 'tap';
import { startCluster } from '../src/cluster.js';
import {
  checkWriter,
  errorSummary,
  fileLedBy,
  keepLogs,
  pauseAfter,
  recordWriter,
  report,
  volumeStatus,
  waitFullRedundancy,
} from '../src/failover.js';

const PGS = 16;
const REDUNDANCY_MS_MAX = 60_000;
const STEP = 100;

t.test('min_insync 1: the last survivor takes the writes', async (t) => {
  const c = await startCluster(t, { pgs: PGS, minInsync: 1 });
  keepLogs(t, c);
  mkdirSync(c.path('w'));
  const f = await fileLedBy(c, c.path('w'), 'kill-two');
  const victims = [f.primary, c.bricks.find((b) => b !== f.primary)!];
  const survivor = c.bricks.find((b) => !victims.includes(b))!;
  const w = recordWriter(c, f.path, 'kill-two-min-insync-1');
  let killAt = 0;
  let redundancyMs = -1;
  let ackedWithOne = 0;
  let status: Awaited<ReturnType<typeof volumeStatus>> | undefined;
  let stats;
  try {
    await w.waitForAcked(STEP, 30_000);
    killAt = Date.now();
    await Promise.all(victims.map((b) => b.kill('SIGKILL')));
    t.comment(
      `killed brick${victims[0]!.index} and brick${victims[1]!.index}; brick${survivor.index} is left`,
    );
    const before = w.progress().acked;
    await w.waitForAcked(before + STEP, 60_000);
    ackedWithOne = w.progress().acked - before;
    status = await volumeStatus(c);
    const back = Date.now();
    await Promise.all(victims.map((b) => b.restart()));
    redundancyMs = await waitFullRedundancy(c, back, REDUNDANCY_MS_MAX);
    await w.waitForAcked(w.progress().acked + STEP, 60_000);
  } finally {
    stats = await w.stop(30_000);
  }
  t.ok(ackedWithOne >= STEP, `the writer went on with one copy left (${ackedWithOne} records)`);
  t.equal(stats.errorCount, 0, `the writer saw no error (${errorSummary(stats.errors)})`);
  t.equal(status?.status, 0, 'volume status exits 0 (no PG unavailable)');
  t.equal(status?.json.pgsDegraded.length, PGS, 'volume status shows every PG degraded');
  t.same(status?.json.pgsReadOnly, [], 'and none read-only');
  t.same(status?.json.isrHistogram.find((h) => h.live === 1)?.pgs, PGS, 'every PG has one live in-sync copy');
  const check = await checkWriter(t, c, f.path, stats);
  report(t, 'kill-two-min-insync-1', {
    maxPauseMs: stats.maxPauseMs,
    pauseKillMs: pauseAfter(stats, killAt),
    errors: errorSummary(stats.errors),
    lost: check.lost,
    redundancyMs,
    records: stats.acked,
  });
  t.ok(redundancyMs >= 0, 'full redundancy after both returned');
});
