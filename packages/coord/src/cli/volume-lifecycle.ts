import { FsError } from '@dunix/proto';
import type { Coordinator, MountRecord, VolumeDeletion } from '../coordinator.js';
import { renderTable } from './volume.js';

/**
 * `dunixctl volume mounts` and `volume delete`: handlers return data,
 * render* turns it into text (program.ts wires them).
 */
export interface VolumeMountsResult {
  volume: string;
  /** Sorted by id. */
  mounts: MountRecord[];
  /** When this was read (wall-clock ms), for the ages shown. */
  atMs: number;
}

export async function volumeMounts(coord: Coordinator, name: string): Promise<VolumeMountsResult> {
  const [config, mounts] = await Promise.all([coord.getVolume(name), coord.listMounts(name)]);
  if (!config && mounts.length === 0) throw new FsError('NOT_FOUND', `volume ${name} does not exist`);
  return { volume: name, mounts, atMs: Date.now() };
}

/** "3s", "5m", "2h", "4d": how long ago. */
function age(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172_800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}

export function renderVolumeMounts(r: VolumeMountsResult): string {
  if (r.mounts.length === 0) return `volume ${r.volume} is not mounted\n`;
  return renderTable(
    ['MOUNT', 'HOST', 'PID', 'MOUNT POINT', 'STARTED', 'UP', 'VERSION', 'SESSION TTL'],
    r.mounts.map((m) => [
      m.id,
      m.host,
      m.pid,
      m.mountPoint,
      new Date(m.startedAtMs).toISOString().replace(/\.\d+Z$/, 'Z'),
      age(r.atMs - m.startedAtMs),
      m.version,
      `${m.leaseTtlMs / 1000}s`,
    ]),
  );
}

export async function volumeDelete(
  coord: Coordinator,
  name: string,
  opts: { force?: boolean } = {},
): Promise<VolumeDeletion> {
  return coord.deleteVolume(name, { force: opts.force === true });
}

export function renderVolumeDelete(r: VolumeDeletion): string {
  const lines = [
    `volume ${r.volume} deleted${r.config ? '' : ' (it had not been created; only brick registrations)'}: ` +
      `${r.keysDeleted} control-plane keys removed${r.forced ? ' (forced)' : ''}`,
  ];
  if (r.mounts.length > 0)
    lines.push(
      `  ${r.mounts.length === 1 ? '1 mount now fails' : `${r.mounts.length} mounts now fail`} every call ` +
        `with EIO until unmounted: ${r.mounts.map((m) => `${m.host}:${m.mountPoint}`).join(', ')}`,
    );
  const running = r.bricks.filter((b) => b.alive).map((b) => b.id);
  if (running.length > 0) lines.push(`  running bricks stop serving it and exit: ${running.join(', ')}`);
  if (r.bricks.length > 0)
    lines.push(
      `  brick data directories are kept on disk: remove them, or start brickd with --wipe-deleted-volume ` +
        `to reuse one (${r.bricks.map((b) => b.id).join(', ')})`,
    );
  return `${lines.join('\n')}\n`;
}
