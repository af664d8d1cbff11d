import { type PgAssignment, volumeDefaults } from '@dunix/proto';
import t from 'tap';
import {
  differingPgs,
  etaSeconds,
  flowStats,
  formatBytes,
  formatEta,
  nextJobState,
  pgInFlight,
  rebalanceStatusOf,
  renderRebalanceStatus,
  sameBrickSet,
  watchFrame,
} from '../src/cli/rebalance.js';
import {
  formatDuration,
  parseDuration,
  renderVolumeSet,
  volumeOption,
  volumeSetPatch,
} from '../src/cli/volume.js';
import type { BrickStatus, RebalanceJob, RecoveryReport, VolumeSnapshot } from '../src/index.js';

const MiB = 1024 * 1024;

function report(over: Partial<RecoveryReport>): RecoveryReport {
  return {
    pg: 0,
    brick: 'b0',
    mode: 'backfill',
    opsLeft: 0,
    bytesLeft: 0,
    ratePerS: 0,
    startedAtMs: 0,
    reporter: 'b0',
    ...over,
  };
}

function job(over: Partial<RebalanceJob> = {}): RebalanceJob {
  return {
    id: 'j1',
    state: 'running',
    maxMiBPerS: 64,
    maxConcurrent: 4,
    startedAtMs: 1_000,
    updatedAtMs: 1_000,
    pgsTotal: 4,
    pgsDone: 0,
    bytesMoved: 0,
    ...over,
  };
}

function brick(id: string, alive = true): BrickStatus {
  return { id, address: '127.0.0.1:1', host: `h-${id}`, weight: 1, dataDir: '/x', alive };
}

function pg(n: number, bricks: string[], isr = bricks): PgAssignment {
  return { pg: n, bricks, isr, epoch: 1 };
}

t.test('parseDuration: units, plain milliseconds, bad input', async (t) => {
  t.equal(parseDuration('90s'), 90_000);
  t.equal(parseDuration('5m'), 300_000);
  t.equal(parseDuration('1h'), 3_600_000);
  t.equal(parseDuration('1h30m'), 5_400_000);
  t.equal(parseDuration('2d'), 172_800_000);
  t.equal(parseDuration('1500ms'), 1500);
  t.equal(parseDuration('1.5s'), 1500);
  t.equal(parseDuration('90000'), 90_000);
  t.equal(parseDuration(' 45s '), 45_000);
  for (const bad of ['', '5x', 'm', '-5s', '5 m', '1.5', 's5', '0.0001s', '5m-', '1e3']) {
    t.throws(() => parseDuration(bad), /bad duration .*use e\.g\. 90s, 5m, 1h/, JSON.stringify(bad));
  }
});

t.test('formatDuration: largest exact units', async (t) => {
  t.equal(formatDuration(300_000), '5m');
  t.equal(formatDuration(90_000), '1m30s');
  t.equal(formatDuration(1500), '1s500ms');
  t.equal(formatDuration(0), '0s');
  t.equal(formatDuration(7 * 86_400_000), '7d');
  t.equal(formatDuration(3_661_000), '1h1m1s');
  for (const ms of [1000, 90_000, 5_400_000, 1234])
    t.equal(parseDuration(formatDuration(ms)), ms, 'round trip');
});

