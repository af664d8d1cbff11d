import {
  type BrickUsage,
  parseBrickUsage,
  computePlacement,
  createLogger,
  defaultMinInsync,
  FsError,
  initHashing,
  type Logger,
  type PgAssignment,
  validateVolumeConfig,
  VOLUME_NAME_RE,
  volumeDefaults,
  type VolumeConfig,
  PG_COUNT_MAX,
} from '@dunix/proto';
import { type Clock, realClock } from './clock.js';
import { type Campaign, type ElectionState, KvCampaign, parseControllerRecord } from './election.js';
import { HeldLease, type LeaseHealth } from './held-lease.js';
import {
  type CoordinatorKnobs,
  validateCampaignTtl,
  validateCoordinatorKnobs,
  validateLeaseTtl,
} from './knobs.js';
import { keys, parseVolumeKey, SNAPSHOT_KEY_KINDS, volumeOfConfigKey } from './keys.js';
import type { KvBackend, KvCompare, KvEntry } from './kv.js';

export { type Clock, realClock } from './clock.js';

/** A brick's persistent registration in a volume. */
export interface BrickInfo {
  id: string;
  /** host:port its gRPC server listens on, e.g. "127.0.0.1:7100". */
  address: string;
  /** host:port of its frame transport (the data path clients prefer), when it offers one. */
  dataAddress?: string;
  /** Failure domain: replicas of a PG go to distinct hosts while possible. */
  host: string;
  /** Relative capacity; 0 keeps the brick registered but gives it no PGs. */
  weight: number;
  dataDir: string;
}

export interface BrickStatus extends BrickInfo {
  /** The brick's lease is held: its alive key exists. */
  alive: boolean;
  /** The operator's record (dunixctl brick add|drain|set-weight); absent: never set. */
  admin?: BrickAdmin;
}

/**
 * What the operator decided about a member brick. A member without one holds
 * PGs only if the volume was created with it; `brick add` writes one.
 */
export interface BrickAdmin {
  /** 'in': holds PG replicas by weight; 'draining': every replica moves off, then it may be removed. */
  state: 'in' | 'draining';
  /** Relative capacity for placement; overrides the weight the brick registered with. */
  weight: number;
  updatedAtMs: number;
}

/** A rebalance: moves PG replicas toward the target placement, a bounded batch at a time. */
export interface RebalanceJob {
  /** Unique per start (e.g. the start time in base 36). */
  id: string;
  state: 'running' | 'paused' | 'stopped' | 'done';
  /** Backfill bytes per second per brick while it runs (0: no limit). */
  maxMiBPerS: number;
  /** PGs being moved at once. */
  maxConcurrent: number;
  startedAtMs: number;
  /** Last change by the operator or the controller. */
  updatedAtMs: number;
  finishedAtMs?: number;
  /** PGs whose replica set differed from the target when the job started (or grew since). */
  pgsTotal: number;
  /** PGs that reached their target since the start. */
  pgsDone: number;
  /** Backfill bytes copied for moves of this job. */
  bytesMoved: number;
}

/**
 * A scrub of the volume: every PG's primary compares its copy with its
 * in-sync replicas' (keys, and every block's chunks on every copy) and
 * repairs what it can. Started by the operator (`dunixctl volume scrub
 * start`) or by the controller every `scrubIntervalMs`; each PG's primary
 * records its PG's result (`reportScrubPg`), which also adds it up here.
 */
export interface ScrubJob {
  /** Unique per start (e.g. the start time in base 36). */
  id: string;
  state: 'running' | 'stopped' | 'done';
  /** Who started it. */
  trigger: 'operator' | 'schedule';
  /** Scrub reads per brick, MiB/s; absent: each brick's own limit (knob scrubBytesPerS); 0: no limit. */
  maxMiBPerS?: number;
  startedAtMs: number;
  /** Last change (start, stop, a PG's result). */
  updatedAtMs: number;
  /** When it ended (done or stopped). */
  finishedAtMs?: number;
  /** When the last scrub that reached every PG finished (this one once done; else carried over). */
  lastCompletedAtMs?: number;
  /** PGs of the volume when it started, and those whose result is in. */
  pgsTotal: number;
  pgsDone: number;
  /** Bytes read by the PGs' primaries (keys, values, block files; each replica reads as much again). */
  bytesVerified: number;
  /** Problems (one per wrong copy) found, repaired, and unrecoverable (no copy verifies). */
  found: number;
  repaired: number;
  unrecoverable: number;
  /** Block files no record named, removed by the bricks' sweeps of their copies for this job. */
  orphanBlocksRemoved?: number;
}

/** One wrong copy a scrub found. */
export interface ScrubProblemRecord {
  kind: 'block-corrupt' | 'block-missing' | 'keys-differ';
  /** The brick whose copy was wrong. */
  brick: string;
  /** Blocks: inode and block index (decimal). */
  ino?: string;
  index?: string;
  /** keys-differ: how many keys. */
  keys?: number;
  detail: string;
  /** unrepaired: a repair failed (the next scrub tries again); unrecoverable: no copy verifies, none changed. */
  state: 'repaired' | 'unrecoverable' | 'unrepaired';
}

/** What the scrub of one PG found (its primary reports it once per job). */
export interface ScrubPgResult {
  jobId: string;
  pg: number;
  /** The primary that scrubbed it, at which epoch. */
  brick: string;
  epoch: number;
  atMs: number;
  keys: number;
  blocks: number;
  bytes: number;
  /** In-sync replicas compared with the primary's copy, and those that could not be. */
  replicas: string[];
  skipped: string[];
  /** The wrong copies found (the first SCRUB_PROBLEMS_LISTED_MAX of them). */
  problems: ScrubProblemRecord[];
  /** Problems found, repaired, unrecoverable: all of them, listed or not. */
  found: number;
  repaired: number;
  unrecoverable: number;
}

/** Problems listed per PG result at most. */
export const SCRUB_PROBLEMS_LISTED_MAX = 64;

/** Everything a client or brick needs about one volume, read at one revision. */
export interface VolumeSnapshot {
  /** null until the volume is created (bricks register before that). */
  config: VolumeConfig | null;
  /** Sorted by pg; exactly config.pgCount entries when config is set, else empty. */
  placement: PgAssignment[];
  /** Member bricks sorted by id. */
  bricks: BrickStatus[];
  /** The current or last rebalance, or null if none ever ran. */
  rebalance: RebalanceJob | null;
  /** The current or last scrub; absent if none ever ran. */
  scrub?: ScrubJob;
}

export type Unsubscribe = () => Promise<void>;

/** One compare-and-swap of Coordinator.updatePlacements. */
export interface PlacementUpdate {
  pg: number;
  /** The epoch the change was decided at; the PG gets expectedEpoch + 1. */
  expectedEpoch: number;
  bricks: string[];
  /** Default: every brick. */
  isr?: string[];
}

export type PlacementUpdateResult =
  | { pg: number; applied: true; assignment: PgAssignment }
  /** The PG was at `epoch`, not the expected one: nothing written for it. */
  | { pg: number; applied: false; epoch: number };

/** A report that a brick may be dead (Coordinator.reportSuspect). */
export interface Suspect {
  brickId: string;
  /** Store revision of the report: a repeated report has a higher one. */
  revision: number;
}

/**
 * How far a replica of a PG is from rejoining the in-sync set, as reported
 * by the brick doing the work.
 */
export interface RecoveryProgress {
  pg: number;
  /** The replica being caught up. */
  brick: string;
  /** 'log': replaying the primary's log; 'backfill': copying the PG's keys and block files. */
  mode: 'log' | 'backfill';
  opsLeft: number;
  bytesLeft: number;
  /** Recent progress: ops per second in 'log' mode, bytes per second in 'backfill' mode. */
  ratePerS: number;
  /** Reporter's clock when this catch-up started. */
  startedAtMs: number;
}

export interface RecoveryReport extends RecoveryProgress {
  /** The brick that reported it (its lease carries the report). */
  reporter: string;
}

/**
 * A mounted client, as it registers itself (registerMount). This is the
 * seed of the client session of issue 10: `id` is the session id bricks
 * will tag locks and open-file pins with, and the lease the record is bound
 * to is the session's lease (when it ends, the session has ended).
 */
export interface MountInfo {
  /** Unique per mount process (MOUNT_ID_RE). */
  id: string;
  /** The client machine (hostname). */
  host: string;
  pid: number;
  /** Absolute path of the mount point on `host`. */
  mountPoint: string;
  /** Wall-clock ms when the client started. */
  startedAtMs: number;
  /** The client's version (the mount package's). */
  version: string;
}

/** A mount record as stored under `mounts/<id>` (bound to the mount's lease). */
export interface MountRecord extends MountInfo {
  /** TTL of the lease the record is bound to: a killed client's record is gone within it. */
  leaseTtlMs: number;
  /** The volume incarnation mounted (its config's createdAtMs): a re-created volume is another one. */
  volumeCreatedAtMs: number;
}

/** A registered mount (registerMount): its lease is kept alive until close(). */
export interface MountSession {
  readonly id: string;
  readonly leaseTtlMs: number;
  health(): LeaseHealth;
  /** Revokes the lease: the record goes at once. Idempotent. */
  close(): Promise<void>;
}

/** What deleteVolume removed. */
export interface VolumeDeletion {
  volume: string;
  /** null: the volume was never created (only bricks had registered for it). */
  config: VolumeConfig | null;
  forced: boolean;
  /** Keys under the volume's prefix when it was deleted (all of them went in one transaction). */
  keysDeleted: number;
  /** Mount records present (only with force: the mounts then fail every call with EIO). */
  mounts: MountRecord[];
  /** Member bricks and whether their brickd was running (only with force when running). */
  bricks: { id: string; alive: boolean }[];
}

/**
 * The control plane as seen by bricks, clients and the admin CLI. Two
 * implementations: EtcdCoordinator (real etcd) and MemoryCoordinator (tests
 * and simulation); test/compliance.ts runs the same suite on both.
 *
 * Errors are FsError codes: INVALID_ARGUMENT (bad config, brick info, pg),
 * NOT_FOUND (no such volume), ALREADY_EXISTS (volume exists), UNAVAILABLE
 * (fewer live bricks than replicas; store unreachable), STALE_EPOCH (a
 * compare-and-swap lost).
 */
