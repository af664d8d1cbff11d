import { constants } from 'node:os';

/**
 * The one error table of dunix. Every failure that crosses a boundary (FUSE
 * reply, gRPC status, CLI exit) is one of these codes. The table maps each to
 * the errno a POSIX caller sees and the gRPC status a brick answers with.
 *
 * A broken invariant is not an error code: it throws an `AssertionError`,
 * which the FUSE session logs loudly and answers with EIO.
 */

/** gRPC status codes (numeric values fixed by the gRPC spec). */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type GrpcStatusName = keyof typeof GrpcStatus;

export type ErrnoName = keyof typeof constants.errno;

export type ErrorCode =
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'PERMISSION_DENIED'
  | 'NOT_PERMITTED'
  | 'NOT_A_DIRECTORY'
  | 'IS_A_DIRECTORY'
  | 'DIRECTORY_NOT_EMPTY'
  | 'NAME_TOO_LONG'
  | 'TOO_MANY_LINKS'
  | 'SYMLINK_LOOP'
  | 'INVALID_ARGUMENT'
  | 'OUT_OF_RANGE'
  | 'FILE_TOO_LARGE'
  | 'NO_SPACE'
  | 'QUOTA_EXCEEDED'
  | 'READ_ONLY'
  | 'CROSS_DEVICE'
  | 'BUSY'
  | 'BAD_HANDLE'
  | 'NO_XATTR'
  | 'RANGE_TOO_SMALL'
  | 'NOT_SUPPORTED'
  | 'UNIMPLEMENTED'
  | 'TRY_AGAIN'
  | 'INTERRUPTED'
  | 'STALE_HANDLE'
  | 'STALE_EPOCH'
  | 'UNAVAILABLE'
  | 'TIMED_OUT'
  | 'CORRUPT'
  | 'IO'
  | 'TEXT_BUSY'
  | 'NO_DEVICE'
  | 'NOT_A_TTY'
  | 'OVERFLOW'
  | 'NO_MEMORY'
  | 'TOO_MANY_OPEN'
  | 'NO_DATA_AT_OFFSET'
  | 'DEADLOCK'
  | 'NO_LOCKS'
  | 'NOT_PRIMARY'
  | 'CONFLICT'
  | 'NOT_INLINE'
  | 'NOT_ENOUGH_REPLICAS'
  | 'LOG_GAP'
  | 'DIVERGED'
  | 'NO_CLONE_SOURCE';

export interface ErrorMapping {
  /** errno name as in `os.constants.errno`; the number is looked up, never typed. */
  readonly errno: ErrnoName;
  readonly grpc: GrpcStatusName;
  readonly summary: string;
}

