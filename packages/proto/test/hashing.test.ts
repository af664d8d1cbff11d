import fc from 'fast-check';
import t from 'tap';
import {
  blockPg,
  CHECKSUM_CHUNK_BYTES,
  chunkChecksums,
  directoryPg,
  initHashing,
  xxh64,
} from '../src/hashing.js';
import { check } from './helpers/check.js';

const U64_MAX = (1n << 64n) - 1n;
const pgCountArb = fc.integer({ min: 0, max: 16 }).map((b) => 1 << b);

/** Deterministic pseudo-random bytes (fast-check stays in charge of the seed). */
function bytes(length: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

t.before(async () => {
  await initHashing();
});

t.test('xxh64 known answers', async (t) => {
  t.equal(xxh64(Buffer.alloc(0)), 0xef46db3751d8e999n, 'empty input, seed 0');
  t.equal(xxh64(Buffer.from('a')), 0xd24ec4f1a98c6e5bn);
});

t.test('blockPg is in range and deterministic', async (t) => {
  check(
    t,
    fc.property(
      fc.bigInt({ min: 1n, max: U64_MAX }),
      fc.bigInt({ min: 0n, max: U64_MAX }),
      pgCountArb,
      (ino, index, n) => {
        const pg = blockPg(ino, index, n);
        return Number.isInteger(pg) && pg >= 0 && pg < n && blockPg(ino, index, n) === pg;
      },
    ),
    { numRuns: 2000 },
  );
});

t.test('1000 consecutive blocks of one inode cover at least 90% of 64 PGs', async (t) => {
  check(
    t,
    fc.property(
      fc.bigInt({ min: 1n, max: U64_MAX }),
      fc.bigInt({ min: 0n, max: 1n << 40n }),
      (ino, start) => {
        const pgs = new Set<number>();
        for (let i = 0n; i < 1000n; i++) pgs.add(blockPg(ino, start + i, 64));
        return pgs.size >= Math.ceil(0.9 * 64);
      },
    ),
    { numRuns: 100 },
  );
});

t.test('directoryPg is in range and deterministic', async (t) => {
  check(
    t,
    fc.property(
      fc.bigInt({ min: 1n, max: U64_MAX }),
      fc.uint8Array({ minLength: 1, maxLength: 255 }),
      pgCountArb,
      (parent, name, n) => {
        const pg = directoryPg(parent, name, n);
        return pg >= 0 && pg < n && directoryPg(parent, Uint8Array.from(name), n) === pg;
      },
    ),
    { numRuns: 1000 },
  );
});

t.test('chunkChecksums: one per 64 KiB chunk; one changed byte changes exactly its chunk', async (t) => {
  check(
    t,
    fc.property(
      fc.integer({ min: 0, max: 5 * CHECKSUM_CHUNK_BYTES + 7 }),
      fc.integer(),
      fc.nat(),
      (length, seed, at) => {
        const data = bytes(length, seed);
        const sums = chunkChecksums(data);
        if (sums.length !== Math.ceil(length / CHECKSUM_CHUNK_BYTES)) return false;
        if (
          JSON.stringify(chunkChecksums(Buffer.from(data)).map(String)) !== JSON.stringify(sums.map(String))
        )
          return false;
        if (length === 0) return true;
        const i = at % length;
        const changed = Buffer.from(data);
        changed[i] = changed[i]! ^ (1 + (seed & 0x7f));
        const after = chunkChecksums(changed);
        const chunk = Math.floor(i / CHECKSUM_CHUNK_BYTES);
        return after.every((s, k) => (k === chunk ? s !== sums[k] : s === sums[k]));
      },
    ),
    { numRuns: 60 },
  );
});