export interface Coordinator {
  /** Connects (fails within dialTimeoutMs if the store does not answer). Idempotent. */
  start(): Promise<void>;
  /** Cancels watches and keepalives and revokes this session's leases. Idempotent; final. */
  stop(): Promise<void>;
  getVolume(name: string): Promise<VolumeConfig | undefined>;
  /** Sorted by name. */
  listVolumes(): Promise<VolumeConfig[]>;
  /**
   * Validates the config, places every PG over the volume's live member
   * bricks (weighted rendezvous hashing), and writes the config and every
   * placement key in one transaction that fails with ALREADY_EXISTS if the
   * config exists. Returns the placement.
   */
  createVolume(config: VolumeConfig): Promise<PgAssignment[]>;
  /**
   * Writes the persistent member record and the alive key bound to a lease
   * that this coordinator keeps alive until stop(). If the lease is lost
   * (expired during an outage, revoked, store restarted empty) a new one is
   * granted and both keys are written again.
   */
  registerBrick(volume: string, info: BrickInfo, leaseTtlMs?: number): Promise<void>;
  /** Member bricks sorted by id, with liveness. */
  listBricks(volume: string): Promise<BrickStatus[]>;
  /** Sorted by pg; NOT_FOUND if the volume does not exist. */
  getPlacement(volume: string): Promise<PgAssignment[]>;
  /**
   * Calls onChange with a full snapshot once before resolving, then after any
   * change to the volume's config, placement, members or liveness (bursts
   * coalesced; identical snapshots not repeated; never a partial map).
   */
  watchVolume(volume: string, onChange: (snapshot: VolumeSnapshot) => void): Promise<Unsubscribe>;
  /**
   * Compare-and-swap of one PG's replicas and in-sync set: succeeds only if
   * the PG is at `expectedEpoch`, and writes `bricks` and `isr` (default:
   * every brick) with epoch expectedEpoch + 1. STALE_EPOCH otherwise. The
   * in-sync set must hold bricks[0] (the primary) and only listed bricks.
   */
  updatePlacement(
    volume: string,
    pg: number,
    expectedEpoch: number,
    bricks: string[],
    isr?: string[],
  ): Promise<PgAssignment>;
  /**
   * Many updatePlacement compare-and-swaps in few transactions (up to
   * knobs.placementBatchMax PGs each): each update is applied exactly when
   * its PG is at its expected epoch; the others come back with the epoch
   * found, unwritten. Results in the order of `updates`. INVALID_ARGUMENT
   * for the whole call (nothing written) if any update is malformed or a
   * PG appears twice.
   */
  updatePlacements(volume: string, updates: PlacementUpdate[]): Promise<PlacementUpdateResult[]>;
  /** The volume's snapshot, read now (what watchVolume delivers). */
  getSnapshot(volume: string): Promise<VolumeSnapshot>;

  /**
   * Lease health of a brick registered through this coordinator (undefined
   * for any other), for fencing: see LeaseHealth and leaseFenced(). A
   * primary must stop acknowledging while leaseFenced(health, clock.now(),
   * margin) holds. Synchronous and cheap: call it per acknowledgement.
   */
  leaseHealth(volume: string, brickId: string): LeaseHealth | undefined;

  /**
   * Joins the election of the volume's controller as `candidateId` (a brick
   * id): exactly one candidate leads at a time, through a key bound to an
   * election lease this coordinator keeps alive (leaseTtlMs, default
   * knobs.leaseTtlMs). When the leader's lease ends (crash, revoke,
   * resign), another candidate wins within moments of the key going.
   * `onChange` hears every change of leadership or leader; the first
   * attempt is settled before campaign() resolves. stop() resigns.
   */
  campaign(
    volume: string,
    candidateId: string,
    onChange: (state: ElectionState) => void,
    leaseTtlMs?: number,
  ): Promise<Campaign>;
  /** Id of the candidate holding the controller key, or undefined. */
  getController(volume: string): Promise<string | undefined>;

  /**
   * Reports that a brick may be dead (a connection to it was refused). The
   * report lives for knobs.suspectTtlMs; the leading controller probes the
   * brick and, if its process is gone, expires its lease at once. A session
   * sends the same report at most once per half that TTL. `reporter`: the
   * reporting mount's id (a client certificate may write only reports of
   * its own mounts, keys.ts) or brick's id.
   */
  reportSuspect(volume: string, brickId: string, reporter: string): Promise<void>;
  /** Like watchVolume, for the volume's current suspect reports (sorted by brick id). */
  watchSuspects(volume: string, onChange: (suspects: Suspect[]) => void): Promise<Unsubscribe>;
  /**
   * Declares a brick dead now: revokes the lease of its alive key (with
   * every key bound to it) and, if the brick leads the controller election,
   * that of the controller key. With `address`, only when the alive record
   * still names that address (a brick restarted elsewhere is left alone).
   * True if a lease was revoked.
   */
  expireBrick(volume: string, brickId: string, address?: string): Promise<boolean>;

  /**
   * Publishes recovery progress of (pg, brick) under the lease of
   * `reporter`, a brick registered through this coordinator, so the report
   * disappears with the reporter. Repeated calls replace it.
   */
  reportRecovery(volume: string, reporter: string, progress: RecoveryProgress): Promise<void>;
  /** Removes the recovery report of (pg, brick), if any (the replica rejoined, or recovery stopped). */
  clearRecovery(volume: string, pg: number, brick: string): Promise<void>;
  /** Current recovery reports, sorted by pg then brick. */
  listRecovery(volume: string): Promise<RecoveryReport[]>;
  /** Sets (or with undefined clears) a member's operator record; NOT_FOUND for a non-member. */
  setBrickAdmin(volume: string, brickId: string, admin: BrickAdmin | undefined): Promise<void>;
  /**
   * Forgets a member: its registration and operator record. Refused (BUSY)
   * while any PG still lists it or its lease is alive; NOT_FOUND for a non-member.
   */
  removeBrick(volume: string, brickId: string): Promise<void>;
  /**
   * Read-modify-write of the rebalance record (compare-and-swap, retried on a
   * lost race): `change` gets the current job (null if none) and returns the
   * next one, or undefined to leave it. Resolves to what is stored after.
   */
  updateRebalance(
    volume: string,
    change: (job: RebalanceJob | null) => RebalanceJob | undefined,
  ): Promise<RebalanceJob | null>;
  /**
   * Publishes the space of a brick registered through this coordinator,
   * bound to its lease (a dead brick's record goes with the lease).
   */
  publishUsage(volume: string, brickId: string, usage: BrickUsage): Promise<void>;
  /** Every brick's last published usage (bricks without a live record are absent). */
  listUsage(volume: string): Promise<Map<string, BrickUsage>>;
  /** Changes the options of a volume config that may change (minInsync, downOutIntervalMs, scrubIntervalMs, fullThresholdPct). */
  updateVolumeConfig(
    volume: string,
    patch: Partial<Pick<VolumeConfig, ChangeableVolumeOption>>,
  ): Promise<VolumeConfig>;
  /**
   * Read-modify-write of the scrub record, as updateRebalance. A new job
   * (another id) makes the earlier per-PG results stale: they are ignored.
   */
  updateScrub(
    volume: string,
    change: (job: ScrubJob | null) => ScrubJob | undefined,
  ): Promise<ScrubJob | null>;
  /**
   * Records a PG's result for the running scrub `result.jobId` and adds it
   * to the job's totals, in one transaction; the last PG marks the job
   * done. 'recorded'; 'duplicate' (this PG's result for the job is in
   * already: nothing changes); 'stale' (no such running job).
   */
  reportScrubPg(volume: string, result: ScrubPgResult): Promise<'recorded' | 'duplicate' | 'stale'>;
  /** The stored result of a PG (of whatever job last reported it). */
  getScrubResult(volume: string, pg: number): Promise<ScrubPgResult | undefined>;
  /** Stored results of job `jobId`, sorted by PG. */
  listScrubResults(volume: string, jobId: string): Promise<ScrubPgResult[]>;

  /**
   * Writes the mount record of a client mounting the volume, bound
   * to a lease this coordinator keeps alive (leaseTtlMs, default
   * knobs.mountLeaseTtlMs) until the session's close() or stop(). The write
   * is a compare-and-swap on the volume's config, so no record lands in a
   * volume being deleted; NOT_FOUND if the volume does not exist (or is
   * another incarnation than the one first seen). A lost lease is replaced
   * and the record written again while the volume exists.
   */
  registerMount(volume: string, info: MountInfo, leaseTtlMs?: number): Promise<MountSession>;
  /** The volume's mount records, sorted by id. */
  listMounts(volume: string): Promise<MountRecord[]>;
  /**
   * Deletes every key of the volume (config, placement, members, liveness,
   * operator records, jobs, reports, mount records) in one transaction.
   * Refused (BUSY) while a mount record exists or a member brick is alive
   * (its brickd runs), unless `force`; NOT_FOUND when nothing is stored
   * under the name. Running bricks and mounts find the volume gone in the
   * snapshot they watch and stop serving it.
   */
  deleteVolume(volume: string, opts?: { force?: boolean }): Promise<VolumeDeletion>;
}

/** Options of a volume's config that may change after creation. */
export type ChangeableVolumeOption =
  'minInsync' | 'downOutIntervalMs' | 'scrubIntervalMs' | 'fullThresholdPct';

const CHANGEABLE_OPTIONS: ReadonlySet<ChangeableVolumeOption> = new Set([
  'minInsync',
  'downOutIntervalMs',
  'scrubIntervalMs',
  'fullThresholdPct',
]);

export const BRICK_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const ADDRESS_RE = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):([0-9]{1,5})$/;

/** A full VolumeConfig from a name and optional overrides (defaults from proto). */
export function volumeConfig(
  name: string,
  overrides: Partial<Omit<VolumeConfig, 'name'>> = {},
): VolumeConfig {
  const replicas = overrides.replicas ?? volumeDefaults.replicas;
  return {
    name,
    ...volumeDefaults,
    minInsync: defaultMinInsync(replicas),
    createdAtMs: Date.now(),
    ...overrides,
  };
}

