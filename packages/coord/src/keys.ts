/**
 * The etcd key layout of the control plane. Every key lives under
 * `/dunix/v1/`; a later incompatible layout gets a new version segment.
 *
 * ```
 * /dunix/v1/volumes/<name>/config             VolumeConfig JSON (written once)
 * /dunix/v1/volumes/<name>/members/<brickId>  BrickInfo JSON (persistent)
 * /dunix/v1/volumes/<name>/alive/<brickId>    bound to the brick's lease: its liveness
 * /dunix/v1/volumes/<name>/placement/<pg>     PgAssignment JSON {pg, bricks, epoch}
 * ```
 *
 * One key per PG so that one PG's epoch is bumped by a compare-and-swap on
 * that key alone. PG numbers are decimal without padding; readers parse them.
 */
export const KEY_PREFIX = '/dunix/v1/';

export const keys = {
  volumes: (): string => `${KEY_PREFIX}volumes/`,
  volume: (name: string): string => `${KEY_PREFIX}volumes/${name}/`,
  config: (name: string): string => `${KEY_PREFIX}volumes/${name}/config`,
  members: (name: string): string => `${KEY_PREFIX}volumes/${name}/members/`,
  member: (name: string, brickId: string): string => `${KEY_PREFIX}volumes/${name}/members/${brickId}`,
  aliveAll: (name: string): string => `${KEY_PREFIX}volumes/${name}/alive/`,
  alive: (name: string, brickId: string): string => `${KEY_PREFIX}volumes/${name}/alive/${brickId}`,
  placementAll: (name: string): string => `${KEY_PREFIX}volumes/${name}/placement/`,
  placement: (name: string, pg: number): string => `${KEY_PREFIX}volumes/${name}/placement/${pg}`,
} as const;

/** What a key under `volume(name)` is, or undefined for a key this version does not know. */
export type VolumeKey =
  | { kind: 'config' }
  | { kind: 'member'; brickId: string }
  | { kind: 'alive'; brickId: string }
  | { kind: 'placement'; pg: number };

export function parseVolumeKey(name: string, key: string): VolumeKey | undefined {
  const base = keys.volume(name);
  if (!key.startsWith(base)) return undefined;
  const rest = key.slice(base.length);
  if (rest === 'config') return { kind: 'config' };
  const slash = rest.indexOf('/');
  if (slash < 0) return undefined;
  const dir = rest.slice(0, slash);
  const leaf = rest.slice(slash + 1);
  if (leaf === '' || leaf.includes('/')) return undefined;
  if (dir === 'members') return { kind: 'member', brickId: leaf };
  if (dir === 'alive') return { kind: 'alive', brickId: leaf };
  if (dir === 'placement' && /^(0|[1-9][0-9]*)$/.test(leaf)) return { kind: 'placement', pg: Number(leaf) };
  return undefined;
}

/** Volume name of a `.../volumes/<name>/config` key, else undefined. */
export function volumeOfConfigKey(key: string): string | undefined {
  const m = /^\/dunix\/v1\/volumes\/([^/]+)\/config$/.exec(key);
  return m ? m[1] : undefined;
}
