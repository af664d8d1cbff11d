import { createHash } from 'node:crypto';
/**
 * Helpers of the real-process fault tests (test/cluster/fault-*.test.ts):
 * a file whose PGs a chosen brick leads, `dunixctl volume status --json`
 * polled without blocking the test, reading a file back through a child
 * process, and one greppable report line per scenario.
 */
import {
  cpSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { basename, join } from 'node:path';
import type { Test } from 'tap';
import { blockPg, pgOfIno } from '@dunix/proto';
import { bins, runAsync, waitUntil, type BrickProc, type Cluster, type TestLike } from './cluster.js';
import {
  checkRecords,
  errorSummary,
  startRecordWriter,
  type RecordCheck,
  type RecordWriter,
  type WriterOptions,
  type WriterStats,
} from './record-writer.js';

/** What `dunixctl volume status --json` prints (packages/coord/src/cli/volume.ts), the fields used here. */
export interface VolumeStatusJson {
  config: { replicas: number; minInsync: number; pgCount: number };
  controller: string | null;
  bricks: { id: string; alive: boolean; primaries: number; replicas: number; outOfSync: number }[];
  isrHistogram: { live: number; pgs: number }[];
  pgsDegraded: number[];
  pgsReadOnly: number[];
  pgsUnavailable: number[];
  pgsFailoverPending: number[];
  recovery: { pg: number; brick: string; mode: 'log' | 'backfill'; opsLeft: number; bytesLeft: number }[];
  epochMax: number;
}

/** Runs `dunixctl volume status VOLUME --json` in a child process: its exit status and parsed output. */
export async function volumeStatus(c: Cluster): Promise<{ status: number | null; json: VolumeStatusJson }> {
  const r = await runAsync(
    process.execPath,
    [bins.dunixctl, '--etcd', c.etcd.endpoint, '--json', 'volume', 'status', c.volume],
    { timeoutMs: 30_000 },
  ).done;
  let json: VolumeStatusJson;
  try {
    json = JSON.parse(r.stdout) as VolumeStatusJson;
  } catch {
    throw new Error(`dunixctl volume status exited ${r.status}: ${r.stderr}${r.stdout}`);
  }
  return { status: r.status, json };
}

/** Every PG has all its copies live and in sync. */
export function fullyRedundant(s: VolumeStatusJson): boolean {
  return (
    s.pgsDegraded.length === 0 &&
    s.isrHistogram.find((h) => h.live === s.config.replicas)?.pgs === s.config.pgCount
  );
}

/**
 * Polls volume status until every PG's in-sync set is full; resolves with
 * the ms from `sinceMs` (Date.now() of the event) to the poll that saw it.
 */
export async function waitFullRedundancy(c: Cluster, sinceMs: number, timeoutMs = 60_000): Promise<number> {
  const until = sinceMs + timeoutMs;
  let last: VolumeStatusJson | undefined;
  for (;;) {
    const { json } = await volumeStatus(c);
    if (fullyRedundant(json)) return Date.now() - sinceMs;
    last = json;
    if (Date.now() > until) {
      throw new Error(
        `not fully redundant ${timeoutMs} ms after the event: degraded ${JSON.stringify(last.pgsDegraded)}, ` +
          `in-sync ${JSON.stringify(last.isrHistogram)}, recovery ${JSON.stringify(last.recovery)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** PGs a file's writes go to: its inode's and those of blocks 0..blocks-1. */
export async function filePgs(c: Cluster, path: string, blocks = 1): Promise<{ ino: bigint; pgs: number[] }> {
  const ino = lstatSync(path, { bigint: true }).ino;
  const pgs = new Set([pgOfIno(ino)]);
  for (let i = 0; i < blocks; i++) pgs.add(blockPg(ino, BigInt(i), c.pgs));
  return { ino, pgs: [...pgs] };
}

/** The primary of every PG in `pgs`, if it is the same brick. */
export async function commonPrimary(c: Cluster, pgs: number[]): Promise<BrickProc | undefined> {
  const placement = await c.placement();
  const ids = new Set(pgs.map((pg) => placement[pg]!.bricks[0]!));
  if (ids.size !== 1) return undefined;
  const [id] = [...ids];
  return c.bricks.find((b) => b.id === id);
}

/**
 * A new file whose inode and first block are on PGs that one brick leads
 * (`leader`, or any one brick). A file's inode lives in its directory's PG,
 * so directories `parent/name-D` are made until one is led by that brick,
 * then files `f-K` in it until one has block 0 there too; the misses are
 * removed. Returns the file, its PGs and their primary.
 */
export async function fileLedBy(
  c: Cluster,
  parent: string,
  name: string,
  leader?: BrickProc,
): Promise<{ path: string; ino: bigint; pgs: number[]; primary: BrickProc }> {
  for (let d = 0; d < 100; d++) {
    const dir = join(parent, `${name}-${d}`);
    mkdirSync(dir);
    const placement = await c.placement();
    const dirLeader = placement[pgOfIno(lstatSync(dir, { bigint: true }).ino)]!.bricks[0];
    if (!leader || dirLeader === leader.id) {
      for (let k = 0; k < 100; k++) {
        const path = join(dir, `f-${k}`);
        writeFileSync(path, '');
        const { ino, pgs } = await filePgs(c, path);
        const primary = await commonPrimary(c, pgs);
        if (primary && (!leader || primary === leader)) return { path, ino, pgs, primary };
        unlinkSync(path);
      }
    }
    rmdirSync(dir);
  }
  throw new Error(
    `no new file under ${parent} has its PGs led by ${leader ? `brick${leader.index}` : 'one brick'}`,
  );
}

/**
 * Copies a file off the mount with a child process (bounded: a hung mount
 * fails the test instead of stalling it). `direct`: with O_DIRECT, so the
 * bricks answer even while the kernel caches the file (it is open elsewhere).
 */
export async function readBack(
  c: Cluster,
  path: string,
  o: { direct?: boolean; timeoutMs?: number } = {},
): Promise<Buffer> {
  const local = join(c.base, `readback-${++readBacks}`);
  const r = o.direct
    ? await runAsync('dd', [`if=${path}`, `of=${local}`, 'bs=1M', 'iflag=direct', 'status=none'], {
        timeoutMs: o.timeoutMs ?? 60_000,
      }).done
    : await runAsync('cp', [path, local], { timeoutMs: o.timeoutMs ?? 60_000 }).done;
  if (r.status !== 0) throw new Error(`reading ${path} exited ${r.status ?? r.signal}: ${r.stderr}`);
  const data = readFileSync(local);
  unlinkSync(local);
  return data;
}
let readBacks = 0;

/** sha256 of bytes, hex: what a file's content is checked against after faults. */
export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** How many of `sums` (path -> sha256) read back identical, each with O_DIRECT (the bricks answer). */
export async function filesIntact(c: Cluster, sums: ReadonlyMap<string, string>): Promise<number> {
  let same = 0;
  for (const [p, sum] of sums) if (sha256(await readBack(c, p, { direct: true })) === sum) same++;
  return same;
}

/** A record writer on `path` with its log and stop file in the cluster's temp dir. */
export function recordWriter(
  c: Cluster,
  path: string,
  tag: string,
  o: Partial<Omit<WriterOptions, 'file' | 'log' | 'stopFile'>> = {},
): RecordWriter {
  return startRecordWriter({
    file: path,
    log: join(c.base, `writer-${tag}.log`),
    stopFile: join(c.base, `writer-${tag}.stop`),
    recordBytes: 64,
    fsyncEvery: 1,
    maxRecords: 1_000_000,
    maxMs: 170_000,
    errorSleepMs: 100,
    ...o,
  });
}

/**
 * The longest pause a writer saw after an event at `atMs` (ms since the
 * epoch): the longest gap between two consecutive acknowledgements that ends
 * after the event and begins within `windowMs` of it; -1 if it acknowledged
 * nothing after the event.
 */
export function pauseAfter(stats: WriterStats, atMs: number, windowMs = 15_000): number {
  let max = -1;
  const acks = stats.ackTimes;
  for (let i = 1; i < acks.length; i++) {
    if (acks[i]! < atMs || acks[i - 1]! > atMs + windowMs) continue;
    max = Math.max(max, acks[i]! - acks[i - 1]!);
  }
  return max;
}

/** Remounts (so the bricks, not the page cache, answer) and checks the records in `path`. */
export async function checkFile(
  c: Cluster,
  path: string,
  stats: WriterStats,
  recordBytes = 64,
): Promise<RecordCheck> {
  await c.unmount();
  await c.mount();
  return checkRecords(await readBack(c, path), recordBytes, stats.acked);
}

/**
 * With DUNIX_KEEP_LOGS=DIR set, the cluster's logs and the writers' logs are
 * copied to DIR/<temp dir name> at teardown. Call after startCluster (tap
 * runs teardowns last registered first: this one before the cluster's,
 * which removes the temp dir).
 */
export function keepLogs(t: Test, c: Cluster): void {
  const to = process.env.DUNIX_KEEP_LOGS;
  if (!to) return;
  t.teardown(() => {
    const dir = c.base;
    const dest = join(to, basename(dir));
    mkdirSync(dest, { recursive: true });
    cpSync(join(dir, 'logs'), dest, { recursive: true });
    for (const f of readdirSync(dir).filter((n) => n.startsWith('writer-') && n.endsWith('.log')))
      cpSync(join(dir, f), join(dest, f));
  });
}

/**
 * The checks every scenario ends with: the writer stopped when asked and
 * exited cleanly; read back through a fresh mount, every acknowledged record
 * is there and intact and no slot holds bytes no write put there.
 */
export async function checkWriter(
  t: Test,
  c: Cluster,
  path: string,
  stats: WriterStats & { hung: boolean; exitCode: number | null },
): Promise<RecordCheck> {
  t.notOk(stats.hung, 'the writer stopped when asked (no hang)');
  t.equal(stats.exitCode, 0, 'the writer exited cleanly');
  const check = await checkFile(c, path, stats);
  t.equal(
    check.lost,
    0,
    `every acknowledged record is there (${stats.acked}) ${check.lostSample.join('; ')}`,
  );
  t.equal(check.bad, 0, `nothing but records in their place ${check.badSample.join('; ')}`);
  return check;
}

/** One greppable line: `# failover: scenario=NAME key=value ...`. */
export function report(t: TestLike, scenario: string, fields: Record<string, string | number>): void {
  const kv = Object.entries(fields).map(([k, v]) => `${k}=${typeof v === 'number' ? Math.round(v) : v}`);
  t.comment(`failover: scenario=${scenario} ${kv.join(' ')}`);
}

/**
 * A file held open (unlinked, or O_TMPFILE) by `holder` on the mount: kept
 * while its client lives; then the client is SIGKILLed with the file open
 * (no last close will ever come) and the bricks must reclaim its inode and
 * blocks once the client's session record expired (counts back to `before`).
 */
export async function killClientAndAwaitReclaim(
  t: Test,
  c: Cluster,
  holder: { kill(signal: NodeJS.Signals): unknown },
  before: { inodes: number; blocks: number },
  what: string,
): Promise<void> {
  await new Promise((r) => setTimeout(r, 3000));
  t.equal((await c.counts()).inodes, before.inodes + 1, `${what}: kept while its client lives`);
  process.kill(c.mountPid, 'SIGKILL');
  holder.kill('SIGKILL');
  await waitUntil(
    async () => {
      const n = await c.counts();
      return n.inodes === before.inodes && n.blocks === before.blocks;
    },
    `the dead client’s ${what} reclaimed`,
    30_000,
    250,
  );
}

export { errorSummary };
