/**
 * Bad input straight to a brick over gRPC: every malformed or misrouted
 * request is answered with a clear error from the one table (the gRPC status
 * and the `dunix-code` metadata), never a crash and never an internal bug;
 * afterwards the brick is alive and serves normal requests.
 */
import * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import t from 'tap';
import {
  blockPg,
  ERROR_CODE_METADATA_KEY,
  errorTable,
  GrpcStatus,
  limits,
  makeIno,
  type ErrorCode,
  type wire,
} from '@dunix/proto';
import { startCluster } from '../src/cluster.js';

type Outcome =
  { ok: true; reply: unknown } | { ok: false; status: number; code: string | undefined; details: string };

type Raw = Record<
  string,
  (req: unknown, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, reply?: unknown) => void) => void
>;

function call(client: unknown, method: string, req: unknown): Promise<Outcome> {
  return new Promise((resolve) => {
    (client as Raw)[method]!.call(client, req, { deadline: Date.now() + 15_000 }, (err, reply) => {
      if (!err) resolve({ ok: true, reply });
      else {
        const code = err.metadata?.get(ERROR_CODE_METADATA_KEY)[0];
        resolve({
          ok: false,
          status: err.code,
          code: typeof code === 'string' ? code : undefined,
          details: err.details,
        });
      }
    });
  });
}

const caller = { uid: 0, gid: 0, groups: [], pid: 1 };
const U64_2_63 = (1n << 63n).toString();
const U64_MAX = ((1n << 64n) - 1n).toString();

