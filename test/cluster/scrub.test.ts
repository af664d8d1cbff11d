/**
 * Scrub with real processes: files written on a 3-brick volume (replicas
 * 3); one brick is stopped and, on its disk, a byte inside one block file
 * is flipped and another block file deleted (both blocks of PGs it does not
 * lead), then it starts again. Reads (O_DIRECT, so the bricks answer) still
 * return the right bytes: the PGs' primaries serve them. `dunixctl volume
 * scrub start` finds both damaged copies and repairs them from the
 * primaries (status shows them repaired, with their PG, inode and block),
 * the damaged files on that brick are byte for byte the primaries' again, a
 * second scrub finds nothing, and every file still matches its checksum.
 *
 * Printed, not asserted: the scrub rate (bytes the PGs' primaries verified
 * over the job's time, unthrottled; every replica reads as much again):
 * `# scrub: scenario=NAME key=value ...`.
 */
import { existsSync, lstatSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { blockPg } from '@dunix/proto';
import { startCluster, waitUntil, type BrickProc, type Cluster } from '../src/cluster.js';
import { filesIntact, keepLogs, readBack, sha256, waitFullRedundancy } from '../src/failover.js';

const MiB = 1024 * 1024;

/** A block file of a brick (BlockStore.pathOf). */
function blockPath(b: BrickProc, pg: number, ino: bigint, index: bigint): string {
  return join(
    b.dir,
    'blocks',
    pg.toString(16).padStart(4, '0'),
    `${ino.toString(16).padStart(16, '0')}.${index.toString(16)}`,
  );
}

/** Bytes that differ from file to file (cheap to make, never all zero). */
function fileBytes(seed: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  let x = (seed + 1) * 2654435761;
  for (let i = 0; i < length; i += 4) {
    x = (x * 1103515245 + 12345) >>> 0;
    b.writeUInt32LE(x, i);
  }
  return b;
}

interface ScrubJson {
  job: {
    id: string;
    state: string;
    pgsDone: number;
    pgsTotal: number;
    bytesVerified: number;
    found: number;
    repaired: number;
    unrecoverable: number;
    orphanBlocksRemoved?: number;
    startedAtMs: number;
    finishedAtMs?: number;
  } | null;
  rateBytesPerS: number | null;
  problems: { pg: number; kind: string; brick: string; ino?: string; index?: string; state: string }[];
  skipped: { pg: number; bricks: string[] }[];
}

function scrubStatus(c: Cluster): ScrubJson {
  const r = c.ctl(['--json', 'volume', 'scrub', 'status', c.volume]);
  if (r.status !== 0) throw new Error(`scrub status exited ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout) as ScrubJson;
}

/** Starts a scrub and waits for it to end; its status then. */
async function scrub(t: Test, c: Cluster, args: string[] = []): Promise<ScrubJson> {
  const r = c.ctl(['volume', 'scrub', 'start', c.volume, ...args]);
  t.equal(r.status, 0, `scrub started: ${r.stdout.trim()}${r.stderr}`);
  await waitUntil(() => scrubStatus(c).job?.state === 'done', 'the scrub to finish', 180_000, 250);
  return scrubStatus(c);
}

function report(t: Test, scenario: string, fields: Record<string, string | number>) {
  const kv = Object.entries(fields).map(([k, v]) => `${k}=${typeof v === 'number' ? +v.toFixed(1) : v}`);
  t.comment(`scrub: scenario=${scenario} ${kv.join(' ')}`);
}

t.test('a corrupted and a deleted block on one brick are found and repaired', async (t) => {
  const c = await startCluster(t, { bricks: 3, pgs: 16, replicas: 3 });
  keepLogs(t, c);
  const sums = new Map<string, string>();
  const files: { path: string; ino: bigint; size: number }[] = [];
  for (let i = 0; i < 40; i++) {
    const data = fileBytes(i, 4 * MiB + i * 4096);
    const path = c.path(`f-${i}`);
    writeFileSync(path, data);
    sums.set(path, sha256(data));
    files.push({ path, ino: lstatSync(path, { bigint: true }).ino, size: data.length });
  }
  // Small files (inline) and directories for the key side.
  for (let i = 0; i < 20; i++) writeFileSync(c.path(`small-${i}`), `small ${i}\n`);

  const checkAll = async (what: string) =>
    t.equal(
      await filesIntact(c, sums),
      sums.size,
      `${what}: every file reads back identical (${sums.size} files)`,
    );

  // A clean volume first: the scrub finds nothing; its rate, unthrottled.
  const clean = await scrub(t, c, ['--max-mib-per-s', '0']);
  t.match(clean.job, { pgsDone: 16, pgsTotal: 16, found: 0, repaired: 0, unrecoverable: 0 });
  t.same(clean.skipped, [], 'every replica compared');
  const cleanMs = clean.job!.finishedAtMs! - clean.job!.startedAtMs;
  report(t, 'clean', {
    MiB: clean.job!.bytesVerified / MiB,
    ms: cleanMs,
    MiBPerS: clean.job!.bytesVerified / MiB / (cleanMs / 1000),
    copies: 3,
  });

  // Two blocks of PGs the victim does not lead.
  const victim = c.bricks[2]!;
  const placement = await c.placement();
  const targets: { ino: bigint; index: bigint; pg: number; path: string; file: string }[] = [];
  for (const f of files) {
    for (let index = 0n; index * BigInt(MiB) < BigInt(f.size) && targets.length < 2; index++) {
      const pg = blockPg(f.ino, index, c.pgs);
      if (placement[pg]!.bricks[0] === victim.id || targets.some((x) => x.pg === pg)) continue;
      targets.push({ ino: f.ino, index, pg, path: blockPath(victim, pg, f.ino, index), file: f.path });
    }
    if (targets.length === 2) break;
  }
  t.equal(targets.length, 2, 'two blocks on PGs led by other bricks');
  const [corrupt, gone] = targets as [(typeof targets)[0], (typeof targets)[0]];
  const primaryOf = (pg: number) => c.bricks.find((b) => b.id === placement[pg]!.bricks[0])!;

  await victim.stop();
  const bytes = readFileSync(corrupt.path);
  bytes[12345]! ^= 0x20;
  writeFileSync(corrupt.path, bytes);
  unlinkSync(gone.path);
  t.notOk(existsSync(gone.path), 'block file deleted');
  // A block file no record names (as a crash between a block write and its entry leaves).
  const orphanPath = blockPath(victim, gone.pg, (BigInt(gone.pg) << 48n) | 0xdeadn, 0n);
  writeFileSync(orphanPath, Buffer.alloc(64 * 1024, 7));
  const back = Date.now();
  await victim.restart();
  await waitFullRedundancy(c, back);
  const after = await c.placement();
  t.ok(
    targets.every((x) => after[x.pg]!.bricks[0] !== victim.id),
    'the damaged copies are on replicas (their PGs led elsewhere)',
  );

  // Reads are served by the primaries' good copies.
  await checkAll('before the scrub');

  // A primary's own bad copy (flipped in place while it runs) is healed by the read that finds it.
  const led = files.find((f) => after[blockPg(f.ino, 1n, c.pgs)]!.bricks[0] !== victim.id)!;
  const lpg = blockPg(led.ino, 1n, c.pgs);
  const lprimary = c.bricks.find((b) => b.id === after[lpg]!.bricks[0])!;
  const lpath = blockPath(lprimary, lpg, led.ino, 1n);
  const good = readFileSync(lpath);
  const flipped = Buffer.from(good);
  flipped[777]! ^= 0x01;
  writeFileSync(lpath, flipped);
  const readWhole = await readBack(c, led.path, { direct: true });
  t.equal(sha256(readWhole), sums.get(led.path), "a read of the primary's bad block returns the right bytes");
  t.ok(readFileSync(lpath).equals(good), 'and the primary healed its copy from a replica');

  const found = await scrub(t, c);
  t.match(found.job, { pgsDone: 16, found: 2, repaired: 2, unrecoverable: 0 }, 'both found and repaired');
  t.equal(found.job!.orphanBlocksRemoved, 1, 'the orphan block file counted');
  t.notOk(existsSync(orphanPath), 'and removed from the disk');
  const mine = found.problems.filter((p) => p.brick === victim.id);
  t.match(
    mine.find((p) => p.ino === corrupt.ino.toString() && p.index === corrupt.index.toString()),
    { pg: corrupt.pg, kind: 'block-corrupt', state: 'repaired' },
    'the corrupted block, repaired',
  );
  t.match(
    mine.find((p) => p.ino === gone.ino.toString() && p.index === gone.index.toString()),
    { pg: gone.pg, kind: 'block-missing', state: 'repaired' },
    'the deleted block, repaired',
  );
  const text = c.ctl(['volume', 'scrub', 'status', c.volume]);
  t.match(text.stdout, /problems: 2 found, 2 repaired, 0 unrecoverable/);
  t.match(text.stdout, /block files no record named, removed: 1/);
  t.comment(text.stdout.trim());
  for (const x of targets)
    t.ok(
      readFileSync(x.path).equals(readFileSync(blockPath(primaryOf(x.pg), x.pg, x.ino, x.index))),
      `the victim's block ${x.ino}/${x.index} equals the primary's again`,
    );

  const again = await scrub(t, c);
  t.match(again.job, { found: 0, repaired: 0, unrecoverable: 0 }, 'a second scrub finds nothing');
  t.notOk(again.job!.orphanBlocksRemoved, 'and no orphan');
  await checkAll('after the scrub');

  // Throttled: about the limit (per brick, so up to 3x over the volume).
  const slow = await scrub(t, c, ['--max-mib-per-s', '8']);
  const slowMs = slow.job!.finishedAtMs! - slow.job!.startedAtMs;
  report(t, 'throttled-8MiB', {
    MiB: slow.job!.bytesVerified / MiB,
    ms: slowMs,
    MiBPerS: slow.job!.bytesVerified / MiB / (slowMs / 1000),
  });
  t.ok(
    slow.job!.bytesVerified / MiB / (slowMs / 1000) <= 3 * 8 * 1.25,
    'the throttle holds the volume under 3 bricks x 8 MiB/s',
  );
});
