/**
 * Pipelined appends on three in-process bricks (trio.ts): while a PG's
 * replicas are busy, the primary goes on sequencing and writing the PG's
 * next entries (up to replicateInflightMax unacknowledged), and each replica
 * gets them in order, several per Replicate. Every append still resolves
 * only once every replica has its entry; one that a replica did not take
 * fails together with everything queued behind it.
 */
import { blockPg, initHashing } from '@dunix/proto';
import t from 'tap';
import { pattern, PG_COUNT, trio, type Id } from './trio.js';

t.before(() => initHashing());

const INO = (1n << 48n) | 5n;
/** Block indexes of INO that live in one PG (so their writes share an append queue). */
function indexesInOnePg(n: number): { pg: number; indexes: bigint[] } {
  const pg = blockPg(INO, 0n, PG_COUNT);
  const indexes: bigint[] = [];
  for (let i = 0n; indexes.length < n; i++) if (blockPg(INO, i, PG_COUNT) === pg) indexes.push(i);
  return { pg, indexes };
}

/** A gate the replicas wait at: closed until opened. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  return { opened, open };
}

async function run(inflightMax: number) {
  const { pg, indexes } = indexesInOnePg(12);
  const calls: { id: Id; seqs: bigint[] }[] = [];
  const g = gate();
  let holding = false;
  const tr = await trio(
    { replicateInflightMax: inflightMax },
    {
      beforeReplicate: async (id, p, entries) => {
        if (p !== pg) return;
        calls.push({ id, seqs: entries.map((e) => e.seq) });
        if (holding) await g.opened;
      },
    },
  );
  const st = tr.bricks.A.copy(pg);
  const before = st.opSeq;
  holding = true;
  let acked = 0;
  const writes = indexes.map((index, i) =>
    tr.bricks.A.writeBlock(pg, INO, index, 0, pattern(i + 1, 4096)).then(() => acked++),
  );
  // Let the primary go as far as it may while the replicas hold the first Replicate.
  for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
  const aheadWhileHeld = st.opSeq - before;
  const ackedWhileHeld = acked;
  holding = false;
  g.open();
  await Promise.all(writes);
  return { tr, pg, indexes, calls, before, aheadWhileHeld, ackedWhileHeld };
}

t.test(
  'a busy PG sends its next entries together, in order, and acknowledges each once all have it',
  async (t) => {
    const r = await run(32);
    t.equal(r.ackedWhileHeld, 0, 'nothing acknowledged while the replicas held the first Replicate');
    t.equal(r.aheadWhileHeld, 12n, 'the primary wrote all 12 entries meanwhile (in-flight limit 32)');
    for (const id of ['B', 'C'] as const) {
      const mine = r.calls.filter((c) => c.id === id);
      const seqs = mine.flatMap((c) => c.seqs);
      t.same(
        seqs,
        Array.from({ length: 12 }, (_v, i) => r.before + 1n + BigInt(i)),
        `${id} got every entry once, in sequence order`,
      );
      t.ok(mine.length < 12, `${id}: ${mine.length} Replicate calls carried the 12 entries`);
      t.equal(mine[0]!.seqs.length, 1, `${id}: the first entry went at once, alone`);
    }
    const sts = (['A', 'B', 'C'] as const).map((id) => r.tr.bricks[id].copy(r.pg).opSeq);
    t.same(sts, [sts[0], sts[0], sts[0]], 'every copy at the same log position');
    for (const [i, index] of r.indexes.entries())
      for (const id of ['A', 'B', 'C'] as const)
        t.same(r.tr.blocks[id].bytesOf(r.pg, INO, index), pattern(i + 1, 4096), `${id} holds block ${index}`);
  },
);

t.test('with replicateInflightMax 1 the PG appends one entry at a time (the comparison)', async (t) => {
  const r = await run(1);
  t.equal(r.aheadWhileHeld, 1n, 'only the first entry was written while the replicas held it');
  for (const id of ['B', 'C'] as const) {
    const mine = r.calls.filter((c) => c.id === id);
    t.ok(
      mine.every((c) => c.seqs.length === 1),
      `${id}: one entry per Replicate`,
    );
    t.equal(mine.length, 12, `${id}: 12 calls`);
  }
});

t.test('the in-flight limit holds the primary back', async (t) => {
  const r = await run(4);
  t.equal(r.aheadWhileHeld, 4n, 'four entries written ahead of the replicas, no more');
  t.equal(r.ackedWhileHeld, 0);
});

t.test('an entry a replica did not take fails, and so does everything queued behind it', async (t) => {
  const { pg, indexes } = indexesInOnePg(6);
  const g = gate();
  let failNext = false;
  let started = false;
  const tr = await trio(
    {},
    {
      beforeReplicate: async (id, p) => {
        if (p !== pg || id !== 'B' || !started) return;
        if (failNext) {
          failNext = false;
          await g.opened;
          throw new Error('link cut');
        }
      },
    },
  );
  started = true;
  failNext = true;
  const results = indexes.map((index, i) =>
    tr.bricks.A.writeBlock(pg, INO, index, 0, pattern(i + 1, 1024)).then(
      () => 'acked',
      (err: unknown) => String(err),
    ),
  );
  for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
  g.open();
  const out = await Promise.all(results);
  // The trio's map is fixed (a compare-and-swap always loses): dropping B
  // fails, so the PG stops serving rather than acknowledge without B.
  t.ok(
    out.every((o) => o !== 'acked'),
    `no write acknowledged: ${out.join(' | ')}`,
  );
  t.equal(tr.bricks.A.copy(pg).ready, false, 'the primary stopped serving the PG');
});
