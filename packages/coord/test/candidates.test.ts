import t from 'tap';
import type { PgAssignment } from '@dunix/proto';
import {
  placementCandidates,
  standings,
  volumeConfig,
  type BrickStatus,
  type VolumeSnapshot,
} from '../src/index.js';

/** Who the target placement uses: operator records first, then what PGs already list; dead too long is out. */

const member = (id: string, over: Partial<BrickStatus> = {}): BrickStatus => ({
  id,
  address: '127.0.0.1:7000',
  host: `h-${id}`,
  weight: 1,
  dataDir: `/srv/${id}`,
  alive: true,
  ...over,
});
const pg = (n: number, bricks: string[]): PgAssignment => ({ pg: n, bricks, isr: bricks, epoch: 1 });

function snap(bricks: BrickStatus[], downOutIntervalMs?: number): VolumeSnapshot {
  return {
    config: volumeConfig('v', {
      pgCount: 2,
      replicas: 2,
      createdAtMs: 0,
      ...(downOutIntervalMs ? { downOutIntervalMs } : {}),
    }),
    placement: [pg(0, ['a', 'b']), pg(1, ['b', 'c'])],
    bricks,
    rebalance: null,
  };
}

t.test('roles and weights', async (t) => {
  const s = snap([
    member('a'),
    member('b', { weight: 3 }),
    member('c', { admin: { state: 'draining', weight: 1, updatedAtMs: 0 } }),
    member('d'),
    member('e', { admin: { state: 'in', weight: 2, updatedAtMs: 0 } }),
  ]);
  const list = standings(s, 1000);
  t.same(
    list.map((x) => [x.id, x.role, x.weight]),
    [
      ['a', 'in', 1],
      ['b', 'in', 3],
      ['c', 'draining', 0],
      ['d', 'new', 0],
      ['e', 'in', 2],
    ],
    'listed bricks are in with their registered weight, records override, unlisted ones are new',
  );
  t.same(
    placementCandidates(s, list).map((c) => [c.id, c.weight, c.host]),
    [
      ['a', 1, 'h-a'],
      ['b', 3, 'h-b'],
      ['e', 2, 'h-e'],
    ],
  );
});

t.test('a brick down for the down-out interval is out', async (t) => {
  const s = snap([member('a'), member('b', { alive: false }), member('c', { alive: false })], 60_000);
  const down = new Map([
    ['b', 0],
    ['c', 50_000],
  ]);
  const list = standings(s, 60_000, down);
  t.same(
    list.map((x) => [x.id, x.role, x.downForMs]),
    [
      ['a', 'in', 0],
      ['b', 'out', 60_000],
      ['c', 'in', 10_000],
    ],
  );
  t.same(
    placementCandidates(s, list).map((c) => c.id),
    ['a', 'c'],
  );
  t.equal(standings(s, 60_000).find((x) => x.id === 'b')?.role, 'in', 'down since unknown: just seen down');
});
