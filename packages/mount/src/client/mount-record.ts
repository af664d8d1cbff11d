import type { MountInfo, VolumeSnapshot } from '@dunix/coord';
import type { VolumeConfig } from '@dunix/proto';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';

/**
 * What a mount tells the control plane about itself (its mount record, the
 * seed of the client session of issue 10), and how it tells from the
 * snapshots it watches that its volume is gone.
 */

/** The client's version: the mount package's (dist/src/client/ -> package.json). */
export const CLIENT_VERSION: string = (() => {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
      version?: unknown;
    };
    return typeof pkg.version === 'string' && pkg.version.length > 0 ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
})();

/** A fresh mount (session) id: `m-` and 12 hex digits. */
/**
 * A fresh mount id. A client that reaches etcd with certificate
 * `client:NAME` names its mounts `NAME~m-...`: with etcd auth on, only that
 * user may write (or delete) records under that prefix (etcd-access.ts).
 */
export function newMountId(etcdUser?: string): string {
  const id = `m-${randomBytes(6).toString('hex')}`;
  const owner = etcdUser?.startsWith('client:') ? etcdUser.slice('client:'.length) : undefined;
  return owner ? `${owner}~${id}` : id;
}

/** The record of this process's mount of `mountPoint` (an absolute path). */
export function mountInfo(id: string, mountPoint: string, startedAtMs: number): MountInfo {
  return { id, host: hostname(), pid: process.pid, mountPoint, startedAtMs, version: CLIENT_VERSION };
}

/**
 * Whether the volume mounted (its config as first read) is gone in
 * `snapshot`: 'deleted' when it has no config any more, 're-created' when
 * a volume of the same name but another incarnation (createdAtMs) took its
 * place; undefined while it is the same volume.
 */
export function volumeGone(
  mounted: VolumeConfig,
  snapshot: VolumeSnapshot,
): 'deleted' | 're-created' | undefined {
  if (!snapshot.config) return 'deleted';
  if (snapshot.config.createdAtMs !== mounted.createdAtMs) return 're-created';
  return undefined;
}
