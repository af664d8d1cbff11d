/**
 * Durability under a writer, with real processes (see fault-failover for
 * the writer): on one cluster (min_insync 2),
 *
 * - kill-all: every brick SIGKILLed at once during writes (fsync after every
 *   4 records), all restarted: every record whose fsync returned is there;
 * - replaced-disk: a brick stopped, its metadata and block files deleted
 *   (brick.json, its identity, kept, as an operator restoring a replaced disk
 *   would), changes made meanwhile, restarted: it rejoins by backfill and
 *   every PG is back to three in-sync copies;
 * - kill-two: the two other bricks SIGKILLed, so the rebuilt brick is the
 *   only copy: writes fail fast with EROFS (not a hang, not EIO), reads go on
 *   and return, from the rebuilt brick, every record acknowledged in the
 *   scenarios before; `dunixctl volume status` exits 0 and shows every PG
 *   read-only; one brick back and writes resume;
 * - replaced-disk-crash: the replaced disk again, but after a SIGKILL and
 *   restarted at once, before its lease could expire (nothing tells the
 *   controller it was gone): its empty copies must neither lead nor be
 *   counted in sync, and no acknowledged record may be lost.
 *
 * Measured and printed, not asserted:
 * `# failover: scenario=NAME maxPauseMs=... errors=... lost=... redundancyMs=...`.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { run, startCluster, waitUntil, type BrickProc } from '../src/cluster.js';
import {
  checkFile,
  checkWriter,
  errorSummary,
  fileLedBy,
  keepLogs,
  pauseAfter,
  readBack,
  recordWriter,
  report,
  volumeStatus,
  waitFullRedundancy,
} from '../src/failover.js';
import { checkRecords } from '../src/record-writer.js';

const PGS = 16;
const REDUNDANCY_MS_MAX = 60_000;
const STEP = 100;
/** Metadata changes made while the replaced brick is away: more than the log keeps (opLogRetain 1,024). */
const CHANGES_WHILE_AWAY = 1100;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Log lines (JSON) of every brick written after byte `from[i]` of brick i's log. */
function logEvents(bricks: BrickProc[], from: number[], msg: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  bricks.forEach((b, i) => {
    const text = readFileSync(b.logFile).subarray(from[i]).toString('utf8');
    for (const line of text.split('\n')) {
      if (!line.includes(msg)) continue;
      try {
        out.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // a line cut by a kill
      }
    }
  });
  return out;
}

const logSizes = (bricks: BrickProc[]) => bricks.map((b) => statSync(b.logFile).size);

/** CHANGES_WHILE_AWAY chmods of `path` (log entries in its inode's PG), in a child process; its exit status. */
async function churn(path: string): Promise<number | null> {
  const r = await run(
    process.execPath,
    [
      '-e',
      `const fs = require('node:fs');
       for (let i = 0; i < ${CHANGES_WHILE_AWAY}; i++) fs.chmodSync(process.argv[1], i % 2 ? 0o600 : 0o644);`,
      path,
    ],
    { timeoutMs: 120_000 },
  );
  if (r.status !== 0) process.stderr.write(`chmods of ${path}: ${r.stderr}\n`);
  return r.status;
}

