/**
 * The etcd key layout of the control plane. Every key lives under
 * `/dunix/v1/`; a later incompatible layout gets a new version segment.
 *
 * ```
 * /dunix/v1/volumes/<name>/config                  VolumeConfig JSON (written once)
 * /dunix/v1/volumes/<name>/members/<brickId>       BrickInfo JSON (persistent)
 * /dunix/v1/volumes/<name>/alive/<brickId>         bound to the brick's lease: its liveness
 * /dunix/v1/volumes/<name>/admin/<brickId>         BrickAdmin JSON: the operator's state and weight
 * /dunix/v1/volumes/<name>/rebalance               RebalanceJob JSON: the current or last rebalance
 * /dunix/v1/volumes/<name>/scrub                   ScrubJob JSON: the current or last scrub, its totals
 * /dunix/v1/volumes/<name>/scrub/<pg>              ScrubPgResult JSON: what the PG's scrub found (last job)
 * /dunix/v1/volumes/<name>/placement/<pg>          PgAssignment JSON {pg, bricks, isr, epoch}
 * /dunix/v1/volumes/<name>/controller              {id} of the elected controller, bound to its lease
 * /dunix/v1/volumes/<name>/suspects/<reporter>/<brickId>  a report that the brick may be dead (short lease)
 * /dunix/v1/volumes/<name>/recovery/<pg>/<brickId> RecoveryReport JSON, bound to the reporter's lease
 * /dunix/v1/volumes/<name>/mounts/<mountId>        MountRecord JSON, bound to the mount's session lease
 * /dunix/v1/volumes/<name>/mounted                 written by earlier versions (a stamp); unused
 * /dunix/v1/volumes/<name>/usage/<brickId>         BrickUsage JSON (proto capacity.ts), bound to the brick's lease
 * ```
 *
 * One key per PG so that one PG's epoch is bumped by a compare-and-swap on
 * that key alone. PG numbers are decimal without padding; readers parse them.
 * A volume snapshot (watchVolume) is config, members, alive, admin,
 * rebalance, scrub and placement;
 * the controller, suspect, recovery, usage and per-PG scrub keys change
 * often (or are many) and are read on their own.
 *
 * A mount record is one client session (issue 10): a dunixfs mount writes
 * it as it mounts, bound to a lease it keeps alive (knob
 * mountLeaseTtlMs), and revokes the lease when it unmounts; a killed client's
 * record goes when the lease expires. `volume delete` refuses while any
 * exists; the delete's transaction holds only while no key under
 * `mounts/` changed after its read, so a mount registering between the
 * delete's read and its write makes the delete look again. Mount ids match
 * MOUNT_ID_RE (coordinator.ts).
 *
 * A suspect report is keyed by its reporter (a mount's id or a brick's id)
 * so that a client certificate NAME writes only `suspects/NAME~...`, the
 * reports of its own mounts, and cannot withdraw or rewrite another's.
 * Reports of earlier versions (`suspects/<brickId>`) are still read.
 */
export const KEY_PREFIX = '/dunix/v1/';

export const keys = {
  volumes: (): string => `${KEY_PREFIX}volumes/`,
  volume: (name: string): string => `${KEY_PREFIX}volumes/${name}/`,
  config: (name: string): string => `${KEY_PREFIX}volumes/${name}/config`,
  members: (name: string): string => `${KEY_PREFIX}volumes/${name}/members/`,
  member: (name: string, brickId: string): string => `${KEY_PREFIX}volumes/${name}/members/${brickId}`,
  aliveAll: (name: string): string => `${KEY_PREFIX}volumes/${name}/alive/`,
  admin: (name: string, brickId: string): string => `${KEY_PREFIX}volumes/${name}/admin/${brickId}`,
  rebalance: (name: string): string => `${KEY_PREFIX}volumes/${name}/rebalance`,
  scrub: (name: string): string => `${KEY_PREFIX}volumes/${name}/scrub`,
  scrubPgAll: (name: string): string => `${KEY_PREFIX}volumes/${name}/scrub/`,
  scrubPg: (name: string, pg: number): string => `${KEY_PREFIX}volumes/${name}/scrub/${pg}`,
  alive: (name: string, brickId: string): string => `${KEY_PREFIX}volumes/${name}/alive/${brickId}`,
  placementAll: (name: string): string => `${KEY_PREFIX}volumes/${name}/placement/`,
  placement: (name: string, pg: number): string => `${KEY_PREFIX}volumes/${name}/placement/${pg}`,
  controller: (name: string): string => `${KEY_PREFIX}volumes/${name}/controller`,
  suspects: (name: string): string => `${KEY_PREFIX}volumes/${name}/suspects/`,
  /** `reporter`: the reporting mount's id (MOUNT_ID_RE) or brick's id. */
  suspect: (name: string, reporter: string, brickId: string): string =>
    `${KEY_PREFIX}volumes/${name}/suspects/${reporter}/${brickId}`,
  /** The reports of mounts made with client certificate NAME (reporters `NAME~...`). */
  suspectsOf: (name: string, owner: string): string => `${KEY_PREFIX}volumes/${name}/suspects/${owner}~`,
  usageAll: (name: string): string => `${KEY_PREFIX}volumes/${name}/usage/`,
  usage: (name: string, brickId: string): string => `${KEY_PREFIX}volumes/${name}/usage/${brickId}`,
  mountStamp: (name: string): string => `${KEY_PREFIX}volumes/${name}/mounted`,
  mountsAll: (name: string): string => `${KEY_PREFIX}volumes/${name}/mounts/`,
  mount: (name: string, mountId: string): string => `${KEY_PREFIX}volumes/${name}/mounts/${mountId}`,
  /** The records of mounts made with client certificate NAME (ids `NAME~...`, MOUNT_ID_RE). */
  mountsOf: (name: string, owner: string): string => `${KEY_PREFIX}volumes/${name}/mounts/${owner}~`,
  recoveryAll: (name: string): string => `${KEY_PREFIX}volumes/${name}/recovery/`,
  recovery: (name: string, pg: number, brickId: string): string =>
    `${KEY_PREFIX}volumes/${name}/recovery/${pg}/${brickId}`,
} as const;

