/**
 * Mounting and unmounting a FUSE filesystem served by this process: open
 * /dev/fuse, hand the descriptor to mount(8), serve it with a FuseSession.
 * A watchdog process unmounts if we die without doing it ourselves, so a
 * killed server never leaves a wedged mount point for the next run.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger, type Logger } from '@dunix/proto';
import { type DeviceReader, type FuseChannel, openFuseDevice } from './channel.js';
import type { FileSystem } from './filesystem.js';
import {
  requestBufferBytes,
  type SessionOptions,
  sessionDefaults,
  validateSessionOptions,
} from './options.js';
import { FuseSession } from './session.js';

export interface MountOptions {
  mountpoint: string;
  /** Shown as the mount source in /proc/mounts. */
  source: string;
  /** Filesystem type is fuse.<subtype>. */
  subtype: string;
  allowOther: boolean;
  /** Extra comma-separated kernel/VFS options (e.g. "ro,noatime"). */
  extra?: string;
  session?: Partial<SessionOptions>;
  /** Start the watchdog that unmounts if this process dies (default true). */
  watchdog?: boolean;
  /** How /dev/fuse is read (default: the event loop, falling back to the threadpool). */
  reader?: DeviceReader;
  /**
   * Kernel readahead window for this mount (its bdi's read_ahead_kb). FUSE
   * starts at 128 KiB and INIT can only lower it; a larger window lets
   * sequential reads arrive as several 1 MiB requests in flight.
   */
  readAheadKb?: number;
}

interface MountInfo {
  id: number;
  /** major:minor of the mounted filesystem. */
  dev: string;
  mountpoint: string;
  fstype: string;
  source: string;
}

function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

export function readMountInfo(): MountInfo[] {
  const out: MountInfo[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'latin1').split('\n')) {
    if (!line) continue;
    const [pre, post] = line.split(' - ');
    if (!pre || !post) continue;
    const a = pre.split(' ');
    const b = post.split(' ');
    out.push({
      id: Number(a[0]),
      dev: a[2] ?? '',
      mountpoint: unescapeMountField(a[4] ?? ''),
      fstype: b[0] ?? '',
      source: unescapeMountField(b[1] ?? ''),
    });
  }
  return out;
}

/** The topmost mount at exactly this path, if any. */
export function mountAt(path: string): MountInfo | undefined {
  const all = readMountInfo().filter((m) => m.mountpoint === path);
  return all[all.length - 1];
}

/**
 * If a FUSE server died and left `path` mounted but dead (ENOTCONN), detach it.
 * Returns true if it did.
 */
export function clearStaleMount(path: string, log?: Logger): boolean {
  try {
    statSync(path);
    return false;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOTCONN' && code !== 'ECONNABORTED') return false;
  }
  const m = mountAt(path);
  if (!m?.fstype.startsWith('fuse')) return false;
  log?.warn('detaching a dead FUSE mount left by an earlier server', { path, fstype: m.fstype });
  spawnSync('umount', ['-l', path], { stdio: 'ignore' });
  return true;
}

/**
 * umount(8), run asynchronously: unmounting may need requests answered by the
 * very process that serves the mount, so its event loop must keep running.
 */
export function unmount(path: string, lazy = false): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn('umount', lazy ? ['-l', path] : [path], { stdio: 'ignore' });
    child.on('error', () => resolve(false));
    child.on('close', (code) => resolve(code === 0));
  });
}

/**
 * How long stop() waits, after unmounting, for the session to end by itself.
 * A lazily detached mount lives on while some process keeps a file or its cwd
 * in it; after this the connection is aborted (those processes get ENOTCONN).
 */
const STOP_GRACE_MS = 5_000;
/**
 * Then how long stop() waits for the session to finish (answer requests in
 * flight, publish buffered data) before it returns anyway, so that a
 * signalled server always exits. A little over the client's default failover
 * timeout (60 s): publishing may have to wait out one failover.
 */
const STOP_DRAIN_MS = 65_000;

/**
 * Ends a FUSE connection from our side through fusectl: every pending and
 * future request fails and device reads return ENODEV. Returns false if
 * fusectl is not mounted (or the connection is gone already).
 */
