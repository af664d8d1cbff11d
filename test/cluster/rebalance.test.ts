/**
 * Growing and shrinking a live volume, with real processes and a writer that
 * fsyncs every record and checks every acknowledged one afterwards:
 *
 * - grow: a volume made on 3 bricks (replicas 3) gets a 4th and 5th brick
 *   (operator records `in`) and a rebalance: PG replicas even out within
 *   10% of each brick's share, every PG ends with 3 in-sync copies, files
 *   written before read back identical, no acknowledged record is lost;
 * - drain and remove: a drained brick loses every replica, remove is refused
 *   while it holds any or runs, accepted after;
 * - down-out: a brick dead longer than the volume's down_out_interval has
 *   its replicas re-created on the others without any command.
 *
 * Printed, not asserted: the writer's longest pause, the rebalance time and
 * bytes moved: `# rebalance: scenario=NAME key=value ...`.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import t, { type Test } from 'tap';
import type { PgAssignment } from '@dunix/proto';
import { startCluster, waitUntil, type Cluster } from '../src/cluster.js';
import {
  checkWriter,
  errorSummary,
  filesIntact,
  keepLogs,
  pauseAfter,
  recordWriter,
  sha256,
} from '../src/failover.js';

const MiB = 1024 * 1024;

function report(
  t: { comment(...a: unknown[]): void },
  scenario: string,
  fields: Record<string, string | number>,
) {
  const kv = Object.entries(fields).map(([k, v]) => `${k}=${typeof v === 'number' ? Math.round(v) : v}`);
  t.comment(`rebalance: scenario=${scenario} ${kv.join(' ')}`);
}

/** PG replicas listed per brick id. */
/** The weight a brick registered with (its capacity in GiB, as every brick here shares one disk). */
async function weightOf(c: Cluster, id: string): Promise<number> {
  return (await c.coord.listBricks(c.volume)).find((b) => b.id === id)!.weight;
}

function replicaCounts(placement: PgAssignment[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const a of placement) for (const b of a.bricks) out.set(b, (out.get(b) ?? 0) + 1);
  return out;
}

async function writeFiles(c: Cluster, n: number): Promise<Map<string, string>> {
  const sums = new Map<string, string>();
  for (let i = 0; i < n; i++) {
    const data = randomBytes(MiB + i * 4099);
    const p = c.path(`data-${i}`);
    writeFileSync(p, data);
    sums.set(p, sha256(data));
  }
  return sums;
}

async function checkFiles(t: Test, c: Cluster, sums: Map<string, string>) {
  t.equal(await filesIntact(c, sums), sums.size, `every file reads back identical (${sums.size} files)`);
}

/** Starts a rebalance job as `dunixctl volume rebalance start` would (throttle, PGs at once). */
async function startRebalance(c: Cluster, id: string, maxMiBPerS: number, maxConcurrent: number) {
  const nowMs = Date.now();
  await c.coord.updateRebalance(c.volume, () => ({
    id,
    state: 'running',
    maxMiBPerS,
    maxConcurrent,
    startedAtMs: nowMs,
    updatedAtMs: nowMs,
    pgsTotal: 0,
    pgsDone: 0,
    bytesMoved: 0,
  }));
}

/** Every PG: exactly `replicas` bricks, all in sync. */
function settled(placement: PgAssignment[], replicas: number): boolean {
  return placement.every((a) => a.bricks.length === replicas && a.isr.length === replicas);
}

t.test('grow from 3 to 5 bricks under a writer; drain and remove one', async (t) => {
  const c = await startCluster(t, { bricks: 5, spareBricks: 2, pgs: 32, replicas: 3 });
  keepLogs(t, c);
  const sums = await writeFiles(c, 12);
  const w = recordWriter(c, c.path('records'), 'rebalance');
  await w.waitForAcked(50, 30_000);

  for (const b of c.bricks.slice(3)) await b.launch();
  await waitUntil(
    async () => (await c.coord.listBricks(c.volume)).filter((b) => b.alive).length === 5,
    'the new bricks to register',
  );
  const ids = c.bricks.map((b) => b.id);
  t.same(
    [...replicaCounts(await c.placement()).keys()].sort(),
    ids.slice(0, 3).sort(),
    'registered bricks get nothing before they are added',
  );
  for (const id of ids.slice(3))
    await c.coord.setBrickAdmin(c.volume, id, {
      state: 'in',
      weight: await weightOf(c, id),
      updatedAtMs: Date.now(),
    });
  const startedMs = Date.now();
  await startRebalance(c, 'grow', 200, 8);
  await waitUntil(
    async () => (await c.coord.getSnapshot(c.volume)).rebalance?.state === 'done',
    'the rebalance to finish',
    180_000,
    250,
  );
  const tookMs = Date.now() - startedMs;
  const placement = await c.placement();
  t.ok(settled(placement, 3), 'every PG has 3 bricks, all in sync');
  const counts = replicaCounts(placement);
  const share = (32 * 3) / 5;
  for (const id of ids) {
    const n = counts.get(id) ?? 0;
    t.ok(
      Math.abs(n - share) <= share * 0.1 + 1e-9,
      `brick ${id} holds ${n} replicas (share ${share}, within 10%)`,
    );
  }
  const job = (await c.coord.getSnapshot(c.volume)).rebalance!;
  t.equal(job.pgsDone, job.pgsTotal, `the job counted its PGs (${job.pgsDone}/${job.pgsTotal})`);
  t.ok(job.pgsTotal > 0, 'it moved some');
  // About 40% of 3 copies of ~13 MiB land on the new bricks; each brick reports within 2 s.
  await waitUntil(
    async () => (await c.coord.getSnapshot(c.volume)).rebalance!.bytesMoved >= 5 * MiB,
    'the job to count the bytes its moves copied',
    10_000,
    250,
  );

  // Drain one of the original bricks: every replica moves off.
  const drained = ids[0]!;
  await c.coord.setBrickAdmin(c.volume, drained, {
    state: 'draining',
    weight: await weightOf(c, drained),
    updatedAtMs: Date.now(),
  });
  await t.rejects(
    c.coord.removeBrick(c.volume, drained),
    { code: 'BUSY' },
    'remove refused while it holds replicas',
  );
  const drainStart = Date.now();
  await waitUntil(
    async () => {
      const p = await c.placement();
      return p.every((a) => !a.bricks.includes(drained)) && settled(p, 3);
    },
    'the drained brick to hold nothing',
    180_000,
    250,
  );
  const drainMs = Date.now() - drainStart;
  await t.rejects(
    c.coord.removeBrick(c.volume, drained),
    { code: 'BUSY', message: /running/ },
    'refused while it runs',
  );
  await c.bricks[0]!.stop();
  await waitUntil(
    async () => !(await c.coord.listBricks(c.volume)).find((b) => b.id === drained)?.alive,
    'its lease to go',
    30_000,
  );
  await c.coord.removeBrick(c.volume, drained);
  t.notOk(
    (await c.coord.listBricks(c.volume)).some((b) => b.id === drained),
    'removed: no longer a member',
  );

  const stats = await w.stop(30_000);
  t.equal(stats.errorCount, 0, `the writer saw no error (${errorSummary(stats.errors)})`);
  await checkWriter(t, c, c.path('records'), stats);
  await checkFiles(t, c, sums);
  report(t, 'grow', {
    pgsMoved: job.pgsTotal,
    rebalanceMs: tookMs,
    drainMs,
    maxPauseMs: pauseAfter(stats, startedMs, tookMs + drainMs + 5000),
    acked: stats.acked,
  });
});