export function validateVolumeName(name: string): string {
  if (typeof name !== 'string' || !VOLUME_NAME_RE.test(name)) {
    throw new FsError('INVALID_ARGUMENT', `volume name ${JSON.stringify(name)} must match ${VOLUME_NAME_RE}`);
  }
  return name;
}

export function validateBrickInfo(b: BrickInfo): BrickInfo {
  const problems: string[] = [];
  if (typeof b !== 'object' || b === null)
    throw new FsError('INVALID_ARGUMENT', 'brick info is not an object');
  if (typeof b.id !== 'string' || !BRICK_ID_RE.test(b.id))
    problems.push(`id ${JSON.stringify(b.id)} must match ${BRICK_ID_RE}`);
  const m = typeof b.address === 'string' ? ADDRESS_RE.exec(b.address) : null;
  const port = m ? Number(m[2]) : 0;
  if (!m || port < 1 || port > 65535) problems.push(`address ${JSON.stringify(b.address)} must be host:port`);
  if (b.dataAddress !== undefined) {
    const d = typeof b.dataAddress === 'string' ? ADDRESS_RE.exec(b.dataAddress) : null;
    if (!d || Number(d[2]) < 1 || Number(d[2]) > 65535) {
      problems.push(`dataAddress ${JSON.stringify(b.dataAddress)} must be host:port`);
    }
  }
  if (typeof b.host !== 'string' || b.host.length === 0 || b.host.length > 255)
    problems.push('host must be 1..255 characters');
  if (typeof b.weight !== 'number' || !Number.isFinite(b.weight) || b.weight < 0 || b.weight > 1e6)
    problems.push(`weight ${b.weight} must be a number in 0..1e6`);
  if (typeof b.dataDir !== 'string' || b.dataDir.length === 0)
    problems.push('dataDir must be a non-empty path');
  if (problems.length) throw new FsError('INVALID_ARGUMENT', `brick info: ${problems.join('; ')}`);
  return b;
}

/** A stored config; ones written before min_insync existed get its default. */
function readVolumeConfig(c: VolumeConfig): VolumeConfig {
  return validateVolumeConfig({ ...c, minInsync: c.minInsync ?? defaultMinInsync(c.replicas) });
}

function checkedVolumeConfig(c: VolumeConfig): VolumeConfig {
  try {
    validateVolumeConfig(c);
  } catch (e) {
    throw new FsError('INVALID_ARGUMENT', (e as Error).message);
  }
  return c;
}

/** Records read back from the store are checked: a malformed one is a bug, reported with its key. */
function parseRecord<T>(entry: KvEntry, check: (v: T) => T): T {
  try {
    return check(JSON.parse(entry.value) as T);
  } catch (e) {
    throw new Error(`malformed control-plane record at ${entry.key}: ${(e as Error).message}`);
  }
}

function checkAssignment(a: PgAssignment): PgAssignment {
  if (
    !Number.isInteger(a.pg) ||
    a.pg < 0 ||
    !Array.isArray(a.bricks) ||
    !a.bricks.every((b) => typeof b === 'string') ||
    !Number.isInteger(a.epoch) ||
    a.epoch < 1 ||
    (a.isr !== undefined &&
      (!Array.isArray(a.isr) || !a.isr.every((b) => a.bricks.includes(b)) || !a.isr.includes(a.bricks[0]!)))
  ) {
    throw new Error('not a PgAssignment');
  }
  // Records written before the in-sync set existed: every replica is in sync.
  return { pg: a.pg, bricks: a.bricks, isr: a.isr ?? [...a.bricks], epoch: a.epoch };
}

function pickBrickInfo(b: BrickInfo): BrickInfo {
  return {
    id: b.id,
    address: b.address,
    ...(b.dataAddress !== undefined ? { dataAddress: b.dataAddress } : {}),
    host: b.host,
    weight: b.weight,
    dataDir: b.dataDir,
  };
}

function checkRecovery(p: RecoveryProgress): RecoveryProgress {
  const problems: string[] = [];
  if (typeof p !== 'object' || p === null)
    throw new FsError('INVALID_ARGUMENT', 'recovery progress is not an object');
  if (!Number.isInteger(p.pg) || p.pg < 0 || p.pg >= PG_COUNT_MAX) problems.push(`pg ${p.pg}`);
  if (typeof p.brick !== 'string' || !BRICK_ID_RE.test(p.brick))
    problems.push(`brick ${JSON.stringify(p.brick)}`);
  if (p.mode !== 'log' && p.mode !== 'backfill') problems.push(`mode ${JSON.stringify(p.mode)}`);
  for (const f of ['opsLeft', 'bytesLeft', 'ratePerS'] as const) {
    if (typeof p[f] !== 'number' || !Number.isFinite(p[f]) || p[f] < 0) problems.push(`${f} ${p[f]}`);
  }
  if (typeof p.startedAtMs !== 'number' || !Number.isFinite(p.startedAtMs))
    problems.push(`startedAtMs ${p.startedAtMs}`);
  if (problems.length) throw new FsError('INVALID_ARGUMENT', `recovery progress: bad ${problems.join(', ')}`);
  return {
    pg: p.pg,
    brick: p.brick,
    mode: p.mode,
    opsLeft: p.opsLeft,
    bytesLeft: p.bytesLeft,
    ratePerS: p.ratePerS,
    startedAtMs: p.startedAtMs,
  };
}

/** Ids of mounts (sessions): as brick ids. */
/**
 * A mount's id: a name, optionally after `OWNER~`, the client certificate's
 * name (etcd user client:OWNER) whose role alone may write the record.
 */
export const MOUNT_ID_RE = /^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,62}~)?[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export function validateMountRecord(m: MountRecord): MountRecord {
  const problems: string[] = [];
  if (typeof m !== 'object' || m === null)
    throw new FsError('INVALID_ARGUMENT', 'mount record is not an object');
  if (typeof m.id !== 'string' || !MOUNT_ID_RE.test(m.id))
    problems.push(`id ${JSON.stringify(m.id)} must match ${MOUNT_ID_RE}`);
  if (typeof m.host !== 'string' || m.host.length === 0 || m.host.length > 255)
    problems.push('host must be 1..255 characters');
  if (!Number.isInteger(m.pid) || m.pid < 1) problems.push(`pid ${m.pid}`);
  if (typeof m.mountPoint !== 'string' || !m.mountPoint.startsWith('/') || m.mountPoint.length > 4096)
    problems.push('mountPoint must be an absolute path');
  if (typeof m.version !== 'string' || m.version.length === 0 || m.version.length > 64)
    problems.push('version must be 1..64 characters');
  for (const f of ['startedAtMs', 'volumeCreatedAtMs'] as const)
    if (typeof m[f] !== 'number' || !Number.isFinite(m[f])) problems.push(`${f} ${m[f]}`);
  if (!Number.isInteger(m.leaseTtlMs) || m.leaseTtlMs < 1) problems.push(`leaseTtlMs ${m.leaseTtlMs}`);
  if (problems.length) throw new FsError('INVALID_ARGUMENT', `mount record: bad ${problems.join(', ')}`);
  return {
    id: m.id,
    host: m.host,
    pid: m.pid,
    mountPoint: m.mountPoint,
    startedAtMs: m.startedAtMs,
    version: m.version,
    leaseTtlMs: m.leaseTtlMs,
    volumeCreatedAtMs: m.volumeCreatedAtMs,
  };
}

export function validateBrickAdmin(a: BrickAdmin): BrickAdmin {
  const problems: string[] = [];
  if (typeof a !== 'object' || a === null)
    throw new FsError('INVALID_ARGUMENT', 'brick admin is not an object');
  if (a.state !== 'in' && a.state !== 'draining') problems.push(`state ${JSON.stringify(a.state)}`);
  if (typeof a.weight !== 'number' || !Number.isFinite(a.weight) || a.weight < 0 || a.weight > 1e6)
    problems.push(`weight ${a.weight} must be a number in 0..1e6`);
  if (typeof a.updatedAtMs !== 'number' || !Number.isFinite(a.updatedAtMs))
    problems.push(`updatedAtMs ${a.updatedAtMs}`);
  if (problems.length) throw new FsError('INVALID_ARGUMENT', `brick admin: bad ${problems.join(', ')}`);
  return { state: a.state, weight: a.weight, updatedAtMs: a.updatedAtMs };
}

const JOB_STATES = new Set(['running', 'paused', 'stopped', 'done']);

export function validateRebalanceJob(j: RebalanceJob): RebalanceJob {
  const problems: string[] = [];
  if (typeof j !== 'object' || j === null)
    throw new FsError('INVALID_ARGUMENT', 'rebalance job is not an object');
  if (typeof j.id !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(j.id))
    problems.push(`id ${JSON.stringify(j.id)}`);
  if (!JOB_STATES.has(j.state)) problems.push(`state ${JSON.stringify(j.state)}`);
  if (
    typeof j.maxMiBPerS !== 'number' ||
    !Number.isFinite(j.maxMiBPerS) ||
    j.maxMiBPerS < 0 ||
    j.maxMiBPerS > 1e6
  )
    problems.push(`maxMiBPerS ${j.maxMiBPerS} must be 0..1e6`);
  if (!Number.isInteger(j.maxConcurrent) || j.maxConcurrent < 1 || j.maxConcurrent > 1024)
    problems.push(`maxConcurrent ${j.maxConcurrent} must be 1..1024`);
  for (const f of ['startedAtMs', 'updatedAtMs', 'pgsTotal', 'pgsDone', 'bytesMoved'] as const) {
    if (typeof j[f] !== 'number' || !Number.isFinite(j[f]) || j[f] < 0) problems.push(`${f} ${j[f]}`);
  }
  if (
    j.finishedAtMs !== undefined &&
    (typeof j.finishedAtMs !== 'number' || !Number.isFinite(j.finishedAtMs))
  )
    problems.push(`finishedAtMs ${j.finishedAtMs}`);
  if (problems.length) throw new FsError('INVALID_ARGUMENT', `rebalance job: bad ${problems.join(', ')}`);
  return {
    id: j.id,
    state: j.state,
    maxMiBPerS: j.maxMiBPerS,
    maxConcurrent: j.maxConcurrent,
    startedAtMs: j.startedAtMs,
    updatedAtMs: j.updatedAtMs,
    ...(j.finishedAtMs !== undefined ? { finishedAtMs: j.finishedAtMs } : {}),
    pgsTotal: j.pgsTotal,
    pgsDone: j.pgsDone,
    bytesMoved: j.bytesMoved,
  };
}

const SCRUB_STATES = new Set(['running', 'stopped', 'done']);
const SCRUB_PROBLEM_KINDS = new Set(['block-corrupt', 'block-missing', 'keys-differ']);
const SCRUB_PROBLEM_STATES = new Set(['repaired', 'unrecoverable', 'unrepaired']);
const JOB_ID_RE = /^[A-Za-z0-9._-]{1,64}$/;
const DECIMAL_RE = /^(0|[1-9][0-9]{0,19})$/;

function counters<T>(o: T, fields: readonly (keyof T)[], problems: string[]): void {
  for (const f of fields) {
    const v = o[f];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) problems.push(`${String(f)} ${String(v)}`);
  }
}

