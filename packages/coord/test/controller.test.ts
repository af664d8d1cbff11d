import { createLogger, FsError, initHashing, type PgAssignment } from '@dunix/proto';
import t, { type Test } from 'tap';
import {
  Controller,
  type Coordinator,
  ManualClock,
  MemoryCoordinator,
  MemoryKv,
  volumeConfig,
} from '../src/index.js';
import { brick } from './compliance.js';

const log = createLogger('controller-test', () => undefined);
const BRICK_TTL = 3000;
const ELECTION_TTL = 2000;

/**
 * Three bricks (each its own coordinator session and controller) and an
 * admin session over one in-memory store, all on one manual clock: time
 * moves only in advance(), so every run is the same.
 */
async function cluster(
  t: Test,
  opts: { probe?: Map<string, 'down' | 'up' | 'hang'>; replicas?: number } = {},
) {
  await initHashing();
  const clock = new ManualClock();
  const kv = new MemoryKv(clock);
  const admin = new MemoryCoordinator({ kv, clock, log });
  await admin.start();
  const verdicts = opts.probe ?? new Map<string, 'down' | 'up' | 'hang'>();
  const probes: string[] = [];
  const nodes = new Map<string, { coord: MemoryCoordinator; controller: Controller }>();
  const startBrick = async (i: number) => {
    const coord = new MemoryCoordinator({ kv, clock, log });
    await coord.start();
    await coord.registerBrick('v', brick(i, { dataAddress: `127.0.0.1:${7200 + i}` }), BRICK_TTL);
    const controller = new Controller({
      coordinator: coord,
      volume: 'v',
      brickId: `b${i}`,
      clock,
      log,
      knobs: { electionLeaseTtlMs: ELECTION_TTL },
      probe: (id, address) => {
        probes.push(`${id}@${address}`);
        const v = verdicts.get(id) ?? 'up';
        return v === 'hang' ? new Promise(() => undefined) : Promise.resolve(v);
      },
    });
    nodes.set(`b${i}`, { coord, controller });
    return { coord, controller };
  };
  for (let i = 0; i < 3; i++) await startBrick(i);
  await admin.createVolume(volumeConfig('v', { pgCount: 32, replicas: opts.replicas ?? 3 }));
  for (const n of nodes.values()) await n.controller.start();
  await clock.advance(100);
  t.teardown(async () => {
    for (const n of nodes.values()) {
      await n.controller.stop();
      await n.coord.stop();
    }
    await admin.stop();
  });
  const c = {
    clock,
    kv,
    admin,
    nodes,
    probes,
    verdicts,
    leader: () => [...nodes.entries()].filter(([, n]) => n.controller.isLeader()).map(([id]) => id),
    placement: () => admin.getPlacement('v'),
    /** The brick's process dies: its session stops without revoking, its controller is gone. */
    kill: async (id: string) => {
      const n = nodes.get(id)!;
      nodes.delete(id);
      await n.coord.crash();
      await n.controller.stop();
    },
    /** Registers (and starts the controller of) brick i after the volume exists. */
    addBrick: async (i: number) => {
      await startBrick(i);
      await nodes.get(`b${i}`)!.controller.start();
    },
    /** What a primary does once a listed replica caught up: every live listed brick joins the in-sync set. */
    catchUpAll: async () => {
      const alive = new Set((await admin.listBricks('v')).filter((b) => b.alive).map((b) => b.id));
      for (const a of await admin.getPlacement('v')) {
        const isr = a.bricks.filter((b) => a.isr.includes(b) || alive.has(b));
        if (isr.length !== a.isr.length) await admin.updatePlacement('v', a.pg, a.epoch, a.bricks, isr);
      }
    },
    /** Waits (on the manual clock) for every controller to be idle. */
    settle: async (ms = 100) => {
      await clock.advance(ms);
      for (const n of nodes.values()) await n.controller.idle();
      await clock.advance(0);
    },
  };
  return c;
}

