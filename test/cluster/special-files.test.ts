/**
 * Virtual inodes on the mount: a FIFO carries data between two processes, a
 * unix socket bound on the mount accepts a client that connects by path, and
 * device nodes keep their major/minor (st_rdev). Also the name length limit
 * as a process sees it (ENAMETOOLONG, whatever layer refuses).
 */
import { createHash, randomBytes } from 'node:crypto';
import { lstatSync, readdirSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { ok, run, runAsync, startCluster, waitUntil } from '../src/cluster.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

t.test('special files', async (t) => {
  const c = await startCluster(t);
  const dir = c.path('special');
  ok('mkdir', [dir]);

  await t.test('FIFO between a writer and a reader process', async (t) => {
    const fifo = join(dir, 'pipe');
    ok('mkfifo', ['-m', '0640', fifo]);
    const st = lstatSync(fifo);
    t.ok(st.isFIFO(), 'mkfifo made a FIFO');
    t.equal(st.mode & 0o7777, 0o640, 'with its mode');
    t.equal(st.size, 0, 'size 0');
    const data = randomBytes(1 << 20);
    const src = join(c.base, 'fifo-data');
    writeFileSync(src, data);

    // Writer first (it blocks in open until the reader comes).
    const writer = runAsync('sh', ['-c', `cat ${src} > ${fifo}`], { timeoutMs: 60_000 });
    const reader = run('sh', ['-c', `cat ${fifo} | sha256sum`], { timeoutMs: 60_000 });
    const w = await writer.done;
    t.equal(w.status, 0, `the writer finished ${w.stderr}`);
    t.equal(reader.status, 0, `the reader finished ${reader.stderr}`);
    t.equal(reader.stdout.split(' ')[0], sha(data), '1 MiB passed through the FIFO intact');

    // Reader first, then a writer that writes in small pieces.
    const reader2 = runAsync('sh', ['-c', `cat ${fifo}`], { timeoutMs: 60_000 });
    const w2 = run('sh', ['-c', `for i in 1 2 3 4 5; do echo line$i; done > ${fifo}`], { timeoutMs: 60_000 });
    t.equal(w2.status, 0, 'the second writer finished');
    const r2 = await reader2.done;
    t.equal(r2.stdout, 'line1\nline2\nline3\nline4\nline5\n', 'the reader got every line in order');
    t.ok(lstatSync(fifo).isFIFO(), 'still a FIFO after use');
  });

  await t.test('unix socket bound on the mount', async (t) => {
    const sock = join(dir, 'srv.sock');
    const server = runAsync(
      'python3',
      [
        '-c',
        `import socket,sys
s=socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(1)
print("listening", flush=True)
c,_=s.accept()
data=b""
while not data.endswith(b"\\n"):
    d=c.recv(65536)
    if not d: break
    data+=d
c.sendall(b"echo:"+data.upper())
c.close(); s.close()`,
        sock,
      ],
      { timeoutMs: 60_000 },
    );
    await waitUntil(
      () => {
        try {
          return lstatSync(sock).isSocket();
        } catch {
          return server.child.exitCode !== null;
        }
      },
      'the socket file',
      30_000,
    );
    const st = lstatSync(sock);
    t.ok(st.isSocket(), 'bind created a socket inode on the mount');
    const client = run(
      'python3',
      [
        '-c',
        `import socket,sys
s=socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1]); s.sendall(b"hello over dunixfs\\n")
out=b""
while True:
    d=s.recv(65536)
    if not d: break
    out+=d
sys.stdout.write(out.decode())`,
        sock,
      ],
      { timeoutMs: 60_000 },
    );
    const srv = await server.done;
    t.equal(srv.status, 0, `the server exited cleanly ${srv.stderr}`);
    t.equal(client.status, 0, `the client exited cleanly ${client.stderr}`);
    t.equal(client.stdout, 'echo:HELLO OVER DUNIXFS\n', 'data went both ways through the socket');
    t.ok(lstatSync(sock).isSocket(), 'the socket inode stays after the server closed');
    ok('rm', [sock]);
    t.notOk(readdirSync(dir).includes('srv.sock'), 'unlinked');
  });

  await t.test('device nodes keep major and minor', async (t) => {
    const cases: [string, 'c' | 'b', number, number][] = [
      ['null', 'c', 1, 3],
      ['zero', 'c', 1, 5],
      ['sda1', 'b', 8, 1],
      ['bigminor', 'c', 240, 70_000],
    ];
    for (const [name, type, major, minor] of cases) {
      ok('mknod', ['-m', '0666', join(dir, name), type, String(major), String(minor)]);
    }
    for (const [name, type, major, minor] of cases) {
      const p = join(dir, name);
      const st = lstatSync(p);
      t.ok(type === 'c' ? st.isCharacterDevice() : st.isBlockDevice(), `${name}: ${type} device`);
      t.equal(st.mode & 0o7777, 0o666, `${name}: mode`);
      // glibc makedev: minor low 8 bits, major next 12, the rest of minor above.
      const rdev = (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12);
      t.equal(st.rdev, rdev, `${name}: st_rdev is makedev(${major}, ${minor})`);
      t.equal(
        ok('stat', ['-c', '%t:%T', p]).trim(),
        `${major.toString(16)}:${minor.toString(16)}`,
        `${name}: stat(1) shows major:minor`,
      );
      // The structured binding (DESIGN.md, virtual inodes): made by mknod here, so virtual.
      t.same(
        JSON.parse(ok('getfattr', ['-n', 'dunix.device', '--only-values', p])),
        { binding: 'virtual', node: 0, major, minor },
        `${name}: dunix.device tells its binding`,
      );
    }
    // The node opens the local device: writes to "null" vanish, "zero" reads zeros.
    t.equal(run('sh', ['-c', `echo x > ${join(dir, 'null')}`]).status, 0, 'writing to the null node');
    t.equal(
      ok('sh', ['-c', `head -c 8 ${join(dir, 'zero')} | od -An -tx1`]).trim(),
      '00 00 00 00 00 00 00 00',
    );
    // Survives a remount (read back from the bricks, not the kernel's cache).
    await c.unmount();
    await c.mount();
    t.equal(
      lstatSync(join(dir, 'bigminor')).rdev,
      (70_000 & 0xff) | (240 << 8) | ((70_000 & ~0xff) << 12),
      'rdev after remount',
    );
    t.ok(lstatSync(join(dir, 'pipe')).isFIFO(), 'FIFO after remount');
  });

  await t.test('name length limits', async (t) => {
    const errno = (fn: () => void) => {
      try {
        fn();
        return 'ok';
      } catch (err) {
        return (err as NodeJS.ErrnoException).code;
      }
    };
    t.equal(
      errno(() => writeFileSync(join(dir, 'n'.repeat(255)), 'x')),
      'ok',
      'a 255-byte name works',
    );
    t.equal(
      errno(() => writeFileSync(join(dir, 'n'.repeat(256)), 'x')),
      'ENAMETOOLONG',
      'create, 256 bytes',
    );
    t.equal(
      errno(() => writeFileSync(join(dir, 'n'.repeat(300)), 'x')),
      'ENAMETOOLONG',
      'create, 300 bytes',
    );
    t.equal(
      errno(() => mkdirSync(join(dir, 'd'.repeat(300)))),
      'ENAMETOOLONG',
      'mkdir, 300 bytes',
    );
    t.equal(
      errno(() => lstatSync(join(dir, 'l'.repeat(300)))),
      'ENAMETOOLONG',
      'lookup, 300 bytes',
    );
  });
});
