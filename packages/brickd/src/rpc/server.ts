import * as grpc from '@grpc/grpc-js';
import { statfs } from 'node:fs/promises';
import {
  connLimitDefaults,
  type ConnLimits,
  assertInsecureAllowed,
  brickProto,
  channelOptions,
  grpcServerCredentials,
  INSECURE_TRANSPORT,
  type TransportSecurity,
  deviceFromLinuxRdev,
  encodeDeviceId,
  fsErrorFromErrno,
  FsError,
  giveBack,
  limits,
  OsError,
  pgOfIno,
  toServiceError,
  validateDeviceId,
  validateIno,
  validateFallocate,
  validateName,
  validateXattrName,
  type BrickHandlers,
  type BrickUsage,
  type Logger,
  type wire,
} from '@dunix/proto';
import { constants } from 'node:os';
import { coalesced } from '../util/coalesce.js';
import { Brick, type TxKeyValue } from '../brick.js';
import type { MetaTxn } from '../namespace/txn.js';
import { XATTR_LISTENER } from '../namespace/engine.js';
import { encodeRecord, S_IFBLK, S_IFCHR, S_IFMT } from '../store/records.js';
import { entriesFromReplicate, entryFromWire, entryToWire } from '../pg/log-entry.js';
import { attrToWire, bytes, direntToWire, i64, requestId, u64 } from './wire.js';
import { admitCall } from './admission.js';
import { CappedGrpcServer } from './capped-grpc-server.js';
import { checkBlockCall, GRANTING_METHODS, withGrant, type BlockGrants } from './block-grants.js';
import type { LockReply, LockService } from '../lock-service.js';
import { LOCK_END_MAX, validLockRequest, type LockKind, type LockRequest } from '../namespace/lock-table.js';
import type { CoherenceService } from '../coherence/coherence-service.js';
import { InvalKind, registeredUnder, type Inval } from '../coherence/cache-rules.js';

export interface ServerDeps {
  brick: Brick;
  brickId: string;
  dataDir: string;
  log: Logger;
  startedAtMs: number;
  /** This brick's space (capacity.ts), once measured: statfs answers from it. */
  usage?: () => BrickUsage | undefined;
  /** TLS is on: every call must come with a certificate (admission.ts). */
  requireCertificate?: boolean;
  /** Cluster-wide locks; absent: lock calls answer UNIMPLEMENTED. */
  locks?: LockService;
  /** With TLS: the grants opens give client certificates, which their block calls must carry. */
  grants?: BlockGrants | undefined;
  /** Coherent caches (registrations, invalidations); absent: nothing is registered or pushed. */
  coherence?: CoherenceService;
}

type Header = wire.Header__Output | null;

const isListener = (name: Buffer) => name.toString('latin1') === XATTR_LISTENER;

/** A umask field: permission bits only (0o777), else INVALID_ARGUMENT. */
function umaskOf(v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0o777) throw new FsError('INVALID_ARGUMENT', `umask ${v}`);
  return v;
}

interface Routed {
  pg: number;
  requestId: string;
  /** Not the first attempt of this request. */
  retry: boolean;
}

/**
 * The gRPC face of a brick: decodes and validates every field, routes to the
 * Brick, and answers failures from the one error table. Nothing a client
 * sends can crash the daemon: anything unexpected is logged as a bug and
 * answered INTERNAL.
 */
