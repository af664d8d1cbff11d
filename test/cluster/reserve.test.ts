/**
 * fallocate reserves space, with real processes: three bricks (replicas 3)
 * limited to 32 MiB each with --capacity. A preallocation larger than what
 * is left below the full threshold gets ENOSPC and reserves nothing; one
 * that fits counts as used on every brick at once (df), so writes of new
 * files get ENOSPC after the few MiB left, and so does a further
 * fallocate; yet every write into the preallocated range succeeds (its
 * space was set aside), a write past it does not, and the file reads back
 * exactly what was written.
 */
import { readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { run, startCluster, waitUntil } from '../src/cluster.js';
import { sha256 } from '../src/failover.js';
import { df, seededBytes, writeSynced } from '../src/space.js';

const MiB = 1024 * 1024;
const CAPACITY_MIB = 32;
const RESERVED_MIB = 26;
const tool = fileURLToPath(new URL('../../cluster/falloc-tool.py', import.meta.url));
const KEEP_SIZE = 0x01;

function falloc(path: string, mode: number, offset: number, length: number): string {
  return run('python3', [tool, 'falloc', path, String(mode), String(offset), String(length)]).stdout.trim();
}

t.test('fallocate reserves: later writes into the range cannot fail with ENOSPC', async (t) => {
  const c = await startCluster(t, {
    replicas: 3,
    pgs: 16,
    brickArgs: () => ['--capacity', `${CAPACITY_MIB}MiB`, '--usage-interval-ms', '500'],
  });
  await waitUntil(() => df(c).bricks.every((b) => b.usage !== null), 'every brick to publish its usage');
  const usedBefore = Math.max(...df(c).bricks.map((b) => b.usage!.usedBytes));

  // More than is left below the threshold: refused, nothing reserved.
  const res = c.path('reserved');
  t.equal(falloc(res, 0, 0, CAPACITY_MIB * MiB), 'ENOSPC', 'a preallocation that cannot be reserved');
  t.equal(statSync(res).size, 0, 'the refused fallocate changed nothing');

  // Most of the space: reserved, and counted as used on every brick.
  t.equal(falloc(res, 0, 0, RESERVED_MIB * MiB), 'ok', `fallocate ${RESERVED_MIB} MiB`);
  t.equal(statSync(res).size, RESERVED_MIB * MiB);
  await waitUntil(
    () => df(c).bricks.every((b) => b.usage!.usedBytes >= usedBefore + RESERVED_MIB * MiB),
    'the reservation to count as used on every brick',
    30_000,
    200,
  );

  // Writes elsewhere: only the few MiB left below 95% go in.
  const left = Math.floor((CAPACITY_MIB * 0.95 * MiB - usedBefore - RESERVED_MIB * MiB) / MiB);
  let n = 0;
  let failure: string | undefined;
  for (; n < CAPACITY_MIB; n++) {
    failure = writeSynced(c.path(`other-${n}`), seededBytes(100 + n, MiB));
    if (failure) break;
  }
  t.comment(
    `reserve: ${left} MiB left below the threshold after the reservation; ${n} MiB of new files went in`,
  );
  t.equal(failure, 'ENOSPC', 'new files get ENOSPC');
  t.ok(n <= left + 2, `writes elsewhere stop near what the reservation left (${n} MiB, ${left} MiB left)`);
  t.equal(falloc(c.path('more'), KEEP_SIZE, 0, 4 * MiB), 'ENOSPC', 'a further fallocate cannot reserve');

  // Every write into the preallocated range succeeds, each fsync'd.
  const want = Buffer.alloc(RESERVED_MIB * MiB);
  const failed: string[] = [];
  for (let i = 0; i < RESERVED_MIB; i++) {
    const chunk = seededBytes(i, MiB);
    // Odd blocks written in two halves, the second half first: growth past what a block holds.
    const parts =
      i % 2 === 0
        ? [{ at: 0, len: MiB }]
        : [
            { at: MiB / 2, len: MiB / 2 },
            { at: 0, len: MiB / 2 },
          ];
    for (const p of parts) {
      const err = writeSynced(res, chunk.subarray(p.at, p.at + p.len), i * MiB + p.at, 'r+');
      if (err) failed.push(`${i} MiB + ${p.at}: ${err}`);
    }
    chunk.copy(want, i * MiB);
  }
  t.same(failed, [], 'no write into the reservation failed');
  t.equal(statSync(res).size, RESERVED_MIB * MiB);
  t.equal(sha256(readFileSync(res)), sha256(want), 'the reserved file reads back what was written');
  // (Its size may still grow: the client extends it before the refused bytes are flushed, as over NFS.)
  t.equal(
    writeSynced(res, seededBytes(999, 4096), RESERVED_MIB * MiB, 'r+'),
    'ENOSPC',
    'a write past the preallocated range is growth: refused when full',
  );
  t.equal(
    sha256(readFileSync(res).subarray(0, RESERVED_MIB * MiB)),
    sha256(want),
    'and changed nothing before it',
  );
  // Published every interval (500 ms here) and when the state changes: df may lag the primary's gate.
  await waitUntil(
    () => df(c).bricks.every((b) => b.usage!.state === 'full'),
    'df to show every brick full',
    15_000,
    200,
  );
  t.pass('df shows every brick full');
});
