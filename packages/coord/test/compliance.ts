import { computePlacement, FsError, initHashing, type PgAssignment } from '@dunix/proto';
import type { Test } from 'tap';
import type { KvBackend } from '../src/kv.js';
import {
  type BrickInfo,
  type Coordinator,
  coordinatorDefaults,
  type ElectionState,
  keys,
  type MountInfo,
  leaseFenced,
  type RecoveryProgress,
  type ScrubJob,
  type ScrubPgResult,
  type Suspect,
  volumeConfig,
  type VolumeSnapshot,
} from '../src/index.js';

/**
 * The Coordinator contract, run against every implementation (memory and
 * real etcd). Each test uses its own volume names, so one store serves all.
 */
export interface CoordinatorHarness {
  name: string;
  /** A started coordinator on the shared store; the suite stops it. */
  make(): Promise<Coordinator>;
  /** Registers `info` from another session (process) that then dies without revoking its lease. */
  registerAndCrash(volume: string, info: BrickInfo, leaseTtlMs: number): Promise<void>;
  /** Lease the alive key of the brick is bound to. */
  leaseOf(volume: string, brickId: string): Promise<string | undefined>;
  /** Lease any key is bound to. */
  leaseOfKey(key: string): Promise<string | undefined>;
  /** Campaigns as `candidateId` from another session (process) that then dies without revoking its lease. */
  campaignAndCrash(volume: string, candidateId: string, leaseTtlMs: number): Promise<void>;
  /** Revokes a lease behind its owner's back (as an expiry during an outage would). */
  revokeLease(lease: string): Promise<void>;
  /** The store itself (KvBackend), as the coordinators use it. */
  kv(): Promise<KvBackend>;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(
  what: string,
  cond: () => Promise<boolean> | boolean,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

export function brick(n: number, over: Partial<BrickInfo> = {}): BrickInfo {
  return {
    id: `b${n}`,
    address: `127.0.0.1:${7100 + n}`,
    host: `host${n}`,
    weight: 1,
    dataDir: `/srv/b${n}`,
    ...over,
  };
}

const TTL = 2000;

export function coordinatorCompliance(t: Test, h: CoordinatorHarness): void {
  let seq = 0;
  const vol = (tag: string) => `${tag}-${++seq}`;
  const open: Coordinator[] = [];
  const make = async () => {
    const c = await h.make();
    open.push(c);
    return c;
  };
  t.teardown(async () => {
    await Promise.all(open.map((c) => c.stop()));
  });
  const register = async (c: Coordinator, v: string, n: number, over: Partial<BrickInfo> = {}) => {
    for (let i = 0; i < n; i++) await c.registerBrick(v, brick(i, over), TTL);
  };

  t.before(async () => {
    await initHashing();
  });

  t.test(`${h.name}: create, get and list volumes`, async (t) => {
    const c = await make();
    const v = vol('cgl');
    await register(c, v, 3);
    const config = volumeConfig(v, {
      pgCount: 64,
      replicas: 2,
      blockSizeBytes: 256 * 1024,
      inlineMaxBytes: 1024,
    });
    const placement = await c.createVolume(config);
    t.equal(placement.length, 64);
    t.same(await c.getVolume(v), config);
    t.equal(await c.getVolume(vol('absent')), undefined);
    const list = await c.listVolumes();
    t.ok(list.some((x) => x.name === v && x.pgCount === 64));
    t.same(
      list.map((x) => x.name),
      [...list.map((x) => x.name)].sort(),
      'sorted by name',
    );
    t.same(await c.getPlacement(v), placement);
    const other = await make();
    t.same(await other.getVolume(v), config, 'another session sees it');
    await t.rejects(c.getPlacement(vol('absent')), { code: 'NOT_FOUND' });
  });

  t.test(`${h.name}: duplicate create fails, also when racing`, async (t) => {
    const c = await make();
    const v = vol('dup');
    await register(c, v, 2);
    await c.createVolume(volumeConfig(v, { pgCount: 16, replicas: 2 }));
    await t.rejects(c.createVolume(volumeConfig(v, { pgCount: 16, replicas: 1 })), {
      code: 'ALREADY_EXISTS',
    });
    const v2 = vol('race');
    await register(c, v2, 2);
    const d = await make();
    const results = await Promise.allSettled([
      c.createVolume(volumeConfig(v2, { pgCount: 32, replicas: 1 })),
      d.createVolume(volumeConfig(v2, { pgCount: 32, replicas: 2 })),
    ]);
    t.equal(results.filter((r) => r.status === 'fulfilled').length, 1, 'exactly one create wins');
    const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    t.equal((lost.reason as FsError).code, 'ALREADY_EXISTS');
    t.equal((await c.getPlacement(v2)).length, 32);
  });

  t.test(`${h.name}: bad input and too few bricks`, async (t) => {
    const c = await make();
    const v = vol('few');
    await register(c, v, 2);
    await t.rejects(c.createVolume(volumeConfig(v, { replicas: 3 })), { code: 'UNAVAILABLE' });
    t.equal(await c.getVolume(v), undefined, 'nothing written');
    await t.rejects(c.createVolume(volumeConfig(v, { pgCount: 100 })), { code: 'INVALID_ARGUMENT' });
    await t.rejects(c.createVolume(volumeConfig('Bad/Name')), { code: 'INVALID_ARGUMENT' });
    await t.rejects(c.createVolume(volumeConfig(v, { blockSizeBytes: 1000 })), { code: 'INVALID_ARGUMENT' });
    await t.rejects(c.registerBrick(v, brick(9, { id: 'a/b' }), TTL), { code: 'INVALID_ARGUMENT' });
    await t.rejects(c.registerBrick(v, brick(9, { address: 'nowhere' }), TTL), { code: 'INVALID_ARGUMENT' });
    await t.rejects(c.registerBrick(v, brick(9, { weight: -1 }), TTL), { code: 'INVALID_ARGUMENT' });
    await t.rejects(c.registerBrick(v, brick(9), 1000), { code: 'INVALID_ARGUMENT' }, 'ttl below 2 s');
    await t.rejects(c.listBricks('..'), { code: 'INVALID_ARGUMENT' });
    t.equal((await c.listBricks(v)).length, 2, 'rejected bricks were not registered');
    // A registered but dead brick does not count towards replicas.
    const v2 = vol('dead');
    await register(c, v2, 1);
    await h.registerAndCrash(v2, brick(5), TTL);
    await waitFor('crashed brick to die', async () =>
      (await c.listBricks(v2)).every((b) => b.id !== 'b5' || !b.alive),
    );
    await t.rejects(c.createVolume(volumeConfig(v2, { replicas: 2 })), { code: 'UNAVAILABLE' });
  });

  t.test(`${h.name}: placement covers every PG and is deterministic`, async (t) => {
    const c = await make();
    const d = await make();
    const va = vol('pla');
    const vb = vol('plb');
    const infos = [0, 1, 2, 3, 4].map((i) => brick(i, { host: `host${i % 3}`, weight: i === 4 ? 2 : 1 }));
    for (const v of [va, vb]) for (const b of infos) await c.registerBrick(v, b, TTL);
    const config = (v: string) => volumeConfig(v, { pgCount: 128, replicas: 3 });
    const pa = await c.createVolume(config(va));
    const pb = await d.createVolume(config(vb));
    const ids = new Set(infos.map((b) => b.id));
    const hostOf = new Map(infos.map((b) => [b.id, b.host]));
    t.same(
      pa.map((a) => a.pg),
      [...Array(128).keys()],
    );
    for (const a of pa) {
      if (a.bricks.length !== 3 || new Set(a.bricks).size !== 3 || !a.bricks.every((b) => ids.has(b))) {
        t.fail(`pg ${a.pg} has bad bricks ${a.bricks}`);
      }
      if (new Set(a.bricks.map((b) => hostOf.get(b))).size !== 3) t.fail(`pg ${a.pg} repeats a host`);
      if (a.epoch !== 1) t.fail(`pg ${a.pg} epoch ${a.epoch}`);
    }
    t.same(
      pb.map((a) => a.bricks),
      pa.map((a) => a.bricks),
      'same bricks, same map',
    );
    t.same(pa, computePlacement(128, infos, 3), 'the map is computePlacement over the live members');
    t.same(await d.getPlacement(va), pa);
  });

  t.test(`${h.name}: a crashed brick's alive key expires; its member record stays`, async (t) => {
    const c = await make();
    const v = vol('crash');
    await h.registerAndCrash(v, brick(7), TTL);
    const first = await c.listBricks(v);
    t.same(first, [{ ...brick(7), alive: true }], 'alive right after registering');
    const started = Date.now();
    await waitFor('the lease to expire', async () => !(await c.listBricks(v))[0]!.alive, TTL + 8000);
    t.ok(Date.now() - started >= TTL / 4, 'not dropped long before the TTL');
    t.same(await c.listBricks(v), [{ ...brick(7), alive: false }], 'member record kept');
  });

  t.test(`${h.name}: stop() revokes; a revoked lease is replaced while running`, async (t) => {
    const c = await make();
    const watcher = await make();
    const v = vol('lease');
    await c.registerBrick(v, brick(1), TTL);
    await sleep(TTL + 500);
    t.ok((await watcher.listBricks(v))[0]!.alive, 'keepalives hold the lease past its TTL');
    const old = await h.leaseOf(v, 'b1');
    t.ok(old, 'alive key bound to a lease');
    await h.revokeLease(old!);
    await waitFor('a new lease', async () => {
      const l = await h.leaseOf(v, 'b1');
      return l !== undefined && l !== old;
    });
    t.ok((await watcher.listBricks(v))[0]!.alive, 'alive again with a new lease');
    const stopAt = Date.now();
    await c.stop();
    await c.stop();
    t.notOk((await watcher.listBricks(v))[0]!.alive, 'stop() revoked the lease at once');
    t.ok(Date.now() - stopAt < TTL, 'without waiting for the TTL');
    await t.rejects(c.listBricks(v), /stopped/);
    await t.rejects(c.start(), /stopped/);
  });

  t.test(`${h.name}: watchVolume delivers full snapshots`, async (t) => {
    const c = await make();
    const other = await make();
    const v = vol('watch');
    const seen: VolumeSnapshot[] = [];
    await c.registerBrick(v, brick(0), TTL);
    const unsubscribe = await c.watchVolume(v, (s) => seen.push(s));
    t.equal(seen.length, 1, 'initial snapshot before watchVolume resolves');
    t.same(seen[0], { config: null, placement: [], bricks: [{ ...brick(0), alive: true }], rebalance: null });
    await other.registerBrick(v, brick(1), TTL);
    await waitFor('the new brick', () => seen.at(-1)!.bricks.length === 2);
    const config = volumeConfig(v, { pgCount: 256, replicas: 2 });
    const placement = await other.createVolume(config);
    await waitFor('the config', () => seen.at(-1)!.config !== null);
    t.same(seen.at(-1)!.config, config);
    t.same(seen.at(-1)!.placement, placement);
    const pg0: PgAssignment = placement[0]!;
    const bumped = await other.updatePlacement(v, 0, pg0.epoch, [...pg0.bricks].reverse());
    await waitFor('the epoch bump', () => seen.at(-1)!.placement[0]!.epoch === pg0.epoch + 1);
    t.same(seen.at(-1)!.placement[0], bumped);
    for (const s of seen) {
      if (s.config ? s.placement.length !== s.config.pgCount : s.placement.length !== 0)
        t.fail('partial map delivered');
    }
    for (let i = 1; i < seen.length; i++)
      t.not(JSON.stringify(seen[i]), JSON.stringify(seen[i - 1]), 'no repeats');
    // A burst of changes is coalesced into fewer snapshots than changes.
    const before = seen.length;
    let epoch = bumped.epoch;
    for (let i = 0; i < 10; i++)
      epoch = (await other.updatePlacement(v, 1, i === 0 ? placement[1]!.epoch : epoch, placement[1]!.bricks))
        .epoch;
    await waitFor('the burst', () => seen.at(-1)!.placement[1]!.epoch === epoch);
    t.ok(seen.length - before <= 10, `burst of 10 gave ${seen.length - before} snapshots`);
    await unsubscribe();
    const after = seen.length;
    await other.updatePlacement(v, 2, placement[2]!.epoch, placement[2]!.bricks);
    await sleep(300);
    t.equal(seen.length, after, 'nothing after unsubscribe');
  });

  t.test(`${h.name}: updatePlacement is a compare-and-swap on the epoch`, async (t) => {
    const c = await make();
    const d = await make();
    const v = vol('cas');
    await register(c, v, 4);
    const placement = await c.createVolume(volumeConfig(v, { pgCount: 8, replicas: 2 }));
    const a = placement[3]!;
    await t.rejects(c.updatePlacement(v, 3, a.epoch + 1, ['b0', 'b1']), { code: 'STALE_EPOCH' });
    await t.rejects(c.updatePlacement(v, 3, a.epoch - 1 || 7, ['b0', 'b1']), { code: 'STALE_EPOCH' });
    const next = await c.updatePlacement(v, 3, a.epoch, ['b2', 'b3']);
    t.same(
      next,
      { pg: 3, bricks: ['b2', 'b3'], isr: ['b2', 'b3'], epoch: a.epoch + 1 },
      'isr defaults to bricks',
    );
    await t.rejects(
      d.updatePlacement(v, 3, a.epoch, ['b0', 'b1']),
      { code: 'STALE_EPOCH' },
      'old epoch now stale',
    );
    const racing = await Promise.allSettled([
      c.updatePlacement(v, 3, next.epoch, ['b0', 'b1']),
      d.updatePlacement(v, 3, next.epoch, ['b1', 'b0']),
    ]);
    t.equal(racing.filter((r) => r.status === 'fulfilled').length, 1, 'one of two racing swaps wins');
    t.equal((await d.getPlacement(v))[3]!.epoch, next.epoch + 1);
    const untouched = (await d.getPlacement(v)).filter((x) => x.pg !== 3);
    t.same(
      untouched,
      placement.filter((x) => x.pg !== 3),
      'other PGs keep their epochs',
    );
    await t.rejects(c.updatePlacement(v, 8, 1, ['b0']), { code: 'INVALID_ARGUMENT' }, 'pg out of range');
    await t.rejects(c.updatePlacement(v, 0, 1, ['b0', 'b9']), { code: 'INVALID_ARGUMENT' }, 'not a member');
    await t.rejects(c.updatePlacement(v, 0, 1, ['b0', 'b0']), { code: 'INVALID_ARGUMENT' }, 'duplicate');
    // replicas 2: a third brick is allowed while a move adds one before dropping one, not a fourth.
    await t.rejects(
      c.updatePlacement(v, 0, 1, ['b0', 'b1', 'b2', 'b3']),
      { code: 'INVALID_ARGUMENT' },
      'too many (more than replicas + 1)',
    );
    await t.rejects(c.updatePlacement(vol('none'), 0, 1, ['b0']), { code: 'NOT_FOUND' });
  });

  t.test(`${h.name}: updatePlacement writes the in-sync set`, async (t) => {
    const c = await make();
    const d = await make();
    const v = vol('isr');
    await register(c, v, 3);
    const placement = await c.createVolume(volumeConfig(v, { pgCount: 4, replicas: 3 }));
    const a = placement[1]!;
    t.same(a.isr, a.bricks, 'created fully in sync');
    t.equal((await c.getVolume(v))!.minInsync, 2, 'min_insync defaults to 2 of 3');
    const [p, r1, r2] = a.bricks as [string, string, string];
    const shrunk = await c.updatePlacement(v, 1, a.epoch, a.bricks, [p, r1]);
    t.same(shrunk, { pg: 1, bricks: a.bricks, isr: [p, r1], epoch: a.epoch + 1 });
    t.same((await d.getPlacement(v))[1], shrunk, 'another session reads the in-sync set');
    t.same((await d.getSnapshot(v)).placement[1], shrunk, 'and so does a snapshot');
    await t.rejects(
      d.updatePlacement(v, 1, a.epoch, a.bricks, [p]),
      { code: 'STALE_EPOCH' },
      'the in-sync set is swapped on the epoch too',
    );
    const failover = await d.updatePlacement(v, 1, shrunk.epoch, [r1, p, r2], [r1]);
    t.same(failover.isr, [r1]);
    const bad: [string[], string][] = [
      [[p, r2], 'without the primary'],
      [[r1, 'b9'], 'a brick not listed'],
      [[r1, r1], 'a duplicate'],
      [[], 'empty'],
    ];
    for (const [isr, why] of bad) {
      await t.rejects(
        c.updatePlacement(v, 1, failover.epoch, [r1, p, r2], isr),
        { code: 'INVALID_ARGUMENT' },
        `in-sync set ${why}`,
      );
    }
    t.equal((await c.getPlacement(v))[1]!.epoch, failover.epoch, 'rejected swaps wrote nothing');
  });

  t.test(`${h.name}: updatePlacements swaps many PGs, each on its own epoch`, async (t) => {
    const c = await make();
    const d = await make();
    const v = vol('batch');
    await register(c, v, 3);
    const placement = await c.createVolume(volumeConfig(v, { pgCount: 256, replicas: 3 }));
    t.same(await c.updatePlacements(v, []), []);
    // Someone moves pg 7 first: its update comes back stale, every other one is applied.
    const moved = await d.updatePlacement(v, 7, 1, placement[7]!.bricks, placement[7]!.isr);
    const updates = placement.map((a) => ({
      pg: a.pg,
      expectedEpoch: a.epoch,
      bricks: a.bricks,
      isr: a.bricks.slice(0, 2),
    }));
    const results = await c.updatePlacements(v, updates);
    t.equal(results.length, 256, 'one result per update, in order (two transactions of 128)');
    t.same(results[7], { pg: 7, applied: false, epoch: moved.epoch });
    t.ok(
      results.every((r, i) => r.pg === i && (i === 7 || (r.applied && r.assignment.epoch === 2))),
      'the others applied at epoch 2',
    );
    const after = await d.getPlacement(v);
    t.same(after[7], moved, 'the stale one was not written');
    t.same(after[8], { ...placement[8]!, isr: placement[8]!.bricks.slice(0, 2), epoch: 2 });
    await t.rejects(
      c.updatePlacements(v, [updates[1]!, updates[1]!]),
      { code: 'INVALID_ARGUMENT' },
      'a PG twice',
    );
    await t.rejects(
      c.updatePlacements(v, [
        { pg: 9, expectedEpoch: 2, bricks: after[9]!.bricks },
        { pg: 10, expectedEpoch: 2, bricks: ['b0', 'b9'] },
      ]),
      { code: 'INVALID_ARGUMENT' },
      'one bad update fails the call',
    );
    t.equal((await d.getPlacement(v))[9]!.epoch, 2, 'and nothing was written');
    // Racing a batch against a single swap on one PG: exactly one wins it.
    const a = (await d.getPlacement(v))[20]!;
    const [batch, single] = await Promise.allSettled([
      c.updatePlacements(v, [{ pg: 20, expectedEpoch: a.epoch, bricks: a.bricks }]),
      d.updatePlacement(v, 20, a.epoch, a.bricks, [a.bricks[0]!]),
    ]);
    const batchWon = batch.status === 'fulfilled' && batch.value[0]!.applied;
    const singleWon = single.status === 'fulfilled';
    t.ok(batchWon !== singleWon, 'one of the two');
    t.equal((await d.getPlacement(v))[20]!.epoch, a.epoch + 1);
  });

  t.test(`${h.name}: controller election: one leader; another wins when its lease goes`, async (t) => {
    const a = await make();
    const b = await make();
    const v = vol('elect');
    const seenA: ElectionState[] = [];
    const seenB: ElectionState[] = [];
    const ca = await a.campaign(v, 'b0', (s) => seenA.push(s), TTL);
    t.same(ca.state(), { leading: true, leaderId: 'b0' }, 'the first candidate leads at once');
    t.same(seenA, [{ leading: true, leaderId: 'b0' }]);
    const cb = await b.campaign(v, 'b1', (s) => seenB.push(s), TTL);
    t.same(cb.state(), { leading: false, leaderId: 'b0' }, 'the second follows');
    t.equal(await b.getController(v), 'b0');
    await t.rejects(
      a.campaign(v, 'bad/id', () => undefined, TTL),
      { code: 'INVALID_ARGUMENT' },
    );
    await t.rejects(
      a.campaign(v, 'b2', () => undefined, 1500),
      { code: 'INVALID_ARGUMENT' },
    );

    // The leader's lease revoked behind its back (as an expiry would): the other wins.
    const lease = await h.leaseOfKey(keys.controller(v));
    t.ok(lease, 'controller key bound to a lease');
    await h.revokeLease(lease!);
    await waitFor('b1 to lead', () => cb.state().leading);
    t.equal(await a.getController(v), 'b1');
    await waitFor('b0 to follow', () => ca.state().leaderId === 'b1');
    t.notOk(ca.state().leading, 'never two leaders in the end');
    t.ok(
      seenA.some((s) => !s.leading),
      'b0 heard it lost the lead',
    );

    // Resigning hands over at once; a crashed leader is replaced after its TTL.
    await cb.resign();
    await cb.resign();
    await waitFor('b0 to lead again', () => ca.state().leading);
    t.same(cb.state(), { leading: false, leaderId: undefined });
    await ca.resign();
    t.equal(await a.getController(v), undefined, 'nobody leads after both resigned');

    const v2 = vol('elect-crash');
    await h.campaignAndCrash(v2, 'bx', TTL);
    const crashedAt = Date.now();
    const c = await make();
    const cc = await c.campaign(v2, 'b2', () => undefined, TTL);
    t.same(
      cc.state(),
      { leading: false, leaderId: 'bx' },
      'the crashed leader holds the key until its lease ends',
    );
    await waitFor('b2 to take over after the TTL', () => cc.state().leading, TTL + 8000);
    t.ok(Date.now() - crashedAt >= TTL / 4, 'not before the lease could expire');
    t.equal(await c.getController(v2), 'b2');
  });

  t.test(`${h.name}: suspect reports and expiring a dead brick`, async (t) => {
    const reporter = await make();
    const watcher = await make();
    const victim = await make();
    const v = vol('suspect');
    await victim.registerBrick(v, brick(1), TTL);
    await victim.registerBrick(v, brick(2), TTL);
    const seen: Suspect[][] = [];
    const unwatch = await watcher.watchSuspects(v, (s) => seen.push(s));
    t.same(seen, [[]], 'no suspects at first');
    await reporter.reportSuspect(v, 'b1', 'c~m-1');
    await waitFor('the report', () => seen.at(-1)!.length === 1);
    const first = seen.at(-1)![0]!;
    t.equal(first.brickId, 'b1');
    await reporter.reportSuspect(v, 'b1', 'c~m-1');
    await sleep(200);
    t.equal(seen.at(-1)![0]!.revision, first.revision, 'a repeat within half the TTL is not sent');
    // Another reporter's report of the same brick is its own key: one suspect, at its revision.
    await watcher.reportSuspect(v, 'b1', 'b2');
    await waitFor('the second report', () => (seen.at(-1)![0]?.revision ?? 0) > first.revision);
    t.same(
      seen.at(-1)!.map((s) => s.brickId),
      ['b1'],
      'two reporters of one brick: one suspect',
    );
    await t.rejects(reporter.reportSuspect(v, 'no/such', 'c~m-1'), { code: 'INVALID_ARGUMENT' });
    await t.rejects(reporter.reportSuspect(v, 'b1', 'a/b'), { code: 'INVALID_ARGUMENT' });
    await t.rejects(reporter.reportSuspect(v, 'b1', ''), { code: 'INVALID_ARGUMENT' });
    await waitFor('the report to expire', () => seen.at(-1)!.length === 0, TTL + 8000);
    await unwatch();

    // Declaring b1 dead revokes its lease: gone at once, then re-registered by its session.
    const health = victim.leaseHealth(v, 'b1')!;
    t.ok(health, 'the registering session knows its lease');
    t.equal(watcher.leaseHealth(v, 'b1'), undefined, 'other sessions do not');
    t.equal(
      await watcher.expireBrick(v, 'b1', '127.0.0.1:1'),
      false,
      'an address it no longer has: left alone',
    );
    t.ok((await watcher.listBricks(v)).find((b) => b.id === 'b1')!.alive);
    t.equal(await watcher.expireBrick(v, 'b1', brick(1).address), true);
    const afterExpire = (await watcher.listBricks(v)).find((b) => b.id === 'b1')!;
    t.notOk(afterExpire.alive, 'dead at once');
    t.ok((await watcher.listBricks(v)).find((b) => b.id === 'b2')!.alive, 'its neighbour is untouched');
    await waitFor(
      'b1 to re-register',
      async () => (await watcher.listBricks(v)).find((b) => b.id === 'b1')!.alive,
    );
    const rebound = victim.leaseHealth(v, 'b1')!;
    t.not(rebound.lease, health.lease, 'a new lease');
    t.ok(rebound.reboundAtMs !== undefined, 'rebound after the loss');
    t.ok(leaseFenced(rebound, Date.now(), 500), 'fenced for a TTL after the loss');
    t.equal(await watcher.expireBrick(v, 'b9'), false, 'unknown brick: nothing to do');

    // A brick leading the controller election loses that lease too.
    const states: ElectionState[] = [];
    const lead = await victim.campaign(v, 'b2', (s) => states.push(s), TTL);
    t.ok(lead.state().leading);
    t.equal(await watcher.expireBrick(v, 'b2'), true);
    await waitFor('b2 to lose the lead', () => states.some((s) => !s.leading));
    await lead.resign();
  });

  t.test(`${h.name}: lease health of a registered brick`, async (t) => {
    const c = await make();
    const v = vol('health');
    const before = Date.now();
    await c.registerBrick(v, brick(0), TTL);
    const h0 = c.leaseHealth(v, 'b0')!;
    t.equal(h0.ttlMs, TTL);
    t.notOk(h0.lost);
    t.equal(h0.reboundAtMs, undefined);
    t.ok(h0.confirmedAtMs >= before && h0.confirmedAtMs <= Date.now(), 'confirmed by the grant');
    t.notOk(leaseFenced(h0, Date.now(), 500), 'not fenced while keepalives succeed');
    await sleep(1200);
    const h1 = c.leaseHealth(v, 'b0')!;
    t.ok(h1.confirmedAtMs > h0.confirmedAtMs, 'keepalives move the confirmation forward');
    t.ok(leaseFenced(h1, h1.confirmedAtMs + TTL - 400, 500), 'fenced once ttl - margin passes unconfirmed');
    t.equal(c.leaseHealth(v, 'b7'), undefined);
  });

  t.test(`${h.name}: recovery reports live with the reporter's lease`, async (t) => {
    const c = await make();
    const reader = await make();
    const v = vol('recov');
    await c.registerBrick(v, brick(0), TTL);
    await c.registerBrick(v, brick(1), TTL);
    await c.createVolume(volumeConfig(v, { pgCount: 8, replicas: 2 }));
    const snaps: VolumeSnapshot[] = [];
    const unwatch = await reader.watchVolume(v, (s) => snaps.push(s));
    const p: RecoveryProgress = {
      pg: 5,
      brick: 'b1',
      mode: 'log',
      opsLeft: 1200,
      bytesLeft: 4096,
      ratePerS: 400,
      startedAtMs: 1000,
    };
    await c.reportRecovery(v, 'b0', p);
    await c.reportRecovery(v, 'b0', { ...p, pg: 2, brick: 'b0', mode: 'backfill', ratePerS: 1e6 });
    t.same(await reader.listRecovery(v), [
      { ...p, pg: 2, brick: 'b0', mode: 'backfill', ratePerS: 1e6, reporter: 'b0' },
      { ...p, reporter: 'b0' },
    ]);
    await c.reportRecovery(v, 'b0', { ...p, opsLeft: 800 });
    t.equal((await reader.listRecovery(v))[1]!.opsLeft, 800, 'a report replaces the last one');
    await c.clearRecovery(v, 2, 'b0');
    await c.clearRecovery(v, 2, 'b0');
    t.same(
      (await reader.listRecovery(v)).map((r) => [r.pg, r.brick]),
      [[5, 'b1']],
    );
    await t.rejects(
      c.reportRecovery(v, 'b7', p),
      { code: 'INVALID_ARGUMENT' },
      'reporter not registered here',
    );
    await t.rejects(reader.reportRecovery(v, 'b0', p), { code: 'INVALID_ARGUMENT' }, 'nor by this session');
    await t.rejects(c.reportRecovery(v, 'b0', { ...p, mode: 'copy' as 'log' }), { code: 'INVALID_ARGUMENT' });
    await t.rejects(c.reportRecovery(v, 'b0', { ...p, opsLeft: -1 }), { code: 'INVALID_ARGUMENT' });
    await t.rejects(c.reportRecovery(v, 'b0', { ...p, brick: 'a/b' }), { code: 'INVALID_ARGUMENT' });
    await sleep(300);
    t.equal(snaps.length, 1, 'recovery keys are not part of the volume snapshot');
    const lease = await h.leaseOf(v, 'b0');
    await h.revokeLease(lease!);
    await waitFor('the report to go with its lease', async () => (await reader.listRecovery(v)).length === 0);
    await unwatch();
  });

  t.test(`${h.name}: operator records, brick removal and the rebalance record`, async (t) => {
    const c = await make();
    const v = vol('admin');
    await register(c, v, 3);
    await c.createVolume(volumeConfig(v, { pgCount: 8, replicas: 2 }));
    await h.registerAndCrash(v, brick(5), TTL);
    const admin = { state: 'draining' as const, weight: 2, updatedAtMs: 5 };
    await c.setBrickAdmin(v, 'b1', admin);
    let snap = await c.getSnapshot(v);
    t.same(snap.bricks.find((b) => b.id === 'b1')?.admin, admin, 'the snapshot carries the operator record');
    t.equal(snap.bricks.find((b) => b.id === 'b0')?.admin, undefined, 'absent where never set');
    await t.rejects(c.setBrickAdmin(v, 'nope', admin), { code: 'NOT_FOUND' }, 'only for members');
    await t.rejects(
      c.setBrickAdmin(v, 'b1', { ...admin, state: 'gone' as 'in' }),
      { code: 'INVALID_ARGUMENT' },
      'a bad record is refused',
    );
    await c.setBrickAdmin(v, 'b1', undefined);
    snap = await c.getSnapshot(v);
    t.equal(snap.bricks.find((b) => b.id === 'b1')?.admin, undefined, 'cleared');

    // b0 is listed by PGs and alive: refused, with the reason.
    await t.rejects(c.removeBrick(v, 'b0'), { code: 'BUSY', message: /running/ }, 'a running brick');
    await t.rejects(c.removeBrick(v, 'nope'), { code: 'NOT_FOUND' });
    // b5 crashed and was never placed: once its lease is gone it can go.
    await t.rejects(c.removeBrick(v, 'b5'), { code: 'BUSY' }, 'still alive (lease held)');
    await waitFor(
      'b5 lease expiry',
      async () => !(await c.listBricks(v)).find((b) => b.id === 'b5')!.alive,
      TTL + 8000,
    );
    await c.setBrickAdmin(v, 'b5', { state: 'in', weight: 1, updatedAtMs: 1 });
    await c.removeBrick(v, 'b5');
    snap = await c.getSnapshot(v);
    t.notOk(
      snap.bricks.some((b) => b.id === 'b5'),
      'member gone',
    );
    await h.registerAndCrash(v, brick(5), TTL);
    t.equal(
      (await c.getSnapshot(v)).bricks.find((b) => b.id === 'b5')?.admin,
      undefined,
      'registered again, it has no operator record: removal deleted it',
    );

    // A dead brick that PGs still list: refused, naming the count.
    await h.registerAndCrash(v, brick(6), TTL);
    await waitFor(
      'b6 lease expiry',
      async () => !(await c.listBricks(v)).find((b) => b.id === 'b6')!.alive,
      TTL + 8000,
    );
    const [a0] = await c.getPlacement(v);
    await c.updatePlacement(v, 0, a0!.epoch, [a0!.bricks[0]!, 'b6'], [a0!.bricks[0]!]);
    await t.rejects(c.removeBrick(v, 'b6'), { code: 'BUSY', message: /1 PG replica/ }, 'listed by a PG');

    // The rebalance record: read-modify-write.
    t.equal(snap.rebalance, null, 'no rebalance yet');
    const job = {
      id: 'j1',
      state: 'running' as const,
      maxMiBPerS: 50,
      maxConcurrent: 4,
      startedAtMs: 1,
      updatedAtMs: 1,
      pgsTotal: 10,
      pgsDone: 0,
      bytesMoved: 0,
    };
    t.same(await c.updateRebalance(v, () => job), job);
    const racers = await Promise.all(
      Array.from({ length: 5 }, () => c.updateRebalance(v, (j) => ({ ...j!, pgsDone: j!.pgsDone + 1 }))),
    );
    t.equal(racers.length, 5);
    t.equal((await c.getSnapshot(v)).rebalance?.pgsDone, 5, 'concurrent increments are not lost');
    t.same(await c.updateRebalance(v, () => undefined), { ...job, pgsDone: 5 }, 'undefined leaves it');
    await t.rejects(
      c.updateRebalance(v, (j) => ({ ...j!, maxConcurrent: 0 })),
      { code: 'INVALID_ARGUMENT' },
    );

    // Config options that may change.
    const cfg = await c.updateVolumeConfig(v, { downOutIntervalMs: 60_000, minInsync: 1 });
    t.equal(cfg.downOutIntervalMs, 60_000);
    t.equal((await c.getVolume(v))?.minInsync, 1, 'stored');
    await t.rejects(
      c.updateVolumeConfig(v, { minInsync: 3 }),
      { code: 'INVALID_ARGUMENT' },
      'min_insync > replicas',
    );
    await t.rejects(c.updateVolumeConfig(v, { downOutIntervalMs: 5 }), { code: 'INVALID_ARGUMENT' });
    await t.rejects(c.updateVolumeConfig(vol('none'), { minInsync: 1 }), { code: 'NOT_FOUND' });
  });

  t.test(`${h.name}: the scrub record and per-PG results`, async (t) => {
    const c = await make();
    const v = vol('scrub');
    await register(c, v, 2);
    await c.createVolume(volumeConfig(v, { pgCount: 4, replicas: 2 }));
    t.equal((await c.getSnapshot(v)).scrub, undefined, 'no scrub yet: absent from the snapshot');
    const job: ScrubJob = {
      id: 's1',
      state: 'running',
      trigger: 'operator',
      startedAtMs: 1,
      updatedAtMs: 1,
      pgsTotal: 4,
      pgsDone: 0,
      bytesVerified: 0,
      found: 0,
      repaired: 0,
      unrecoverable: 0,
    };
    t.same(await c.updateScrub(v, () => job), job);
    t.same((await c.getSnapshot(v)).scrub, job, 'the snapshot carries it');
    await t.rejects(
      c.updateScrub(v, (j) => ({ ...j!, state: 'gone' as 'done' })),
      { code: 'INVALID_ARGUMENT' },
    );
    const result = (pg: number, over: Partial<ScrubPgResult> = {}): ScrubPgResult => ({
      jobId: 's1',
      pg,
      brick: 'b0',
      epoch: 1,
      atMs: 5,
      keys: 10,
      blocks: 2,
      bytes: 1000,
      replicas: ['b1'],
      skipped: [],
      problems: [],
      found: 0,
      repaired: 0,
      unrecoverable: 0,
      ...over,
    });
    const bad: ScrubPgResult['problems'] = [
      {
        kind: 'block-corrupt',
        brick: 'b1',
        ino: '281474976710657',
        index: '0',
        detail: 'x',
        state: 'repaired',
      },
      { kind: 'block-missing', brick: 'b0', ino: '7', index: '3', detail: 'y', state: 'unrecoverable' },
      { kind: 'keys-differ', brick: 'b1', keys: 3, detail: 'z', state: 'unrepaired' },
    ];
    const withBad = { problems: bad, found: 3, repaired: 1, unrecoverable: 1 };
    // Every PG reports at once (the primaries race on the record): nothing is lost.
    const outcomes = await Promise.all(
      [0, 1, 2].map((pg) => c.reportScrubPg(v, result(pg, pg === 1 ? withBad : {}))),
    );
    t.same(outcomes, ['recorded', 'recorded', 'recorded']);
    t.equal(await c.reportScrubPg(v, result(1)), 'duplicate', 'a PG counts once per job');
    let s = (await c.getSnapshot(v)).scrub!;
    t.match(s, {
      state: 'running',
      pgsDone: 3,
      bytesVerified: 3000,
      found: 3,
      repaired: 1,
      unrecoverable: 1,
    });
    t.same(await c.getScrubResult(v, 1), result(1, withBad));
    t.equal(await c.getScrubResult(v, 3), undefined);
    t.equal(await c.reportScrubPg(v, result(3, { jobId: 'other' })), 'stale', 'another job: not recorded');
    t.equal(await c.reportScrubPg(v, result(3)), 'recorded');
    s = (await c.getSnapshot(v)).scrub!;
    t.equal(s.state, 'done', 'the last PG ends the job');
    t.ok(s.finishedAtMs !== undefined && s.lastCompletedAtMs === s.finishedAtMs, 'with its finishing time');
    t.same(
      (await c.listScrubResults(v, 's1')).map((r) => r.pg),
      [0, 1, 2, 3],
    );
    t.equal(await c.reportScrubPg(v, result(2)), 'stale', 'a job that is done takes no more');
    // A new job: the old results are stale, not counted.
    await c.updateScrub(v, (j) => ({ ...job, id: 's2', lastCompletedAtMs: j!.lastCompletedAtMs }));
    t.same(await c.listScrubResults(v, 's2'), []);
    t.equal(
      await c.reportScrubPg(v, result(0, { jobId: 's2' })),
      'recorded',
      'a PG reports again for a new job',
    );
    t.equal((await c.listScrubResults(v, 's1')).length, 3, 'replaced for that PG');
    await t.rejects(c.reportScrubPg(v, result(0, { brick: 'bad id!' })), { code: 'INVALID_ARGUMENT' });
    await t.rejects(
      c.reportScrubPg(v, result(1, { problems: bad })),
      { code: 'INVALID_ARGUMENT' },
      'counts below the list',
    );
    // The schedule is a changeable option; others are refused.
    t.equal((await c.updateVolumeConfig(v, { scrubIntervalMs: 0 })).scrubIntervalMs, 0, 'off');
    t.equal((await c.updateVolumeConfig(v, { scrubIntervalMs: 3600_000 })).scrubIntervalMs, 3600_000);
    await t.rejects(c.updateVolumeConfig(v, { scrubIntervalMs: 5 }), { code: 'INVALID_ARGUMENT' });
    await t.rejects(c.updateVolumeConfig(v, { replicas: 1 } as never), {
      code: 'INVALID_ARGUMENT',
      message: /cannot change/,
    });
  });

  const mountInfo = (id: string, over: Partial<MountInfo> = {}): MountInfo => ({
    id,
    host: 'client-host',
    pid: 4242,
    mountPoint: `/mnt/${id}`,
    startedAtMs: 1_700_000_000_000,
    version: '0.1.0',
    ...over,
  });

  t.test(`${h.name}: mount records: bound to the session's lease, listed, gone on close`, async (t) => {
    const c = await make();
    const v = vol('mnt');
    await register(c, v, 2);
    await t.rejects(c.registerMount(v, mountInfo('m1'), TTL), { code: 'NOT_FOUND' }, 'no volume yet');
    const config = volumeConfig(v, { pgCount: 8, replicas: 2 });
    await c.createVolume(config);
    const s1 = await c.registerMount(v, mountInfo('m1'), TTL);
    const s2 = await c.registerMount(v, mountInfo('m2', { host: 'other' }));
    t.equal(s2.leaseTtlMs, coordinatorDefaults.mountLeaseTtlMs, 'the knob is the default TTL');
    const listed = await c.listMounts(v);
    t.same(
      listed.map((m) => [m.id, m.host, m.leaseTtlMs, m.volumeCreatedAtMs]),
      [
        ['m1', 'client-host', TTL, config.createdAtMs],
        ['m2', 'other', coordinatorDefaults.mountLeaseTtlMs, config.createdAtMs],
      ],
    );
    t.match(listed[0], {
      pid: 4242,
      mountPoint: '/mnt/m1',
      version: '0.1.0',
      startedAtMs: 1_700_000_000_000,
    });
    t.ok(await h.leaseOfKey(keys.mount(v, 'm1')), 'bound to a lease');
    t.equal(s1.health().lost, false);
    await t.rejects(c.registerMount(v, mountInfo('m1'), TTL), { code: 'ALREADY_EXISTS' });
    await t.rejects(c.registerMount(v, mountInfo('bad id'), TTL), { code: 'INVALID_ARGUMENT' });
    await t.rejects(c.registerMount(v, mountInfo('m3', { mountPoint: 'rel' }), TTL), {
      code: 'INVALID_ARGUMENT',
    });
    await t.rejects(
      c.registerMount(v, mountInfo('m3'), 1500),
      { code: 'INVALID_ARGUMENT' },
      'TTL in seconds',
    );
    const snap = await c.getSnapshot(v);
    t.equal(snap.config?.name, v, 'mount records are not part of the snapshot');
    await s1.close();
    await s1.close();
    t.same(
      (await c.listMounts(v)).map((m) => m.id),
      ['m2'],
      'an unmount revokes the lease: the record goes at once',
    );
    // A lease lost behind the session's back (an expiry during an outage) is replaced and the record rewritten.
    const lease = await h.leaseOfKey(keys.mount(v, 'm2'));
    await h.revokeLease(lease!);
    await waitFor('the record rewritten under a new lease', async () => {
      const l = await h.leaseOfKey(keys.mount(v, 'm2'));
      return l !== undefined && l !== lease;
    });
    await c.stop();
    const d = await make();
    t.same(await d.listMounts(v), [], 'stop() revokes the session leases');
  });

  t.test(`${h.name}: delete a volume: refused while mounted or running, then every key goes`, async (t) => {
    const c = await make();
    const bricksSession = await make();
    const v = vol('del');
    const neighbour = `${v}x`; // shares the name's prefix: must survive
    for (const name of [v, neighbour]) {
      await register(bricksSession, name, 2);
      await bricksSession.createVolume(volumeConfig(name, { pgCount: 8, replicas: 2 }));
    }
    await c.updateScrub(v, () => ({
      id: 's1',
      state: 'running',
      trigger: 'operator',
      startedAtMs: 1,
      updatedAtMs: 1,
      pgsTotal: 8,
      pgsDone: 0,
      bytesVerified: 0,
      found: 0,
      repaired: 0,
      unrecoverable: 0,
    }));
    const m = await c.registerMount(v, mountInfo('m1'), TTL);
    await t.rejects(c.deleteVolume(v), {
      code: 'BUSY',
      message: /mounted by 1 client: client-host:\/mnt\/m1 \(pid 4242\)/,
    });
    t.ok(await c.getVolume(v), 'nothing deleted');
    await m.close();
    await t.rejects(c.deleteVolume(v), {
      code: 'BUSY',
      message: /2 running bricks: b0, b1; stop their brickd/,
    });
    const r = await c.deleteVolume(v, { force: true });
    t.equal(r.forced, true);
    t.equal(r.config?.name, v);
    t.same(r.bricks, [
      { id: 'b0', alive: true },
      { id: 'b1', alive: true },
    ]);
    t.ok(r.keysDeleted >= 8 + 1 + 2 + 2 + 1, 'config, placement, members, alive keys, scrub');
    t.equal(await c.getVolume(v), undefined);
    t.same(await c.listBricks(v), [], 'members and liveness gone');
    t.same((await c.getSnapshot(v)).placement, []);
    t.equal(await h.leaseOfKey(keys.alive(v, 'b0')), undefined);
    t.notOk((await c.listVolumes()).some((x) => x.name === v));
    t.ok(await c.getVolume(neighbour), 'a volume whose name extends it is untouched');
    t.equal((await c.getPlacement(neighbour)).length, 8);
    await t.rejects(c.deleteVolume(v), { code: 'NOT_FOUND' });
    await t.rejects(
      c.registerMount(v, mountInfo('m2'), TTL),
      { code: 'NOT_FOUND' },
      'no record lands in a deleted volume',
    );
    // Stopped bricks (members, not alive) do not hold a delete up.
    await bricksSession.stop();
    const plain = await c.deleteVolume(neighbour);
    t.equal(plain.forced, false);
    t.same(plain.bricks, [
      { id: 'b0', alive: false },
      { id: 'b1', alive: false },
    ]);
    t.equal(await c.getVolume(neighbour), undefined);
  });

  t.test(`${h.name}: delete a volume never created (only brick registrations)`, async (t) => {
    const c = await make();
    const b = await make();
    const v = vol('uncreated');
    await register(b, v, 2);
    await t.rejects(c.deleteVolume(v), { code: 'BUSY', message: /running bricks/ }, 'its bricks run');
    const r = await c.deleteVolume(v, { force: true });
    t.equal(r.config, null, 'no config');
    t.equal(r.keysDeleted, 4, 'two members, two alive keys');
    t.same(await c.listBricks(v), []);
    await t.rejects(c.deleteVolume(vol('never')), { code: 'NOT_FOUND' }, 'nothing stored: NOT_FOUND');
  });

  t.test(
    `${h.name}: a transaction's prefix compare: nothing under it written since a revision`,
    async (t) => {
      const kv = await h.kv();
      const p = `${keys.volume(vol('prefixcmp'))}mounts/`;
      const { revision: before } = await kv.range(p);
      const put = { key: `${p}ok`, value: '1' };
      t.ok(await kv.txn([{ prefix: p, notWrittenAfter: before }], [put]), 'nothing under the prefix: holds');
      const { revision: read } = await kv.range(p);
      t.ok(await kv.txn([{ prefix: p, notWrittenAfter: read }], []), 'unchanged since the read: holds');
      await kv.put({ key: `${p}new`, value: '2' });
      t.notOk(
        await kv.txn([{ prefix: p, notWrittenAfter: read }], [{ key: `${p}lost`, value: '3' }]),
        'a key written after the read: fails',
      );
      t.equal(await kv.get(`${p}lost`), undefined, 'and writes nothing');
      const { revision: again } = await kv.range(p);
      await kv.txn([], [], [`${p}new`]);
      t.ok(await kv.txn([{ prefix: p, notWrittenAfter: again }], []), 'a key deleted since: holds');
      await kv.put({ key: `${p.slice(0, -1)}x`, value: '4' });
      t.ok(await kv.txn([{ prefix: p, notWrittenAfter: again }], []), 'a key beside the prefix: holds');
      t.notOk(
        await kv.txn(
          [
            { prefix: p, notWrittenAfter: again },
            { key: `${p}ok`, modRevision: 0 },
          ],
          [],
        ),
        'with a key compare that fails: fails',
      );
    },
  );

  t.test(`${h.name}: delete racing a mount registration: exactly one wins`, async (t) => {
    const c = await make();
    const d = await make();
    const outcomes = new Set<string>();
    for (let i = 0; i < 8; i++) {
      const v = vol('delrace');
      const b = await make();
      await register(b, v, 1);
      await b.createVolume(volumeConfig(v, { pgCount: 4, replicas: 1 }));
      await b.stop(); // a stopped brick does not hold the delete up
      const [del, mnt] = await Promise.allSettled([
        c.deleteVolume(v),
        d.registerMount(v, mountInfo(`m${i}`), TTL),
      ]);
      if (del.status === 'fulfilled') {
        t.equal(mnt.status, 'rejected', 'the mount did not register');
        t.equal(((mnt as PromiseRejectedResult).reason as FsError).code, 'NOT_FOUND');
        t.equal(await c.getVolume(v), undefined);
        outcomes.add('deleted');
      } else {
        t.match(del.reason, { code: 'BUSY', message: /mounted/ }, 'refused for the mount');
        t.equal(mnt.status, 'fulfilled');
        t.same(
          (await c.listMounts(v)).map((m) => m.id),
          [`m${i}`],
          'the mount and its volume are there',
        );
        if (mnt.status === 'fulfilled') await mnt.value.close();
        outcomes.add('mounted');
      }
    }
    t.ok(outcomes.size >= 1, `outcomes: ${[...outcomes].join(', ')}`);
  });

  t.test(`${h.name}: lifecycle`, async (t) => {
    const c = await make();
    await c.start();
    await c.start();
    t.ok(Array.isArray(await c.listVolumes()), 'start is idempotent');
    await c.stop();
    await c.stop();
    await t.rejects(c.listVolumes(), /stopped/);
  });
}