export function validateScrubJob(j: ScrubJob): ScrubJob {
  const problems: string[] = [];
  if (typeof j !== 'object' || j === null)
    throw new FsError('INVALID_ARGUMENT', 'scrub job is not an object');
  if (typeof j.id !== 'string' || !JOB_ID_RE.test(j.id)) problems.push(`id ${JSON.stringify(j.id)}`);
  if (!SCRUB_STATES.has(j.state)) problems.push(`state ${JSON.stringify(j.state)}`);
  if (j.trigger !== 'operator' && j.trigger !== 'schedule')
    problems.push(`trigger ${JSON.stringify(j.trigger)}`);
  if (
    j.maxMiBPerS !== undefined &&
    (typeof j.maxMiBPerS !== 'number' ||
      !Number.isFinite(j.maxMiBPerS) ||
      j.maxMiBPerS < 0 ||
      j.maxMiBPerS > 1e6)
  )
    problems.push(`maxMiBPerS ${j.maxMiBPerS} must be 0..1e6`);
  counters(
    j,
    [
      'startedAtMs',
      'updatedAtMs',
      'pgsTotal',
      'pgsDone',
      'bytesVerified',
      'found',
      'repaired',
      'unrecoverable',
    ],
    problems,
  );
  for (const f of ['finishedAtMs', 'lastCompletedAtMs'] as const) {
    const v = j[f];
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v))) problems.push(`${f} ${v}`);
  }
  if (j.orphanBlocksRemoved !== undefined) counters(j, ['orphanBlocksRemoved'], problems);
  if (problems.length) throw new FsError('INVALID_ARGUMENT', `scrub job: bad ${problems.join(', ')}`);
  return {
    id: j.id,
    state: j.state,
    trigger: j.trigger,
    ...(j.maxMiBPerS !== undefined ? { maxMiBPerS: j.maxMiBPerS } : {}),
    startedAtMs: j.startedAtMs,
    updatedAtMs: j.updatedAtMs,
    ...(j.finishedAtMs !== undefined ? { finishedAtMs: j.finishedAtMs } : {}),
    ...(j.lastCompletedAtMs !== undefined ? { lastCompletedAtMs: j.lastCompletedAtMs } : {}),
    pgsTotal: j.pgsTotal,
    pgsDone: j.pgsDone,
    bytesVerified: j.bytesVerified,
    found: j.found,
    repaired: j.repaired,
    unrecoverable: j.unrecoverable,
    ...(j.orphanBlocksRemoved !== undefined ? { orphanBlocksRemoved: j.orphanBlocksRemoved } : {}),
  };
}

function validateScrubProblem(p: ScrubProblemRecord): ScrubProblemRecord {
  const problems: string[] = [];
  if (typeof p !== 'object' || p === null)
    throw new FsError('INVALID_ARGUMENT', 'scrub problem is not an object');
  if (!SCRUB_PROBLEM_KINDS.has(p.kind)) problems.push(`kind ${JSON.stringify(p.kind)}`);
  if (typeof p.brick !== 'string' || !BRICK_ID_RE.test(p.brick))
    problems.push(`brick ${JSON.stringify(p.brick)}`);
  for (const f of ['ino', 'index'] as const)
    if (p[f] !== undefined && (typeof p[f] !== 'string' || !DECIMAL_RE.test(p[f]))) problems.push(`${f}`);
  if (p.keys !== undefined && (!Number.isInteger(p.keys) || p.keys < 0)) problems.push(`keys ${p.keys}`);
  if (typeof p.detail !== 'string' || p.detail.length > 1024) problems.push('detail');
  if (!SCRUB_PROBLEM_STATES.has(p.state)) problems.push(`state ${JSON.stringify(p.state)}`);
  if (problems.length) throw new FsError('INVALID_ARGUMENT', `scrub problem: bad ${problems.join(', ')}`);
  return {
    kind: p.kind,
    brick: p.brick,
    ...(p.ino !== undefined ? { ino: p.ino } : {}),
    ...(p.index !== undefined ? { index: p.index } : {}),
    ...(p.keys !== undefined ? { keys: p.keys } : {}),
    detail: p.detail,
    state: p.state,
  };
}

export function validateScrubPgResult(r: ScrubPgResult): ScrubPgResult {
  const problems: string[] = [];
  if (typeof r !== 'object' || r === null)
    throw new FsError('INVALID_ARGUMENT', 'scrub result is not an object');
  if (typeof r.jobId !== 'string' || !JOB_ID_RE.test(r.jobId))
    problems.push(`jobId ${JSON.stringify(r.jobId)}`);
  if (!Number.isInteger(r.pg) || r.pg < 0 || r.pg >= PG_COUNT_MAX) problems.push(`pg ${r.pg}`);
  if (typeof r.brick !== 'string' || !BRICK_ID_RE.test(r.brick))
    problems.push(`brick ${JSON.stringify(r.brick)}`);
  if (!Number.isInteger(r.epoch) || r.epoch < 1) problems.push(`epoch ${r.epoch}`);
  counters(r, ['atMs', 'keys', 'blocks', 'bytes', 'found', 'repaired', 'unrecoverable'], problems);
  for (const f of ['replicas', 'skipped'] as const)
    if (!Array.isArray(r[f]) || !r[f].every((b) => typeof b === 'string' && BRICK_ID_RE.test(b)))
      problems.push(f);
  if (
    !Array.isArray(r.problems) ||
    r.problems.length > SCRUB_PROBLEMS_LISTED_MAX ||
    r.problems.length > r.found
  )
    problems.push('problems');
  if (r.repaired + r.unrecoverable > r.found) problems.push('repaired + unrecoverable > found');
  if (problems.length) throw new FsError('INVALID_ARGUMENT', `scrub result: bad ${problems.join(', ')}`);
  return {
    jobId: r.jobId,
    pg: r.pg,
    brick: r.brick,
    epoch: r.epoch,
    atMs: r.atMs,
    keys: r.keys,
    blocks: r.blocks,
    bytes: r.bytes,
    replicas: [...r.replicas],
    skipped: [...r.skipped],
    problems: r.problems.map(validateScrubProblem),
    found: r.found,
    repaired: r.repaired,
    unrecoverable: r.unrecoverable,
  };
}

function checkRecoveryReport(r: RecoveryReport): RecoveryReport {
  if (typeof r.reporter !== 'string') throw new Error('not a recovery report');
  return { ...checkRecovery(r), reporter: r.reporter };
}

function byId(x: string, y: string): number {
  return x < y ? -1 : x > y ? 1 : 0;
}

/** A validated update as the assignment it writes; INVALID_ARGUMENT otherwise. */
function checkedUpdate(
  volume: string,
  config: VolumeConfig,
  members: ReadonlySet<string>,
  u: PlacementUpdate,
): PgAssignment {
  if (typeof u !== 'object' || u === null) throw new FsError('INVALID_ARGUMENT', 'update is not an object');
  const { pg, expectedEpoch, bricks } = u;
  const isr = u.isr ?? bricks;
  if (!Number.isInteger(pg) || pg < 0 || pg >= config.pgCount) {
    throw new FsError('INVALID_ARGUMENT', `pg ${pg} is not in 0..${config.pgCount - 1}`);
  }
  if (!Number.isInteger(expectedEpoch) || expectedEpoch < 1) {
    throw new FsError('INVALID_ARGUMENT', `expected epoch ${expectedEpoch} must be an integer >= 1`);
  }
  if (
    !Array.isArray(bricks) ||
    bricks.length < 1 ||
    // One beyond `replicas` while a move adds a replica before dropping one.
    bricks.length > config.replicas + 1 ||
    new Set(bricks).size !== bricks.length
  ) {
    throw new FsError(
      'INVALID_ARGUMENT',
      `pg ${pg} needs 1..${config.replicas + 1} distinct bricks, got ${JSON.stringify(bricks)}`,
    );
  }
  if (
    !Array.isArray(isr) ||
    new Set(isr).size !== isr.length ||
    !isr.includes(bricks[0]!) ||
    !isr.every((b) => bricks.includes(b))
  ) {
    throw new FsError(
      'INVALID_ARGUMENT',
      `pg ${pg}: in-sync set ${JSON.stringify(isr)} must hold the primary and only its bricks`,
    );
  }
  const strangers = bricks.filter((b) => !members.has(b));
  if (strangers.length)
    throw new FsError('INVALID_ARGUMENT', `not members of ${volume}: ${strangers.join(', ')}`);
  return { pg, bricks: [...bricks], isr: [...isr], epoch: expectedEpoch + 1 };
}

interface Registration {
  volume: string;
  info: BrickInfo;
  held: HeldLease;
}

interface Watch {
  cancel(): Promise<void>;
}

export interface KvCoordinatorOptions {
  knobs?: Partial<CoordinatorKnobs>;
  log?: Logger;
  clock?: Clock;
}

/**
 * The coordinator logic over a KvBackend. EtcdCoordinator and
 * MemoryCoordinator differ only in the backend they hand it.
 */
