import { createLogger } from '@dunix/proto';
import t, { type Test } from 'tap';
import { type Coordinator, MemoryCoordinator, MemoryKv } from '../src/index.js';
import { brick } from './compliance.js';
import { runCli, targetOf } from './helpers/cli.js';

const log = createLogger('cli-brick-test', () => undefined);

const cli = (kv: MemoryKv, ...argv: string[]) => runCli(kv, argv);

const target = targetOf;

function sameSet(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}

/** What the controller would end with: every PG on its target bricks. */
async function moveAll(coord: Coordinator, volume: string): Promise<number> {
  const snap = await coord.getSnapshot(volume);
  const tgt = target(snap);
  const updates = snap.placement
    .filter((a) => !sameSet(a.bricks, tgt[a.pg]!))
    .map((a) => ({ pg: a.pg, expectedEpoch: a.epoch, bricks: tgt[a.pg]! }));
  await coord.updatePlacements(volume, updates);
  return updates.length;
}

/** A volume of 3 bricks (replicas 2, 32 PGs) and a 4th registered after it was created. */
async function setup(t: Test) {
  const kv = new MemoryKv();
  const bricks = new MemoryCoordinator({ kv, log });
  const late = new MemoryCoordinator({ kv, log });
  t.teardown(async () => {
    await bricks.stop();
    await late.stop();
  });
  await bricks.start();
  await late.start();
  for (let i = 0; i < 3; i++) await bricks.registerBrick('v', brick(i), 2000);
  const r = await cli(kv, 'volume', 'create', 'v', '--replicas', '2', '--pgs', '32');
  t.equal(r.code, 0, r.stderr);
  await late.registerBrick('v', brick(3), 2000);
  return { kv, bricks, late };
}

t.test('brick list: roles, PGs held and the target counts', async (t) => {
  const { kv, bricks } = await setup(t);
  let r = await cli(kv, 'brick', 'list', 'v');
  t.equal(r.code, 0, r.stderr);
  t.match(
    r.stdout,
    /^BRICK\s+HOST\s+ADDRESS\s+ALIVE\s+ROLE\s+WEIGHT\s+PGS\s+PRIMARIES\s+OUT-OF-SYNC\s+TARGET\n/,
  );
  t.match(r.stdout, /\nb0\s+host0\s+127\.0\.0\.1:7100\s+yes\s+in\s+1\s+\d+\s+\d+\s+0\s+\d+\n/);
  t.match(
    r.stdout,
    /\nb3\s+host3\s+127\.0\.0\.1:7103\s+yes\s+new\s+1\s+0\s+0\s+0\s+0\n/,
    'not added: no target',
  );

  r = await cli(kv, '--json', 'brick', 'list', 'v');
  t.equal(r.code, 0);
  const list = JSON.parse(r.stdout);
  t.equal(list.volume, 'v');
  t.equal(list.bricks.length, 4);
  const snap = await bricks.getSnapshot('v');
  const tgt = target(snap);
  for (const row of list.bricks) {
    t.equal(row.pgs, snap.placement.filter((a) => a.bricks.includes(row.id)).length, `${row.id} pgs`);
    t.equal(
      row.primaries,
      snap.placement.filter((a) => a.bricks[0] === row.id).length,
      `${row.id} primaries`,
    );
    t.equal(row.target, tgt.filter((b) => b.includes(row.id)).length, `${row.id} target`);
  }
  t.equal(
    list.bricks.reduce((n: number, b: { target: number }) => n + b.target, 0),
    64,
    'the target holds every replica',
  );
  t.equal(list.pgsDiffering, snap.placement.filter((a) => !sameSet(a.bricks, tgt[a.pg]!)).length);
  t.equal(list.targetError, null);
  t.match(r.stdout, /"role": "new"/);

  r = await cli(kv, 'brick', 'list', 'nope');
  t.equal(r.code, 1);
  t.equal(r.stderr, 'dunixctl: volume nope does not exist\n');
});