export function brickHandlers(d: ServerDeps): BrickHandlers {
  const { brick, log } = d;
  // A status scan reads every key of the PGs led here: concurrent callers share one.
  const counts = coalesced(() => brick.counts());
  const locks = (): LockService => {
    if (!d.locks) throw new FsError('UNIMPLEMENTED', 'locks are not served here');
    return d.locks;
  };
  const volume = () => brick.volume;
  const ino = (v: string, field: string) => validateIno(u64(v, field), volume().pgCount);

  /** Checks the header: PG in range, served here at that epoch, and the PG the request must go to. */
  function route(h: Header, expectedPg: number | undefined, mutation: boolean): Routed {
    if (!h) throw new FsError('INVALID_ARGUMENT', 'missing header');
    if (expectedPg !== undefined && h.pg !== expectedPg) {
      throw new FsError('INVALID_ARGUMENT', `request belongs to pg ${expectedPg}, was sent to pg ${h.pg}`);
    }
    brick.serving(h.pg, Number(u64(h.epoch, 'epoch')));
    return { pg: h.pg, requestId: requestId(h.requestId, mutation), retry: h.attempt > 0 };
  }

  /** A mutation homed at the routed PG; a retried request may find its stored reply. */
  function mutate<T>(r: Routed, kind: string, op: (t: MetaTxn) => Promise<T>): Promise<T> {
    return brick.mutate(r.pg, r.requestId, kind, op, r.retry);
  }

  function unary<Req, Rep>(method: string, fn: (req: Req) => Promise<Rep>): grpc.handleUnaryCall<Req, Rep> {
    return (call, callback) => {
      let p: Promise<Rep>;
      try {
        // The certificate's role and policy first: refused calls touch nothing.
        const { req, peer } = admitCall(method, call, d.requireCertificate ?? false);
        const grants = d.grants;
        if (grants) checkBlockCall(grants, method, peer, req);
        const c = d.coherence;
        // Reads register the caller's session; a change is answered once other sessions dropped what it made stale.
        p = c ? c.around(method, req as Record<string, unknown>, () => fn(req)) : fn(req);
        if (grants && GRANTING_METHODS.has(method))
          p = p.then((reply) => withGrant(grants, method, peer, req, reply));
      } catch (err) {
        p = Promise.reject(err);
      }
      p.then(
        (reply) => callback(null, reply),
        (err: unknown) => callback(asServiceError(method, err)),
      );
    };
  }

  function asServiceError(method: string, err: unknown): Partial<grpc.StatusObject> {
    if (err instanceof FsError) return toServiceError(err);
    if (err instanceof OsError) return toServiceError(new FsError('IO', err.message));
    if (
      err &&
      typeof err === 'object' &&
      'code' in err &&
      typeof err.code === 'string' &&
      err.code in constants.errno
    ) {
      const e = fsErrorFromErrno(
        (constants.errno as Record<string, number>)[err.code]!,
        `${method}: ${String((err as unknown as Error).message)}`,
      );
      if (e instanceof FsError) return toServiceError(e);
    }
    log.error('bug while serving a request', { method, err });
    return toServiceError(new FsError('IO', `internal error in ${method}`));
  }

  const cred = Brick.cred;
  /** A block index within the largest file. */
  const blockIndex = (v: string) => {
    const index = u64(v, 'index');
    if (index * BigInt(volume().blockSizeBytes) >= BigInt(limits.fileSizeMaxBytes)) {
      throw new FsError('FILE_TOO_LARGE', 'block index past the largest file');
    }
    return index;
  };
  // Anything up to the wire bound is read, so an over-long name is
  // ENAMETOOLONG (validateName), not a size error.
  const name = (b: Buffer | null | undefined, field = 'name') =>
    Buffer.from(validateName(bytes(b, field, WIRE_NAME_MAX_BYTES)));
  const attrReply = (inode: Parameters<typeof attrToWire>[0], inline?: Buffer): wire.AttrReply => ({
    attr: attrToWire(inode),
    inlineData: inline ?? Buffer.alloc(0),
  });
  const entryReply = (
    r: {
      name: Buffer;
      dirent: Parameters<typeof direntToWire>[1];
      inode: Parameters<typeof attrToWire>[0];
      dir?: Parameters<typeof attrToWire>[0];
    },
    existed = false,
  ) => ({
    entry: direntToWire(r.name, r.dirent, r.inode),
    existed,
    // What the change made of the directory: the caller's next GETATTR of it is answered there.
    parentAttr: r.dir && !existed ? attrToWire(r.dir) : null,
  });

  return {
    Lookup: unary('Lookup', async (req: wire.LookupRequest__Output) => {
      const parent = ino(req.parent, 'parent');
      const { pg } = route(req.header, pgOfIno(parent), false);
      const n = name(req.name);
      const r = await brick.read(pg, (t) => brick.engine.lookup(t, cred(req.caller), parent, n));
      let inode = r.inode;
      if (!inode && brick.leads(pgOfIno(r.dirent.ino)))
        inode = await brick.read(pgOfIno(r.dirent.ino), (t) => t.getInode(r.dirent.ino));
      return { entry: direntToWire(n, r.dirent, inode) };
    }),

    GetAttr: unary('GetAttr', async (req: wire.GetAttrRequest__Output) => {
      const i = ino(req.ino, 'ino');
      const { pg } = route(req.header, pgOfIno(i), false);
      return brick.read(pg, async (t) => {
        const inode = await brick.engine.getattr(t, i);
        return attrReply(
          inode,
          req.wantInline && inode.inline ? await brick.engine.readInline(t, i) : undefined,
        );
      });
    }),

    SetAttr: unary('SetAttr', async (req: wire.SetAttrRequest__Output) => {
      const i = ino(req.ino, 'ino');
      const routed = route(req.header, pgOfIno(i), true);
      const changes = {
        mode: req.setMode ? req.mode & 0o7777 : undefined,
        uid: req.setUid ? req.uid : undefined,
        gid: req.setGid ? req.gid : undefined,
        size: req.setSize ? u64(req.size, 'size') : undefined,
        atimeNs:
          req.atimeHow === 2
            ? ('now' as const)
            : req.atimeHow === 1
              ? i64(req.atimeNs, 'atime_ns')
              : undefined,
        mtimeNs:
          req.mtimeHow === 2
            ? ('now' as const)
            : req.mtimeHow === 1
              ? i64(req.mtimeNs, 'mtime_ns')
              : undefined,
        killSuidgid: req.killSuidgid,
        viaOpenFile: req.viaOpenFile,
      };
      if (req.atimeHow > 2 || req.mtimeHow > 2)
        throw new FsError('INVALID_ARGUMENT', 'time_how must be 0, 1 or 2');
      const reply = await mutate(routed, 'setattr', async (t) => {
        const r = await brick.engine.setattr(t, cred(req.caller), i, changes);
        // Bytes past a shrink are dropped by the bricks (the record is in the same entry).
        if (r.truncatedFrom !== undefined && r.truncatedFrom > r.inode.size)
          t.setTrim(i, { size: r.inode.size, oldSize: r.truncatedFrom });
        return { ...attrReply(r.inode), truncatedFrom: (r.truncatedFrom ?? 0n).toString() };
      });
      // Answered once the blocks are trimmed (a retry finds the stored reply and finishes the trim).
      if (req.setSize) await brick.finishTrim(routed.pg, i);
      return reply;
    }),

    Mknod: unary('Mknod', async (req: wire.MknodRequest__Output) => {
      const parent = ino(req.parent, 'parent');
      const routed = route(req.header, pgOfIno(parent), true);
      const n = name(req.name);
      const type = req.mode & S_IFMT;
      let rdev = 0n;
      if (type === S_IFCHR || type === S_IFBLK) {
        rdev = encodeDeviceId(validateDeviceId(req.rdev ?? deviceFromLinuxRdev(0)));
      }
      return mutate(routed, 'mknod', async (t) => {
        const r = await brick.engine.mknod(
          t,
          cred(req.caller),
          parent,
          n,
          req.mode,
          rdev,
          req.exclusive,
          umaskOf(req.umask),
        );
        return entryReply(r, r.existed);
      });
    }),

    Tmpfile: unary('Tmpfile', async (req: wire.TmpfileRequest__Output) => {
      const parent = ino(req.parent, 'parent');
      const routed = route(req.header, pgOfIno(parent), true);
      return mutate(routed, 'tmpfile', async (t) => {
        const inode = await brick.engine.tmpfile(
          t,
          cred(req.caller),
          parent,
          req.mode,
          req.owner,
          umaskOf(req.umask),
        );
        return {
          entry: direntToWire(Buffer.alloc(0), { ino: inode.ino, type: 8, cookie: 0n }, inode),
          existed: false,
        };
      });
    }),

    Mkdir: unary('Mkdir', async (req: wire.MkdirRequest__Output) => {
      const parent = ino(req.parent, 'parent');
      const routed = route(req.header, pgOfIno(parent), true);
      const n = name(req.name);
      return mutate(routed, 'mkdir', async (t) =>
        entryReply(await brick.engine.mkdir(t, cred(req.caller), parent, n, req.mode, umaskOf(req.umask))),
      );
    }),

    Symlink: unary('Symlink', async (req: wire.SymlinkRequest__Output) => {
      const parent = ino(req.parent, 'parent');
      const routed = route(req.header, pgOfIno(parent), true);
      const n = name(req.name);
      const target = bytes(req.target, 'target', WIRE_NAME_MAX_BYTES * 64);
      if (target.length > limits.symlinkMaxBytes)
        throw new FsError('NAME_TOO_LONG', 'symlink target too long');
      return mutate(routed, 'symlink', async (t) =>
        entryReply(await brick.engine.symlink(t, cred(req.caller), parent, n, target)),
      );
    }),

    Link: unary('Link', async (req: wire.LinkRequest__Output) => {
      const target = ino(req.ino, 'ino');
      const newParent = ino(req.newParent, 'new_parent');
      const routed = route(req.header, pgOfIno(newParent), true);
      const n = name(req.newName, 'new_name');
      return mutate(routed, 'link', async (t) =>
        entryReply(await brick.engine.link(t, cred(req.caller), target, newParent, n)),
      );
    }),

    Unlink: unary('Unlink', async (req: wire.UnlinkRequest__Output) => {
      const parent = ino(req.parent, 'parent');
      const routed = route(req.header, pgOfIno(parent), true);
      const n = name(req.name);
      if (req.openInos.length > limits.openInosMax)
        throw new FsError(
          'OUT_OF_RANGE',
          `${req.openInos.length} open inodes, at most ${limits.openInosMax}`,
        );
      const open = new Set(req.openInos.map((v) => ino(v, 'openInos')));
      if (req.owner.length > limits.requestIdMaxBytes)
        throw new FsError('INVALID_ARGUMENT', 'owner too long');
      const reply = await mutate(routed, 'unlink', async (t) => {
        const u = await brick.engine.unlink(t, cred(req.caller), parent, n);
        // The last link of an inode of this PG that the client does not hold
        // open: reclaim it in this same entry (no separate Reclaim op).
        const reclaimed =
          req.reclaim &&
          u.nlink === 0 &&
          pgOfIno(u.ino) === routed.pg &&
          !open.has(u.ino) &&
          (await brick.reclaimIn(t, u.ino));
        // An orphan left to the client (open, or in another PG): marked with its session, so
        // that the recovery sweep reclaims it should the client die before its last close.
        if (u.nlink === 0 && !reclaimed && req.owner && !u.isDir)
          t.setOrphan(u.ino, { owner: req.owner, sinceNs: t.nowNs });
        return {
          ino: u.ino.toString(),
          nlink: u.nlink,
          size: u.size.toString(),
          reclaimed,
          parentAttr: attrToWire(u.dir),
        };
      });
      if (reply.reclaimed) brick.finishTrimSoon(routed.pg, BigInt(reply.ino));
      return reply;
    }),

    Rmdir: unary('Rmdir', async (req: wire.UnlinkRequest__Output) => {
      const parent = ino(req.parent, 'parent');
      const routed = route(req.header, pgOfIno(parent), true);
      const n = name(req.name);
      const removed = await mutate(routed, 'rmdir', async (t) => {
        const u = await brick.engine.rmdir(t, cred(req.caller), parent, n);
        return u.ino.toString();
      });
      brick.reclaimSoon(BigInt(removed));
      return {};
    }),

    Rename: unary('Rename', async (req: wire.RenameRequest__Output) => {
      const parent = ino(req.parent, 'parent');
      const newParent = ino(req.newParent, 'new_parent');
      const routed = route(req.header, pgOfIno(parent), true);
      const n = name(req.name);
      const nn = name(req.newName, 'new_name');
      const flags = { noReplace: req.noReplace, exchange: req.exchange };
      if (flags.noReplace && flags.exchange)
        throw new FsError('INVALID_ARGUMENT', 'RENAME_NOREPLACE with RENAME_EXCHANGE');
      const reply = await mutate(routed, 'rename', async (t) => {
        const { replaced, dirs } = await brick.engine.rename(
          t,
          cred(req.caller),
          parent,
          n,
          newParent,
          nn,
          flags,
        );
        return {
          replacedIno: replaced && replaced.nlink === 0 ? replaced.ino.toString() : '0',
          replacedNlink: replaced?.nlink ?? 0,
          replacedSize: replaced?.size.toString() ?? '0',
          replacedDir: replaced?.isDir ?? false,
          parentAttr: dirs ? attrToWire(dirs[0]) : null,
          newParentAttr: dirs ? attrToWire(dirs[1]) : null,
        };
      });
      if (reply.replacedDir && reply.replacedIno !== '0') brick.reclaimSoon(BigInt(reply.replacedIno));
      return {
        replacedIno: reply.replacedIno,
        replacedNlink: reply.replacedNlink,
        replacedSize: reply.replacedSize,
        parentAttr: reply.parentAttr,
        newParentAttr: reply.newParentAttr,
      };
    }),

    Readlink: unary('Readlink', async (req: wire.ReadlinkRequest__Output) => {
      const i = ino(req.ino, 'ino');
      const { pg } = route(req.header, pgOfIno(i), false);
      return { target: await brick.read(pg, (t) => brick.engine.readlink(t, i)) };
    }),

    ReadDir: unary('ReadDir', async (req: wire.ReadDirRequest__Output) => {
      const dir = ino(req.dir, 'dir');
      const { pg } = route(req.header, pgOfIno(dir), false);
      const limit = Math.min(Math.max(req.limit, 1), limits.readDirLimitMax);
      const cookie = u64(req.cookie, 'cookie');
      return brick.read(pg, async (t: MetaTxn) => {
        const r = await brick.engine.readdir(t, cred(req.caller), dir, cookie, limit);
        const entries: wire.Dirent[] = [];
        for (const e of r.entries) {
          const local = req.plus && brick.leads(pgOfIno(e.dirent.ino));
          entries.push(direntToWire(e.name, e.dirent, local ? await t.getInode(e.dirent.ino) : undefined));
        }
        return { entries, eof: r.eof, parent: r.parent.toString() };
      });
    }),

    SetXattr: unary('SetXattr', async (req: wire.SetXattrRequest__Output) => {
      const i = ino(req.ino, 'ino');
      const routed = route(req.header, pgOfIno(i), true);
      const n = Buffer.from(validateXattrName(bytes(req.name, 'name', WIRE_NAME_MAX_BYTES)));
      const value = bytes(req.value, 'value', limits.xattrValueMaxBytes);
      if (req.flags & ~3) throw new FsError('INVALID_ARGUMENT', `xattr flags ${req.flags}`);
      if (req.owner.length > limits.requestIdMaxBytes)
        throw new FsError('INVALID_ARGUMENT', 'owner too long');
      // Only a session-owned name needs to know which sessions live.
      const session = isListener(n) ? await brick.sessionContext(req.owner) : undefined;
      return mutate(routed, 'setxattr', async (t) => {
        await brick.engine.setxattr(t, cred(req.caller), i, n, value, req.flags, session);
        return {};
      });
    }),

    GetXattr: unary('GetXattr', async (req: wire.GetXattrRequest__Output) => {
      const i = ino(req.ino, 'ino');
      const { pg } = route(req.header, pgOfIno(i), false);
      const n = Buffer.from(validateXattrName(bytes(req.name, 'name', WIRE_NAME_MAX_BYTES)));
      const session = isListener(n) ? await brick.sessionContext('') : undefined;
      return {
        value: await brick.read(pg, (t) => brick.engine.getxattr(t, cred(req.caller), i, n, session)),
      };
    }),

    ListXattr: unary('ListXattr', async (req: wire.ListXattrRequest__Output) => {
      const i = ino(req.ino, 'ino');
      const { pg } = route(req.header, pgOfIno(i), false);
      return { names: await brick.read(pg, (t) => brick.engine.listxattr(t, cred(req.caller), i)) };
    }),

    RemoveXattr: unary('RemoveXattr', async (req: wire.RemoveXattrRequest__Output) => {
      const i = ino(req.ino, 'ino');
      const routed = route(req.header, pgOfIno(i), true);
      const n = Buffer.from(validateXattrName(bytes(req.name, 'name', WIRE_NAME_MAX_BYTES)));
      return mutate(routed, 'removexattr', async (t) => {
        await brick.engine.removexattr(t, cred(req.caller), i, n);
        return {};
      });
    }),

    Open: unary('Open', async (req: wire.OpenRequest__Output) => {
      const i = ino(req.ino, 'ino');
      const { pg } = route(req.header, pgOfIno(i), false);
      // A trim or punch left by a crash is finished before anyone writes the file again.
      await brick.finishTrim(pg, i);
      await brick.finishPunch(pg, i);
      const r = await brick.read(pg, (t) => brick.engine.open(t, cred(req.caller), i, req.flags));
      return attrReply(r.inode, r.inline);
    }),

    WriteInline: unary('WriteInline', async (req: wire.WriteInlineRequest__Output) => {
      const i = ino(req.ino, 'ino');
      const routed = route(req.header, pgOfIno(i), true);
      const offset = u64(req.offset, 'offset');
      const data = bytes(req.data, 'data', limits.inlineMaxBytesMax);
      if (offset + BigInt(data.length) > BigInt(limits.fileSizeMaxBytes)) throw new FsError('FILE_TOO_LARGE');
      return mutate(routed, 'write-inline', async (t) =>
        attrReply(await brick.engine.writeInline(t, cred(req.caller), i, offset, data, req.killSuidgid)),
      );
    }),

    Extend: unary('Extend', async (req: wire.ExtendRequest__Output) => {
      const i = ino(req.ino, 'ino');
      const routed = route(req.header, pgOfIno(i), true);
      const end = u64(req.end, 'end');
      if (end > BigInt(limits.fileSizeMaxBytes)) throw new FsError('FILE_TOO_LARGE');
      const version = req.fromInline ? u64(req.dataVersion, 'data_version') : undefined;
      if (req.written.length > limits.allocExtentsPerCallMax)
        throw new FsError('INVALID_ARGUMENT', `${req.written.length} written extents`);
      const written = req.written.map((e) => ({ index: blockIndex(e.index), end: e.end }));
      const reply = await mutate(routed, 'extend', async (t) => {
        if (version !== undefined) await brick.engine.convertInline(t, i, version);
        return attrReply(
          await brick.engine.extend(t, cred(req.caller), i, end, req.killSuidgid, written, req.allocMap),
        );
      });
      // An fsync's publish: durable here and on every in-sync replica before it is answered.
      if (req.sync) await brick.repl.syncPg(brick.serving(routed.pg));
      return reply;
    }),

    Fallocate: unary('Fallocate', async (req: wire.FallocateRequest__Output) => {
      const i = ino(req.ino, 'ino');
      const routed = route(req.header, pgOfIno(i), true);
      const offset = u64(req.offset, 'offset');
      const length = u64(req.length, 'length');
      validateFallocate(req.mode, offset, length);
      // One punch at a time per inode: a crash's leftover is finished first.
      await brick.finishPunch(routed.pg, i);
      const reply = await mutate(routed, 'fallocate', async (t) => {
        if (await t.getPunch(i)) throw new FsError('CONFLICT', `inode ${i}: a hole punch is still running`);
        const before = (await t.getInode(i))?.allocBytes ?? 0n;
        const r = await brick.engine.fallocate(t, i, req.mode, offset, length);
        // A preallocation reserves its bytes: refused when a copy cannot take them.
        const added = (r.inode.allocBytes ?? 0n) - before;
        if (added > 0n) brick.checkRoom(routed.pg, added);
        if (r.punch) t.setPunch(i, r.punch);
        return attrReply(r.inode);
      });
      // Answered once the blocks are zeroed or freed on every copy (a retry finishes it too).
      await brick.finishPunch(routed.pg, i);
      return reply;
    }),

    Seek: unary('Seek', async (req: wire.SeekRequest__Output) => {
      const i = ino(req.ino, 'ino');
      const { pg } = route(req.header, pgOfIno(i), false);
      const offset = u64(req.offset, 'offset');
      return {
        offset: (await brick.read(pg, (t) => brick.engine.seek(t, i, offset, req.whence))).toString(),
      };
    }),

    ConvertInline: unary('ConvertInline', async (req: wire.ConvertInlineRequest__Output) => {
      const i = ino(req.ino, 'ino');
      const routed = route(req.header, pgOfIno(i), true);
      const version = u64(req.dataVersion, 'data_version');
      return mutate(routed, 'convert-inline', async (t) =>
        attrReply(await brick.engine.convertInline(t, i, version)),
      );
    }),

    Reclaim: unary('Reclaim', async (req: wire.ReclaimRequest__Output) => {
      const i = ino(req.ino, 'ino');
      const { pg } = route(req.header, pgOfIno(i), false);
      await brick.reclaim(pg, i);
      return {};
    }),

    ReadBlock: unary('ReadBlock', async (req: wire.ReadBlockRequest__Output) => {
      const i = ino(req.ino, 'ino');
      const { pg } = route(req.header, undefined, false);
      const bs = volume().blockSizeBytes;
      const index = blockIndex(req.index);
      if (req.recordOnly) {
        const rec = await brick.readBlockRecord(pg, i, index);
        return { data: Buffer.alloc(0), record: rec ? encodeRecord(rec) : Buffer.alloc(0) };
      }
      if (req.offset > bs || req.length > bs || req.offset + req.length > bs)
        throw new FsError('OUT_OF_RANGE', 'read past the block');
      return { data: await brick.readBlock(pg, i, index, req.offset, req.length) };
    }),

    WriteBlock: unary('WriteBlock', async (req: wire.WriteBlockRequest__Output) => {
      const i = ino(req.ino, 'ino');
      const { pg } = route(req.header, undefined, false);
      const bs = volume().blockSizeBytes;
      const index = blockIndex(req.index);
      const data = bytes(req.data, 'data', bs);
      if (req.extents.length > 0) {
        const extents = validateWriteExtents(req.extents, data.length, bs);
        // The span is a buffer of its own: the request's bytes can go back at once.
        await brick.writeBlockExtents(pg, i, index, extents, data);
        giveBack(data);
        return {};
      }
      if (req.offset + data.length > bs) throw new FsError('OUT_OF_RANGE', 'write past the block');
      // Block bytes that came as a frame tail live in a pooled buffer: once no
      // replica send holds them, the pool gets it back (a fresh 1 MiB buffer
      // per write is external memory that drives V8 into major collections).
      if (await brick.writeBlock(pg, i, index, req.offset, data)) giveBack(data);
      return {};
    }),

    TruncateBlocks: unary('TruncateBlocks', async (req: wire.TruncateBlocksRequest__Output) => {
      const i = ino(req.ino, 'ino');
      const { pg } = route(req.header, undefined, false);
      const size = u64(req.size, 'size');
      if (size > BigInt(limits.fileSizeMaxBytes)) throw new FsError('FILE_TOO_LARGE');
      await brick.truncateBlocks(pg, i, size);
      return {};
    }),

    CopyBlock: unary('CopyBlock', async (req: wire.CopyBlockRequest__Output) => {
      const dstIno = ino(req.dstIno, 'dst_ino');
      const srcIno = ino(req.srcIno, 'src_ino');
      const { pg } = route(req.header, undefined, false);
      const bs = volume().blockSizeBytes;
      const dstIndex = blockIndex(req.dstIndex);
      const srcIndex = blockIndex(req.srcIndex);
      if (
        req.length === 0 ||
        req.length > bs ||
        req.dstOffset + req.length > bs ||
        req.srcOffset + req.length > bs
      )
        throw new FsError('OUT_OF_RANGE', 'copy outside a block');
      await brick.copyBlock(
        pg,
        { ino: dstIno, index: dstIndex, offset: req.dstOffset },
        { ino: srcIno, index: srcIndex, offset: req.srcOffset },
        req.length,
      );
      return {};
    }),

    PunchBlocks: unary('PunchBlocks', async (req: wire.PunchBlocksRequest__Output) => {
      const i = ino(req.ino, 'ino');
      const { pg } = route(req.header, undefined, false);
      const from = u64(req.from, 'from');
      const to = u64(req.to, 'to');
      if (to > BigInt(limits.fileSizeMaxBytes)) throw new FsError('FILE_TOO_LARGE');
      if (from >= to) throw new FsError('INVALID_ARGUMENT', `punch range ${from}..${to}`);
      await brick.punchBlocks(pg, i, from, to);
      return {};
    }),

    StatFs: unary('StatFs', async () => {
      const s = await statfs(d.dataDir);
      const counts = await brick.inodeCountCached();
      const u = d.usage?.();
      // The brick's own capacity (a quota below its disk) once measured, else the disk's.
      const total = u ? BigInt(u.capacityBytes) : BigInt(s.blocks) * BigInt(s.bsize);
      const free = u ? BigInt(u.freeBytes) : BigInt(s.bfree) * BigInt(s.bsize);
      const avail = u ? BigInt(u.freeBytes) : BigInt(s.bavail) * BigInt(s.bsize);
      return {
        bytesTotal: total.toString(),
        bytesFree: free.toString(),
        bytesAvail: avail.toString(),
        inodesUsed: counts.toString(),
        inodesFree: (BigInt(s.ffree) * 16n).toString(),
      };
    }),

    BrickStatus: unary('BrickStatus', async () => {
      const c = await counts();
      return {
        brickId: d.brickId,
        volume: volume().name,
        pgs: [...brick.pgs.keys()].sort((a, b) => a - b),
        inodes: c.inodes.toString(),
        blocks: c.blocks.toString(),
        uptimeMs: String(Date.now() - d.startedAtMs),
        rssBytes: String(process.memoryUsage.rss()),
        invalidationsQueued: String(d.coherence?.stats.queued ?? 0),
        cacheRegistrations: String(d.coherence?.stats.registrations ?? 0),
        cacheSessionsDropped: String(d.coherence?.stats.dropped ?? 0),
      };
    }),

    TxRead: unary('TxRead', async (req: wire.TxReadRequest__Output) => {
      const { pg } = route(req.header, undefined, false);
      if (req.keys.length > limits.txKeysMax) throw new FsError('OUT_OF_RANGE', 'too many keys');
      const values = await brick.txRead(pg, req.keys.map(txKey));
      return {
        values: values.map((v, i) => ({
          key: req.keys[i]!,
          value: v ?? Buffer.alloc(0),
          present: v !== undefined,
        })),
      };
    }),

    TxPrepare: unary('TxPrepare', async (req: wire.TxPrepareRequest__Output) => {
      const { pg } = route(req.header, undefined, false);
      if (req.reads.length + req.writes.length > 2 * limits.txKeysMax)
        throw new FsError('OUT_OF_RANGE', 'too many keys');
      const kv = (k: wire.TxKey__Output): TxKeyValue => ({
        // Checked as TxRead's: found by the RPC fuzz test (a 2-byte key threw in pgOfKey, a bug answered EIO).
        key: txKey(k.key),
        value: k.present ? k.value : undefined,
      });
      await brick.txPrepare(pg, txId(req.txId), req.coordinatorPg, req.reads.map(kv), req.writes.map(kv));
      return {};
    }),

    TxCommit: unary('TxCommit', async (req: wire.TxIdRequest__Output) => {
      const { pg } = route(req.header, undefined, false);
      await brick.txCommit(pg, txId(req.txId));
      return {};
    }),

    TxAbort: unary('TxAbort', async (req: wire.TxIdRequest__Output) => {
      const { pg } = route(req.header, undefined, false);
      await brick.txAbort(pg, txId(req.txId));
      return {};
    }),

    TxStatus: unary('TxStatus', async (req: wire.TxIdRequest__Output) => {
      const { pg } = route(req.header, undefined, false);
      return { state: await brick.txStatus(pg, txId(req.txId)) };
    }),

    AllocIno: unary('AllocIno', async (req: wire.AllocInoRequest__Output) => {
      const { pg } = route(req.header, undefined, false);
      return { ino: (await brick.allocIno(pg)).toString() };
    }),

    // Replication: addressed to a copy of the PG in any role; the epoch is the sender's.
    Replicate: unary('Replicate', async (req: wire.ReplicateRequest__Output) => {
      const { st, epoch } = copyOf(req.header);
      if (req.entries.length > REPLICATE_ENTRIES_MAX) throw new FsError('OUT_OF_RANGE', 'too many entries');
      const r = await brick.repl.applyReplicated(st, epoch, entriesFromReplicate(req.entries, req.data));
      // Applied entries' bytes are in the block files: the tail's buffer can be reused.
      if (req.data.length > 0) giveBack(req.data);
      return { lastSeq: r.lastSeq.toString(), gap: r.gap };
    }),

    PgPosition: unary('PgPosition', async (req: wire.PgPositionRequest__Output) => {
      const { st, epoch } = copyOf(req.header);
      const p = await brick.repl.position(st, epoch);
      return {
        lastSeq: p.lastSeq.toString(),
        lastEpoch: String(p.lastEpoch),
        firstSeq: p.firstSeq.toString(),
      };
    }),

    FetchLog: unary('FetchLog', async (req: wire.FetchLogRequest__Output) => {
      const { st, epoch } = copyOf(req.header);
      const from = u64(req.fromSeq, 'fromSeq');
      const max = Math.min(Math.max(1, req.entriesMax), REPLICATE_ENTRIES_MAX);
      const entries = await brick.repl.fetchLog(st, epoch, from, max);
      return { entries: entries.map((e) => entryToWire(e, true)) };
    }),

    Backfill: unary('Backfill', async (req: wire.BackfillRequest__Output) => {
      const { st, epoch } = copyOf(req.header);
      const shell = entryFromWire({
        epoch: String(epoch),
        seq: '1',
        requestId: '',
        kind: 'backfill',
        writes: req.writes,
        blocks: req.blocks,
      });
      if (req.step === 'BEGIN') await brick.repl.backfillStep(st, epoch, { step: 'BEGIN' });
      else if (req.step === 'CHUNK')
        await brick.repl.backfillStep(st, epoch, {
          step: 'CHUNK',
          writes: shell.writes,
          blocks: shell.blocks,
        });
      else {
        const base = req.base ? entryFromWire(req.base) : undefined;
        await brick.repl.backfillStep(st, epoch, { step: 'END', base });
      }
      return {};
    }),

    Sync: unary('Sync', async (req: wire.SyncRequest__Output) => {
      const { pg } = route(req.header, undefined, false);
      await brick.repl.syncPg(brick.serving(pg));
      return {};
    }),

    SyncCopy: unary('SyncCopy', async (req: wire.SyncRequest__Output) => {
      const { st, epoch } = copyOf(req.header);
      await brick.repl.syncCopy(st, epoch);
      return {};
    }),

    FetchBlock: unary('FetchBlock', async (req: wire.FetchBlockRequest__Output) => {
      const { st, epoch } = copyOf(req.header);
      const i = ino(req.ino, 'ino');
      const op = await brick.repl.fetchBlock(st, epoch, i, blockIndex(req.index));
      return {
        block: entryToWire({ epoch, seq: 1n, requestId: '', kind: '', writes: [], blocks: [op] }, true)
          .blocks![0],
      };
    }),

    GetLock: unary('GetLock', async (req: wire.LockRequest__Output) => {
      const i = ino(req.ino, 'ino');
      const { pg } = route(req.header, pgOfIno(i), false);
      return lockReplyToWire(await locks().getLock(pg, i, lockOf(req.lock)));
    }),

    SetLock: unary('SetLock', async (req: wire.LockRequest__Output) => {
      const i = ino(req.ino, 'ino');
      const { pg } = route(req.header, pgOfIno(i), true);
      const lock = lockOf(req.lock);
      if (lock.type === 'u' && req.waitMs > 0)
        throw new FsError('INVALID_ARGUMENT', 'an unlock does not wait');
      const r = await locks().setLock(pg, i, lock, req.waitMs, waitIdOf(req.waitId, req.waitMs > 0));
      return lockReplyToWire(r);
    }),

    CancelLock: unary('CancelLock', async (req: wire.CancelLockRequest__Output) => {
      const i = ino(req.ino, 'ino');
      const { pg } = route(req.header, pgOfIno(i), true);
      return lockReplyToWire(await locks().cancel(pg, i, waitIdOf(req.waitId, true)));
    }),

    ReleaseLocks: unary('ReleaseLocks', async (req: wire.ReleaseLocksRequest__Output) => {
      const i = ino(req.ino, 'ino');
      const { pg } = route(req.header, pgOfIno(i), true);
      if (req.owners.length > LOCK_OWNERS_PER_CALL_MAX)
        throw new FsError(
          'OUT_OF_RANGE',
          `${req.owners.length} lock owners, at most ${LOCK_OWNERS_PER_CALL_MAX}`,
        );
      const kinds = new Set<LockKind>();
      if (req.posix) kinds.add('posix');
      if (req.flock) kinds.add('flock');
      const owners = new Set(req.owners.map((o) => u64(o, 'owners').toString()));
      await locks().release(pg, i, sessionOf(req.session), owners, kinds);
      return {};
    }),

    PollInvalidations: unary('PollInvalidations', async (req: wire.PollInvalidationsRequest__Output) => {
      const c = d.coherence;
      if (!c) throw new FsError('UNIMPLEMENTED', 'coherent caches are not served here');
      const ack = Number(u64(req.ackSeq, 'ack_seq'));
      const r = await c.poll(req.session, req.generation, ack, req.waitMs);
      return {
        generation: r.generation,
        reset: r.reset,
        // What this reply acknowledges once applied: its last invalidation (or all, when empty).
        lastSeq: String(r.items.at(-1)?.seq ?? r.lastSeq),
        brickId: d.brickId,
        invalidations: r.items.map(({ inval: i }) => ({
          kind: i.kind,
          ino: i.ino.toString(),
          parent: i.parent.toString(),
          name: i.name,
          data: i.data,
        })),
      };
    }),

    Invalidate: unary('Invalidate', async (req: wire.InvalidateRequest__Output) => {
      const c = d.coherence;
      if (!c) return {};
      const { pg } = route(req.header, undefined, false);
      if (req.session.length > limits.requestIdMaxBytes) throw new FsError('INVALID_ARGUMENT', 'bad session');
      if (req.invalidations.length > limits.invalidationsPerPollMax)
        throw new FsError('OUT_OF_RANGE', `${req.invalidations.length} invalidations`);
      const invals: Inval[] = req.invalidations.map((w) => {
        if (w.kind > InvalKind.FORGOTTEN)
          throw new FsError('INVALID_ARGUMENT', `invalidation kind ${w.kind}`);
        return {
          kind: w.kind as InvalKind,
          ino: u64(w.ino, 'ino'),
          parent: u64(w.parent, 'parent'),
          name: bytes(w.name, 'name', limits.nameMaxBytes),
          data: w.data,
        };
      });
      // Only this PG's inodes: the sender split the change by PG.
      await c.invalidate(
        pg,
        invals.filter((i) => pgOfIno(registeredUnder(i)) === pg),
        req.session,
      );
      return {};
    }),

    ScrubDigest: unary('ScrubDigest', async (req: wire.ScrubDigestRequest__Output) => {
      const { st, epoch } = copyOf(req.header);
      const r = await brick.repl.scrubDigest(st, epoch, {
        seq: u64(req.seq, 'seq'),
        fromKey: txKey(req.fromKey),
        toKey: txKey(req.toKey),
        verifyBlocks: req.verifyBlocks,
        rows: req.rows,
      });
      return {
        digest: r.digest,
        keys: r.keys,
        bytes: String(r.bytes),
        badBlocks: r.badBlocks.map((b) => ({
          ino: b.ino.toString(),
          index: b.index.toString(),
          detail: b.detail,
        })),
        rows: r.rows,
        rowsTruncated: r.rowsTruncated,
      };
    }),
  };

  /** The copy of the header's PG held here and the sender's epoch (replication RPCs). */
  function copyOf(h: Header): { st: ReturnType<Brick['copy']>; epoch: number } {
    if (!h) throw new FsError('INVALID_ARGUMENT', 'missing header');
    const epoch = Number(u64(h.epoch, 'epoch'));
    if (!Number.isSafeInteger(epoch) || epoch < 1)
      throw new FsError('INVALID_ARGUMENT', 'epoch must be >= 1');
    return { st: brick.copy(h.pg), epoch };
  }
}

