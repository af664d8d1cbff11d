/**
 * The FUSE messages (protocol 7.38) as struct declarations, and the request
 * layout of every opcode: the fixed struct that follows the header, how many
 * NUL-terminated names come after it, and whether raw data follows.
 */
import { type OpcodeName, opcodeName, Size } from './abi.js';
import { type StructValue, struct } from './struct.js';

const attrFields = {
  ino: 'u64',
  size: 'u64',
  blocks: 'u64',
  atime: 'u64',
  mtime: 'u64',
  ctime: 'u64',
  atimensec: 'u32',
  mtimensec: 'u32',
  ctimensec: 'u32',
  mode: 'u32',
  nlink: 'u32',
  uid: 'u32',
  gid: 'u32',
  rdev: 'u32',
  blksize: 'u32',
  flags: 'u32',
} as const;

export const InHeader = struct('fuse_in_header', {
  len: 'u32',
  opcode: 'u32',
  unique: 'u64',
  nodeid: 'u64',
  uid: 'u32',
  gid: 'u32',
  pid: 'u32',
  totalExtlen: 'u16',
  padding: 'pad16',
});
export type InHeaderValue = StructValue<typeof InHeader.fields>;

export const OutHeader = struct('fuse_out_header', { len: 'u32', error: 'i32', unique: 'u64' });

export const In = {
  forget: struct('fuse_forget_in', { nlookup: 'u64' }),
  batchForget: struct('fuse_batch_forget_in', { count: 'u32', dummy: 'pad32' }),
  forgetOne: struct('fuse_forget_one', { nodeid: 'u64', nlookup: 'u64' }),
  getattr: struct('fuse_getattr_in', { getattrFlags: 'u32', dummy: 'pad32', fh: 'u64' }),
  setattr: struct('fuse_setattr_in', {
    valid: 'u32',
    padding: 'pad32',
    fh: 'u64',
    size: 'u64',
    lockOwner: 'u64',
    atime: 'u64',
    mtime: 'u64',
    ctime: 'u64',
    atimensec: 'u32',
    mtimensec: 'u32',
    ctimensec: 'u32',
    mode: 'u32',
    unused4: 'pad32',
    uid: 'u32',
    gid: 'u32',
    unused5: 'pad32',
  }),
  mknod: struct('fuse_mknod_in', { mode: 'u32', rdev: 'u32', umask: 'u32', padding: 'pad32' }),
  mkdir: struct('fuse_mkdir_in', { mode: 'u32', umask: 'u32' }),
  rename: struct('fuse_rename_in', { newdir: 'u64' }),
  rename2: struct('fuse_rename2_in', { newdir: 'u64', flags: 'u32', padding: 'pad32' }),
  link: struct('fuse_link_in', { oldnodeid: 'u64' }),
  open: struct('fuse_open_in', { flags: 'u32', openFlags: 'u32' }),
  create: struct('fuse_create_in', { flags: 'u32', mode: 'u32', umask: 'u32', openFlags: 'u32' }),
  read: struct('fuse_read_in', {
    fh: 'u64',
    offset: 'u64',
    size: 'u32',
    readFlags: 'u32',
    lockOwner: 'u64',
    flags: 'u32',
    padding: 'pad32',
  }),
  write: struct('fuse_write_in', {
    fh: 'u64',
    offset: 'u64',
    size: 'u32',
    writeFlags: 'u32',
    lockOwner: 'u64',
    flags: 'u32',
    padding: 'pad32',
  }),
  release: struct('fuse_release_in', { fh: 'u64', flags: 'u32', releaseFlags: 'u32', lockOwner: 'u64' }),
  flush: struct('fuse_flush_in', { fh: 'u64', unused: 'pad32', padding: 'pad32', lockOwner: 'u64' }),
  fsync: struct('fuse_fsync_in', { fh: 'u64', fsyncFlags: 'u32', padding: 'pad32' }),
  setxattr: struct('fuse_setxattr_in', { size: 'u32', flags: 'u32' }),
  getxattr: struct('fuse_getxattr_in', { size: 'u32', padding: 'pad32' }),
  init: struct('fuse_init_in', {
    major: 'u32',
    minor: 'u32',
    maxReadahead: 'u32',
    flags: 'u32',
    flags2: 'u32',
    u0: 'pad32',
    u1: 'pad32',
    u2: 'pad32',
    u3: 'pad32',
    u4: 'pad32',
    u5: 'pad32',
    u6: 'pad32',
    u7: 'pad32',
    u8: 'pad32',
    u9: 'pad32',
    u10: 'pad32',
  }),
  lk: struct('fuse_lk_in', {
    fh: 'u64',
    owner: 'u64',
    start: 'u64',
    end: 'u64',
    type: 'u32',
    pid: 'u32',
    lkFlags: 'u32',
    padding: 'pad32',
  }),
  access: struct('fuse_access_in', { mask: 'u32', padding: 'pad32' }),
  interrupt: struct('fuse_interrupt_in', { unique: 'u64' }),
  fallocate: struct('fuse_fallocate_in', {
    fh: 'u64',
    offset: 'u64',
    length: 'u64',
    mode: 'u32',
    padding: 'pad32',
  }),
  lseek: struct('fuse_lseek_in', { fh: 'u64', offset: 'u64', whence: 'u32', padding: 'pad32' }),
  copyFileRange: struct('fuse_copy_file_range_in', {
    fhIn: 'u64',
    offIn: 'u64',
    nodeidOut: 'u64',
    fhOut: 'u64',
    offOut: 'u64',
    len: 'u64',
    flags: 'u64',
  }),
} as const;

