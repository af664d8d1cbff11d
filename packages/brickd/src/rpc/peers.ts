import { CHECKSUM_CHUNK_BYTES, FsError, type Router, type wire } from '@dunix/proto';
import type { PgEndpoint, TxKeyValue, TxState } from '../brick.js';
import { decodeRecord, type BlockRecord } from '../store/records.js';

/**
 * PgEndpoint for PGs served by other bricks: gRPC calls to the PG's primary,
 * retried across placement changes until `timeoutMs`.
 */
export class RemotePeers implements PgEndpoint {
  constructor(
    private readonly router: Router,
    private readonly timeoutMs: number,
  ) {}

  private async call<Rep>(pg: number, method: string, body: object): Promise<Rep> {
    const deadline = Date.now() + this.timeoutMs;
    for (let attempt = 0; ; attempt++) {
      try {
        const r = this.router.route(pg);
        return await r.conn.unary<Rep>(
          method,
          { header: { pg, epoch: r.epoch, requestId: '' }, ...body },
          Math.max(1, deadline - Date.now()),
        );
      } catch (err) {
        const again =
          err instanceof FsError &&
          (err.code === 'NOT_PRIMARY' || err.code === 'STALE_EPOCH' || err.code === 'UNAVAILABLE');
        if (!again || Date.now() >= deadline) throw err;
        await this.router.waitForUpdate(Math.min(1000, 20 * 2 ** Math.min(attempt, 6)));
      }
    }
  }

  async txRead(pg: number, keys: Buffer[]): Promise<(Buffer | undefined)[]> {
    const r = await this.call<wire.TxReadReply__Output>(pg, 'TxRead', { keys });
    return r.values.map((v) => (v.present ? v.value : undefined));
  }

  async txPrepare(
    pg: number,
    txId: string,
    coordinatorPg: number,
    reads: TxKeyValue[],
    writes: TxKeyValue[],
  ): Promise<void> {
    const enc = (kv: TxKeyValue) => ({
      key: kv.key,
      value: kv.value ?? Buffer.alloc(0),
      present: kv.value !== undefined,
    });
    await this.call(pg, 'TxPrepare', { txId, coordinatorPg, reads: reads.map(enc), writes: writes.map(enc) });
  }

  async txCommit(pg: number, txId: string): Promise<void> {
    await this.call(pg, 'TxCommit', { txId });
  }

  async txAbort(pg: number, txId: string): Promise<void> {
    await this.call(pg, 'TxAbort', { txId });
  }

  async txStatus(pg: number, txId: string): Promise<TxState> {
    const r = await this.call<wire.TxStatusReply__Output>(pg, 'TxStatus', { txId });
    if (r.state !== 'active' && r.state !== 'committed' && r.state !== 'aborted')
      throw new FsError('IO', `bad tx state ${r.state}`);
    return r.state;
  }

  async allocIno(pg: number): Promise<bigint> {
    const r = await this.call<wire.AllocInoReply__Output>(pg, 'AllocIno', {});
    return BigInt(r.ino);
  }

  async reclaim(pg: number, ino: bigint): Promise<void> {
    await this.call(pg, 'Reclaim', { ino: ino.toString() });
  }

  async truncateBlocks(pg: number, ino: bigint, size: bigint): Promise<void> {
    await this.call(pg, 'TruncateBlocks', { ino: ino.toString(), size: size.toString() });
  }

  async readBlock(pg: number, ino: bigint, index: bigint, offset: number, length: number): Promise<Buffer> {
    const r = await this.call<wire.ReadBlockReply__Output>(pg, 'ReadBlock', {
      ino: ino.toString(),
      index: index.toString(),
      offset,
      length,
    });
    return r.data;
  }

  async readBlockRecord(pg: number, ino: bigint, index: bigint): Promise<BlockRecord | undefined> {
    const r = await this.call<wire.ReadBlockReply__Output>(pg, 'ReadBlock', {
      ino: ino.toString(),
      index: index.toString(),
      recordOnly: true,
    });
    if (r.record.length === 0) return undefined;
    let rec: BlockRecord;
    try {
      rec = decodeRecord<BlockRecord>(r.record);
    } catch {
      throw new FsError('IO', `ReadBlock of pg ${pg} returned a block record that is not JSON`);
    }
    if (
      !Number.isSafeInteger(rec.length) ||
      rec.length < 0 ||
      !Array.isArray(rec.sums) ||
      rec.sums.length !== Math.ceil(rec.length / CHECKSUM_CHUNK_BYTES) ||
      !rec.sums.every((x) => typeof x === 'string')
    )
      throw new FsError('IO', `ReadBlock of pg ${pg} returned a malformed block record`);
    return rec;
  }

  async punchBlocks(pg: number, ino: bigint, from: bigint, to: bigint): Promise<void> {
    await this.call(pg, 'PunchBlocks', { ino: ino.toString(), from: from.toString(), to: to.toString() });
  }
}
