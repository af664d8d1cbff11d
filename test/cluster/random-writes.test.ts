/**
 * Buffered random writes (fio-like, several per block before anything is
 * sent) through a real mount on a replica-3 volume, mirrored to a local
 * file: sizes from 1 byte to 3 blocks, overlapping, crossing blocks, some
 * past the end (growing the file), then close. The mount's file must equal
 * the local one byte for byte - read back through the same mount, through
 * a second mount, and after the kernel's caches are dropped - and the
 * client must have sent the writes as fewer WriteBlocks than writes (its
 * buffered ranges of one block go together, one WRITE op each in one log
 * entry), and a scrub must find every replica's copy equal.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { run, startCluster, waitUntil } from '../src/cluster.js';

const WRITER = `
import os, random, sys
seed, n, a, b, trunc = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == 'trunc'
rnd = random.Random(seed)
BS = 1 << 20
flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if trunc else 0)
fds = [os.open(p, flags, 0o644) for p in (a, b)]
size = 0
for i in range(n):
    kind = rnd.random()
    if kind < 0.7:
        length = rnd.choice([1, 17, 512, 4096, 4096, 4096, 8192, 65536])
    elif kind < 0.95:
        length = rnd.randrange(1, 300_000)
    else:
        length = rnd.randrange(BS, 3 * BS)
    offset = rnd.randrange(0, 6 * BS)
    data = rnd.randbytes(length)
    for fd in fds:
        assert os.pwrite(fd, data, offset) == length
    size = max(size, offset + length)
for fd in fds:
    os.close(fd)
print(size)
`;

const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

t.test('buffered random writes equal a local file; ranges of a block go together', async (t) => {
  const c = await startCluster(t, { pgs: 16, replicas: 3, mount: false });
  const ports = join(c.base, 'client-metrics.json');
  await c.mount(`metrics_listen=127.0.0.1:0,metrics_port_file=${ports}`);
  const b = await c.mountAnother();
  const local = mkdtempSync(join(tmpdir(), 'dunix-rw-'));
  t.teardown(() => rmSync(local, { recursive: true, force: true }));
  const address = (JSON.parse(readFileSync(ports, 'utf8')) as { metricsAddress: string }).metricsAddress;
  const writeBlocks = async () => {
    const text = await (await fetch(`http://${address}/metrics`)).text();
    return text
      .split('\n')
      .filter((l) => l.startsWith('dunix_client_rpc_seconds_count{method="WriteBlock"'))
      .reduce((sum, l) => sum + Number(l.split(' ')[1]), 0);
  };
  const writesPerSeed = 400;
  for (const seed of [1, 2, 3]) {
    // A first pass over a new file, then one over what it holds: the gaps between the second
    // pass's ranges must come from the first pass's bytes (the primary fills them).
    for (const [pass, trunc] of [
      [seed, 'trunc'],
      [seed + 100, 'keep'],
    ] as const) {
      const before = await writeBlocks();
      const r = run(
        'python3',
        [
          '-c',
          WRITER,
          String(pass),
          String(writesPerSeed),
          c.path(`f${seed}`),
          join(local, `f${seed}`),
          trunc,
        ],
        { timeoutMs: 300_000 },
      );
      t.equal(r.status, 0, `seed ${pass}: wrote up to ${r.stdout.trim()} ${r.stderr.slice(-500)}`);
      const sent = (await writeBlocks()) - before;
      t.ok(sent < writesPerSeed / 2, `seed ${pass}: ${writesPerSeed} writes went as ${sent} WriteBlocks`);
    }
    const want = sha(join(local, `f${seed}`));
    t.equal(sha(c.path(`f${seed}`)), want, `seed ${seed}: the mount reads what was written`);
    t.equal(sha(b.path(`f${seed}`)), want, `seed ${seed}: so does another mount`);
  }
  // Every replica applied the same ranges: a scrub compares each copy's records and block files.
  const started = c.ctl(['volume', 'scrub', 'start', c.volume, '--max-mib-per-s', '0']);
  t.equal(started.status, 0, `scrub started ${started.stderr}`);
  const scrubJob = () =>
    (
      JSON.parse(c.ctl(['--json', 'volume', 'scrub', 'status', c.volume]).stdout) as {
        job?: Record<string, unknown>;
      }
    ).job;
  await waitUntil(() => scrubJob()?.state === 'done', 'the scrub to finish', 180_000, 250);
  t.match(scrubJob(), { found: 0, repaired: 0, unrecoverable: 0 }, 'the replicas hold the same bytes');
  // ... because each applied every entry as sent, not by being caught up after refusing one.
  for (const brick of c.bricks) {
    const refused = readFileSync(brick.logFile, 'utf8')
      .split('\n')
      .filter((l) => l.includes('did not take an entry'));
    t.same(refused, [], `brick${brick.index}: no replica refused an entry`);
  }
  run('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches']);
  for (const seed of [1, 2, 3])
    t.equal(
      sha(c.path(`f${seed}`)),
      sha(join(local, `f${seed}`)),
      `seed ${seed}: and after the caches are dropped`,
    );
  writeFileSync(join(local, 'done'), '');
});