export abstract class KvCoordinator implements Coordinator {
  readonly knobs: CoordinatorKnobs;
  protected readonly log: Logger;
  protected readonly clock: Clock;
  private state: 'new' | 'starting' | 'started' | 'stopped' = 'new';
  private starting: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  private readonly registrations = new Map<string, Registration>();
  /** Mounts registered through this session, by volume/id. */
  private readonly mountSessions = new Map<string, { volume: string; id: string; held: HeldLease }>();
  private readonly watches = new Set<Watch>();
  private readonly campaigns = new Set<KvCampaign>();
  /** Last suspect report per volume/brick sent by this session (clock ms), for de-duplication. */
  private readonly suspectsSent = new Map<string, number>();

  protected constructor(
    protected readonly kv: KvBackend,
    opts: KvCoordinatorOptions,
  ) {
    this.knobs = validateCoordinatorKnobs(opts.knobs);
    this.log = opts.log ?? createLogger('coord');
    this.clock = opts.clock ?? realClock;
  }

  start(): Promise<void> {
    if (this.state === 'stopped') return Promise.reject(new Error('coordinator was stopped; make a new one'));
    this.starting ??= (async () => {
      this.state = 'starting';
      try {
        await initHashing();
        await this.kv.probe(this.knobs.dialTimeoutMs);
        this.state = 'started';
      } catch (e) {
        this.state = 'stopped';
        await this.kv.close().catch(() => undefined);
        throw e;
      }
    })();
    return this.starting;
  }

  stop(): Promise<void> {
    this.stopping ??= this.halt(true);
    return this.stopping;
  }

  /** Ends the session like a crash: leases are not revoked (they expire). Idempotent with stop(). */
  protected abandon(): Promise<void> {
    this.stopping ??= this.halt(false);
    return this.stopping;
  }

  /**
   * Ends the session. With `revoke` false the leases are left to expire on
   * their own, as after a crash.
   */
  private async halt(revoke: boolean): Promise<void> {
    const wasStarted = this.state === 'started' || this.state === 'starting';
    this.state = 'stopped';
    await this.starting?.catch(() => undefined);
    const watches = [...this.watches];
    this.watches.clear();
    await Promise.all(watches.map((w) => w.cancel().catch(() => undefined)));
    const campaigns = [...this.campaigns];
    this.campaigns.clear();
    await Promise.all(campaigns.map((c) => (revoke && wasStarted ? c.resign() : c.abandon())));
    const regs = [...this.registrations.values()];
    this.registrations.clear();
    for (const r of regs) r.held.cancel();
    if (revoke && wasStarted) {
      await Promise.all(
        regs.map((r) =>
          this.kv.revokeLease(r.held.lease).catch((e: unknown) => {
            this.log.warn('lease revoke failed; it will expire', {
              volume: r.volume,
              brick: r.info.id,
              err: e,
            });
          }),
        ),
      );
    }
    const mounts = [...this.mountSessions.values()];
    this.mountSessions.clear();
    for (const m of mounts) m.held.cancel();
    if (revoke && wasStarted) {
      await Promise.all(
        mounts.map((m) =>
          this.kv.revokeLease(m.held.lease).catch((e: unknown) => {
            this.log.warn('mount lease revoke failed; it will expire', {
              volume: m.volume,
              mount: m.id,
              err: e,
            });
          }),
        ),
      );
    }
    await this.kv.close().catch((e: unknown) => this.log.warn('close failed', { err: e }));
  }

  private ensureStarted(): void {
    if (this.state !== 'started')
      throw new Error(`coordinator is ${this.state === 'stopped' ? 'stopped' : 'not started'}`);
  }

  async getVolume(name: string): Promise<VolumeConfig | undefined> {
    this.ensureStarted();
    validateVolumeName(name);
    const e = await this.kv.get(keys.config(name));
    return e ? parseRecord(e, readVolumeConfig) : undefined;
  }

  async listVolumes(): Promise<VolumeConfig[]> {
    this.ensureStarted();
    // Skip scan: one short read per volume instead of reading every placement key.
    const out: VolumeConfig[] = [];
    const root = keys.volumes();
    let from = root;
    for (;;) {
      const key = await this.kv.next(from, root);
      if (key === undefined) break;
      const name = key.slice(root.length).split('/')[0]!;
      const config = await this.kv.get(keys.config(name));
      if (config && volumeOfConfigKey(config.key) === name) out.push(parseRecord(config, readVolumeConfig));
      from = `${keys.volume(name).slice(0, -1)}0`; // '0' sorts right after '/'
    }
    return out.sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  }

  async createVolume(config: VolumeConfig): Promise<PgAssignment[]> {
    this.ensureStarted();
    const c = checkedVolumeConfig({ ...config });
    const snap = await this.readSnapshot(c.name);
    if (snap.config) throw new FsError('ALREADY_EXISTS', `volume ${c.name} already exists`);
    const live = snap.bricks.filter((b) => b.alive && b.weight > 0);
    if (live.length < c.replicas) {
      throw new FsError(
        'UNAVAILABLE',
        `volume ${c.name} needs ${c.replicas} live bricks (replicas) but has ${live.length} ` +
          `(${snap.bricks.length} registered)`,
      );
    }
    const placement = computePlacement(
      c.pgCount,
      live.map((b) => ({ id: b.id, weight: b.weight, host: b.host })),
      c.replicas,
    );
    let ok: boolean;
    try {
      ok = await this.kv.txn(
        [{ key: keys.config(c.name), modRevision: 0 }],
        [
          { key: keys.config(c.name), value: JSON.stringify(c) },
          ...placement.map((a) => ({ key: keys.placement(c.name, a.pg), value: JSON.stringify(a) })),
        ],
      );
    } catch (e) {
      if (e instanceof FsError) throw e;
      throw new Error(
        `createVolume ${c.name}: the store rejected the transaction of ${c.pgCount + 1} puts ` +
          `(etcd needs --max-txn-ops >= ${c.pgCount + 1} and a large enough --max-request-bytes): ${(e as Error).message}`,
      );
    }
    if (!ok) throw new FsError('ALREADY_EXISTS', `volume ${c.name} already exists`);
    this.log.info('volume created', {
      volume: c.name,
      pgCount: c.pgCount,
      replicas: c.replicas,
      bricks: live.length,
    });
    return placement;
  }

  async registerBrick(volume: string, info: BrickInfo, leaseTtlMs = this.knobs.leaseTtlMs): Promise<void> {
    this.ensureStarted();
    validateVolumeName(volume);
    const b = pickBrickInfo(validateBrickInfo(info));
    try {
      validateLeaseTtl(leaseTtlMs, this.knobs.keepaliveIntervalMs);
    } catch (e) {
      throw new FsError('INVALID_ARGUMENT', (e as Error).message);
    }
    const id = `${volume}/${b.id}`;
    const old = this.registrations.get(id);
    if (old) {
      this.registrations.delete(id);
      old.held.cancel();
      await this.kv.revokeLease(old.held.lease).catch(() => undefined);
    }
    const held = await this.holdRecord(leaseTtlMs, 'registerBrick', { volume, brick: b.id }, (l) =>
      this.writeRegistration(volume, b, l),
    );
    this.registrations.set(id, { volume, info: b, held });
    this.log.info('brick registered', {
      volume,
      brick: b.id,
      address: b.address,
      lease: held.lease,
      leaseTtlMs,
    });
  }

  /**
   * A record bound to a lease of its own that this coordinator keeps alive
   * (and rewrites under a new lease if the old one is lost): granted, written,
   * and given up again if the write fails or the coordinator stopped meanwhile.
   */
  private async holdRecord(
    leaseTtlMs: number,
    what: string,
    context: Record<string, string>,
    write: (lease: string) => Promise<void>,
  ): Promise<HeldLease> {
    const sentAt = this.clock.now();
    const lease = await this.kv.grantLease(leaseTtlMs);
    try {
      await write(lease);
    } catch (e) {
      await this.kv.revokeLease(lease).catch(() => undefined);
      throw e;
    }
    if (this.state !== 'started') {
      await this.kv.revokeLease(lease).catch(() => undefined);
      throw new Error(`coordinator stopped during ${what}`);
    }
    return new HeldLease(this.kv, this.clock, this.log, this.knobs, leaseTtlMs, lease, sentAt, context, {
      bind: write,
    });
  }

  private async writeRegistration(volume: string, info: BrickInfo, lease: string): Promise<void> {
    // Member record and alive key in one transaction: no reader sees a live brick without its record.
    await this.kv.txn(
      [],
      [
        { key: keys.member(volume, info.id), value: JSON.stringify(info) },
        {
          key: keys.alive(volume, info.id),
          value: JSON.stringify({ address: info.address, sinceMs: this.clock.now() }),
          lease,
        },
      ],
    );
  }

  async publishUsage(volume: string, brickId: string, usage: BrickUsage): Promise<void> {
    this.ensureStarted();
    const reg = this.registrations.get(`${validateVolumeName(volume)}/${brickId}`);
    if (!reg) throw new FsError('NOT_FOUND', `brick ${brickId} is not registered here`);
    await this.kv.put({
      key: keys.usage(volume, brickId),
      value: JSON.stringify(usage),
      lease: reg.held.lease,
    });
  }

  async listUsage(volume: string): Promise<Map<string, BrickUsage>> {
    this.ensureStarted();
    const prefix = keys.usageAll(validateVolumeName(volume));
    const out = new Map<string, BrickUsage>();
    for (const kv of (await this.kv.range(prefix)).entries) {
      const k = parseVolumeKey(volume, kv.key);
      if (k?.kind !== 'usage') continue;
      let u: BrickUsage | undefined;
      try {
        u = parseBrickUsage(JSON.parse(kv.value));
      } catch {
        u = undefined;
      }
      if (u) out.set(k.brickId, u);
      else this.log.warn('ignoring a malformed usage record', { volume, key: kv.key });
    }
    return out;
  }

  leaseHealth(volume: string, brickId: string): LeaseHealth | undefined {
    return this.registrations.get(`${volume}/${brickId}`)?.held.health();
  }

  async listBricks(volume: string): Promise<BrickStatus[]> {
    this.ensureStarted();
    return (await this.readSnapshot(validateVolumeName(volume))).bricks;
  }

  async getPlacement(volume: string): Promise<PgAssignment[]> {
    this.ensureStarted();
    const snap = await this.readSnapshot(validateVolumeName(volume));
    if (!snap.config) throw new FsError('NOT_FOUND', `volume ${volume} does not exist`);
    return snap.placement;
  }

