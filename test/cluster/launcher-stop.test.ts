/**
 * The local launcher (deploy/local-cluster.mjs) on a throwaway cluster: its
 * own state dir and mount point, any free ports (DUNIX_ETCD_PORT=0,
 * DUNIX_BRICK_PORT=0), no installs or build. After `stop` no process it
 * recorded runs, the mount is gone and nothing of the cluster holds
 * /dev/fuse: once after a clean unmount, once while a process keeps a file
 * open on the mount (the lazy unmount that once left a client running for
 * good).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { brickdNodeFlags } from '@dunix/proto';
import { mountsAt, run, waitUntil } from '../src/cluster.js';

const repo = resolve(fileURLToPath(new URL('../../..', import.meta.url)));
const launcher = join(repo, 'deploy/local-cluster.mjs');
/** One start or stop, with room for a slow machine (a start takes ~3 s here, a stop up to ~12 s). */
const LAUNCH_TIMEOUT_MS = 120_000;
/** The client's mount watchdog exits right after the client: let it. */
const LINGER_MS = 5_000;

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}

function numericDirs(dir: string): number[] {
  return readdirSync(dir)
    .filter((d) => /^\d+$/.test(d))
    .map(Number);
}

/** Processes whose command line mentions any of the markers. */
function processesMentioning(markers: string[]): string[] {
  return numericDirs('/proc')
    .filter((pid) => pid !== process.pid)
    .map((pid) => ({ pid, cmd: cmdline(pid) }))
    .filter((p) => markers.some((m) => p.cmd.includes(m)))
    .map((p) => `${p.pid}: ${p.cmd}`);
}

