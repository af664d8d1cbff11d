import t from 'tap';
import {
  coordinatorDefaults,
  keys,
  parseVolumeKey,
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
});
