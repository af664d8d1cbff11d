/**
 * Many clusters starting at once, as parallel test files start them: every
 * brick must come up (a port handed out to one daemon and bound first by
 * another once killed a brick with EADDRINUSE) and serve its PGs, and every
 * process must be gone after stop. Bricks bind port 0 and report their ports;
 * etcd retries with new ports when it loses a race for one.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import t from 'tap';
import { startCluster, type Cluster, type TestLike } from '../src/cluster.js';

/** Clusters started at the same time, each with BRICKS bricks; ROUNDS times. */
const CLUSTERS = 4;
const BRICKS = 3;
const ROUNDS = 2;
const PGS = 16;

/** Whether `pid` still runs a process whose command line mentions `marker` (a reused pid does not count). */
function runsWith(pid: number, marker: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(marker);
  } catch {
    return false;
  }
}

for (let round = 1; round <= ROUNDS; round++) {
  t.test(`round ${round}: ${CLUSTERS} clusters of ${BRICKS} bricks start at once`, async (t) => {
    // Each cluster's own teardown (logs on failure, stop) runs through this test.
    const testLike: TestLike = {
      teardown: (fn) => t.teardown(fn),
      passing: () => t.passing(),
      comment: (...args) => t.comment(...args),
    };
    const t0 = Date.now();
    const clusters: Cluster[] = await Promise.all(
      Array.from({ length: CLUSTERS }, (_, i) =>
        // One mounted cluster per round: the client starts among the others too.
        startCluster(testLike, { bricks: BRICKS, pgs: PGS, mount: i === 0 }),
      ),
    );
    t.comment(`${CLUSTERS} clusters up in ${Date.now() - t0} ms`);

    const addresses = clusters.flatMap((c) => c.bricks.flatMap((b) => [b.address, b.dataAddress]));
    t.equal(new Set(addresses).size, CLUSTERS * BRICKS * 2, 'every brick listens on ports of its own');
    for (const [i, c] of clusters.entries()) {
      t.ok(
        c.bricks.every((b) => b.alive()),
        `cluster ${i}: all ${BRICKS} bricks alive`,
      );
      const placement = await c.placement();
      const ids = new Set(c.bricks.map((b) => b.id));
      t.equal(placement.length, PGS, `cluster ${i}: every PG placed`);
      t.ok(
        placement.every((pg) => ids.has(pg.bricks[0]!)),
        `cluster ${i}: every PG's primary is one of its own bricks`,
      );
      // ready() asks each brick for its status: it answers with the PGs it serves.
      for (const b of c.bricks) await b.ready(10_000);
    }
    const mounted = clusters[0]!;
    writeFileSync(mounted.path('hello'), `round ${round}\n`);
    t.equal(readFileSync(mounted.path('hello'), 'utf8'), `round ${round}\n`, 'the mount serves a file');

    // What ran, with a marker each process's command line carries: a brick's data dir, etcd's data dir, the mount point.
    const procs = clusters.flatMap((c) => [
      ...c.bricks.map((b) => ({ what: `brick ${b.dir}`, pid: b.pid, marker: b.dir })),
      { what: `etcd ${c.etcd.dataDir}`, pid: c.etcd.pid, marker: c.etcd.dataDir },
      ...(c.mountPid ? [{ what: `client ${c.mountpoint}`, pid: c.mountPid, marker: c.mountpoint }] : []),
    ]);
    t.equal(procs.length, CLUSTERS * (BRICKS + 1) + 1, 'every process accounted for');
    t.ok(
      procs.every((p) => runsWith(p.pid, p.marker)),
      'every process ran',
    );
    const t1 = Date.now();
    await Promise.all(clusters.map((c) => c.stop()));
    t.comment(`stopped in ${Date.now() - t1} ms`);
    const left = procs.filter((p) => runsWith(p.pid, p.marker));
    t.strictSame(
      left.map((p) => p.what),
      [],
      'no process left after stop',
    );
  });
}

t.test('a restarted brick keeps its ports, or moves when they were taken meanwhile', async (t) => {
  const c = await startCluster(t, { bricks: 2, pgs: PGS, mount: false });
  const b = c.bricks[0]!;
  const first = { address: b.address, dataAddress: b.dataAddress };
  await b.restart();
  t.strictSame({ address: b.address, dataAddress: b.dataAddress }, first, 'same ports after a restart');

  await b.stop();
  // Someone else binds the brick's port while it is down.
  const squatter = createServer();
  await new Promise<void>((resolve, reject) => {
    squatter.once('error', reject);
    squatter.listen(b.port, '127.0.0.1', resolve);
  });
  t.teardown(() => new Promise<void>((resolve) => squatter.close(() => resolve())));
  await b.restart();
  t.not(b.address, first.address, `moved to ${b.address}`);
  t.ok(b.alive(), 'and serves its PGs there');
  const registered = (await c.coord.listBricks(c.volume)).find((x) => x.id === b.id);
  t.equal(registered?.address, b.address, 'etcd has the new address');
  t.equal(registered?.alive, true, 'and the brick alive');
});
