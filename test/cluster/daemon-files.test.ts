/**
 * Files and processes like a real daemon: every bin answers --help and
 * --version; `scripts/install-system.sh --prefix DIR` installs bins, mount
 * helpers and units that run from DIR, not from this checkout; a brick's
 * state dir is 0700 and what it writes 0600; brickd --config reads its
 * options from a file; a brick's and a mount's log file is reopened on
 * SIGHUP (logrotate) and SIGUSR2 switches debug logs on and off.
 */
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { brickdNodeFlags } from '@dunix/proto';
import { bins, startCluster, waitUntil } from '../src/cluster.js';

const repo = resolve(fileURLToPath(new URL('../../..', import.meta.url)));
const version = (
  JSON.parse(readFileSync(join(repo, 'packages/proto/package.json'), 'utf8')) as { version: string }
).version;

const allBins: [string, string][] = [
  ['brickd', bins.brickd],
  ['dunixctl', bins.dunixctl],
  ['dunixfs', bins.dunixfs],
  ['mount.dunixfs', join(repo, 'packages/mount/dist/src/bin/mount-helper.cjs')],
  ['dunixfs-passthrough', join(repo, 'packages/mount/dist/src/bin/dunixfs-passthrough.cjs')],
];

const run = (cmd: string, args: string[]) =>
  spawnSync(cmd, args, { encoding: 'utf8', timeout: 30_000, env: { ...process.env, DUNIX_LOG: 'info' } });

const mode = (path: string) => statSync(path).mode & 0o777;

/** Every file and directory below `dir`. */
function walk(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    out.push(p);
    if (e.isDirectory()) out.push(...walk(p));
  }
  return out;
}

t.test('every bin has --help and --version', async (t) => {
  for (const [name, file] of allBins) {
    const v = run(process.execPath, [file, '--version']);
    t.equal(v.status, 0, `${name} --version exits 0`);
    t.equal(v.stdout.trim(), `${name} ${version}`, `${name} --version prints its name and version`);
    const h = run(process.execPath, [file, '--help']);
    t.equal(h.status, 0, `${name} --help exits 0`);
    t.match(h.stdout, new RegExp(`^usage: ${name.replace('.', '\\.')} `, 'i'), `${name} --help prints usage`);
  }
});

