/**
 * Scrub: the digest and comparison of key ranges (pure), and the whole
 * protocol on three in-process bricks (trio.ts) with planted damage: a
 * replica's block corrupted or deleted, the primary's block corrupted,
 * every copy of a block corrupted (reported, never overwritten), keys that
 * differ, are missing or extra on a replica; a clean PG reports nothing;
 * a replica behind the primary's log refuses; the reads are paced.
 */
import type { ScrubJob, ScrubPgResult } from '@dunix/coord';
import { createLogger, initHashing, pgOfIno, ROOT_INO } from '@dunix/proto';
import t, { type Test } from 'tap';
import { KeyKind, keys } from '../../src/store/keys.js';
import { prefixEnd } from '../../src/store/kv.js';
import {
  describeDiff,
  diffRows,
  digestOf,
  rowHash,
  scrubRows,
  scrubSegments,
} from '../../src/replication/scrub-digest.js';
import type { ScrubOutcome } from '../../src/replication/scrub.js';
import { ScrubRunner } from '../../src/scrub-runner.js';
import { BLOCK, IDS, pattern, PG_COUNT, root, trio, type Id, type Trio } from './trio.js';

t.before(() => initHashing());

const k = (s: string) => Buffer.from([0, 1, 0x49, ...Buffer.from(s)]);
const row = (key: Buffer, v: string) => ({ key, value: Buffer.from(v) });

t.test('digest: rows, hashes, segments and differences', async (t) => {
  const a = scrubRows([row(k('a'), '1'), row(k('b'), '2'), row(k('c'), '3')]);
  t.equal(a.length, 3);
  t.equal(
    digestOf(a, 0).digest,
    digestOf(scrubRows([row(k('a'), '1'), row(k('b'), '2'), row(k('c'), '3')]), 0).digest,
  );
  t.not(
    digestOf(a, 0).digest,
    digestOf(scrubRows([row(k('a'), '1'), row(k('b'), '2'), row(k('c'), '4')]), 0).digest,
  );
  t.not(digestOf(a, 0).digest, digestOf(a.slice(0, 2), 0).digest, 'a row fewer');
  t.not(
    rowHash(Buffer.from('ab'), Buffer.from('c')),
    rowHash(Buffer.from('a'), Buffer.from('bc')),
    'key/value split counts',
  );
  t.match(digestOf([], 0).digest, /^[0-9a-f]{16}$/);
  // The log and brick keys are not compared.
  const log = keys.log(1, 5n);
  const brickKey = Buffer.from([0xff, 0xff, 0xff, 0x49]);
  t.same(
    scrubRows([
      row(k('a'), '1'),
      { key: log, value: Buffer.from('x') },
      { key: brickKey, value: Buffer.from('y') },
    ]).length,
    1,
  );
  // Segments cover the PG but its log and brick keys, in order.
  const [s1, s2] = scrubSegments(7);
  t.ok(
    Buffer.compare(s1!.from, keys.meta(7)) <= 0 && Buffer.compare(keys.meta(7), s2!.to) < 0,
    'meta inside',
  );
  t.ok(Buffer.compare(keys.inode(7, 9n), s1!.to) < 0, 'inodes in the first');
  t.ok(
    Buffer.compare(keys.trim(7, 9n), s2!.from) >= 0 && Buffer.compare(keys.trim(7, 9n), s2!.to) < 0,
    'trims in the second',
  );
  const log7 = keys.log(7, 5n);
  t.ok(Buffer.compare(log7, s1!.to) >= 0 && Buffer.compare(log7, s2!.from) < 0, 'the log between them');
  t.ok(Buffer.compare(s2!.to, prefixEnd(keys.pgPrefix(7))) < 0, 'brick keys (kind 0xff) past the end');
  // Differences.
  const b = scrubRows([row(k('b'), '2'), row(k('c'), 'x'), row(k('d'), '4')]);
  const d = diffRows(a, b);
  t.same(d.differ, [k('c')]);
  t.same(d.missing, [k('a')]);
  t.same(d.extra, [k('d')]);
  t.equal(describeDiff(d), '1 with other values, 1 missing, 1 extra');
  t.same(diffRows(a, a), { differ: [], missing: [], extra: [] });
  t.same(diffRows([], a).extra.length, 3);
});