t.test('volume set: option names and values', async (t) => {
  t.equal(volumeOption('min_insync'), 'min_insync');
  t.equal(volumeOption('min-insync'), 'min_insync');
  t.equal(volumeOption('minInsync'), 'min_insync');
  t.equal(volumeOption('down-out-interval'), 'down_out_interval');
  t.throws(() => volumeOption('replicas'), /unknown option "replicas": options that change are min_insync/);
  t.same(volumeSetPatch('min_insync', '2'), { minInsync: 2 });
  t.throws(() => volumeSetPatch('min_insync', 'two'), /min_insync "two" must be an integer/);
  t.throws(() => volumeSetPatch('min_insync', '1.5'), /must be an integer/);
  t.same(volumeSetPatch('down_out_interval', '10m'), { downOutIntervalMs: 600_000 });
  t.same(volumeSetPatch('down_out_interval', '60000'), { downOutIntervalMs: 60_000 });
  t.throws(() => volumeSetPatch('down_out_interval', '500ms'), /down_out_interval 500ms must be 1s\.\.7d/);
  t.throws(() => volumeSetPatch('down_out_interval', '8d'), /must be 1s\.\.7d/);
  t.throws(() => volumeSetPatch('down_out_interval', 'soon'), /bad duration "soon"/);
  t.same(volumeSetPatch('full_threshold', '90%'), { fullThresholdPct: 90 });
  t.same(volumeSetPatch('full_threshold', ' 80 '), { fullThresholdPct: 80 });
  t.equal(volumeOption('full-threshold'), 'full_threshold');
  for (const bad of ['49', '100', '95.5', 'high', ''])
    t.throws(() => volumeSetPatch('full_threshold', bad), /must be a percent in 50\.\.99/, bad);
  const c = { name: 'v', ...volumeDefaults, replicas: 3, minInsync: 2, createdAtMs: 0 };
  t.equal(
    renderVolumeSet({ option: 'min_insync', previous: c, config: { ...c, minInsync: 1 } }),
    'volume v: min_insync: 1 of 3 (was 2 of 3); down_out_interval: 5m (default); full_threshold: 95% (default)\n',
  );
  t.equal(
    renderVolumeSet({
      option: 'down_out_interval',
      previous: c,
      config: { ...c, downOutIntervalMs: 90_000 },
    }),
    'volume v: min_insync: 2 of 3; down_out_interval: 1m30s (was 5m (default)); full_threshold: 95% (default)\n',
  );
  t.equal(
    renderVolumeSet({ option: 'min_insync', previous: c, config: c }),
    'volume v: min_insync: 2 of 3 (unchanged); down_out_interval: 5m (default); full_threshold: 95% (default)\n',
  );
});

t.test('formatEta, formatBytes, etaSeconds', async (t) => {
  t.equal(formatEta(null), 'unknown');
  t.equal(formatEta(0), '0s');
  t.equal(formatEta(45), '45s');
  t.equal(formatEta(44.2), '45s', 'rounded up');
  t.equal(formatEta(125), '2m05s');
  t.equal(formatEta(3720), '1h02m');
  t.equal(formatEta(2 * 86_400 + 3 * 3600), '2d03h');
  t.equal(formatEta(-1), 'unknown');
  t.equal(formatEta(Infinity), 'unknown');
  t.equal(formatBytes(0), '0 B');
  t.equal(formatBytes(1023), '1023 B');
  t.equal(formatBytes(1536), '1.5 KiB');
  t.equal(formatBytes(300 * MiB), '300.0 MiB');
  t.equal(formatBytes(1.5 * 1024 * 1024 * MiB), '1.5 TiB');
  t.equal(etaSeconds(null, 10), null);
  t.equal(etaSeconds(0, 0), 0, 'nothing left: done whatever the rate');
  t.equal(etaSeconds(100, 0), null, 'no rate: unknown');
  t.equal(etaSeconds(100, 30), 4);
});

