import t from 'tap';
import {
  createLogger,
  directoryPg,
  FsError,
  initHashing,
  pgOfIno,
  ROOT_INO,
  type PgAssignment,
  type VolumeConfig,
} from '@dunix/proto';
import { Brick, type BrickDeps, type PgEndpoint, type TxKeyValue } from '../../src/brick.js';
import type { BlockFiles } from '../../src/store/block-files.js';
import { brickDefaults } from '../../src/config.js';
import type { Cred } from '../../src/namespace/api.js';
import { NamespaceEngine } from '../../src/namespace/engine.js';
import { KeyKind } from '../../src/store/keys.js';
import { MemoryKv } from '../../src/store/memory-kv.js';

/**
 * The brick's mutation path in process: two bricks over MemoryKv stores
 * talking through an in-memory PgEndpoint. A "crash" is an exception thrown
 * at a fault point; the brick is then rebuilt from its store alone (what a
 * SIGKILL leaves) and the recovery sweep runs. Whatever the crash point, a
 * cross-PG operation must end fully applied or not at all.
 */

const PG_COUNT = 8;
const volume: VolumeConfig = {
  name: 'sim',
  pgCount: PG_COUNT,
  replicas: 1,
  minInsync: 1,
  blockSizeBytes: 65536,
  inlineMaxBytes: 4096,
  createdAtMs: 0,
};
const root: Cred = { uid: 0, gid: 0, groups: [] };
const log = createLogger('sim', () => {});
const noBlocks = new Proxy({} as BlockFiles, {
  get: () => () => Promise.reject(new Error('no block I/O in this test')),
});

class Crash extends Error {}

/** Replication deps of a PG with one copy: no peers, a fixed map, a lease that always holds. */
function solo(map: PgAssignment[]): BrickDeps['replication'] {
  return {
    transport: new Proxy({} as BrickDeps['replication']['transport'], {
      get: () => () => Promise.reject(new FsError('UNAVAILABLE', 'no peers in this test')),
    }),
    placement: {
      read: async (pg) => map[pg]!,
      update: () => Promise.reject(new FsError('STALE_EPOCH', 'fixed map')),
    },
    lease: { fenced: () => false },
    clock: { nowMs: () => 0, sleep: async () => {} },
  };
}

/** Routes each PG to whichever simulated brick serves it. */
class Net implements PgEndpoint {
  bricks: Brick[] = [];
  private at(pg: number): Brick {
    const b = this.bricks.find((x) => x.pgs.has(pg));
    if (!b) throw new FsError('UNAVAILABLE', `pg ${pg} is down`);
    return b;
  }
  txRead = (pg: number, keys: Buffer[]) => this.at(pg).txRead(pg, keys);
  txPrepare = (pg: number, id: string, c: number, r: TxKeyValue[], w: TxKeyValue[]) =>
    this.at(pg).txPrepare(pg, id, c, r, w);
  txCommit = (pg: number, id: string) => this.at(pg).txCommit(pg, id);
  txAbort = (pg: number, id: string) => this.at(pg).txAbort(pg, id);
  txStatus = (pg: number, id: string) => this.at(pg).txStatus(pg, id);
  allocIno = (pg: number) => this.at(pg).allocIno(pg);
  reclaim = (pg: number, ino: bigint) => this.at(pg).reclaim(pg, ino);
  truncateBlocks = (pg: number, ino: bigint, size: bigint) => this.at(pg).truncateBlocks(pg, ino, size);
  readBlock = (pg: number, ino: bigint, index: bigint, offset: number, length: number) =>
    this.at(pg).readBlock(pg, ino, index, offset, length);
  punchBlocks = (pg: number, ino: bigint, from: bigint, to: bigint) =>
    this.at(pg).punchBlocks(pg, ino, from, to);
  readBlockRecord = (pg: number, ino: bigint, index: bigint) => this.at(pg).readBlockRecord(pg, ino, index);
}

