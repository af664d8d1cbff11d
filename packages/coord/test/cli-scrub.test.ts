/**
 * `dunixctl volume scrub start|stop|status|schedule` against a
 * MemoryCoordinator (the bricks' side played by reportScrubPg), and the
 * controller's schedule: a scrub starts once the last one ended
 * scrubIntervalMs ago, never while one runs, never when the option is off.
 */
import { createLogger } from '@dunix/proto';
import t, { type Test } from 'tap';
import { nextScrubDueAtMs, runScrubSchedule } from '../src/controller/scrub-schedule.js';
import { MemoryCoordinator, MemoryKv, type ScrubPgResult, volumeConfig } from '../src/index.js';
import { brick } from './compliance.js';
import { runCli } from './helpers/cli.js';

const log = createLogger('cli-scrub-test', () => undefined);
const DAY = 86_400_000;

const cli = (kv: MemoryKv, ...argv: string[]) => runCli(kv, argv);

async function setup(t: Test) {
  const kv = new MemoryKv();
  const c = new MemoryCoordinator({ kv, log });
  t.teardown(() => c.stop());
  await c.start();
  for (let i = 0; i < 3; i++) await c.registerBrick('v', brick(i), 2000);
  await c.createVolume(volumeConfig('v', { pgCount: 4, replicas: 3 }));
  return { kv, c };
}

function result(jobId: string, pg: number, over: Partial<ScrubPgResult> = {}): ScrubPgResult {
  return {
    jobId,
    pg,
    brick: 'b0',
    epoch: 1,
    atMs: 1,
    keys: 5,
    blocks: 2,
    bytes: 2 * 1024 * 1024,
    replicas: ['b1', 'b2'],
    skipped: [],
    problems: [],
    found: 0,
    repaired: 0,
    unrecoverable: 0,
    ...over,
  };
}

t.test('start, status with problems, a second start refused, stop, restart', async (t) => {
  const { kv, c } = await setup(t);
  let r = await cli(kv, 'volume', 'scrub', 'status', 'v');
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /no scrub has run; schedule every 7d \(default\), next /);

  r = await cli(kv, 'volume', 'scrub', 'start', 'v', '--max-mib-per-s', '8');
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^scrub \S+ started on volume v: 4 PGs, throttle 8 MiB\/s per brick\n/);
  t.match(r.stdout, /no brickd runs/, 'no controller: the note says nothing happens yet');
  const job = (await c.getSnapshot('v')).scrub!;
  t.match(job, { state: 'running', trigger: 'operator', maxMiBPerS: 8, pgsTotal: 4, pgsDone: 0 });

  r = await cli(kv, 'volume', 'scrub', 'start', 'v');
  t.equal(r.code, 1);
  t.match(r.stderr, /is running \(0\/4 PGs done\): stop it, or start over with --restart/);

  // Two PGs report: one clean, one with a repaired and an unrecoverable block.
  await c.reportScrubPg('v', result(job.id, 0));
  await c.reportScrubPg(
    'v',
    result(job.id, 2, {
      problems: [
        {
          kind: 'block-corrupt',
          brick: 'b1',
          ino: '281474976710700',
          index: '3',
          detail: 'chunk 1',
          state: 'repaired',
        },
        {
          kind: 'block-missing',
          brick: 'b0',
          ino: '281474976710701',
          index: '0',
          detail: 'gone',
          state: 'unrecoverable',
        },
      ],
      found: 2,
      repaired: 1,
      unrecoverable: 1,
      skipped: ['b2'],
    }),
  );
  r = await cli(kv, 'volume', 'scrub', 'status', 'v');
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /: running \(operator\)/);
  t.match(r.stdout, /PGs 2\/4 done; verified 4\.0 MiB at .*\/s; throttle 8 MiB\/s per brick/);
  t.match(r.stdout, /problems: 2 found, 1 repaired, 1 unrecoverable/);
  t.match(r.stdout, /replicas not compared: pg 2 \(b2\)/);
  t.match(
    r.stdout,
    /PG\s+STATE\s+KIND\s+BRICK\s+INODE\s+BLOCK\s+DETAIL\n2\s+unrecoverable\s+block-missing\s+b0\s+281474976710701\s+0/,
  );
  t.match(r.stdout, /\n2\s+repaired\s+block-corrupt\s+b1\s+281474976710700\s+3/);

  r = await cli(kv, '--json', 'volume', 'scrub', 'status', 'v');
  const s = JSON.parse(r.stdout);
  t.match(s, { volume: 'v', job: { id: job.id, pgsDone: 2, found: 2 }, intervalMs: 7 * DAY });
  t.equal(s.problems.length, 2);
  t.equal(s.problems[0].state, 'unrecoverable', 'unrecoverable ones first');

  r = await cli(kv, 'volume', 'scrub', 'stop', 'v');
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /stopped at 2\/4 PGs/);
  t.equal(await c.reportScrubPg('v', result(job.id, 1)), 'stale', 'a stopped job takes no more results');
  r = await cli(kv, 'volume', 'scrub', 'stop', 'v');
  t.match(r.stdout, /no scrub runs on volume v \(scrub \S+ is stopped\)/);

  r = await cli(kv, 'volume', 'scrub', 'start', 'v');
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /throttle each brick's default/);
  r = await cli(kv, 'volume', 'scrub', 'start', 'v', '--restart');
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /it replaces scrub \S+ \(0\/4 PGs done\)/);
  r = await cli(kv, 'volume', 'scrub', 'status', 'nope');
  t.equal(r.code, 1);
  t.match(r.stderr, /volume nope does not exist/);
});

