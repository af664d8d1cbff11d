import { createLogger } from '@dunix/proto';
import t from 'tap';
import { type ElectionState, leaseFenced, ManualClock, MemoryCoordinator, MemoryKv } from '../src/index.js';
import { brick } from './compliance.js';

const log = createLogger('fencing-test', () => undefined);

t.test('fencing: a lease unconfirmed for ttl - margin fences; confirmed again, it resumes', async (t) => {
  const clock = new ManualClock();
  const kv = new MemoryKv(clock);
  const c = new MemoryCoordinator({ kv, clock, log, knobs: { fenceMarginMs: 800 } });
  t.teardown(() => c.stop());
  await c.start();
  await c.registerBrick('v', brick(0), 2000);
  const states: ElectionState[] = [];
  const campaign = await c.campaign('v', 'b0', (s) => states.push(s), 2000);
  t.same(campaign.state(), { leading: true, leaderId: 'b0' });
  await clock.advance(1000);
  const healthy = c.leaseHealth('v', 'b0')!;
  t.equal(healthy.confirmedAtMs, clock.now(), 'confirmed by the keepalive just sent');
  t.notOk(leaseFenced(healthy, clock.now(), 800));

  // etcd unreachable for 1.3 s: longer than ttl - margin (1.2 s), shorter than the TTL (2 s).
  kv.setAvailable(false);
  await clock.advance(1100);
  t.ok(campaign.state().leading, 'still leading within ttl - margin');
  await clock.advance(200);
  t.notOk(campaign.state().leading, 'stepped down: the lease may be gone');
  const h = c.leaseHealth('v', 'b0')!;
  t.equal(h.confirmedAtMs, healthy.confirmedAtMs, 'no confirmation while unreachable');
  t.ok(leaseFenced(h, clock.now(), 800), 'the brick is fenced too');
  kv.setAvailable(true);
  await clock.advance(300);
  t.same(campaign.state(), { leading: true, leaderId: 'b0' }, 'the key was still its own: leading again');
  t.notOk(leaseFenced(c.leaseHealth('v', 'b0')!, clock.now(), 800), 'and the brick unfenced');
  t.same(
    states.map((s) => s.leading),
    [true, false, true],
  );
});

t.test('fencing: a lost lease fences until replaced, then for one TTL more', async (t) => {
  const clock = new ManualClock();
  const kv = new MemoryKv(clock);
  const c = new MemoryCoordinator({ kv, clock, log });
  t.teardown(() => c.stop());
  await c.start();
  await c.registerBrick('v', brick(0), 2000);
  const first = c.leaseHealth('v', 'b0')!;
  await kv.revokeLease(first.lease);
  t.notOk(
    leaseFenced(c.leaseHealth('v', 'b0')!, clock.now(), 500),
    'not known yet: the next keepalive finds out',
  );
  kv.setAvailable(false);
  await clock.advance(500); // the keepalive fails; the loss is still unknown
  kv.setAvailable(true);
  await clock.advance(500); // this keepalive learns the lease is gone, and replaces it
  const h = c.leaseHealth('v', 'b0')!;
  t.not(h.lease, first.lease, 'a new lease');
  t.notOk(h.lost);
  t.equal(h.reboundAtMs, clock.now());
  t.ok(leaseFenced(h, clock.now() + 1999, 500), 'fenced for a TTL after the replacement');
  await clock.advance(2000);
  t.notOk(leaseFenced(c.leaseHealth('v', 'b0')!, clock.now(), 500), 'then not');
  t.ok(leaseFenced(undefined, clock.now(), 500), 'no registration: fenced');
});