/** PGs 0..3 on brick A, 4..7 on brick B. */
const placement: PgAssignment[] = Array.from({ length: PG_COUNT }, (_v, pg) => ({
  pg,
  bricks: [pg < 4 ? 'A' : 'B'],
  isr: [pg < 4 ? 'A' : 'B'],
  epoch: 1,
}));

interface Cluster {
  net: Net;
  kvs: Record<'A' | 'B', ScanCountingKv>;
  start(id: 'A' | 'B', faults?: string[]): Promise<Brick>;
  brick(id: 'A' | 'B'): Brick;
}

let clock = 1_000_000_000n;

async function cluster(): Promise<Cluster> {
  await initHashing();
  const net = new Net();
  const kvs = { A: new ScanCountingKv(), B: new ScanCountingKv() };
  const byId = new Map<string, Brick>();
  const c: Cluster = {
    net,
    kvs,
    async start(id, faults = []) {
      const brick = new Brick({
        brickId: id,
        volume,
        kv: kvs[id],
        blocks: noBlocks,
        engine: new NamespaceEngine({ pgCount: PG_COUNT, inlineMaxBytes: 4096, blockSizeBytes: 65536 }),
        knobs: { ...brickDefaults, txResolveAfterMs: 1, conflictWaitMaxMs: 2000 },
        log,
        clockNs: () => (clock += 1000n),
        remote: net,
        fault: (point) => {
          if (faults.includes(point)) throw new Crash(point);
        },
        replication: solo(placement),
      });
      const old = byId.get(id);
      if (old) {
        old.stop();
        net.bricks = net.bricks.filter((b) => b !== old);
      }
      await brick.applyPlacement(placement);
      await brick.settled();
      byId.set(id, brick);
      net.bricks.push(brick);
      return brick;
    },
    brick: (id) => byId.get(id)!,
  };
  await c.start('A');
  await c.start('B');
  return c;
}

const ownerOf = (pg: number): 'A' | 'B' => (pg < 4 ? 'A' : 'B');

/** A MemoryKv that counts the range scans of the kinds the recovery sweep finishes. */
class ScanCountingKv extends MemoryKv {
  sweepScans = 0;
  override range(opts: Parameters<MemoryKv['range']>[0]) {
    const kind = (opts.gte ?? opts.gt)?.[2];
    if (kind === KeyKind.decision || kind === KeyKind.trim || kind === KeyKind.orphan) this.sweepScans++;
    return super.range(opts);
  }
}

/** A name whose new directory lands on the other brick than its parent's PG. */
function crossName(parent: bigint, prefix: string): Buffer {
  for (let i = 0; ; i++) {
    const name = Buffer.from(`${prefix}${i}`);
    if (ownerOf(directoryPg(parent, name, PG_COUNT)) !== ownerOf(pgOfIno(parent))) return name;
  }
}

function mkdir(c: Cluster, parent: bigint, name: Buffer, requestId = '') {
  const pg = pgOfIno(parent);
  return c
    .brick(ownerOf(pg))
    .mutate(pg, requestId, 'mkdir', (tx) => c.brick(ownerOf(pg)).engine.mkdir(tx, root, parent, name, 0o755));
}

async function lookup(c: Cluster, parent: bigint, name: Buffer) {
  const pg = pgOfIno(parent);
  try {
    return await c
      .brick(ownerOf(pg))
      .read(pg, (tx) => c.brick(ownerOf(pg)).engine.lookup(tx, root, parent, name));
  } catch (err) {
    if (err instanceof FsError && err.code === 'NOT_FOUND') return undefined;
    throw err;
  }
}

async function getattr(c: Cluster, ino: bigint) {
  const pg = pgOfIno(ino);
  return c.brick(ownerOf(pg)).read(pg, (tx) => c.brick(ownerOf(pg)).engine.getattr(tx, ino));
}

/** Keys of one kind left in a brick's store (prepared transactions, decisions). */
async function countKind(kv: MemoryKv, kind: number): Promise<number> {
  let n = 0;
  for (const e of await kv.range({ gte: Buffer.alloc(1, 0), lt: Buffer.alloc(3, 0xff) }))
    if (e.key[2] === kind) n++;
  return n;
}

