/**
 * Test harness: mounts a temp directory through the real dunixfs-passthrough
 * binary (a separate process, as a user would run it) and tears everything
 * down afterwards, even when the test fails.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mountAt } from '../../src/fuse/mount.js';

const here = dirname(fileURLToPath(import.meta.url));
/** The compiled bin, as installed by the package. */
export const passthroughBin = join(here, '..', '..', 'src', 'bin', 'dunixfs-passthrough.cjs');

export interface PassthroughMount {
  readonly src: string;
  readonly mnt: string;
  readonly proc: ChildProcess;
  /** Everything the server wrote to stderr so far. */
  log(): string;
  stop(): Promise<void>;
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

export async function waitFor(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function mountPassthrough(t: Teardown, args: string[] = []): Promise<PassthroughMount> {
  const base = mkdtempSync(join(tmpdir(), 'dunix-pt-'));
  const src = join(base, 'src');
  const mnt = join(base, 'mnt');
  spawnSync('mkdir', ['-p', src, mnt]);
  spawnSync('chmod', ['0755', base, src, mnt]);
  let stderr = '';
  const proc = spawn(process.execPath, [passthroughBin, ...args, src, mnt], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  proc.stderr?.on('data', (d) => {
    stderr += String(d);
  });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    if (mountAt(mnt)) spawnSync('umount', ['-l', mnt]);
    rmSync(base, { recursive: true, force: true });
  };
  t.teardown(stop);
  await waitFor(
    () => mountAt(mnt)?.fstype === 'fuse.dunixfs-passthrough' || proc.exitCode !== null,
    'the passthrough mount',
  );
  if (proc.exitCode !== null) throw new Error(`passthrough exited ${proc.exitCode}: ${stderr}`);
  return { src, mnt, proc, log: () => stderr, stop };
}

/** Runs a command (as another user if asked) and returns its result without throwing. */
export function run(
  cmd: string,
  args: string[],
  opts: { uid?: number; gid?: number; cwd?: string; input?: string } = {},
): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000, ...opts });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** Runs a command and throws with its stderr unless it exits 0; returns stdout. */
export function ok(
  cmd: string,
  args: string[],
  opts: { uid?: number; gid?: number; cwd?: string } = {},
): string {
  const r = run(cmd, args, opts);
  if (r.status !== 0) {
    const shown = args.map((a) => (a.length > 80 ? `${a.slice(0, 40)}…(${a.length} bytes)` : a)).join(' ');
    throw new Error(`${cmd} ${shown} exited ${r.status}: ${r.stderr.slice(0, 500)}`);
  }
  return r.stdout;
}
