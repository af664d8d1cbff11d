import { PassThrough } from 'node:stream';
import { createLogger } from '@dunix/proto';
import t, { type Test } from 'tap';
import { MemoryCoordinator, MemoryKv } from '../src/index.js';
import { brick } from './compliance.js';
import { runCli, targetOf } from './helpers/cli.js';

const log = createLogger('cli-rebalance-test', () => undefined);
const MiB = 1024 * 1024;

const cli = runCli;

const target = targetOf;

/** A volume of 3 bricks (replicas 2, 32 PGs), then b3 added: PGs differ from the target. */
async function setup(t: Test) {
  const kv = new MemoryKv();
  const bricks = new MemoryCoordinator({ kv, log });
  t.teardown(() => bricks.stop());
  await bricks.start();
  for (let i = 0; i < 3; i++) await bricks.registerBrick('v', brick(i), 2000);
  t.equal((await cli(kv, ['volume', 'create', 'v', '--replicas', '2', '--pgs', '32'])).code, 0);
  await bricks.registerBrick('v', brick(3), 2000);
  t.equal((await cli(kv, ['brick', 'add', 'v', 'b3'])).code, 0);
  const list = JSON.parse((await cli(kv, ['--json', 'brick', 'list', 'v'])).stdout);
  t.ok(list.pgsDiffering > 0, `adding b3 leaves ${list.pgsDiffering} PGs to move`);
  return { kv, bricks, differing: list.pgsDiffering as number };
}

t.test('rebalance start: a job over the differing PGs; twice refused; --restart', async (t) => {
  const { kv, bricks, differing } = await setup(t);
  let r = await cli(kv, ['volume', 'rebalance', 'start', 'nope']);
  t.equal(r.code, 1);
  t.equal(r.stderr, 'dunixctl: volume nope does not exist\n');
  for (const [opt, bad, re] of [
    ['--max-mib-per-s', 'fast', /--max-mib-per-s must be a number in 0\.\.1000000/],
    ['--max-concurrent', '0', /--max-concurrent must be an integer in 1\.\.1024/],
    ['--max-concurrent', '2.5', /--max-concurrent must be an integer in 1\.\.1024/],
  ] as const) {
    r = await cli(kv, ['volume', 'rebalance', 'start', 'v', opt, bad]);
    t.equal(r.code, 1, `${opt} ${bad}`);
    t.match(r.stderr, re);
  }
  t.equal((await bricks.getSnapshot('v')).rebalance, null, 'nothing written');

  const before = Date.now();
  r = await cli(kv, ['volume', 'rebalance', 'start', 'v']);
  t.equal(r.code, 0, r.stderr);
  const job = (await bricks.getSnapshot('v')).rebalance!;
  t.match(job, {
    state: 'running',
    maxMiBPerS: 64,
    maxConcurrent: 4,
    pgsTotal: differing,
    pgsDone: 0,
    bytesMoved: 0,
  });
  t.ok(job.startedAtMs >= before && parseInt(job.id, 36) === job.startedAtMs, 'id: start time in base 36');
  t.equal(
    r.stdout,
    `rebalance ${job.id} started on volume v: ${differing} of 32 PGs differ from the target; ` +
      'throttle 64 MiB/s per brick, 4 PG(s) at once\n' +
      'note: no controller leads this volume: nothing moves until a brickd runs\n' +
      'watch it: dunixctl volume rebalance status v --watch\n',
  );

  r = await cli(kv, ['volume', 'rebalance', 'start', 'v']);
  t.equal(r.code, 1, 'start twice');
  t.equal(
    r.stderr,
    `dunixctl: rebalance ${job.id} of volume v is already running (0/${differing} PGs done): ` +
      'pause, resume or stop it, or start over with --restart\n',
  );
  t.equal((await cli(kv, ['volume', 'rebalance', 'pause', 'v'])).code, 0);
  r = await cli(kv, ['volume', 'rebalance', 'start', 'v']);
  t.equal(r.code, 1, 'start while paused');
  t.match(r.stderr, /is already paused/);

  await bricks.campaign('v', 'b0', () => undefined, 2000);
  r = await cli(kv, [
    '--json',
    'volume',
    'rebalance',
    'start',
    'v',
    '--restart',
    '--max-mib-per-s',
    '0',
    '--max-concurrent',
    '16',
  ]);
  t.equal(r.code, 0, r.stderr);
  const started = JSON.parse(r.stdout);
  t.match(started, {
    started: true,
    controller: 'b0',
    pgsDiffering: differing,
    job: { state: 'running', maxMiBPerS: 0, maxConcurrent: 16 },
    replaced: { id: job.id, state: 'paused' },
  });
  t.not(started.job.id, job.id, 'a new id');
  r = await cli(kv, ['volume', 'rebalance', 'stop', 'v']);
  r = await cli(kv, ['volume', 'rebalance', 'start', 'v', '--max-mib-per-s', '12.5']);
  t.equal(r.code, 0, 'a stopped job is no obstacle');
  t.match(r.stdout, /throttle 12\.5 MiB\/s per brick, 4 PG\(s\) at once\n/);
  t.notMatch(r.stdout, /no controller/);
});