t.test('schedule: set, off, bad values; the controller side starts a due scrub once', async (t) => {
  const { kv, c } = await setup(t);
  let r = await cli(kv, 'volume', 'scrub', 'schedule', 'v', '12h');
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, 'volume v: scrub every 12h (was every 7d)\n');
  r = await cli(kv, 'volume', 'scrub', 'schedule', 'v', '10s');
  t.equal(r.code, 1);
  t.match(r.stderr, /must be off or 1m\.\./);
  r = await cli(kv, 'volume', 'scrub', 'schedule', 'v', 'off');
  t.equal(r.stdout, 'volume v: scrub off (was every 12h)\n');
  t.equal((await c.getVolume('v'))!.scrubIntervalMs, 0);

  // Due times.
  t.equal(nextScrubDueAtMs(0, null, 5), null, 'off');
  t.equal(nextScrubDueAtMs(100, null, 5), 105, 'from creation when none ran');
  const base = {
    id: 'x',
    trigger: 'schedule' as const,
    startedAtMs: 1,
    updatedAtMs: 50,
    pgsTotal: 1,
    pgsDone: 0,
  };
  const counts = { bytesVerified: 0, found: 0, repaired: 0, unrecoverable: 0 };
  t.equal(nextScrubDueAtMs(100, { ...base, ...counts, state: 'running' }, 5), null, 'one runs');
  t.equal(nextScrubDueAtMs(100, { ...base, ...counts, state: 'done', finishedAtMs: 70 }, 5), 170);

  await c.updateVolumeConfig('v', { scrubIntervalMs: DAY });
  const created = (await c.getVolume('v'))!.createdAtMs;
  let snap = await c.getSnapshot('v');
  t.equal(
    await runScrubSchedule(c, 'v', snap, created + 1000, log),
    created + DAY,
    'not yet: when to look again',
  );
  t.equal((await c.getSnapshot('v')).scrub, undefined);
  t.equal(await runScrubSchedule(c, 'v', snap, created + DAY + 1, log), null, 'due: started');
  const job = (await c.getSnapshot('v')).scrub!;
  t.match(job, { state: 'running', trigger: 'schedule', pgsTotal: 4 });
  t.equal(
    await runScrubSchedule(c, 'v', snap, created + DAY + 2, log),
    null,
    'a stale snapshot starts no second one',
  );
  t.equal((await c.getSnapshot('v')).scrub!.id, job.id);
  for (let pg = 0; pg < 4; pg++) await c.reportScrubPg('v', result(job.id, pg));
  snap = await c.getSnapshot('v');
  t.match(snap.scrub, { state: 'done', pgsDone: 4 });
  const doneAt = snap.scrub!.finishedAtMs!;
  t.equal(
    await runScrubSchedule(c, 'v', snap, doneAt + 5, log),
    doneAt + DAY,
    'next one a day after the last ended',
  );
});