/** What a key under `volume(name)` is, or undefined for a key this version does not know. */
export type VolumeKey =
  | { kind: 'config' }
  | { kind: 'member'; brickId: string }
  | { kind: 'alive'; brickId: string }
  | { kind: 'admin'; brickId: string }
  | { kind: 'rebalance' }
  | { kind: 'scrub' }
  | { kind: 'scrubPg'; pg: number }
  | { kind: 'placement'; pg: number }
  | { kind: 'controller' }
  | { kind: 'suspect'; brickId: string; reporter?: string }
  | { kind: 'usage'; brickId: string }
  | { kind: 'mount'; mountId: string }
  | { kind: 'mountStamp' }
  | { kind: 'recovery'; pg: number; brickId: string };

/** Kinds that make up a VolumeSnapshot. */
export const SNAPSHOT_KEY_KINDS: ReadonlySet<VolumeKey['kind']> = new Set([
  'config',
  'member',
  'alive',
  'admin',
  'rebalance',
  'scrub',
  'placement',
]);

const PG_RE = /^(0|[1-9][0-9]*)$/;

export function parseVolumeKey(name: string, key: string): VolumeKey | undefined {
  const base = keys.volume(name);
  if (!key.startsWith(base)) return undefined;
  const rest = key.slice(base.length);
  if (rest === 'config') return { kind: 'config' };
  if (rest === 'controller') return { kind: 'controller' };
  if (rest === 'rebalance') return { kind: 'rebalance' };
  if (rest === 'scrub') return { kind: 'scrub' };
  if (rest === 'mounted') return { kind: 'mountStamp' };
  const parts = rest.split('/');
  if (parts.some((p) => p === '')) return undefined;
  const [dir, leaf, sub] = parts;
  if (parts.length === 3 && dir === 'recovery' && PG_RE.test(leaf!)) {
    return { kind: 'recovery', pg: Number(leaf), brickId: sub! };
  }
  if (parts.length === 3 && dir === 'suspects') return { kind: 'suspect', brickId: sub!, reporter: leaf! };
  if (parts.length !== 2) return undefined;
  if (dir === 'members') return { kind: 'member', brickId: leaf! };
  if (dir === 'alive') return { kind: 'alive', brickId: leaf! };
  if (dir === 'admin') return { kind: 'admin', brickId: leaf! };
  if (dir === 'suspects') return { kind: 'suspect', brickId: leaf! };
  if (dir === 'mounts') return { kind: 'mount', mountId: leaf! };
  if (dir === 'usage') return { kind: 'usage', brickId: leaf! };
  if (dir === 'placement' && PG_RE.test(leaf!)) return { kind: 'placement', pg: Number(leaf) };
  if (dir === 'scrub' && PG_RE.test(leaf!)) return { kind: 'scrubPg', pg: Number(leaf) };
  return undefined;
}

/** Volume name of a `.../volumes/<name>/config` key, else undefined. */
export function volumeOfConfigKey(key: string): string | undefined {
  const m = /^\/dunix\/v1\/volumes\/([^/]+)\/config$/.exec(key);
  return m ? m[1] : undefined;
}