export const errorTable = {
  NOT_FOUND: { errno: 'ENOENT', grpc: 'NOT_FOUND', summary: 'no such file or directory' },
  ALREADY_EXISTS: { errno: 'EEXIST', grpc: 'ALREADY_EXISTS', summary: 'entry exists' },
  PERMISSION_DENIED: { errno: 'EACCES', grpc: 'PERMISSION_DENIED', summary: 'permission denied' },
  NOT_PERMITTED: { errno: 'EPERM', grpc: 'PERMISSION_DENIED', summary: 'operation not permitted' },
  NOT_A_DIRECTORY: { errno: 'ENOTDIR', grpc: 'FAILED_PRECONDITION', summary: 'not a directory' },
  IS_A_DIRECTORY: { errno: 'EISDIR', grpc: 'FAILED_PRECONDITION', summary: 'is a directory' },
  DIRECTORY_NOT_EMPTY: { errno: 'ENOTEMPTY', grpc: 'FAILED_PRECONDITION', summary: 'directory not empty' },
  NAME_TOO_LONG: { errno: 'ENAMETOOLONG', grpc: 'INVALID_ARGUMENT', summary: 'name too long' },
  TOO_MANY_LINKS: { errno: 'EMLINK', grpc: 'RESOURCE_EXHAUSTED', summary: 'too many links' },
  SYMLINK_LOOP: { errno: 'ELOOP', grpc: 'FAILED_PRECONDITION', summary: 'too many levels of symbolic links' },
  INVALID_ARGUMENT: { errno: 'EINVAL', grpc: 'INVALID_ARGUMENT', summary: 'invalid argument' },
  OUT_OF_RANGE: { errno: 'EINVAL', grpc: 'OUT_OF_RANGE', summary: 'offset or length out of range' },
  FILE_TOO_LARGE: { errno: 'EFBIG', grpc: 'OUT_OF_RANGE', summary: 'file too large' },
  NO_SPACE: { errno: 'ENOSPC', grpc: 'RESOURCE_EXHAUSTED', summary: 'no space left' },
  QUOTA_EXCEEDED: { errno: 'EDQUOT', grpc: 'RESOURCE_EXHAUSTED', summary: 'quota exceeded' },
  READ_ONLY: { errno: 'EROFS', grpc: 'FAILED_PRECONDITION', summary: 'read-only filesystem' },
  CROSS_DEVICE: { errno: 'EXDEV', grpc: 'FAILED_PRECONDITION', summary: 'cross-device link' },
  BUSY: { errno: 'EBUSY', grpc: 'FAILED_PRECONDITION', summary: 'resource busy' },
  BAD_HANDLE: { errno: 'EBADF', grpc: 'INVALID_ARGUMENT', summary: 'bad file handle' },
  NO_XATTR: { errno: 'ENODATA', grpc: 'NOT_FOUND', summary: 'no such extended attribute' },
  RANGE_TOO_SMALL: { errno: 'ERANGE', grpc: 'OUT_OF_RANGE', summary: 'result larger than the buffer' },
  NOT_SUPPORTED: { errno: 'EOPNOTSUPP', grpc: 'UNIMPLEMENTED', summary: 'operation not supported' },
  UNIMPLEMENTED: { errno: 'ENOSYS', grpc: 'UNIMPLEMENTED', summary: 'function not implemented' },
  TRY_AGAIN: { errno: 'EAGAIN', grpc: 'UNAVAILABLE', summary: 'try again' },
  INTERRUPTED: { errno: 'EINTR', grpc: 'CANCELLED', summary: 'interrupted' },
  STALE_HANDLE: { errno: 'ESTALE', grpc: 'NOT_FOUND', summary: 'stale inode or handle' },
  STALE_EPOCH: { errno: 'EAGAIN', grpc: 'FAILED_PRECONDITION', summary: 'request carries an old epoch' },
  IO: { errno: 'EIO', grpc: 'INTERNAL', summary: 'input/output error' },
  UNAVAILABLE: { errno: 'EIO', grpc: 'UNAVAILABLE', summary: 'no replica reachable' },
  TIMED_OUT: { errno: 'ETIMEDOUT', grpc: 'DEADLINE_EXCEEDED', summary: 'timed out' },
  CORRUPT: { errno: 'EIO', grpc: 'DATA_LOSS', summary: 'checksum mismatch' },
  TEXT_BUSY: { errno: 'ETXTBSY', grpc: 'FAILED_PRECONDITION', summary: 'text file busy' },
  NO_DEVICE: { errno: 'ENXIO', grpc: 'FAILED_PRECONDITION', summary: 'no such device or address' },
  NOT_A_TTY: { errno: 'ENOTTY', grpc: 'INVALID_ARGUMENT', summary: 'inappropriate ioctl' },
  OVERFLOW: { errno: 'EOVERFLOW', grpc: 'OUT_OF_RANGE', summary: 'value too large' },
  NO_MEMORY: { errno: 'ENOMEM', grpc: 'RESOURCE_EXHAUSTED', summary: 'out of memory' },
  TOO_MANY_OPEN: { errno: 'EMFILE', grpc: 'RESOURCE_EXHAUSTED', summary: 'too many open files' },
  NO_DATA_AT_OFFSET: { errno: 'ENXIO', grpc: 'OUT_OF_RANGE', summary: 'no data or hole past offset' },
  DEADLOCK: { errno: 'EDEADLK', grpc: 'ABORTED', summary: 'waiting for the lock would deadlock' },
  NO_LOCKS: { errno: 'ENOLCK', grpc: 'RESOURCE_EXHAUSTED', summary: 'too many locks on the inode' },
  // Internal codes: the client acts on them (refresh the placement map, retry)
  // and reports the errno only when its retries run out.
  NOT_PRIMARY: { errno: 'EAGAIN', grpc: 'FAILED_PRECONDITION', summary: 'brick does not serve this PG' },
  CONFLICT: { errno: 'EAGAIN', grpc: 'ABORTED', summary: 'conflicting transaction in progress' },
  NOT_INLINE: { errno: 'EAGAIN', grpc: 'FAILED_PRECONDITION', summary: 'file data is no longer inline' },
  // Replication. Fewer in-sync replicas than the volume's min_insync: the PG
  // refuses mutations (the caller sees EROFS at once, not after retries).
  NOT_ENOUGH_REPLICAS: {
    errno: 'EROFS',
    grpc: 'FAILED_PRECONDITION',
    summary: 'fewer in-sync replicas than min_insync; the PG is read-only',
  },
  // Brick to brick: a replica's log ends before the entries sent (catch it up
  // first), or its log holds entries the primary's does not (backfill it).
  LOG_GAP: { errno: 'EAGAIN', grpc: 'FAILED_PRECONDITION', summary: 'replica log does not reach the entry' },
  DIVERGED: {
    errno: 'EAGAIN',
    grpc: 'FAILED_PRECONDITION',
    summary: 'replica log diverged from the primary',
  },
  // Brick to brick: a replica holds no copy of a CLONE's source block that
  // matches its record; the primary sends the bytes instead.
  NO_CLONE_SOURCE: {
    errno: 'EIO',
    grpc: 'FAILED_PRECONDITION',
    summary: 'replica lacks the source block of a clone',
  },
} as const satisfies Record<ErrorCode, ErrorMapping>;