/** Every PG's primary is alive and in sync; no dead brick is in sync while a live member exists. */
function checkServing(t: Test, placement: PgAssignment[], dead: string[]): void {
  for (const a of placement) {
    const live = a.isr.filter((b) => !dead.includes(b));
    if (live.length === 0) continue;
    if (dead.includes(a.bricks[0]!) || !a.isr.includes(a.bricks[0]!)) {
      t.fail(`pg ${a.pg}: primary ${a.bricks[0]} cannot serve (${JSON.stringify(a)})`);
      return;
    }
    if (a.isr.some((b) => dead.includes(b))) {
      t.fail(`pg ${a.pg}: dead brick still in sync (${JSON.stringify(a)})`);
      return;
    }
  }
  t.pass('every PG has a live in-sync primary');
}

t.test('controller: exactly one leader; stop() hands over at once', async (t) => {
  const c = await cluster(t);
  t.same(c.leader(), ['b0'], 'the first to campaign leads');
  t.equal(await c.admin.getController('v'), 'b0');
  const b0 = c.nodes.get('b0')!;
  await b0.controller.start();
  await b0.controller.stop();
  await b0.controller.stop();
  await t.rejects(b0.controller.start(), /stopped/);
  await c.settle(10);
  t.equal(c.leader().length, 1, 'another leads without waiting for a TTL');
  t.not(c.leader()[0], 'b0');
  t.same(
    (await c.placement()).map((a) => a.epoch),
    Array(32).fill(1),
    'nothing to change while every brick lives',
  );
});

t.test('controller: a brick whose lease expires loses its PGs to in-sync replicas', async (t) => {
  const c = await cluster(t);
  const before = await c.placement();
  const victim = 'b1';
  t.ok(
    before.some((a) => a.bricks[0] === victim),
    'the victim leads some PGs',
  );
  await c.kill(victim);
  await c.settle(BRICK_TTL - 500);
  t.same(await c.placement(), before, 'nothing moves while the lease may still be alive');
  await c.settle(1000);
  const after = await c.placement();
  checkServing(t, after, [victim]);
  after.forEach((a, i) => {
    const b = before[i]!;
    const touched = b.isr.includes(victim);
    if (a.epoch !== b.epoch + (touched ? 1 : 0)) t.fail(`pg ${a.pg}: epoch ${b.epoch} -> ${a.epoch}`);
    if (touched && !a.bricks.includes(victim)) t.fail(`pg ${a.pg}: the dead brick was unlisted`);
    if (b.bricks[0] === victim && a.bricks[0] !== b.isr.find((x) => x !== victim))
      t.fail(`pg ${a.pg}: promoted ${a.bricks[0]}, not the first live in-sync member`);
  });
  t.pass('each touched PG bumped once; the first live in-sync member promoted');
  t.same(c.probes, [], 'the lease path needs no probe');
});

t.test('controller: a suspect whose probe says down fails over at once', async (t) => {
  const c = await cluster(t);
  const before = await c.placement();
  await c.kill('b2');
  c.verdicts.set('b2', 'down');
  await c.nodes.get('b1')!.coord.reportSuspect('v', 'b2', 'b1');
  await c.settle(200);
  t.same(c.probes.sort(), ['b2@127.0.0.1:7102', 'b2@127.0.0.1:7202'], 'the leader probed both addresses');
  t.notOk((await c.admin.listBricks('v')).find((b) => b.id === 'b2')!.alive, 'declared dead');
  const after = await c.placement();
  checkServing(t, after, ['b2']);
  t.ok(
    after.every((a, i) => a.epoch === before[i]!.epoch + (before[i]!.isr.includes('b2') ? 1 : 0)),
    'within 200 ms, long before the 3 s lease',
  );
});

t.test('controller: a suspect that still answers is left to its lease', async (t) => {
  const c = await cluster(t);
  const before = await c.placement();
  c.verdicts.set('b2', 'up'); // paused (SIGSTOP): the kernel still accepts connections
  await c.nodes.get('b0')!.coord.reportSuspect('v', 'b2', 'b0');
  await c.settle(200);
  t.equal(c.probes.length, 2, 'probed');
  t.ok((await c.admin.listBricks('v')).find((b) => b.id === 'b2')!.alive, 'still alive');
  t.same(await c.placement(), before, 'nothing changed');
  // A probe that never answers counts as up after probeTimeoutMs (1 s); a new report is probed again.
  c.verdicts.set('b2', 'hang');
  await c.clock.advance(1000); // past the reporter's de-duplication window
  await c.nodes.get('b0')!.coord.reportSuspect('v', 'b2', 'b0');
  await c.clock.advance(200);
  t.equal(c.probes.length, 4, 'probed again');
  await c.settle(1000);
  t.ok((await c.admin.listBricks('v')).find((b) => b.id === 'b2')!.alive, 'a silent probe declares nothing');
  t.same(await c.placement(), before);
});

