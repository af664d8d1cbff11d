/**
 * Bad input to the data calls of issue 12 (Fallocate, Seek, Extend's
 * written blocks, PunchBlocks, CopyBlock, Tmpfile) straight to a brick over
 * gRPC: each answered with a clear error from the one table, never a crash
 * or an internal bug; the brick serves normally afterwards.
 */
import * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import t from 'tap';
import { blockPg, ERROR_CODE_METADATA_KEY, type ErrorCode, type wire } from '@dunix/proto';
import { startCluster } from '../src/cluster.js';

type Outcome = { ok: true; reply: unknown } | { ok: false; code: string | undefined; details: string };
type Raw = Record<
  string,
  (req: unknown, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, reply?: unknown) => void) => void
>;

function call(client: unknown, method: string, req: unknown): Promise<Outcome> {
  return new Promise((resolve) => {
    (client as Raw)[method]!.call(client, req, { deadline: Date.now() + 15_000 }, (err, reply) => {
      if (!err) return resolve({ ok: true, reply });
      const code = err.metadata?.get(ERROR_CODE_METADATA_KEY)[0];
      resolve({ ok: false, code: typeof code === 'string' ? code : undefined, details: err.details });
    });
  });
}

const caller = { uid: 0, gid: 0, groups: [], pid: 1 };
const U64_MAX = ((1n << 64n) - 1n).toString();
const MiB = 1024 * 1024;

