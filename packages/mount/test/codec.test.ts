/**
 * The FUSE wire codec against the C layouts of <linux/fuse.h> (protocol 7.38):
 * struct sizes, field offsets checked with hand-written bytes, round trips,
 * request splitting for every opcode, and the setattr/attr time conversions.
 */
import fc from 'fast-check';
import t from 'tap';
import { FATTR, Opcode, type OpcodeName, opcodeName, Size } from '../src/fuse/abi.js';
import {
  direntSize,
  In,
  InHeader,
  MalformedRequest,
  Out,
  OutHeader,
  parseRequest,
  requestLayout,
} from '../src/fuse/codec.js';
import type { Attr } from '../src/fuse/filesystem.js';
import { attrToWire, decodeSetattr } from '../src/fuse/session.js';
import type { FieldType } from '../src/fuse/struct.js';

type Value = Record<string, number | bigint>;
interface AnyStruct {
  readonly name: string;
  readonly size: number;
  readonly fields: Record<string, FieldType>;
  decode(buf: Buffer, offset: number): Value;
  encode(value: Value, buf: Buffer, offset: number): number;
  build(value: Value): Buffer;
}

const asAny = (s: unknown) => s as AnyStruct;
const allStructs: AnyStruct[] = [
  asAny(InHeader),
  asAny(OutHeader),
  ...Object.values(In).map(asAny),
  ...Object.values(Out).map(asAny),
];

/**
 * sizeof() of each C struct, as laid out in /usr/include/linux/fuse.h (7.38)
 * and confirmed with gcc's sizeof on x86_64.
 */
const C_SIZE: Record<string, number> = {
  fuse_in_header: 40,
  fuse_out_header: 16,
  fuse_forget_in: 8,
  fuse_batch_forget_in: 8,
  fuse_forget_one: 16,
  fuse_getattr_in: 16,
  fuse_setattr_in: 88,
  fuse_mknod_in: 16,
  fuse_mkdir_in: 8,
  fuse_rename_in: 8,
  fuse_rename2_in: 16,
  fuse_link_in: 8,
  fuse_open_in: 8,
  fuse_create_in: 16,
  fuse_read_in: 40,
  fuse_write_in: 40,
  fuse_release_in: 24,
  fuse_flush_in: 24,
  fuse_fsync_in: 16,
  // FUSE_COMPAT_SETXATTR_IN_SIZE: the full struct is 16 bytes, but the kernel
  // sends only the first 8 unless FUSE_SETXATTR_EXT was negotiated (we never ask for it).
  fuse_setxattr_in: 8,
  fuse_getxattr_in: 8,
  fuse_init_in: 64,
  fuse_lk_in: 48,
  fuse_access_in: 8,
  fuse_interrupt_in: 8,
  fuse_fallocate_in: 32,
  fuse_lseek_in: 24,
  fuse_copy_file_range_in: 56,
  fuse_attr: 88,
  fuse_entry_out: 128,
  fuse_attr_out: 104,
  fuse_open_out: 16,
  fuse_write_out: 8,
  fuse_statfs_out: 80,
  fuse_getxattr_out: 8,
  fuse_init_out: 64,
  fuse_lk_out: 24,
  fuse_lseek_out: 8,
  fuse_dirent: 24,
  fuse_notify_inval_inode_out: 24,
  fuse_notify_inval_entry_out: 16,
  fuse_notify_delete_out: 24,
};

const isPad = (type: FieldType) => type === 'pad16' || type === 'pad32';
const valueKeys = (s: AnyStruct) =>
  Object.entries(s.fields)
    .filter(([, type]) => !isPad(type))
    .map(([k]) => k);

/** A distinct, non-zero value for every field: u64 above 2^53 (top bit set), negative i32/i64. */
function distinctive(s: AnyStruct): Value {
  const v: Value = {};
  let i = 0;
  for (const [k, type] of Object.entries(s.fields)) {
    i++;
    switch (type) {
      case 'u16':
        v[k] = (0x8000 | (i * 0x0123)) & 0xffff;
        break;
      case 'u32':
        v[k] = (0x80000000 | (i * 0x01030507)) >>> 0;
        break;
      case 'i32':
        v[k] = -(i * 1_000_003);
        break;
      case 'u64':
        v[k] = (1n << 63n) | (BigInt(i) * 0x0001_0203_0405_0607n);
        break;
      case 'i64':
        v[k] = -(1n << 60n) - BigInt(i) * 0x10001n;
        break;
      default:
        break;
    }
  }
  return v;
}

t.test('every struct has the size of its C counterpart', async (t) => {
  for (const s of allStructs) {
    t.ok(s.name in C_SIZE, `${s.name} has a known C size`);
    t.equal(s.size, C_SIZE[s.name], `sizeof(struct ${s.name})`);
  }
  t.equal(new Set(allStructs.map((s) => s.name)).size, allStructs.length, 'struct names are unique');
  // The Size constants of abi.ts agree with the C sizes too.
  t.equal(Size.inHeader, 40);
  t.equal(Size.outHeader, 16);
  t.equal(Size.attr, 88);
  t.equal(Size.entryOut, 128);
  t.equal(Size.attrOut, 104);
  t.equal(Size.openOut, 16);
  t.equal(Size.writeOut, 8);
  t.equal(Size.statfsOut, 80);
  t.equal(Size.initIn, 64);
  t.equal(Size.initOut, 64);
  t.equal(Size.dirent, 24);
  t.equal(Size.direntplus, 152, 'sizeof(struct fuse_direntplus)');
  t.equal(Size.lkOut, 24);
  t.equal(Size.inHeader, InHeader.size);
  t.equal(Size.outHeader, OutHeader.size);
  t.equal(Size.attr, Out.attr.size);
  t.equal(Size.entryOut, Out.entry.size);
  t.equal(Size.attrOut, Out.attrOut.size);
  t.equal(Size.initIn, In.init.size);
  t.equal(Size.initOut, Out.init.size);
  t.equal(Size.dirent, Out.dirent.size);
  t.equal(Size.direntplus, Out.entry.size + Out.dirent.size);
});

