import { FsError } from '@dunix/proto';
import type { LogEntry } from '../pg/log-entry.js';

/**
 * The live stream of one PG's entries to one replica. At most one Replicate
 * is in flight; the entries appended meanwhile go together in the next one,
 * in sequence order. So a PG with many concurrent callers (parallel
 * creators, write-behind of several blocks) pays one round trip and one
 * replica wakeup for many entries, while a lone caller's entry still goes at
 * once (no waiting to fill a batch). Free of I/O: `send` does it.
 */
export interface ReplicaSenderDeps {
  /**
   * Sends entries that follow each other; resolves to the replica's last
   * sequence after applying them (at least the last entry's). Throws when
   * the replica did not take them.
   */
  send(entries: LogEntry[]): Promise<bigint>;
  /** Block bytes of one batch (an entry bigger than this goes alone). */
  batchBytesMax: number;
  /** Entries of one batch. */
  batchEntriesMax: number;
}

interface Queued {
  entry: LogEntry;
  bytes: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

function dataBytes(e: LogEntry): number {
  let n = 0;
  for (const op of e.blocks) n += op.data?.length ?? 0;
  return n;
}

/**
 * An entry that must go alone: a CLONE may be refused by a replica without
 * the source, and is then resent with the bytes (Replication.replicateLive).
 */
function goesAlone(e: LogEntry): boolean {
  return e.blocks.some((op) => op.kind === 'CLONE');
}

export class ReplicaSender {
  private queued: Queued[] = [];
  private busy = false;

  constructor(private readonly d: ReplicaSenderDeps) {}

  /** Resolves once the replica has `e` (and everything before it); rejects when it did not take it. */
  push(e: LogEntry): Promise<void> {
    const last = this.queued[this.queued.length - 1];
    if (last && last.entry.seq >= e.seq)
      throw new Error(`invariant: entry ${e.seq} pushed after ${last.entry.seq}`);
    return new Promise<void>((resolve, reject) => {
      this.queued.push({ entry: e, bytes: dataBytes(e), resolve, reject });
      if (!this.busy) void this.pump();
    });
  }

  private take(): Queued[] {
    const first = this.queued[0]!;
    let n = 1;
    let bytes = first.bytes;
    if (!goesAlone(first.entry)) {
      while (n < this.queued.length && n < this.d.batchEntriesMax) {
        const next = this.queued[n]!;
        if (goesAlone(next.entry) || bytes + next.bytes > this.d.batchBytesMax) break;
        bytes += next.bytes;
        n++;
      }
    }
    return this.queued.splice(0, n);
  }

  private async pump(): Promise<void> {
    this.busy = true;
    try {
      while (this.queued.length > 0) {
        const batch = this.take();
        let lastSeq: bigint;
        try {
          lastSeq = await this.d.send(batch.map((q) => q.entry));
        } catch (err) {
          // The replica may lack the batch: what was queued behind it cannot
          // follow it (each append then drops the replica from the in-sync set).
          const behind = this.queued;
          this.queued = [];
          for (const q of [...batch, ...behind]) q.reject(err);
          continue;
        }
        for (const q of batch) {
          if (q.entry.seq <= lastSeq) q.resolve();
          else q.reject(new FsError('LOG_GAP', `replica is at ${lastSeq}, short of ${q.entry.seq}`));
        }
      }
    } finally {
      this.busy = false;
    }
  }
}
