import fc from 'fast-check';
import t from 'tap';
import { DirtyExtents, LARGE_EXTENT_BYTES } from '../src/client/dirty-extents.js';

const BS = 1 << 20;

function fixture(bs = BS) {
  const live = new Set<Buffer>();
  let released = 0;
  const d = new DirtyExtents(
    bs,
    (n) => {
      const b = Buffer.alloc(n, 0xee);
      live.add(b);
      return b;
    },
    (b) => {
      if (!live.delete(b)) throw new Error('a buffer released twice or never handed out');
      released++;
    },
  );
  return { d, live, released: () => released };
}

const ranges = (d: DirtyExtents) => d.extents.map((x) => [x.start, x.start + x.len]);

t.test('separate writes stay separate ranges; touching ones merge', async (t) => {
  const { d } = fixture();
  d.add(8192, Buffer.alloc(4096, 1));
  d.add(0, Buffer.alloc(4096, 2));
  d.add(100_000, Buffer.alloc(10, 3));
  t.same(
    ranges(d),
    [
      [0, 4096],
      [8192, 12288],
      [100_000, 100_010],
    ],
    'sorted',
  );
  t.equal(d.bytes, 4096 + 4096 + 10);
  d.add(4096, Buffer.alloc(4096, 4));
  t.same(
    ranges(d),
    [
      [0, 12288],
      [100_000, 100_010],
    ],
    'a write bridging two ranges joins them',
  );
  const v = d.views()[0]!;
  t.equal(v[0], 2);
  t.equal(v[4096], 4);
  t.equal(v[8192], 1);
  t.equal(d.bytes, 12288 + 10);
  d.add(100_005, Buffer.alloc(10, 5));
  t.same(ranges(d)[1], [100_000, 100_015], 'an overlapping write extends a range');
  t.same([...d.views()[1]!], [3, 3, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5], 'the later bytes win');
  t.notOk(d.full);
});

t.test('a sequential writer fills one whole-block buffer; a full block says so', async (t) => {
  const { d, live } = fixture();
  for (let off = 0; off < BS; off += 128 * 1024) d.add(off, Buffer.alloc(128 * 1024, off / 131072));
  t.same(ranges(d), [[0, BS]]);
  t.ok(d.full);
  t.equal(live.size, 1, 'one buffer, no copies beyond it');
  t.equal(d.views()[0]![BS - 1], 7);
  t.equal(d.extents[0]!.buf.length, BS);
});

t.test('small appends grow their buffer by doubling, then move to a whole-block buffer', async (t) => {
  const { d, live } = fixture();
  const end = Math.ceil((2 * LARGE_EXTENT_BYTES) / 100) * 100;
  for (let off = 0; off < end; off += 100) d.add(off, Buffer.alloc(100, off % 251));
  t.same(ranges(d), [[0, end]]);
  t.equal(live.size, 1, 'the older buffers were given back');
  const v = d.views()[0]!;
  for (let off = 0; off < 2 * LARGE_EXTENT_BYTES; off += 100)
    if (v[off] !== off % 251) t.fail(`byte at ${off}`);
  t.equal(d.extents[0]!.buf.length, BS);
});

t.test('truncate drops and shortens ranges; releaseAll gives every buffer back', async (t) => {
  const { d, live } = fixture();
  d.add(0, Buffer.alloc(100, 1));
  d.add(200, Buffer.alloc(100, 2));
  d.add(400, Buffer.alloc(100, 3));
  d.truncate(250);
  t.same(ranges(d), [
    [0, 100],
    [200, 250],
  ]);
  t.equal(d.bytes, 150);
  d.releaseAll();
  t.equal(live.size, 0);
  t.equal(d.bytes, 0);
  t.throws(() => d.add(BS - 1, Buffer.alloc(2)), /past the block/);
});

t.test('random writes match a byte model', async (t) => {
  const bs = 4096;
  await fc.assert(
    fc.property(
      fc.array(
        fc.record({
          offset: fc.integer({ min: 0, max: bs - 1 }),
          len: fc.integer({ min: 1, max: 700 }),
          v: fc.integer({ min: 1, max: 255 }),
        }),
        { maxLength: 40 },
      ),
      (writes) => {
        const { d, live } = fixture(bs);
        const model = new Map<number, number>();
        for (const w of writes) {
          const len = Math.min(w.len, bs - w.offset);
          d.add(w.offset, Buffer.alloc(len, w.v));
          for (let k = 0; k < len; k++) model.set(w.offset + k, w.v);
        }
        const got = new Map<number, number>();
        const views = d.views();
        let prevEnd = -1;
        d.extents.forEach((x, i) => {
          if (x.start <= prevEnd) throw new Error('ranges touch or overlap');
          prevEnd = x.start + x.len;
          for (let k = 0; k < x.len; k++) got.set(x.start + k, views[i]![k]!);
        });
        if (got.size !== model.size || d.bytes !== model.size) return false;
        for (const [k, v] of model) if (got.get(k) !== v) return false;
        return live.size === d.extents.length;
      },
    ),
    { numRuns: 300 },
  );
  t.pass('the ranges hold exactly the bytes written, latest first');
});
