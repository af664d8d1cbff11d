import t from 'tap';
import { X509Certificate } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadTlsDir, TLS_FILES } from '@dunix/proto';
import { certDir, initCa, issueCert, LOOPBACK_SANS } from '../src/ca.js';
import { run } from '../src/index.js';

/**
 * The cluster CA and the certificates it issues: files and modes, validity,
 * the role and policy a TLS directory yields, what loadTlsDir refuses, and
 * the dunixctl commands.
 */

function scratch(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'dunix-ca-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const modeOf = (p: string) => statSync(p).mode & 0o777;
const DAY_MS = 86_400_000;

t.test('ca init: a CA certificate and a 0600 key; never replaced by accident', async (t) => {
  const dir = join(scratch(t), 'ca');
  const info = await initCa(dir, { days: 30 });
  t.equal(modeOf(info.key), 0o600, 'ca.key 0600');
  t.equal(modeOf(info.cert), 0o644, 'ca.crt 0644');
  const x = new X509Certificate(readFileSync(info.cert));
  t.ok(x.ca, 'basicConstraints CA');
  t.ok(x.checkIssued(x) && x.verify(x.publicKey), 'self-signed');
  t.equal(x.subject, 'O=dunix\nCN=dunix cluster CA');
  const days = (Date.parse(x.validTo) - Date.now()) / DAY_MS;
  t.ok(days > 29.9 && days <= 30, `valid for 30 days (${days.toFixed(2)})`);
  t.ok(Date.parse(x.validFrom) <= Date.now(), 'valid now');
  await t.rejects(initCa(dir), /a CA already exists/, 'a second init is refused');
  const again = await initCa(dir, { force: true });
  t.not(again.fingerprint256, info.fingerprint256, '--force makes a new CA');
  await t.rejects(issueCert(join(dir, 'nowhere'), { role: 'brick', name: 'b' }), /no CA in/);
});

t.test('cert issue: brick and client certificates, their roles and policies', async (t) => {
  const dir = scratch(t);
  await initCa(dir);
  const ca = new X509Certificate(readFileSync(join(dir, 'ca.crt')));
  const b = await issueCert(dir, {
    role: 'brick',
    name: 'b1',
    sans: ['host1.example', '192.0.2.7'],
    days: 10,
  });
  t.equal(b.dir, certDir(dir, 'brick', 'b1'));
  t.equal(b.dir, join(dir, 'bricks', 'b1'));
  t.equal(modeOf(join(b.dir, TLS_FILES.key)), 0o600, 'tls.key 0600');
  t.equal(modeOf(join(b.dir, TLS_FILES.cert)), 0o644);
  t.equal(
    readFileSync(join(b.dir, TLS_FILES.ca), 'utf8'),
    readFileSync(join(dir, 'ca.crt'), 'utf8'),
    'ca.crt copied',
  );
  const bx = new X509Certificate(readFileSync(join(b.dir, TLS_FILES.cert)));
  t.ok(bx.checkIssued(ca) && bx.verify(ca.publicKey), 'signed by the CA');
  t.notOk(bx.ca, 'not a CA');
  t.equal(bx.subject, 'O=dunix\nOU=brick\nCN=brick:b1', "the CN is the kind and the name (etcd's user)");
  for (const h of [...LOOPBACK_SANS, 'host1.example', '192.0.2.7'])
    t.ok(bx.checkHost(h) ?? bx.checkIP(h), `valid for ${h}`);
  const days = (Date.parse(bx.validTo) - Date.now()) / DAY_MS;
  t.ok(days > 9.9 && days <= 10, `valid for 10 days (${days.toFixed(2)})`);
  const brick = await loadTlsDir(b.dir, 'brick');
  t.same(brick.self, {
    kind: 'certificate',
    role: 'brick',
    name: 'brick:b1',
    policy: { squashRoot: false, uidRange: undefined },
  });

  const c = await issueCert(dir, {
    role: 'client',
    name: 'web-1',
    policy: { squashRoot: true, uidRange: { from: 1000, to: 1999 } },
  });
  t.equal(c.dir, join(dir, 'clients', 'web-1'));
  const client = await loadTlsDir(c.dir, 'client');
  t.same(client.self, {
    kind: 'certificate',
    role: 'client',
    name: 'client:web-1',
    policy: { squashRoot: true, uidRange: { from: 1000, to: 1999 } },
  });
  t.not(client.self.name, brick.self.name);
  const cx = new X509Certificate(readFileSync(join(c.dir, TLS_FILES.cert)));
  t.notOk(cx.checkIP('127.0.0.1'), 'a client certificate names no address');
  t.equal(cx.subject, 'O=dunix\nOU=client\nCN=client:web-1');

  // An admin (dunixctl) is a client to the bricks; its CN makes it another etcd user.
  const a = await issueCert(dir, { role: 'admin', name: 'b1' });
  t.equal(a.dir, join(dir, 'admins', 'b1'));
  t.equal(a.subject, 'O=dunix, OU=client, CN=admin:b1');
  const admin = await loadTlsDir(a.dir, 'client');
  t.same([admin.self.kind, admin.self.name], ['certificate', 'admin:b1']);
  await t.rejects(
    issueCert(dir, { role: 'admin', name: 'a2', policy: { squashRoot: true, uidRange: undefined } }),
    /client policies/,
  );

  await t.rejects(issueCert(dir, { role: 'brick', name: 'b1' }), /exists.*--force/, 'no silent replacement');
  t.not(
    (await issueCert(dir, { role: 'brick', name: 'b1', force: true })).serial,
    b.serial,
    '--force replaces',
  );
  await t.rejects(
    issueCert(dir, { role: 'brick', name: 'b2', policy: { squashRoot: true, uidRange: undefined } }),
    /client policies/,
  );
  await t.rejects(issueCert(dir, { role: 'client', name: 'c2', sans: ['h'] }), /--san is for brick/);
  for (const bad of ['', '../x', 'a/b', 'x'.repeat(64), '-a'])
    await t.rejects(
      issueCert(dir, { role: 'client', name: bad }),
      /letters, digits/,
      `name ${JSON.stringify(bad)}`,
    );
  await t.rejects(issueCert(dir, { role: 'brick', name: 'b3', sans: ['bad host'] }), /neither a host name/);
});

t.test('loadTlsDir refuses a wrong role, a readable key, another CA, missing files', async (t) => {
  const dir = scratch(t);
  await initCa(join(dir, 'a'));
  await initCa(join(dir, 'b'));
  const c = await issueCert(join(dir, 'a'), { role: 'client', name: 'c' });
  await t.rejects(loadTlsDir(c.dir, 'brick'), /is a client certificate; this needs a brick certificate/);
  chmodSync(join(c.dir, TLS_FILES.key), 0o644);
  await t.rejects(loadTlsDir(c.dir), /mode 0644.*chmod 600/);
  chmodSync(join(c.dir, TLS_FILES.key), 0o600);
  const other = await issueCert(join(dir, 'b'), { role: 'client', name: 'c' });
  // A certificate of CA b with CA a's ca.crt.
  const mixed = join(dir, 'mixed');
  mkdirSync(mixed);
  copyFileSync(join(c.dir, TLS_FILES.ca), join(mixed, TLS_FILES.ca));
  copyFileSync(join(other.dir, TLS_FILES.cert), join(mixed, TLS_FILES.cert));
  copyFileSync(join(other.dir, TLS_FILES.key), join(mixed, TLS_FILES.key));
  await t.rejects(loadTlsDir(mixed), /was not issued by ca.crt/);
  // The three files are read at once: whichever is missing first is named.
  await t.rejects(loadTlsDir(join(dir, 'none')), /cannot read (ca\.crt|tls\.crt|tls\.key)/);
});

t.test('dunixctl ca init and cert issue (no etcd)', async (t) => {
  const dir = join(scratch(t), 'etc');
  const cli = async (argv: string[]) => {
    let stdout = '';
    let stderr = '';
    const code = await run(argv, {
      stdout: (s) => (stdout += s),
      stderr: (s) => (stderr += s),
      connect: () => {
        throw new Error('no etcd for certificates');
      },
    });
    return { code, stdout, stderr };
  };
  let r = await cli(['ca', 'init', '--dir', dir]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /cluster CA created in .*ca\.key \(mode 0600/);
  r = await cli(['ca', 'init', '--dir', dir]);
  t.equal(r.code, 1);
  t.match(r.stderr, /^dunixctl: a CA already exists/);
  r = await cli([
    '--json',
    'cert',
    'issue',
    '--dir',
    dir,
    '--client',
    'c1',
    '--squash-root',
    '--uid-range',
    '10-20',
  ]);
  t.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { dir: string; role: string; subjectAltName: string };
  t.equal(out.role, 'client');
  t.match(out.subjectAltName, /squash-root.*uid-range:10-20/);
  t.equal(modeOf(join(out.dir, 'tls.key')), 0o600);
  r = await cli(['cert', 'issue', '--dir', dir, '--brick', 'b1', '--san', 'node1']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /brick certificate b1 issued .*\n.*DNS:node1/);
  t.match(r.stdout, /use: brickd --tls-dir /);
  r = await cli(['cert', 'issue', '--dir', dir, '--brick', 'b2', '--client', 'c2']);
  t.equal(r.code, 1);
  t.match(r.stderr, /one of --brick NAME, --client NAME, --admin NAME or --etcd-server NAME/);
  r = await cli(['cert', 'issue', '--dir', dir, '--client', 'c3', '--uid-range', '20-10']);
  t.equal(r.code, 1);
  t.match(r.stderr, /uid range/);
});
