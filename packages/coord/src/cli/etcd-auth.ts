import { FsError } from '@dunix/proto';
import type { Coordinator } from '../coordinator.js';
import { EtcdCoordinator } from '../etcd-coordinator.js';
import { type EnableResult, type EtcdAccess, parseEtcdUser } from '../etcd-access.js';

/**
 * `dunixctl etcd auth enable [USER...]` and `dunixctl etcd user add USER...`:
 * etcd's roles and users for dunix (etcd-access.ts). USER is a certificate's
 * CN: brick:NAME, client:NAME or admin:NAME.
 */
function accessOf(coord: Coordinator): EtcdAccess {
  if (!(coord instanceof EtcdCoordinator))
    throw new FsError('INVALID_ARGUMENT', 'etcd users and roles need a real etcd');
  return coord.access;
}

export async function etcdAuthEnable(coord: Coordinator, users: string[]): Promise<EnableResult> {
  const parsed = users.map(parseEtcdUser);
  const volumes = (await coord.listVolumes()).map((v) => v.name);
  return accessOf(coord).enable(parsed, volumes);
}

export function renderEtcdAuthEnable(r: EnableResult): string {
  return (
    `etcd auth is on: roles ${r.roles.join(', ')}; users ${['root', ...r.users].join(', ')}; ` +
    `clients may register mounts in ${r.volumes.length ? r.volumes.join(', ') : 'no volume yet'}\n` +
    'from now on only admin:NAME certificates manage volumes and users (dunixctl cert issue --admin NAME)\n'
  );
}

export async function etcdUserAdd(coord: Coordinator, users: string[]): Promise<{ users: string[] }> {
  if (users.length === 0) throw new FsError('INVALID_ARGUMENT', 'name at least one user (brick:NAME ...)');
  const parsed = users.map(parseEtcdUser);
  const volumes = (await coord.listVolumes()).map((v) => v.name);
  await accessOf(coord).addUsers(parsed, volumes);
  return { users: parsed.map((u) => u.user) };
}

export function renderEtcdUserAdd(r: { users: string[] }): string {
  return `etcd users ${r.users.join(', ')} added with their roles\n`;
}

/** After `volume create`: lets clients register mounts in it when etcd auth is set up. */
export async function grantVolumeToClients(coord: Coordinator, volume: string): Promise<void> {
  if (!(coord instanceof EtcdCoordinator)) return;
  try {
    await coord.access.grantVolume(volume);
  } catch (err) {
    throw new Error(
      `volume ${volume} was created, but clients may not register mounts in it: ${(err as Error).message}; ` +
        'run dunixctl etcd auth enable again (with an admin certificate)',
    );
  }
}

/** After `volume delete`: takes back the clients' keys of the volume (best effort: the keys are gone). */
export async function revokeVolumeFromClients(coord: Coordinator, volume: string): Promise<void> {
  if (!(coord instanceof EtcdCoordinator)) return;
  await coord.access.revokeVolume(volume).catch(() => undefined);
}