t.test('every struct round-trips distinctive values of every field', async (t) => {
  for (const s of allStructs) {
    const v = distinctive(s);
    t.strictSame(Object.keys(v).sort(), valueKeys(s).sort(), `${s.name}: every value field is set`);
    const b = s.build(v);
    t.equal(b.length, s.size, `${s.name}: build gives size bytes`);
    t.strictSame(s.decode(b, 0), v, `${s.name}: decode(build(v)) = v`);

    // At an odd offset inside a larger buffer, with the bytes around it untouched.
    const big = Buffer.alloc(s.size + 10, 0xee);
    t.equal(s.encode(v, big, 3), 3 + s.size, `${s.name}: encode returns the end offset`);
    t.strictSame(s.decode(big, 3), v, `${s.name}: round trip at an unaligned offset`);
    t.strictSame([...big.subarray(0, 3)], [0xee, 0xee, 0xee], `${s.name}: bytes before untouched`);
    t.ok(
      big.subarray(3 + s.size).every((x) => x === 0xee),
      `${s.name}: bytes after untouched`,
    );

    // Absent fields and padding are written as zero (build starts from uninitialised memory).
    t.ok(
      s.build({}).every((x) => x === 0),
      `${s.name}: build({}) is all zero`,
    );
    const padJunk: Value = { ...v };
    for (const [k, type] of Object.entries(s.fields)) if (isPad(type)) padJunk[k] = 0xffff;
    t.ok(s.build(padJunk).equals(b), `${s.name}: values given for padding are ignored`);
    for (const k of Object.keys(s.fields)) {
      if (isPad(s.fields[k] as FieldType))
        t.notOk(k in s.decode(b, 0), `${s.name}: padding ${k} not decoded`);
    }

    // Fields do not overlap: setting one leaves every other one zero.
    for (const k of valueKeys(s)) {
      const only = s.decode(s.build({ [k]: v[k] as number | bigint }), 0);
      const others = Object.entries(only).filter(([key, x]) => key !== k && x !== 0 && x !== 0n);
      t.strictSame(others, [], `${s.name}.${k} does not overlap other fields`);
      t.equal(only[k], v[k], `${s.name}.${k} alone round-trips`);
    }

    t.throws(() => s.decode(Buffer.alloc(s.size - 1), 0), RangeError, `${s.name}: short buffer throws`);
    t.throws(() => s.decode(Buffer.alloc(s.size), 1), RangeError, `${s.name}: overrun throws`);
  }
});