async function settle(c: Cluster): Promise<void> {
  for (let i = 0; i < 3; i++) {
    await c.brick('A').recoverySweep();
    await c.brick('B').recoverySweep();
  }
}

t.test('a request id reused by an op of another kind is refused, stored or in flight', async (t) => {
  const c = await cluster();
  const pg = pgOfIno(ROOT_INO);
  const b = c.brick(ownerOf(pg));
  const name = Buffer.from('kinds');
  const made = await b.mutate(pg, 'req-k', 'mkdir', (tx) => b.engine.mkdir(tx, root, ROOT_INO, name, 0o755));
  const err = await b
    .mutate(pg, 'req-k', 'rmdir', (tx) => b.engine.rmdir(tx, root, ROOT_INO, name))
    .then(
      () => undefined,
      (e: unknown) => e,
    );
  t.ok(
    err instanceof FsError && err.code === 'INVALID_ARGUMENT',
    'a stored mkdir reply is not an rmdir reply',
    {
      found: err,
    },
  );
  t.match((err as Error).message, /belongs to a mkdir, not a rmdir/, 'the error says why');
  t.equal((await lookup(c, ROOT_INO, name))?.dirent.ino, made.inode.ino, 'and nothing was removed');
  const again = await b.mutate(pg, 'req-k', 'mkdir', (tx) => b.engine.mkdir(tx, root, ROOT_INO, name, 0o755));
  t.equal(again.inode.ino, made.inode.ino, 'the same kind still gets its stored reply');
  // Two at once under one id: the second, of another kind, does not get the first's reply.
  const first = b.mutate(pg, 'req-j', 'mkdir', (tx) =>
    b.engine.mkdir(tx, root, ROOT_INO, Buffer.from('j'), 0o755),
  );
  const second = b.mutate(pg, 'req-j', 'unlink', () => Promise.resolve('never run'));
  await t.rejects(
    second,
    { code: 'INVALID_ARGUMENT' },
    'an op of another kind in flight under the id is refused',
  );
  t.ok((await first).inode.ino > 0n, 'the first completes');
});

t.test('a cross-PG mkdir commits on both bricks in one step', async (t) => {
  const c = await cluster();
  const name = crossName(ROOT_INO, 'd');
  const r = await mkdir(c, ROOT_INO, name, 'req-1');
  t.not(ownerOf(pgOfIno(r.inode.ino)), ownerOf(0), 'the new directory lives on the other brick');
  const found = await lookup(c, ROOT_INO, name);
  t.equal(found?.dirent.ino, r.inode.ino, 'the entry names the new inode');
  t.equal((await getattr(c, r.inode.ino)).nlink, 2);
  t.equal((await getattr(c, ROOT_INO)).nlink, 3, 'the parent counts the new subdirectory');
  const again = await mkdir(c, ROOT_INO, name, 'req-1');
  t.equal(again.inode.ino, r.inode.ino, 'a retried request id returns the stored reply');
  t.equal((await getattr(c, ROOT_INO)).nlink, 3, 'and applies nothing twice');
  t.equal(
    await countKind(c.kvs.A, KeyKind.decision),
    0,
    'decision records are dropped once every participant committed',
  );
  t.equal(await countKind(c.kvs.B, KeyKind.prepared), 0);
});

