import { spawn } from 'node:child_process';
import { connect, createServer, type Socket } from 'node:net';
import t from 'tap';
import { splitAddress, tcpProbe } from '../src/index.js';

t.test('tcpProbe: a listener is up; a closed port is down', async (t) => {
  const probe = tcpProbe({ connectTimeoutMs: 200 });
  const server = createServer((s) => s.destroy());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  t.equal(await probe('b', `127.0.0.1:${port}`), 'up');
  await new Promise<void>((r) => server.close(() => r()));
  t.equal(await probe('b', `127.0.0.1:${port}`), 'down', 'nothing listens: refused');
  t.same(splitAddress('[::1]:7000'), ['::1', 7000]);
  t.same(splitAddress('host.example:80'), ['host.example', 80]);
});

t.test('tcpProbe: a stopped process is up, a killed one down', async (t) => {
  const child = spawn(
    process.execPath,
    [
      '-e',
      `const s = require('net').createServer(() => {});
       s.listen(0, '127.0.0.1', () => console.log(s.address().port));`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  t.teardown(async () => {
    child.kill('SIGKILL');
    await exited;
  });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.setEncoding('utf8');
    child.stdout!.once('data', (d: string) => resolve(Number(d.trim())));
    child.once('exit', () => reject(new Error('child exited')));
  });
  const address = `127.0.0.1:${port}`;
  // A timeout long enough that a loaded machine's event-loop stalls cannot pass for it.
  const probe = tcpProbe({ connectTimeoutMs: 3000 });
  t.equal(await probe('b', address), 'up');
  child.kill('SIGSTOP');
  t.equal(await probe('b', address), 'up', 'SIGSTOP: the kernel still accepts (left to the lease)');
  child.kill('SIGKILL');
  await exited;
  const started = Date.now();
  t.equal(await probe('b', address), 'down', 'SIGKILL: refused');
  t.ok(Date.now() - started < 2000, 'at once, not by the connect timeout');
});

t.test('tcpProbe: no answer within the timeout counts as up', async (t) => {
  // A stopped process whose accept queue is full: the kernel drops further SYNs, nothing answers.
  const child = spawn(
    process.execPath,
    [
      '-e',
      `const s = require('net').createServer(() => {});
       s.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => console.log(s.address().port));`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const fillers: Socket[] = [];
  t.teardown(async () => {
    for (const s of fillers) s.destroy();
    child.kill('SIGKILL');
    await exited;
  });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.setEncoding('utf8');
    child.stdout!.once('data', (d: string) => resolve(Number(d.trim())));
    child.once('exit', () => reject(new Error('child exited')));
  });
  child.kill('SIGSTOP');
  for (let i = 0; i < 4; i++) {
    const s = connect({ host: '127.0.0.1', port });
    s.on('error', () => undefined);
    fillers.push(s);
    await new Promise((r) => setTimeout(r, 20));
  }
  const probe = tcpProbe({ connectTimeoutMs: 100 });
  const started = Date.now();
  t.equal(await probe('b', `127.0.0.1:${port}`), 'up');
  const ms = Date.now() - started;
  t.ok(ms >= 90 && ms < 5000, `answered by the timeout, no hang (${ms} ms)`);
});