t.test('golden offsets, written by hand at the C offsets', async (t) => {
  t.test('fuse_in_header', async (t) => {
    const b = Buffer.alloc(40);
    b.writeUInt32LE(0x12345678, 0); // len
    b.writeUInt32LE(Opcode.SETATTR, 4); // opcode
    b.writeBigUInt64LE(0xfedcba9876543210n, 8); // unique
    b.writeBigUInt64LE(0x8000000000000001n, 16); // nodeid
    b.writeUInt32LE(0xfffffffe, 24); // uid
    b.writeUInt32LE(1002, 28); // gid
    b.writeUInt32LE(4242, 32); // pid
    b.writeUInt16LE(0xabcd, 36); // total_extlen
    b.writeUInt16LE(0xffff, 38); // padding
    t.strictSame(InHeader.decode(b, 0), {
      len: 0x12345678,
      opcode: Opcode.SETATTR,
      unique: 0xfedcba9876543210n,
      nodeid: 0x8000000000000001n,
      uid: 0xfffffffe,
      gid: 1002,
      pid: 4242,
      totalExtlen: 0xabcd,
    });
  });

  t.test('fuse_out_header', async (t) => {
    const b = OutHeader.build({ len: 16, error: -2, unique: 0xfedcba9876543210n });
    t.equal(b.readUInt32LE(0), 16, 'len @0');
    t.equal(b.readInt32LE(4), -2, 'error @4');
    t.equal(b.readBigUInt64LE(8), 0xfedcba9876543210n, 'unique @8');
  });

  t.test('fuse_setattr_in', async (t) => {
    const b = Buffer.alloc(88, 0xcc); // padding holds junk: it must be ignored
    b.writeUInt32LE(0xfff, 0); // valid
    b.writeBigUInt64LE(0x1111111111111111n, 8); // fh
    b.writeBigUInt64LE(0x8000000000000002n, 16); // size
    b.writeBigUInt64LE(0x3333333333333333n, 24); // lock_owner
    b.writeBigInt64LE(-5n, 32); // atime
    b.writeBigUInt64LE(1_700_000_000n, 40); // mtime
    b.writeBigUInt64LE(1_600_000_000n, 48); // ctime
    b.writeUInt32LE(111, 56); // atimensec
    b.writeUInt32LE(222, 60); // mtimensec
    b.writeUInt32LE(333, 64); // ctimensec
    b.writeUInt32LE(0o104755, 68); // mode
    b.writeUInt32LE(1001, 76); // uid
    b.writeUInt32LE(1002, 80); // gid
    t.strictSame(In.setattr.decode(b, 0), {
      valid: 0xfff,
      fh: 0x1111111111111111n,
      size: 0x8000000000000002n,
      lockOwner: 0x3333333333333333n,
      atime: 2n ** 64n - 5n,
      mtime: 1_700_000_000n,
      ctime: 1_600_000_000n,
      atimensec: 111,
      mtimensec: 222,
      ctimensec: 333,
      mode: 0o104755,
      uid: 1001,
      gid: 1002,
    });
  });

  t.test('fuse_write_in', async (t) => {
    const b = Buffer.alloc(40);
    b.writeBigUInt64LE(0xaaaaaaaaaaaaaaa1n, 0); // fh
    b.writeBigUInt64LE(0x0020000000000003n, 8); // offset (above 2^53)
    b.writeUInt32LE(131072, 16); // size
    b.writeUInt32LE(5, 20); // write_flags
    b.writeBigUInt64LE(0x7777777777777777n, 24); // lock_owner
    b.writeUInt32LE(0o100002, 32); // flags
    t.strictSame(In.write.decode(b, 0), {
      fh: 0xaaaaaaaaaaaaaaa1n,
      offset: 0x0020000000000003n,
      size: 131072,
      writeFlags: 5,
      lockOwner: 0x7777777777777777n,
      flags: 0o100002,
    });
    // fuse_read_in has the same shape.
    t.equal(In.read.decode(b, 0).size, 131072, 'fuse_read_in.size @16');
  });

  t.test('fuse_rename2_in', async (t) => {
    const b = Buffer.alloc(16);
    b.writeBigUInt64LE(0x9000000000000009n, 0); // newdir
    b.writeUInt32LE(3, 8); // flags
    b.writeUInt32LE(0xffffffff, 12); // padding
    t.strictSame(In.rename2.decode(b, 0), { newdir: 0x9000000000000009n, flags: 3 });
  });

  t.test('fuse_init_in', async (t) => {
    const b = Buffer.alloc(64);
    b.writeUInt32LE(7, 0);
    b.writeUInt32LE(41, 4);
    b.writeUInt32LE(131072, 8); // max_readahead
    b.writeUInt32LE(0x80000001, 12); // flags
    b.writeUInt32LE(0x8, 16); // flags2
    t.strictSame(In.init.decode(b, 0), {
      major: 7,
      minor: 41,
      maxReadahead: 131072,
      flags: 0x80000001,
      flags2: 0x8,
    });
  });

  t.test('fuse_copy_file_range_in', async (t) => {
    const b = Buffer.alloc(56);
    [1n, 2n, 3n, 4n, 5n, 0x8000000000000006n, 7n].forEach((x, i) => {
      b.writeBigUInt64LE(x, i * 8);
    });
    t.strictSame(In.copyFileRange.decode(b, 0), {
      fhIn: 1n,
      offIn: 2n,
      nodeidOut: 3n,
      fhOut: 4n,
      offOut: 5n,
      len: 0x8000000000000006n,
      flags: 7n,
    });
  });

  t.test('fuse_entry_out and its embedded fuse_attr', async (t) => {
    const v = distinctive(asAny(Out.entry));
    const b = Out.entry.build(v as Parameters<typeof Out.entry.build>[0]);
    t.equal(b.readBigUInt64LE(0), v.nodeid, 'nodeid @0');
    t.equal(b.readBigUInt64LE(8), v.generation, 'generation @8');
    t.equal(b.readBigUInt64LE(16), v.entryValid, 'entry_valid @16');
    t.equal(b.readBigUInt64LE(24), v.attrValid, 'attr_valid @24');
    t.equal(b.readUInt32LE(32), v.entryValidNsec, 'entry_valid_nsec @32');
    t.equal(b.readUInt32LE(36), v.attrValidNsec, 'attr_valid_nsec @36');
    const a = 40; // offsetof(fuse_entry_out, attr)
    t.equal(b.readBigUInt64LE(a + 0), v.ino, 'attr.ino @40');
    t.equal(b.readBigUInt64LE(a + 8), v.size, 'attr.size @48');
    t.equal(b.readBigUInt64LE(a + 16), v.blocks, 'attr.blocks @56');
    t.equal(b.readBigUInt64LE(a + 24), v.atime, 'attr.atime @64');
    t.equal(b.readBigUInt64LE(a + 32), v.mtime, 'attr.mtime @72');
    t.equal(b.readBigUInt64LE(a + 40), v.ctime, 'attr.ctime @80');
    t.equal(b.readUInt32LE(a + 48), v.atimensec, 'attr.atimensec @88');
    t.equal(b.readUInt32LE(a + 52), v.mtimensec, 'attr.mtimensec @92');
    t.equal(b.readUInt32LE(a + 56), v.ctimensec, 'attr.ctimensec @96');
    t.equal(b.readUInt32LE(a + 60), v.mode, 'attr.mode @100');
    t.equal(b.readUInt32LE(a + 64), v.nlink, 'attr.nlink @104');
    t.equal(b.readUInt32LE(a + 68), v.uid, 'attr.uid @108');
    t.equal(b.readUInt32LE(a + 72), v.gid, 'attr.gid @112');
    t.equal(b.readUInt32LE(a + 76), v.rdev, 'attr.rdev @116');
    t.equal(b.readUInt32LE(a + 80), v.blksize, 'attr.blksize @120');
    t.equal(b.readUInt32LE(a + 84), v.flags, 'attr.flags @124');
  });

  t.test('fuse_attr_out', async (t) => {
    const b = Out.attrOut.build({
      attrValid: 0x8000000000000abcn,
      attrValidNsec: 999,
      ino: 77n,
      mode: 0o40755,
    });
    t.equal(b.readBigUInt64LE(0), 0x8000000000000abcn, 'attr_valid @0');
    t.equal(b.readUInt32LE(8), 999, 'attr_valid_nsec @8');
    t.equal(b.readUInt32LE(12), 0, 'dummy @12');
    t.equal(b.readBigUInt64LE(16), 77n, 'attr.ino @16');
    t.equal(b.readUInt32LE(16 + 60), 0o40755, 'attr.mode @76');
  });

  t.test('fuse_init_out', async (t) => {
    const b = Out.init.build({
      major: 7,
      minor: 38,
      maxReadahead: 0x20000,
      flags: 0x80000021,
      maxBackground: 64,
      congestionThreshold: 48,
      maxWrite: 1 << 20,
      timeGran: 1,
      maxPages: 256,
      mapAlignment: 3,
      flags2: 8,
    });
    t.equal(b.readUInt32LE(0), 7, 'major @0');
    t.equal(b.readUInt32LE(4), 38, 'minor @4');
    t.equal(b.readUInt32LE(8), 0x20000, 'max_readahead @8');
    t.equal(b.readUInt32LE(12), 0x80000021, 'flags @12');
    t.equal(b.readUInt16LE(16), 64, 'max_background @16');
    t.equal(b.readUInt16LE(18), 48, 'congestion_threshold @18');
    t.equal(b.readUInt32LE(20), 1 << 20, 'max_write @20');
    t.equal(b.readUInt32LE(24), 1, 'time_gran @24');
    t.equal(b.readUInt16LE(28), 256, 'max_pages @28');
    t.equal(b.readUInt16LE(30), 3, 'map_alignment @30');
    t.equal(b.readUInt32LE(32), 8, 'flags2 @32');
    t.ok(
      b.subarray(36).every((x) => x === 0),
      'unused[7] is zero',
    );
  });

  t.test('fuse_statfs_out (struct fuse_kstatfs)', async (t) => {
    const b = Out.statfs.build({
      blocks: 1n,
      bfree: 2n,
      bavail: 3n,
      files: 4n,
      ffree: 0x8000000000000005n,
      bsize: 4096,
      namelen: 255,
      frsize: 512,
    });
    t.strictSame(
      [0, 8, 16, 24, 32].map((o) => b.readBigUInt64LE(o)),
      [1n, 2n, 3n, 4n, 0x8000000000000005n],
    );
    t.equal(b.readUInt32LE(40), 4096, 'bsize @40');
    t.equal(b.readUInt32LE(44), 255, 'namelen @44');
    t.equal(b.readUInt32LE(48), 512, 'frsize @48');
  });

  t.test('fuse_dirent and notify structs', async (t) => {
    const d = Out.dirent.build({ ino: 0x8000000000000001n, off: 2n, namelen: 3, type: 4 });
    t.equal(d.readBigUInt64LE(0), 0x8000000000000001n, 'ino @0');
    t.equal(d.readBigUInt64LE(8), 2n, 'off @8');
    t.equal(d.readUInt32LE(16), 3, 'namelen @16');
    t.equal(d.readUInt32LE(20), 4, 'type @20');
    const ii = Out.notifyInvalInode.build({ ino: 9n, off: -1n, len: -2n });
    t.equal(ii.readBigUInt64LE(0), 9n);
    t.equal(ii.readBigInt64LE(8), -1n, 'off is signed @8');
    t.equal(ii.readBigInt64LE(16), -2n, 'len is signed @16');
    const ie = Out.notifyInvalEntry.build({ parent: 5n, namelen: 6, flags: 7 });
    t.strictSame([ie.readBigUInt64LE(0), ie.readUInt32LE(8), ie.readUInt32LE(12)], [5n, 6, 7]);
    const nd = Out.notifyDelete.build({ parent: 5n, child: 6n, namelen: 7 });
    t.strictSame([nd.readBigUInt64LE(0), nd.readBigUInt64LE(8), nd.readUInt32LE(16)], [5n, 6n, 7]);
  });
});