  async getSnapshot(volume: string): Promise<VolumeSnapshot> {
    this.ensureStarted();
    return this.readSnapshot(validateVolumeName(volume));
  }

  /** One consistent read of everything under the volume's prefix. */
  protected async readSnapshot(volume: string): Promise<VolumeSnapshot> {
    const { entries } = await this.kv.range(keys.volume(volume));
    let config: VolumeConfig | null = null;
    const members = new Map<string, BrickInfo>();
    const alive = new Set<string>();
    const admins = new Map<string, BrickAdmin>();
    let rebalance: RebalanceJob | null = null;
    let scrub: ScrubJob | undefined;
    const placement: PgAssignment[] = [];
    for (const e of entries) {
      const k = parseVolumeKey(volume, e.key);
      if (!k) continue;
      switch (k.kind) {
        case 'config':
          config = parseRecord(e, readVolumeConfig);
          break;
        case 'member':
          members.set(k.brickId, pickBrickInfo(parseRecord(e, validateBrickInfo)));
          break;
        case 'alive':
          alive.add(k.brickId);
          break;
        case 'admin':
          admins.set(k.brickId, parseRecord(e, validateBrickAdmin));
          break;
        case 'rebalance':
          rebalance = parseRecord(e, validateRebalanceJob);
          break;
        case 'scrub':
          scrub = parseRecord(e, validateScrubJob);
          break;
        case 'placement': {
          const a = parseRecord(e, checkAssignment);
          if (a.pg !== k.pg) throw new Error(`placement record at ${e.key} names pg ${a.pg}`);
          placement.push(a);
          break;
        }
      }
    }
    placement.sort((x, y) => x.pg - y.pg);
    if (config) {
      // createVolume writes config and every PG in one transaction: anything else is a broken invariant.
      if (placement.length !== config.pgCount || placement.some((a, i) => a.pg !== i)) {
        throw new Error(
          `volume ${volume}: placement has ${placement.length} PGs, config says ${config.pgCount}`,
        );
      }
    } else if (placement.length > 0) {
      throw new Error(`volume ${volume}: placement keys without a config`);
    }
    const bricks = [...members.values()]
      .sort((x, y) => byId(x.id, y.id))
      .map((b) => {
        const admin = admins.get(b.id);
        return { ...b, alive: alive.has(b.id), ...(admin ? { admin } : {}) };
      });
    return { config, placement: config ? placement : [], bricks, rebalance, ...(scrub ? { scrub } : {}) };
  }

  async watchVolume(volume: string, onChange: (snapshot: VolumeSnapshot) => void): Promise<Unsubscribe> {
    this.ensureStarted();
    validateVolumeName(volume);
    return this.watchRead(
      keys.volume(volume),
      (key) => {
        const k = parseVolumeKey(volume, key);
        return k !== undefined && SNAPSHOT_KEY_KINDS.has(k.kind);
      },
      () => this.readSnapshot(volume),
      onChange,
      { volume, what: 'volume snapshot' },
    );
  }

  /**
   * Watches `prefix`: reads with `read` once before resolving, then after
   * changes to keys `relevant` accepts (coalesced by watchCoalesceMs; a
   * failed read is retried after regrantRetryMs), and calls onChange with
   * each result that differs from the last one delivered.
   */
  private async watchRead<T>(
    prefix: string,
    relevant: (key: string) => boolean,
    read: () => Promise<T>,
    onChange: (value: T) => void,
    ctx: Record<string, unknown>,
  ): Promise<Unsubscribe> {
    let closed = false;
    let running = false;
    let dirty = false;
    let timer: unknown;
    let last: string | undefined;
    const deliver = async (): Promise<void> => {
      const value = await read();
      const text = JSON.stringify(value);
      if (closed || text === last) return;
      last = text;
      try {
        onChange(value);
      } catch (e) {
        this.log.error('BUG: watch listener threw', { ...ctx, err: e });
      }
    };
    const run = async (): Promise<void> => {
      timer = undefined;
      running = true;
      dirty = false;
      let retryMs = this.knobs.watchCoalesceMs;
      try {
        await deliver();
      } catch (e) {
        if (!closed) this.log.warn('watched read failed; retrying', { ...ctx, err: e });
        dirty = true;
        retryMs = this.knobs.regrantRetryMs;
      } finally {
        running = false;
        if (dirty && !closed && timer === undefined) timer = this.clock.setTimeout(() => void run(), retryMs);
      }
    };
    const kick = (): void => {
      if (closed) return;
      dirty = true;
      if (!running && timer === undefined)
        timer = this.clock.setTimeout(() => void run(), this.knobs.watchCoalesceMs);
    };
    // Watch first, then read: a change between the two is seen by the read or by the watch.
    const cancelWatch = await this.kv.watchPrefix(prefix, (changed) => {
      if (changed === undefined || changed.some(relevant)) kick();
    });
    const watch: Watch = {
      cancel: async () => {
        if (closed) return;
        closed = true;
        if (timer !== undefined) this.clock.clearTimeout(timer);
        timer = undefined;
        this.watches.delete(watch);
        await cancelWatch();
      },
    };
    this.watches.add(watch);
    running = true;
    try {
      await deliver();
    } catch (e) {
      await watch.cancel();
      throw e;
    } finally {
      running = false;
    }
    if (dirty) kick();
    return watch.cancel;
  }

  async updatePlacement(
    volume: string,
    pg: number,
    expectedEpoch: number,
    bricks: string[],
    isr: string[] = bricks,
  ): Promise<PgAssignment> {
    const [r] = await this.updatePlacements(volume, [{ pg, expectedEpoch, bricks, isr }]);
    if (!r!.applied) {
      const detail = r!.epoch === expectedEpoch ? 'kept changing under' : `is at epoch ${r!.epoch}, not`;
      throw new FsError('STALE_EPOCH', `pg ${pg} of ${volume} ${detail} epoch ${expectedEpoch}`);
    }
    return r!.assignment;
  }

  async updatePlacements(volume: string, updates: PlacementUpdate[]): Promise<PlacementUpdateResult[]> {
    this.ensureStarted();
    validateVolumeName(volume);
    if (!Array.isArray(updates)) throw new FsError('INVALID_ARGUMENT', 'updates must be an array');
    if (updates.length === 0) return [];
    const config = await this.getVolume(volume);
    if (!config) throw new FsError('NOT_FOUND', `volume ${volume} does not exist`);
    const { entries } = await this.kv.range(keys.members(volume));
    const members = new Set(entries.map((e) => e.key.slice(keys.members(volume).length)));
    const next = new Map<number, PgAssignment>();
    for (const u of updates) {
      const a = checkedUpdate(volume, config, members, u);
      if (next.has(a.pg)) throw new FsError('INVALID_ARGUMENT', `pg ${a.pg} is updated twice`);
      next.set(a.pg, a);
    }
    const found = new Map<number, number>(); // pg -> epoch found, for the stale ones
    const pending = [...next.values()];
    for (let i = 0; i < pending.length; i += this.knobs.placementBatchMax) {
      await this.swapBatch(volume, pending.slice(i, i + this.knobs.placementBatchMax), found);
    }
    const applied = pending.filter((a) => !found.has(a.pg));
    if (applied.length === 1) {
      const a = applied[0]!;
      this.log.info('placement updated', { volume, pg: a.pg, epoch: a.epoch, bricks: a.bricks, isr: a.isr });
    } else if (applied.length > 1) {
      this.log.info('placement updated', { volume, pgs: applied.length, stale: found.size });
      for (const a of applied) {
        this.log.debug('placement updated', {
          volume,
          pg: a.pg,
          epoch: a.epoch,
          bricks: a.bricks,
          isr: a.isr,
        });
      }
    }
    return updates.map((u) => {
      const epoch = found.get(u.pg);
      return epoch === undefined
        ? { pg: u.pg, applied: true as const, assignment: next.get(u.pg)! }
        : { pg: u.pg, applied: false as const, epoch };
    });
  }

  /**
   * One transaction for a batch: a compare on each PG key's mod revision (as
   * read, at the expected epoch) and a put. PGs found at another epoch go to
   * `stale`; a transaction that loses a race is re-read and retried.
   */
  private async swapBatch(volume: string, batch: PgAssignment[], stale: Map<number, number>): Promise<void> {
    let todo = batch;
    for (let attempt = 0; todo.length > 0; attempt++) {
      const read =
        todo.length > 16
          ? (await this.kv.range(keys.placementAll(volume))).entries
          : (await Promise.all(todo.map((a) => this.kv.get(keys.placement(volume, a.pg))))).filter(
              (e): e is KvEntry => e !== undefined,
            );
      const byKey = new Map(read.map((e) => [e.key, e]));
      const compares: KvCompare[] = [];
      const ready: PgAssignment[] = [];
      for (const a of todo) {
        const e = byKey.get(keys.placement(volume, a.pg));
        if (!e) throw new Error(`volume ${volume} has no placement record for pg ${a.pg}`);
        const current = parseRecord(e, checkAssignment);
        if (current.epoch !== a.epoch - 1) {
          stale.set(a.pg, current.epoch);
          continue;
        }
        compares.push({ key: e.key, modRevision: e.modRevision });
        ready.push(a);
      }
      if (ready.length === 0) return;
      const ok = await this.kv.txn(
        compares,
        ready.map((a) => ({ key: keys.placement(volume, a.pg), value: JSON.stringify(a) })),
      );
      if (ok) return;
      todo = ready; // something changed between the read and the swap: read again
      if (attempt >= 3) {
        // Still racing: report them stale at the epoch seen; the caller re-reads.
        for (const a of ready) stale.set(a.pg, a.epoch - 1);
        return;
      }
    }
  }

