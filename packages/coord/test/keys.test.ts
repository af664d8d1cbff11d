import t from 'tap';
import {
  controllerDefaults,
  coordinatorDefaults,
  keys,
  parseVolumeKey,
  SNAPSHOT_KEY_KINDS,
  validateCampaignTtl,
  validateControllerKnobs,
  validateCoordinatorKnobs,
  volumeOfConfigKey,
} from '../src/index.js';

t.test('key layout', async (t) => {
  t.equal(keys.config('v'), '/dunix/v1/volumes/v/config');
  t.equal(keys.member('v', 'b1'), '/dunix/v1/volumes/v/members/b1');
  t.equal(keys.alive('v', 'b1'), '/dunix/v1/volumes/v/alive/b1');
  t.equal(keys.placement('v', 12), '/dunix/v1/volumes/v/placement/12');
  t.same(parseVolumeKey('v', keys.placement('v', 12)), { kind: 'placement', pg: 12 });
  t.same(parseVolumeKey('v', keys.member('v', 'b1')), { kind: 'member', brickId: 'b1' });
  t.same(parseVolumeKey('v', keys.alive('v', 'b1')), { kind: 'alive', brickId: 'b1' });
  t.same(parseVolumeKey('v', keys.config('v')), { kind: 'config' });
  t.equal(parseVolumeKey('v', '/dunix/v1/volumes/v/placement/012'), undefined);
  t.equal(parseVolumeKey('v', '/dunix/v1/volumes/v/other/x'), undefined);
  t.equal(parseVolumeKey('v', keys.config('w')), undefined);
  t.equal(keys.controller('v'), '/dunix/v1/volumes/v/controller');
  t.equal(keys.suspect('v', 'c~m-1', 'b1'), '/dunix/v1/volumes/v/suspects/c~m-1/b1');
  t.equal(keys.suspectsOf('v', 'c'), '/dunix/v1/volumes/v/suspects/c~');
  t.equal(keys.recovery('v', 7, 'b1'), '/dunix/v1/volumes/v/recovery/7/b1');
  t.same(parseVolumeKey('v', keys.controller('v')), { kind: 'controller' });
  t.same(parseVolumeKey('v', keys.suspect('v', 'c~m-1', 'b1')), {
    kind: 'suspect',
    brickId: 'b1',
    reporter: 'c~m-1',
  });
  t.same(
    parseVolumeKey('v', '/dunix/v1/volumes/v/suspects/b1'),
    { kind: 'suspect', brickId: 'b1' },
    "an earlier version's report, without its reporter",
  );
  t.equal(parseVolumeKey('v', '/dunix/v1/volumes/v/suspects/c/b1/x'), undefined);
  t.same(parseVolumeKey('v', keys.recovery('v', 7, 'b1')), { kind: 'recovery', pg: 7, brickId: 'b1' });
  t.equal(parseVolumeKey('v', '/dunix/v1/volumes/v/recovery/07/b1'), undefined);
  t.equal(parseVolumeKey('v', '/dunix/v1/volumes/v/recovery/7'), undefined);
  t.equal(parseVolumeKey('v', '/dunix/v1/volumes/v/recovery/7/b1/x'), undefined);
  t.equal(parseVolumeKey('v', '/dunix/v1/volumes/v/members/b1/x'), undefined);
  t.equal(parseVolumeKey('v', '/dunix/v1/volumes/v/alive/'), undefined);
  t.equal(keys.scrub('v'), '/dunix/v1/volumes/v/scrub');
  t.equal(keys.scrubPg('v', 3), '/dunix/v1/volumes/v/scrub/3');
  t.same(parseVolumeKey('v', keys.scrub('v')), { kind: 'scrub' });
  t.same(parseVolumeKey('v', keys.scrubPg('v', 3)), { kind: 'scrubPg', pg: 3 });
  t.equal(parseVolumeKey('v', '/dunix/v1/volumes/v/scrub/03'), undefined);
  t.same(
    [...SNAPSHOT_KEY_KINDS].sort(),
    ['admin', 'alive', 'config', 'member', 'placement', 'rebalance', 'scrub'],
    'controller, suspect, recovery and per-PG scrub keys stay out of snapshots',
  );
  t.equal(volumeOfConfigKey(keys.config('abc')), 'abc');
  t.equal(volumeOfConfigKey(keys.member('abc', 'x')), undefined);
});

