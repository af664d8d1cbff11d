import t from 'tap';
import { BrickMetrics } from '../src/metrics.js';
import { PgState } from '../src/pg/pg-state.js';

function gauge(text: string, name: string, labels = ''): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

t.test('PG gauges and replication lag come from the PG table at scrape time', async (t) => {
  const m = new BrickMetrics();
  t.equal(gauge(await m.registry.metrics(), 'dunix_brick_replication_lag_max_entries'), 0, 'no table: zeros');
  const led = new PgState(1, 3);
  Object.assign(led, {
    role: 'primary',
    ready: true,
    bricks: ['me', 'b', 'c'],
    isr: ['me', 'b'],
    opSeq: 120n,
  });
  led.ackedSeq.set('b', 120n);
  led.ackedSeq.set('c', 100n);
  const peering = new PgState(2, 3);
  Object.assign(peering, { role: 'primary', ready: false, bricks: ['me', 'b', 'c'], isr: ['me', 'b', 'c'] });
  const copy = new PgState(3, 3);
  Object.assign(copy, { role: 'replica', backfilling: true, bricks: ['b', 'me', 'c'], isr: ['b', 'c'] });
  let direct = 1 << 20;
  m.attach({
    brickId: 'me',
    pgs: () => [led, peering, copy],
    replicas: () => 3,
    catchUpsRunning: () => 1,
    directWriteBytes: () => direct,
  });
  const text = await m.registry.metrics();
  t.equal(gauge(text, 'dunix_brick_pgs', 'state="primary"'), 1);
  t.equal(gauge(text, 'dunix_brick_pgs', 'state="primary_peering"'), 1);
  t.equal(gauge(text, 'dunix_brick_pgs', 'state="replica"'), 1);
  t.equal(gauge(text, 'dunix_brick_pgs', 'state="backfilling"'), 1);
  t.equal(gauge(text, 'dunix_brick_pg_insync_replicas', 'pg="1"'), 2, 'in-sync size of the led PG');
  t.equal(gauge(text, 'dunix_brick_pg_insync_replicas', 'pg="2"'), undefined, 'a peering PG is not led yet');
  t.equal(gauge(text, 'dunix_brick_pgs_under_replicated'), 1);
  t.equal(gauge(text, 'dunix_brick_replication_lag_entries', 'pg="1",replica="b"'), 0);
  t.equal(gauge(text, 'dunix_brick_replication_lag_entries', 'pg="1",replica="c"'), 20, 'opSeq - acked');
  t.equal(gauge(text, 'dunix_brick_replication_lag_max_entries'), 20);
  t.equal(gauge(text, 'dunix_brick_recoveries_running'), 1);
  t.equal(
    gauge(text, 'dunix_brick_block_direct_write_bytes_total'),
    1 << 20,
    'direct bytes of the block store',
  );

  // The copy catches up: the next scrape says so (nothing stale is kept between scrapes).
  led.ackedSeq.set('c', 120n);
  led.isr = ['me', 'b', 'c'];
  direct += 65536;
  const after = await m.registry.metrics();
  t.equal(
    gauge(after, 'dunix_brick_block_direct_write_bytes_total'),
    (1 << 20) + 65536,
    'read at scrape time',
  );
  t.equal(gauge(after, 'dunix_brick_replication_lag_max_entries'), 0);
  t.equal(gauge(after, 'dunix_brick_pgs_under_replicated'), 0);
});

t.test('RPC results are counted by method and code', async (t) => {
  const m = new BrickMetrics();
  const start = process.hrtime.bigint();
  m.observeRpc('Lookup', start, 'OK');
  m.observeRpc('Lookup', start, 'NOT_FOUND');
  m.observeRpc('Mkdir', start, 'NOT_FOUND');
  m.addRead(4096);
  m.addWritten(100);
  m.addWritten(0);
  const text = await m.registry.metrics();
  t.equal(gauge(text, 'dunix_brick_rpc_seconds_count', 'method="Lookup",code="OK"'), 1);
  t.equal(gauge(text, 'dunix_brick_rpc_seconds_count', 'method="Lookup",code="NOT_FOUND"'), 1);
  t.equal(gauge(text, 'dunix_brick_rpc_errors_total', 'code="NOT_FOUND"'), 2);
  t.equal(gauge(text, 'dunix_brick_read_bytes_total'), 4096);
  t.equal(gauge(text, 'dunix_brick_written_bytes_total'), 100);
});
