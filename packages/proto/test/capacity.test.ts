import t from 'tap';
import {
  type BrickUsage,
  fullThresholdPct,
  parseBrickUsage,
  usageState,
  validateVolumeConfig,
  volumeDefaults,
  volumeUsage,
} from '../src/index.js';

const usage = (over: Partial<BrickUsage> = {}): BrickUsage => ({
  capacityBytes: 1000,
  usedBytes: 100,
  freeBytes: 900,
  blockBytes: 90,
  metaBytes: 10,
  state: 'ok',
  atMs: 5,
  ...over,
});

t.test(
  'usageState: ok below the near-full band, nearfull within 10 points, full at the threshold',
  async (t) => {
    t.equal(usageState(849, 1000, 95), 'ok');
    t.equal(usageState(850, 1000, 95), 'nearfull');
    t.equal(usageState(949, 1000, 95), 'nearfull');
    t.equal(usageState(950, 1000, 95), 'full');
    t.equal(usageState(2000, 1000, 95), 'full');
    t.equal(usageState(0, 0, 95), 'full', 'no capacity at all is full');
    t.equal(usageState(700, 1000, 80), 'nearfull', 'the band follows the threshold');
  },
);

t.test('fullThresholdPct: the default, or the volume option, validated', async (t) => {
  t.equal(fullThresholdPct({}), 95);
  t.equal(fullThresholdPct({ fullThresholdPct: 80 }), 80);
  const base = { name: 'v', ...volumeDefaults, minInsync: 1, createdAtMs: 0 };
  t.doesNotThrow(() => validateVolumeConfig({ ...base, fullThresholdPct: 50 }));
  t.doesNotThrow(() => validateVolumeConfig({ ...base, fullThresholdPct: 99 }));
  for (const bad of [49, 100, 90.5, -1])
    t.throws(() => validateVolumeConfig({ ...base, fullThresholdPct: bad }), /fullThresholdPct/);
});

t.test('volumeUsage: raw sums, usable is one copy of R, bricks without a record counted apart', async (t) => {
  const m = new Map([
    ['a', usage({ capacityBytes: 1000, usedBytes: 400, freeBytes: 600 })],
    ['b', usage({ capacityBytes: 2000, usedBytes: 1900, freeBytes: 100, state: 'full' })],
    ['c', usage({ capacityBytes: 1000, usedBytes: 900, freeBytes: 100, state: 'nearfull' })],
  ]);
  const v = volumeUsage(['a', 'b', 'c', 'd'], m, 2);
  t.same(v, {
    rawCapacityBytes: 4000,
    rawUsedBytes: 3200,
    rawFreeBytes: 800,
    usableFreeBytes: 400,
    usableCapacityBytes: 2000,
    bricksFull: 1,
    bricksNearfull: 1,
    bricksUnknown: 1,
  });
  t.equal(volumeUsage([], m, 3).rawCapacityBytes, 0, 'only the listed bricks count');
});

t.test('parseBrickUsage: a well-formed record, or undefined', async (t) => {
  t.same(parseBrickUsage(usage()), usage());
  t.equal(parseBrickUsage(null), undefined);
  t.equal(parseBrickUsage('x'), undefined);
  t.equal(parseBrickUsage({ ...usage(), state: 'empty' }), undefined);
  t.equal(parseBrickUsage({ ...usage(), usedBytes: -1 }), undefined);
  t.equal(parseBrickUsage({ ...usage(), capacityBytes: '1000' }), undefined);
  t.equal(parseBrickUsage({ ...usage(), atMs: Number.NaN }), undefined);
});