t.test('flowStats: backfill rate, bytes left, slowest', async (t) => {
  const none = flowStats([]);
  t.same(none, {
    replicas: 0,
    pgs: 0,
    rateBytesPerS: 0,
    logOpsPerS: 0,
    logOpsLeft: 0,
    bytesLeft: null,
    etaS: null,
    slowest: null,
  });
  const rs = [
    report({ pg: 1, brick: 'b1', bytesLeft: 100 * MiB, ratePerS: 10 * MiB, startedAtMs: 50 }),
    report({ pg: 2, brick: 'b2', bytesLeft: 200 * MiB, ratePerS: 2 * MiB, startedAtMs: 90 }),
    report({ pg: 2, brick: 'b3', bytesLeft: 0, ratePerS: 2 * MiB, startedAtMs: 10 }),
    report({ pg: 3, brick: 'b1', mode: 'log', opsLeft: 500, bytesLeft: 4 * MiB, ratePerS: 1 }),
  ];
  const f = flowStats(rs);
  t.equal(f.replicas, 4);
  t.equal(f.pgs, 3);
  t.equal(f.rateBytesPerS, 14 * MiB, 'log replay (ops/s) is not in the byte rate');
  t.equal(f.bytesLeft, 304 * MiB);
  t.equal(f.etaS, 500, 'the log replay at 1 op/s is the last to finish');
  t.equal(flowStats(rs.slice(0, 3)).etaS, Math.ceil(300 / 14), 'backfills: bytes left at the byte rate');
  t.equal(f.slowest?.brick, 'b3', 'lowest backfill rate, the oldest of equals; log ops/s not compared');
  t.equal(f.logOpsPerS, 1);
  t.equal(f.logOpsLeft, 500);
  const logOnly = flowStats([rs[3]!, report({ pg: 4, mode: 'log', opsLeft: 90, ratePerS: 30 })]);
  t.equal(logOnly.rateBytesPerS, 0);
  t.equal(logOnly.etaS, 500, 'no byte rate: the longest of the replays at their own rates');
  t.equal(logOnly.slowest?.pg, 3);
  t.equal(
    flowStats([report({ mode: 'log', opsLeft: 5, ratePerS: 0 })]).etaS,
    null,
    'no rate at all: unknown',
  );
});

t.test('differingPgs, sameBrickSet, pgInFlight', async (t) => {
  t.ok(sameBrickSet(['a', 'b'], ['b', 'a']));
  t.notOk(sameBrickSet(['a', 'b'], ['a', 'c']));
  t.notOk(sameBrickSet(['a', 'b'], ['a', 'b', 'c']));
  const placement = [pg(0, ['a', 'b']), pg(1, ['b', 'a']), pg(2, ['a', 'c'])];
  t.same(
    differingPgs(placement, [
      ['b', 'a'],
      ['a', 'b'],
      ['a', 'b'],
    ]),
    [2],
    'order does not matter',
  );
  const alive = new Set(['a', 'b', 'c']);
  t.notOk(pgInFlight(pg(0, ['a', 'b']), 2, alive));
  t.ok(pgInFlight(pg(0, ['a', 'b', 'c']), 2, alive), 'an extra copy');
  t.ok(pgInFlight(pg(0, ['a', 'c'], ['a']), 2, alive), 'a live copy catching up');
  t.notOk(pgInFlight(pg(0, ['a', 'd'], ['a']), 2, alive), 'a dead copy out of sync is not in flight');
});

function snapshot(
  placement: PgAssignment[],
  bricks: BrickStatus[],
  rebalance: RebalanceJob | null,
): VolumeSnapshot {
  return {
    config: {
      name: 'v',
      ...volumeDefaults,
      pgCount: placement.length,
      replicas: 2,
      minInsync: 2,
      createdAtMs: 0,
    },
    placement,
    bricks,
    rebalance,
  };
}

