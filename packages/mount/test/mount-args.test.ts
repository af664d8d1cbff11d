import t from 'tap';
import { mountUsage, parseMountArgs, wantsHelp } from '../src/bin/mount-args.js';

/** Mount arguments as mount(8) and fstab pass them: defaults, options, bounds. */

const base = ['127.0.0.1:2379/vol', '/mnt/x'];

t.test('defaults', async (t) => {
  const a = parseMountArgs(base);
  t.match(a, {
    endpoints: ['127.0.0.1:2379'],
    volume: 'vol',
    mountpoint: '/mnt/x',
    attrTtlMs: 10_000,
    entryTtlMs: 10_000,
    failoverTimeoutMs: 60_000,
    readAheadKb: 32768,
    extra: '',
  });
});

t.test('etcd endpoints keep a given scheme; etcd certificate options', async (t) => {
  const a = parseMountArgs([
    'https://10.0.0.1:2379,10.0.0.2:2379/vol',
    '/mnt/x',
    '-o',
    'etcd_ca=/e/ca.crt,etcd_cert=/e/c.crt,etcd_key=/e/c.key',
  ]);
  t.same(a.endpoints, ['https://10.0.0.1:2379', '10.0.0.2:2379']);
  t.match(a, { etcdCa: '/e/ca.crt', etcdCert: '/e/c.crt', etcdKey: '/e/c.key' });
  t.throws(() => parseMountArgs(['ftp://h:1/vol', '/mnt/x']), /bad source/);
  t.throws(() => parseMountArgs(['h:99999/vol', '/mnt/x']), /bad etcd endpoint/);
});

t.test('failover_timeout_ms sets how long an op rides out a failover', async (t) => {
  t.equal(parseMountArgs([...base, '-o', 'failover_timeout_ms=15000']).failoverTimeoutMs, 15_000);
  t.equal(
    parseMountArgs([...base, '-o', 'noatime,failover_timeout_ms=1000,attr_ttl_ms=0']).failoverTimeoutMs,
    1000,
    'the smallest allowed, among other options',
  );
  t.equal(parseMountArgs([...base, '-ofailover_timeout_ms=86400000']).failoverTimeoutMs, 86_400_000);
  for (const bad of ['999', '0', '-1', '1.5', 'abc', '', '86400001']) {
    t.throws(
      () => parseMountArgs([...base, '-o', `failover_timeout_ms=${bad}`]),
      /failover_timeout_ms must be 1000\.\.86400000 ms/,
      `rejects ${JSON.stringify(bad)}`,
    );
  }
  t.throws(
    () => parseMountArgs([...base, '-o', 'failover_timeout_ms']),
    /unknown mount option/,
    'needs a value',
  );
});

t.test('other options keep their bounds; kernel options pass through', async (t) => {
  const a = parseMountArgs([...base, '-o', 'attr_ttl_ms=0,entry_ttl_ms=5,ro,_netdev', '-f']);
  t.match(a, { attrTtlMs: 0, entryTtlMs: 5, foreground: true, extra: 'ro' });
  t.throws(() => parseMountArgs([...base, '-o', 'attr_ttl_ms=-1']), /attr_ttl_ms must be 0\.\.86400000/);
  t.throws(() => parseMountArgs([...base, '-o', 'bogus=1']), /unknown mount option/);
  t.equal(parseMountArgs(base).stataheadLookups, 3, 'statahead after 3 lookups by default');
  t.equal(parseMountArgs([...base, '-o', 'statahead_lookups=0']).stataheadLookups, 0, '0: off');
  for (const bad of ['-1', 'x', '', '1000001'])
    t.throws(
      () => parseMountArgs([...base, '-o', `statahead_lookups=${bad}`]),
      /statahead_lookups must be 0\.\.1000000/,
      bad,
    );
});

t.test('-t dunixfs and -t fuse.dunixfs (mount(8) passes the type of fstab); others refused', async (t) => {
  for (const type of ['dunixfs', 'fuse.dunixfs']) {
    t.match(parseMountArgs([...base, '-o', 'rw,noatime', '-t', type]), { volume: 'vol', extra: 'noatime' });
    t.match(parseMountArgs([...base, `-t${type}`]), { volume: 'vol' }, `-t${type} in one word`);
    t.match(parseMountArgs(['-t', type, ...base, '-s', '-n', '-v']), { mountpoint: '/mnt/x' }, 'type first');
  }
  t.throws(() => parseMountArgs([...base, '-t', 'ext4']), /unsupported filesystem type "ext4"/);
  t.throws(() => parseMountArgs([...base, '-t', 'fuse']), /unsupported filesystem type/);
  t.throws(() => parseMountArgs([...base, '-t']), /-t needs a filesystem type/);
});

t.test('--help and -h ask for the usage, which names every option', async (t) => {
  t.ok(wantsHelp(['--help']));
  t.ok(wantsHelp([...base, '-h']));
  t.notOk(wantsHelp(base));
  for (const prog of ['dunixfs', 'mount.dunixfs'] as const) {
    const u = mountUsage(prog);
    t.match(u, new RegExp(`^usage: ${prog.replace('.', '\\.')} `));
    for (const o of [
      'attr_ttl_ms',
      'failover_timeout_ms',
      'read_ahead_kb',
      'statahead_lookups',
      'log=FILE',
      'fuse.dunixfs',
      'noatime',
    ])
      t.match(u, o, `${prog} usage names ${o}`);
  }
});

t.test('session_ttl_ms sets the lease of the mount record (whole seconds, validated)', async (t) => {
  t.equal(parseMountArgs(base).sessionTtlMs, 6_000, 'the coordinator knob mountLeaseTtlMs by default');
  t.equal(parseMountArgs([...base, '-o', 'session_ttl_ms=3000']).sessionTtlMs, 3000);
  for (const bad of ['1000', '2500', '0', 'x', '']) {
    t.throws(
      () => parseMountArgs([...base, '-o', `session_ttl_ms=${bad}`]),
      /session_ttl_ms/,
      `rejects ${JSON.stringify(bad)}`,
    );
  }
  t.match(mountUsage('dunixfs'), /session_ttl_ms=MS/);
});

t.test('tls_dir and insecure: how the client reaches the bricks', async (t) => {
  const plain = parseMountArgs(base);
  t.same([plain.tlsDir, plain.insecure], [undefined, false], 'neither by default (insecure, logged loudly)');
  t.equal(parseMountArgs([...base, '-o', 'tls_dir=/etc/dunix/clients/web']).tlsDir, '/etc/dunix/clients/web');
  t.equal(parseMountArgs([...base, '-o', 'insecure']).insecure, true);
  t.throws(() => parseMountArgs([...base, '-o', 'tls_dir=/x,insecure']), /exclude each other/);
  t.throws(() => parseMountArgs([...base, '-o', 'insecure=1']), /unknown mount option/);
  t.match(mountUsage('mount.dunixfs'), /tls_dir=DIR/);
});
