import { FsError, limits } from '@dunix/proto';
import fc from 'fast-check';
import t from 'tap';
import { validateWriteExtents } from '../../src/rpc/server.js';

/** WriteBlock's ranges: malformed ones are refused with a clear error before anything is written. */
const BS = 1 << 20;
const code = (f: () => unknown) => {
  try {
    f();
    return 'OK';
  } catch (err) {
    return err instanceof FsError ? err.code : `not an FsError: ${String(err)}`;
  }
};

t.test('well-formed ranges pass', async (t) => {
  t.same(
    validateWriteExtents(
      [
        { offset: 0, length: 4 },
        { offset: 4, length: 1 },
        { offset: BS - 1, length: 1 },
      ],
      6,
      BS,
    ),
    [
      { offset: 0, length: 4 },
      { offset: 4, length: 1 },
      { offset: BS - 1, length: 1 },
    ],
  );
});

t.test('malformed ranges are refused', async (t) => {
  const cases: [string, { offset: number; length: number }[], number, string][] = [
    ['empty range', [{ offset: 0, length: 0 }], 0, 'INVALID_ARGUMENT'],
    [
      'overlap',
      [
        { offset: 0, length: 10 },
        { offset: 5, length: 10 },
      ],
      20,
      'INVALID_ARGUMENT',
    ],
    [
      'out of order',
      [
        { offset: 100, length: 1 },
        { offset: 0, length: 1 },
      ],
      2,
      'INVALID_ARGUMENT',
    ],
    ['past the block', [{ offset: BS - 1, length: 2 }], 2, 'OUT_OF_RANGE'],
    ['bytes missing', [{ offset: 0, length: 10 }], 9, 'INVALID_ARGUMENT'],
    ['bytes left over', [{ offset: 0, length: 10 }], 11, 'INVALID_ARGUMENT'],
    [
      'too many',
      Array.from({ length: limits.writeExtentsPerCallMax + 1 }, (_, i) => ({ offset: i * 2, length: 1 })),
      limits.writeExtentsPerCallMax + 1,
      'INVALID_ARGUMENT',
    ],
  ];
  for (const [what, extents, bytes, want] of cases)
    t.equal(
      code(() => validateWriteExtents(extents, bytes, BS)),
      want,
      what,
    );
});

t.test('whatever the input, an FsError or a list that keeps every rule', async (t) => {
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          offset: fc.integer({ min: 0, max: BS + 10 }),
          length: fc.integer({ min: 0, max: 5000 }),
        }),
        {
          maxLength: 8,
        },
      ),
      fc.integer({ min: 0, max: 40_000 }),
      (extents, bytes) => {
        let out;
        try {
          out = validateWriteExtents(extents, bytes, BS);
        } catch (err) {
          return err instanceof FsError;
        }
        let end = 0;
        let sum = 0;
        for (const e of out) {
          if (e.length === 0 || e.offset < end || e.offset + e.length > BS) return false;
          end = e.offset + e.length;
          sum += e.length;
        }
        return sum === bytes;
      },
    ),
    { numRuns: 2000 },
  );
  t.pass('no malformed list gets through');
});
