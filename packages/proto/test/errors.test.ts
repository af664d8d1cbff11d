import { constants } from 'node:os';
import t from 'tap';
import {
  type ErrorCode,
  errnoForThrown,
  errnoOf,
  errorTable,
  FsError,
  fsErrorFromErrno,
  GrpcStatus,
  OsError,
} from '../src/errors.js';

t.test('every code maps to a real errno and a gRPC status', async (t) => {
  for (const code of Object.keys(errorTable) as ErrorCode[]) {
    const e = new FsError(code, 'detail');
    t.equal(e.errno, constants.errno[errorTable[code].errno], `${code} errno`);
    t.ok(e.errno > 0 && e.errno < 512, `${code}: errno fits a FUSE reply`);
    t.equal(e.grpcStatus, GrpcStatus[errorTable[code].grpc], `${code} grpc`);
    t.not(e.grpcStatus, GrpcStatus.OK, `${code} is not OK`);
    t.match(e.message, /detail$/);
  }
});

t.test('OS errnos map back to codes, unknown ones pass through', async (t) => {
  const enoent = fsErrorFromErrno(constants.errno.ENOENT);
  t.ok(enoent instanceof FsError && enoent.code === 'NOT_FOUND');
  const eio = fsErrorFromErrno(constants.errno.EIO);
  t.ok(eio instanceof FsError && eio.code === 'IO', 'EIO maps to the general IO code, not a specialised one');
  const einval = fsErrorFromErrno(constants.errno.EINVAL);
  t.ok(einval instanceof FsError && einval.code === 'INVALID_ARGUMENT');
  const odd = fsErrorFromErrno(constants.errno.ECHILD);
  t.ok(odd instanceof OsError, 'an errno without a code stays an OsError');
  t.equal(odd.errno, constants.errno.ECHILD);
});

t.test('errnoForThrown: mapped errors, Node system errors, and bugs', async (t) => {
  t.strictSame(errnoForThrown(new FsError('ALREADY_EXISTS')), { errno: constants.errno.EEXIST, bug: false });
  t.strictSame(errnoForThrown(new OsError(constants.errno.ECHILD)), {
    errno: constants.errno.ECHILD,
    bug: false,
  });
  t.strictSame(errnoForThrown(Object.assign(new Error('x'), { code: 'EACCES' })), {
    errno: constants.errno.EACCES,
    bug: false,
  });
  t.strictSame(errnoForThrown(new TypeError('oops')), { errno: errnoOf('IO'), bug: true });
  t.strictSame(errnoForThrown('a string'), { errno: errnoOf('IO'), bug: true });
  t.strictSame(errnoForThrown({ code: 'NOT_AN_ERRNO' }), { errno: errnoOf('IO'), bug: true });
});

t.test('expected errors carry no stack trace; bugs keep theirs', async (t) => {
  t.notMatch(new FsError('NOT_FOUND').stack ?? '', /\n\s+at /, 'FsError is cheap to throw');
  t.match(new Error('bug').stack ?? '', /\n\s+at /, 'stack traces still on for everything else');
});
