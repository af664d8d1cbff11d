import { createLogger } from '@dunix/proto';
import t from 'tap';
import { MemoryCoordinator, MemoryKv } from '../src/index.js';
import { coordinatorCompliance } from './compliance.js';

const kv = new MemoryKv();
const log = createLogger('coord-test', () => undefined);

coordinatorCompliance(t, {
  name: 'memory',
  make: async () => {
    const c = new MemoryCoordinator({ kv, log });
    await c.start();
    return c;
  },
  registerAndCrash: async (volume, info, ttlMs) => {
    const c = new MemoryCoordinator({ kv, log });
    await c.start();
    await c.registerBrick(volume, info, ttlMs);
    await c.crash();
  },
  leaseOf: async (volume, brickId) => kv.leaseOf(`/dunix/v1/volumes/${volume}/alive/${brickId}`),
  leaseOfKey: async (key) => kv.leaseOf(key),
  campaignAndCrash: async (volume, candidateId, ttlMs) => {
    const c = new MemoryCoordinator({ kv, log });
    await c.start();
    await c.campaign(volume, candidateId, () => undefined, ttlMs);
    await c.crash();
  },
  revokeLease: (lease) => kv.revokeLease(lease),
  kv: async () => kv,
});

t.test('memory: an unavailable store fails calls, and keepalives recover after it', async (t) => {
  const store = new MemoryKv();
  const c = new MemoryCoordinator({ kv: store, log });
  t.teardown(() => c.stop());
  await c.start();
  await c.registerBrick(
    'outage',
    { id: 'b0', address: '127.0.0.1:1', host: 'h', weight: 1, dataDir: '/d' },
    2000,
  );
  store.setAvailable(false);
  await t.rejects(c.listBricks('outage'), { code: 'UNAVAILABLE' });
  await new Promise((r) => setTimeout(r, 2500)); // the lease expires while keepalives fail
  store.setAvailable(true);
  t.notOk((await c.listBricks('outage'))[0]!.alive, 'expired during the outage');
  const deadline = Date.now() + 5000;
  while (!(await c.listBricks('outage'))[0]!.alive && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 50));
  t.ok((await c.listBricks('outage'))[0]!.alive, 're-granted and re-registered after the outage');
  const fresh = new MemoryCoordinator({ kv: store, log });
  store.setAvailable(false);
  await t.rejects(fresh.start(), { code: 'UNAVAILABLE' }, 'start fails when the store is down');
  store.setAvailable(true);
});
