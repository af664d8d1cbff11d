/**
 * dunixfs across "hosts": network namespaces on a private bridge (its own
 * namespace; test/src/netns.ts), etcd on h0, a brick on each of h1..h3 (the
 * documented fixed ports 7101 and 8101, mutual TLS, --host labels), the
 * client on h4. Nothing listens on or dials the machine's own interfaces:
 * every address is 10.213.0.x inside the namespaces. The mount lives in the
 * client's mount namespace (`ip netns exec` makes one); the test reaches it
 * through /proc/PID/root. tar, git and cc run on it; then a brick host's
 * link goes down under a writer that checks every acknowledged record, and
 * comes back: the brick heals (every PG back to three in-sync copies).
 *
 * Skipped (counted) where network namespaces cannot be made (not root).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { certDir, initCa, issueCert } from '@dunix/coord/ca';
import { brickdNodeFlags } from '@dunix/proto';
import { bins, ok, run, waitUntil } from '../src/cluster.js';
import { createNetLab, netnsUnavailable, type NetHost } from '../src/netns.js';
import { reap } from '../src/reaper.js';
import { checkRecords, errorSummary, startRecordWriter } from '../src/record-writer.js';

const VOLUME = 'vol';
const ETCD_PORT = 2379;
const RECORD_BYTES = 64 * 1024;

interface Proc {
  name: string;
  child: ChildProcess;
  log: string;
  exit: Promise<void>;
  done: boolean;
}

const tail = (file: string, lines = 30) => {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
};

const why = netnsUnavailable();
t.test('three brick hosts, a client host and etcd on a private bridge', { skip: why }, async (t) => {
  const startedAt = Date.now();
  const phase = (what: string) => t.comment(`${what} at ${((Date.now() - startedAt) / 1000).toFixed(1)} s`);
  const base = mkdtempSync(join(tmpdir(), 'dunix-netns-'));
  reap.add({ kind: 'dir', path: base });
  spawnSync('chmod', ['0755', base]);
  const lab = createNetLab(5);
  const [etcdHost, ...rest] = lab.hosts as [NetHost, ...NetHost[]];
  const brickHosts = rest.slice(0, 3);
  const clientHost = rest[3]!;
  const procs: Proc[] = [];
  const mnt = join(base, 'mnt');
  mkdirSync(mnt);

  const start = (name: string, host: NetHost, cmd: string, args: string[]): Proc => {
    const log = join(base, `${name}.log`);
    const fd = openSync(log, 'a');
    const [c, a] = host.exec(cmd, args);
    let child: ChildProcess;
    try {
      // ip netns exec execs the program: this pid is the daemon's.
      child = spawn(c, a, { stdio: ['ignore', fd, fd], env: { ...process.env, DUNIX_LOG: 'info' } });
    } finally {
      closeSync(fd);
    }
    const p: Proc = {
      name,
      child,
      log,
      done: false,
      exit: new Promise((res) => {
        child.once('exit', () => {
          p.done = true;
          res();
        });
        child.once('error', () => {
          p.done = true;
          res();
        });
      }),
    };
    if (child.pid) reap.add({ kind: 'pid', pid: child.pid, marker: base });
    procs.push(p);
    return p;
  };
  const stop = async (p: Proc) => {
    if (p.done) return;
    p.child.kill('SIGTERM');
    const timer = setTimeout(() => p.child.kill('SIGKILL'), 10_000);
    await p.exit;
    clearTimeout(timer);
    if (p.child.pid) reap.remove({ kind: 'pid', pid: p.child.pid, marker: base });
  };
  t.teardown(async () => {
    if (!t.passing())
      for (const p of procs) process.stderr.write(`\n---- ${p.name} (${p.log})\n${tail(p.log)}\n`);
    // The mount first (it lives in the client's mount namespace), then every process, then the namespaces.
    const client = procs.find((p) => p.name === 'client');
    if (client && !client.done)
      spawnSync('nsenter', ['-t', String(client.child.pid), '-m', 'umount', '-l', mnt], { timeout: 10_000 });
    for (const p of [...procs].reverse()) await stop(p);
    lab.destroy();
    rmSync(base, { recursive: true, force: true });
    reap.remove({ kind: 'dir', path: base });
  });

  // ---- certificates: each brick's names its host's address
  const ca = join(base, 'ca');
  await initCa(ca);
  for (const [i, h] of brickHosts.entries())
    await issueCert(ca, { role: 'brick', name: `b${i + 1}`, sans: [h.address, h.address6] });
  // The third brick listens on (and advertises) an IPv6 literal.
  const listenOf = (i: number) => (i === 2 ? `[${brickHosts[i]!.address6}]` : brickHosts[i]!.address);
  await issueCert(ca, { role: 'client', name: 'client' });
  // etcd with TLS and client certificates: plain HTTP to a non-loopback address is refused.
  const etcdTls = (await issueCert(ca, { role: 'etcd', name: 'e0', sans: [etcdHost.address] })).dir;
  const clientTls = certDir(ca, 'client', 'client');

  // ---- etcd on h0
  const etcdUrl = `https://${etcdHost.address}:${ETCD_PORT}`;
  start('etcd', etcdHost, '/usr/bin/etcd', [
    '--name=e0',
    `--data-dir=${join(base, 'etcd')}`,
    `--listen-client-urls=${etcdUrl}`,
    `--advertise-client-urls=${etcdUrl}`,
    '--listen-peer-urls=http://127.0.0.1:2380',
    '--initial-advertise-peer-urls=http://127.0.0.1:2380',
    '--initial-cluster=e0=http://127.0.0.1:2380',
    '--initial-cluster-state=new',
    '--max-txn-ops=1024',
    `--cert-file=${join(etcdTls, 'tls.crt')}`,
    `--key-file=${join(etcdTls, 'tls.key')}`,
    `--trusted-ca-file=${join(etcdTls, 'ca.crt')}`,
    '--client-cert-auth',
    '--log-level=warn',
  ]);
  const ctl = (args: string[]) => {
    const [c, a] = clientHost.exec(process.execPath, [
      bins.dunixctl,
      '--etcd',
      etcdUrl,
      '--tls-dir',
      clientTls,
      ...args,
    ]);
    return run(c, a, { timeoutMs: 60_000 });
  };

  // ---- bricks on h1..h3, on the default ports (each host has its own)
  for (const [i, h] of brickHosts.entries()) {
    const dir = join(base, `b${i + 1}`);
    mkdirSync(dir);
    start(`brick${i + 1}`, h, process.execPath, [
      ...brickdNodeFlags,
      bins.brickd,
      '--data',
      dir,
      '--listen',
      listenOf(i),
      '--port-file',
      join(dir, 'ports.json'),
      '--etcd',
      etcdUrl,
      '--volume',
      VOLUME,
      '--host',
      `rack-${i + 1}`,
      '--tls-dir',
      certDir(ca, 'brick', `b${i + 1}`),
      '--lease-ttl-ms',
      '2000',
    ]);
  }
  const ports = await Promise.all(
    brickHosts.map(async (_h, i) => {
      const file = join(base, `b${i + 1}`, 'ports.json');
      let r: { address: string; dataAddress: string } | undefined;
      await waitUntil(
        () => {
          if (procs.some((p) => p.done)) throw new Error('a process exited');
          try {
            r = JSON.parse(readFileSync(file, 'utf8')) as typeof r;
          } catch {
            /* not yet */
          }
          return !!r;
        },
        `brick${i + 1} to listen`,
        60_000,
        100,
      );
      return r!;
    }),
  );
  t.same(
    ports.map((p) => [p.address, p.dataAddress]),
    brickHosts.map((_h, i) => [`${listenOf(i)}:7101`, `${listenOf(i)}:8101`]),
    'each brick advertises its host address on the fixed ports 7101 (gRPC) and 8101 (data), brick3 a bracketed IPv6 one',
  );

  // The volume once all three registered (create refuses 3 replicas over fewer bricks).
  await waitUntil(
    () => ctl(['volume', 'create', VOLUME, '--pgs', '16', '--replicas', '3']).status === 0,
    'volume create',
    60_000,
    500,
  );
  const status = () => {
    const r = ctl(['--json', 'volume', 'status', VOLUME]);
    return JSON.parse(r.stdout || '{}') as {
      bricks?: { alive: boolean }[];
      pgsDegraded?: number[];
    };
  };
  await waitUntil(
    () => {
      const s = status();
      return s.bricks?.filter((b) => b.alive).length === 3 && s.pgsDegraded?.length === 0;
    },
    'three live bricks, no PG degraded',
    60_000,
    500,
  );

  phase('etcd and three bricks serving');
  // ---- the client on h4; its mount is seen through its root
  const client = start('client', clientHost, process.execPath, [
    bins.dunixfs,
    `${etcdHost.address}:${ETCD_PORT}/${VOLUME}`,
    mnt,
    '-o',
    `tls_dir=${clientTls}`,
  ]);
  const pid = client.child.pid!;
  const root = `/proc/${pid}/root${mnt}`;
  await waitUntil(
    () => {
      if (client.done) throw new Error(`dunixfs exited:\n${tail(client.log)}`);
      try {
        return readFileSync(`/proc/${pid}/mountinfo`, 'utf8').includes(` ${mnt} `);
      } catch {
        return false;
      }
    },
    'the mount on the client host',
    60_000,
    100,
  );
  const rootNet = readlinkSync('/proc/self/ns/net');
  t.same(
    procs.filter((p) => readlinkSync(`/proc/${p.child.pid}/ns/net`) === rootNet).map((p) => p.name),
    [],
    "no process of the cluster is in the machine's network namespace",
  );
  t.notOk(
    readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${mnt} `),
    'the mount exists only in the client host namespace',
  );

  phase('mounted');
  // ---- tar: a few hundred files, compared with a local extraction
  const local = join(base, 'local');
  mkdirSync(local);
  const members = [
    'include/linux/netfilter',
    'include/linux/usb',
    'include/asm-generic',
    'include/arpa',
    'include/netinet',
    'include/sound',
    'include/rdma',
  ].filter((m) => existsSync(join('/usr', m)));
  const archive = join(base, 'src.tar');
  ok('tar', ['-C', '/usr', '-cf', archive, ...members]);
  ok('tar', ['-C', local, '-xf', archive]);
  mkdirSync(join(root, 'tar'));
  ok('tar', ['-C', join(root, 'tar'), '-xf', archive], { timeoutMs: 120_000 });
  const files = ok('find', [local, '-type', 'f']).trim().split('\n').length;
  const diff = run('diff', ['-r', '--no-dereference', local, join(root, 'tar')]);
  t.equal(diff.status, 0, `tar: ${files} files extracted onto the mount match ${diff.stdout.slice(0, 500)}`);

  phase('tar checked');
  // ---- git and cc look at their working directory's path: they run in the client's mount namespace
  const inMount = (cwd: string, cmd: string, args: string[]): [string, string[]] => [
    'nsenter',
    // (nsenter --wd opens the directory before it enters the namespace)
    ['-t', String(pid), '-m', 'sh', '-c', 'cd "$0" && exec "$@"', cwd, cmd, ...args],
  ];
  const repo = join(mnt, 'repo');
  mkdirSync(join(root, 'repo'));
  const env = { ...process.env, GIT_CONFIG_NOSYSTEM: '1', HOME: base };
  const git = (...args: string[]) =>
    ok(...inMount(repo, 'git', ['-c', 'user.name=Dunix', '-c', 'user.email=t@dunix.invalid', ...args]), {
      env,
    });
  git('init', '-q', '-b', 'main');
  writeFileSync(join(root, 'repo', 'a.txt'), 'one\n');
  writeFileSync(join(root, 'repo', 'b.bin'), Buffer.alloc(300_000, 5));
  git('add', '-A');
  git('commit', '-q', '-m', 'first');
  git('mv', 'a.txt', 'c.txt');
  git('commit', '-q', '-m', 'second');
  t.equal(git('log', '--format=%s').trim(), 'second\nfirst', 'git: both commits');
  t.equal(git('status', '--porcelain'), '', 'git: clean work tree');
  t.equal(run(...inMount(repo, 'git', ['fsck', '--full']), { env }).status, 0, 'git: fsck --full passes');

  // ---- cc: compile, link and run a program from the mount
  const proj = join(mnt, 'proj');
  mkdirSync(join(root, 'proj'));
  writeFileSync(
    join(root, 'proj', 'main.c'),
    '#include <stdio.h>\nint main(void) { puts("hi from the hosts"); return 3; }\n',
  );
  ok(...inMount(proj, 'cc', ['-O2', '-Wall', '-Werror', 'main.c', '-o', 'hello']));
  const hello = run(...inMount(proj, './hello', []));
  t.equal(hello.status, 3, 'cc: the program ran from the mount');
  t.equal(hello.stdout, 'hi from the hosts\n');

  phase('git and cc checked');
  // ---- a brick host's link down under a writer, then back
  const cut = brickHosts[0]!;
  const writer = startRecordWriter({
    file: join(root, 'records.bin'),
    log: join(base, 'writer.log'),
    stopFile: join(base, 'writer.stop'),
    recordBytes: RECORD_BYTES,
    fsyncEvery: 4,
    maxRecords: 100_000,
    maxMs: 120_000,
    errorSleepMs: 200,
  });
  t.teardown(() => writer.stop(5000).then(() => {}));
  await writer.waitForAcked(16, 60_000);
  const before = writer.progress().acked;
  cut.link(false);
  t.comment(`link of ${cut.ns} (${cut.address}) down at record ${before}`);
  // Writes go on with two bricks once the cut one is dropped (lease 2 s, replicate timeout 2 s).
  await writer.waitForAcked(before + 32, 60_000);
  await waitUntil(
    () => {
      const s = status();
      return s.bricks?.filter((b) => b.alive).length === 2;
    },
    'the cut brick seen dead',
    30_000,
    500,
  );
  const during = writer.progress().acked;
  cut.link(true);
  t.comment(`link up again at record ${during}`);
  await writer.waitForAcked(during + 16, 60_000);
  const end = await writer.stop(60_000);
  t.notOk(end.hung, 'the writer finished (no hang)');
  t.comment(
    `writer: ${end.acked} records acknowledged, longest pause ${end.maxPauseMs.toFixed(0)} ms, errors ${errorSummary(end.errors)}`,
  );
  const data = readFileSync(join(root, 'records.bin'));
  const check = checkRecords(data, RECORD_BYTES, end.acked);
  t.equal(check.lost, 0, `every acknowledged record is intact ${check.lostSample.join('; ')}`);
  t.equal(check.bad, 0, `no slot holds bytes no write put there ${check.badSample.join('; ')}`);

  // The brick rejoins and catches up: every PG back to three in-sync copies.
  await waitUntil(
    () => {
      const s = status();
      return s.bricks?.filter((b) => b.alive).length === 3 && s.pgsDegraded?.length === 0;
    },
    'the cut brick back and every PG healed',
    60_000,
    500,
  );
  t.pass('the brick healed: three live bricks, no PG degraded');
  phase('healed');
  // The file read back after healing equals what was there (and the writer's records).
  t.ok(readFileSync(join(root, 'records.bin')).equals(data), 'the file reads the same after healing');
});