for (const point of ['tx-after-prepare', 'tx-after-decision', 'tx-after-first-commit']) {
  t.test(`a crash of the coordinating brick at ${point} leaves mkdir whole or absent`, async (t) => {
    const c = await cluster();
    const name = crossName(ROOT_INO, 'x');
    await c.start('A', [point]);
    await t.rejects(mkdir(c, ROOT_INO, name, 'req-crash'), { message: point });
    // SIGKILL: the brick comes back from its store alone.
    await c.start('A');
    await settle(c);
    const found = await lookup(c, ROOT_INO, name);
    const rootAttr = await getattr(c, ROOT_INO);
    if (point === 'tx-after-prepare') {
      t.equal(found, undefined, 'before the decision: rolled back');
      t.equal(rootAttr.nlink, 2);
    } else {
      t.ok(found, 'after the decision: finished');
      const child = await getattr(c, found!.dirent.ino);
      t.equal(child.nlink, 2, 'the new directory exists on its brick');
      t.equal(child.parent, ROOT_INO);
      t.equal(rootAttr.nlink, 3);
    }
    t.equal(await countKind(c.kvs.B, KeyKind.prepared), 0, 'no transaction stays prepared');
    t.equal(await countKind(c.kvs.A, KeyKind.decision), 0, 'no decision record stays');
    // The tree stays usable: the name can be (re)created or is taken, never half.
    const retry = await mkdir(c, ROOT_INO, name, 'req-crash').then(
      (r) => r.inode.ino,
      (err: FsError) => err.code,
    );
    if (found) t.equal(retry, found.dirent.ino, 'the retried request is answered from the stored reply');
    else t.type(retry, 'bigint', 'the retried request now succeeds');
    const dir = await lookup(c, ROOT_INO, name);
    const pg = pgOfIno(dir!.dirent.ino);
    const inner = await c
      .brick(ownerOf(pg))
      .mutate(pg, '', 'mknod', (tx) =>
        c.brick(ownerOf(pg)).engine.mknod(tx, root, dir!.dirent.ino, Buffer.from('f'), 0o100644, 0n, true),
      );
    t.equal(inner.inode.nlink, 1, 'files can be created in it');
  });
}

t.test('a crash of the participant before it prepared aborts; rename across bricks is atomic', async (t) => {
  const c = await cluster();
  const a = await mkdir(c, ROOT_INO, crossName(ROOT_INO, 'a'));
  // A second directory on brick A's side (same brick as root).
  let bname: Buffer | undefined;
  for (let i = 0; !bname; i++) {
    const n = Buffer.from(`b${i}`);
    if (ownerOf(directoryPg(ROOT_INO, n, PG_COUNT)) === 'A') bname = n;
  }
  const b = await mkdir(c, ROOT_INO, bname);
  const pgA = pgOfIno(a.inode.ino);
  const file = await c
    .brick(ownerOf(pgA))
    .mutate(pgA, '', 'mknod', (tx) =>
      c.brick(ownerOf(pgA)).engine.mknod(tx, root, a.inode.ino, Buffer.from('f'), 0o100644, 0n, true),
    );
  t.equal(ownerOf(pgA), 'B');
  // Rename a/f -> b/g, coordinated by the source directory's PG (brick B), which crashes after the decision.
  await c.start('B', ['tx-after-decision']);
  await t.rejects(
    c.brick('B').mutate(pgA, 'mv-1', 'rename', (tx) =>
      c.brick('B').engine.rename(tx, root, a.inode.ino, Buffer.from('f'), b.inode.ino, Buffer.from('g'), {
        noReplace: false,
        exchange: false,
      }),
    ),
    { message: 'tx-after-decision' },
  );
  await c.start('B');
  await settle(c);
  const inA = await lookup(c, a.inode.ino, Buffer.from('f'));
  const inB = await lookup(c, b.inode.ino, Buffer.from('g'));
  t.equal(inA, undefined, 'the old name is gone');
  t.equal(inB?.dirent.ino, file.inode.ino, 'the new name is there: exactly one name');
  t.equal((await getattr(c, file.inode.ino)).nlink, 1);
  t.equal((await getattr(c, a.inode.ino)).entries, 0);
  t.equal((await getattr(c, b.inode.ino)).entries, 1);
});