t.test('controller: the leader dies and is reported; a follower expires it and takes over', async (t) => {
  const c = await cluster(t);
  t.same(c.leader(), ['b0']);
  const before = await c.placement();
  await c.kill('b0');
  c.verdicts.set('b0', 'down');
  await c.nodes.get('b2')!.coord.reportSuspect('v', 'b0', 'b2');
  await c.settle(300);
  t.ok(c.probes.includes('b0@127.0.0.1:7100'), 'a follower probed the leader');
  t.equal(c.leader().length, 1, 'a new leader');
  t.not(c.leader()[0], 'b0');
  const after = await c.placement();
  checkServing(t, after, ['b0']);
  t.ok(
    after.some((a, i) => before[i]!.bricks[0] === 'b0' && a.bricks[0] !== 'b0'),
    'its PGs failed over within 300 ms',
  );
});

t.test('controller: a dead leader nobody reports is replaced after its election lease', async (t) => {
  const c = await cluster(t);
  await c.kill('b0');
  await c.settle(ELECTION_TTL - 500);
  t.same(c.leader(), [], 'nobody leads while the old lease may live');
  await c.settle(1000);
  t.equal(c.leader().length, 1);
  await c.settle(BRICK_TTL);
  checkServing(t, await c.placement(), ['b0']);
});

t.test('controller: with no live in-sync member a PG stays as it is', async (t) => {
  const c = await cluster(t, { replicas: 2 });
  const before = await c.placement();
  // Take b1 out of every in-sync set it is a replica in, as a brick would after a slow ack.
  for (const a of before) {
    if (a.bricks[1] === 'b1') await c.admin.updatePlacement('v', a.pg, a.epoch, a.bricks, [a.bricks[0]!]);
  }
  const shrunk = await c.placement();
  await c.kill('b0');
  c.verdicts.set('b0', 'down');
  await c.nodes.get('b1')!.coord.reportSuspect('v', 'b0', 'b1');
  await c.settle(300);
  const after = await c.placement();
  const stuck = shrunk.filter((a) => a.bricks[0] === 'b0' && a.isr.length === 1);
  t.ok(stuck.length > 0, 'some PGs had only b0 in sync');
  for (const a of stuck) t.same(after[a.pg], a, `pg ${a.pg} left alone: b1 may lack acknowledged ops`);
  checkServing(t, after, ['b0']);
});

t.test('controller: a lost compare-and-swap is re-read and re-planned', async (t) => {
  const c = await cluster(t);
  const target = (await c.placement()).find((a) => a.bricks[0] === 'b2')!;
  // Someone else changes the PG between the controller's read and its swap.
  const coord = c.nodes.get('b0')!.coord;
  const real = coord.updatePlacements.bind(coord);
  let raced = false;
  (coord as Coordinator).updatePlacements = async (volume, updates) => {
    if (updates.some((u) => u.pg === target.pg) && !raced) {
      raced = true;
      const now = (await c.admin.getPlacement('v'))[target.pg]!;
      await c.admin.updatePlacement('v', target.pg, now.epoch, now.bricks, now.isr);
    }
    return real(volume, updates);
  };
  await c.kill('b2');
  c.verdicts.set('b2', 'down');
  await c.nodes.get('b1')!.coord.reportSuspect('v', 'b2', 'b1');
  await c.settle(300);
  t.ok(raced, 'the race happened');
  const a = (await c.placement())[target.pg]!;
  t.equal(a.epoch, target.epoch + 2, 'the other change, then the controller’s, each once');
  t.not(a.bricks[0], 'b2', 'failed over anyway');
  t.notOk(a.isr.includes('b2'));
});