/** An expected, mapped failure. Throw it from any layer; every boundary knows how to render it. */
export class FsError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, detail?: string) {
    // Expected failures (ENOENT on every negative lookup) are hot; a stack
    // trace would cost more than the operation. Bugs are other Error types.
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(detail ? `${errorTable[code].summary}: ${detail}` : errorTable[code].summary);
    Error.stackTraceLimit = limit;
    this.name = 'FsError';
    this.code = code;
  }
  get errno(): number {
    return errnoOf(this.code);
  }
  get grpcStatus(): number {
    return GrpcStatus[errorTable[this.code].grpc];
  }
}

export function errnoOf(code: ErrorCode): number {
  const value = constants.errno[errorTable[code].errno];
  if (value === undefined) throw new Error(`errno ${errorTable[code].errno} unknown on this platform`);
  return value;
}

/**
 * Errno numbers reported by the OS (a passthrough's syscalls) back to the
 * table's codes. Several codes share an errno; the first listed wins, which is
 * why the table lists the general code (e.g. IO) before specialised ones.
 */
const codeByErrno: ReadonlyMap<number, ErrorCode> = (() => {
  const m = new Map<number, ErrorCode>();
  for (const code of Object.keys(errorTable) as ErrorCode[]) {
    const n = errnoOf(code);
    if (!m.has(n)) m.set(n, code);
  }
  return m;
})();

/**
 * Any errno value as a negative FUSE error number. Unknown numbers from the
 * OS are passed through unchanged: they are real errnos the caller can read.
 */
export function fsErrorFromErrno(errno: number, detail?: string): FsError | OsError {
  const code = codeByErrno.get(errno);
  return code ? new FsError(code, detail) : new OsError(errno, detail);
}

/** An errno from the OS that the table has no code for; it still maps to itself. */
export class OsError extends Error {
  constructor(
    readonly errno: number,
    detail?: string,
  ) {
    super(`errno ${errno}${detail ? `: ${detail}` : ''}`);
    this.name = 'OsError';
  }
}

/**
 * The errno to report for any thrown value. FsError and OsError map through
 * the table; Node system errors (`err.code` like 'ENOENT') map by name.
 * Anything else is a bug: the caller must log it loudly; it is reported as EIO.
 */
export function errnoForThrown(err: unknown): { errno: number; bug: boolean } {
  if (err instanceof FsError || err instanceof OsError) return { errno: err.errno, bug: false };
  if (err && typeof err === 'object' && 'code' in err && typeof err.code === 'string') {
    const n = (constants.errno as Record<string, number>)[err.code];
    if (n !== undefined) return { errno: n, bug: false };
  }
  return { errno: errnoOf('IO'), bug: true };
}
