/**
 * The byte pipe between a session and the kernel. The real one is an open
 * /dev/fuse; tests use an in-memory one that plays the kernel.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';

/** Receives requests from a push-mode channel. */
export interface ChannelSink {
  /**
   * One whole request. The buffer belongs to the receiver; if `release` is
   * given, the receiver calls it once done with the buffer (it is pooled).
   */
  message(msg: Buffer, release?: () => void): void;
  /** No more requests: unmounted (code ENODEV) or the device failed. */
  end(err?: NodeJS.ErrnoException): void;
}

export interface FuseChannel {
  /**
   * Push mode, if the channel has it: deliver every request to sink as it
   * arrives (the session then makes no read() calls).
   */
  start?(sink: ChannelSink): void;
  /** True if every outstanding read parks a libuv threadpool thread. */
  readonly blocksThreads: boolean;
  /**
   * Pull mode, for channels without start(): reads one whole request into
   * buf and resolves with its length. Rejects with code ENODEV once the
   * filesystem is unmounted, which ends the session.
   */
  read?(buf: Buffer): Promise<number>;
  /** Writes one reply as a single message. Returns false if the kernel no longer waits for it. */
  write(parts: readonly Buffer[]): boolean;
  /** Writes a notification off the main thread: the kernel may block it on locks held by requests we serve. */
  notify(parts: readonly Buffer[]): Promise<void>;
  close(): void;
}

/** Requests above this size are copied into pooled buffers instead of fresh ones. */
const LARGE_REQUEST_BYTES = 64 * 1024;
/** Pooled large buffers kept; more are allocated under load and dropped after. */
const LARGE_POOL_MAX = 16;

/** Errors that mean "this request is gone" rather than "the channel broke". */
const GONE = new Set(['ENOENT', 'EINTR']);

/**
 * /dev/fuse read with blocking reads on the libuv threadpool: works on any
 * Node, but every request crosses from a pool thread to the main thread.
 */
export class ThreadpoolFuseChannel implements FuseChannel {
  private closed = false;
  readonly blocksThreads = true;
  constructor(readonly fd: number) {}

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
      if (parts.length === 1) fs.writeSync(this.fd, parts[0]!);
      else fs.writevSync(this.fd, parts as Buffer[]);
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

interface PipeBinding {
  Pipe: new (type: number) => { open(fd: number): number };
  constants: { SOCKET: number };
}

function pipeBinding(): PipeBinding | undefined {
  try {
    const binding = (process as unknown as { binding(name: string): unknown }).binding;
    return binding('pipe_wrap') as PipeBinding;
  } catch {
    return undefined;
  }
}

/**
 * /dev/fuse watched by the main event loop (epoll) and read without
 * blocking, straight into one request-sized buffer: no thread hop per
 * request. /dev/fuse is pollable and returns exactly one request per read(),
 * which is all libuv's stream reader needs; Node exposes that reader for an
 * arbitrary fd only through its pipe binding, hence the fallback below.
 */
export class EventLoopFuseChannel implements FuseChannel {
  readonly blocksThreads = false;
  private closed = false;
  private socket: net.Socket | undefined;
  private sink: ChannelSink | undefined;
  private ended = false;
  /**
   * Large requests (WRITE data) are copied into recycled buffers: a fresh
   * megabyte costs a page fault per 4 KiB, several times the copy itself.
   */
  private readonly largePool: Buffer[] = [];
  /** Replies and notices are plain writes; the threadpool channel has them. */
  private readonly writer: ThreadpoolFuseChannel;

  private constructor(
    readonly fd: number,
    private readonly bufferBytes: number,
    private readonly binding: PipeBinding,
  ) {
    this.writer = new ThreadpoolFuseChannel(fd);
  }

  /** The event-loop reader for fd, or undefined if this Node lacks the pipe binding. */
  static tryCreate(fd: number, bufferBytes: number): EventLoopFuseChannel | undefined {
    const binding = pipeBinding();
    return binding ? new EventLoopFuseChannel(fd, bufferBytes, binding) : undefined;
  }

  /** Call only once mounted: /dev/fuse refuses reads (EPERM) before. */
  start(sink: ChannelSink): void {
    if (this.sink) throw new Error('channel already started');
    this.sink = sink;
    if (this.closed) {
      this.end(Object.assign(new Error('channel closed'), { code: 'ENODEV' }));
      return;
    }
    const handle = new this.binding.Pipe(this.binding.constants.SOCKET);
    const rc = handle.open(this.fd);
    if (rc !== 0) {
      this.end(Object.assign(new Error(`cannot watch /dev/fuse (uv error ${rc})`), { code: 'EIO' }));
      return;
    }
    const scratch = Buffer.allocUnsafe(this.bufferBytes);
    this.socket = new net.Socket({
      handle,
      readable: true,
      writable: false,
      onread: { buffer: scratch, callback: (n: number, buf: Uint8Array) => this.deliver(n, buf as Buffer) },
    } as unknown as net.SocketConstructorOpts);
    this.socket.on('error', (err: NodeJS.ErrnoException) => this.end(err));
    this.socket.on('end', () => this.end(Object.assign(new Error('end of /dev/fuse'), { code: 'ENODEV' })));
  }

  private deliver(n: number, buf: Buffer): boolean {
    const sink = this.sink!;
    // libuv reuses buf for the next read as soon as we return.
    if (n <= LARGE_REQUEST_BYTES) {
      sink.message(Buffer.from(buf.subarray(0, n)));
      return true;
    }
    const big = this.largePool.pop() ?? Buffer.allocUnsafeSlow(this.bufferBytes);
    buf.copy(big, 0, 0, n);
    sink.message(big.subarray(0, n), () => {
      if (this.largePool.length < LARGE_POOL_MAX) this.largePool.push(big);
    });
    return true;
  }

  private end(err: NodeJS.ErrnoException): void {
    if (this.ended) return;
    this.ended = true;
    this.sink?.end(err.code ? err : Object.assign(err, { code: 'EIO' }));
  }

  write(parts: readonly Buffer[]): boolean {
    return this.writer.write(parts);
  }

  notify(parts: readonly Buffer[]): Promise<void> {
    return this.writer.notify(parts);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.end(Object.assign(new Error('channel closed'), { code: 'ENODEV' }));
    // The socket owns the fd once started; otherwise close it ourselves.
    if (this.socket) this.socket.destroy();
    else this.writer.close();
  }
}

export type DeviceReader = 'event-loop' | 'threadpool';

/** Opens /dev/fuse with the fastest reader this Node offers, or the one asked for. */
export function openFuseDevice(
  bufferBytes: number,
  reader: DeviceReader = 'event-loop',
): FuseChannel & { readonly fd: number } {
  const fd = fs.openSync('/dev/fuse', fs.constants.O_RDWR);
  const fast = reader === 'event-loop' ? EventLoopFuseChannel.tryCreate(fd, bufferBytes) : undefined;
  return fast ?? new ThreadpoolFuseChannel(fd);
}