  async campaign(
    volume: string,
    candidateId: string,
    onChange: (state: ElectionState) => void,
    leaseTtlMs = this.knobs.leaseTtlMs,
  ): Promise<Campaign> {
    this.ensureStarted();
    validateVolumeName(volume);
    if (typeof candidateId !== 'string' || !BRICK_ID_RE.test(candidateId)) {
      throw new FsError(
        'INVALID_ARGUMENT',
        `candidate id ${JSON.stringify(candidateId)} must match ${BRICK_ID_RE}`,
      );
    }
    try {
      validateCampaignTtl(leaseTtlMs, this.knobs);
    } catch (e) {
      throw new FsError('INVALID_ARGUMENT', (e as Error).message);
    }
    const c = new KvCampaign(
      this.kv,
      this.clock,
      this.log,
      this.knobs,
      keys.controller(volume),
      candidateId,
      leaseTtlMs,
      onChange,
      { volume, candidate: candidateId },
    );
    await c.start();
    if (this.state !== 'started') {
      await c.resign();
      throw new Error('coordinator stopped during campaign');
    }
    this.campaigns.add(c);
    return {
      state: () => c.state(),
      resign: async () => {
        this.campaigns.delete(c);
        await c.resign();
      },
    };
  }

  async getController(volume: string): Promise<string | undefined> {
    this.ensureStarted();
    const e = await this.kv.get(keys.controller(validateVolumeName(volume)));
    return e ? parseControllerRecord(e).id : undefined;
  }

  async reportSuspect(volume: string, brickId: string, reporter: string): Promise<void> {
    this.ensureStarted();
    validateVolumeName(volume);
    if (typeof brickId !== 'string' || !BRICK_ID_RE.test(brickId)) {
      throw new FsError('INVALID_ARGUMENT', `brick id ${JSON.stringify(brickId)} must match ${BRICK_ID_RE}`);
    }
    // Brick ids match MOUNT_ID_RE too.
    if (typeof reporter !== 'string' || !MOUNT_ID_RE.test(reporter)) {
      throw new FsError('INVALID_ARGUMENT', `reporter ${JSON.stringify(reporter)} must match ${MOUNT_ID_RE}`);
    }
    const id = `${volume}/${reporter}/${brickId}`;
    const now = this.clock.now();
    const last = this.suspectsSent.get(id);
    if (last !== undefined && now - last < this.knobs.suspectTtlMs / 2) return;
    this.suspectsSent.set(id, now);
    if (this.suspectsSent.size > 1024) {
      for (const [k, at] of this.suspectsSent)
        if (now - at >= this.knobs.suspectTtlMs) this.suspectsSent.delete(k);
    }
    try {
      const lease = await this.kv.grantLease(this.knobs.suspectTtlMs);
      await this.kv.put({
        key: keys.suspect(volume, reporter, brickId),
        value: JSON.stringify({ atMs: now }),
        lease,
      });
    } catch (e) {
      this.suspectsSent.delete(id);
      throw e;
    }
    this.log.info('brick reported as suspect', { volume, brick: brickId });
  }

  async watchSuspects(volume: string, onChange: (suspects: Suspect[]) => void): Promise<Unsubscribe> {
    this.ensureStarted();
    validateVolumeName(volume);
    const prefix = keys.suspects(volume);
    return this.watchRead(
      prefix,
      () => true,
      async () => {
        const { entries } = await this.kv.range(prefix);
        // One per brick, whoever reported it: the newest report's revision.
        const newest = new Map<string, number>();
        for (const e of entries) {
          const k = parseVolumeKey(volume, e.key);
          if (k?.kind === 'suspect' && BRICK_ID_RE.test(k.brickId))
            newest.set(k.brickId, Math.max(newest.get(k.brickId) ?? 0, e.modRevision));
        }
        return [...newest]
          .map(([brickId, revision]) => ({ brickId, revision }))
          .sort((x, y) => byId(x.brickId, y.brickId));
      },
      onChange,
      { volume, what: 'suspects' },
    );
  }

  async expireBrick(volume: string, brickId: string, address?: string): Promise<boolean> {
    this.ensureStarted();
    validateVolumeName(volume);
    const [alive, ctl] = await Promise.all([
      this.kv.get(keys.alive(volume, brickId)),
      this.kv.get(keys.controller(volume)),
    ]);
    const leases = new Set<string>();
    const aliveAddress = alive ? parseRecord(alive, (v: { address: string }) => v).address : undefined;
    const matches = address === undefined || alive === undefined || aliveAddress === address;
    if (alive?.lease !== undefined && matches) leases.add(alive.lease);
    if (ctl?.lease !== undefined && matches && parseControllerRecord(ctl).id === brickId)
      leases.add(ctl.lease);
    await Promise.all([...leases].map((l) => this.kv.revokeLease(l)));
    if (leases.size)
      this.log.warn('brick declared dead; its leases revoked', { volume, brick: brickId, address });
    return leases.size > 0;
  }

  async reportRecovery(volume: string, reporter: string, progress: RecoveryProgress): Promise<void> {
    this.ensureStarted();
    validateVolumeName(volume);
    const p = checkRecovery(progress);
    const r = this.registrations.get(`${volume}/${reporter}`);
    if (!r)
      throw new FsError(
        'INVALID_ARGUMENT',
        `reporter ${reporter} is not registered in ${volume} by this session`,
      );
    if (!r.held.healthy()) throw new FsError('UNAVAILABLE', `the lease of ${reporter} is being replaced`);
    const report: RecoveryReport = { ...p, reporter };
    await this.kv.put({
      key: keys.recovery(volume, p.pg, p.brick),
      value: JSON.stringify(report),
      lease: r.held.lease,
    });
  }

  async clearRecovery(volume: string, pg: number, brick: string): Promise<void> {
    this.ensureStarted();
    validateVolumeName(volume);
    if (!Number.isInteger(pg) || pg < 0 || pg >= PG_COUNT_MAX || !BRICK_ID_RE.test(brick)) {
      throw new FsError('INVALID_ARGUMENT', `no recovery key for pg ${pg}, brick ${JSON.stringify(brick)}`);
    }
    await this.kv.txn([], [], [keys.recovery(volume, pg, brick)]);
  }

  async listRecovery(volume: string): Promise<RecoveryReport[]> {
    this.ensureStarted();
    validateVolumeName(volume);
    const { entries } = await this.kv.range(keys.recoveryAll(volume));
    const out: RecoveryReport[] = [];
    for (const e of entries) {
      if (parseVolumeKey(volume, e.key)?.kind === 'recovery') out.push(parseRecord(e, checkRecoveryReport));
    }
    return out.sort((x, y) => x.pg - y.pg || byId(x.brick, y.brick));
  }
  async setBrickAdmin(volume: string, brickId: string, admin: BrickAdmin | undefined): Promise<void> {
    this.ensureStarted();
    validateVolumeName(volume);
    const member = await this.kv.get(keys.member(volume, brickId));
    if (!member) throw new FsError('NOT_FOUND', `brick ${brickId} is not a member of volume ${volume}`);
    const key = keys.admin(volume, brickId);
    // The member record must still be there when the admin record lands (removeBrick races).
    const compares = [{ key: member.key, modRevision: member.modRevision }];
    const ok = admin
      ? await this.kv.txn(compares, [{ key, value: JSON.stringify(validateBrickAdmin(admin)) }])
      : await this.kv.txn(compares, [], [key]);
    if (!ok) throw new FsError('CONFLICT', `brick ${brickId} changed meanwhile; try again`);
  }

  async removeBrick(volume: string, brickId: string): Promise<void> {
    this.ensureStarted();
    validateVolumeName(volume);
    const { entries } = await this.kv.range(keys.volume(volume));
    const member = entries.find((e) => e.key === keys.member(volume, brickId));
    if (!member) throw new FsError('NOT_FOUND', `brick ${brickId} is not a member of volume ${volume}`);
    if (entries.some((e) => e.key === keys.alive(volume, brickId)))
      throw new FsError(
        'BUSY',
        `brick ${brickId} is running: stop its brickd first (it re-registers while it runs)`,
      );
    const holding: PgAssignment[] = [];
    const compares = [{ key: member.key, modRevision: member.modRevision }];
    for (const e of entries) {
      const k = parseVolumeKey(volume, e.key);
      if (k?.kind !== 'placement') continue;
      const a = parseRecord(e, checkAssignment);
      compares.push({ key: e.key, modRevision: e.modRevision });
      if (a.bricks.includes(brickId)) holding.push(a);
    }
    if (holding.length > 0) {
      const last = holding.filter((a) => a.isr.length === 1 && a.isr[0] === brickId).length;
      throw new FsError(
        'BUSY',
        `brick ${brickId} still holds ${holding.length} PG replicas` +
          (last > 0 ? ` (${last} of them the last in-sync copy)` : '') +
          `: drain it first (dunixctl brick drain ${brickId}) and wait until it holds none`,
      );
    }
    const ok = await this.kv.txn(compares, [], [member.key, keys.admin(volume, brickId)]);
    if (!ok) throw new FsError('CONFLICT', `volume ${volume} changed while removing ${brickId}; try again`);
    this.log.info('brick removed', { volume, brick: brickId });
  }