t.test('rebalanceStatusOf: differing, moving, forced, heal, ETA', async (t) => {
  const bricks = ['a', 'b', 'c', 'd'].map((id) => brick(id));
  bricks[3] = { ...bricks[3]!, admin: { state: 'draining', weight: 1, updatedAtMs: 0 } };
  const placement = [
    pg(0, ['a', 'b']), // at target
    pg(1, ['a', 'b', 'c'], ['a', 'b']), // moving: c added, catching up
    pg(2, ['a', 'b']), // differs, not started
    pg(3, ['c', 'a'], ['c']), // at target, a catching up: heal
    pg(4, ['d', 'a']), // forced: d drains
  ];
  const target = [
    ['a', 'b'],
    ['a', 'c'],
    ['c', 'b'],
    ['c', 'a'],
    ['a', 'b'],
  ];
  const reports = [
    report({ pg: 1, brick: 'c', bytesLeft: 100 * MiB, ratePerS: 10 * MiB, startedAtMs: 9_000 }),
    report({ pg: 3, brick: 'a', bytesLeft: 30 * MiB, ratePerS: 3 * MiB, startedAtMs: 8_000 }),
  ];
  const j = job({ pgsTotal: 4, pgsDone: 1, bytesMoved: 50 * MiB });
  const r = rebalanceStatusOf(snapshot(placement, bricks, j), reports, 10_000, {
    target,
    error: null,
    candidates: new Set(['a', 'b', 'c']),
  });
  t.equal(r.pgsDiffering, 3);
  t.same(r.pgsMoving, [1]);
  t.same(r.pgsHealing, [3]);
  t.equal(r.pgsForced, 1);
  t.equal(r.moves.replicas, 1);
  t.equal(r.moves.rateBytesPerS, 10 * MiB);
  t.equal(r.moves.bytesLeft, 100 * MiB);
  t.equal(r.moves.etaS, 10);
  t.equal(r.heal.replicas, 1);
  t.equal(r.heal.etaS, 10);
  // 100 MiB left in PG 1, 2 PGs not started at 50 MiB a PG done: 200 MiB at 10 MiB/s.
  t.equal(r.jobEtaS, 20);
  const text = renderRebalanceStatus(r);
  t.match(text, /^volume v: rebalance j1 running, started 1970-01-01T00:00:01\.000Z \(9s ago\)\n/);
  t.match(text, /\nPGs: 1\/4 done; 3 of 5 PGs differ from the target; 1 moving now\n/);
  t.match(
    text,
    /\nmoved 50\.0 MiB; rate 10\.0 MiB\/s; 100\.0 MiB left in the PGs moving now; ETA 10s \(whole job: about 20s\)\n/,
  );
  t.match(text, /\n {2}slowest: PG 1 on c \(backfill\) at 10\.0 MiB\/s, 100\.0 MiB left, for 1s\n/);
  t.match(text, /\nthrottle: 64 MiB\/s per brick, 4 PG\(s\) at once\n/);
  t.match(text, /\ndrain: 1 PG\(s\) hold a replica on a brick that is draining/);
  t.match(
    text,
    /\nheal: 1 replica\(s\) in 1 PG\(s\) catching up; rate 3\.0 MiB\/s; 30\.0 MiB left; ETA 10s\n/,
  );

  // No PG done yet: the whole job's ETA is unknown; the current moves' is not.
  const early = rebalanceStatusOf(snapshot(placement, bricks, job()), reports, 10_000, {
    target,
    error: null,
    candidates: new Set(['a', 'b', 'c']),
  });
  t.equal(early.jobEtaS, null);
  t.equal(early.moves.etaS, 10);

  // No job, no target: heal still shows; moves told apart by an extra copy only.
  const none = rebalanceStatusOf(snapshot(placement, bricks, null), reports, 10_000, {
    target: null,
    error: 'too few bricks',
    candidates: new Set(['a', 'b', 'c']),
  });
  t.equal(none.pgsDiffering, null);
  t.same(none.pgsMoving, [1]);
  t.same(none.pgsHealing, [3]);
  const noneText = renderRebalanceStatus(none);
  t.match(
    noneText,
    /^volume v: no rebalance has run\nPGs: target unknown \(too few bricks\); 1 moving now\n/,
  );
  t.match(noneText, /\nmoves: 1 replica\(s\) in 1 PG\(s\) being copied; rate 10\.0 MiB\/s/);
  t.match(noneText, /\nheal: 1 replica\(s\) in 1 PG\(s\) catching up/);
  t.notMatch(noneText, /throttle/);

  const quiet = rebalanceStatusOf(snapshot([pg(0, ['a', 'b'])], bricks.slice(0, 3), null), [], 0, {
    target: [['a', 'b']],
    error: null,
    candidates: new Set(['a', 'b', 'c']),
  });
  t.equal(
    renderRebalanceStatus(quiet),
    'volume v: no rebalance has run\nPGs: 0 of 1 PGs differ from the target; 0 moving now\nheal: nothing catching up\n',
  );
  const mixed = rebalanceStatusOf(snapshot(placement, bricks, null), [], 10_000, {
    target,
    error: null,
    candidates: new Set(['a', 'b', 'c']),
  });
  t.match(
    renderRebalanceStatus(mixed),
    /\nPGs: 3 of 5 PGs differ from the target; 1 moving now\n {2}a rebalance moves the 2 not draining: dunixctl volume rebalance start v\n/,
  );
  t.equal(quiet.moves.etaS, null);
  t.equal(quiet.heal.bytesLeft, null, 'bytes left unknown without reports');
});

