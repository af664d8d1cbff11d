import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import {
  brickClient,
  brickProto,
  callUnary,
  channelOptions,
  FrameConn,
  FrameServer,
  FsError,
  grpcServerCredentials,
  loadTlsDir,
  peerOf,
  type BrickHandlers,
  type PeerIdentity,
  type TransportSecurity,
} from '@dunix/proto';
import { initCa, issueCert } from '../src/ca.js';

/**
 * The frame transport and gRPC over mutual TLS, with certificates of the
 * cluster CA: a good peer is served and its identity reaches the handler;
 * a client without a certificate, a client of another CA, a server of
 * another CA and a server presenting a client certificate are refused.
 */

type Tls = TransportSecurity & { kind: 'tls' };

const seen: PeerIdentity[] = [];
const written: Buffer[] = [];
const handlers = {
  WriteBlock: (call: { request: { data: Buffer } }, cb: (e: null, r: object) => void) => {
    written.push(Buffer.from(call.request.data));
    cb(null, {});
  },
  ReadBlock: (call: { request: { length: number } }, cb: (e: null, r: object) => void) =>
    cb(null, { data: Buffer.alloc(call.request.length, 0x5a) }),
  BrickStatus: (call: unknown, cb: (e: null, r: object) => void) => {
    const peer = peerOf(call);
    seen.push(peer);
    cb(null, { brickId: peer.kind === 'certificate' ? peer.name : 'insecure' });
  },
} as unknown as BrickHandlers;