// ---- parseRequest ----

/** What the kernel sends after the header for each opcode (from fs/fuse and fuse.h, at 7.38). */
const KERNEL_LAYOUT: Record<string, { body: number; names: number; data: boolean }> = {
  LOOKUP: { body: 0, names: 1, data: false },
  FORGET: { body: 8, names: 0, data: false },
  BATCH_FORGET: { body: 8, names: 0, data: true },
  GETATTR: { body: 16, names: 0, data: false },
  SETATTR: { body: 88, names: 0, data: false },
  READLINK: { body: 0, names: 0, data: false },
  SYMLINK: { body: 0, names: 2, data: false },
  MKNOD: { body: 16, names: 1, data: false },
  MKDIR: { body: 8, names: 1, data: false },
  UNLINK: { body: 0, names: 1, data: false },
  RMDIR: { body: 0, names: 1, data: false },
  RENAME: { body: 8, names: 2, data: false },
  RENAME2: { body: 16, names: 2, data: false },
  LINK: { body: 8, names: 1, data: false },
  OPEN: { body: 8, names: 0, data: false },
  READ: { body: 40, names: 0, data: false },
  WRITE: { body: 40, names: 0, data: true },
  STATFS: { body: 0, names: 0, data: false },
  RELEASE: { body: 24, names: 0, data: false },
  FSYNC: { body: 16, names: 0, data: false },
  SETXATTR: { body: 8, names: 1, data: true },
  GETXATTR: { body: 8, names: 1, data: false },
  LISTXATTR: { body: 8, names: 0, data: false },
  REMOVEXATTR: { body: 0, names: 1, data: false },
  FLUSH: { body: 24, names: 0, data: false },
  // The layout only requires the 16-byte prefix older kernels send (7.36 added flags2 and padding to 64).
  INIT: { body: 16, names: 0, data: false },
  OPENDIR: { body: 8, names: 0, data: false },
  READDIR: { body: 40, names: 0, data: false },
  READDIRPLUS: { body: 40, names: 0, data: false },
  RELEASEDIR: { body: 24, names: 0, data: false },
  FSYNCDIR: { body: 16, names: 0, data: false },
  GETLK: { body: 48, names: 0, data: false },
  SETLK: { body: 48, names: 0, data: false },
  SETLKW: { body: 48, names: 0, data: false },
  ACCESS: { body: 8, names: 0, data: false },
  CREATE: { body: 16, names: 1, data: false },
  TMPFILE: { body: 16, names: 1, data: false },
  INTERRUPT: { body: 8, names: 0, data: false },
  DESTROY: { body: 0, names: 0, data: false },
  FALLOCATE: { body: 32, names: 0, data: false },
  LSEEK: { body: 24, names: 0, data: false },
  COPY_FILE_RANGE: { body: 56, names: 0, data: false },
  SYNCFS: { body: 8, names: 0, data: false },
};