/** Entries in one Replicate or FetchLog message. */
const REPLICATE_ENTRIES_MAX = 4096;

/** Lock owners one ReleaseLocks may name. */
const LOCK_OWNERS_PER_CALL_MAX = 1024;

function sessionOf(v: string): string {
  if (v.length === 0 || v.length > limits.requestIdMaxBytes)
    throw new FsError('INVALID_ARGUMENT', 'bad lock session');
  return v;
}

function waitIdOf(v: string, required: boolean): string {
  if (v.length > limits.requestIdMaxBytes || (required && v.length === 0))
    throw new FsError('INVALID_ARGUMENT', 'bad wait id');
  return v;
}

const LOCK_TYPES = ['r', 'w', 'u'] as const;

/** A lock off the wire, checked (range, type; flock is whole-file). */
function lockOf(l: wire.LockSpec__Output | null): LockRequest {
  if (!l) throw new FsError('INVALID_ARGUMENT', 'missing lock');
  const type = LOCK_TYPES[l.type];
  if (type === undefined) throw new FsError('INVALID_ARGUMENT', `lock type ${l.type}`);
  const req: LockRequest = {
    session: sessionOf(l.session),
    owner: u64(l.owner, 'owner').toString(),
    kind: l.flock ? 'flock' : 'posix',
    type,
    start: l.flock ? 0n : u64(l.start, 'start'),
    end: l.flock ? LOCK_END_MAX : u64(l.end, 'end'),
    pid: l.pid,
  };
  if (!validLockRequest(req)) throw new FsError('INVALID_ARGUMENT', `lock range ${req.start}..${req.end}`);
  return req;
}