t.test('bad input to fallocate, seek, extend, punch, copy and tmpfile', async (t) => {
  const c = await startCluster(t, { mount: false, pgs: 16 });
  const placement = await c.placement();
  const brick = await c.brickOfPg(0);
  const client = brick.client();
  let rid = 0;
  const header = (pg = 0) => ({ pg, epoch: String(placement[pg]!.epoch), requestId: `bad-data.${++rid}` });
  const expectError = async (what: string, method: string, req: object, codes: ErrorCode[]) => {
    const r = await call(client, method, req);
    if (r.ok) return t.fail(`${what}: ${method} must fail, it succeeded`);
    t.ok(r.code !== undefined && (codes as string[]).includes(r.code), `${what}: ${r.code} (${r.details})`);
  };

  const mk = async (name: string) => {
    const r = await call(client, 'Mknod', {
      header: header(),
      caller,
      parent: '1',
      name: Buffer.from(name),
      mode: 0o100644,
    });
    if (!r.ok) throw new Error(r.details);
    return (r.reply as wire.EntryReply__Output).entry!;
  };
  const inline = await mk('inline');
  const file = await mk('blocks');
  const conv = await call(client, 'ConvertInline', {
    header: header(),
    ino: file.ino,
    dataVersion: file.attr!.dataVersion,
  });
  t.ok(conv.ok, 'a block file to aim at');
  const falloc = (ino: string, mode: number, offset: string, length: string) => ({
    header: header(),
    caller,
    ino,
    mode,
    offset,
    length,
  });
  await expectError('COLLAPSE_RANGE', 'Fallocate', falloc(file.ino, 0x08, '0', String(MiB)), [
    'NOT_SUPPORTED',
  ]);
  await expectError('unknown mode bits', 'Fallocate', falloc(file.ino, 0xff00, '0', '1'), ['NOT_SUPPORTED']);
  await expectError('PUNCH_HOLE without KEEP_SIZE', 'Fallocate', falloc(file.ino, 0x02, '0', '1'), [
    'NOT_SUPPORTED',
  ]);
  await expectError('zero length', 'Fallocate', falloc(file.ino, 0, '0', '0'), ['INVALID_ARGUMENT']);
  await expectError('past the largest file', 'Fallocate', falloc(file.ino, 0, String(2 ** 52), '1'), [
    'FILE_TOO_LARGE',
  ]);
  await expectError('offset 2^64-1', 'Fallocate', falloc(file.ino, 0, U64_MAX, '1'), ['FILE_TOO_LARGE']);
  await expectError(
    'more blocks than a call may change',
    'Fallocate',
    falloc(file.ino, 0, '0', String(5000 * MiB)),
    ['INVALID_ARGUMENT'],
  );
  await expectError('a directory', 'Fallocate', falloc('1', 0, '0', '1'), ['INVALID_ARGUMENT']);
  await expectError('an inline file', 'Fallocate', falloc(inline.ino, 0, '0', '1'), ['NOT_INLINE']);

  const seek = (ino: string, offset: string, whence: number) => ({ header: header(), ino, offset, whence });
  await expectError('whence 7', 'Seek', seek(file.ino, '0', 7), ['INVALID_ARGUMENT']);
  await expectError("SEEK_END is the kernel's", 'Seek', seek(file.ino, '0', 2), ['INVALID_ARGUMENT']);
  await expectError('at the size', 'Seek', seek(file.ino, '0', 3), ['NO_DATA_AT_OFFSET']);
  await expectError('a directory', 'Seek', seek('1', '0', 3), ['INVALID_ARGUMENT']);

  const extend = (written: object[]) => ({
    header: header(),
    caller,
    ino: file.ino,
    end: '10',
    written,
    allocMap: true,
  });
  await expectError(
    '5000 extents',
    'Extend',
    extend(Array.from({ length: 5000 }, (_v, i) => ({ index: String(i), end: 1 }))),
    ['INVALID_ARGUMENT'],
  );
  await expectError('an extent ending at 0', 'Extend', extend([{ index: '0', end: 0 }]), [
    'INVALID_ARGUMENT',
  ]);
  await expectError('an extent past the block', 'Extend', extend([{ index: '0', end: MiB + 1 }]), [
    'INVALID_ARGUMENT',
  ]);
  await expectError('an extent at block 2^64-1', 'Extend', extend([{ index: U64_MAX, end: 1 }]), [
    'INVALID_ARGUMENT',
    'FILE_TOO_LARGE',
  ]);

  const pg0 = blockPg(BigInt(file.ino), 0n, c.pgs);
  const pb = await c.brickOfPg(pg0);
  const pclient = pb.client();
  const punch = (from: string, to: string) => ({ header: header(pg0), ino: file.ino, from, to });
  for (const [what, req, codes] of [
    ['an empty range', punch('10', '10'), ['INVALID_ARGUMENT']],
    ['a reversed range', punch('10', '5'), ['INVALID_ARGUMENT']],
    ['past the largest file', punch('0', String(2 ** 53)), ['FILE_TOO_LARGE']],
  ] as const) {
    const r = await call(pclient, 'PunchBlocks', req);
    t.ok(
      !r.ok && (codes as readonly string[]).includes(r.code ?? ''),
      `PunchBlocks ${what}: ${r.ok ? 'ok' : r.code}`,
    );
  }
  const copy = (extra: object) => ({
    header: header(pg0),
    dstIno: file.ino,
    dstIndex: '0',
    dstOffset: 0,
    srcIno: file.ino,
    srcIndex: '1',
    srcOffset: 0,
    length: 10,
    ...extra,
  });
  for (const [what, req, codes] of [
    ['length 0', copy({ length: 0 }), ['OUT_OF_RANGE']],
    ['past the destination block', copy({ dstOffset: MiB - 5 }), ['OUT_OF_RANGE']],
    ['past the source block', copy({ srcOffset: MiB }), ['OUT_OF_RANGE']],
    ['source inode 0', copy({ srcIno: '0' }), ['STALE_HANDLE']],
    [
      'a destination block of another PG',
      copy({ dstIndex: String(firstIndexElsewhere(BigInt(file.ino), pg0, c.pgs)) }),
      ['INVALID_ARGUMENT'],
    ],
  ] as const) {
    const r = await call(pclient, 'CopyBlock', req);
    t.ok(
      !r.ok && (codes as readonly string[]).includes(r.code ?? ''),
      `CopyBlock ${what}: ${r.ok ? 'ok' : `${r.code} ${r.details}`}`,
    );
  }

  const tmp = (extra: object) => ({
    header: header(),
    caller,
    parent: '1',
    mode: 0o600,
    owner: 'm-x',
    ...extra,
  });
  await expectError('an owner of 100 bytes', 'Tmpfile', tmp({ owner: 'o'.repeat(100) }), [
    'INVALID_ARGUMENT',
  ]);
  await expectError('a directory mode', 'Tmpfile', tmp({ mode: 0o40755 }), ['INVALID_ARGUMENT']);
  await expectError('a parent that is a file', 'Tmpfile', tmp({ parent: inline.ino }), ['NOT_A_DIRECTORY']);

  t.ok(brick.alive() && pb.alive(), 'the bricks are alive');
  const ok = await call(client, 'Fallocate', falloc(file.ino, 0, '0', String(3 * MiB)));
  t.ok(
    ok.ok && (ok.reply as wire.AttrReply__Output).attr!.size === String(3 * MiB),
    'a valid fallocate works',
  );
  for (const b of c.bricks)
    t.notMatch(readFileSync(b.logFile, 'utf8'), /bug while serving a request/, `no bug on ${b.id}`);
});

/** The first block index of `ino` whose PG is not `pg`. */
function firstIndexElsewhere(ino: bigint, pg: number, pgs: number): bigint {
  for (let i = 1n; ; i++) if (blockPg(ino, i, pgs) !== pg) return i;
}