/** Processes with /dev/fuse open whose command line mentions any of the markers. */
function fuseHolders(markers: string[]): string[] {
  const out: string[] = [];
  for (const pid of numericDirs('/proc')) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    const holds = fds.some((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`) === '/dev/fuse';
      } catch {
        return false;
      }
    });
    const cmd = cmdline(pid);
    if (holds && markers.some((m) => cmd.includes(m))) out.push(`${pid}: ${cmd}`);
  }
  return out;
}

t.test('local-cluster.mjs stop leaves nothing of the cluster running', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'dunix-launcher-'));
  const state = join(base, 'state');
  const mnt = join(base, 'mnt');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DUNIX_STATE: state,
    DUNIX_MOUNT: mnt,
    DUNIX_VOLUME: 'launcher',
    DUNIX_ETCD_PORT: '0',
    DUNIX_BRICK_PORT: '0',
    DUNIX_PGS: '16',
    DUNIX_NO_INSTALL: '1',
    DUNIX_NO_BUILD: '1',
  };
  delete env.DUNIX_ETCD_PEER_PORT;
  delete env.DUNIX_FAULTS;
  const launch = (cmd: 'start' | 'stop') =>
    run(process.execPath, [launcher, cmd], { env, cwd: base, timeoutMs: LAUNCH_TIMEOUT_MS });
  /** Every process the launcher recorded, with what its command line must mention (pids get reused). */
  const seen = new Map<number, string>();
  const record = () => {
    const runDir = join(state, 'run');
    const marker = (file: string) =>
      file === 'etcd.pid'
        ? join(state, 'etcd')
        : file === 'client.pid'
          ? mnt
          : join(state, 'bricks', file.replace(/^brick-|\.pid$/g, ''));
    const now: { file: string; pid: number }[] = [];
    for (const file of readdirSync(runDir).filter((f) => f.endsWith('.pid'))) {
      const pid = Number(readFileSync(join(runDir, file), 'utf8').trim());
      seen.set(pid, marker(file));
      now.push({ file, pid });
    }
    return now;
  };
  const stillRunning = () => [...seen].filter(([pid, marker]) => cmdline(pid).includes(marker));
  let holder: ChildProcess | undefined;

  t.teardown(async () => {
    if (holder && holder.exitCode === null && holder.signalCode === null) holder.kill('SIGKILL');
    if (stillRunning().length > 0 || mountsAt(mnt).length > 0) launch('stop');
    for (const [pid] of stillRunning()) process.kill(pid, 'SIGKILL');
    if (mountsAt(mnt).length > 0) run('umount', ['-l', mnt]);
    if (mountsAt(mnt).length === 0) rmSync(base, { recursive: true, force: true });
  });

  const assertNothingLeft = async (t: Test) => {
    t.strictSame(
      stillRunning().map(([pid, marker]) => `${pid} (${marker})`),
      [],
      'no process the launcher recorded is alive',
    );
    t.strictSame(mountsAt(mnt), [], 'the mount is gone');
    t.strictSame(fuseHolders([mnt, state]), [], 'nothing of the cluster holds /dev/fuse');
    await waitUntil(
      () => processesMentioning([mnt, state]).length === 0,
      'no process of the cluster',
      LINGER_MS,
    )
      .then(() => t.pass('no process mentions the state dir or the mount point'))
      .catch(() => t.strictSame(processesMentioning([mnt, state]), [], 'no process of the cluster'));
  };

  const startCluster = (t: Test) => {
    const r = launch('start');
    t.equal(r.status, 0, 'start exits 0');
    if (r.status !== 0) t.comment(`${r.stdout}\n${r.stderr}`);
    const pids = record();
    t.strictSame(
      pids.map((p) => p.file).sort(),
      ['brick-b1.pid', 'brick-b2.pid', 'brick-b3.pid', 'client.pid', 'etcd.pid'],
      'etcd, three bricks and the client recorded',
    );
    t.ok(
      pids.every((p) => cmdline(p.pid).includes(seen.get(p.pid)!)),
      'every recorded process runs',
    );
    for (const p of pids.filter((p) => p.file.startsWith('brick-')))
      for (const flag of brickdNodeFlags)
        t.ok(cmdline(p.pid).includes(flag), `${p.file.replace(/\.pid$/, '')} runs with ${flag}`);
    return r.status === 0;
  };

  await t.test('a clean stop', async (t) => {
    if (!startCluster(t)) return;
    writeFileSync(join(mnt, 'kept'), 'written before stop\n');
    t.equal(readFileSync(join(mnt, 'kept'), 'utf8'), 'written before stop\n', 'a file on the mount');
    const r = launch('stop');
    t.equal(r.status, 0, `stop exits 0 ${r.stderr}`);
    t.match(r.stdout, /client: exited/, 'the client ended by itself after the unmount');
    await assertNothingLeft(t);
  });

  await t.test('a stop while a process holds a file open on the mount', async (t) => {
    if (!startCluster(t)) return;
    t.equal(
      readFileSync(join(mnt, 'kept'), 'utf8'),
      'written before stop\n',
      'the file survived the restart',
    );
    // The file's path is in the environment, not the command line: the holder is not of the cluster.
    holder = spawn('sh', ['-c', 'exec 3<"$HOLD"; exec sleep 600'], {
      env: { ...process.env, HOLD: join(mnt, 'kept') },
      stdio: 'ignore',
    });
    const h = holder;
    await waitUntil(() => {
      try {
        return readlinkSync(`/proc/${h.pid}/fd/3`).endsWith('kept');
      } catch {
        return false;
      }
    }, 'the holder to open the file');
    const t0 = Date.now();
    const r = launch('stop');
    t.equal(r.status, 0, `stop exits 0 ${r.stderr}`);
    t.match(r.stdout, /lazily unmounted/, 'the busy mount was detached lazily');
    t.match(r.stdout, /client: stopped/, 'the client ended on SIGTERM (no SIGKILL needed)');
    t.comment(`stop took ${Date.now() - t0} ms`);
    await assertNothingLeft(t);
    t.ok(h.exitCode === null && h.signalCode === null, 'the holder itself was left alone');
    t.throws(
      () => readFileSync(`/proc/${h.pid}/fd/3`),
      { code: 'ENOTCONN' },
      'its file now fails, not hangs',
    );
  });
});