interface MsgParts {
  opcode: number;
  unique: bigint;
  nodeid?: bigint;
  body?: Buffer;
  names?: Buffer[];
  /** Name bytes appended without their NUL (a broken message). */
  unterminated?: Buffer;
  data?: Buffer;
  ext?: Buffer;
  lenDelta?: number;
  totalExtlen?: number;
}

function message(p: MsgParts): Buffer {
  const parts: Buffer[] = [];
  if (p.body) parts.push(p.body);
  for (const n of p.names ?? []) parts.push(n, Buffer.alloc(1));
  if (p.unterminated) parts.push(p.unterminated);
  if (p.data) parts.push(p.data);
  if (p.ext) parts.push(p.ext);
  const rest = Buffer.concat(parts);
  const len = Size.inHeader + rest.length;
  const head = InHeader.build({
    len: len + (p.lenDelta ?? 0),
    opcode: p.opcode,
    unique: p.unique,
    nodeid: p.nodeid ?? 0x8000000000000777n,
    uid: 1001,
    gid: 1002,
    pid: 4242,
    totalExtlen: p.totalExtlen ?? (p.ext ? p.ext.length / 8 : 0),
  });
  return Buffer.concat([head, rest]);
}

const pattern = (n: number, seed: number) =>
  Buffer.from(Array.from({ length: n }, (_, i) => ((i * 7 + seed) % 255) + 1));

