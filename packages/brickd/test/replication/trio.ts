import {
  blockPg,
  createLogger,
  FsError,
  initHashing,
  type PgAssignment,
  type VolumeConfig,
} from '@dunix/proto';
import { Brick, type PgEndpoint } from '../../src/brick.js';
import { brickDefaults, type BrickKnobs } from '../../src/config.js';
import { NamespaceEngine } from '../../src/namespace/engine.js';
import type { ReplicaTransport } from '../../src/replication/deps.js';
import { MemoryBlockFiles } from '../../src/store/memory-block-files.js';
import { MemoryKv } from '../../src/store/memory-kv.js';

/**
 * Three bricks in one process, every PG on all three with A its primary:
 * real Brick and Replication over MemoryKv and MemoryBlockFiles, the
 * replication calls made directly on the target brick (no wire), a fixed
 * placement, leases that hold and a manual clock whose sleeps only add up.
 */

export const PG_COUNT = 4;
export const BLOCK = 256 * 1024;
export const volume: VolumeConfig = {
  name: 'trio',
  pgCount: PG_COUNT,
  replicas: 3,
  minInsync: 2,
  blockSizeBytes: BLOCK,
  inlineMaxBytes: 4096,
  createdAtMs: 0,
};
export const root = { uid: 0, gid: 0, groups: [] };
export const IDS = ['A', 'B', 'C'] as const;
export type Id = (typeof IDS)[number];

export interface Trio {
  bricks: Record<Id, Brick>;
  kvs: Record<Id, MemoryKv>;
  blocks: Record<Id, MemoryBlockFiles>;
  placement: PgAssignment[];
  /** Manual clock: now, and the total time scrubs slept. */
  clock: { now: number; slept: number };
  /** Writes `data` to block `index` of `ino` through the primary. */
  writeBlock(ino: bigint, index: bigint, data: Buffer): Promise<number>;
}

/** Test hooks: runs before a replica applies a Replicate (may wait, or throw to fail it). */
export interface TrioHooks {
  beforeReplicate?: (id: Id, pg: number, entries: readonly { seq: bigint }[]) => Promise<void>;
}

export async function trio(knobs: Partial<BrickKnobs> = {}, hooks: TrioHooks = {}): Promise<Trio> {
  await initHashing();
  const log = createLogger('trio', () => {});
  const kvs = { A: new MemoryKv(), B: new MemoryKv(), C: new MemoryKv() };
  const blocks = { A: new MemoryBlockFiles(), B: new MemoryBlockFiles(), C: new MemoryBlockFiles() };
  const placement: PgAssignment[] = Array.from({ length: PG_COUNT }, (_v, pg) => ({
    pg,
    bricks: [...IDS],
    isr: [...IDS],
    epoch: 1,
  }));
  const clock = { now: 0, slept: 0 };
  const bricks = {} as Record<Id, Brick>;
  const at = (id: string, pg: number) => {
    const b = bricks[id as Id];
    if (!b) throw new FsError('UNAVAILABLE', `no brick ${id}`);
    return { b, st: b.copy(pg) };
  };
  const transport: ReplicaTransport = {
    replicate: async (id, pg, epoch, entries) => {
      const { b, st } = at(id, pg);
      await hooks.beforeReplicate?.(id as Id, pg, entries);
      return b.repl.applyReplicated(st, epoch, entries);
    },
    position: async (id, pg, epoch) => {
      const { b, st } = at(id, pg);
      return b.repl.position(st, epoch);
    },
    fetchLog: async (id, pg, epoch, from, max) => {
      const { b, st } = at(id, pg);
      return b.repl.fetchLog(st, epoch, from, max);
    },
    backfill: async (id, pg, epoch, step) => {
      const { b, st } = at(id, pg);
      return b.repl.backfillStep(st, epoch, step);
    },
    sync: async () => {},
    fetchBlock: async (id, pg, epoch, ino, index) => {
      const { b, st } = at(id, pg);
      return b.repl.fetchBlock(st, epoch, ino, index);
    },
    scrubDigest: async (id, pg, epoch, req) => {
      const { b, st } = at(id, pg);
      return b.repl.scrubDigest(st, epoch, req);
    },
  };
  const remote = new Proxy({} as PgEndpoint, {
    get:
      (_t, method: string) =>
      (...args: unknown[]) =>
        (bricks.A as unknown as Record<string, (...a: unknown[]) => unknown>)[method]!.apply(bricks.A, args),
  });
  let ns = 1_000_000_000n;
  for (const id of IDS) {
    bricks[id] = new Brick({
      brickId: id,
      volume: { ...volume },
      kv: kvs[id],
      blocks: blocks[id],
      engine: new NamespaceEngine({ pgCount: PG_COUNT, inlineMaxBytes: 4096, blockSizeBytes: BLOCK }),
      knobs: { ...brickDefaults, ...knobs },
      log,
      clockNs: () => (ns += 1000n),
      remote,
      replication: {
        transport,
        placement: {
          read: async (pg) => placement[pg]!,
          update: () => Promise.reject(new FsError('STALE_EPOCH', 'fixed map')),
        },
        lease: { fenced: () => false },
        clock: {
          nowMs: () => clock.now,
          sleep: async (ms) => {
            clock.now += ms;
            clock.slept += ms;
          },
        },
      },
    });
  }
  // Replicas first: the primary's peering asks them for their positions.
  for (const id of ['B', 'C', 'A'] as const) await bricks[id].applyPlacement(placement);
  await bricks.A.settled();
  return {
    bricks,
    kvs,
    blocks,
    placement,
    clock,
    writeBlock: async (ino, index, data) => {
      const pg = blockPg(ino, index, PG_COUNT);
      await bricks.A.writeBlock(pg, ino, index, 0, data);
      return pg;
    },
  };
}

/** Bytes that differ from block to block. */
export function pattern(seed: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  let x = seed * 2654435761;
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}