t.test('bad input to a brick', async (t) => {
  const c = await startCluster(t, { mount: false });
  const placement = await c.placement();
  const brick = await c.brickOfPg(0); // serves the root directory
  const client = brick.client();
  const epoch = placement[0]!.epoch;
  const otherPg = placement.find((a) => a.bricks[0] !== brick.id)!.pg;
  const myPgs = placement.filter((a) => a.bricks[0] === brick.id).map((a) => a.pg);
  const bs = 1024 * 1024;
  let rid = 0;
  const header = (pg = 0, requestId = `bad-input.${++rid}`) => ({
    pg,
    epoch: String(placement[pg]!.epoch),
    requestId,
  });

  const expectError = async (what: string, method: string, req: unknown, codes: ErrorCode[]) => {
    const r = await call(client, method, req);
    if (r.ok) {
      t.fail(`${what}: ${method} must fail, it succeeded`);
      return;
    }
    t.ok(
      r.code !== undefined && (codes as string[]).includes(r.code),
      `${what}: ${method} -> ${r.code} (${r.details}); expected ${codes.join('|')}`,
    );
    if (r.code && r.code in errorTable) {
      t.equal(
        r.status,
        GrpcStatus[errorTable[r.code as ErrorCode].grpc],
        `${what}: gRPC status matches the table`,
      );
    }
  };

  // A regular file to aim some requests at.
  const made = await call(client, 'Mknod', {
    header: header(),
    caller,
    parent: '1',
    name: Buffer.from('victim'),
    mode: 0o100644,
  });
  t.ok(made.ok, 'a file to aim at');
  const fileIno = made.ok ? (made.reply as wire.EntryReply__Output).entry!.ino : '0';

  await expectError(
    'unknown inode',
    'GetAttr',
    { header: header(), ino: makeIno(0, 987_654_321n).toString() },
    ['NOT_FOUND', 'STALE_HANDLE'],
  );
  await expectError(
    'unknown parent',
    'Lookup',
    { header: header(), caller, parent: makeIno(0, 987_654_321n).toString(), name: Buffer.from('x') },
    ['NOT_FOUND', 'STALE_HANDLE'],
  );
  await expectError('inode 0', 'GetAttr', { header: header(), ino: '0' }, ['STALE_HANDLE']);
  await expectError(
    'inode of a PG that does not exist',
    'GetAttr',
    { header: header(), ino: makeIno(200, 1n).toString() },
    ['STALE_HANDLE'],
  );
  await expectError('inode 2^64-1', 'GetAttr', { header: header(), ino: U64_MAX }, ['STALE_HANDLE']);
  await expectError(
    'header PG out of range',
    'AllocIno',
    { header: { pg: 4000, epoch: '1', requestId: '' } },
    ['INVALID_ARGUMENT'],
  );
  await expectError('request sent to the wrong PG', 'GetAttr', { header: header(myPgs[1] ?? 0), ino: '1' }, [
    'INVALID_ARGUMENT',
  ]);

  const mkdir = (name: Buffer, extra: object = {}) => ({
    header: header(),
    caller,
    parent: '1',
    name,
    mode: 0o755,
    ...extra,
  });
  await expectError('name of 300 bytes', 'Mkdir', mkdir(Buffer.alloc(300, 0x61)), ['NAME_TOO_LONG']);
  await expectError(
    'name of 256 bytes',
    'Lookup',
    { header: header(), caller, parent: '1', name: Buffer.alloc(256, 0x61) },
    ['NAME_TOO_LONG'],
  );
  await expectError('name with /', 'Mkdir', mkdir(Buffer.from('a/b')), ['INVALID_ARGUMENT']);
  await expectError('name with NUL', 'Mknod', { ...mkdir(Buffer.from('a\0b')), mode: 0o100644 }, [
    'INVALID_ARGUMENT',
  ]);
  await expectError('empty name', 'Mkdir', mkdir(Buffer.alloc(0)), ['INVALID_ARGUMENT']);
  await expectError('name "."', 'Mkdir', mkdir(Buffer.from('.')), ['INVALID_ARGUMENT']);
  await expectError(
    'name ".."',
    'Lookup',
    { header: header(), caller, parent: '1', name: Buffer.from('..') },
    ['INVALID_ARGUMENT'],
  );
  await expectError(
    'rename to an empty name',
    'Rename',
    {
      header: header(),
      caller,
      parent: '1',
      name: Buffer.from('victim'),
      newParent: '1',
      newName: Buffer.alloc(0),
    },
    ['INVALID_ARGUMENT'],
  );
  await expectError(
    'symlink target of 5000 bytes',
    'Symlink',
    { header: header(), caller, parent: '1', name: Buffer.from('l'), target: Buffer.alloc(5000, 0x61) },
    ['NAME_TOO_LONG'],
  );
  await expectError(
    'device major out of range',
    'Mknod',
    {
      header: header(),
      caller,
      parent: '1',
      name: Buffer.from('dev'),
      mode: 0o20644,
      rdev: { major: 5000, minor: 1 },
    },
    ['INVALID_ARGUMENT'],
  );

  // Block I/O: the header PG is served here, so only the range checks can refuse.
  const blk = { ino: fileIno, index: '0' };
  await expectError(
    'write past the block size',
    'WriteBlock',
    { header: header(), ...blk, offset: bs - 10, data: Buffer.alloc(100) },
    ['OUT_OF_RANGE'],
  );
  await expectError(
    'write larger than a block',
    'WriteBlock',
    { header: header(), ...blk, offset: 0, data: Buffer.alloc(bs + 1) },
    ['OUT_OF_RANGE'],
  );
  await expectError(
    'read past the block size',
    'ReadBlock',
    { header: header(), ...blk, offset: bs, length: 1 },
    ['OUT_OF_RANGE'],
  );
  await expectError(
    'block index 2^63',
    'ReadBlock',
    { header: header(), ino: fileIno, index: U64_2_63, offset: 0, length: 1 },
    ['FILE_TOO_LARGE'],
  );
  const wrongPgIndex = [...Array(64).keys()].find((i) => blockPg(BigInt(fileIno), BigInt(i), c.pgs) !== 0)!;
  await expectError(
    'block sent to a PG it does not belong to',
    'WriteBlock',
    { header: header(), ino: fileIno, index: String(wrongPgIndex), offset: 0, data: Buffer.from('x') },
    ['INVALID_ARGUMENT'],
  );
  await expectError(
    'inline write at offset 2^63',
    'WriteInline',
    { header: header(), caller, ino: fileIno, offset: U64_2_63, data: Buffer.from('x') },
    ['FILE_TOO_LARGE'],
  );
  await expectError(
    'inline write at offset 2^64-1',
    'WriteInline',
    { header: header(), caller, ino: fileIno, offset: U64_MAX, data: Buffer.from('x') },
    ['FILE_TOO_LARGE'],
  );
  await expectError('extend to 2^63', 'Extend', { header: header(), caller, ino: fileIno, end: U64_2_63 }, [
    'FILE_TOO_LARGE',
  ]);
  await expectError(
    'truncate to 2^63',
    'SetAttr',
    { header: header(), caller, ino: fileIno, setSize: true, size: U64_2_63 },
    ['FILE_TOO_LARGE', 'INVALID_ARGUMENT'],
  );
  await expectError(
    'time_how out of range',
    'SetAttr',
    { header: header(), caller, ino: fileIno, atimeHow: 7 },
    ['INVALID_ARGUMENT'],
  );

  // Routing and fencing.
  await expectError(
    'PG this brick does not serve',
    'GetAttr',
    {
      header: { pg: otherPg, epoch: String(placement[otherPg]!.epoch), requestId: '' },
      ino: makeIno(otherPg, 1n).toString(),
    },
    ['NOT_PRIMARY'],
  );
  await expectError(
    'stale epoch',
    'GetAttr',
    { header: { pg: 0, epoch: String(epoch + 7), requestId: '' }, ino: '1' },
    ['STALE_EPOCH'],
  );
  await expectError('missing header', 'Lookup', { caller, parent: '1', name: Buffer.from('x') }, [
    'INVALID_ARGUMENT',
  ]);
  await expectError(
    'missing header on a mutation',
    'Mkdir',
    { caller, parent: '1', name: Buffer.from('x'), mode: 0o755 },
    ['INVALID_ARGUMENT'],
  );
  await expectError(
    'missing caller',
    'Mkdir',
    { header: header(), parent: '1', name: Buffer.from('x'), mode: 0o755 },
    ['INVALID_ARGUMENT'],
  );
  await expectError(
    'mutation without a request id',
    'Mkdir',
    mkdir(Buffer.from('norid'), { header: header(0, '') }),
    ['INVALID_ARGUMENT'],
  );
  await expectError(
    'request id of 100 bytes',
    'Mkdir',
    mkdir(Buffer.from('longrid'), { header: header(0, 'r'.repeat(100)) }),
    ['INVALID_ARGUMENT'],
  );

  // Extended attributes.
  const xattr = (name: Buffer, value: Buffer, flags = 0) => ({
    header: header(),
    caller,
    ino: fileIno,
    name,
    value,
    flags,
  });
  await expectError(
    'xattr value of 64 KiB + 1',
    'SetXattr',
    xattr(Buffer.from('user.big'), Buffer.alloc(limits.xattrValueMaxBytes + 1)),
    ['OUT_OF_RANGE', 'NO_SPACE', 'RANGE_TOO_SMALL'],
  );
  await expectError('xattr name of 256 bytes', 'SetXattr', xattr(Buffer.alloc(256, 0x61), Buffer.from('v')), [
    'RANGE_TOO_SMALL',
    'NAME_TOO_LONG',
  ]);
  await expectError(
    'empty xattr name',
    'GetXattr',
    { header: header(), caller, ino: fileIno, name: Buffer.alloc(0) },
    ['INVALID_ARGUMENT'],
  );
  await expectError('xattr flags 4', 'SetXattr', xattr(Buffer.from('user.f'), Buffer.from('v'), 4), [
    'INVALID_ARGUMENT',
  ]);

  // Transactions between bricks.
  await expectError('transaction id with a slash', 'TxStatus', { header: header(), txId: 'a/b' }, [
    'INVALID_ARGUMENT',
  ]);
  await expectError('tx key of 1 byte', 'TxRead', { header: header(), keys: [Buffer.from([1])] }, [
    'INVALID_ARGUMENT',
  ]);
  await expectError(
    'tx key of another PG',
    'TxRead',
    { header: header(), keys: [Buffer.from([0, otherPg, 1, 0])] },
    ['INVALID_ARGUMENT'],
  );
  await expectError(
    'too many tx keys',
    'TxRead',
    { header: header(), keys: Array.from({ length: 65 }, () => Buffer.from([0, 0, 1])) },
    ['OUT_OF_RANGE'],
  );
  await expectError(
    'prepare with a key of another PG',
    'TxPrepare',
    {
      header: header(),
      txId: 'evil.1',
      coordinatorPg: 0,
      reads: [],
      writes: [{ key: Buffer.from([0, otherPg, 1, 0]), value: Buffer.from('x'), present: true }],
    },
    ['INVALID_ARGUMENT'],
  );

  // Garbage bytes as the request body (no protobuf at all).
  const methods = ['Lookup', 'Mkdir', 'WriteBlock', 'TxPrepare'];
  const Raw = grpc.makeGenericClientConstructor(
    Object.fromEntries(
      methods.map((m) => [
        m,
        {
          path: `/dunix.v1.Brick/${m}`,
          requestStream: false,
          responseStream: false,
          requestSerialize: (b: Buffer) => b,
          requestDeserialize: (b: Buffer) => b,
          responseSerialize: (b: Buffer) => b,
          responseDeserialize: (b: Buffer) => b,
        },
      ]),
    ),
    'RawBrick',
  );
  const raw = new Raw(brick.address, grpc.credentials.createInsecure());
  t.teardown(() => raw.close());
  const garbage = [
    Buffer.from([0x0f, 0xff, 0xff, 0xff, 0xff]), // field 1, wire type 7: invalid
    Buffer.from([0x22, 0x7f, 0x01]), // field 4, length 127, 1 byte present
    Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), // varint of 11 bytes
    Buffer.from('GET / HTTP/1.1\r\n\r\n'),
  ];
  for (const m of methods) {
    for (const [i, g] of garbage.entries()) {
      const r = await call(raw, m, g);
      t.notOk(r.ok, `garbage ${i} to ${m} is refused`);
      if (!r.ok) {
        t.ok(
          [GrpcStatus.INTERNAL, GrpcStatus.INVALID_ARGUMENT, GrpcStatus.FAILED_PRECONDITION].includes(
            r.status as 13,
          ),
          `garbage ${i} to ${m}: status ${r.status} ${r.code ?? ''} ${r.details}`,
        );
      }
    }
  }

  // The brick is alive and serves normal requests.
  t.ok(brick.alive(), 'the brick process is alive');
  t.doesNotThrow(() => process.kill(brick.pid, 0), 'its PID exists');
  const ok1 = await call(client, 'Mkdir', mkdir(Buffer.from('after-bad-input')));
  t.ok(ok1.ok, `a valid mkdir works ${ok1.ok ? '' : ok1.details}`);
  const ok2 = await call(client, 'Lookup', {
    header: header(),
    caller,
    parent: '1',
    name: Buffer.from('after-bad-input'),
  });
  t.ok(ok2.ok, 'lookup finds it');
  const ok3 = await call(client, 'GetAttr', { header: header(), ino: '1' });
  t.ok(
    ok3.ok && (ok3.reply as wire.AttrReply__Output).attr!.nlink === 3,
    'the root has 3 links (one new subdirectory)',
  );
  const log = readFileSync(brick.logFile, 'utf8');
  t.notMatch(log, /bug while serving a request/, 'no request was handled as an internal bug');
});