function lockReplyToWire(r: LockReply): wire.LockReply {
  const c = r.conflict;
  return {
    granted: r.granted,
    waiting: r.waiting,
    conflict: c
      ? {
          session: c.session,
          owner: c.owner,
          flock: c.kind === 'flock',
          type: LOCK_TYPES.indexOf(c.type),
          start: c.start.toString(),
          end: c.end.toString(),
          pid: c.pid,
        }
      : { type: 2 },
  };
}

/** Longest name or xattr name read off the wire before the real limits apply (FUSE passes up to 1024). */
const WIRE_NAME_MAX_BYTES = 4096;

/** A transaction key: at least PG (2 bytes) and kind (1 byte). */
function txKey(k: Buffer): Buffer {
  if (k.length < 3 || k.length > 11 + WIRE_NAME_MAX_BYTES)
    throw new FsError('INVALID_ARGUMENT', `malformed key of ${k.length} bytes`);
  return k;
}

function txId(v: string): string {
  if (!/^[0-9a-z.]{1,64}$/.test(v)) throw new FsError('INVALID_ARGUMENT', 'bad transaction id');
  return v;
}

/** Starts the gRPC server on `listen` (host:port); resolves with the bound port. */
export async function startBrickServer(
  listen: string,
  handlers: BrickHandlers,
  security: TransportSecurity = INSECURE_TRANSPORT,
  connLimits: ConnLimits = connLimitDefaults,
): Promise<{ server: CappedGrpcServer; port: number }> {
  if (security.kind === 'insecure')
    assertInsecureAllowed(listen.slice(0, listen.lastIndexOf(':')), 'listen address');
  // The frame server's limits, as far as grpc-js has them; the connection cap is ours (capped-grpc-server.ts).
  const server = new CappedGrpcServer(
    {
      ...channelOptions,
      'grpc.max_concurrent_streams': connLimits.inflightCallsPerConnMax,
      'grpc.max_connection_idle_ms': connLimits.idleTimeoutMs,
      'grpc-node.max_session_memory': Math.ceil(connLimits.queuedBytesPerConnMax / 2 ** 20),
    },
    connLimits.connectionsMax,
  );
  server.addService(brickProto().dunix.v1.Brick.service, handlers);
  const at = listen.lastIndexOf(':');
  const host = listen.slice(0, at).replace(/^\[(.*)\]$/, '$1');
  const port = await server.listenCapped(host, Number(listen.slice(at + 1)), grpcServerCredentials(security));
  return { server, port };
}

