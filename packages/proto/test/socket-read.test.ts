/**
 * readIntoBuffer: accepted sockets read into one buffer of ours. Every byte
 * arrives in order on each of several connections sharing the buffer, the
 * chunks are views of that buffer (no allocation per read), pause/resume
 * still hold reads back, and the end of the stream is still seen.
 */
import { once } from 'node:events';
import net from 'node:net';
import t from 'tap';
import { readIntoBuffer } from '../src/socket-read.js';

function pattern(seed: number, n: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed * 2654435761;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

t.test('several connections share one receive buffer; bytes arrive whole and in order', async (t) => {
  const shared = Buffer.allocUnsafeSlow(64 * 1024);
  const received = new Map<number, Buffer[]>();
  let views = 0;
  let chunks = 0;
  let ended = 0;
  let usedOurs = 0;
  const server = net.createServer((sock) => {
    const id = received.size;
    received.set(id, []);
    const ok = readIntoBuffer(sock, shared, (chunk) => {
      chunks++;
      if (chunk.buffer === shared.buffer) views++;
      // Valid only during the call: copy, as the frame reader does.
      received.get(id)!.push(Buffer.from(chunk));
    });
    if (ok) usedOurs++;
    else sock.on('data', (chunk: Buffer) => received.get(id)!.push(chunk));
    sock.on('end', () => {
      ended++;
      sock.end();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const { port } = server.address() as net.AddressInfo;
  const sizes = [3 * 1024 * 1024 + 17, 1 * 1024 * 1024 + 5, 777];
  await Promise.all(
    sizes.map(async (n, i) => {
      const c = net.connect({ port, host: '127.0.0.1' });
      await once(c, 'connect');
      const data = pattern(i + 1, n);
      // In pieces, so reads of the connections interleave.
      for (let at = 0; at < n; at += 100_000) c.write(data.subarray(at, at + 100_000));
      c.end();
      await once(c, 'close');
    }),
  );
  t.equal(usedOurs, sizes.length, 'every accepted socket reads into our buffer (this Node allows it)');
  t.equal(ended, sizes.length, 'every end of stream was seen');
  t.ok(chunks > sizes.length, `data came in many reads (${chunks})`);
  t.equal(views, chunks, 'every chunk was a view of the shared buffer');
  const got = [...received.values()].map((parts) => Buffer.concat(parts));
  got.sort((a, b) => b.length - a.length);
  const want = sizes.map((n, i) => pattern(i + 1, n)).sort((a, b) => b.length - a.length);
  for (let i = 0; i < want.length; i++)
    t.ok(got[i]!.equals(want[i]!), `connection of ${want[i]!.length} bytes intact`);
});

t.test('pause holds reads back and resume goes on', async (t) => {
  const shared = Buffer.allocUnsafeSlow(16 * 1024);
  let total = 0;
  let server!: net.Server;
  const accepted = new Promise<net.Socket>((resolve) => {
    server = net.createServer((sock) => {
      t.ok(
        readIntoBuffer(sock, shared, (chunk) => (total += chunk.length)),
        'reads into our buffer',
      );
      sock.pause();
      resolve(sock);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const c = net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1' });
  t.teardown(() => c.destroy());
  const sock = await accepted;
  c.write(Buffer.alloc(200_000, 1));
  await new Promise((r) => setTimeout(r, 200));
  t.equal(total, 0, 'nothing read while paused');
  sock.resume();
  const deadline = Date.now() + 5000;
  while (total < 200_000 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.equal(total, 200_000, 'everything read after resume');
  sock.destroy();
});