export const Out = {
  attr: struct('fuse_attr', attrFields),
  entry: struct('fuse_entry_out', {
    nodeid: 'u64',
    generation: 'u64',
    entryValid: 'u64',
    attrValid: 'u64',
    entryValidNsec: 'u32',
    attrValidNsec: 'u32',
    ...attrFields,
  }),
  attrOut: struct('fuse_attr_out', { attrValid: 'u64', attrValidNsec: 'u32', dummy: 'pad32', ...attrFields }),
  open: struct('fuse_open_out', { fh: 'u64', openFlags: 'u32', padding: 'pad32' }),
  write: struct('fuse_write_out', { size: 'u32', padding: 'pad32' }),
  statfs: struct('fuse_statfs_out', {
    blocks: 'u64',
    bfree: 'u64',
    bavail: 'u64',
    files: 'u64',
    ffree: 'u64',
    bsize: 'u32',
    namelen: 'u32',
    frsize: 'u32',
    padding: 'pad32',
    s0: 'pad32',
    s1: 'pad32',
    s2: 'pad32',
    s3: 'pad32',
    s4: 'pad32',
    s5: 'pad32',
  }),
  getxattr: struct('fuse_getxattr_out', { size: 'u32', padding: 'pad32' }),
  init: struct('fuse_init_out', {
    major: 'u32',
    minor: 'u32',
    maxReadahead: 'u32',
    flags: 'u32',
    maxBackground: 'u16',
    congestionThreshold: 'u16',
    maxWrite: 'u32',
    timeGran: 'u32',
    maxPages: 'u16',
    mapAlignment: 'u16',
    flags2: 'u32',
    u0: 'pad32',
    u1: 'pad32',
    u2: 'pad32',
    u3: 'pad32',
    u4: 'pad32',
    u5: 'pad32',
    u6: 'pad32',
  }),
  lk: struct('fuse_lk_out', { start: 'u64', end: 'u64', type: 'u32', pid: 'u32' }),
  lseek: struct('fuse_lseek_out', { offset: 'u64' }),
  dirent: struct('fuse_dirent', { ino: 'u64', off: 'u64', namelen: 'u32', type: 'u32' }),
  notifyInvalInode: struct('fuse_notify_inval_inode_out', { ino: 'u64', off: 'i64', len: 'i64' }),
  notifyInvalEntry: struct('fuse_notify_inval_entry_out', { parent: 'u64', namelen: 'u32', flags: 'u32' }),
  notifyDelete: struct('fuse_notify_delete_out', {
    parent: 'u64',
    child: 'u64',
    namelen: 'u32',
    padding: 'pad32',
  }),
} as const;

export type AttrValue = StructValue<typeof attrFields>;

/** fuse_init_in before protocol 7.36: major, minor, max_readahead, flags. */
export const INIT_IN_COMPAT_BYTES = 16;

/** What follows the header of each request the kernel may send. */
export interface RequestLayout {
  /** The fixed struct after the header (only its size and name matter for splitting). */
  readonly body?: { readonly size: number; readonly name: string };
  /** Number of NUL-terminated names after the fixed struct. */
  readonly names: number;
  /** Raw bytes follow (WRITE data, SETXATTR value, BATCH_FORGET entries). */
  readonly data: boolean;
  /** FORGET and BATCH_FORGET are never answered. */
  readonly noReply?: boolean;
}

const L = (body: { size: number; name: string } | undefined, names = 0, data = false, noReply = false) =>
  ({ body, names, data, noReply }) as RequestLayout;