t.test('concurrent cross-PG mkdirs of one name: exactly one wins', async (t) => {
  const c = await cluster();
  const name = crossName(ROOT_INO, 'race');
  const results = await Promise.allSettled(Array.from({ length: 8 }, () => mkdir(c, ROOT_INO, name)));
  const won = results.filter((r) => r.status === 'fulfilled');
  const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  t.equal(won.length, 1, 'one mkdir succeeds');
  t.ok(
    lost.every((r) => r.reason instanceof FsError && r.reason.code === 'ALREADY_EXISTS'),
    'the others see EEXIST',
  );
  t.equal((await getattr(c, ROOT_INO)).nlink, 3);
  t.equal((await getattr(c, ROOT_INO)).entries, 1);
});

t.test(
  'the op log keeps opLogRetain entries per PG, with their stored replies, across a restart',
  async (t) => {
    await initHashing();
    const kv = new MemoryKv();
    const one: PgAssignment[] = [{ pg: 0, bricks: ['A'], isr: ['A'], epoch: 1 }];
    const make = () =>
      new Brick({
        brickId: 'A',
        volume: { ...volume, pgCount: 1 },
        kv,
        blocks: noBlocks,
        engine: new NamespaceEngine({ pgCount: 1, inlineMaxBytes: 4096, blockSizeBytes: 65536 }),
        knobs: { ...brickDefaults, opLogRetain: 4 },
        log,
        clockNs: () => (clock += 1000n),
        remote: new Net(),
        replication: solo(one),
      });
    let brick = make();
    await brick.applyPlacement(one);
    await brick.settled();
    const create = (b: Brick, i: number, retry = false) =>
      b.mutate(
        0,
        `req-${i}`,
        'mknod',
        (tx) => b.engine.mknod(tx, root, ROOT_INO, Buffer.from(`f${i}`), 0o100644, 0n, true),
        retry,
      );
    const inos: bigint[] = [];
    for (let i = 0; i < 6; i++) inos.push((await create(brick, i)).inode.ino);
    const countOf = async (kind: number) => countKind(kv, kind);
    t.equal(await countOf(KeyKind.log), 4, 'four log entries kept');
    t.equal(await countOf(KeyKind.request), 4, 'four stored replies kept');
    t.equal(
      (await create(brick, 5, true)).inode.ino,
      inos[5],
      'a recent request is answered from its stored reply',
    );
    // After a restart the ring is empty: trimming reads the old entries back.
    brick.stop();
    brick = make();
    await brick.applyPlacement(one);
    await brick.settled();
    for (let i = 6; i < 12; i++) await create(brick, i);
    t.equal(await countOf(KeyKind.log), 4, 'still four log entries');
    t.equal(await countOf(KeyKind.request), 4, 'and four stored replies: none leaked across the restart');
    const late = await create(brick, 0, true).then(
      () => 'applied',
      (err: FsError) => err.code,
    );
    t.equal(
      late,
      'ALREADY_EXISTS',
      'a retry older than the window is not replayed from a reply: the name exists',
    );
  },
);

t.test('the recovery sweep scans a PG only while an entry may have left it work', async (t) => {
  const c = await cluster();
  await settle(c);
  const scans = async () => {
    c.kvs.A.sweepScans = 0;
    c.kvs.B.sweepScans = 0;
    await c.brick('A').recoverySweep();
    await c.brick('B').recoverySweep();
    return c.kvs.A.sweepScans + c.kvs.B.sweepScans;
  };
  t.equal(await scans(), 0, 'nothing pending: no PG is scanned');
  // A cross-PG mkdir writes a decision record on the coordinator's PG.
  await mkdir(c, ROOT_INO, crossName(ROOT_INO, 's'));
  t.ok((await scans()) > 0, 'after a decision record was written, its PG is scanned');
  await settle(c);
  t.equal(await scans(), 0, 'once a scan found nothing, the PG is skipped again');
  t.equal(await countKind(c.kvs.A, KeyKind.decision), 0, 'no decision left behind');
  t.equal(await countKind(c.kvs.B, KeyKind.decision), 0);
  // A restarted brick knows nothing of its PGs: it scans each once.
  await c.start('A');
  t.ok((await scans()) > 0, 'a restarted brick scans its PGs');
  t.equal(await scans(), 0, 'and then skips them');
});
