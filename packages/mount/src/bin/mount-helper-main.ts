import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readMountInfo } from '../fuse/mount.js';
import { DUNIX_VERSION } from '@dunix/proto';
import { mountUsage, parseMountArgs, wantsHelp, wantsVersion } from './mount-args.js';

const READY_TIMEOUT_MS = 30_000;

export async function main(argv: string[]): Promise<number> {
  if (wantsHelp(argv)) {
    process.stdout.write(mountUsage('mount.dunixfs'));
    return 0;
  }
  if (wantsVersion(argv)) {
    process.stdout.write(`mount.dunixfs ${DUNIX_VERSION}\n`);
    return 0;
  }
  let args;
  try {
    args = parseMountArgs(argv);
  } catch (err) {
    process.stderr.write(`mount.dunixfs: ${(err as Error).message}\n`);
    return 1;
  }
  const mountpoint = resolve(args.mountpoint);
  const client = join(dirname(fileURLToPath(import.meta.url)), 'dunixfs.cjs');
  if (args.foreground) {
    const child = spawn(process.execPath, [client, ...argv], { stdio: 'inherit' });
    return new Promise((r) => child.on('exit', (code) => r(code ?? 1)));
  }
  const logFile = args.logFile ?? join('/var/log/dunixfs', `${mountpoint.replace(/\//g, '_') || 'root'}.log`);
  mkdirSync(dirname(logFile), { recursive: true, mode: 0o700 });
  // The client writes its log itself (log=FILE: reopened on SIGHUP); stdio keeps what it prints on a crash.
  const fd = openSync(logFile, 'a', 0o600);
  const child = spawn(process.execPath, [client, ...argv, '-f', '-o', `log=${logFile}`], {
    detached: true,
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  let exited: number | null | undefined;
  child.on('exit', (code) => (exited = code));
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (readMountInfo().some((m) => m.mountpoint === mountpoint && m.fstype === 'fuse.dunixfs')) {
      child.unref();
      return 0;
    }
    if (exited !== undefined) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  if (exited === undefined) child.kill('SIGTERM');
  const tail = readFileSync(logFile, 'utf8').split('\n').slice(-6).join('\n');
  process.stderr.write(
    `mount.dunixfs: mounting ${args.spec} on ${mountpoint} failed; log ${logFile}:\n${tail}\n`,
  );
  return 1;
}