t.test('brick add: registered bricks only, weight, hint to rebalance', async (t) => {
  const { kv, bricks } = await setup(t);
  let r = await cli(kv, 'brick', 'add', 'v', 'b9');
  t.equal(r.code, 1);
  t.equal(
    r.stderr,
    'dunixctl: brick b9 is not registered in volume v: start it with brickd --volume v first\n',
  );

  for (const bad of ['x', '-1', '1e9', '2000000', '']) {
    r = await cli(kv, 'brick', 'add', 'v', 'b3', '--weight', bad);
    t.equal(r.code, 1, `weight ${JSON.stringify(bad)} refused`);
    t.match(r.stderr, /weight must be a number in 0\.\.1000000/);
  }
  t.equal((await bricks.getSnapshot('v')).bricks[3]!.admin, undefined, 'nothing written');

  r = await cli(kv, 'brick', 'add', 'v', 'b3', '--weight', '2');
  t.equal(r.code, 0, r.stderr);
  const lines = r.stdout.split('\n');
  t.equal(lines[0], 'brick b3 added to volume v with weight 2 (was new)');
  t.match(
    lines[1],
    /^under the target placement it holds \d+ PG replica\(s\) \(holds 0 now\); \d+ PG\(s\) differ from the target$/,
  );
  t.equal(lines[2], 'a rebalance moves PGs onto it: dunixctl volume rebalance start v');
  const b3 = (await bricks.getSnapshot('v')).bricks.find((b) => b.id === 'b3')!;
  t.match(b3.admin, { state: 'in', weight: 2 });

  r = await cli(kv, '--json', 'brick', 'list', 'v');
  const row = JSON.parse(r.stdout).bricks.find((b: { id: string }) => b.id === 'b3');
  t.match(row, { role: 'in', weight: 2, pgs: 0 });
  t.ok(row.target > 16, `weight 2 of 5: about 2/5 of 64 replicas (${row.target})`);

  // Without --weight: the weight it registered with.
  r = await cli(kv, 'brick', 'add', 'v', 'b2');
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^brick b2 added to volume v with weight 1\n/, 'was in already: no "was"');

  r = await cli(kv, '--json', 'brick', 'add', 'v', 'b1', '--weight', '1.5');
  t.equal(r.code, 0);
  t.match(JSON.parse(r.stdout), { brick: 'b1', action: 'add', admin: { state: 'in', weight: 1.5 } });
});

t.test('brick set-weight and drain', async (t) => {
  const { kv, bricks } = await setup(t);
  let r = await cli(kv, 'brick', 'set-weight', 'v', 'b3', '3');
  t.equal(r.code, 1, 'not added yet');
  t.equal(r.stderr, 'dunixctl: brick b3 is not added to volume v: dunixctl brick add v b3 --weight 3\n');
  r = await cli(kv, 'brick', 'set-weight', 'v', 'b7', '3');
  t.equal(r.code, 1);
  t.match(r.stderr, /^dunixctl: brick b7 is not registered in volume v/);
  for (const bad of ['abc', '-2', '1000001']) {
    r = await cli(kv, 'brick', 'set-weight', 'v', 'b0', bad);
    t.equal(r.code, 1, `weight ${bad}`);
    t.match(r.stderr, /weight must be a number in 0\.\.1000000/);
  }

  // b0 holds PGs from the volume's creation: an 'in' brick without a record.
  r = await cli(kv, 'brick', 'set-weight', 'v', 'b0', '3');
  t.equal(r.code, 0, r.stderr);
  t.match(
    r.stdout,
    /^brick b0 of volume v: weight 1 -> 3\nunder the target placement it holds \d+ PG replica\(s\) \(holds \d+ now\); \d+ PG\(s\) differ from the target\na rebalance moves PGs toward the new target: dunixctl volume rebalance start v\n$/,
  );
  t.match((await bricks.getSnapshot('v')).bricks[0]!.admin, { state: 'in', weight: 3 });

  const held = (await bricks.getSnapshot('v')).placement.filter((a) => a.bricks.includes('b1'));
  const led = held.filter((a) => a.bricks[0] === 'b1').length;
  r = await cli(kv, 'brick', 'drain', 'v', 'b1');
  t.equal(r.code, 0, r.stderr);
  t.equal(
    r.stdout,
    'brick b1 of volume v is draining (was in)\n' +
      `${held.length} PG replica(s) (${led} as primary) will move off it, with or without a rebalance\n` +
      'watch: dunixctl volume rebalance status v --watch\n' +
      'when it holds none: stop its brickd, then dunixctl brick remove v b1\n',
  );
  t.match((await bricks.getSnapshot('v')).bricks[1]!.admin, { state: 'draining', weight: 1 });

  // A draining brick keeps its record's weight; set-weight keeps it draining.
  r = await cli(kv, 'brick', 'set-weight', 'v', 'b1', '2');
  t.equal(r.code, 0, r.stderr);
  t.match((await bricks.getSnapshot('v')).bricks[1]!.admin, { state: 'draining', weight: 2 });
  r = await cli(kv, '--json', 'brick', 'list', 'v');
  const b1 = JSON.parse(r.stdout).bricks.find((b: { id: string }) => b.id === 'b1');
  t.match(b1, { role: 'draining', weight: 2, target: 0 });

  // A brick that holds nothing: it can go at once.
  r = await cli(kv, 'brick', 'drain', 'v', 'b3');
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /\nit holds no PG replicas: stop its brickd, then dunixctl brick remove v b3\n$/);

  // Draining below `replicas` candidates: warned, no target.
  r = await cli(kv, 'brick', 'drain', 'v', 'b2');
  t.equal(r.code, 0, r.stderr);
  t.match(
    r.stdout,
    /\nwarning: they cannot move yet: no target placement: 1 brick\(s\) may hold PGs \(role in, weight > 0\) but every PG needs 2 \(replicas\)\n/,
  );
  r = await cli(kv, 'brick', 'list', 'v');
  t.match(r.stdout, /\nno target placement: 1 brick\(s\) may hold PGs/);
  t.match(r.stdout, /\nb0\s+\S+\s+\S+\s+yes\s+in\s+3\s+\d+\s+\d+\s+0\s+-\n/);
});

