import { resolve } from 'node:path';
import { createLogger, DUNIX_VERSION } from '@dunix/proto';
import { Command, InvalidArgumentError } from 'commander';
import { FuseMount } from '../fuse/mount.js';
import { type SessionOptions, sessionDefaults } from '../fuse/options.js';
import { PassthroughFs } from '../passthrough/passthrough-fs.js';

function ms(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0)
    throw new InvalidArgumentError('expected a whole number of milliseconds');
  return n;
}

/** Runs until the mount ends; resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  const log = createLogger('passthrough');
  const program = new Command('dunixfs-passthrough')
    .description(
      'Mirror a local directory through the dunixfs FUSE layer (debugging aid and benchmark baseline).',
    )
    .version(`dunixfs-passthrough ${DUNIX_VERSION}`, '-V, --version', 'print the version and exit')
    .argument('<source>', 'directory to mirror')
    .argument('<mountpoint>', 'where to mount it')
    .option('--attr-ttl-ms <ms>', 'kernel attribute cache lifetime', ms, sessionDefaults.attrTtlMs)
    .option('--entry-ttl-ms <ms>', 'kernel name lookup cache lifetime', ms, sessionDefaults.entryTtlMs)
    .option('--direct-io', 'bypass the kernel page cache', false)
    .option('--writeback-cache', 'let the kernel buffer writes (FUSE_WRITEBACK_CACHE)', false)
    .option('--no-default-permissions', 'do not let the kernel check permissions')
    .option('--no-allow-other', 'only the mounting user may access the mount')
    .option('-o, --options <list>', 'extra mount options, comma separated (e.g. ro,noatime)')
    .exitOverride();
  try {
    program.parse(argv, { from: 'user' });
  } catch (err) {
    return (err as { exitCode?: number }).exitCode ?? 2;
  }
  const [source, mountpoint] = program.args.map((a) => resolve(a));
  const o = program.opts<{
    attrTtlMs: number;
    entryTtlMs: number;
    directIo: boolean;
    writebackCache: boolean;
    defaultPermissions: boolean;
    allowOther: boolean;
    options?: string;
  }>();
  const session: Partial<SessionOptions> = {
    attrTtlMs: o.attrTtlMs,
    entryTtlMs: o.entryTtlMs,
    writebackCache: o.writebackCache,
    defaultPermissions: o.defaultPermissions,
  };
  let fs: PassthroughFs;
  try {
    fs = new PassthroughFs(source!, { directIo: o.directIo, writebackCache: o.writebackCache });
  } catch (err) {
    log.error('cannot open source directory', { source, err: (err as Error).message });
    return 1;
  }
  let mount: FuseMount;
  try {
    mount = await FuseMount.start(fs, {
      mountpoint: mountpoint!,
      source: source!,
      subtype: 'dunixfs-passthrough',
      allowOther: o.allowOther,
      ...(o.options ? { extra: o.options } : {}),
      session,
    });
  } catch (err) {
    log.error('mount failed', { err: (err as Error).message });
    fs.destroy();
    return 1;
  }
  await mount.serveUntilUnmounted();
  return 0;
}
