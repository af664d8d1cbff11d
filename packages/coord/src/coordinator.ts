import {
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
} from '@dunix/proto';
import { type CoordinatorKnobs, validateCoordinatorKnobs, validateLeaseTtl } from './knobs.js';
import { keys, parseVolumeKey, volumeOfConfigKey } from './keys.js';
import type { KvBackend, KvEntry } from './kv.js';

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
}

/** Everything a client or brick needs about one volume, read at one revision. */
export interface VolumeSnapshot {
  /** null until the volume is created (bricks register before that). */
  config: VolumeConfig | null;
  /** Sorted by pg; exactly config.pgCount entries when config is set, else empty. */
  placement: PgAssignment[];
  /** Member bricks sorted by id. */
  bricks: BrickStatus[];
}

export type Unsubscribe = () => Promise<void>;

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
}

/** Timers, injectable so a simulation can drive them. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

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
    (a.isr !== undefined && (!Array.isArray(a.isr) || !a.isr.every((b) => a.bricks.includes(b))))
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

interface Registration {
  volume: string;
  info: BrickInfo;
  ttlMs: number;
  lease: string;
  timer: unknown;
  cancelled: boolean;
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
  private readonly watches = new Set<Watch>();

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
    const regs = [...this.registrations.values()];
    this.registrations.clear();
    for (const r of regs) this.cancelRegistration(r);
    if (revoke && wasStarted) {
      await Promise.all(
        regs.map((r) =>
          this.kv.revokeLease(r.lease).catch((e: unknown) => {
            this.log.warn('lease revoke failed; it will expire', {
              volume: r.volume,
              brick: r.info.id,
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
      this.cancelRegistration(old);
      await this.kv.revokeLease(old.lease).catch(() => undefined);
    }
    const lease = await this.kv.grantLease(leaseTtlMs);
    const r: Registration = { volume, info: b, ttlMs: leaseTtlMs, lease, timer: undefined, cancelled: false };
    try {
      await this.writeRegistration(r);
    } catch (e) {
      await this.kv.revokeLease(lease).catch(() => undefined);
      throw e;
    }
    if (this.state !== 'started') {
      await this.kv.revokeLease(lease).catch(() => undefined);
      throw new Error('coordinator stopped during registerBrick');
    }
    this.registrations.set(id, r);
    this.scheduleKeepalive(r, this.knobs.keepaliveIntervalMs);
    this.log.info('brick registered', { volume, brick: b.id, address: b.address, lease, leaseTtlMs });
  }

  private writeRegistration(r: Registration): Promise<boolean> {
    // Member record and alive key in one transaction: no reader sees a live brick without its record.
    return this.kv.txn(
      [],
      [
        { key: keys.member(r.volume, r.info.id), value: JSON.stringify(r.info) },
        {
          key: keys.alive(r.volume, r.info.id),
          value: JSON.stringify({ address: r.info.address, sinceMs: this.clock.now() }),
          lease: r.lease,
        },
      ],
    );
  }

  private cancelRegistration(r: Registration): void {
    r.cancelled = true;
    if (r.timer !== undefined) this.clock.clearTimeout(r.timer);
    r.timer = undefined;
  }

  private scheduleKeepalive(r: Registration, ms: number): void {
    if (r.cancelled) return;
    r.timer = this.clock.setTimeout(() => {
      r.timer = undefined;
      void this.keepaliveOnce(r);
    }, ms);
  }

  /** One keepalive; on a lost lease, grant a new one and write both keys again. Never throws. */
  private async keepaliveOnce(r: Registration): Promise<void> {
    const ctx = { volume: r.volume, brick: r.info.id };
    let alive: boolean;
    try {
      alive = await this.kv.keepalive(r.lease, Math.min(this.knobs.rpcTimeoutMs, Math.floor(r.ttlMs / 3)));
    } catch (e) {
      if (!r.cancelled) this.log.warn('lease keepalive failed; retrying', { ...ctx, err: e });
      this.scheduleKeepalive(r, this.knobs.keepaliveIntervalMs);
      return;
    }
    if (r.cancelled) return;
    if (alive) {
      this.scheduleKeepalive(r, this.knobs.keepaliveIntervalMs);
      return;
    }
    this.log.warn('brick lease lost; granting a new one', { ...ctx, lease: r.lease });
    try {
      const lease = await this.kv.grantLease(r.ttlMs);
      if (r.cancelled) {
        await this.kv.revokeLease(lease).catch(() => undefined);
        return;
      }
      r.lease = lease;
      await this.writeRegistration(r);
      this.log.info('brick re-registered', { ...ctx, lease });
      this.scheduleKeepalive(r, this.knobs.keepaliveIntervalMs);
    } catch (e) {
      if (r.cancelled) return;
      this.log.warn('lease re-grant failed; retrying', { ...ctx, err: e });
      // The next keepalive of the (possibly new, unwritten) lease decides again.
      this.scheduleKeepalive(r, this.knobs.regrantRetryMs);
    }
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

  /** One consistent read of everything under the volume's prefix. */
  protected async readSnapshot(volume: string): Promise<VolumeSnapshot> {
    const { entries } = await this.kv.range(keys.volume(volume));
    let config: VolumeConfig | null = null;
    const members = new Map<string, BrickInfo>();
    const alive = new Set<string>();
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
      .sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0))
      .map((b) => ({ ...b, alive: alive.has(b.id) }));
    return { config, placement: config ? placement : [], bricks };
  }

  async watchVolume(volume: string, onChange: (snapshot: VolumeSnapshot) => void): Promise<Unsubscribe> {
    this.ensureStarted();
    validateVolumeName(volume);
    let closed = false;
    let running = false;
    let dirty = false;
    let timer: unknown;
    let last: string | undefined;
    const deliver = async (): Promise<void> => {
      const snap = await this.readSnapshot(volume);
      const text = JSON.stringify(snap);
      if (closed || text === last) return;
      last = text;
      try {
        onChange(snap);
      } catch (e) {
        this.log.error('BUG: watchVolume listener threw', { volume, err: e });
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
        if (!closed) this.log.warn('volume snapshot failed; retrying', { volume, err: e });
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
    const cancelWatch = await this.kv.watchPrefix(keys.volume(volume), kick);
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
    this.ensureStarted();
    validateVolumeName(volume);
    const config = await this.getVolume(volume);
    if (!config) throw new FsError('NOT_FOUND', `volume ${volume} does not exist`);
    if (!Number.isInteger(pg) || pg < 0 || pg >= config.pgCount) {
      throw new FsError('INVALID_ARGUMENT', `pg ${pg} is not in 0..${config.pgCount - 1}`);
    }
    if (!Number.isInteger(expectedEpoch) || expectedEpoch < 1) {
      throw new FsError('INVALID_ARGUMENT', `expected epoch ${expectedEpoch} must be an integer >= 1`);
    }
    if (
      !Array.isArray(bricks) ||
      bricks.length < 1 ||
      bricks.length > config.replicas ||
      new Set(bricks).size !== bricks.length
    ) {
      throw new FsError(
        'INVALID_ARGUMENT',
        `pg ${pg} needs 1..${config.replicas} distinct bricks, got ${JSON.stringify(bricks)}`,
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
    const { entries } = await this.kv.range(keys.members(volume));
    const members = new Set(entries.map((e) => e.key.slice(keys.members(volume).length)));
    const strangers = bricks.filter((b) => !members.has(b));
    if (strangers.length)
      throw new FsError('INVALID_ARGUMENT', `not members of ${volume}: ${strangers.join(', ')}`);
    const key = keys.placement(volume, pg);
    const entry = await this.kv.get(key);
    if (!entry) throw new Error(`volume ${volume} has no placement record for pg ${pg}`);
    const current = parseRecord(entry, checkAssignment);
    if (current.epoch !== expectedEpoch) {
      throw new FsError(
        'STALE_EPOCH',
        `pg ${pg} of ${volume} is at epoch ${current.epoch}, not ${expectedEpoch}`,
      );
    }
    const next: PgAssignment = { pg, bricks: [...bricks], isr: [...isr], epoch: expectedEpoch + 1 };
    const ok = await this.kv.txn(
      [{ key, modRevision: entry.modRevision }],
      [{ key, value: JSON.stringify(next) }],
    );
    if (!ok) throw new FsError('STALE_EPOCH', `pg ${pg} of ${volume} changed under epoch ${expectedEpoch}`);
    this.log.info('placement updated', { volume, pg, epoch: next.epoch, bricks: next.bricks, isr: next.isr });
    return next;
  }
}