/** Files with blocks in every PG, and some namespace keys. */
async function populate(
  c: Trio,
): Promise<{ blocks: { ino: bigint; index: bigint; pg: number; data: Buffer }[] }> {
  const A = c.bricks.A;
  for (let i = 0; i < 6; i++) {
    const name = Buffer.from(`d${i}`);
    await A.mutate(pgOfIno(ROOT_INO), `mk${i}`, 'mkdir', (tx) =>
      A.engine.mkdir(tx, root, ROOT_INO, name, 0o755),
    );
  }
  await A.mutate(0, 'x1', 'setxattr', (tx) =>
    A.engine.setxattr(tx, root, ROOT_INO, Buffer.from('user.k'), Buffer.from('v'), 0),
  );
  const out: { ino: bigint; index: bigint; pg: number; data: Buffer }[] = [];
  for (let i = 0; i < 16; i++) {
    const ino = (BigInt(i % 4) << 48n) | BigInt(1000 + i);
    const index = BigInt(i);
    const data = pattern(i + 1, i % 3 === 0 ? BLOCK : 100_000 + i);
    const pg = await c.writeBlock(ino, index, data);
    out.push({ ino, index, pg, data });
  }
  return { blocks: out };
}

async function scrubAll(c: Trio): Promise<ScrubOutcome[]> {
  const out: ScrubOutcome[] = [];
  for (let pg = 0; pg < PG_COUNT; pg++) out.push(await c.bricks.A.repl.scrub.scrubPg(c.bricks.A.copy(pg)));
  return out;
}

const problems = (os: ScrubOutcome[]) => os.flatMap((o) => o.problems);

/** Every scrubbed key and block file of the PG on each brick, as one string, for comparisons. */
async function stateOf(c: Trio, id: Id, pg: number): Promise<string> {
  const rows = await c.kvs[id].range({ gte: keys.pgPrefix(pg), lt: prefixEnd(keys.pgPrefix(pg)) });
  const kv = rows
    .filter((r) => r.key[2] !== KeyKind.log)
    .map((r) => `${r.key.toString('hex')}=${r.value.toString('hex')}`);
  const files = [...c.blocks[id].dump(pg)].map(([name, b]) => `${name}:${b.toString('hex')}`);
  return [...kv, ...files].join('\n');
}

async function identical(t: Test, c: Trio, what: string): Promise<void> {
  for (let pg = 0; pg < PG_COUNT; pg++) {
    const a = await stateOf(c, 'A', pg);
    for (const id of ['B', 'C'] as const)
      t.ok(a === (await stateOf(c, id, pg)), `${what}: pg ${pg} on ${id} equals A`);
  }
}

t.test('a clean volume: every range compared, nothing found, nothing written', async (t) => {
  const c = await trio();
  await populate(c);
  const seqs = IDS.map((id) => c.bricks[id].copy(0).opSeq);
  const os = await scrubAll(c);
  t.ok(
    os.every((o) => o.complete),
    'every PG complete',
  );
  t.same(problems(os), [], 'no problems');
  t.same(
    os.flatMap((o) => o.skipped),
    [],
    'no replica skipped',
  );
  t.same(os[0]!.replicas, ['B', 'C']);
  t.equal(
    os.reduce((n, o) => n + o.blocks, 0),
    16,
    'every block verified',
  );
  t.ok(os.reduce((n, o) => n + o.bytes, 0) > 16 * 100_000, 'bytes counted');
  t.same(
    IDS.map((id) => c.bricks[id].copy(0).opSeq),
    seqs,
    'no entry appended',
  );
  await identical(t, c, 'clean');
});

