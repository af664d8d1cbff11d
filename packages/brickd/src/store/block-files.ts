import type { BlockRecord } from './records.js';

/** The block-file side of a brick (store/block-store.ts). */
export interface BlockFiles {
  read(
    pg: number,
    ino: bigint,
    index: bigint,
    offset: number,
    length: number,
    rec: BlockRecord | undefined,
  ): Promise<Buffer>;
  write(
    pg: number,
    ino: bigint,
    index: bigint,
    offset: number,
    data: Buffer,
    rec: BlockRecord | undefined,
    blockSizeBytes: number,
  ): Promise<BlockRecord>;
  truncate(
    pg: number,
    ino: bigint,
    index: bigint,
    length: number,
    rec: BlockRecord | undefined,
  ): Promise<BlockRecord | undefined>;
  delete(pg: number, ino: bigint, index: bigint): Promise<void>;
  /**
   * The destination block becomes the source block's bytes, which must be
   * what `want` describes (shared copy-on-write where the store can); false,
   * with nothing changed, when this store does not hold them. Absent: never.
   */
  clone?(
    src: { pg: number; ino: bigint; index: bigint },
    want: BlockRecord,
    dst: { pg: number; ino: bigint; index: bigint },
  ): Promise<boolean>;
  /** The blocks of `pg` that have a file (any order), for the orphan sweep. */
  list?(pg: number): Promise<{ ino: bigint; index: bigint }[]>;
  /** Makes every change so far durable, when changes are not synced one by one. */
  syncDirty?(): Promise<void>;
}