t.test('a brick down longer than down_out_interval has its replicas re-created elsewhere', async (t) => {
  const c = await startCluster(t, { bricks: 4, pgs: 16, replicas: 3 });
  keepLogs(t, c);
  const sums = await writeFiles(c, 4);
  await c.coord.updateVolumeConfig(c.volume, { downOutIntervalMs: 3000 });
  const victim = c.bricks[1]!;
  const id = victim.id;
  t.ok((replicaCounts(await c.placement()).get(id) ?? 0) > 0, 'the victim holds replicas');
  const killedMs = Date.now();
  await victim.kill('SIGKILL');
  await waitUntil(
    async () => {
      const p = await c.placement();
      return p.every((a) => !a.bricks.includes(id)) && settled(p, 3);
    },
    'its replicas to be re-created on the others',
    120_000,
    250,
  );
  const replacedMs = Date.now() - killedMs;
  t.ok(replacedMs >= 3000, `not before the interval (${replacedMs} ms)`);
  await checkFiles(t, c, sums);
  report(t, 'down-out', { replacedMs });
});

t.test('a rebalance survives the death of the controller and of the brick being filled', async (t) => {
  const c = await startCluster(t, { bricks: 4, spareBricks: 1, pgs: 16, replicas: 3 });
  keepLogs(t, c);
  const sums = await writeFiles(c, 24);
  const w = recordWriter(c, c.path('records'), 'rebalance-crash');
  await w.waitForAcked(20, 30_000);
  const newcomer = c.bricks[3]!;
  await newcomer.launch();
  await waitUntil(
    async () => (await c.coord.listBricks(c.volume)).filter((b) => b.alive).length === 4,
    'the new brick to register',
  );
  await c.coord.setBrickAdmin(c.volume, newcomer.id, {
    state: 'in',
    weight: await weightOf(c, newcomer.id),
    updatedAtMs: Date.now(),
  });
  const startedMs = Date.now();
  // Slow enough (4 MiB/s, 2 PGs at once) that the kills land in the middle of backfills.
  await startRebalance(c, 'crash', 4, 2);
  await waitUntil(
    async () =>
      (await c.placement()).some((a) => a.bricks.includes(newcomer.id) && !a.isr.includes(newcomer.id)),
    'a PG to be backfilling onto the new brick',
    60_000,
    50,
  );
  const controllerId = await c.coord.getController(c.volume);
  const controller = c.bricks.find((b) => b.id === controllerId);
  t.ok(controller, `the controller is a brick (${controllerId})`);
  const killedMs = Date.now();
  await newcomer.kill('SIGKILL');
  if (controller && controller !== newcomer) await controller.kill('SIGKILL');
  await new Promise((r) => setTimeout(r, 1000));
  await newcomer.launch();
  if (controller && controller !== newcomer) await controller.restart();
  await waitUntil(
    async () => (await c.coord.getSnapshot(c.volume)).rebalance?.state === 'done',
    'the rebalance to resume and finish',
    240_000,
    250,
  );
  const tookMs = Date.now() - startedMs;
  const placement = await c.placement();
  t.ok(settled(placement, 3), 'every PG has 3 bricks, all in sync');
  t.ok((replicaCounts(placement).get(newcomer.id) ?? 0) >= 10, 'the new brick got its share');
  const stats = await w.stop(30_000);
  await checkWriter(t, c, c.path('records'), stats);
  await checkFiles(t, c, sums);
  report(t, 'crash-mid-rebalance', {
    rebalanceMs: tookMs,
    maxPauseMs: pauseAfter(stats, killedMs, 30_000),
    errors: errorSummary(stats.errors),
    acked: stats.acked,
  });
});