t.test("a replica's corrupted and deleted blocks are repaired from the primary", async (t) => {
  const c = await trio();
  const { blocks } = await populate(c);
  const [x, y] = [blocks[3]!, blocks[6]!];
  const bad = c.blocks.B.bytesOf(x.pg, x.ino, x.index)!;
  bad[bad.length - 7]! ^= 0x40;
  c.blocks.B.setBytes(x.pg, x.ino, x.index, bad);
  c.blocks.C.setBytes(y.pg, y.ino, y.index, undefined);
  const os = await scrubAll(c);
  const ps = problems(os);
  t.equal(ps.length, 2, 'two wrong copies');
  t.match(
    ps.find((p) => p.brick === 'B'),
    { kind: 'block-corrupt', ino: x.ino, index: x.index, state: 'repaired' },
  );
  t.match(
    ps.find((p) => p.brick === 'C'),
    { kind: 'block-missing', ino: y.ino, index: y.index, state: 'repaired' },
  );
  t.ok(c.blocks.B.bytesOf(x.pg, x.ino, x.index)!.equals(x.data), 'B has the bytes again');
  t.ok(c.blocks.C.bytesOf(y.pg, y.ino, y.index)!.equals(y.data), 'C has the file again');
  await identical(t, c, 'repaired');
  t.same(problems(await scrubAll(c)), [], 'a second scrub finds nothing');
  // The repair went through the log: the log position is the same on every copy.
  t.equal(c.bricks.B.copy(x.pg).opSeq, c.bricks.A.copy(x.pg).opSeq);
});

t.test("the primary's bad block is healed from a replica", async (t) => {
  const c = await trio();
  const { blocks } = await populate(c);
  const x = blocks[5]!;
  const bad = c.blocks.A.bytesOf(x.pg, x.ino, x.index)!;
  c.blocks.A.setBytes(x.pg, x.ino, x.index, bad.subarray(0, bad.length - 1000));
  const ps = problems(await scrubAll(c));
  t.equal(ps.length, 1);
  t.match(ps[0], {
    brick: 'A',
    kind: 'block-corrupt',
    ino: x.ino,
    index: x.index,
    state: 'repaired',
    detail: /healed from/,
  });
  t.ok(c.blocks.A.bytesOf(x.pg, x.ino, x.index)!.equals(x.data));
  await identical(t, c, 'healed');
});

t.test('a block no copy verifies is reported unrecoverable and left alone', async (t) => {
  const c = await trio();
  const { blocks } = await populate(c);
  const x = blocks[9]!;
  const damaged: Record<string, Buffer> = {};
  for (const id of IDS) {
    const b = c.blocks[id].bytesOf(x.pg, x.ino, x.index)!;
    b[IDS.indexOf(id) * 1000]! ^= 1 + IDS.indexOf(id);
    c.blocks[id].setBytes(x.pg, x.ino, x.index, b);
    damaged[id] = b;
  }
  const ps = problems(await scrubAll(c));
  t.equal(ps.length, 3, 'one per copy');
  t.ok(
    ps.every((p) => p.state === 'unrecoverable' && p.ino === x.ino && p.index === x.index),
    'all unrecoverable',
  );
  for (const id of IDS)
    t.ok(c.blocks[id].bytesOf(x.pg, x.ino, x.index)!.equals(damaged[id]!), `${id}'s copy is not overwritten`);
  // Reading it fails as before (EIO), rather than returning a guess.
  await t.rejects(c.bricks.A.readBlock(x.pg, x.ino, x.index, 0, 10), { code: 'CORRUPT' });
  t.equal(problems(await scrubAll(c)).length, 3, 'found again next time');
});