function abortConnection(dev: string): boolean {
  // The fusectl directory is named by the connection's dev_t; FUSE mounts have major 0.
  const [major, minor] = dev.split(':');
  if (major !== '0' || !minor) return false;
  try {
    writeFileSync(`/sys/fs/fuse/connections/${minor}/abort`, '1');
    return true;
  } catch {
    return false;
  }
}

function escapeOption(v: string): string {
  if (/[,\\]/.test(v)) throw new Error(`mount option value may not contain ',' or '\\': ${v}`);
  return v;
}

export class FuseMount {
  readonly session: FuseSession;
  private readonly channel: FuseChannel & { readonly fd: number };
  private readonly log: Logger;
  private mounted = false;
  /** Our mount in mountinfo (id, dev), read right after mount(8): stop() touches only this one. */
  private mountInfo: MountInfo | undefined;
  private stopping: Promise<void> | undefined;
  private watchdogPipe: NodeJS.WritableStream | undefined;

  private constructor(
    readonly options: MountOptions,
    fs: FileSystem,
    log: Logger,
  ) {
    this.log = log;
    const sessionOptions = validateSessionOptions({ ...sessionDefaults, ...options.session });
    this.channel = openFuseDevice(requestBufferBytes(sessionOptions), options.reader);
    this.session = new FuseSession(fs, this.channel, sessionOptions, log);
  }

  /** Mounts fs at options.mountpoint and starts serving it. */
  static async start(fs: FileSystem, options: MountOptions, log = createLogger('mount')): Promise<FuseMount> {
    clearStaleMount(options.mountpoint, log);
    const m = new FuseMount(options, fs, log);
    try {
      await m.mount();
    } catch (err) {
      // mount(2) may have succeeded before serving failed to start: never leave it behind.
      if (m.mounted) spawnSync('umount', ['-l', options.mountpoint], { stdio: 'ignore' });
      m.channel.close();
      throw err;
    }
    return m;
  }

