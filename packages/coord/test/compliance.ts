import { computePlacement, FsError, initHashing, type PgAssignment } from '@dunix/proto';
import type { Test } from 'tap';
import { type BrickInfo, type Coordinator, volumeConfig, type VolumeSnapshot } from '../src/index.js';

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
  /** Revokes a lease behind its owner's back (as an expiry during an outage would). */
  revokeLease(lease: string): Promise<void>;
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
    t.same(seen[0], { config: null, placement: [], bricks: [{ ...brick(0), alive: true }] });
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
    t.same(next, { pg: 3, bricks: ['b2', 'b3'], epoch: a.epoch + 1 });
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
    await t.rejects(c.updatePlacement(v, 0, 1, ['b0', 'b1', 'b2']), { code: 'INVALID_ARGUMENT' }, 'too many');
    await t.rejects(c.updatePlacement(vol('none'), 0, 1, ['b0']), { code: 'NOT_FOUND' });
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