t.test('durability: every brick killed, a replaced disk, two bricks down', async (t) => {
  const c = await startCluster(t, { pgs: PGS });
  keepLogs(t, c);
  mkdirSync(c.path('w'));
  /** Files of the scenarios before, with their acknowledged records: read again from the rebuilt brick. */
  const done: { path: string; acked: number }[] = [];
  let rebuilt: BrickProc | undefined;

  await t.test('kill-all', async (t) => {
    const f = await fileLedBy(c, c.path('w'), 'kill-all');
    const w = recordWriter(c, f.path, 'kill-all', { fsyncEvery: 4 });
    let killAt = 0;
    let ackedAtKill = 0;
    let unsyncedAtKill = 0;
    let redundancyMs = -1;
    let stats;
    try {
      await w.waitForAcked(STEP, 30_000);
      killAt = Date.now();
      await Promise.all(c.bricks.map((b) => b.kill('SIGKILL')));
      const atKill = w.progress();
      ackedAtKill = atKill.acked;
      // Written, not yet fsync'd: these may be lost.
      unsyncedAtKill = atKill.written - atKill.acked;
      t.comment(`killed every brick after ${ackedAtKill} acknowledged records`);
      await sleep(1000);
      const back = Date.now();
      await Promise.all(c.bricks.map((b) => b.restart()));
      redundancyMs = await waitFullRedundancy(c, back, REDUNDANCY_MS_MAX);
      await w.waitForAcked(ackedAtKill + STEP, 60_000);
    } finally {
      stats = await w.stop(30_000);
    }
    // While the bricks come back one after another, the first ones up may briefly hold a PG
    // with fewer than min_insync copies: EROFS then, by design; nothing else.
    t.same(
      Object.keys(stats.errors).filter((code) => code !== 'EROFS'),
      [],
      `the writer waited for the bricks: no error but EROFS (${errorSummary(stats.errors)})`,
    );
    const check = await checkWriter(t, c, f.path, stats);
    done.push({ path: f.path, acked: stats.acked });
    report(t, 'kill-all', {
      maxPauseMs: stats.maxPauseMs,
      pauseKillMs: pauseAfter(stats, killAt),
      errors: errorSummary(stats.errors),
      lost: check.lost,
      unsyncedAtKill,
      redundancyMs,
      records: stats.acked,
    });
    t.ok(redundancyMs >= 0, 'full redundancy after the restart');
  });

  await t.test('replaced-disk', async (t) => {
    const f = await fileLedBy(c, c.path('w'), 'replaced-disk');
    // The brick leading the file's PGs loses its disk.
    const v = f.primary;
    const w = recordWriter(c, f.path, 'replaced-disk');
    const from = logSizes(c.bricks);
    let stopAt = 0;
    let redundancyMs = -1;
    let stats;
    try {
      await w.waitForAcked(STEP, 30_000);
      stopAt = Date.now();
      await v.stop();
      rmSync(join(v.dir, 'meta'), { recursive: true, force: true });
      rmSync(join(v.dir, 'blocks'), { recursive: true, force: true });
      t.ok(existsSync(join(v.dir, 'brick.json')), 'brick.json (the identity) kept');
      t.comment(`brick${v.index}'s disk replaced (it led PGs ${f.pgs.join(',')})`);
      // Meanwhile more changes to the file's inode than its PG's log keeps: it must be backfilled.
      t.equal(await churn(f.path), 0, `${CHANGES_WHILE_AWAY} chmods while the brick was away`);
      await w.waitForAcked(w.progress().acked + STEP, 60_000);
      const back = Date.now();
      await v.restart();
      redundancyMs = await waitFullRedundancy(c, back, REDUNDANCY_MS_MAX);
      await w.waitForAcked(w.progress().acked + STEP, 60_000);
    } finally {
      stats = await w.stop(30_000);
    }
    rebuilt = v;
    const backfills = logEvents(c.bricks, from, 'backfilling a replica').filter((e) => e.brick === v.id);
    const rejoins = logEvents(c.bricks, from, 'replica rejoined the in-sync set').filter(
      (e) => e.brick === v.id,
    );
    const modes = new Map<number, string>(rejoins.map((e) => [e.pg as number, e.mode as string]));
    t.equal(modes.size, PGS, `the brick rejoined every PG (${[...modes.keys()].sort((a, b) => a - b)})`);
    t.ok(
      backfills.some((e) => e.pg === f.pgs[0]),
      `the file's inode PG ${f.pgs[0]} was backfilled (backfilled: ${backfills.map((e) => e.pg).join(',')})`,
    );
    t.equal(stats.errorCount, 0, `the writer saw no error (${errorSummary(stats.errors)})`);
    const check = await checkWriter(t, c, f.path, stats);
    done.push({ path: f.path, acked: stats.acked });
    report(t, 'replaced-disk', {
      maxPauseMs: stats.maxPauseMs,
      pauseStopMs: pauseAfter(stats, stopAt),
      errors: errorSummary(stats.errors),
      lost: check.lost,
      redundancyMs,
      backfilledPgs: [...modes.values()].filter((m) => m === 'backfill').length,
      logPgs: [...modes.values()].filter((m) => m === 'log').length,
      records: stats.acked,
    });
    t.ok(redundancyMs >= 0, 'full redundancy after the replaced disk');
  });

  await t.test('kill-two', async (t) => {
    // The survivor is the rebuilt brick: reads then come from its copies only.
    const survivor = rebuilt ?? c.bricks[0]!;
    const others = c.bricks.filter((b) => b !== survivor);
    const f = await fileLedBy(c, c.path('w'), 'kill-two');
    const w = recordWriter(c, f.path, 'kill-two');
    let killAt = 0;
    let firstErrorMs = -1;
    let resumeMs = -1;
    let redundancyMs = -1;
    let ackedAtKill = 0;
    let status: Awaited<ReturnType<typeof volumeStatus>> | undefined;
    const reads: string[] = [];
    let stats;
    try {
      await w.waitForAcked(STEP, 30_000);
      killAt = Date.now();
      await Promise.all(others.map((b) => b.kill('SIGKILL')));
      ackedAtKill = w.progress().acked;
      t.comment(
        `killed brick${others[0]!.index} and brick${others[1]!.index}; brick${survivor.index} is left`,
      );
      await waitUntil(() => w.progress().errorCount >= 5, 'the writer to see errors', 60_000, 25);
      firstErrorMs = w.progress().firstErrorAt - killAt;
      status = await volumeStatus(c);
      // Reads go on, served by the one copy left: the files of the scenarios before, and this
      // one (open for writing meanwhile, its writes refused).
      for (const d of [...done, { path: f.path, acked: ackedAtKill }]) {
        try {
          const check = checkRecords(await readBack(c, d.path, { direct: true }), 64, d.acked);
          if (check.lost || check.bad) reads.push(`${d.path}: lost ${check.lost}, bad ${check.bad}`);
        } catch (err) {
          reads.push(String(err).replace(/\s+/g, ' '));
        }
      }
      const resumeFrom = Date.now();
      await others[0]!.restart();
      const before = w.progress().acked;
      await w.waitForAcked(before + 1, 60_000);
      resumeMs = Date.now() - resumeFrom;
      const back = Date.now();
      await others[1]!.restart();
      redundancyMs = await waitFullRedundancy(c, back, REDUNDANCY_MS_MAX);
      await w.waitForAcked(w.progress().acked + STEP, 60_000);
    } finally {
      stats = await w.stop(30_000);
    }
    t.same(
      Object.keys(stats.errors),
      ['EROFS'],
      `the writer saw EROFS and nothing else (${errorSummary(stats.errors)})`,
    );
    t.ok(
      stats.maxErrorCallMs < 30_000,
      `no call waited long for its error (${Math.round(stats.maxErrorCallMs)} ms)`,
    );
    t.same(reads, [], 'reads went on and returned every acknowledged record');
    t.equal(status?.status, 0, 'volume status exits 0 with PGs read-only (2 only when one is unavailable)');
    t.equal(status?.json.pgsReadOnly.length, PGS, 'volume status shows every PG read-only');
    t.same(status?.json.pgsUnavailable, [], 'and none unavailable');
    const check = await checkWriter(t, c, f.path, stats);
    report(t, 'kill-two-min-insync-2', {
      maxPauseMs: stats.maxPauseMs,
      firstErrorMs,
      maxErrorCallMs: stats.maxErrorCallMs,
      resumeMs,
      errors: errorSummary(stats.errors),
      lost: check.lost,
      redundancyMs,
      records: stats.acked,
    });
    t.ok(resumeMs >= 0 && redundancyMs >= 0, 'writes resumed and full redundancy returned');
  });

  // The same replaced disk after a crash, and the brick back before its lease could expire
  // (a service restarted at once): nothing may tell the controller it was gone, but its
  // copies are empty now. It must not lead, nor count as in sync, with them.
  await t.test('replaced-disk-crash', async (t) => {
    const f = await fileLedBy(c, c.path('w'), 'replaced-disk-crash');
    const v = f.primary;
    const w = recordWriter(c, f.path, 'replaced-disk-crash');
    let stats;
    try {
      await w.waitForAcked(STEP, 30_000);
    } finally {
      stats = await w.stop(30_000);
    }
    // Its inode PG's log is trimmed past its start: the copies left cannot be rebuilt from it.
    t.equal(await churn(f.path), 0, `${CHANGES_WHILE_AWAY} chmods`);
    const from = logSizes(c.bricks);
    const killAt = Date.now();
    await v.kill('SIGKILL');
    rmSync(join(v.dir, 'meta'), { recursive: true, force: true });
    rmSync(join(v.dir, 'blocks'), { recursive: true, force: true });
    await v.restart();
    const restartMs = Date.now() - killAt;
    t.comment(
      `brick${v.index} (primary of PGs ${f.pgs.join(',')}) crashed, lost its disk, back in ${restartMs} ms`,
    );
    let redundancyMs = -1;
    try {
      redundancyMs = await waitFullRedundancy(c, killAt, REDUNDANCY_MS_MAX);
    } catch (err) {
      t.fail(String(err));
    }
    let lost = stats.acked;
    let detail = '';
    try {
      const check = await checkFile(c, f.path, stats);
      lost = check.lost;
      detail = check.lostSample.join('; ');
    } catch (err) {
      detail = String(err).replace(/\s+/g, ' ');
    }
    const dropped = logEvents(c.bricks, from, 'could not be reconciled; dropping it').length;
    const emptied = logEvents(c.bricks, from, 'backfilling a replica').filter(
      (e) => e.pg === f.pgs[0] && e.brick !== v.id,
    ).length;
    t.equal(lost, 0, `every acknowledged record is there (${stats.acked}) ${detail}`);
    t.equal(emptied, 0, 'no copy of the PG that had the data was backfilled from the empty one');
    report(t, 'replaced-disk-crash', {
      restartMs,
      errors: errorSummary(stats.errors),
      lost,
      redundancyMs,
      replicasDropped: dropped,
      replicasOverwritten: emptied,
      records: stats.acked,
    });
  });
});