t.test("a replica's keys that differ, are missing or extra are set to the primary's", async (t) => {
  const c = await trio();
  const { blocks } = await populate(c);
  const pg = pgOfIno(ROOT_INO);
  const inode = keys.inode(pg, ROOT_INO);
  const good = (await c.kvs.A.get(inode))!;
  const xattr = keys.xattr(pg, ROOT_INO, Buffer.from('user.k'));
  const stray = keys.xattr(pg, ROOT_INO, Buffer.from('user.stray'));
  await c.kvs.B.write(
    [
      { key: inode, value: Buffer.from('{"broken":true}') },
      { key: xattr, value: undefined },
    ],
    true,
  );
  await c.kvs.C.write([{ key: stray, value: Buffer.from('zz') }], true);
  // A block record only C has (and its file), and one B lacks.
  const ghost = { ino: 77n, index: 0n };
  const gpg = blocks[0]!.pg;
  await c.kvs.C.write(
    [
      {
        key: keys.block(gpg, ghost.ino, ghost.index),
        value: (await c.kvs.A.get(keys.block(gpg, blocks[0]!.ino, 0n)))!,
      },
    ],
    true,
  );
  c.blocks.C.setBytes(gpg, ghost.ino, ghost.index, blocks[0]!.data);
  const y = blocks[2]!;
  await c.kvs.B.write([{ key: keys.block(y.pg, y.ino, y.index), value: undefined }], true);
  const ps = problems(await scrubAll(c));
  const byBrick = (id: string) => ps.filter((p) => p.brick === id);
  t.ok(byBrick('B').length >= 1 && byBrick('C').length >= 1, 'both replicas reported');
  t.ok(
    ps.every((p) => p.kind === 'keys-differ' && p.state === 'repaired'),
    `all repaired: ${JSON.stringify(ps, (_k, v) => (typeof v === 'bigint' ? String(v) : v))}`,
  );
  t.ok((await c.kvs.B.get(inode))!.equals(good), "the inode is the primary's again");
  t.ok((await c.kvs.B.get(xattr))?.equals(Buffer.from('v')), 'the missing xattr is back');
  t.equal(await c.kvs.C.get(stray), undefined, 'the extra one is gone');
  t.equal(
    c.blocks.C.bytesOf(gpg, ghost.ino, ghost.index),
    undefined,
    'the extra block file is gone with its record',
  );
  t.ok(c.blocks.B.bytesOf(y.pg, y.ino, y.index)!.equals(y.data), "B's block and record are back");
  await identical(t, c, 'keys repaired');
  t.same(problems(await scrubAll(c)), [], 'a second scrub finds nothing');
});

t.test('a key no other copy agrees with the primary on is reported, and no copy of it changed', async (t) => {
  const c = await trio();
  await populate(c);
  const pg = pgOfIno(ROOT_INO);
  const inode = keys.inode(pg, ROOT_INO);
  const good = (await c.kvs.A.get(inode))!;
  const other = Buffer.from('{"other":1}');
  // Both replicas agree with each other, not with the primary.
  await c.kvs.B.write([{ key: inode, value: other }], true);
  await c.kvs.C.write([{ key: inode, value: other }], true);
  // And in the same range, a key only B lacks: the primary and C agree on it.
  const xattr = keys.xattr(pg, ROOT_INO, Buffer.from('user.k'));
  await c.kvs.B.write([{ key: xattr, value: undefined }], true);
  let ps = problems(await scrubAll(c));
  const disputed = ps.filter((p) => p.state === 'unrecoverable');
  t.equal(disputed.length, 2, 'the inode: one per replica');
  t.ok(
    disputed.every((p) => p.kind === 'keys-differ' && p.keys === 1 && /every copy left/.test(p.detail)),
    'unrecoverable, left alone',
  );
  t.match(
    ps.filter((p) => p.state !== 'unrecoverable'),
    [{ brick: 'B', kind: 'keys-differ', keys: 1, state: 'repaired' }],
    "B's missing xattr (C has it) repaired",
  );
  t.ok((await c.kvs.B.get(xattr))?.equals(Buffer.from('v')));
  t.ok((await c.kvs.A.get(inode))!.equals(good), "the primary's inode unchanged");
  t.ok((await c.kvs.B.get(inode))!.equals(other), "B's unchanged");
  // All three differ: still reported, nothing changed.
  await c.kvs.C.write([{ key: inode, value: Buffer.from('{"third":1}') }], true);
  ps = problems(await scrubAll(c));
  t.ok(ps.length === 2 && ps.every((p) => p.state === 'unrecoverable'), 'reported, not repaired');
  t.ok((await c.kvs.C.get(inode))!.equals(Buffer.from('{"third":1}')), "C's unchanged");
  // A replica agreeing with the primary makes its value the good one.
  await c.kvs.B.write([{ key: inode, value: good }], true);
  ps = problems(await scrubAll(c));
  t.match(ps, [{ brick: 'C', kind: 'keys-differ', state: 'repaired' }]);
  t.ok((await c.kvs.C.get(inode))!.equals(good), 'C repaired from the corroborated primary');
  t.same(problems(await scrubAll(c)), [], 'then nothing');
});

