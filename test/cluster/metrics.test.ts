/**
 * Prometheus metrics of brickd (--metrics-listen) and of the client
 * (-o metrics_listen=): both bind port 0 and report the port (the brick's
 * port file, the client's metrics_port_file). After file operations through
 * the mount the counters moved on both sides: RPCs by method and code, bytes
 * read and written, FUSE requests by opcode and errno, the inline cache. PG
 * gauges add up to the volume's PGs; a killed replica shows as replication
 * under-replicated PGs on the primaries, and it goes back to 0 (and no copy
 * lags) once the replica has caught up. A bad --metrics-listen is refused at start.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, writeFileSync, constants as fsc } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { bins, startCluster, waitUntil, type BrickProc } from '../src/cluster.js';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text exposition -> samples (comments skipped). */
function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

async function scrape(address: string): Promise<Sample[]> {
  const r = await fetch(`http://${address}/metrics`);
  if (r.status !== 200) throw new Error(`GET /metrics at ${address}: ${r.status}`);
  return parseMetrics(await r.text());
}

/** Sum of the samples named `name` whose labels include `where`. */
function sum(samples: Sample[], name: string, where: Record<string, string> = {}): number {
  let n = 0;
  for (const s of samples)
    if (s.name === name && Object.entries(where).every(([k, v]) => s.labels[k] === v)) n += s.value;
  return n;
}

const brickMetricsAddress = (b: BrickProc): string => {
  const r = JSON.parse(readFileSync(join(b.dir, 'ports.json'), 'utf8')) as { metricsAddress?: string };
  if (!r.metricsAddress) throw new Error(`brick${b.index} reported no metrics address`);
  return r.metricsAddress;
};

async function scrapeBricks(bricks: BrickProc[]): Promise<Sample[]> {
  return (await Promise.all(bricks.map((b) => scrape(brickMetricsAddress(b))))).flat();
}

/** Reads the whole file with O_DIRECT: the bytes come from the client, not the page cache. */
function readDirect(path: string): number {
  const fd = openSync(path, fsc.O_RDONLY | fsc.O_DIRECT);
  try {
    const buf = Buffer.alloc(1 << 20);
    let total = 0;
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) return total;
      total += n;
    }
  } finally {
    closeSync(fd);
  }
}

const PGS = 8;

t.test('a bad --metrics-listen is refused at start with a clear error', async (t) => {
  const r = spawnSync(
    process.execPath,
    [bins.brickd, '--data', '/nonexistent', '--etcd', 'http://127.0.0.1:1', '--volume', 'v'].concat([
      '--metrics-listen',
      'nowhere',
    ]),
    { encoding: 'utf8', timeout: 20_000 },
  );
  t.not(r.status, 0, 'brickd exits non-zero');
  t.match(r.stderr, /metrics listen address nowhere: expected HOST:PORT/, 'naming the value and the form');
});

