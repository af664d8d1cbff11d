import { FsError, type Router, type wire } from '@dunix/proto';
import {
  entriesToReplicate,
  entryFromWire,
  entryToWire,
  type BlockOp,
  type LogEntry,
  type LogPosition,
} from '../pg/log-entry.js';
import type {
  BackfillStep,
  ReplicaTransport,
  ScrubDigestReply,
  ScrubDigestRequest,
} from '../replication/deps.js';
import { u64 } from './wire.js';

/**
 * The replication protocol over the brick data path: calls to one named
 * brick (not routed by PG), each with a deadline. A brick that does not
 * answer in time counts as failed: the primary drops it from the in-sync set.
 */
export class ReplicaPeers implements ReplicaTransport {
  constructor(
    private readonly router: Router,
    private readonly timeoutMs: number,
  ) {}

  private call<Rep>(brick: string, method: string, pg: number, epoch: number, body: object): Promise<Rep> {
    return this.router
      .connFor(brick)
      .unary<Rep>(method, { header: { pg, epoch, requestId: '' }, ...body }, this.timeoutMs);
  }

  async replicate(
    brick: string,
    pg: number,
    epoch: number,
    entries: LogEntry[],
    catchUp: boolean,
  ): Promise<{ lastSeq: bigint; gap: boolean }> {
    const r = await this.call<wire.ReplicateReply__Output>(brick, 'Replicate', pg, epoch, {
      ...entriesToReplicate(entries),
      catchUp,
    });
    return { lastSeq: u64(r.lastSeq, 'lastSeq'), gap: r.gap };
  }

  async position(brick: string, pg: number, epoch: number): Promise<LogPosition> {
    const r = await this.call<wire.PgPositionReply__Output>(brick, 'PgPosition', pg, epoch, {});
    return {
      lastSeq: u64(r.lastSeq, 'lastSeq'),
      lastEpoch: Number(u64(r.lastEpoch, 'lastEpoch')),
      firstSeq: u64(r.firstSeq, 'firstSeq'),
    };
  }

  async fetchLog(
    brick: string,
    pg: number,
    epoch: number,
    fromSeq: bigint,
    entriesMax: number,
  ): Promise<LogEntry[]> {
    const r = await this.call<wire.FetchLogReply__Output>(brick, 'FetchLog', pg, epoch, {
      fromSeq: fromSeq.toString(),
      entriesMax,
    });
    return r.entries.map(entryFromWire);
  }

  async sync(brick: string, pg: number, epoch: number): Promise<void> {
    await this.call<object>(brick, 'SyncCopy', pg, epoch, {});
  }

  async fetchBlock(brick: string, pg: number, epoch: number, ino: bigint, index: bigint): Promise<BlockOp> {
    const r = await this.call<wire.FetchBlockReply__Output>(brick, 'FetchBlock', pg, epoch, {
      ino: ino.toString(),
      index: index.toString(),
    });
    if (!r.block) throw new FsError('IO', `FetchBlock from ${brick} returned no block`);
    const op = entryFromWire({ epoch: '1', seq: '1', requestId: '', kind: '', writes: [], blocks: [r.block] })
      .blocks[0]!;
    return op;
  }

  async scrubDigest(
    brick: string,
    pg: number,
    epoch: number,
    req: ScrubDigestRequest,
  ): Promise<ScrubDigestReply> {
    const r = await this.call<wire.ScrubDigestReply__Output>(brick, 'ScrubDigest', pg, epoch, {
      seq: req.seq.toString(),
      fromKey: req.fromKey,
      toKey: req.toKey,
      verifyBlocks: req.verifyBlocks,
      rows: req.rows,
    });
    return {
      digest: scrubHash(r.digest, 'digest'),
      keys: r.keys,
      bytes: Number(u64(r.bytes, 'bytes')),
      badBlocks: r.badBlocks.map((b) => ({
        ino: u64(b.ino, 'ino'),
        index: u64(b.index, 'index'),
        detail: b.detail,
      })),
      rows: r.rows.map((x) => ({ key: x.key, hash: scrubHash(x.hash, 'row hash') })),
      rowsTruncated: r.rowsTruncated,
    };
  }

  async backfill(brick: string, pg: number, epoch: number, step: BackfillStep): Promise<void> {
    let body: object;
    if (step.step === 'BEGIN') body = { step: 'BEGIN' };
    else if (step.step === 'CHUNK') {
      const shell = entryToWire(
        { epoch, seq: 1n, requestId: '', kind: 'backfill', writes: step.writes, blocks: step.blocks },
        true,
      );
      body = { step: 'CHUNK', writes: shell.writes, blocks: shell.blocks };
    } else body = { step: 'END', ...(step.base ? { base: entryToWire(step.base, false) } : {}) };
    await this.call<object>(brick, 'Backfill', pg, epoch, body);
  }
}

/** A scrub hash off the wire: 16 hex digits. */
function scrubHash(v: string, field: string): string {
  if (!/^[0-9a-f]{16}$/.test(v)) throw new FsError('INVALID_ARGUMENT', `${field} is not a scrub hash`);
  return v;
}