t.test('rebalance start: already balanced writes nothing', async (t) => {
  const kv = new MemoryKv();
  const bricks = new MemoryCoordinator({ kv, log });
  t.teardown(() => bricks.stop());
  await bricks.start();
  for (let i = 0; i < 2; i++) await bricks.registerBrick('w', brick(i), 2000);
  t.equal((await cli(kv, ['volume', 'create', 'w', '--replicas', '2', '--pgs', '8'])).code, 0);
  const r = await cli(kv, ['volume', 'rebalance', 'start', 'w']);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, 'volume w is already balanced: every PG is on its target bricks; nothing started\n');
  t.equal((await bricks.getSnapshot('w')).rebalance, null);
  const s = await cli(kv, ['--json', 'volume', 'rebalance', 'start', 'w']);
  t.match(JSON.parse(s.stdout), { started: false, job: null, pgsDiffering: 0 });
});

t.test('rebalance start: no target placement', async (t) => {
  const { kv } = await setup(t);
  for (const b of ['b0', 'b1', 'b3']) t.equal((await cli(kv, ['brick', 'drain', 'v', b])).code, 0);
  const r = await cli(kv, ['volume', 'rebalance', 'start', 'v']);
  t.equal(r.code, 1);
  t.equal(
    r.stderr,
    'dunixctl: no target placement for volume v: 1 brick(s) may hold PGs (role in, weight > 0) ' +
      'but every PG needs 2 (replicas)\n',
  );
});

t.test('rebalance pause/resume/stop and their refusals', async (t) => {
  const { kv, bricks } = await setup(t);
  let r = await cli(kv, ['volume', 'rebalance', 'pause', 'v']);
  t.equal(r.code, 1);
  t.equal(r.stderr, 'dunixctl: no rebalance has run on volume v\n');
  r = await cli(kv, ['volume', 'rebalance', 'resume', 'nope']);
  t.equal(r.code, 1);
  t.equal(r.stderr, 'dunixctl: volume nope does not exist\n');

  t.equal((await cli(kv, ['volume', 'rebalance', 'start', 'v'])).code, 0);
  const id = (await bricks.getSnapshot('v')).rebalance!.id;
  const n = (await bricks.getSnapshot('v')).rebalance!.pgsTotal;
  r = await cli(kv, ['volume', 'rebalance', 'resume', 'v']);
  t.equal(r.code, 0);
  t.equal(r.stdout, `rebalance ${id} of volume v is already running (0/${n} PGs done)\n`);
  r = await cli(kv, ['volume', 'rebalance', 'pause', 'v']);
  t.equal(r.code, 0);
  t.equal(
    r.stdout,
    `rebalance ${id} of volume v paused (0/${n} PGs done)\nresume it: dunixctl volume rebalance resume v\n`,
  );
  t.equal((await bricks.getSnapshot('v')).rebalance!.state, 'paused');
  r = await cli(kv, ['volume', 'rebalance', 'pause', 'v']);
  t.equal(r.code, 0);
  t.match(r.stdout, /is already paused/);
  r = await cli(kv, ['--json', 'volume', 'rebalance', 'resume', 'v']);
  t.equal(r.code, 0);
  t.match(JSON.parse(r.stdout), { action: 'resume', changed: true, job: { id, state: 'running' } });
  r = await cli(kv, ['volume', 'rebalance', 'stop', 'v']);
  t.equal(r.code, 0);
  t.match(r.stdout, new RegExp(`^rebalance ${id} of volume v stopped \\(0/${n} PGs done\\)\n`));
  const stopped = (await bricks.getSnapshot('v')).rebalance!;
  t.equal(stopped.state, 'stopped');
  t.ok(stopped.finishedAtMs !== undefined);
  r = await cli(kv, ['volume', 'rebalance', 'stop', 'v']);
  t.equal(r.code, 0);
  t.match(r.stdout, /is already stopped/);
  r = await cli(kv, ['volume', 'rebalance', 'resume', 'v']);
  t.equal(r.code, 1);
  t.equal(
    r.stderr,
    `dunixctl: rebalance ${id} is stopped and cannot resume; start a new one: dunixctl volume rebalance start v\n`,
  );
  r = await cli(kv, ['volume', 'rebalance', 'pause', 'v']);
  t.equal(r.code, 1);
  t.equal(r.stderr, `dunixctl: rebalance ${id} is stopped: nothing to pause\n`);
  await bricks.updateRebalance('v', (j) => ({ ...j!, state: 'done' }));
  r = await cli(kv, ['volume', 'rebalance', 'stop', 'v']);
  t.equal(r.code, 1);
  t.equal(r.stderr, `dunixctl: rebalance ${id} is already done: nothing to stop\n`);
});

