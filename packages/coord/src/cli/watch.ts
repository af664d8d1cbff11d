import { randomBytes } from 'node:crypto';
import { readFileSync, realpathSync, statSync } from 'node:fs';
import {
  FsError,
  InvalidationPoller,
  pgOfIno,
  Router,
  type Logger,
  type PushedInval,
  type TransportSecurity,
} from '@dunix/proto';
import type { Coordinator } from '../coordinator.js';

/**
 * `dunixctl watch PATH`: streams the changes of one directory (names made,
 * removed, renamed; its attributes) or one file (attributes, data) on a
 * dunixfs mount, one line per change (or a JSON object with --json), until
 * Ctrl-C. The watcher is a cache session of its own (`w-` + 12 hex digits):
 * it registers the inode at the inode's primary like a mount's read does and
 * long-polls every brick for the invalidations, so it sees every change by
 * every mount, with no polling of the tree. A `reset` line means
 * registrations were lost (failover, a restart, an acknowledgement too
 * late): changes may have been missed; the watcher registers again.
 */

export interface WatchTarget {
  path: string;
  volume: string;
  ino: string;
  type: 'directory' | 'file' | 'other';
}

/** The dunixfs mount holding `path` (longest mount point): its volume, from the source ETCD/VOLUME. */
export function volumeOfPath(path: string, mountinfo: string): string | undefined {
  const unescape = (s: string) =>
    s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  let best: { at: string; source: string } | undefined;
  for (const line of mountinfo.split('\n')) {
    const [pre, post] = line.split(' - ');
    if (!pre || !post) continue;
    const at = unescape(pre.split(' ')[4] ?? '');
    const [fstype, source] = post.split(' ');
    if (fstype !== 'fuse.dunixfs' || !source) continue;
    const inside = path === at || path.startsWith(at.endsWith('/') ? at : `${at}/`);
    if (inside && (!best || at.length > best.at.length)) best = { at, source: unescape(source) };
  }
  if (!best) return undefined;
  const slash = best.source.lastIndexOf('/');
  return slash >= 0 ? best.source.slice(slash + 1) : undefined;
}

/** What to watch: PATH's inode on its dunixfs mount (or on `volume` when given). */
export function watchTarget(path: string, volume?: string): WatchTarget {
  let real: string;
  try {
    real = realpathSync(path);
  } catch (err) {
    throw new FsError('NOT_FOUND', `${path}: ${(err as Error).message}`);
  }
  const st = statSync(real, { bigint: true });
  const name = volume ?? volumeOfPath(real, readFileSync('/proc/self/mountinfo', 'utf8'));
  if (!name)
    throw new FsError('INVALID_ARGUMENT', `${path} is not on a dunixfs mount (name the volume: --volume)`);
  return {
    path: real,
    volume: name,
    ino: st.ino.toString(),
    type: st.isDirectory() ? 'directory' : st.isFile() ? 'file' : 'other',
  };
}

export function renderWatchTarget(t: WatchTarget): string {
  return `watching ${t.path} (${t.type}, inode ${t.ino}, volume ${t.volume}); Ctrl-C ends\n`;
}

export interface WatchEvent {
  time: string;
  /** attrs: its attributes; data: its content (published); entry: a name made, renamed or replaced;
   * delete: a name removed; reset: registrations lost, changes may have been missed;
   * watching: the first line, once registered (every later change is reported). */
  event: 'attrs' | 'data' | 'entry' | 'delete' | 'reset' | 'watching';
  path: string;
  name?: string;
}

/** The change an invalidation reports about the watched inode, if it concerns it (pure). */
export function eventOf(t: WatchTarget, i: PushedInval, nowMs: number): WatchEvent | undefined {
  const ino = BigInt(t.ino);
  const time = new Date(nowMs).toISOString();
  const under = (name: Buffer) => ({ path: `${t.path}/${name.toString()}`, name: name.toString() });
  switch (i.kind) {
    case 0:
      return i.ino === ino ? { time, event: i.data ? 'data' : 'attrs', path: t.path } : undefined;
    case 1:
      return i.parent === ino ? { time, event: 'entry', ...under(i.name) } : undefined;
    case 2:
      return i.parent === ino ? { time, event: 'delete', ...under(i.name) } : undefined;
    case 3:
      return i.ino === ino ? { time, event: 'reset', path: t.path } : undefined;
  }
  return undefined;
}

export function formatEvent(e: WatchEvent, json: boolean): string {
  return json ? `${JSON.stringify(e)}\n` : `${e.time} ${e.event.padEnd(6)} ${e.path}\n`;
}

/** The watcher's registration lasts this long; renewed at half of it. */
const WATCH_TTL_MS = 120_000;

export interface WatchOptions {
  json: boolean;
  write(text: string): void;
  onInterrupt(stop: () => void): () => void;
  security: TransportSecurity;
  log: Logger;
}

/** Streams events until interrupted; resolves with the exit code. */
export async function watchChanges(coord: Coordinator, t: WatchTarget, o: WatchOptions): Promise<number> {
  const config = await coord.getVolume(t.volume);
  if (!config) throw new FsError('NOT_FOUND', `volume ${t.volume} does not exist`);
  const router = new Router({ log: o.log, security: o.security });
  const unwatch = await coord.watchVolume(t.volume, (s) => {
    if (s.config) router.update({ config: s.config, placement: s.placement, bricks: s.bricks });
  });
  const session = `w-${randomBytes(6).toString('hex')}`;
  router.setCacheSession(session, WATCH_TTL_MS);
  const ino = BigInt(t.ino);
  const emit = (e: WatchEvent | undefined) => {
    if (e) o.write(formatEvent(e, o.json));
  };
  let stopped = false;
  const register = async () => {
    if (stopped) return;
    try {
      await router.call(pgOfIno(ino), 'GetAttr', { ino: t.ino }, { deadlineMs: 10_000 });
    } catch (err) {
      o.log.warn('could not register the watched inode', { ino: t.ino, err: String(err) });
    }
  };
  const poller = new InvalidationPoller(
    router,
    session,
    {
      apply: async (invals) => {
        for (const i of invals) {
          const e = eventOf(t, i, Date.now());
          emit(e);
          if (e?.event === 'reset') await register();
        }
      },
      dropPgs: async (pgs) => {
        if (!pgs.has(pgOfIno(ino))) return;
        emit({ time: new Date().toISOString(), event: 'reset', path: t.path });
        await register();
      },
    },
    o.log,
  );
  poller.start();
  await register();
  o.write(
    o.json
      ? formatEvent({ time: new Date().toISOString(), event: 'watching', path: t.path }, true)
      : renderWatchTarget(t),
  );
  const renew = setInterval(() => void register(), WATCH_TTL_MS / 2);
  await new Promise<void>((resolve) => {
    const off = o.onInterrupt(() => {
      off();
      resolve();
    });
  });
  stopped = true;
  clearInterval(renew);
  poller.stop();
  router.close();
  await unwatch();
  return 0;
}