  /**
   * Read-modify-write of one JSON record by compare-and-swap on its
   * revision, retried on a lost race: `decide` sees the stored entry and
   * returns what to store (`put`) or what to answer without writing (`keep`).
   */
  private async updateRecord<T>(
    key: string,
    what: string,
    decide: (cur: KvEntry | undefined) => { put: T } | { keep: T },
  ): Promise<T> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const cur = await this.kv.get(key);
      const d = decide(cur);
      if ('keep' in d) return d.keep;
      const value = JSON.stringify(d.put);
      if (await this.kv.txn([{ key, modRevision: cur?.modRevision ?? 0 }], [{ key, value }])) return d.put;
    }
    throw new FsError('CONFLICT', `${what} kept changing`);
  }

  async updateRebalance(
    volume: string,
    change: (job: RebalanceJob | null) => RebalanceJob | undefined,
  ): Promise<RebalanceJob | null> {
    this.ensureStarted();
    validateVolumeName(volume);
    return this.updateRecord<RebalanceJob | null>(
      keys.rebalance(volume),
      `rebalance record of ${volume}`,
      (cur) => {
        const job = cur ? parseRecord(cur, validateRebalanceJob) : null;
        const next = change(job);
        return next === undefined ? { keep: job } : { put: validateRebalanceJob(next) };
      },
    );
  }

  async updateVolumeConfig(
    volume: string,
    patch: Partial<Pick<VolumeConfig, ChangeableVolumeOption>>,
  ): Promise<VolumeConfig> {
    this.ensureStarted();
    validateVolumeName(volume);
    const allowed: ReadonlySet<string> = CHANGEABLE_OPTIONS;
    const other = Object.keys(patch).filter((k) => !allowed.has(k));
    if (other.length)
      throw new FsError('INVALID_ARGUMENT', `volume options that cannot change: ${other.join(', ')}`);
    return this.updateRecord(keys.config(volume), `config of ${volume}`, (cur) => {
      if (!cur) throw new FsError('NOT_FOUND', `volume ${volume} does not exist`);
      return { put: checkedVolumeConfig({ ...parseRecord(cur, readVolumeConfig), ...patch }) };
    });
  }

  async updateScrub(
    volume: string,
    change: (job: ScrubJob | null) => ScrubJob | undefined,
  ): Promise<ScrubJob | null> {
    this.ensureStarted();
    validateVolumeName(volume);
    return this.updateRecord<ScrubJob | null>(keys.scrub(volume), `scrub record of ${volume}`, (cur) => {
      const job = cur ? parseRecord(cur, validateScrubJob) : null;
      const next = change(job);
      return next === undefined ? { keep: job } : { put: validateScrubJob(next) };
    });
  }

  async reportScrubPg(volume: string, result: ScrubPgResult): Promise<'recorded' | 'duplicate' | 'stale'> {
    this.ensureStarted();
    validateVolumeName(volume);
    const r = validateScrubPgResult(result);
    const jobKey = keys.scrub(volume);
    const resultKey = keys.scrubPg(volume, r.pg);
    // Every primary of the volume reports here: retried on a lost race for longer than updateScrub.
    for (let attempt = 0; attempt < 100; attempt++) {
      const [cur, prev] = await Promise.all([this.kv.get(jobKey), this.kv.get(resultKey)]);
      const job = cur ? parseRecord(cur, validateScrubJob) : null;
      if (!job || job.id !== r.jobId || job.state !== 'running') return 'stale';
      if (prev && parseRecord(prev, validateScrubPgResult).jobId === r.jobId) return 'duplicate';
      const nowMs = this.clock.now();
      const next: ScrubJob = {
        ...job,
        updatedAtMs: nowMs,
        pgsDone: job.pgsDone + 1,
        bytesVerified: job.bytesVerified + r.bytes,
        found: job.found + r.found,
        repaired: job.repaired + r.repaired,
        unrecoverable: job.unrecoverable + r.unrecoverable,
      };
      if (next.pgsDone >= next.pgsTotal) {
        next.state = 'done';
        next.finishedAtMs = nowMs;
        next.lastCompletedAtMs = nowMs;
      }
      const ok = await this.kv.txn(
        [
          { key: jobKey, modRevision: cur!.modRevision },
          { key: resultKey, modRevision: prev?.modRevision ?? 0 },
        ],
        [
          { key: jobKey, value: JSON.stringify(validateScrubJob(next)) },
          { key: resultKey, value: JSON.stringify(r) },
        ],
      );
      if (ok) {
        if (next.state === 'done')
          this.log.info('scrub done', {
            volume,
            job: next.id,
            found: next.found,
            repaired: next.repaired,
            unrecoverable: next.unrecoverable,
          });
        return 'recorded';
      }
    }
    throw new FsError('CONFLICT', `scrub record of ${volume} kept changing`);
  }

  async getScrubResult(volume: string, pg: number): Promise<ScrubPgResult | undefined> {
    this.ensureStarted();
    validateVolumeName(volume);
    if (!Number.isInteger(pg) || pg < 0 || pg >= PG_COUNT_MAX)
      throw new FsError('INVALID_ARGUMENT', `pg ${pg}`);
    const e = await this.kv.get(keys.scrubPg(volume, pg));
    return e ? parseRecord(e, validateScrubPgResult) : undefined;
  }

  async listScrubResults(volume: string, jobId: string): Promise<ScrubPgResult[]> {
    this.ensureStarted();
    validateVolumeName(volume);
    const { entries } = await this.kv.range(keys.scrubPgAll(volume));
    const out: ScrubPgResult[] = [];
    for (const e of entries) {
      if (parseVolumeKey(volume, e.key)?.kind !== 'scrubPg') continue;
      const r = parseRecord(e, validateScrubPgResult);
      if (r.jobId === jobId) out.push(r);
    }
    return out.sort((x, y) => x.pg - y.pg);
  }

  async registerMount(
    volume: string,
    info: MountInfo,
    leaseTtlMs = this.knobs.mountLeaseTtlMs,
  ): Promise<MountSession> {
    this.ensureStarted();
    validateVolumeName(volume);
    try {
      validateLeaseTtl(leaseTtlMs, this.knobs.keepaliveIntervalMs);
    } catch (e) {
      throw new FsError('INVALID_ARGUMENT', `mount lease: ${(e as Error).message}`);
    }
    const config = await this.getVolume(volume);
    if (!config) throw new FsError('NOT_FOUND', `volume ${volume} does not exist`);
    const record = validateMountRecord({ ...info, leaseTtlMs, volumeCreatedAtMs: config.createdAtMs });
    const key = `${volume}/${record.id}`;
    if (this.mountSessions.has(key))
      throw new FsError('ALREADY_EXISTS', `mount ${record.id} is registered already`);
    const held = await this.holdRecord(leaseTtlMs, 'registerMount', { volume, mount: record.id }, (l) =>
      this.writeMount(volume, record, l),
    );
    this.mountSessions.set(key, { volume, id: record.id, held });
    this.log.info('mount registered', {
      volume,
      mount: record.id,
      host: record.host,
      mountPoint: record.mountPoint,
      lease: held.lease,
      leaseTtlMs,
    });
    let closing: Promise<void> | undefined;
    return {
      id: record.id,
      leaseTtlMs,
      health: () => held.health(),
      close: () =>
        (closing ??= (async () => {
          if (this.mountSessions.get(key)?.held !== held) return; // stop() took it
          this.mountSessions.delete(key);
          await held.revoke().catch((e: unknown) => {
            this.log.warn('mount lease revoke failed; it will expire', { volume, mount: record.id, err: e });
          });
        })()),
    };
  }

  /** The mount record under `lease`, by compare-and-swap on the config of the incarnation mounted. */
  private async writeMount(volume: string, record: MountRecord, lease: string): Promise<void> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const c = await this.kv.get(keys.config(volume));
      if (!c || parseRecord(c, readVolumeConfig).createdAtMs !== record.volumeCreatedAtMs)
        throw new FsError('NOT_FOUND', `volume ${volume} was deleted`);
      // A delete that read the volume before this lands sees a key under mounts/ written after its
      // read, and reads again (deleteVolume).
      const ok = await this.kv.txn(
        [{ key: c.key, modRevision: c.modRevision }],
        [{ key: keys.mount(volume, record.id), value: JSON.stringify(record), lease }],
      );
      if (ok) return;
    }
    throw new FsError('CONFLICT', `config of ${volume} kept changing`);
  }

  async listMounts(volume: string): Promise<MountRecord[]> {
    this.ensureStarted();
    validateVolumeName(volume);
    const { entries } = await this.kv.range(keys.mountsAll(volume));
    const out: MountRecord[] = [];
    for (const e of entries)
      if (parseVolumeKey(volume, e.key)?.kind === 'mount') out.push(parseRecord(e, validateMountRecord));
    return out.sort((x, y) => byId(x.id, y.id));
  }

  async deleteVolume(volume: string, opts: { force?: boolean } = {}): Promise<VolumeDeletion> {
    this.ensureStarted();
    validateVolumeName(volume);
    const force = opts.force === true;
    for (let attempt = 0; attempt < 20; attempt++) {
      const { entries, revision } = await this.kv.range(keys.volume(volume));
      if (entries.length === 0) throw new FsError('NOT_FOUND', `volume ${volume} does not exist`);
      const configEntry = entries.find((e) => e.key === keys.config(volume));
      const config = configEntry ? parseRecord(configEntry, readVolumeConfig) : null;
      const mounts: MountRecord[] = [];
      const members: string[] = [];
      const alive = new Set<string>();
      for (const e of entries) {
        const k = parseVolumeKey(volume, e.key);
        if (k?.kind === 'mount') mounts.push(parseRecord(e, validateMountRecord));
        else if (k?.kind === 'member') members.push(k.brickId);
        else if (k?.kind === 'alive') alive.add(k.brickId);
      }
      const bricks = [...new Set([...members, ...alive])]
        .sort(byId)
        .map((id) => ({ id, alive: alive.has(id) }));
      if (!force && mounts.length > 0) {
        const where = mounts.map((m) => `${m.host}:${m.mountPoint} (pid ${m.pid})`).join(', ');
        throw new FsError(
          'BUSY',
          `volume ${volume} is mounted by ${mounts.length} client${mounts.length === 1 ? '' : 's'}: ${where}; ` +
            'unmount first (a killed client is forgotten within its lease TTL), or --force (the mounts then fail with EIO)',
        );
      }
      const running = bricks.filter((b) => b.alive).map((b) => b.id);
      if (!force && running.length > 0) {
        throw new FsError(
          'BUSY',
          `volume ${volume} has ${running.length} running brick${running.length === 1 ? '' : 's'}: ` +
            `${running.join(', ')}; stop their brickd first (data directories are kept), ` +
            'or --force (running bricks then stop serving it and exit)',
        );
      }
      // A mount registering after this read wrote under mounts/ (and one cannot land after the config goes).
      const ok = await this.kv.txn(
        [
          { key: keys.config(volume), modRevision: configEntry?.modRevision ?? 0 },
          { prefix: keys.mountsAll(volume), notWrittenAfter: revision },
        ],
        [],
        [],
        [keys.volume(volume)],
      );
      if (!ok) continue;
      this.log.info('volume deleted', {
        volume,
        forced: force,
        keys: entries.length,
        mounts: mounts.length,
        bricks: bricks.length,
        running: running.length,
      });
      return { volume, config, forced: force, keysDeleted: entries.length, mounts, bricks };
    }
    throw new FsError('CONFLICT', `volume ${volume} kept changing while being deleted; try again`);
  }
}