t.test('rebalance status: job, moves, heal; volume status shows the job', async (t) => {
  const { kv, bricks, differing } = await setup(t);
  let r = await cli(kv, ['volume', 'rebalance', 'status', 'v']);
  t.equal(r.code, 0, r.stderr);
  t.equal(
    r.stdout,
    'volume v: no rebalance has run\n' +
      `PGs: ${differing} of 32 PGs differ from the target; 0 moving now\n` +
      '  a rebalance moves them: dunixctl volume rebalance start v\n' +
      'heal: nothing catching up\n',
  );
  r = await cli(kv, ['volume', 'rebalance', 'status', 'nope']);
  t.equal(r.code, 1);
  t.equal(r.stderr, 'dunixctl: volume nope does not exist\n');

  t.equal((await cli(kv, ['volume', 'rebalance', 'start', 'v'])).code, 0);
  // The controller's first step on one PG: b3 added, catching up (backfill).
  const snap = await bricks.getSnapshot('v');
  const moving = snap.placement.find((a) => !a.bricks.includes('b3'))!;
  await bricks.updatePlacement('v', moving.pg, moving.epoch, [...moving.bricks, 'b3'], moving.isr);
  await bricks.reportRecovery('v', moving.bricks[0]!, {
    pg: moving.pg,
    brick: 'b3',
    mode: 'backfill',
    opsLeft: 0,
    bytesLeft: 640 * MiB,
    ratePerS: 32 * MiB,
    startedAtMs: Date.now() - 5000,
  });
  // A PG at its target whose replica came back: heal.
  const tgt = JSON.parse((await cli(kv, ['--json', 'volume', 'rebalance', 'status', 'v'])).stdout);
  t.same(tgt.pgsMoving, [moving.pg]);
  const now = await bricks.getSnapshot('v');
  const tgt2 = target(now);
  const healPg = now.placement.find(
    (a) => a.pg !== moving.pg && a.bricks.length === 2 && a.bricks.every((b) => tgt2[a.pg]!.includes(b)),
  )!;
  t.ok(healPg, 'a PG already at its target');
  await bricks.updatePlacement('v', healPg.pg, healPg.epoch, healPg.bricks, [healPg.bricks[0]!]);
  await bricks.reportRecovery('v', healPg.bricks[0]!, {
    pg: healPg.pg,
    brick: healPg.bricks[1]!,
    mode: 'backfill',
    opsLeft: 0,
    bytesLeft: 30 * MiB,
    ratePerS: 10 * MiB,
    startedAtMs: Date.now() - 1000,
  });
  await bricks.updateRebalance('v', (j) => ({ ...j!, pgsDone: 2, bytesMoved: 256 * MiB }));

  r = await cli(kv, ['--json', 'volume', 'rebalance', 'status', 'v']);
  t.equal(r.code, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  t.same(s.pgsHealing, [healPg.pg]);
  t.match(s, {
    volume: 'v',
    job: { state: 'running', pgsDone: 2, pgsTotal: differing, bytesMoved: 256 * MiB },
    pgsMoving: [moving.pg],
    moves: {
      replicas: 1,
      rateBytesPerS: 32 * MiB,
      bytesLeft: 640 * MiB,
      etaS: 20,
      slowest: { pg: moving.pg },
    },
    targetError: null,
  });
  t.match(s.heal, { replicas: 1, rateBytesPerS: 10 * MiB, bytesLeft: 30 * MiB, etaS: 3 });

  r = await cli(kv, ['volume', 'rebalance', 'status', 'v']);
  t.equal(r.code, 0);
  const id = s.job.id;
  t.match(r.stdout, new RegExp(`^volume v: rebalance ${id} running, started \\S+ \\(\\d+s ago\\)\n`));
  t.match(
    r.stdout,
    new RegExp(
      `\nPGs: 2/${differing} done; ${s.pgsDiffering} of 32 PGs differ from the target; 1 moving now\n`,
    ),
  );
  t.match(
    r.stdout,
    /\nmoved 256\.0 MiB; rate 32\.0 MiB\/s; 640\.0 MiB left in the PGs moving now; ETA 20s \(whole job: about \S+\)\n/,
  );
  t.match(
    r.stdout,
    new RegExp(
      `\n {2}slowest: PG ${moving.pg} on b3 \\(backfill\\) at 32\\.0 MiB/s, 640\\.0 MiB left, for \\d+s\n`,
    ),
  );
  t.match(r.stdout, /\nthrottle: 64 MiB\/s per brick, 4 PG\(s\) at once\n/);
  t.match(
    r.stdout,
    /\nheal: 1 replica\(s\) in 1 PG\(s\) catching up; rate 10\.0 MiB\/s; 30\.0 MiB left; ETA 3s\n/,
  );

  r = await cli(kv, ['volume', 'status', 'v']);
  t.equal(r.code, 0);
  t.match(r.stdout, new RegExp(`\nrebalance ${id}: running, 2/${differing} PGs done\n`));
  r = await cli(kv, ['--json', 'volume', 'status', 'v']);
  t.match(JSON.parse(r.stdout).rebalance, { id, state: 'running' });
  await cli(kv, ['volume', 'rebalance', 'stop', 'v']);
  r = await cli(kv, ['volume', 'status', 'v']);
  t.notMatch(r.stdout, /\nrebalance /, 'a stopped job is not shown in volume status');
  r = await cli(kv, ['volume', 'rebalance', 'status', 'v']);
  t.match(
    r.stdout,
    new RegExp(
      `^volume v: last rebalance ${id} stopped at \\S+ \\(\\d+s ago\\), 2/${differing} PGs, 256\\.0 MiB moved\n`,
    ),
  );
  t.match(
    r.stdout,
    /\nmoves: 1 replica\(s\) in 1 PG\(s\) being copied; rate 32\.0 MiB\/s; 640\.0 MiB left; ETA 20s\n/,
  );
});

/** A collecting stream; `tty` makes cli-progress redraw in place. */
function sink(tty: boolean) {
  const s = new PassThrough() as PassThrough & { isTTY?: boolean; columns?: number };
  let text = '';
  s.on('data', (d: Buffer) => (text += d.toString()));
  if (tty) {
    s.isTTY = true;
    s.columns = 120;
  }
  return { stream: s, text: () => text };
}

/** Plays the controller: a PG done per tick, then done. */
function fakeController(bricks: MemoryCoordinator, everyMs: number): () => void {
  const timer = setInterval(() => {
    void bricks.updateRebalance('v', (j) => {
      if (!j || j.state !== 'running') return undefined;
      const pgsDone = Math.min(j.pgsTotal, j.pgsDone + 1);
      return {
        ...j,
        pgsDone,
        bytesMoved: j.bytesMoved + 8 * MiB,
        updatedAtMs: Date.now(),
        ...(pgsDone === j.pgsTotal ? { state: 'done' as const, finishedAtMs: Date.now() } : {}),
      };
    });
  }, everyMs);
  return () => clearInterval(timer);
}

t.test('rebalance status --watch: a bar until the job is done', async (t) => {
  const { kv, bricks, differing } = await setup(t);
  t.equal((await cli(kv, ['volume', 'rebalance', 'start', 'v'])).code, 0);
  const stop = fakeController(bricks, 20);
  t.teardown(stop);
  const out = sink(false);
  const started = Date.now();
  const r = await cli(kv, ['volume', 'rebalance', 'status', 'v', '--watch', '--interval', '100'], {
    progress: out.stream,
    onInterrupt: () => () => undefined,
  });
  t.equal(r.code, 0, r.stderr);
  t.ok(Date.now() - started < 10_000);
  t.match(r.stdout, /^volume v: last rebalance \S+ done at /, 'the final status');
  t.match(r.stdout, new RegExp(`${differing}/${differing} PGs`));
  const bar = out.text();
  t.match(
    bar,
    new RegExp(
      `^rebalance \\[[^\\]]{30}\\] \\d+/${differing} PGs \\| \\S+ \\S+/s \\| ETA \\S+ \\| \\d+ moving\n`,
    ),
  );
  t.match(bar, new RegExp(`rebalance \\[={30}\\] ${differing}/${differing} PGs`), 'ends full');
  t.notMatch(bar, /\x1b\[/, 'no cursor control off a terminal');
});

t.test('rebalance status --watch: SIGINT stops it cleanly; a terminal redraws in place', async (t) => {
  const { kv } = await setup(t);
  t.equal((await cli(kv, ['volume', 'rebalance', 'start', 'v'])).code, 0);
  const out = sink(true);
  let unsubscribed = false;
  const r = await cli(kv, ['volume', 'rebalance', 'status', 'v', '--watch', '--interval', '100'], {
    progress: out.stream,
    onInterrupt: (stop) => {
      setTimeout(stop, 300);
      return () => (unsubscribed = true);
    },
  });
  t.equal(r.code, 130, 'interrupted');
  t.ok(unsubscribed, 'the interrupt handler is removed');
  t.match(r.stdout, /^volume v: rebalance \S+ running/, 'the status at the interrupt');
  const bar = out.text();
  t.match(bar, /\x1b\[\?25l/, 'cursor hidden while drawing');
  t.match(bar, /\x1b\[\?25h/, 'and shown again');
  t.match(bar, /rebalance \[-{30}\] 0\/\d+ PGs \| 0 B\/s \| ETA unknown \| 0 moving/);
});

t.test('rebalance status --watch: nothing to watch; --json lines', async (t) => {
  const { kv, bricks } = await setup(t);
  const out = sink(false);
  let r = await cli(kv, ['volume', 'rebalance', 'status', 'v', '--watch'], { progress: out.stream });
  t.equal(r.code, 0);
  t.match(r.stdout, /^volume v: no rebalance has run\n/);
  t.equal(out.text(), '', 'no bar');

  t.equal((await cli(kv, ['volume', 'rebalance', 'start', 'v'])).code, 0);
  const stop = fakeController(bricks, 20);
  t.teardown(stop);
  r = await cli(kv, ['--json', 'volume', 'rebalance', 'status', 'v', '--watch', '--interval', '100'], {
    progress: out.stream,
    onInterrupt: () => () => undefined,
  });
  t.equal(r.code, 0, r.stderr);
  const lines = r.stdout
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l));
  t.ok(lines.length >= 2, `a status per poll (${lines.length})`);
  t.equal(lines[lines.length - 1].job.state, 'done');
  t.equal(out.text(), '', 'no bar with --json');

  r = await cli(kv, ['volume', 'rebalance', 'status', 'v', '--watch', '--interval', '5']);
  t.equal(r.code, 1);
  t.match(r.stderr, /--interval must be an integer in 100\.\.3600000/);
});

t.test('rebalance status --watch: a drain without a job', async (t) => {
  const { kv, bricks } = await setup(t);
  t.equal((await cli(kv, ['brick', 'drain', 'v', 'b0'])).code, 0);
  // Plays the controller's forced moves: a PG off b0 per tick.
  const timer = setInterval(() => {
    void (async () => {
      const snap = await bricks.getSnapshot('v');
      const a = snap.placement.find((x) => x.bricks.includes('b0'));
      if (!a) return;
      const spare = ['b1', 'b2', 'b3'].find((b) => !a.bricks.includes(b))!;
      const bricksNow = a.bricks.map((b) => (b === 'b0' ? spare : b));
      await bricks.updatePlacement('v', a.pg, a.epoch, bricksNow).catch(() => undefined);
    })();
  }, 10);
  t.teardown(() => clearInterval(timer));
  const out = sink(false);
  const r = await cli(kv, ['volume', 'rebalance', 'status', 'v', '--watch', '--interval', '100'], {
    progress: out.stream,
    onInterrupt: () => () => undefined,
  });
  t.equal(r.code, 0, r.stderr);
  t.match(out.text(), /^drain \[/);
  t.match(out.text(), /drain \[={30}\] (\d+)\/\1 PGs/, 'ends full');
  t.notMatch(r.stdout, /\ndrain: /, 'nothing left on b0');
});