async function pki(t: { teardown(fn: () => void): void }) {
  const dir = mkdtempSync(join(tmpdir(), 'dunix-tls-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  await initCa(join(dir, 'ca'));
  await initCa(join(dir, 'other'));
  const issue = async (ca: string, role: 'brick' | 'client', name: string) =>
    loadTlsDir((await issueCert(join(dir, ca), { role, name })).dir);
  return {
    brick: await issue('ca', 'brick', 'b1'),
    client: await issue('ca', 'client', 'c1'),
    peer: await issue('ca', 'brick', 'b2'),
    stranger: await issue('other', 'client', 'c1'),
    strangeBrick: await issue('other', 'brick', 'b1'),
  };
}

async function frameServer(t: { teardown(fn: () => unknown): void }, sec: TransportSecurity) {
  const bad: string[] = [];
  const server = new FrameServer(handlers, (r) => bad.push(r), sec);
  const port = await server.listen('127.0.0.1', 0);
  const conns: FrameConn[] = [];
  t.teardown(async () => {
    conns.forEach((c) => c.close());
    await server.close();
  });
  const connect = (s: TransportSecurity | undefined) => {
    const c = new FrameConn(`127.0.0.1:${port}`, {}, s);
    conns.push(c);
    return c;
  };
  return { port, bad, connect };
}

/** A TLS client that trusts the CA but has no certificate: how the server ended it. */
function withoutClientCertificate(port: number, ca: Buffer): Promise<string> {
  return new Promise((resolve) => {
    const sock = tlsConnect({ host: '127.0.0.1', port, ca });
    const timer = setTimeout(() => {
      sock.destroy();
      resolve('no answer within 5 s');
    }, 5000);
    sock.on('secureConnect', () => sock.write(Buffer.alloc(12)));
    sock.on('data', () => resolve('served'));
    sock.on('error', (err) => {
      clearTimeout(timer);
      resolve(err.message);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      resolve('connection closed');
    });
  });
}

async function refused(p: Promise<unknown>): Promise<FsError> {
  const err = await p.then(
    () => new Error('served'),
    (e: unknown) => e,
  );
  if (!(err instanceof FsError)) throw new Error(`expected an FsError, got ${String(err)}`);
  return err;
}

t.test('frames over mutual TLS', async (t) => {
  const p = await pki(t);
  const s = await frameServer(t, p.brick);
  const r = await s.connect(p.client).unary<{ brickId: string }>('BrickStatus', {}, 5000);
  t.equal(r.brickId, 'client:c1', 'served; the handler sees the client certificate');
  const r2 = await s.connect(p.peer).unary<{ brickId: string }>('BrickStatus', {}, 5000);
  t.equal(r2.brickId, 'brick:b2', 'and a brick certificate as a brick');
  // Block data travels as a frame tail, written to TLS on its own (not copied
  // into one buffer), and the server reads it into one buffer of its own
  // (socket-read.ts): 8 different MiB-sized tails at once arrive intact.
  const blocks = [1, 2, 3, 4, 5, 6, 7, 8].map((k) => {
    const b = Buffer.alloc(1 << 20);
    for (let i = 0; i < b.length; i++) b[i] = (i * 7 + k * 13) & 0xff;
    return b;
  });
  const conn = s.connect(p.client);
  await Promise.all(blocks.map((data) => conn.unary('WriteBlock', { ino: '1', index: '0', data }, 5000)));
  const key = (b: Buffer) => b.subarray(0, 64).toString('hex');
  const byKey = new Map(written.map((w) => [key(w), w]));
  t.ok(
    written.length === blocks.length && blocks.every((b) => byKey.get(key(b))?.equals(b)),
    '8 MiB-sized tails arrive intact, in parallel',
  );
  const got = await conn.unary<{ data: Buffer }>('ReadBlock', { length: 1 << 20 }, 5000);
  t.ok(got.data.length === 1 << 20 && got.data.every((b) => b === 0x5a), 'a 1 MiB reply tail too');

  const plain = await refused(s.connect(undefined).unary('BrickStatus', {}, 3000));
  t.equal(plain.code, 'UNAVAILABLE', `plain TCP to a TLS port is closed (${plain.message})`);
  const noCert = await withoutClientCertificate(s.port, p.client.ca);
  t.match(noCert, /certificate required/, `a TLS client without a certificate is refused (${noCert})`);

  const stranger = await refused(
    s.connect({ ...p.stranger, ca: p.client.ca } as Tls).unary('BrickStatus', {}, 3000),
  );
  t.equal(
    stranger.code,
    'UNAVAILABLE',
    `a client certificate of another CA is refused (${stranger.message})`,
  );
  const distrust = await refused(s.connect(p.stranger).unary('BrickStatus', {}, 3000));
  t.equal(distrust.code, 'UNAVAILABLE');
  t.match(
    distrust.message,
    /self-signed certificate in certificate chain|unable to verify/,
    'the client distrusts a brick of another CA',
  );
  t.ok(
    s.bad.some((b) => /TLS handshake refused/.test(b)),
    `the server reports refused handshakes: ${s.bad.join('; ')}`,
  );
  t.equal(seen.filter((x) => x.kind === 'insecure').length, 0, 'no call was served without a certificate');
});

t.test('a client refuses a server presenting a client certificate or another CA', async (t) => {
  const p = await pki(t);
  const s = await frameServer(t, p.client);
  const err = await refused(s.connect(p.peer).unary('BrickStatus', {}, 3000));
  t.equal(err.code, 'UNAVAILABLE');
  // A client certificate is not for serving (extended key usage clientAuth only) and names no
  // address: OpenSSL refuses it before the hostname and role checks would.
  t.match(err.message, /unsuitable certificate purpose|not in the cert's list|not a brick's/);
  const s2 = await frameServer(t, p.strangeBrick);
  const err2 = await refused(s2.connect(p.client).unary('BrickStatus', {}, 3000));
  t.match(err2.message, /self-signed certificate in certificate chain|unable to verify/);
});

t.test('without TLS: loopback only', async (t) => {
  const server = new FrameServer(handlers);
  t.throws(
    () => server.listen('0.0.0.0', 0),
    /not loopback/,
    'an insecure server does not listen on 0.0.0.0',
  );
  t.throws(() => brickClient('198.51.100.1:1'), /not loopback/, 'nor does a gRPC client dial past loopback');
  await server.close();
});

t.test('gRPC over mutual TLS', async (t) => {
  const p = await pki(t);
  const server = new grpc.Server(channelOptions);
  server.addService(brickProto().dunix.v1.Brick.service, handlers);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpcServerCredentials(p.brick), (e, n) => (e ? reject(e) : resolve(n))),
  );
  t.teardown(() => server.forceShutdown());
  const good = brickClient(`127.0.0.1:${port}`, p.client);
  t.teardown(() => good.close());
  const r = await callUnary<object, { brickId: string }>(good, 'BrickStatus', {}, 5000);
  t.equal(r.brickId, 'client:c1', 'served; the handler sees the client certificate (auth context)');
  const stranger = brickClient(`127.0.0.1:${port}`, { ...p.stranger, ca: p.client.ca } as Tls);
  t.teardown(() => stranger.close());
  const err = await refused(callUnary(stranger, 'BrickStatus', {}, 3000));
  t.equal(err.code, 'UNAVAILABLE', `another CA's client is refused (${err.message})`);
  const plain = new (brickProto().dunix.v1.Brick)(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {});
  t.teardown(() => plain.close());
  const err2 = await refused(callUnary(plain, 'BrickStatus', {}, 3000));
  t.equal(err2.code, 'UNAVAILABLE', 'plain HTTP/2 is refused');
});
