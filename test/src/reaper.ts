/**
 * Cleans up after a test process that cannot: tap ends a test file that
 * times out with SIGKILL, and no hook of ours runs then. A small detached
 * process reads what we started from a pipe only we hold; when the pipe
 * closes (however we end) it SIGKILLs the processes still listed, lazily
 * unmounts the mounts and removes the dirs. What a test cleaned up itself is
 * withdrawn first, so a normal exit leaves it nothing to do.
 */
import { type ChildProcess, spawn } from 'node:child_process';

type Entry =
  | { kind: 'pid'; pid: number; marker: string }
  | { kind: 'mount'; path: string }
  | { kind: 'dir'; path: string }
  | { kind: 'netns'; path: string };

/**
 * A pid is killed only while its command line still contains its marker (a
 * path of the test's own): pids are reused. Mounts go before dirs, so a dir is
 * never removed through a live mount. A network namespace (`path`: its name
 * under /run/netns) goes once the processes in it are killed.
 */
const SCRIPT = `
const fs = require('node:fs');
const { spawnSync } = require('node:child_process');
const live = new Map();
let buf = '';
process.on('SIGHUP', () => {});
process.on('SIGINT', () => {});
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  buf += d;
  for (let i; (i = buf.indexOf('\\n')) >= 0; buf = buf.slice(i + 1)) {
    const { op, key, entry } = JSON.parse(buf.slice(0, i));
    if (op === 'add') live.set(key, entry);
    else live.delete(key);
  }
});
process.stdin.on('end', () => {
  const all = [...live.values()];
  for (const e of all.filter((e) => e.kind === 'pid')) {
    try {
      if (fs.readFileSync('/proc/' + e.pid + '/cmdline', 'utf8').includes(e.marker)) process.kill(e.pid, 'SIGKILL');
    } catch {}
  }
  for (const e of all.filter((e) => e.kind === 'mount')) spawnSync('umount', ['-l', e.path], { stdio: 'ignore' });
  for (const e of all.filter((e) => e.kind === 'netns')) spawnSync('ip', ['netns', 'del', e.path], { stdio: 'ignore' });
  for (const e of all.filter((e) => e.kind === 'dir')) {
    try {
      fs.rmSync(e.path, { recursive: true, force: true });
    } catch {}
  }
});
`;

let reaper: ChildProcess | undefined;

function send(op: 'add' | 'remove', entry: Entry): void {
  if (!reaper) {
    reaper = spawn(process.execPath, ['-e', SCRIPT], { stdio: ['pipe', 'ignore', 'ignore'], detached: true });
    reaper.unref();
    reaper.on('error', () => {});
    const pipe = reaper.stdin!;
    (pipe as unknown as { unref?: () => void }).unref?.();
    pipe.on('error', () => {});
  }
  const key = entry.kind === 'pid' ? `pid:${entry.pid}` : `${entry.kind}:${entry.path}`;
  reaper.stdin!.write(`${JSON.stringify({ op, key, entry })}\n`);
}

/** Left to the reaper if this process dies: add when started, remove once cleaned up. */
export const reap = {
  add: (entry: Entry) => send('add', entry),
  remove: (entry: Entry) => send('remove', entry),
};
