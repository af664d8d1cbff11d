/** What the capacity tests share: `dunixctl df` read as JSON, seeded file contents, a synced write's errno. */
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import type { Cluster } from './cluster.js';

export interface DfJson {
  replicas: number;
  fullThresholdPct: number;
  total: {
    usableCapacityBytes: number;
    usableFreeBytes: number;
    rawCapacityBytes: number;
    bricksFull: number;
    bricksUnknown: number;
  };
  bricks: {
    id: string;
    usage: { capacityBytes: number; usedBytes: number; freeBytes: number; state: string } | null;
    pgs: number;
  }[];
}

export function df(c: Cluster): DfJson {
  const r = c.ctl(['--json', 'df', c.volume]);
  if (r.status !== 0) throw new Error(`dunixctl df: ${r.stderr}`);
  return JSON.parse(r.stdout) as DfJson;
}

/** `length` bytes (a multiple of 4) that differ per seed. */
export function seededBytes(seed: number, length: number): Buffer {
  const b = Buffer.alloc(length);
  let x = (seed + 7) * 2654435761;
  for (let i = 0; i < length; i += 4) {
    x = (x * 1103515245 + 12345) >>> 0;
    b.writeUInt32LE(x, i);
  }
  return b;
}

/** Writes `data` at `offset` (opening with `flags`) and fsyncs; the errno code it failed with, or undefined. */
export function writeSynced(path: string, data: Buffer, offset = 0, flags = 'w'): string | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(path, flags);
    writeSync(fd, data, 0, data.length, offset);
    fsyncSync(fd);
    return undefined;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e);
  } finally {
    if (fd !== undefined) {
      try {
        closeSync(fd);
      } catch {
        /* the error above is the one that counts */
      }
    }
  }
}
