/**
 * The fabric's records on a real mount (replicas 3): a socket's listener
 * record (`dunix.listener`) set by one mount is read back, refused on a
 * regular file, and reads as absent once the mount that set it is killed
 * and its session has expired — while a record set by a live mount stays.
 */
import { spawnSync } from 'node:child_process';
import t from 'tap';
import { run, startCluster, waitUntil, type Cluster } from '../src/cluster.js';

function getListener(c: Cluster, path: string) {
  return run('getfattr', ['-n', 'dunix.listener', '--only-values', c.path(path)]);
}

t.test('dunix.listener: set, read, refused on a file, gone with its session', async (t) => {
  const c = await startCluster(t, {
    pgs: 16,
    replicas: 3,
    mountOptions: 'session_ttl_ms=2000',
    brickArgs: () => ['--orphan-owner-grace-ms', '1000'],
  });
  for (const name of ['a.sock', 'b.sock']) {
    const r = spawnSync('python3', [
      '-c',
      `import socket; s = socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(c.path(name))})`,
    ]);
    t.equal(r.status, 0, `${name} bound`);
  }
  run('sh', ['-c', `: > ${c.path('plain')}`]);
  const record = '{"node":3,"pid":4242,"endpoint":"tcp:10.0.0.3:9000"}';
  let r = run('setfattr', ['-n', 'dunix.listener', '-v', record, c.path('a.sock')]);
  t.equal(r.status, 0, `set on a socket: ${r.stderr}`);
  t.equal(getListener(c, 'a.sock').stdout, record, 'read back');
  r = run('setfattr', ['-n', 'dunix.listener', '-v', record, c.path('plain')]);
  t.match(r.stderr, /Operation not permitted/, 'not on a regular file');
  t.match(getListener(c, 'b.sock').stderr, /No such attribute/, 'b.sock has none');

  // The mount that set it dies: once its session record expires, the listener reads as absent.
  process.kill(c.mountPid, 'SIGKILL');
  await c.unmount();
  await c.mount();
  await waitUntil(
    () => getListener(c, 'a.sock').status !== 0,
    'the listener of the dead session to read as absent',
    20_000,
    250,
  );
  t.pass('the record of a dead session reads as absent');
  r = run('setfattr', ['-n', 'dunix.listener', '-v', 'again', c.path('a.sock')]);
  t.equal(r.status, 0, `and can be set anew: ${r.stderr}`);
  await new Promise((res) => setTimeout(res, 4000));
  t.equal(getListener(c, 'a.sock').stdout, 'again', 'a live session keeps its record past the grace');
});