t.test('nextJobState: pause, resume, stop and their refusals', async (t) => {
  const now = 5_000;
  t.throws(() => nextJobState('v', null, 'pause', now), /no rebalance has run on volume v/);
  t.match(nextJobState('v', job(), 'pause', now), { state: 'paused', updatedAtMs: now });
  t.equal(nextJobState('v', job({ state: 'paused' }), 'pause', now), undefined, 'already paused');
  t.throws(() => nextJobState('v', job({ state: 'stopped' }), 'pause', now), /is stopped: nothing to pause/);
  t.throws(() => nextJobState('v', job({ state: 'done' }), 'pause', now), /is done: nothing to pause/);
  t.match(nextJobState('v', job({ state: 'paused' }), 'resume', now), { state: 'running' });
  t.equal(nextJobState('v', job(), 'resume', now), undefined, 'already running');
  t.throws(
    () => nextJobState('v', job({ state: 'stopped' }), 'resume', now),
    /is stopped and cannot resume; start a new one: dunixctl volume rebalance start v/,
  );
  t.throws(() => nextJobState('v', job({ state: 'done' }), 'resume', now), /is done and cannot resume/);
  t.match(nextJobState('v', job(), 'stop', now), { state: 'stopped', finishedAtMs: now });
  t.match(nextJobState('v', job({ state: 'paused' }), 'stop', now), { state: 'stopped' });
  t.equal(nextJobState('v', job({ state: 'stopped' }), 'stop', now), undefined);
  t.throws(() => nextJobState('v', job({ state: 'done' }), 'stop', now), /already done: nothing to stop/);
});

t.test('watchFrame: the job, else drains and heal counted down', async (t) => {
  const base = rebalanceStatusOf(snapshot([pg(0, ['a', 'b'])], [brick('a'), brick('b')], null), [], 0, {
    target: [['a', 'b']],
    error: null,
    candidates: new Set(['a', 'b']),
  });
  t.same(watchFrame(base), {
    label: 'heal',
    value: 0,
    total: 0,
    rateBytesPerS: 0,
    etaS: 0,
    moving: 0,
    active: false,
  });
  const running = { ...base, job: job({ pgsTotal: 10, pgsDone: 4 }), jobEtaS: 30 };
  const f1 = watchFrame(running);
  t.match(f1, { label: 'rebalance', value: 4, total: 10, etaS: 30, active: true });
  t.match(watchFrame({ ...running, job: job({ state: 'paused', pgsTotal: 3, pgsDone: 5 }) }, f1), {
    value: 5,
    total: 5,
    active: true,
  });
  t.match(
    watchFrame({ ...base, job: job({ state: 'done', pgsTotal: 10, pgsDone: 10 }) }, f1),
    { label: 'rebalance', value: 10, total: 10, active: false },
    'a finished job ends its bar full',
  );
  const draining = { ...base, pgsForced: 6, pgsMoving: [1, 2] };
  const d1 = watchFrame(draining, f1);
  t.match(d1, { label: 'drain', value: 0, total: 6, active: true }, 'a new label counts afresh');
  const d2 = watchFrame({ ...draining, pgsForced: 2, pgsMoving: [1] }, d1);
  t.match(d2, { label: 'drain', value: 4, total: 6 });
  t.match(watchFrame(base, d2), { label: 'drain', value: 6, total: 6, active: false }, 'drained');
  const healing = {
    ...base,
    pgsHealing: [3],
    heal: flowStats([report({ pg: 3, bytesLeft: 10, ratePerS: 5 })]),
  };
  const h1 = watchFrame(healing, { ...d2, label: 'heal', total: 4 });
  t.match(h1, { label: 'heal', value: 3, total: 4, etaS: 2, rateBytesPerS: 5, active: true });
  t.match(watchFrame(base, h1), { label: 'heal', value: 4, total: 4, active: false });
});