  private async mount(): Promise<void> {
    const o = this.options;
    const opts = [
      'fd=3',
      'rootmode=40000',
      `user_id=${process.getuid?.() ?? 0}`,
      `group_id=${process.getgid?.() ?? 0}`,
    ];
    if (o.allowOther) opts.push('allow_other');
    if (this.session.options.defaultPermissions) opts.push('default_permissions');
    if (o.extra) opts.push(o.extra);
    const args = [
      '-i',
      '-t',
      `fuse.${escapeOption(o.subtype)}`,
      '-o',
      opts.join(','),
      o.source,
      o.mountpoint,
    ];
    const child = spawn('mount', args, { stdio: ['ignore', 'ignore', 'pipe', this.channel.fd] });
    let stderr = '';
    child.stderr?.on('data', (d) => {
      stderr += String(d);
    });
    const code: number = await new Promise((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (c) => resolve(c ?? -1));
    });
    if (code !== 0) throw new Error(`mount ${args.join(' ')} failed (${code}): ${stderr.trim()}`);
    this.mounted = true;
    this.mountInfo = mountAt(o.mountpoint);
    // /dev/fuse refuses reads (EPERM) until mount(2) has attached it; mount(2)
    // does not wait for INIT, so readers start now and answer it.
    this.session.start();
    this.log.info('mounted', { mountpoint: o.mountpoint, source: o.source, type: `fuse.${o.subtype}` });
    if (o.watchdog !== false) this.startWatchdog();
    if (o.readAheadKb !== undefined) void this.setReadAhead(o.readAheadKb);
  }

  /**
   * Serves until the mount ends: SIGTERM and SIGINT stop() (unmount, lazily
   * if busy; abort the connection if it is still in use STOP_GRACE_MS later),
   * SIGHUP is ignored. Resolves when the session has closed or, after a
   * signal, when stop() gives up on it: a signalled server always exits.
   */
  async serveUntilUnmounted(): Promise<void> {
    let onSignal!: () => void;
    const signalled = new Promise<void>((resolve) => (onSignal = resolve));
    const stop = (signal: string) => {
      this.log.info('signal received; unmounting', { signal });
      onSignal();
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => {});
    let closed = false;
    void this.session.closed.then(() => (closed = true));
    await Promise.race([this.session.closed, signalled.then(() => this.stop())]);
    if (closed) this.log.info('session ended', { ...this.session.stats });
  }

  /** After INIT has been answered (it may lower the window), widen it through sysfs. Best effort. */
  private async setReadAhead(kb: number): Promise<void> {
    const deadline = Date.now() + 10_000;
    while (!this.session.negotiated && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 50));
    const dev = mountAt(this.options.mountpoint)?.dev;
    if (!dev) return;
    try {
      writeFileSync(`/sys/class/bdi/${dev}/read_ahead_kb`, String(kb));
      this.log.info('readahead set', { dev, readAheadKb: kb });
    } catch (err) {
      this.log.warn('cannot set readahead', { dev, err: (err as Error).message });
    }
  }

  /**
   * A tiny shell process that waits for our end of a pipe to close (which
   * happens however we die, SIGKILL included) and then detaches the mount if
   * the very same mount (by mount id) is still there.
   */
  private startWatchdog(): void {
    const m = this.mountInfo;
    if (!m) return;
    const script =
      'cat >/dev/null; ' +
      'if awk -v id="$1" \'$1==id {found=1} END {exit !found}\' /proc/self/mountinfo; then umount -l "$2"; fi';
    const child = spawn('sh', ['-c', script, 'dunixfs-watchdog', String(m.id), this.options.mountpoint], {
      stdio: ['pipe', 'ignore', 'ignore'],
      detached: true,
    });
    child.unref();
    const pipe = child.stdin;
    if (pipe) {
      (pipe as unknown as { unref?: () => void }).unref?.();
      pipe.on('error', () => {});
      this.watchdogPipe = pipe;
    }
  }

  /**
   * Unmounts (lazily if busy) and waits for the session to end; if it is
   * still in use graceMs later (a process holds a file in the detached
   * mount), aborts the connection, then waits up to STOP_DRAIN_MS for the
   * session to finish. Touches the mount point only while our own mount is on
   * top of it. Idempotent.
   */
  async stop(graceMs = STOP_GRACE_MS): Promise<void> {
    this.stopping ??= this.stopOnce(graceMs);
    return this.stopping;
  }

  private async stopOnce(graceMs: number): Promise<void> {
    if (this.mounted && this.isOnTop()) {
      if (!(await unmount(this.options.mountpoint)) && this.isOnTop()) {
        this.log.warn('mount point busy; detaching lazily', { mountpoint: this.options.mountpoint });
        await unmount(this.options.mountpoint, true);
      }
    }
    this.mounted = false;
    const closed = await Promise.race([
      this.session.closed.then(() => true),
      sleep(graceMs, false, { ref: false }),
    ]);
    // Still reading requests: a process holds a file or its cwd in the detached mount.
    if (!closed && !this.session.deviceEnded) {
      this.log.warn('detached mount still in use; aborting the connection', {
        mountpoint: this.options.mountpoint,
        graceMs,
      });
      const dev = this.mountInfo?.dev;
      // Without fusectl, closing our descriptor ends the connection too (once no read is parked on it).
      if (!dev || !abortConnection(dev)) this.channel.close();
    }
    const finished = await Promise.race([
      this.session.closed.then(() => true),
      sleep(STOP_DRAIN_MS, false, { ref: false }),
    ]);
    if (!finished) {
      // A backend that never answers, or (threadpool reader, no fusectl) reads parked on the
      // device: the connection ends when this process exits and its descriptor closes.
      this.log.error('session did not finish; giving up on it', { waitedMs: STOP_DRAIN_MS });
      return;
    }
    this.watchdogPipe?.end();
    this.log.info('unmounted', { mountpoint: this.options.mountpoint });
  }

  /** Our mount (same mount id) is the topmost one at the mount point. */
  private isOnTop(): boolean {
    const now = mountAt(this.options.mountpoint);
    return !!now && (this.mountInfo === undefined || now.id === this.mountInfo.id);
  }
}