t.test('knobs: defaults valid, cross-field rules enforced', async (t) => {
  t.same(validateCoordinatorKnobs(), coordinatorDefaults);
  t.throws(() => validateCoordinatorKnobs({ leaseTtlMs: 1000 }), /leaseTtlMs 1000/);
  t.throws(() => validateCoordinatorKnobs({ leaseTtlMs: 2500 }), /whole seconds/);
  t.throws(
    () => validateCoordinatorKnobs({ leaseTtlMs: 3000, keepaliveIntervalMs: 1000 }),
    /< leaseTtlMs \/ 3/,
  );
  t.ok(validateCoordinatorKnobs({ leaseTtlMs: 3000, keepaliveIntervalMs: 999 }));
  t.throws(() => validateCoordinatorKnobs({ rpcTimeoutMs: 0 }), /rpcTimeoutMs/);
  t.throws(() => validateCoordinatorKnobs({ suspectTtlMs: 1500 }), /suspectTtlMs/);
  t.throws(() => validateCoordinatorKnobs({ placementBatchMax: 0 }), /placementBatchMax/);
  t.throws(() => validateCoordinatorKnobs({ fenceMarginMs: -1 }), /fenceMarginMs/);
  t.throws(
    () => validateCampaignTtl(2000, validateCoordinatorKnobs({ fenceMarginMs: 1000 })),
    /fenceMarginMs/,
  );
  t.equal(validateCampaignTtl(3000, validateCoordinatorKnobs({ fenceMarginMs: 1000 })), 3000);
});

t.test('controller knobs: defaults valid, rules enforced', async (t) => {
  t.same(validateControllerKnobs(), controllerDefaults);
  t.throws(() => validateControllerKnobs({ electionLeaseTtlMs: 2500 }), /whole seconds/);
  t.throws(() => validateControllerKnobs({ electionLeaseTtlMs: 1000 }), /electionLeaseTtlMs/);
  t.throws(
    () => validateControllerKnobs({ probeConnectTimeoutMs: 1000, probeTimeoutMs: 1000 }),
    /probeConnectTimeoutMs 1000 must be < probeTimeoutMs/,
  );
  t.throws(() => validateControllerKnobs({ retryMs: 0 }), /retryMs/);
  t.throws(() => validateControllerKnobs({ replanAttemptsMax: 0 }), /replanAttemptsMax/);
});

t.test('mount records: key layout and the session TTL knob', async (t) => {
  t.equal(keys.mount('v', 'm-1'), '/dunix/v1/volumes/v/mounts/m-1');
  t.equal(keys.mountsAll('v'), '/dunix/v1/volumes/v/mounts/');
  t.equal(keys.mountStamp('v'), '/dunix/v1/volumes/v/mounted');
  t.same(parseVolumeKey('v', keys.mount('v', 'm-1')), { kind: 'mount', mountId: 'm-1' });
  t.same(parseVolumeKey('v', keys.mountStamp('v')), { kind: 'mountStamp' });
  t.equal(parseVolumeKey('v', '/dunix/v1/volumes/v/mounts/'), undefined);
  t.equal(parseVolumeKey('v', '/dunix/v1/volumes/v/mounts/m/x'), undefined);
  t.notOk(SNAPSHOT_KEY_KINDS.has('mount'), 'mount records are read on their own, not in the snapshot');
  t.notOk(SNAPSHOT_KEY_KINDS.has('mountStamp'));
  t.ok(keys.mount('v', 'm').startsWith(keys.volume('v')), 'under the volume prefix: deleted with it');
  t.equal(coordinatorDefaults.mountLeaseTtlMs, 6_000);
  t.throws(() => validateCoordinatorKnobs({ mountLeaseTtlMs: 1000 }), /mountLeaseTtlMs/);
  t.throws(() => validateCoordinatorKnobs({ mountLeaseTtlMs: 2500 }), /mountLeaseTtlMs: .*whole seconds/);
  t.equal(validateCoordinatorKnobs({ mountLeaseTtlMs: 3000 }).mountLeaseTtlMs, 3000);
});
