import { type ChildProcess, spawn } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger, type PgAssignment } from '@dunix/proto';
import t, { type Test } from 'tap';
import {
  Controller,
  EtcdCoordinator,
  type EtcdProcess,
  spawnEtcd,
  tcpProbe,
  volumeConfig,
} from '../src/index.js';
import { brick, sleep, waitFor } from './compliance.js';

/**
 * The controller on a real etcd, with real processes: bricks b0 and b1 are
 * sessions of this process (each running a controller), b2 is a child
 * process that listens on its registered address and is then killed or
 * stopped. Measures the fast path end to end.
 */
const here = dirname(fileURLToPath(import.meta.url));
const log = createLogger('controller-etcd-test', () => undefined);
const TTL = 2000;
/** The killed brick's lease in the reported-failover test: long, so only the report can beat it, even on a loaded machine. */
// Long, so that under any load the report, not the lease's expiry, is what can move PGs in time.
const REPORTED_TTL = 15_000;

let etcd: EtcdProcess | undefined;
t.before(async () => {
  etcd = await spawnEtcd({ log });
});
t.teardown(async () => {
  await etcd?.stop();
});

interface Child {
  process: ChildProcess;
  exited: Promise<void>;
}

async function startBrickChild(volume: string, n: number, ttlMs: number): Promise<Child> {
  const child = spawn(
    process.execPath,
    [
      join(here, 'fixtures', 'session-crash.js'),
      'brick',
      etcd!.endpoint,
      volume,
      JSON.stringify(brick(n)),
      `${ttlMs}`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let out = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => (out += d));
  await waitFor('the brick child', () => out.includes('done') || child.exitCode !== null, 15_000);
  if (!out.includes('done')) throw new Error(`brick child exited with ${child.exitCode}`);
  return { process: child, exited };
}

async function setup(t: Test, volume: string, childTtlMs = TTL) {
  const admin = new EtcdCoordinator({ endpoints: [etcd!.endpoint], log });
  await admin.start();
  const servers: Server[] = [];
  const sessions: { coord: EtcdCoordinator; controller: Controller }[] = [];
  for (const n of [0, 1]) {
    const server = createServer((s) => s.destroy());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    servers.push(server);
    const coord = new EtcdCoordinator({ endpoints: [etcd!.endpoint], log });
    await coord.start();
    const port = (server.address() as { port: number }).port;
    await coord.registerBrick(volume, brick(n, { address: `127.0.0.1:${port}` }), TTL);
    const controller = new Controller({
      coordinator: coord,
      volume,
      brickId: `b${n}`,
      log,
      probe: tcpProbe(),
      knobs: { electionLeaseTtlMs: TTL },
    });
    sessions.push({ coord, controller });
  }
  const child = await startBrickChild(volume, 2, childTtlMs);
  t.teardown(async () => {
    child.process.kill('SIGKILL');
    await child.exited;
    for (const s of sessions) {
      await s.controller.stop();
      await s.coord.stop();
    }
    for (const s of servers) s.close();
    await admin.stop();
  });
  await admin.createVolume(volumeConfig(volume, { pgCount: 256, replicas: 3 }));
  for (const s of sessions) await s.controller.start();
  await waitFor('a leader', () => sessions.some((s) => s.controller.isLeader()));
  return { admin, sessions, child };
}

const servedWithout = (placement: PgAssignment[], dead: string) =>
  placement.every((a) => a.bricks[0] !== dead && !a.isr.includes(dead));

t.test('etcd: a SIGKILLed brick is failed over after a report, before its lease expires', async (t) => {
  const { admin, sessions, child } = await setup(t, 'fast', REPORTED_TTL);
  const before = await admin.getPlacement('fast');
  t.ok(
    before.some((a) => a.bricks[0] === 'b2'),
    'b2 leads some PGs',
  );
  child.process.kill('SIGKILL');
  await child.exited;
  const started = Date.now();
  // A brick whose connection to b2 was refused reports it.
  await sessions[1]!.coord.reportSuspect('fast', 'b2', 'b1');
  await waitFor(
    'every PG served without b2',
    async () => servedWithout(await admin.getPlacement('fast'), 'b2'),
    REPORTED_TTL - 500,
  );
  const ms = Date.now() - started;
  // Sooner than the lease could expire (its last keepalive was at most keepaliveIntervalMs, 500 ms, before
  // the kill): the report, not the lease, moved them. How fast exactly is the bench's business, not a test's.
  t.ok(ms < REPORTED_TTL - 500, `256 PGs failed over in ${ms} ms (the lease is ${REPORTED_TTL} ms)`);
  t.notOk((await admin.listBricks('fast')).find((b) => b.id === 'b2')!.alive);
});

t.test('etcd: a SIGSTOPped brick answers the probe and is failed over by its lease', async (t) => {
  const { admin, sessions, child } = await setup(t, 'paused');
  const before = await admin.getPlacement('paused');
  child.process.kill('SIGSTOP');
  const started = Date.now();
  await sessions[0]!.coord.reportSuspect('paused', 'b2', 'b0');
  await sleep(500);
  t.same(await admin.getPlacement('paused'), before, 'the probe connected: nothing changed');
  await waitFor(
    'lease expiry',
    async () => servedWithout(await admin.getPlacement('paused'), 'b2'),
    TTL + 8000,
  );
  t.ok(Date.now() - started >= TTL / 2, `failed over after ${Date.now() - started} ms, by the lease`);
  child.process.kill('SIGCONT');
});