function thrownBy(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

t.test('requestLayout matches what the kernel sends for every opcode', async (t) => {
  t.strictSame(Object.keys(requestLayout).sort(), Object.keys(KERNEL_LAYOUT).sort(), 'same opcodes');
  for (const [op, want] of Object.entries(KERNEL_LAYOUT)) {
    const l = requestLayout[op as OpcodeName];
    if (!l) continue;
    t.equal(l.body?.size ?? 0, want.body, `${op}: body size`);
    t.equal(l.names, want.names, `${op}: names`);
    t.equal(l.data, want.data, `${op}: data`);
    t.equal(l.noReply, op === 'FORGET' || op === 'BATCH_FORGET', `${op}: noReply`);
  }
});

t.test('parseRequest splits a well-formed message of every opcode', async (t) => {
  let unique = 0x8000000000000000n;
  for (const [op, layout] of Object.entries(requestLayout)) {
    if (!layout) continue;
    const opcode = Opcode[op as OpcodeName];
    const bodySize = layout.body?.size ?? 0;
    const body = pattern(bodySize, opcode);
    const names = Array.from({ length: layout.names }, (_, i) => Buffer.from(`name${i}-${op}-\u00e9`));
    const data = layout.data ? Buffer.from(`data for ${op}\0with a NUL inside`) : undefined;
    unique += 2n;
    const msg = message({ opcode, unique, body, names, ...(data ? { data } : {}) });
    const r = parseRequest(msg);
    t.equal(r.opcode, op, `${op}: opcode name`);
    t.equal(r.header.opcode, opcode, `${op}: opcode number`);
    t.equal(r.header.unique, unique, `${op}: unique`);
    t.equal(r.header.nodeid, 0x8000000000000777n, `${op}: nodeid`);
    t.equal(r.header.len, msg.length, `${op}: len`);
    t.strictSame([r.header.uid, r.header.gid, r.header.pid], [1001, 1002, 4242], `${op}: ids`);
    t.equal(r.bodyAt, 40, `${op}: body follows the header`);
    t.ok(r.buf.subarray(r.bodyAt, r.bodyAt + bodySize).equals(body), `${op}: body bytes`);
    t.strictSame(
      r.names.map((n) => n.toString()),
      names.map((n) => n.toString()),
      `${op}: names`,
    );
    t.ok(r.data.equals(data ?? Buffer.alloc(0)), `${op}: data`);

    // With extensions after the message (total_extlen): they are cut off.
    const ext = Buffer.alloc(16, 0x5a);
    const withExt = parseRequest(message({ opcode, unique, body, names, ...(data ? { data } : {}), ext }));
    t.equal(withExt.buf.length, msg.length, `${op}: extensions are not part of buf`);
    t.ok(withExt.data.equals(data ?? Buffer.alloc(0)), `${op}: extensions are not data`);
    t.strictSame(
      withExt.names.map((n) => n.toString()),
      names.map((n) => n.toString()),
      `${op}: names with extensions`,
    );

    // Trailing bytes after what a data-less opcode carries are ignored, not data.
    if (!layout.data) {
      const extra = parseRequest(message({ opcode, unique, body, names, data: Buffer.from('xyz') }));
      t.equal(extra.data.length, 0, `${op}: trailing bytes are not data`);
    }
  }
});

t.test('parseRequest of empty names and empty data', async (t) => {
  const r = parseRequest(
    message({ opcode: Opcode.SYMLINK, unique: 2n, names: [Buffer.alloc(0), Buffer.from('t')] }),
  );
  t.strictSame(
    r.names.map((n) => n.toString()),
    ['', 't'],
  );
  const w = parseRequest(message({ opcode: Opcode.WRITE, unique: 4n, body: In.write.build({ size: 0 }) }));
  t.equal(w.data.length, 0);
});

t.test('parseRequest of opcodes without a layout', async (t) => {
  for (const opcode of [Opcode.IOCTL, Opcode.POLL, Opcode.BMAP, Opcode.STATX, 0, 9999]) {
    const r = parseRequest(message({ opcode, unique: 6n, body: Buffer.alloc(24, 1) }));
    t.equal(r.header.opcode, opcode);
    t.equal(r.opcode, opcodeName.get(opcode), `opcode ${opcode}`);
    t.strictSame(r.names, []);
    t.equal(r.data.length, 0);
  }
  t.equal(
    parseRequest(message({ opcode: 9999, unique: 6n })).opcode,
    undefined,
    'unknown opcode has no name',
  );
  t.equal(parseRequest(message({ opcode: Opcode.IOCTL, unique: 6n })).opcode, 'IOCTL');
});

t.test('parseRequest rejects truncated and inconsistent messages', async (t) => {
  for (const n of [0, 1, 8, 39]) {
    const err = thrownBy(() => parseRequest(Buffer.alloc(n, 0xab)));
    t.type(err, MalformedRequest, `${n} bytes: shorter than the header`);
    t.equal((err as MalformedRequest).unique, undefined, `${n} bytes: no unique`);
  }

  let unique = 0x9000000000000000n;
  for (const [op, layout] of Object.entries(requestLayout)) {
    if (!layout) continue;
    const opcode = Opcode[op as OpcodeName];
    const bodySize = layout.body?.size ?? 0;
    const body = pattern(bodySize, opcode);
    const names = Array.from({ length: layout.names }, (_, i) => Buffer.from(`n${i}`));
    unique += 2n;
    const check = (what: string, msg: Buffer) => {
      const err = thrownBy(() => parseRequest(msg));
      t.type(err, MalformedRequest, `${op}: ${what} throws MalformedRequest`);
      t.equal((err as MalformedRequest).unique, unique, `${op}: ${what} carries the unique`);
      t.equal((err as MalformedRequest).opcode, op, `${op}: ${what} carries the opcode`);
    };
    check('header.len one more than read', message({ opcode, unique, body, names, lenDelta: 1 }));
    check('header.len one less than read', message({ opcode, unique, body, names, lenDelta: -1 }));
    // A read cut short: the header promises the whole message.
    const whole = message({ opcode, unique, body, names });
    const zeroLen = Buffer.from(whole);
    zeroLen.writeUInt32LE(0, 0);
    check('header.len zero', zeroLen);
    // (a header-only message cut short is shorter than the header: checked above)
    if (whole.length > Size.inHeader) check('message cut short', whole.subarray(0, whole.length - 1));
    check('extensions overrun the message', message({ opcode, unique, body, names, totalExtlen: 0xffff }));
    if (bodySize > 0) {
      check('body one byte short', message({ opcode, unique, body: body.subarray(0, bodySize - 1) }));
      check('no body at all', message({ opcode, unique }));
    }
    if (layout.names > 0) {
      const last = Buffer.from('unterminated');
      check(
        'last name not NUL-terminated',
        message({ opcode, unique, body, names: names.slice(0, -1), unterminated: last }),
      );
      check('names missing', message({ opcode, unique, body }));
    }
  }
});

// ---- setattr / attr conversions ----

const NS = 1_000_000_000n;
const u64 = (x: bigint) => BigInt.asUintN(64, x);

t.test('decodeSetattr maps every FATTR bit', async (t) => {
  const base = {
    fh: 0x8000000000000011n,
    size: 0x8000000000000022n,
    lockOwner: 0x33n,
    atime: 1_700_000_000n,
    mtime: 1_600_000_000n,
    ctime: 1_500_000_000n,
    atimensec: 111_111_111,
    mtimensec: 222_222_222,
    ctimensec: 333_333_333,
    mode: 0o104755,
    uid: 0xfffffffe,
    gid: 1002,
  };
  const dec = (valid: number, over: Partial<typeof base> = {}) =>
    decodeSetattr(In.setattr.decode(In.setattr.build({ ...base, ...over, valid }), 0));

  t.strictSame(dec(0), {}, 'no bits: no changes');
  t.strictSame(dec(FATTR.MODE), { mode: 0o104755 });
  t.strictSame(dec(FATTR.UID), { uid: 0xfffffffe });
  t.strictSame(dec(FATTR.GID), { gid: 1002 });
  t.strictSame(dec(FATTR.SIZE), { size: 0x8000000000000022n });
  t.strictSame(dec(FATTR.ATIME), { atimeNs: 1_700_000_000n * NS + 111_111_111n });
  t.strictSame(dec(FATTR.MTIME), { mtimeNs: 1_600_000_000n * NS + 222_222_222n });
  t.strictSame(dec(FATTR.CTIME), { ctimeNs: 1_500_000_000n * NS + 333_333_333n });
  t.strictSame(dec(FATTR.FH), { fh: 0x8000000000000011n });
  t.strictSame(dec(FATTR.ATIME | FATTR.ATIME_NOW), { atimeNs: 'now' });
  t.strictSame(dec(FATTR.MTIME | FATTR.MTIME_NOW), { mtimeNs: 'now' });
  t.strictSame(dec(FATTR.KILL_SUIDGID), { killSuidgid: true });
  t.strictSame(dec(FATTR.LOCKOWNER), {}, 'LOCKOWNER carries nothing for the backend');
  t.strictSame(
    dec(FATTR.ATIME | FATTR.MTIME | FATTR.MTIME_NOW),
    { atimeNs: 1_700_000_000n * NS + 111_111_111n, mtimeNs: 'now' },
    'NOW applies to its own time only',
  );
  t.strictSame(dec(0xfff), {
    mode: 0o104755,
    uid: 0xfffffffe,
    gid: 1002,
    size: 0x8000000000000022n,
    atimeNs: 'now',
    mtimeNs: 'now',
    ctimeNs: 1_500_000_000n * NS + 333_333_333n,
    fh: 0x8000000000000011n,
    killSuidgid: true,
  });
  // Times before 1970: the u64 seconds field holds a two's complement negative.
  t.strictSame(dec(FATTR.ATIME, { atime: u64(-2n), atimensec: 250 }), { atimeNs: -2n * NS + 250n });
  t.strictSame(dec(FATTR.MTIME, { mtime: u64(-1n), mtimensec: 999_999_999 }), { mtimeNs: -1n });
  t.strictSame(dec(FATTR.CTIME, { ctime: u64(-1n), ctimensec: 0 }), { ctimeNs: -NS });
});

const sampleAttr = (over: Partial<Attr> = {}): Attr => ({
  ino: 0x8000000000000042n,
  size: 0x0020000000000001n,
  blocks: 77n,
  atimeNs: 0n,
  mtimeNs: 0n,
  ctimeNs: 0n,
  mode: 0o100644,
  nlink: 3,
  uid: 1001,
  gid: 1002,
  rdev: 0x00800003,
  blksize: 4096,
  ...over,
});

t.test('attrToWire splits nanosecond times, negative ones too', async (t) => {
  const cases: [bigint, bigint, number][] = [
    [0n, 0n, 0],
    [1n, 0n, 1],
    [-1n, -1n, 999_999_999],
    [-NS, -1n, 0],
    [-NS - 1n, -2n, 999_999_999],
    [-NS + 1n, -1n, 1],
    [1_500_000_000n, 1n, 500_000_000],
    [1_700_000_000_123_456_789n, 1_700_000_000n, 123_456_789],
    [-(2n ** 63n), -9_223_372_037n, 145_224_192],
    [2n ** 63n - 1n, 9_223_372_036n, 854_775_807],
  ];
  for (const [ns, sec, nsec] of cases) {
    const w = attrToWire(sampleAttr({ atimeNs: ns, mtimeNs: ns, ctimeNs: ns }));
    t.strictSame([w.atime, w.atimensec], [sec, nsec], `atime ${ns}`);
    t.strictSame([w.mtime, w.mtimensec], [sec, nsec], `mtime ${ns}`);
    t.strictSame([w.ctime, w.ctimensec], [sec, nsec], `ctime ${ns}`);
    // On the wire the u64 seconds hold the two's complement of a negative value.
    const b = Out.attr.build(w);
    t.equal(b.readBigInt64LE(24), sec, `wire atime of ${ns}`);
    t.equal(b.readUInt32LE(48), nsec, `wire atimensec of ${ns}`);
  }
  const w = attrToWire(sampleAttr({ atimeNs: 1n, mtimeNs: 2_000_000_003n, ctimeNs: -5n }));
  t.strictSame(w, {
    ino: 0x8000000000000042n,
    size: 0x0020000000000001n,
    blocks: 77n,
    atime: 0n,
    mtime: 2n,
    ctime: -1n,
    atimensec: 1,
    mtimensec: 3,
    ctimensec: 999_999_995,
    mode: 0o100644,
    nlink: 3,
    uid: 1001,
    gid: 1002,
    rdev: 0x00800003,
    blksize: 4096,
    flags: 0,
  });
});

// ---- properties ----

const arbitraryOf: Record<FieldType, fc.Arbitrary<number | bigint> | undefined> = {
  u16: fc.integer({ min: 0, max: 0xffff }),
  u32: fc.integer({ min: 0, max: 0xffffffff }),
  i32: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
  u64: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
  i64: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
  pad16: undefined,
  pad32: undefined,
};

t.test('property: every struct round-trips arbitrary values of every field type', async (t) => {
  for (const s of allStructs) {
    const rec: Record<string, fc.Arbitrary<number | bigint>> = {};
    for (const [k, type] of Object.entries(s.fields)) {
      const arb = arbitraryOf[type];
      if (arb) rec[k] = arb;
    }
    t.doesNotThrow(() => {
      fc.assert(
        fc.property(fc.record(rec), fc.nat(16), (v, offset) => {
          const buf = Buffer.alloc(offset + s.size);
          s.encode(v, buf, offset);
          const back = s.decode(buf, offset);
          for (const k of Object.keys(rec)) if (back[k] !== v[k]) return false;
          return Object.keys(back).length === Object.keys(rec).length;
        }),
        { numRuns: 200 },
      );
    }, `${s.name} round-trips`);
  }
});

t.test('property: u64 fields wrap signed values (two complement), i64 fields keep them', async (t) => {
  const s = asAny(Out.notifyInvalInode); // ino u64, off/len i64
  fc.assert(
    fc.property(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), (x) => {
      const back = s.decode(s.build({ ino: x, off: x, len: x }), 0);
      return back.ino === BigInt.asUintN(64, x) && back.off === x && back.len === x;
    }),
  );
  t.pass('u64 wraps, i64 round-trips');
});

