import fc from 'fast-check';
import t from 'tap';
import { FsError } from '../src/errors.js';
import {
  type DeviceId,
  decodeDeviceId,
  DEVICE_MAJOR_MAX,
  DEVICE_MINOR_MAX,
  DEVICE_NODE_MAX,
  deviceFromLinuxRdev,
  encodeDeviceId,
  foldIno32,
  INO_SEQ_MAX,
  linuxRdev,
  makeIno,
  PG_COUNT_MAX,
  pgOfIno,
  ROOT_INO,
  seqOfIno,
  validateIno,
} from '../src/ids.js';
import { check } from './helpers/check.js';

const U64_MAX = (1n << 64n) - 1n;
const pgArb = fc.integer({ min: 0, max: PG_COUNT_MAX - 1 });
const seqArb = fc.bigInt({ min: 1n, max: INO_SEQ_MAX });
const pgCountArb = fc.integer({ min: 0, max: 16 }).map((b) => 1 << b);
const deviceArb: fc.Arbitrary<DeviceId> = fc.oneof(
  fc.record({
    bound: fc.constant(true),
    node: fc.integer({ min: 0, max: DEVICE_NODE_MAX }),
    major: fc.integer({ min: 0, max: DEVICE_MAJOR_MAX }),
    minor: fc.integer({ min: 0, max: DEVICE_MINOR_MAX }),
  }),
  fc.record({
    bound: fc.constant(false),
    node: fc.constant(0),
    major: fc.integer({ min: 0, max: DEVICE_MAJOR_MAX }),
    minor: fc.integer({ min: 0, max: DEVICE_MINOR_MAX }),
  }),
);

/** glibc's gnu_dev_makedev (sys/sysmacros.h), in 64-bit arithmetic. */
function glibcMakedev(major: number, minor: number): bigint {
  const M = BigInt(major);
  const m = BigInt(minor);
  return ((M & 0xfffn) << 8n) | ((M & 0xfffff000n) << 32n) | (m & 0xffn) | ((m & 0xffffff00n) << 12n);
}
function glibcMajor(dev: bigint): number {
  return Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & 0xfffff000n));
}
function glibcMinor(dev: bigint): number {
  return Number((dev & 0xffn) | ((dev >> 12n) & 0xffffff00n));
}

t.test('makeIno / pgOfIno / seqOfIno round trip over the full ranges', async (t) => {
  check(
    t,
    fc.property(pgArb, seqArb, (pg, seq) => {
      const ino = makeIno(pg, seq);
      return (
        ino >= 1n &&
        ino <= U64_MAX &&
        pgOfIno(ino) === pg &&
        seqOfIno(ino) === seq &&
        makeIno(pgOfIno(ino), seqOfIno(ino)) === ino
      );
    }),
    { numRuns: 2000 },
  );
  check(
    t,
    fc.property(fc.bigInt({ min: 0n, max: U64_MAX }), (ino) => {
      const seq = seqOfIno(ino);
      return seq === 0n || makeIno(pgOfIno(ino), seq) === ino;
    }),
  );
});

t.test('makeIno rejects out-of-range parts', async (t) => {
  check(
    t,
    fc.property(fc.oneof(fc.integer({ max: -1 }), fc.integer({ min: PG_COUNT_MAX })), seqArb, (pg, seq) => {
      try {
        makeIno(pg, seq);
        return false;
      } catch (e) {
        return e instanceof RangeError;
      }
    }),
  );
  check(
    t,
    fc.property(
      pgArb,
      fc.oneof(fc.bigInt({ max: 0n }), fc.bigInt({ min: INO_SEQ_MAX + 1n, max: U64_MAX * 2n })),
      (pg, seq) => {
        try {
          makeIno(pg, seq);
          return false;
        } catch (e) {
          return e instanceof RangeError;
        }
      },
    ),
  );
  t.throws(() => makeIno(1.5, 1n), RangeError);
  t.equal(makeIno(0, 1n), ROOT_INO);
});

