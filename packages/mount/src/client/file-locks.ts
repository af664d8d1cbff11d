import { FsError, pgOfIno, type wire } from '@dunix/proto';
import type { FileLock } from '../fuse/filesystem.js';
import type { BrickApi } from './brick-api.js';

const F_UNLCK = 2;
/** A cancelled wait is answered EINTR after this even if the brick does not answer the cancel. */
const CANCEL_WAIT_MAX_MS = 1000;

export interface FileLocksOptions {
  /** One SetLock call waits at most this long at the brick (then the client calls again). */
  waitSliceMs: number;
}

/**
 * This mount's side of cluster-wide locks: every lock goes to the inode's
 * primary under the owner (this session, the kernel's lock owner), and the
 * client remembers which owners may hold locks, to release them at FLUSH
 * (POSIX locks of the closing process) and RELEASE (flock and OFD locks of
 * the open file, whose lock owner is the file: owners that locked through
 * the handle and never closed it as a process are those).
 */
export class FileLocks {
  /** Per inode: owners that set POSIX locks here (a FLUSH by one of them releases its locks). */
  private readonly posixOwners = new Map<bigint, Set<bigint>>();
  /** Per open file: owners that locked through it, and owners seen closing it (processes). */
  private readonly byFh = new Map<bigint, { ino: bigint; owners: Set<bigint>; closers: Set<bigint> }>();

  constructor(
    private readonly api: BrickApi,
    private readonly session: () => string | undefined,
    private readonly o: FileLocksOptions,
  ) {}

  private spec(lock: FileLock): wire.LockSpec {
    const session = this.session();
    if (!session) throw new FsError('NO_LOCKS', 'this mount has no session: locks are off');
    return {
      session,
      owner: lock.owner.toString(),
      flock: lock.flock,
      type: lock.type,
      start: lock.start.toString(),
      end: lock.end.toString(),
      pid: lock.pid,
    };
  }

  async getlk(ino: bigint, lock: FileLock): Promise<FileLock> {
    const r = await this.api.read<wire.LockReply__Output>(pgOfIno(ino), 'GetLock', {
      ino: ino.toString(),
      lock: this.spec(lock),
    });
    const c = r.conflict;
    if (r.granted || !c || c.type === F_UNLCK) return { ...lock, type: F_UNLCK };
    return {
      owner: BigInt(c.owner),
      start: BigInt(c.start),
      end: BigInt(c.end),
      type: c.type,
      // A pid means something on the machine that set the lock only.
      pid: c.session === this.session() ? c.pid : 0,
      flock: c.flock,
    };
  }

  /** Resolves once granted; EAGAIN (no wait), EDEADLK, or EINTR once `signal` aborts a wait. */
  async setlk(ino: bigint, fh: bigint, lock: FileLock, wait: boolean, signal: AbortSignal): Promise<void> {
    const spec = this.spec(lock);
    const pg = pgOfIno(ino);
    if (lock.type !== F_UNLCK) this.track(ino, fh, lock);
    if (!wait) {
      const r = await this.api.mutate<wire.LockReply__Output>(pg, 'SetLock', {
        ino: ino.toString(),
        lock: spec,
      });
      if (!r.granted) throw new FsError('TRY_AGAIN', `inode ${ino} is locked`);
      return;
    }
    const waitId = this.api.newRequestId();
    const aborted = new Promise<'aborted'>((resolve) => {
      if (signal.aborted) resolve('aborted');
      else signal.addEventListener('abort', () => resolve('aborted'), { once: true });
    });
    for (;;) {
      const call = this.api.mutate<wire.LockReply__Output>(pg, 'SetLock', {
        ino: ino.toString(),
        lock: spec,
        waitMs: this.o.waitSliceMs,
        waitId,
      });
      // Abandoned once the wait is interrupted; its outcome is what the cancel reports.
      call.catch(() => {});
      const r = await Promise.race([call, aborted]);
      if (r === 'aborted') {
        if (await this.cancel(pg, ino, waitId)) return;
        throw new FsError('INTERRUPTED', 'lock wait interrupted');
      }
      if (r.granted) return;
      if (!r.waiting) throw new FsError('INTERRUPTED', 'lock wait cancelled');
    }
  }

  /** Whether the lock had been granted before the cancel reached the brick. */
  private async cancel(pg: number, ino: bigint, waitId: string): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), CANCEL_WAIT_MAX_MS);
    });
    try {
      const r = await Promise.race([
        this.api
          .mutate<wire.LockReply__Output>(pg, 'CancelLock', { ino: ino.toString(), waitId })
          .then((c) => c.granted)
          .catch(() => false),
        late,
      ]);
      return r;
    } finally {
      clearTimeout(timer);
    }
  }

  private track(ino: bigint, fh: bigint, lock: FileLock): void {
    if (!lock.flock) {
      const owners = this.posixOwners.get(ino) ?? new Set<bigint>();
      owners.add(lock.owner);
      this.posixOwners.set(ino, owners);
    }
    const f = this.byFh.get(fh) ?? { ino, owners: new Set<bigint>(), closers: new Set<bigint>() };
    f.owners.add(lock.owner);
    this.byFh.set(fh, f);
  }

  /** FLUSH (a close by the process `owner`): its POSIX locks on the inode go, as on Linux. */
  async flushed(ino: bigint, fh: bigint, owner: bigint): Promise<void> {
    this.byFh.get(fh)?.closers.add(owner);
    const owners = this.posixOwners.get(ino);
    if (!owners?.has(owner)) return;
    await this.release(ino, [owner], true, false);
    owners.delete(owner);
    if (owners.size === 0) this.posixOwners.delete(ino);
  }

  /**
   * RELEASE (the open file's last close): its flock lock and OFD locks go.
   * Owners that closed it as processes are left out: their POSIX locks went
   * at their FLUSH, and a lock they set since through another file stays.
   */
  async released(ino: bigint, fh: bigint, flockOwner: bigint | undefined): Promise<void> {
    const f = this.byFh.get(fh);
    this.byFh.delete(fh);
    const owners = new Set<bigint>();
    for (const o of f?.owners ?? []) if (!f?.closers.has(o)) owners.add(o);
    if (flockOwner !== undefined) owners.add(flockOwner);
    if (owners.size === 0 || !this.session()) return;
    await this.release(ino, [...owners], true, true);
  }

  private async release(ino: bigint, owners: bigint[], posix: boolean, flock: boolean): Promise<void> {
    await this.api.mutate(pgOfIno(ino), 'ReleaseLocks', {
      ino: ino.toString(),
      session: this.session(),
      owners: owners.map(String),
      posix,
      flock,
    });
  }
}