/**
 * WriteBlock's extents: at most limits.writeExtentsPerCallMax, each
 * non-empty, sorted and apart (not overlapping), inside the block, their
 * lengths adding up to the request's bytes.
 */
export function validateWriteExtents(
  extents: readonly { offset: number; length: number }[],
  dataBytes: number,
  blockSizeBytes: number,
): { offset: number; length: number }[] {
  if (extents.length > limits.writeExtentsPerCallMax)
    throw new FsError(
      'INVALID_ARGUMENT',
      `${extents.length} extents, at most ${limits.writeExtentsPerCallMax}`,
    );
  let total = 0;
  let prevEnd = -1;
  for (const e of extents) {
    if (e.length === 0) throw new FsError('INVALID_ARGUMENT', 'empty write extent');
    if (e.offset < prevEnd)
      throw new FsError('INVALID_ARGUMENT', 'write extents overlap or are out of order');
    if (e.offset + e.length > blockSizeBytes)
      throw new FsError('OUT_OF_RANGE', 'write extent past the block');
    prevEnd = e.offset + e.length;
    total += e.length;
  }
  if (total !== dataBytes)
    throw new FsError('INVALID_ARGUMENT', `write extents cover ${total} bytes, the request has ${dataBytes}`);
  return extents.map((e) => ({ offset: e.offset, length: e.length }));
}