t.test("a replica answers only at the primary's log position, and in its own PG", async (t) => {
  const c = await trio();
  await populate(c);
  const st = c.bricks.B.copy(0);
  const [seg] = scrubSegments(0);
  const req = { seq: st.opSeq + 1n, fromKey: seg!.from, toKey: seg!.to, verifyBlocks: true, rows: false };
  await t.rejects(c.bricks.B.repl.scrubDigest(st, 1, req), { code: 'LOG_GAP' }, 'behind the primary');
  await t.rejects(
    c.bricks.B.repl.scrubDigest(st, 1, { ...req, seq: st.opSeq, fromKey: scrubSegments(1)[0]!.from }),
    { code: 'INVALID_ARGUMENT' },
    'a range of another PG',
  );
  const ok = await c.bricks.B.repl.scrubDigest(st, 1, { ...req, seq: st.opSeq });
  t.match(ok, { digest: /^[0-9a-f]{16}$/, badBlocks: [] });
  await t.rejects(
    c.bricks.B.repl.scrubDigest(st, 0, { ...req, seq: st.opSeq }),
    { code: 'STALE_EPOCH' },
    'an older epoch',
  );
  await t.rejects(c.bricks.B.repl.scrub.scrubPg(st), { code: 'NOT_PRIMARY' }, 'only a primary scrubs');
});

t.test('reads are paced under the limit, and a scrub can be cancelled', async (t) => {
  const c = await trio({ scrubChunkKeys: 4, scrubChunkBytes: 64 * 1024 });
  await populate(c);
  const bytesPerS = 1024 * 1024;
  c.bricks.A.repl.scrub.setLimit(bytesPerS);
  const os = await scrubAll(c);
  const bytes = os.reduce((n, o) => n + o.bytes, 0);
  t.same(problems(os), []);
  const expectMs = (bytes / bytesPerS) * 1000;
  t.ok(
    c.clock.slept >= expectMs * 0.9 && c.clock.slept <= expectMs * 1.1,
    `slept ${c.clock.slept} ms for ${bytes} bytes at 1 MiB/s`,
  );
  let calls = 0;
  const o = await c.bricks.A.repl.scrub.scrubPg(c.bricks.A.copy(0), { cancelled: () => ++calls > 2 });
  t.equal(o.complete, false, 'cancelled between ranges');
});