t.test('property: times survive attrToWire then decodeSetattr', async (t) => {
  fc.assert(
    fc.property(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), (ns) => {
      const w = attrToWire(sampleAttr({ atimeNs: ns, mtimeNs: ns, ctimeNs: ns }));
      if (w.atimensec < 0 || w.atimensec >= 1e9) return false;
      if (w.atime * NS + BigInt(w.atimensec) !== ns) return false;
      const setattr = In.setattr.build({
        valid: FATTR.ATIME | FATTR.MTIME | FATTR.CTIME,
        atime: w.atime,
        atimensec: w.atimensec,
        mtime: w.mtime,
        mtimensec: w.mtimensec,
        ctime: w.ctime,
        ctimensec: w.ctimensec,
      });
      const c = decodeSetattr(In.setattr.decode(setattr, 0));
      return c.atimeNs === ns && c.mtimeNs === ns && c.ctimeNs === ns;
    }),
  );
  t.pass('ns -> (sec, nsec) -> ns');
});

t.test('property: parseRequest never throws anything but MalformedRequest', async (t) => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 200 }),
      fc.integer({ min: 0, max: 60 }),
      fc.boolean(),
      (bytes, opcode, fixLen) => {
        const b = Buffer.from(bytes);
        if (fixLen && b.length >= 40) {
          b.writeUInt32LE(b.length, 0);
          b.writeUInt32LE(opcode, 4);
          b.writeUInt16LE(b[36]! & 3, 36);
        }
        try {
          const r = parseRequest(b);
          return r.buf.length <= b.length && r.bodyAt === 40;
        } catch (err) {
          return err instanceof MalformedRequest;
        }
      },
    ),
    { numRuns: 2000 },
  );
  t.pass('only MalformedRequest');
});

