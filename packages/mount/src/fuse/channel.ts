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
  private failure: NodeJS.ErrnoException | undefined;
  private readonly queue: Buffer[] = [];
  private readonly waiting: { buf: Buffer; resolve: (n: number) => void; reject: (e: Error) => void }[] = [];
  private readonly inner: ThreadpoolFuseChannel;

  private constructor(
    readonly fd: number,
    private readonly bufferBytes: number,
    private readonly binding: PipeBinding,
  ) {
    this.inner = new ThreadpoolFuseChannel(fd);
  }

  /** The event-loop reader for fd, or undefined if this Node lacks the pipe binding. */
  static tryCreate(fd: number, bufferBytes: number): EventLoopFuseChannel | undefined {
    const binding = pipeBinding();
    return binding ? new EventLoopFuseChannel(fd, bufferBytes, binding) : undefined;
  }

  /** Reads start on the first read(): /dev/fuse refuses them until mounted. */
  private attach(): void {
    if (this.socket || this.closed) return;
    const handle = new this.binding.Pipe(this.binding.constants.SOCKET);
    const rc = handle.open(this.fd);
    if (rc !== 0) throw new Error(`cannot watch /dev/fuse (uv error ${rc})`);
    const scratch = Buffer.allocUnsafe(this.bufferBytes);
    this.socket = new net.Socket({
      handle,
      readable: true,
      writable: false,
      onread: { buffer: scratch, callback: (n: number, buf: Uint8Array) => this.deliver(n, buf as Buffer) },
    } as unknown as net.SocketConstructorOpts);
    this.socket.on('error', (err: NodeJS.ErrnoException) => this.fail(err));
    this.socket.on('end', () => this.fail(Object.assign(new Error('end of /dev/fuse'), { code: 'ENODEV' })));
  }

  private sink: ChannelSink | undefined;

  start(sink: ChannelSink): void {
    this.sink = sink;
    // Anything queued before start (none in practice) goes first.
    for (const m of this.queue.splice(0)) sink.message(m);
    try {
      this.attach();
    } catch (err) {
      this.fail(err as NodeJS.ErrnoException);
    }
  }

  /**
   * Large requests (WRITE data) are copied into recycled buffers: a fresh
   * megabyte costs a page fault per 4 KiB, several times the copy itself.
   */
  private readonly largePool: Buffer[] = [];

  private deliver(n: number, buf: Buffer): boolean {
    if (this.sink) {
      // libuv reuses buf for the next read as soon as we return.
      if (n <= LARGE_REQUEST_BYTES) {
        this.sink.message(Buffer.from(buf.subarray(0, n)));
        return true;
      }
      const big = this.largePool.pop() ?? Buffer.allocUnsafeSlow(this.bufferBytes);
      buf.copy(big, 0, 0, n);
      this.sink.message(big.subarray(0, n), () => {
        if (this.largePool.length < LARGE_POOL_MAX) this.largePool.push(big);
      });
      return true;
    }
    const reader = this.waiting.shift();
    if (reader) {
      if (n > reader.buf.length) reader.reject(new Error(`request of ${n} bytes exceeds the read buffer`));
      else {
        buf.copy(reader.buf, 0, 0, n);
        reader.resolve(n);
      }
    } else {
      this.queue.push(Buffer.from(buf.subarray(0, n)));
    }
    return true;
  }

  private fail(err: NodeJS.ErrnoException): void {
    if (this.failure) return;
    this.failure = err.code === 'ENODEV' ? err : Object.assign(err, { code: err.code ?? 'EIO' });
    for (const r of this.waiting.splice(0)) r.reject(this.failure);
    this.sink?.end(this.failure);
  }

  read(buf: Buffer): Promise<number> {
    const queued = this.queue.shift();
    if (queued) {
      if (queued.length > buf.length) return Promise.reject(new Error('request exceeds the read buffer'));
      queued.copy(buf);
      return Promise.resolve(queued.length);
    }
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(Object.assign(new Error('channel closed'), { code: 'ENODEV' }));
    return new Promise((resolve, reject) => {
      this.waiting.push({ buf, resolve, reject });
      try {
        this.attach();
      } catch (err) {
        this.fail(err as NodeJS.ErrnoException);
      }
    });
  }

  write(parts: readonly Buffer[]): boolean {
    return this.inner.write(parts);
  }

  notify(parts: readonly Buffer[]): Promise<void> {
    return this.inner.notify(parts);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.fail(Object.assign(new Error('channel closed'), { code: 'ENODEV' }));
    // Destroying the socket closes the fd it owns; the inner channel must not close it again.
    if (this.socket) this.socket.destroy();
    else this.inner.close();
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