t.test('brickd refuses a bad command line or config file with exit 2 and says why', async (t) => {
  const bad = run(process.execPath, [
    bins.brickd,
    '--data',
    '/nonexistent',
    '--etcd',
    '127.0.0.1:1',
    '--volume',
    'v',
    '--bogus',
  ]);
  t.equal(bad.status, 2, 'an unknown option exits 2 (systemd does not restart it)');
  t.match(bad.stderr, /unknown option '--bogus'/);
  const dir = mkdtempSync(join(tmpdir(), 'dunix-badconf-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'b.conf'), 'data = /srv/x\nlisten 127.0.0.1:1\n');
  const conf = run(process.execPath, [bins.brickd, '--config', join(dir, 'b.conf')]);
  t.equal(conf.status, 2, 'so does a bad config file');
  t.match(conf.stderr, /b\.conf:2: expected "name = value"/, 'naming the file and the line');
});

t.test('install-system puts runnable bins and units under the prefix', async (t) => {
  const prefix = mkdtempSync(join(tmpdir(), 'dunix-install-'));
  t.teardown(() => rmSync(prefix, { recursive: true, force: true }));
  const r = run('bash', [join(repo, 'scripts/install-system.sh'), '--prefix', prefix]);
  t.equal(r.status, 0, `install-system exits 0 ${r.stderr}`);
  for (const bin of [
    'bin/brickd',
    'bin/dunixctl',
    'bin/dunixfs',
    'bin/dunixfs-passthrough',
    'sbin/mount.dunixfs',
  ]) {
    const v = run(join(prefix, bin), ['--version']);
    t.equal(v.status, 0, `${bin} --version runs from the prefix`);
    t.match(v.stdout, version);
  }
  // Nothing installed points into the checkout: it may be deleted or moved.
  const texts = [
    ...walk(join(prefix, 'bin')),
    ...walk(join(prefix, 'sbin')),
    ...walk(join(prefix, 'lib/systemd')),
  ];
  for (const f of texts.filter((p) => statSync(p).isFile()))
    t.notMatch(readFileSync(f, 'utf8'), repo, `${f} does not name the checkout`);
  t.ok(
    existsSync(join(prefix, 'lib/dunix/node_modules/@dunix/proto/proto/brick.proto')),
    'the bundle has brick.proto',
  );
  t.notOk(existsSync(join(prefix, 'lib/dunix/node_modules/tap')), 'and no dev dependency');
  // The installed brickd runs with the bricks' Node options (the heap's growth, node-flags.ts).
  const wrapper = readFileSync(join(prefix, 'bin/brickd'), 'utf8');
  for (const flag of brickdNodeFlags) t.match(wrapper, ` ${flag} `, `bin/brickd passes ${flag}`);
  t.equal(mode(join(prefix, 'etc/dunix')), 0o700, 'the config dir is 0700');
  const unit = readFileSync(join(prefix, 'lib/systemd/system/brickd@.service'), 'utf8');
  t.match(unit, `ExecStart=${prefix}/bin/brickd --config ${prefix}/etc/dunix/brickd-%i.conf`);
  t.match(unit, /^Restart=on-failure$/m);
  if (spawnSync('systemd-analyze', ['--version']).status === 0) {
    const v = run('systemd-analyze', [
      'verify',
      join(prefix, 'lib/systemd/system/brickd@.service'),
      join(prefix, 'lib/systemd/system/dunixfs@.service'),
    ]);
    t.equal(v.status, 0, `systemd-analyze verify accepts the units ${v.stderr}`);
  } else t.comment('systemd-analyze not installed: units not verified');
});

t.test('brick files, --config, log files on SIGHUP, log level on SIGUSR2', async (t) => {
  const confDir = mkdtempSync(join(tmpdir(), 'dunix-conf-'));
  t.teardown(() => rmSync(confDir, { recursive: true, force: true }));
  const brickLog = join(confDir, 'brick.log');
  const conf = join(confDir, 'brickd.conf');
  // Options from a file: the log file and the level, with a comment and a flag.
  writeFileSync(conf, `# test brick\nlog-file = ${brickLog}\nlog-level = info\ninsecure\n`);
  const c = await startCluster(t, {
    bricks: 1,
    replicas: 1,
    pgs: 4,
    mount: false,
    brickArgs: () => ['--config', conf],
  });
  const clientLog = join(c.base, 'client-own.log');
  await c.mount(`log=${clientLog}`);
  writeFileSync(c.path('f'), Buffer.alloc(300_000, 1));
  writeFileSync(c.path('small'), 'x');
  const b = c.bricks[0]!;

  t.match(
    readFileSync(brickLog, 'utf8'),
    /"msg":"brick started"/,
    'brickd logs to the --log-file of its config',
  );
  t.equal(mode(brickLog), 0o600, 'the log file is 0600');
  t.equal(mode(b.dir), 0o700, 'the state dir is 0700 (made 0755 by the harness)');
  const files = walk(b.dir).filter((p) => statSync(p).isFile());
  t.ok(
    files.some((p) => p.includes('/blocks/')),
    'block files were written',
  );
  t.ok(
    files.some((p) => p.includes('/meta/')),
    'LevelDB files too',
  );
  for (const p of files) t.equal(mode(p), 0o600, `${p.slice(b.dir.length)} is 0600`);
  for (const p of walk(b.dir).filter((p) => statSync(p).isDirectory()))
    t.equal(mode(p), 0o700, `${p.slice(b.dir.length)}/ is 0700`);

  // logrotate: move the file away, SIGHUP, the next lines go to a new file at the old name.
  renameSync(brickLog, `${brickLog}.1`);
  process.kill(b.pid, 'SIGHUP');
  await waitUntil(
    () => existsSync(brickLog) && /log file reopened/.test(readFileSync(brickLog, 'utf8')),
    'reopen',
  );
  t.pass('brickd reopened its log file on SIGHUP');
  t.equal(mode(brickLog), 0o600, 'the new file is 0600 too');

  // SIGUSR2: debug on (its debug lines appear), SIGUSR2 again: back to info.
  process.kill(b.pid, 'SIGUSR2');
  await waitUntil(() => /"level":"debug"/.test(readFileSync(brickLog, 'utf8')), 'debug lines', 30_000);
  t.match(
    readFileSync(brickLog, 'utf8'),
    /log level changed \(SIGUSR2\)","logLevel":"debug"/,
    'the change is logged',
  );
  process.kill(b.pid, 'SIGUSR2');
  await waitUntil(() => /"logLevel":"info"/.test(readFileSync(brickLog, 'utf8')), 'level back');
  const backAt = readFileSync(brickLog, 'utf8').length;
  await new Promise((r) => setTimeout(r, 1500));
  t.notMatch(
    readFileSync(brickLog, 'utf8').slice(backAt),
    /"level":"debug"/,
    'no debug lines once back to info',
  );

  // The client's own log=FILE: 0600, reopened on SIGHUP as well.
  t.match(readFileSync(clientLog, 'utf8'), /"msg":"mounted"/, 'the client logs to log=FILE');
  t.equal(mode(clientLog), 0o600, 'the client log is 0600');
  renameSync(clientLog, `${clientLog}.1`);
  process.kill(c.mountPid, 'SIGHUP');
  await waitUntil(
    () => existsSync(clientLog) && /log file reopened/.test(readFileSync(clientLog, 'utf8')),
    'reopen',
  );
  t.pass('the client reopened its log file on SIGHUP');
  t.equal(readFileSync(c.path('small'), 'utf8'), 'x', 'the mount serves on');
});