t.test('brick and client metrics move with file operations', async (t) => {
  const c = await startCluster(t, {
    pgs: PGS,
    replicas: 3,
    mount: false,
    brickArgs: () => ['--metrics-listen', '127.0.0.1:0'],
  });
  const portFile = join(c.base, 'client-metrics.json');
  await c.mount(`metrics_listen=127.0.0.1:0,metrics_port_file=${portFile}`);
  const client = (JSON.parse(readFileSync(portFile, 'utf8')) as { metricsAddress: string }).metricsAddress;
  t.match(client, /^127\.0\.0\.1:\d+$/, 'the client reports its metrics address');

  const notFound = await fetch(`http://${client}/other`);
  t.equal(notFound.status, 404, 'only /metrics is served');
  await notFound.text();

  const bricks0 = await scrapeBricks(c.bricks);
  t.equal(sum(bricks0, 'dunix_brick_pgs', { state: 'primary' }), PGS, 'each PG has one serving primary');
  t.equal(sum(bricks0, 'dunix_brick_pgs', { state: 'replica' }), PGS * 2, 'and two replicas');
  const isr = bricks0.filter((s) => s.name === 'dunix_brick_pg_insync_replicas');
  t.equal(isr.length, PGS, 'one in-sync size per led PG');
  t.ok(
    isr.every((s) => s.value === 3),
    'every in-sync set is full',
  );
  const client0 = await scrape(client);
  t.ok(sum(bricks0, 'process_resident_memory_bytes') > 0, "the bricks' process metrics are there");
  t.ok(sum(client0, 'process_resident_memory_bytes') > 0, "and the client's");

  // Block data (1 MiB), a small inline file, a directory, a failed lookup and a failed getxattr.
  const big = Buffer.alloc(1 << 20, 0x5a);
  writeFileSync(c.path('big'), big);
  writeFileSync(c.path('small'), 'hello metrics\n');
  spawnSync('mkdir', [c.path('dir')]);
  t.equal(spawnSync('stat', [c.path('missing')]).status, 1, 'stat of a missing name fails');
  const getxattr = `import os, sys\ntry: os.getxattr(sys.argv[1], 'user.none')\nexcept OSError: sys.exit(1)`;
  t.equal(spawnSync('python3', ['-c', getxattr, c.path('small')]).status, 1, 'a missing xattr fails');
  t.equal(readDirect(c.path('big')), big.length, 'the big file reads back whole');
  t.equal(readDirect(c.path('small')), 14, 'the small file too');

  const bricks1 = await scrapeBricks(c.bricks);
  const delta = (name: string, where: Record<string, string> = {}) =>
    sum(bricks1, name, where) - sum(bricks0, name, where);
  t.ok(
    delta('dunix_brick_rpc_seconds_count', { method: 'WriteBlock', code: 'OK' }) >= 1,
    'WriteBlock counted',
  );
  t.ok(delta('dunix_brick_rpc_seconds_count', { method: 'Mkdir', code: 'OK' }) >= 1, 'Mkdir counted');
  t.ok(
    delta('dunix_brick_rpc_seconds_count', { method: 'Lookup', code: 'NOT_FOUND' }) >= 1,
    'the failed Lookup is counted by its code',
  );
  t.ok(delta('dunix_brick_rpc_errors_total', { code: 'NOT_FOUND' }) >= 1, 'and among errors by code');
  t.ok(
    delta('dunix_brick_written_bytes_total') >= big.length,
    'bytes written moved by at least the block data',
  );
  t.ok(delta('dunix_brick_read_bytes_total') >= big.length, 'bytes read too');
  // The 1 MiB block is one aligned write on each of its 3 copies: with O_DIRECT
  // (the test machine's filesystem takes it) on every one.
  t.ok(
    delta('dunix_brick_block_direct_write_bytes_total') >= 3 * big.length,
    'the block went around the page cache on every copy',
  );
  t.equal(sum(bricks1, 'dunix_brick_replication_lag_max_entries'), 0, 'no copy lags while all are up');
  // The latency breakdown: every appended entry, by kind, and the stages it went through.
  const inlineEntries = delta('dunix_brick_log_entries_total', { kind: 'write-inline' });
  t.ok(inlineEntries >= 1, 'the small file is a write-inline log entry');
  const stage = (s: string) => delta('dunix_brick_stage_seconds_count', { stage: s });
  for (const s of ['pg_queue', 'engine', 'append_queue', 'log_write', 'replicas_after_local'])
    t.ok(stage(s) >= 1, `stage ${s} timed`);
  t.ok(
    stage('replica_round_trip') >= 2 * inlineEntries && stage('replica_apply') >= 2 * inlineEntries,
    'each entry went to both replicas and was applied there',
  );
  t.ok(
    sum(bricks1, 'dunix_brick_stage_seconds_sum', { stage: 'log_write' }) > 0,
    'stage times are recorded, not only counted',
  );

  const client1 = await scrape(client);
  const cdelta = (name: string, where: Record<string, string> = {}) =>
    sum(client1, name, where) - sum(client0, name, where);
  t.ok(
    cdelta('dunix_client_fuse_request_seconds_count', { op: 'WRITE', result: 'OK' }) >= 1,
    'FUSE WRITEs counted',
  );
  t.ok(cdelta('dunix_client_fuse_request_seconds_count', { op: 'MKDIR', result: 'OK' }) === 1, 'one MKDIR');
  // (A failed LOOKUP is answered with a negative entry: an OK reply to the kernel.)
  t.ok(
    cdelta('dunix_client_fuse_request_seconds_count', { op: 'LOOKUP', result: 'OK' }) >= 1,
    'LOOKUPs counted',
  );
  t.ok(
    cdelta('dunix_client_fuse_request_seconds_count', { op: 'GETXATTR', result: 'ENODATA' }) >= 1,
    'the failed GETXATTR is counted by its errno',
  );
  t.ok(cdelta('dunix_client_written_bytes_total') >= big.length + 14, 'client bytes written');
  t.ok(cdelta('dunix_client_read_bytes_total') >= big.length + 14, 'client bytes read');
  t.ok(
    cdelta('dunix_client_rpc_seconds_count', { method: 'WriteBlock', code: 'OK' }) >= 1,
    'client RPCs counted',
  );
  t.ok(
    cdelta('dunix_client_cache_hits_total', { cache: 'inline' }) +
      cdelta('dunix_client_cache_misses_total', { cache: 'inline' }) >=
      1,
    'the inline file was read through the inline cache',
  );

  // A replica dies: the primaries of its PGs drop it and count what it lacks.
  const victim = c.bricks[2]!;
  await victim.kill('SIGKILL');
  const others = c.bricks.filter((b) => b !== victim);
  for (let i = 0; i < 16; i++) writeFileSync(c.path(`after-${i}`), Buffer.alloc(70_000, i));
  await waitUntil(
    async () => sum(await scrapeBricks(others), 'dunix_brick_pgs_under_replicated') > 0,
    'under-replicated PGs on the primaries',
    30_000,
    200,
  );
  t.pass('a dead replica shows as under-replicated PGs');

  await victim.restart();
  let last: Sample[] = [];
  await waitUntil(
    async () => {
      const s = (last = await scrapeBricks(c.bricks));
      return (
        sum(s, 'dunix_brick_replication_lag_max_entries') === 0 &&
        sum(s, 'dunix_brick_pgs_under_replicated') === 0 &&
        sum(s, 'dunix_brick_pgs', { state: 'primary' }) === PGS
      );
    },
    'the restarted replica to catch up',
    45_000,
    250,
  ).catch((err: unknown) => {
    const show = /^dunix_brick_(pgs|replication_lag_max_entries|pgs_under_replicated)$/;
    t.comment(
      last.filter((s) => show.test(s.name)).map((s) => `${s.name} ${JSON.stringify(s.labels)} ${s.value}`),
    );
    throw err;
  });
  t.pass('lag and under-replication go back to 0 once it caught up');
});