t.test('controller: a failing store is retried', async (t) => {
  const c = await cluster(t);
  const coord = c.nodes.get('b0')!.coord;
  const real = coord.updatePlacements.bind(coord);
  let failures = 0;
  (coord as Coordinator).updatePlacements = async (...args) => {
    if (failures++ < 3) throw new FsError('UNAVAILABLE', 'injected');
    return real(...args);
  };
  await c.kill('b1');
  c.verdicts.set('b1', 'down');
  await c.nodes.get('b2')!.coord.reportSuspect('v', 'b1', 'b2');
  await c.settle(100);
  t.equal(failures, 1, 'the first pass failed');
  await c.settle(600);
  t.equal(failures, 2, 'retried after retryMs');
  await c.settle(600);
  await c.settle(600);
  t.equal(failures, 4, 'and again until it went through');
  checkServing(t, await c.placement(), ['b1']);
});

t.test('a start whose campaign fails rejects (and cleans up) instead of hanging', async (t) => {
  await initHashing();
  const clock = new ManualClock();
  const coord = new MemoryCoordinator({ kv: new MemoryKv(clock), clock, log });
  await coord.start();
  t.teardown(() => coord.stop());
  // The election call fails (etcd unreachable, say): start() must settle.
  const failing = new Proxy(coord, {
    get: (target, prop, receiver) =>
      prop === 'campaign'
        ? () => Promise.reject(new FsError('UNAVAILABLE', 'etcd unreachable'))
        : (Reflect.get(target, prop, receiver) as unknown),
  }) as Coordinator;
  const controller = new Controller({
    coordinator: failing,
    volume: 'v',
    brickId: 'b0',
    clock,
    log,
    probe: () => Promise.resolve('up'),
  });
  const outcome = await Promise.race([
    controller.start().then(
      () => 'started',
      (err: FsError) => err.code,
    ),
    new Promise((r) => setTimeout(() => r('hung'), 2000)),
  ]);
  t.equal(outcome, 'UNAVAILABLE', 'start rejected with the campaign error');
  t.notOk(controller.isLeader(), 'not leading');
  await controller.stop();
});

t.test(
  'controller: a rebalance onto a new brick runs step by step to done; a drain empties a brick',
  async (t) => {
    const c = await cluster(t);
    await c.addBrick(3);
    await c.settle();
    t.notOk(
      (await c.placement()).some((a) => a.bricks.includes('b3')),
      'registered, not added: nothing moves',
    );
    await c.admin.setBrickAdmin('v', 'b3', { state: 'in', weight: 1, updatedAtMs: 0 });
    await c.settle();
    t.notOk(
      (await c.placement()).some((a) => a.bricks.includes('b3')),
      'added, no rebalance: nothing moves',
    );
    await c.admin.updateRebalance('v', () => ({
      id: 'j',
      state: 'running',
      maxMiBPerS: 0,
      maxConcurrent: 3,
      startedAtMs: 0,
      updatedAtMs: 0,
      pgsTotal: 0,
      pgsDone: 0,
      bytesMoved: 0,
    }));
    await c.settle();
    let p = await c.placement();
    const adding = p.filter((a) => a.bricks.includes('b3'));
    t.equal(adding.length, 3, 'maxConcurrent PGs get the new brick at a time');
    t.ok(
      adding.every((a) => a.bricks.length === 4 && !a.isr.includes('b3')),
      'added beside the 3, not in sync yet',
    );
    for (let round = 0; round < 100; round++) {
      await c.catchUpAll();
      await c.settle();
      if ((await c.admin.getSnapshot('v')).rebalance?.state === 'done') break;
    }
    const job = (await c.admin.getSnapshot('v')).rebalance!;
    t.equal(job.state, 'done', 'the job finishes');
    t.ok(
      job.pgsTotal > 0 && job.pgsDone === job.pgsTotal,
      `it counted its PGs (${job.pgsDone}/${job.pgsTotal})`,
    );
    p = await c.placement();
    t.ok(
      p.every((a) => a.bricks.length === 3 && a.isr.length === 3),
      'every PG back to 3 bricks, all in sync',
    );
    const held = (id: string) => p.filter((a) => a.bricks.includes(id)).length;
    for (const id of ['b0', 'b1', 'b2', 'b3'])
      t.ok(Math.abs(held(id) - 24) <= 2.4, `${id} holds ${held(id)} of 96 replicas (share 24)`);

    await c.admin.setBrickAdmin('v', 'b1', { state: 'draining', weight: 1, updatedAtMs: 0 });
    for (let round = 0; round < 100; round++) {
      await c.catchUpAll();
      await c.settle();
      if (!(await c.placement()).some((a) => a.bricks.includes('b1'))) break;
    }
    p = await c.placement();
    t.notOk(
      p.some((a) => a.bricks.includes('b1')),
      'the drained brick holds nothing, without a rebalance job',
    );
    t.ok(
      p.every((a) => a.isr.length === 3),
      'and every PG kept 3 in-sync copies',
    );
  },
);

