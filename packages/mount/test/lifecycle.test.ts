/**
 * Mount lifecycle of the real binary: signals unmount cleanly, a killed
 * server never leaves a wedged mount point, a busy mount is detached lazily.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { mountAt } from '../src/fuse/mount.js';
import { mountPassthrough, ok, passthroughBin, waitFor } from './helpers/passthrough-mount.js';

function exitOf(
  p: import('node:child_process').ChildProcess,
): Promise<{ code: number | null; signal: string | null }> {
  if (p.exitCode !== null || p.signalCode !== null)
    return Promise.resolve({ code: p.exitCode, signal: p.signalCode });
  return new Promise((r) => p.once('exit', (code, signal) => r({ code, signal })));
}

/** Children of pid (from /proc), e.g. the watchdog the server started. */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'latin1');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(d));
    } catch {
      // exited while we looked
    }
  }
  return out;
}

function watchdogOf(pid: number): number | undefined {
  return childrenOf(pid).find((c) => {
    try {
      return readFileSync(`/proc/${c}/cmdline`, 'latin1').includes('dunixfs-watchdog');
    } catch {
      return false;
    }
  });
}

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  t.test(`${signal} unmounts cleanly and exits 0`, async (t) => {
    const m = await mountPassthrough(t);
    ok('sh', ['-c', `echo kept > ${join(m.mnt, 'f')}`]);
    m.proc.kill(signal);
    const r = await exitOf(m.proc);
    t.equal(r.code, 0, 'exit status 0');
    t.equal(mountAt(m.mnt), undefined, 'mount is gone');
    t.equal(readFileSync(join(m.src, 'f'), 'utf8'), 'kept\n', 'data is in the source directory');
  });
}

t.test('SIGKILL: the watchdog detaches the dead mount; the next run mounts again', async (t) => {
  const m = await mountPassthrough(t);
  await waitFor(() => watchdogOf(m.proc.pid!) !== undefined, 'the watchdog');
  t.pass('a watchdog runs beside the server');
  m.proc.kill('SIGKILL');
  await exitOf(m.proc);
  await waitFor(() => mountAt(m.mnt) === undefined, 'the watchdog to unmount', 5000);
  t.doesNotThrow(() => statSync(m.mnt), 'mount point is usable, not ENOTCONN');
  const again = spawn(process.execPath, [passthroughBin, m.src, m.mnt], { stdio: 'ignore' });
  t.teardown(() => {
    if (again.exitCode === null) again.kill('SIGTERM');
    return exitOf(again);
  });
  await waitFor(() => mountAt(m.mnt)?.fstype === 'fuse.dunixfs-passthrough', 'a second mount');
  t.pass('mounted again at the same place');
});

t.test('a dead mount without a watchdog is detached by the next server', async (t) => {
  const m = await mountPassthrough(t);
  await waitFor(() => watchdogOf(m.proc.pid!) !== undefined, 'the watchdog');
  process.kill(watchdogOf(m.proc.pid!)!, 'SIGKILL');
  m.proc.kill('SIGKILL');
  await exitOf(m.proc);
  await new Promise((r) => setTimeout(r, 200));
  t.ok(mountAt(m.mnt), 'the dead mount is still there');
  t.throws(() => statSync(m.mnt), { code: 'ENOTCONN' }, 'and wedged');
  const again = spawn(process.execPath, [passthroughBin, m.src, m.mnt], { stdio: 'ignore' });
  t.teardown(() => {
    if (again.exitCode === null) again.kill('SIGTERM');
    return exitOf(again);
  });
  await waitFor(() => {
    try {
      statSync(join(m.mnt, '.'));
      return mountAt(m.mnt)?.fstype === 'fuse.dunixfs-passthrough';
    } catch {
      return false;
    }
  }, 'the new server to replace the dead mount');
  t.pass('new server mounted over the cleared mount point');
});

t.test('a busy mount is detached lazily and served until its last user leaves', async (t) => {
  const m = await mountPassthrough(t);
  const holder = spawn('sleep', ['30'], { cwd: m.mnt, stdio: 'ignore' });
  t.teardown(() => {
    if (holder.exitCode === null) holder.kill('SIGKILL');
  });
  await new Promise((r) => setTimeout(r, 200));
  m.proc.kill('SIGTERM');
  await waitFor(() => mountAt(m.mnt) === undefined, 'the mount to leave the namespace');
  await new Promise((r) => setTimeout(r, 300));
  t.equal(m.proc.exitCode, null, 'server still serves the process inside');
  holder.kill('SIGKILL');
  const r = await exitOf(m.proc);
  t.equal(r.code, 0, 'server exits once the last user is gone');
});