t.test('the runner scrubs the PGs its brick leads while the job runs, each recorded once', async (t) => {
  const c = await trio();
  const { blocks } = await populate(c);
  const results = new Map<number, ScrubPgResult>();
  const reports: string[] = [];
  const orphans: string[] = [];
  let stale = false;
  const runner = new ScrubRunner({
    brick: c.bricks.A,
    brickId: 'A',
    control: {
      result: async (pg) => results.get(pg),
      report: async (r) => {
        reports.push(`${r.jobId}/${r.pg}`);
        if (stale) return 'stale';
        if (results.get(r.pg)?.jobId === r.jobId) return 'duplicate';
        results.set(r.pg, r);
        return 'recorded';
      },
      orphansRemoved: async (jobId, count) => {
        orphans.push(`${jobId}:${count}`);
      },
    },
    knobs: { scrubBytesPerS: 0, scrubRescanMs: 5 },
    log: createLogger('runner', () => {}),
    clock: { nowMs: () => Date.now(), sleep: (ms) => new Promise((r) => setTimeout(r, ms)) },
    wallMs: () => 42,
  });
  t.teardown(() => runner.stop());
  const job = (id: string, state: ScrubJob['state'] = 'running'): ScrubJob => ({
    id,
    state,
    trigger: 'operator',
    startedAtMs: 1,
    updatedAtMs: 1,
    pgsTotal: PG_COUNT,
    pgsDone: 0,
    bytesVerified: 0,
    found: 0,
    repaired: 0,
    unrecoverable: 0,
  });
  // Damage on a replica: its PG's result says what was found and repaired.
  const x = blocks[4]!;
  c.blocks.C.setBytes(x.pg, x.ino, x.index, undefined);
  // A block file no record names (a crash between a block write and its entry), on A's copy of PG 1.
  const orphan = { pg: 1, ino: (1n << 48n) | 777n, index: 3n };
  c.blocks.A.setBytes(orphan.pg, orphan.ino, orphan.index, Buffer.alloc(100, 1));
  runner.setJob(job('j1'));
  const until = async (cond: () => boolean) => {
    for (let i = 0; i < 400 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  };
  await until(() => results.size === PG_COUNT);
  t.same([...results.keys()].sort(), [0, 1, 2, 3], 'every PG recorded');
  t.same(reports.sort(), ['j1/0', 'j1/1', 'j1/2', 'j1/3'], 'each once');
  t.same(orphans, ['j1:1'], 'the orphan block file was removed and counted for the job');
  t.same(
    (await c.blocks.A.list(orphan.pg)).filter((b) => b.ino === orphan.ino),
    [],
    'its file is gone',
  );
  t.ok((await c.blocks.A.list(x.pg)).length > 0, 'files with records stay');
  const r = results.get(x.pg)!;
  t.match(r, {
    jobId: 'j1',
    brick: 'A',
    epoch: 1,
    atMs: 42,
    replicas: ['B', 'C'],
    skipped: [],
    found: 1,
    repaired: 1,
  });
  t.match(r.problems[0], {
    kind: 'block-missing',
    brick: 'C',
    ino: x.ino.toString(),
    index: x.index.toString(),
    state: 'repaired',
  });
  // Rescans find nothing new; the same job again changes nothing.
  runner.setJob(job('j1'));
  await new Promise((r) => setTimeout(r, 50));
  t.equal(reports.length, 4, 'no PG scrubbed twice for one job');
  t.same(orphans, ['j1:1'], 'swept once per job');
  // A new job scrubs again; a stale answer ends the pass.
  runner.setJob(job('j2'));
  await until(() => [...results.values()].every((v) => v.jobId === 'j2'));
  t.ok(
    [...results.values()].every((v) => v.jobId === 'j2' && v.found === 0),
    'j2: every PG again, clean now',
  );
  stale = true;
  runner.setJob(job('j3', 'stopped'));
  await new Promise((r) => setTimeout(r, 50));
  t.notOk(
    reports.some((x) => x.startsWith('j3')),
    'a stopped job scrubs nothing',
  );
  // The job's throttle reaches the scrubber (1 MiB/s on the manual clock).
  runner.setJob({ ...job('j4'), maxMiBPerS: 1 });
  await until(() => reports.some((x) => x.startsWith('j4')));
  await runner.stop();
  t.ok(c.clock.slept > 0, 'paced by the job limit');
});
