import type { Logger, PgAssignment, VolumeConfig } from '@dunix/proto';
import type { BrickKnobs } from '../config.js';
import type { BlockFiles } from '../store/block-files.js';
import type { Durability } from '../store/group-commit.js';
import type { KvStore, KvWrite } from '../store/kv.js';
import type { BlockOp, LogEntry, LogPosition } from '../pg/log-entry.js';
import type { ScrubRow } from './scrub-digest.js';

/**
 * What the replication protocol needs of the world, injected so that the
 * same code runs in brickd (gRPC/frames, etcd, LevelDB, files) and in the
 * seeded simulation (in-memory network, coordinator, stores, fake clock).
 */

/** Monotonic time and waiting. */
export interface ProtocolClock {
  nowMs(): number;
  sleep(ms: number): Promise<void>;
}

/**
 * Stages of a mutation that the brick's metrics time (the latency breakdown,
 * ARCHITECTURE.md "Where the time of a call goes"):
 * - pg_queue: waiting for the PG's mutation queue (ops of one PG run one at a time);
 * - engine: the namespace engine with its reads, until the writes are known;
 * - append_queue: waiting for the PG's append queue;
 * - log_write: the primary's own batch (entry and writes) into LevelDB;
 * - replicas_after_local: how much longer than its own batch the primary
 *   waited for every in-sync replica's acknowledgement (what replication adds);
 * - replica_round_trip: one Replicate call, sent to answered, per replica;
 * - replica_apply: a replica applying received entries, queue included.
 */
export type Stage =
  | 'pg_queue'
  | 'engine'
  | 'append_queue'
  | 'log_write'
  | 'replicas_after_local'
  | 'replica_round_trip'
  | 'replica_apply';

/** Where time and log entries go, for the metrics; absent (simulation, unit tests): nothing is measured. */
export interface StageTimer {
  /** A start mark: ms of a monotonic clock. */
  now(): number;
  /** `stage` ran from `startMs` until now. */
  done(stage: Stage, startMs: number): void;
  /** The primary appended an entry of this kind (one replication round each). */
  entry(kind: string): void;
}

/** Brick-to-brick calls of the protocol, addressed to one brick. */
export interface ReplicaTransport {
  /** Entries in sequence order; the replica applies what follows its log. */
  replicate(
    brick: string,
    pg: number,
    epoch: number,
    entries: LogEntry[],
    catchUp: boolean,
  ): Promise<{ lastSeq: bigint; gap: boolean }>;
  /** The replica's log position; promises `epoch` (older epochs are refused afterwards). */
  position(brick: string, pg: number, epoch: number): Promise<LogPosition>;
  /** Entries from `fromSeq` of the replica's log, block ops as SYNC with bytes. */
  fetchLog(
    brick: string,
    pg: number,
    epoch: number,
    fromSeq: bigint,
    entriesMax: number,
  ): Promise<LogEntry[]>;
  backfill(brick: string, pg: number, epoch: number, step: BackfillStep): Promise<void>;
  /** The replica makes everything it has applied durable (a client's fsync). */
  sync(brick: string, pg: number, epoch: number): Promise<void>;
  /** The replica's verified copy of one block, as a SYNC op (no record: it has none). */
  fetchBlock(brick: string, pg: number, epoch: number, ino: bigint, index: bigint): Promise<BlockOp>;
  /** Scrub: the digest of a key range of the replica's copy at the primary's log sequence. */
  scrubDigest(brick: string, pg: number, epoch: number, req: ScrubDigestRequest): Promise<ScrubDigestReply>;
}

/** A scrub's question to a replica (replication/scrub.ts). */
export interface ScrubDigestRequest {
  /** The primary's last log sequence: the replica answers only when it is exactly there. */
  seq: bigint;
  /** The PG's keys in [fromKey, toKey). */
  fromKey: Buffer;
  toKey: Buffer;
  /** Read and check every block file the range's records describe. */
  verifyBlocks: boolean;
  /** Return every row's key and hash. */
  rows: boolean;
}

export interface ScrubBadBlock {
  ino: bigint;
  index: bigint;
  detail: string;
}

export interface ScrubDigestReply {
  digest: string;
  keys: number;
  bytes: number;
  badBlocks: ScrubBadBlock[];
  rows: ScrubRow[];
  rowsTruncated: boolean;
}

export type BackfillStep =
  | { step: 'BEGIN' }
  | { step: 'CHUNK'; writes: KvWrite[]; blocks: BlockOp[] }
  | { step: 'END'; base: LogEntry | undefined };

/** The PG's entry in the placement map, read fresh and changed by compare-and-swap. */
export interface PlacementControl {
  read(pg: number): Promise<PgAssignment>;
  /** STALE_EPOCH when the PG is no longer at `expectedEpoch`. */
  update(pg: number, expectedEpoch: number, bricks: string[], isr: string[]): Promise<PgAssignment>;
}

/** A primary fences itself: it acknowledges nothing once it cannot vouch for its lease. */
export interface LeaseGuard {
  fenced(): boolean;
}

/** Recovery progress for operators (dunixctl volume status). */
export interface RecoveryReporter {
  report(
    p: {
      pg: number;
      brick: string;
      mode: 'log' | 'backfill';
      opsLeft: number;
      bytesLeft: number;
      ratePerS: number;
      startedAtMs: number;
    } | null,
    pg: number,
    brick: string,
  ): void;
}

export interface ReplicationDeps {
  brickId: string;
  volume: VolumeConfig;
  kv: KvStore;
  blocks: BlockFiles;
  knobs: BrickKnobs;
  log: Logger;
  clock: ProtocolClock;
  transport: ReplicaTransport;
  placement: PlacementControl;
  lease: LeaseGuard;
  recovery?: RecoveryReporter;
  /** When writes reach the disk (default: every entry synced). */
  durability?: Durability;
  /** The latency breakdown's timer (metrics); absent: nothing measured. */
  stages?: StageTimer;
  /**
   * Simulation only (test/sim): a deliberately broken protocol, to show that
   * the simulation's checkers catch it. Never set in brickd.
   * - 'ack-before-replicas': an append resolves once the local write is done,
   *   without waiting for the in-sync replicas (the entry is still sent).
   * - 'accept-lower-epoch': a replica takes entries and promises of any
   *   epoch, also older than one it promised.
   * Reaches Replication through BrickDeps.replication (Brick spreads it).
   */
  plantedBug?: PlantedBug;
}

export type PlantedBug = 'ack-before-replicas' | 'accept-lower-epoch';