t.test('brick remove: refused while running or holding PGs, then forgotten', async (t) => {
  const { kv, bricks, late } = await setup(t);
  let r = await cli(kv, 'brick', 'remove', 'v', 'b9');
  t.equal(r.code, 1);
  t.equal(r.stderr, 'dunixctl: brick b9 is not a member of volume v\n');

  r = await cli(kv, 'brick', 'remove', 'v', 'b3');
  t.equal(r.code, 1);
  t.equal(r.stderr, 'dunixctl: brick b3 is running: stop its brickd first (it re-registers while it runs)\n');

  // b3 takes PGs, then is drained and stopped while it still holds some.
  t.equal((await cli(kv, 'brick', 'add', 'v', 'b3')).code, 0);
  t.ok((await moveAll(bricks, 'v')) > 0);
  const holding = (await bricks.getSnapshot('v')).placement.filter((a) => a.bricks.includes('b3')).length;
  t.ok(holding > 0);
  t.equal((await cli(kv, 'brick', 'drain', 'v', 'b3')).code, 0);
  await late.stop();
  r = await cli(kv, 'brick', 'remove', 'v', 'b3');
  t.equal(r.code, 1);
  t.equal(
    r.stderr,
    `dunixctl: brick b3 still holds ${holding} PG replicas: drain it first (dunixctl brick drain b3) and wait until it holds none\n`,
  );

  t.ok((await moveAll(bricks, 'v')) >= holding, 'the controller moves them off');
  r = await cli(kv, 'brick', 'remove', 'v', 'b3');
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, 'brick b3 removed from volume v\n');
  r = await cli(kv, '--json', 'brick', 'remove', 'v', 'b3');
  t.equal(r.code, 1, 'gone');
  r = await cli(kv, 'brick', 'list', 'v');
  t.notMatch(r.stdout, /\nb3 /);
  t.match(r.stdout, /\nbalanced: every PG is on its target bricks\n$/);
});

t.test('volume set: min_insync and down_out_interval', async (t) => {
  const { kv, bricks } = await setup(t);
  let r = await cli(kv, 'volume', 'set', 'v', 'min_insync', '1');
  t.equal(r.code, 0, r.stderr);
  t.equal(
    r.stdout,
    'volume v: min_insync: 1 of 2 (was 2 of 2); down_out_interval: 5m (default); full_threshold: 95% (default)\n',
  );
  t.equal((await bricks.getVolume('v'))!.minInsync, 1);

  r = await cli(kv, 'volume', 'set', 'v', 'down_out_interval', '90s');
  t.equal(r.code, 0, r.stderr);
  t.equal(
    r.stdout,
    'volume v: min_insync: 1 of 2; down_out_interval: 1m30s (was 5m (default)); full_threshold: 95% (default)\n',
  );
  t.equal((await bricks.getVolume('v'))!.downOutIntervalMs, 90_000);

  r = await cli(kv, '--json', 'volume', 'set', 'v', 'down-out-interval', '3600000');
  t.equal(r.code, 0);
  t.match(JSON.parse(r.stdout), { option: 'down_out_interval', config: { downOutIntervalMs: 3_600_000 } });

  r = await cli(kv, 'volume', 'set', 'v', 'full_threshold', '90%');
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /full_threshold: 90% \(was 95% \(default\)\)\n$/);
  t.equal((await bricks.getVolume('v'))!.fullThresholdPct, 90);

  const refusals: [string[], RegExp][] = [
    [['min_insync', '3'], /^dunixctl: invalid volume config: minInsync 3 must be 1\.\.replicas \(2\)\n$/],
    [['min_insync', '0'], /minInsync 0 must be 1\.\.replicas/],
    [['min_insync', 'x'], /^dunixctl: min_insync "x" must be an integer\n$/],
    [
      ['down_out_interval', '5x'],
      /^dunixctl: bad duration "5x": use e\.g\. 90s, 5m, 1h, 1h30m or plain milliseconds\n$/,
    ],
    [['down_out_interval', '10ms'], /^dunixctl: down_out_interval 10ms must be 1s\.\.7d\n$/],
    [['full_threshold', '100'], /^dunixctl: full_threshold "100" must be a percent in 50\.\.99\n$/],
    [['full_threshold', '0.9'], /full_threshold "0\.9" must be a percent/],
    [
      ['replicas', '3'],
      /^dunixctl: unknown option "replicas": options that change are min_insync, down_out_interval, full_threshold\n$/,
    ],
  ];
  for (const [args, re] of refusals) {
    r = await cli(kv, 'volume', 'set', 'v', ...args);
    t.equal(r.code, 1, args.join(' '));
    t.match(r.stderr, re);
  }
  t.match(
    await bricks.getVolume('v'),
    { minInsync: 1, downOutIntervalMs: 3_600_000, fullThresholdPct: 90 },
    'unchanged by refusals',
  );
  r = await cli(kv, 'volume', 'set', 'nope', 'min_insync', '1');
  t.equal(r.code, 1);
  t.equal(r.stderr, 'dunixctl: volume nope does not exist\n');
});
