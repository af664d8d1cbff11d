/**
 * The gRPC port's connection cap (capped-grpc-server.ts): grpc-js has none,
 * so brickd accepts the connections itself and hands them to grpc-js. With
 * connectionsMax 2, two idle TCP connections fill it: a gRPC call on a third
 * is refused at once (UNAVAILABLE) and served (here UNIMPLEMENTED: the
 * server has no handlers, so the call reached grpc-js) once one of the two
 * closes. Also over TLS, where the auth context still names the caller.
 */
import * as grpc from '@grpc/grpc-js';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { initCa, issueCert } from '@dunix/coord/ca';
import {
  brickClient,
  connLimitDefaults,
  INSECURE_TRANSPORT,
  loadTlsDir,
  peerOf,
  type BrickClient,
  type TransportSecurity,
} from '@dunix/proto';
import { startBrickServer } from '../../src/rpc/server.js';

/** waitForReady: through the channel's reconnect backoff (channels to one address share a subchannel). */
function status(client: BrickClient, waitForReady = false): Promise<number> {
  return new Promise((resolve) => {
    client.BrickStatus(
      {},
      new grpc.Metadata({ waitForReady }),
      { deadline: Date.now() + 20_000 },
      (err: grpc.ServiceError | null) => resolve(err ? err.code : grpc.status.OK),
    );
  });
}

function idleConnection(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => resolve(s));
    s.on('error', reject);
  });
}

async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function capCase(t: Test, server: TransportSecurity, client: TransportSecurity): Promise<string[]> {
  const seen: string[] = [];
  const handlers = {
    BrickStatus: (call: unknown, cb: (e: null, r: object) => void) => {
      const p = peerOf(call);
      seen.push(p.kind === 'certificate' ? p.name : 'insecure');
      cb(null, {});
    },
  };
  const { server: s, port } = await startBrickServer('127.0.0.1:0', handlers as never, server, {
    ...connLimitDefaults,
    connectionsMax: 2,
  });
  t.teardown(() => s.forceShutdown());
  const idle = [await idleConnection(port), await idleConnection(port)];
  t.teardown(() => idle.forEach((x) => x.destroy()));
  await until(() => s.connections === 2, 'two connections counted');
  const c1 = brickClient(`127.0.0.1:${port}`, client);
  t.teardown(() => c1.close());
  t.equal(await status(c1), grpc.status.UNAVAILABLE, 'a third connection is refused: UNAVAILABLE');
  t.ok(s.refused >= 1, `refused counted (${s.refused})`);
  t.equal(s.connections, 2, 'the two stay');
  idle[0]!.destroy();
  await until(() => s.connections === 1, 'the closed one uncounted');
  const c2 = brickClient(`127.0.0.1:${port}`, client);
  t.teardown(() => c2.close());
  t.equal(await status(c2, true), grpc.status.OK, 'once one closed, a call is served');
  t.equal(s.connections, 2, 'and its connection counted');
  return seen;
}

t.test('insecure gRPC port: connections past connectionsMax are refused', async (t) => {
  const seen = await capCase(t, INSECURE_TRANSPORT, INSECURE_TRANSPORT);
  t.same(seen, ['insecure']);
});

t.test('TLS gRPC port: the same, and the certificate still names the caller', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'dunix-grpc-cap-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await initCa(dir);
  const brick = await loadTlsDir((await issueCert(dir, { role: 'brick', name: 'b0' })).dir, 'brick');
  const client = await loadTlsDir((await issueCert(dir, { role: 'client', name: 'c0' })).dir, 'client');
  const seen = await capCase(t, brick, client);
  t.same(seen, ['client:c0'], 'the handler saw the client certificate');
});