t.test('controller: a full brick gets no new PG copy until it has space again', async (t) => {
  const c = await cluster(t);
  await c.addBrick(3);
  await c.admin.setBrickAdmin('v', 'b3', { state: 'in', weight: 1, updatedAtMs: 0 });
  const b3 = c.nodes.get('b3')!.coord;
  const usage = (state: 'ok' | 'full') => ({
    capacityBytes: 100,
    usedBytes: state === 'full' ? 96 : 10,
    freeBytes: state === 'full' ? 4 : 90,
    blockBytes: 0,
    metaBytes: 0,
    state,
    atMs: 0,
  });
  await b3.publishUsage('v', 'b3', usage('full'));
  await c.admin.updateRebalance('v', () => ({
    id: 'j',
    state: 'running',
    maxMiBPerS: 0,
    maxConcurrent: 3,
    startedAtMs: 0,
    updatedAtMs: 0,
    pgsTotal: 0,
    pgsDone: 0,
    bytesMoved: 0,
  }));
  for (let round = 0; round < 5; round++) {
    await c.catchUpAll();
    await c.settle();
  }
  t.notOk(
    (await c.placement()).some((a) => a.bricks.includes('b3')),
    'full: the rebalance adds nothing to it',
  );
  t.equal((await c.admin.getSnapshot('v')).rebalance!.state, 'running', 'the job waits, it does not finish');
  await b3.publishUsage('v', 'b3', usage('ok'));
  await c.admin.setBrickAdmin('v', 'b3', { state: 'in', weight: 1, updatedAtMs: 1 }); // a change wakes a pass
  for (let round = 0; round < 100; round++) {
    await c.catchUpAll();
    await c.settle();
    if ((await c.admin.getSnapshot('v')).rebalance?.state === 'done') break;
  }
  t.ok(
    (await c.placement()).filter((a) => a.bricks.includes('b3')).length > 0,
    'with space again it gets its share',
  );
  t.equal((await c.admin.getSnapshot('v')).rebalance!.state, 'done');
});

t.test('controller: a brick down for the down-out interval is replaced, not before', async (t) => {
  const c = await cluster(t);
  await c.addBrick(3);
  await c.admin.setBrickAdmin('v', 'b3', { state: 'in', weight: 1, updatedAtMs: 0 });
  await c.admin.updateVolumeConfig('v', { downOutIntervalMs: 60_000 });
  await c.settle();
  await c.kill('b2');
  await c.clock.advance(BRICK_TTL + 1000);
  await c.settle();
  t.ok(
    (await c.placement()).some((a) => a.bricks.includes('b2')),
    'down, not yet out: still listed',
  );
  await c.clock.advance(60_000);
  for (let round = 0; round < 100; round++) {
    await c.catchUpAll();
    await c.settle();
    if (!(await c.placement()).some((a) => a.bricks.includes('b2'))) break;
  }
  const p = await c.placement();
  t.notOk(
    p.some((a) => a.bricks.includes('b2')),
    'out: its replicas were re-created elsewhere',
  );
  t.ok(
    p.every((a) => a.bricks.length === 3 && a.isr.length === 3),
    'every PG has 3 in-sync copies',
  );
});
