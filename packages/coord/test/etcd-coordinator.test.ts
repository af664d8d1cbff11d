import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger } from '@dunix/proto';
import t from 'tap';
import { EtcdKv } from '../src/etcd-kv.js';
import { EtcdCoordinator, type EtcdProcess, keys, spawnEtcd } from '../src/index.js';
import { coordinatorCompliance, waitFor } from './compliance.js';

const here = dirname(fileURLToPath(import.meta.url));
const log = createLogger('coord-test', () => undefined);

let etcd: EtcdProcess | undefined;
t.before(async () => {
  etcd = await spawnEtcd({ log });
});
t.teardown(async () => {
  await etcd?.stop();
});

/** The lease of a key, read over etcd's JSON gateway (independent of the client under test). */
async function gateway<T>(path: string, body: unknown): Promise<T> {
  const res = await fetch(`${etcd!.endpoint}${path}`, { method: 'POST', body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return (await res.json()) as T;
}

async function leaseOfKey(k: string): Promise<string | undefined> {
  const key = Buffer.from(k).toString('base64');
  const res = await gateway<{ kvs?: { lease?: string }[] }>('/v3/kv/range', { key });
  const lease = res.kvs?.[0]?.lease;
  return lease && lease !== '0' ? lease : undefined;
}

/** Runs fixtures/session-crash.js `mode` until it reports "done", then SIGKILLs it (leases left to expire). */
async function runAndKill(mode: 'register' | 'campaign', args: string[]): Promise<void> {
  const child = spawn(process.execPath, [join(here, 'fixtures', 'session-crash.js'), mode, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    let out = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => (out += d));
    await waitFor('the child session', () => out.includes('done') || child.exitCode !== null, 15_000);
    if (!out.includes('done')) throw new Error(`${mode} child exited with ${child.exitCode}`);
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
}

coordinatorCompliance(t, {
  name: 'etcd',
  make: async () => {
    const c = new EtcdCoordinator({ endpoints: [etcd!.endpoint], log });
    await c.start();
    return c;
  },
  registerAndCrash: (volume, info, ttlMs) =>
    runAndKill('register', [etcd!.endpoint, volume, JSON.stringify(info), String(ttlMs)]),
  campaignAndCrash: (volume, candidateId, ttlMs) =>
    runAndKill('campaign', [etcd!.endpoint, volume, candidateId, String(ttlMs)]),
  leaseOf: (volume, brickId) => leaseOfKey(keys.alive(volume, brickId)),
  leaseOfKey,
  revokeLease: async (lease) => {
    await gateway('/v3/lease/revoke', { ID: lease });
  },
  kv: async () => {
    const kv = new EtcdKv({ endpoints: [etcd!.endpoint], rpcTimeoutMs: 5000, log });
    t.teardown(() => kv.close());
    return kv;
  },
});

t.test('etcd: start() fails fast when etcd is unreachable', async (t) => {
  const c = new EtcdCoordinator({ endpoints: ['http://127.0.0.1:1'], dialTimeoutMs: 1000, log });
  const started = Date.now();
  await t.rejects(c.start(), { code: 'UNAVAILABLE' });
  t.ok(Date.now() - started < 5000, 'within the dial timeout');
  await c.stop();
});

t.test('etcd: a brick survives an etcd restart (same data dir)', async (t) => {
  const dir = await import('node:fs/promises').then((fs) => fs.mkdtemp('/tmp/dunix-etcd-restart-'));
  let e = await spawnEtcd({ dataDir: `${dir}/data`, log });
  const { clientPort, peerPort } = e;
  const c = new EtcdCoordinator({ endpoints: [e.endpoint], log });
  t.teardown(async () => {
    await c.stop();
    await e.stop();
    await import('node:fs/promises').then((fs) => fs.rm(dir, { recursive: true, force: true }));
  });
  await c.start();
  await c.registerBrick(
    'restart',
    { id: 'b0', address: '127.0.0.1:7000', host: 'h', weight: 1, dataDir: '/d' },
    2000,
  );
  await e.stop();
  await new Promise((r) => setTimeout(r, 3000)); // longer than the TTL: keepalives fail meanwhile
  e = await spawnEtcd({ dataDir: `${dir}/data`, clientPort, peerPort, log });
  const reader = new EtcdCoordinator({ endpoints: [e.endpoint], log });
  t.teardown(() => reader.stop());
  await reader.start();
  await waitFor(
    'the brick to be alive again',
    async () => (await reader.listBricks('restart'))[0]?.alive === true,
    15_000,
  );
  t.pass('alive again after the restart');
});