t.test('validateIno accepts exactly the inodes of the volume', async (t) => {
  check(
    t,
    fc.property(pgCountArb, pgArb, seqArb, (pgCount, pg, seq) => {
      const ino = makeIno(pg, seq);
      let ok: boolean;
      try {
        ok = validateIno(ino, pgCount) === ino;
      } catch (e) {
        if (!(e instanceof FsError) || e.code !== 'STALE_HANDLE') throw e;
        ok = false;
      }
      return ok === pg < pgCount;
    }),
    { numRuns: 1000 },
  );
  const rejects = (ino: bigint, pgCount: number) => {
    try {
      validateIno(ino, pgCount);
      return false;
    } catch (e) {
      return e instanceof FsError && e.code === 'STALE_HANDLE';
    }
  };
  check(
    t,
    fc.property(fc.bigInt({ max: 0n }), pgCountArb, (ino, n) => rejects(ino, n)),
  );
  check(
    t,
    fc.property(fc.bigInt({ min: U64_MAX + 1n, max: U64_MAX * 4n }), pgCountArb, (ino, n) => rejects(ino, n)),
  );
  check(
    t,
    fc.property(pgArb, (pg) => rejects(BigInt(pg) << 48n, PG_COUNT_MAX)),
    {},
    'sequence 0 rejected',
  );
  t.equal(validateIno(ROOT_INO, 1), ROOT_INO);
});

t.test('encodeDeviceId / decodeDeviceId round trip', async (t) => {
  check(
    t,
    fc.property(deviceArb, (d) => {
      const word = encodeDeviceId(d);
      const back = decodeDeviceId(word);
      return word >= 0n && word <= U64_MAX && JSON.stringify(back) === JSON.stringify(d);
    }),
    { numRuns: 2000 },
  );
});

t.test('decodeDeviceId rejects malformed words; encode rejects out-of-range ids', async (t) => {
  check(
    t,
    fc.property(fc.bigInt({ min: 1n, max: 0xffffn }), deviceArb, (junk, d) => {
      try {
        decodeDeviceId(encodeDeviceId(d) | (junk << 32n));
        return false;
      } catch (e) {
        return e instanceof FsError && e.code === 'INVALID_ARGUMENT';
      }
    }),
  );
  t.throws(() => decodeDeviceId(-1n), FsError);
  t.throws(() => decodeDeviceId(U64_MAX + 1n), FsError);
  t.throws(() => decodeDeviceId(5n << 48n), FsError, 'unbound with a node');
  t.throws(() => encodeDeviceId({ bound: false, node: 0, major: DEVICE_MAJOR_MAX + 1, minor: 0 }), FsError);
  t.throws(() => encodeDeviceId({ bound: false, node: 0, major: 0, minor: DEVICE_MINOR_MAX + 1 }), FsError);
  t.throws(() => encodeDeviceId({ bound: true, node: DEVICE_NODE_MAX + 1, major: 0, minor: 0 }), FsError);
});

t.test("linuxRdev matches glibc's makedev for major < 4096, minor < 2^20", async (t) => {
  check(
    t,
    fc.property(
      fc.integer({ min: 0, max: 4095 }),
      fc.integer({ min: 0, max: (1 << 20) - 1 }),
      (major, minor) => {
        const rdev = linuxRdev({ major, minor });
        const dev = glibcMakedev(major, minor);
        return (
          BigInt(rdev) === dev &&
          rdev >= 0 &&
          rdev <= 0xffff_ffff &&
          glibcMajor(BigInt(rdev)) === major &&
          glibcMinor(BigInt(rdev)) === minor
        );
      },
    ),
    { numRuns: 5000 },
  );
  t.equal(linuxRdev({ major: 1, minor: 3 }), 0x103, '/dev/null');
  t.equal(linuxRdev({ major: 259, minor: 65536 }), Number(glibcMakedev(259, 65536)));
});

t.test('deviceFromLinuxRdev is the inverse of linuxRdev', async (t) => {
  check(
    t,
    fc.property(
      fc.integer({ min: 0, max: 4095 }),
      fc.integer({ min: 0, max: (1 << 20) - 1 }),
      (major, minor) => {
        const d = deviceFromLinuxRdev(linuxRdev({ major, minor }));
        return d.major === major && d.minor === minor && !d.bound && d.node === 0;
      },
    ),
    { numRuns: 5000 },
  );
  check(
    t,
    fc.property(
      fc.integer({ min: 0, max: 0xffff_ffff }),
      (rdev) => linuxRdev(deviceFromLinuxRdev(rdev)) === rdev,
    ),
    { numRuns: 5000 },
  );
});

t.test('foldIno32 fits 32 bits and keeps the root', async (t) => {
  t.equal(foldIno32(ROOT_INO), ROOT_INO);
  check(
    t,
    fc.property(pgArb, seqArb, (pg, seq) => {
      const f = foldIno32(makeIno(pg, seq));
      return f >= 1n && f <= 0xffff_ffffn;
    }),
  );
});
