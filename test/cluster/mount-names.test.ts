/**
 * Mount names: the helper takes `-t fuse.dunixfs` (and `-t dunixfs`) the way
 * mount(8) passes it, a real `mount -t fuse.dunixfs` through
 * /sbin/mount.fuse.dunixfs works, and both bins print their usage.
 */
import { closeSync, existsSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { constants } from 'node:fs';
import { join, resolve } from 'node:path';
import t from 'tap';
import { bins, mountsAt, run, startCluster, waitUntil, type Cluster } from '../src/cluster.js';

const helper = resolve(bins.dunixfs, '..', 'mount-helper.cjs');

/** The client's pid from its "mounted" log line (the helper detaches it). */
function clientPid(logFile: string): number | undefined {
  for (const line of readFileSync(logFile, 'utf8').split('\n').reverse()) {
    const m = /"msg":"mounted".*"pid":(\d+)/.exec(line);
    if (m) return Number(m[1]);
  }
  return undefined;
}

/** Unmounts what the helper mounted and waits for its detached client to end (SIGKILL after 10 s). */
async function unmountHelperMount(c: Cluster, logFile: string): Promise<void> {
  const pid = existsSync(logFile) ? clientPid(logFile) : undefined;
  if (mountsAt(c.mountpoint).length > 0) run('umount', [c.mountpoint]);
  if (mountsAt(c.mountpoint).length > 0) run('umount', ['-l', c.mountpoint]);
  if (pid === undefined) return;
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  await waitUntil(() => !alive(), `client ${pid} to exit`, 10_000).catch(() => {
    if (alive()) process.kill(pid, 'SIGKILL');
  });
}

t.test('the helper accepts -t fuse.dunixfs and -t dunixfs as mount(8) passes them', async (t) => {
  const c = await startCluster(t, { pgs: 8, mount: false });
  for (const type of ['fuse.dunixfs', 'dunixfs']) {
    const logFile = join(c.base, 'logs', `helper-${type}.log`);
    t.teardown(() => unmountHelperMount(c, logFile));
    // mount(8): /sbin/mount.<type> SPEC DIR [-sfnv] [-o OPTS] [-t TYPE]
    const r = run(process.execPath, [
      helper,
      `${c.etcdHostPort}/${c.volume}`,
      c.mountpoint,
      '-o',
      `rw,log=${logFile}`,
      '-t',
      type,
    ]);
    t.equal(r.status, 0, `mount.dunixfs ... -t ${type} succeeds: ${r.stderr}`);
    t.ok(
      mountsAt(c.mountpoint).some((m) => m.fstype === 'fuse.dunixfs'),
      'the mount is there, type fuse.dunixfs',
    );
    writeFileSync(c.path(`hello-${type}`), 'hi\n');
    t.equal(readFileSync(c.path(`hello-${type}`), 'utf8'), 'hi\n', 'and serves');
    await unmountHelperMount(c, logFile);
    t.equal(mountsAt(c.mountpoint).length, 0, 'unmounted');
  }
  const bad = run(process.execPath, [helper, `${c.etcdHostPort}/${c.volume}`, c.mountpoint, '-t', 'ext4']);
  t.equal(bad.status, 1, 'another type is refused');
  t.match(bad.stderr, /unsupported filesystem type "ext4"/);
});

t.test('mount -t fuse.dunixfs through /sbin/mount.fuse.dunixfs', async (t) => {
  const wrapper = '/sbin/mount.fuse.dunixfs';
  let fd: number;
  try {
    fd = openSync(wrapper, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o755);
  } catch {
    t.comment(`${wrapper} exists (npm start installed it): mount(8) runs that one`);
    fd = -1;
  }
  if (fd >= 0) {
    writeSync(fd, `#!/bin/sh\nexec ${process.execPath} ${helper} "$@"\n`);
    closeSync(fd);
    t.teardown(() => rmSync(wrapper, { force: true }));
  }
  const c = await startCluster(t, { pgs: 8, mount: false });
  const logFile = join(c.base, 'logs', 'mount8.log');
  t.teardown(() => unmountHelperMount(c, logFile));
  const r = run('mount', [
    '-t',
    'fuse.dunixfs',
    '-o',
    `log=${logFile}`,
    `${c.etcdHostPort}/${c.volume}`,
    c.mountpoint,
  ]);
  t.equal(r.status, 0, `mount -t fuse.dunixfs succeeds: ${r.stderr}`);
  const m = run('findmnt', ['-n', '-o', 'FSTYPE,SOURCE', c.mountpoint]);
  t.match(m.stdout, new RegExp(`^fuse\\.dunixfs\\s+${c.etcdHostPort}/${c.volume}`), 'findmnt shows it');
  writeFileSync(c.path('x'), 'x');
  t.equal(readFileSync(c.path('x'), 'utf8'), 'x');
  await unmountHelperMount(c, logFile);
});

t.test('dunixfs --help and mount.dunixfs --help print usage and exit 0', async (t) => {
  for (const [bin, name] of [
    [bins.dunixfs, 'dunixfs'],
    [helper, 'mount.dunixfs'],
  ] as const) {
    for (const flag of ['--help', '-h']) {
      const r = run(process.execPath, [bin, flag]);
      t.equal(r.status, 0, `${name} ${flag} exits 0`);
      t.match(r.stdout, new RegExp(`^usage: ${name.replace('.', '\\.')} `), `${name} ${flag} prints usage`);
      t.match(r.stdout, /fuse\.dunixfs/);
    }
  }
  const r = run(process.execPath, [bins.dunixfs]);
  t.equal(r.status, 2, 'no arguments: usage error');
  t.match(r.stderr, /--help/);
});
