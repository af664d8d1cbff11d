/**
 * The byte pipe between a session and the kernel. The real one is an open
 * /dev/fuse; tests use an in-memory one that plays the kernel.
 */
import * as fs from 'node:fs';

export interface FuseChannel {
  /** True if every outstanding read parks a libuv threadpool thread. */
  readonly blocksThreads: boolean;
  /**
   * Reads one whole request into buf and resolves with its length. Rejects
   * with code ENODEV once the filesystem is unmounted, which ends the session.
   */
  read(buf: Buffer): Promise<number>;
  /** Writes one reply as a single message. Returns false if the kernel no longer waits for it. */
  write(parts: readonly Buffer[]): boolean;
  /** Writes a notification off the main thread: the kernel may block it on locks held by requests we serve. */
  notify(parts: readonly Buffer[]): Promise<void>;
  close(): void;
}

/** Errors that mean "this request is gone" rather than "the channel broke". */
const GONE = new Set(['ENOENT', 'EINTR']);

export class DevFuseChannel implements FuseChannel {
  private closed = false;
  readonly blocksThreads = true;
  constructor(readonly fd: number) {}

  static open(): DevFuseChannel {
    return new DevFuseChannel(fs.openSync('/dev/fuse', fs.constants.O_RDWR));
  }

  read(buf: Buffer): Promise<number> {
    return new Promise((resolve, reject) => {
      const attempt = () => {
        if (this.closed) {
          reject(Object.assign(new Error('channel closed'), { code: 'ENODEV' }));
          return;
        }
        fs.read(this.fd, buf, 0, buf.length, null, (err, n) => {
          // ENOENT: the request was interrupted before we read it; EINTR/EAGAIN: just retry.
          if (err && (err.code === 'ENOENT' || err.code === 'EINTR' || err.code === 'EAGAIN')) attempt();
          else if (err) reject(err);
          else resolve(n);
        });
      };
      attempt();
    });
  }

  write(parts: readonly Buffer[]): boolean {
    if (this.closed) return false;
    try {
      fs.writevSync(this.fd, parts as Buffer[]);
      return true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (GONE.has(code) || code === 'ENODEV') return false;
      throw err;
    }
  }

  notify(parts: readonly Buffer[]): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.closed) {
        resolve();
        return;
      }
      fs.writev(this.fd, parts as Buffer[], (err) => {
        // ENOENT: nothing cached to invalidate. ENODEV: unmounted meanwhile.
        if (err && !GONE.has(err.code ?? '') && err.code !== 'ENODEV') reject(err);
        else resolve();
      });
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      fs.closeSync(this.fd);
    } catch {
      // already closed by the kernel side going away; nothing to release
    }
  }
}
