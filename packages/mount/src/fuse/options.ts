/**
 * Knobs of a FUSE session, each with its bound. See docs/LIMITS.md.
 */
export interface SessionOptions {
  /** Largest WRITE the kernel may send; also sets max_pages. 4 KiB..1 MiB. */
  maxWriteBytes: number;
  /** Read-ahead the kernel may do, capped by what it offers. */
  maxReadaheadBytes: number;
  /** Reads of /dev/fuse kept outstanding, i.e. requests that can be in flight at once before the next read. */
  readersMax: number;
  /** Asynchronous requests (readahead, async direct I/O) the kernel keeps in flight. */
  maxBackground: number;
  /** Above this many background requests the kernel marks the bdi congested. */
  congestionThreshold: number;
  entryTtlMs: number;
  attrTtlMs: number;
  /** Cache failed lookups this long; 0 answers ENOENT uncached. */
  negativeTtlMs: number;
  /** Let the kernel buffer writes in the page cache (FUSE_WRITEBACK_CACHE). */
  writebackCache: boolean;
  /** Let the kernel check permissions from the attributes we return. */
  defaultPermissions: boolean;
  /**
   * FUSE_POSIX_ACL: the kernel checks POSIX ACLs (read through getxattr of
   * system.posix_acl_*) along with the mode, and leaves the umask to the
   * backend (which must apply it, or a directory's default ACL instead).
   */
  posixAcl: boolean;
  /** Spare request buffers kept for reuse; more are allocated under load and dropped after. */
  spareBuffersMax: number;
  /**
   * FUSE_EXPORT_SUPPORT: the backend answers LOOKUP of "." and ".." by node
   * id alone (open_by_handle_at and NFS re-export after the kernel dropped
   * the inode). Only for backends whose node ids outlive the kernel's cache.
   */
  exportSupport: boolean;
  /**
   * FUSE_POSIX_LOCKS and FUSE_FLOCK_LOCKS: fcntl, OFD and flock locks go to
   * the backend (getlk/setlk) instead of staying in this machine's kernel.
   * Only for backends that implement them cluster-wide.
   */
  locks: boolean;
}

export const sessionDefaults: SessionOptions = {
  maxWriteBytes: 1024 * 1024,
  maxReadaheadBytes: 1024 * 1024,
  readersMax: 8,
  maxBackground: 64,
  congestionThreshold: 48,
  entryTtlMs: 1000,
  attrTtlMs: 1000,
  negativeTtlMs: 0,
  writebackCache: false,
  defaultPermissions: true,
  posixAcl: false,
  spareBuffersMax: 16,
  exportSupport: false,
  locks: false,
};

const PAGE_BYTES = 4096;
/** Kernel ceiling on max_pages (FUSE_MAX_MAX_PAGES). */
const MAX_PAGES_MAX = 256;

export function validateSessionOptions(o: SessionOptions): SessionOptions {
  const int = (name: keyof SessionOptions, min: number, max: number) => {
    const v = o[name];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      throw new RangeError(`${name} must be an integer in [${min}, ${max}], got ${String(v)}`);
    }
  };
  int('maxWriteBytes', PAGE_BYTES, MAX_PAGES_MAX * PAGE_BYTES);
  if (o.maxWriteBytes % PAGE_BYTES !== 0) throw new RangeError('maxWriteBytes must be a multiple of 4096');
  int('maxReadaheadBytes', 0, 64 * 1024 * 1024);
  int('readersMax', 1, 64);
  int('maxBackground', 1, 65535);
  int('congestionThreshold', 1, 65535);
  if (o.congestionThreshold > o.maxBackground) {
    throw new RangeError('congestionThreshold must not exceed maxBackground');
  }
  int('entryTtlMs', 0, 86_400_000);
  int('attrTtlMs', 0, 86_400_000);
  int('negativeTtlMs', 0, 86_400_000);
  int('spareBuffersMax', 0, 1024);
  return o;
}

/** Bytes one device read must be able to hold: the largest WRITE plus its headers. */
export function requestBufferBytes(o: SessionOptions): number {
  return o.maxWriteBytes + 8192;
}

/** Threads libuv needs: every outstanding device read blocks one, plus room for file I/O. */
export function threadpoolSizeFor(o: SessionOptions): number {
  return o.readersMax + 8;
}
