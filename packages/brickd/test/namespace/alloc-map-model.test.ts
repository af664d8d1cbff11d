import { FALLOC_FL, SEEK_DATA, SEEK_HOLE } from '@dunix/proto';
import fc from 'fast-check';
import t from 'tap';
import { ALLOC_UNIT_BYTES } from '../../src/namespace/alloc-map.js';
import { alice, Fixture, ROOT, root } from './harness.js';

/**
 * The allocation map against a byte model, by property: random writes
 * (reported as Extend does), fallocate in every served mode and truncates
 * (the trim's clip) on a small block size. After every step: allocBytes is
 * the sum of the records' counted lengths; every byte holding data lies in
 * a data record (so SEEK_DATA never skips it); SEEK_DATA and SEEK_HOLE
 * agree with that model at random offsets.
 */

const B = 64; // bytes per block: many blocks, small files
const SIZE_MAX = 40 * B;
const { KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE } = FALLOC_FL;

type Op =
  | { kind: 'write'; off: number; len: number }
  | { kind: 'falloc'; mode: number; off: number; len: number }
  | { kind: 'truncate'; size: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant('write' as const),
    off: fc.nat(SIZE_MAX),
    len: fc.integer({ min: 1, max: 3 * B }),
  }),
  fc.record({
    kind: fc.constant('falloc' as const),
    mode: fc.constantFrom(0, KEEP_SIZE, PUNCH_HOLE | KEEP_SIZE, ZERO_RANGE, ZERO_RANGE | KEEP_SIZE),
    off: fc.nat(SIZE_MAX),
    len: fc.integer({ min: 1, max: 4 * B }),
  }),
  fc.record({ kind: fc.constant('truncate' as const), size: fc.nat(SIZE_MAX) }),
);

t.test('the map never hides data and counts what it holds', async (t) => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(op, { minLength: 1, maxLength: 25 }),
      fc.array(fc.nat(SIZE_MAX), { minLength: 4, maxLength: 4 }),
      async (ops, probes) => {
        const f = await Fixture.make({ blockSizeBytes: B, inlineMaxBytes: 0 });
        const ino = await f.create(ROOT, 'f', 0o644);
        const v = (await f.stat(ino)).dataVersion;
        await f.run((tx) => f.engine.convertInline(tx, ino, v));
        let bytes = Buffer.alloc(0); // the model: nonzero = data
        let size = 0;
        for (const o of ops) {
          if (o.kind === 'write') {
            const end = o.off + o.len;
            if (end > bytes.length) bytes = Buffer.concat([bytes, Buffer.alloc(end - bytes.length)]);
            bytes.fill(1, o.off, end);
            size = Math.max(size, end);
            const extents = new Map<bigint, number>();
            for (let i = Math.floor(o.off / B); i * B < end; i++)
              extents.set(BigInt(i), Math.min(B, end - i * B));
            await f.run((tx) =>
              f.engine.extend(
                tx,
                alice,
                ino,
                BigInt(size),
                false,
                [...extents].map(([index, e]) => ({ index, end: e })),
              ),
            );
          } else if (o.kind === 'falloc') {
            await f.run((tx) => f.engine.fallocate(tx, ino, o.mode, BigInt(o.off), BigInt(o.len)));
            if (o.mode & (PUNCH_HOLE | ZERO_RANGE))
              bytes.fill(0, o.off, Math.min(bytes.length, o.off + o.len));
            if (!(o.mode & KEEP_SIZE)) size = Math.max(size, o.off + o.len);
          } else {
            await f.run((tx) => f.engine.setattr(tx, root, ino, { size: BigInt(o.size) }));
            if (o.size < bytes.length) bytes = bytes.subarray(0, o.size);
            size = o.size;
            // The trim that follows a shrink clips the map (Brick.finishTrim).
            const { clipAfterTruncate } = await import('../../src/namespace/alloc-map.js');
            await f.run(async (tx) => {
              const inode = (await tx.getInode(ino))!;
              await clipAfterTruncate(tx, ino, inode, BigInt(o.size), B);
              tx.putInode(inode);
            });
          }
          const st = await f.stat(ino);
          if (st.size !== BigInt(size)) return false;
          const recs = await f.read((tx) => tx.listAlloc(ino, 0n, 1n << 40n, 10_000));
          const counted = recs.reduce(
            (n, r) => n + BigInt(Math.ceil(r.rec.len / ALLOC_UNIT_BYTES) * ALLOC_UNIT_BYTES),
            0n,
          );
          if (st.allocBytes !== counted) return false;
          const data = (pos: number) =>
            recs.some(
              (r) => !r.rec.pre && Number(r.index) * B <= pos && pos < Number(r.index) * B + r.rec.len,
            );
          for (let p = 0; p < Math.min(size, bytes.length); p++) if (bytes[p] && !data(p)) return false;
          for (const probe of probes) {
            const pos = probe % (size + 1);
            const d = await f.code((tx) => f.engine.seek(tx, ino, BigInt(pos), SEEK_DATA));
            const h = await f.read((tx) => f.engine.seek(tx, ino, BigInt(pos), SEEK_HOLE)).catch(() => -1n);
            if (pos >= size) {
              if (d !== 'NO_DATA_AT_OFFSET' || h !== -1n) return false;
              continue;
            }
            let wantData = -1;
            for (let p = pos; p < size; p++)
              if (data(p)) {
                wantData = p;
                break;
              }
            let wantHole = size;
            for (let p = pos; p < size; p++)
              if (!data(p)) {
                wantHole = p;
                break;
              }
            if (wantData < 0 ? d !== 'NO_DATA_AT_OFFSET' : d !== 'OK') return false;
            if (
              wantData >= 0 &&
              (await f.read((tx) => f.engine.seek(tx, ino, BigInt(pos), SEEK_DATA))) !== BigInt(wantData)
            )
              return false;
            if (h !== BigInt(wantHole)) return false;
          }
        }
        return true;
      },
    ),
    { numRuns: Number(process.env.DUNIX_ALLOC_RUNS ?? 150) },
  );
  t.pass('every sequence held');
});