t.test('direntSize pads every record to 8 bytes', async (t) => {
  for (let n = 0; n < 40; n++) {
    const plain = direntSize(n, false);
    const plus = direntSize(n, true);
    t.equal(plain, Math.ceil((24 + n) / 8) * 8, `plain ${n}`);
    t.equal(plus, Math.ceil((152 + n) / 8) * 8, `plus ${n}`);
  }
});

// ---- fuzzing the request parser (FUZZ_RUNS=N for a longer run by hand) ----

t.test(
  'property: mutated requests of every opcode parse within their bytes or throw MalformedRequest',
  async (t) => {
    const layouts = Object.entries(requestLayout).filter(([, l]) => l !== undefined);
    const seeds = layouts.map(([op, layout]) => {
      const opcode = Opcode[op as OpcodeName];
      const names = Array.from({ length: layout!.names }, (_, i) => Buffer.from(`n${i}`));
      const data = layout!.data ? Buffer.from('some data') : undefined;
      return message({
        opcode,
        unique: 0x4000n,
        body: pattern(layout!.body?.size ?? 0, opcode),
        names,
        ...(data ? { data } : {}),
      });
    });
    const inputs = fc.oneof(
      fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
      fc
        .tuple(
          fc.nat(seeds.length - 1),
          fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 8 }),
          fc.option(fc.nat(), { nil: undefined }),
          fc.uint8Array({ maxLength: 40 }),
        )
        .map(([i, flips, cut, extra]) => {
          const b = Buffer.concat([seeds[i]!, Buffer.from(extra)]);
          for (const [at, v] of flips) b[at % b.length] = v;
          return cut === undefined ? b : b.subarray(0, cut % (b.length + 1));
        }),
    );
    fc.assert(
      fc.property(inputs, (msg) => {
        let r;
        try {
          r = parseRequest(msg);
        } catch (err) {
          return err instanceof MalformedRequest;
        }
        // What it hands on lies within the message it was given, as the header says.
        const inside = (b: Buffer) =>
          b.buffer === msg.buffer && b.byteOffset >= msg.byteOffset && b.length <= msg.length;
        return (
          r.header.len <= msg.length &&
          r.bodyAt <= r.buf.length &&
          r.names.every((n) => n.length < r.buf.length && !n.includes(0)) &&
          r.data.length <= r.buf.length &&
          [r.buf, r.data, ...r.names].every((b) => b.length === 0 || inside(b))
        );
      }),
      { numRuns: Number(process.env.FUZZ_RUNS ?? 2000) },
    );
    t.pass('every input parsed within bounds or was refused as malformed');
  },
);
