/**
 * SimKv (the simulation's brick store) against MemoryKv: random batches of
 * puts and deletes over short keys, then random ranges (gte or gt, lt,
 * limit, reverse) and gets give the same answers; values are copies.
 */
import fc from 'fast-check';
import t from 'tap';
import { MemoryKv } from '../../src/store/memory-kv.js';
import { SimKv } from './sim-kv.js';

const key = fc
  .uint8Array({ minLength: 0, maxLength: 3, max: 4 })
  .map((a) => Buffer.from(a.map((x) => x * 60)));
const write = fc.record({
  key,
  value: fc.option(fc.uint8Array({ maxLength: 3 }).map((a) => Buffer.from(a))),
});
const range = fc.record({
  from: key,
  exclusive: fc.boolean(),
  lt: key,
  limit: fc.option(fc.integer({ min: 0, max: 6 })),
  reverse: fc.boolean(),
});

t.test('SimKv answers as MemoryKv does', async (t) => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.array(write, { maxLength: 6 }), { maxLength: 8 }),
      fc.array(range, { maxLength: 8 }),
      fc.array(key, { maxLength: 6 }),
      async (batches, ranges, gets) => {
        const a = new MemoryKv();
        const b = new SimKv();
        for (const batch of batches) {
          const w = batch.map((x) => ({ key: x.key, value: x.value ?? undefined }));
          await a.write(w, true);
          await b.write(w, true);
        }
        for (const r of ranges) {
          const opts = {
            ...(r.exclusive ? { gt: r.from } : { gte: r.from }),
            lt: r.lt,
            ...(r.limit !== null ? { limit: r.limit } : {}),
            reverse: r.reverse,
          };
          const x = await a.range(opts);
          const y = await b.range(opts);
          if (JSON.stringify(x) !== JSON.stringify(y)) return false;
        }
        const g1 = await a.getMany(gets);
        const g2 = await b.getMany(gets);
        return JSON.stringify(g1) === JSON.stringify(g2);
      },
    ),
    { numRuns: 300 },
  );
  t.pass('same answers');
});

t.test('values are copies both ways', async (t) => {
  const kv = new SimKv();
  const v = Buffer.from('abc');
  await kv.write([{ key: Buffer.from('k'), value: v }], true);
  v[0] = 0x7a;
  const got = (await kv.get(Buffer.from('k')))!;
  t.equal(got.toString(), 'abc', 'a write keeps its own copy');
  got[0] = 0x7a;
  t.equal((await kv.range({ lt: Buffer.from('z') }))[0]!.value.toString(), 'abc', 'a read hands out a copy');
});