export const requestLayout: Partial<Record<OpcodeName, RequestLayout>> = {
  LOOKUP: L(undefined, 1),
  FORGET: L(In.forget, 0, false, true),
  BATCH_FORGET: L(In.batchForget, 0, true, true),
  GETATTR: L(In.getattr),
  SETATTR: L(In.setattr),
  READLINK: L(undefined),
  SYMLINK: L(undefined, 2),
  MKNOD: L(In.mknod, 1),
  MKDIR: L(In.mkdir, 1),
  UNLINK: L(undefined, 1),
  RMDIR: L(undefined, 1),
  RENAME: L(In.rename, 2),
  RENAME2: L(In.rename2, 2),
  LINK: L(In.link, 1),
  OPEN: L(In.open),
  READ: L(In.read),
  WRITE: L(In.write, 0, true),
  STATFS: L(undefined),
  RELEASE: L(In.release),
  FSYNC: L(In.fsync),
  SETXATTR: L(In.setxattr, 1, true),
  GETXATTR: L(In.getxattr, 1),
  LISTXATTR: L(In.getxattr),
  REMOVEXATTR: L(undefined, 1),
  FLUSH: L(In.flush),
  // Kernels before 7.36 send only the first 16 bytes (no flags2); doInit pads.
  INIT: L({ size: INIT_IN_COMPAT_BYTES, name: 'fuse_init_in (7.x prefix)' }),
  OPENDIR: L(In.open),
  READDIR: L(In.read),
  READDIRPLUS: L(In.read),
  RELEASEDIR: L(In.release),
  FSYNCDIR: L(In.fsync),
  GETLK: L(In.lk),
  SETLK: L(In.lk),
  SETLKW: L(In.lk),
  ACCESS: L(In.access),
  CREATE: L(In.create, 1),
  // The name is the kernel's placeholder "/" (vfs_tmpfile).
  TMPFILE: L(In.create, 1),
  INTERRUPT: L(In.interrupt),
  DESTROY: L(undefined),
  FALLOCATE: L(In.fallocate),
  LSEEK: L(In.lseek),
  COPY_FILE_RANGE: L(In.copyFileRange),
  SYNCFS: L(In.getxattr),
};

/** A request as read from the device, split but not yet interpreted. */
export interface RawRequest {
  readonly header: InHeaderValue;
  readonly opcode: OpcodeName | undefined;
  /** The message, exactly header.len bytes (minus extensions). */
  readonly buf: Buffer;
  /** Offset of the fixed body struct. */
  readonly bodyAt: number;
  readonly names: Buffer[];
  /** Bytes after the names (write data, xattr value, forget list); empty if none. */
  readonly data: Buffer;
}

export class MalformedRequest extends Error {
  constructor(
    readonly unique: bigint | undefined,
    readonly opcode: OpcodeName | undefined,
    why: string,
  ) {
    super(`malformed FUSE request${opcode ? ` ${opcode}` : ''}: ${why}`);
    this.name = 'MalformedRequest';
  }
}

/**
 * Splits one message read from /dev/fuse. Throws MalformedRequest (carrying
 * the unique id when the header was readable) for anything truncated or
 * inconsistent, so the session can answer EINVAL and go on.
 */
export function parseRequest(msg: Buffer): RawRequest {
  if (msg.length < Size.inHeader)
    throw new MalformedRequest(undefined, undefined, `only ${msg.length} bytes`);
  const header = InHeader.decode(msg, 0);
  const opcode = opcodeName.get(header.opcode);
  if (header.len !== msg.length) {
    throw new MalformedRequest(header.unique, opcode, `header says ${header.len} bytes, read ${msg.length}`);
  }
  const extBytes = header.totalExtlen * 8;
  const end = header.len - extBytes;
  if (end < Size.inHeader)
    throw new MalformedRequest(header.unique, opcode, 'extensions overrun the message');
  const buf = msg.subarray(0, end);
  if (!opcode) return { header, opcode, buf, bodyAt: Size.inHeader, names: [], data: buf.subarray(end) };
  const layout = requestLayout[opcode];
  if (!layout) return { header, opcode, buf, bodyAt: Size.inHeader, names: [], data: buf.subarray(end) };
  let at = Size.inHeader + (layout.body?.size ?? 0);
  if (at > end) throw new MalformedRequest(header.unique, opcode, `body shorter than ${layout.body?.name}`);
  const names: Buffer[] = [];
  for (let i = 0; i < layout.names; i++) {
    const nul = buf.indexOf(0, at);
    if (nul < 0) throw new MalformedRequest(header.unique, opcode, 'name not NUL-terminated');
    names.push(buf.subarray(at, nul));
    at = nul + 1;
  }
  const data = layout.data ? buf.subarray(at) : buf.subarray(end);
  return { header, opcode, buf, bodyAt: Size.inHeader, names, data };
}

/** Bytes one readdir entry takes: header + name, padded to 8. */
export function direntSize(nameLen: number, plus: boolean): number {
  const base = (plus ? Out.entry.size : 0) + Out.dirent.size + nameLen;
  return (base + 7) & ~7;
}
