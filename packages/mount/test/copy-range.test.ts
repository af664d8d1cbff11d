import fc from 'fast-check';
import t from 'tap';
import { copyPieces } from '../src/client/copy-range.js';

/** copy_file_range's cut into CopyBlock pieces, against a byte-by-byte reference. */

t.test('pieces stay inside one source and one destination block and cover the range in order', async (t) => {
  t.same(copyPieces(0n, 0n, 10n, 4), [
    { dstIndex: 0n, dstOffset: 0, srcIndex: 0n, srcOffset: 0, length: 4 },
    { dstIndex: 1n, dstOffset: 0, srcIndex: 1n, srcOffset: 0, length: 4 },
    { dstIndex: 2n, dstOffset: 0, srcIndex: 2n, srcOffset: 0, length: 2 },
  ]);
  t.same(copyPieces(1n, 3n, 4n, 4), [
    { dstIndex: 0n, dstOffset: 3, srcIndex: 0n, srcOffset: 1, length: 1 },
    { dstIndex: 1n, dstOffset: 0, srcIndex: 0n, srcOffset: 2, length: 2 },
    { dstIndex: 1n, dstOffset: 2, srcIndex: 1n, srcOffset: 0, length: 1 },
  ]);
  t.same(copyPieces(5n, 5n, 0n, 4), [], 'nothing to copy');
  fc.assert(
    fc.property(
      fc.bigInt({ min: 0n, max: 200n }),
      fc.bigInt({ min: 0n, max: 200n }),
      fc.bigInt({ min: 0n, max: 100n }),
      fc.integer({ min: 1, max: 17 }),
      (offIn, offOut, n, bs) => {
        const pieces = copyPieces(offIn, offOut, n, bs);
        let at = 0n;
        for (const p of pieces) {
          if (p.length <= 0 || p.dstOffset + p.length > bs || p.srcOffset + p.length > bs) return false;
          if (p.srcIndex * BigInt(bs) + BigInt(p.srcOffset) !== offIn + at) return false;
          if (p.dstIndex * BigInt(bs) + BigInt(p.dstOffset) !== offOut + at) return false;
          at += BigInt(p.length);
        }
        return at === n;
      },
    ),
  );
});
