/**
 * The written bytes of one block not sent yet, as sorted, separate ranges
 * (extents), each in a buffer of its own. Before, a block held one range
 * and a write apart from it sent the range first, so buffered random 4 KiB
 * writes (fio, databases) each cost a block write at the primary; now the
 * ranges of a block go together in one WriteBlock (up to
 * limits.writeExtentsPerCallMax of them).
 *
 * Buffers: a range that reaches 64 KiB lives in a whole-block buffer
 * (buf[0] is block offset 0; the caller's allocator recycles those), so a
 * sequential writer fills one buffer without copies; smaller ranges get a
 * buffer of their own that doubles as they grow. A write over several
 * ranges, or bridging the gap between them, makes one range of them all,
 * the new bytes copied last (later writes win).
 */
export interface Extent {
  /** Block offset of the first byte. */
  start: number;
  len: number;
  /** Holds the bytes: block offset `base` is buf[0]. */
  buf: Buffer;
  base: number;
}

/** Ranges at least this long live in whole-block buffers. */
export const LARGE_EXTENT_BYTES = 64 * 1024;

export class DirtyExtents {
  readonly extents: Extent[] = [];
  /** Bytes written (the sum of the ranges' lengths). */
  bytes = 0;

  constructor(
    private readonly blockSize: number,
    /** A buffer of `n` bytes; `n` is the block size for whole-block buffers. */
    private readonly alloc: (n: number) => Buffer,
    private readonly release: (buf: Buffer) => void,
  ) {}

  /** Copies `chunk` to block offset `offset`. */
  add(offset: number, chunk: Buffer): void {
    const end = offset + chunk.length;
    if (chunk.length === 0) return;
    if (end > this.blockSize) throw new RangeError(`write to ${end} past the block (${this.blockSize})`);
    const xs = this.extents;
    // The ranges the write overlaps or touches: [i, j).
    let i = 0;
    while (i < xs.length && xs[i]!.start + xs[i]!.len < offset) i++;
    let j = i;
    while (j < xs.length && xs[j]!.start <= end) j++;
    if (j === i) {
      xs.splice(i, 0, this.fresh(offset, chunk));
      this.bytes += chunk.length;
      return;
    }
    const first = xs[i]!;
    const lastEnd = xs[j - 1]!.start + xs[j - 1]!.len;
    const start = Math.min(offset, first.start);
    const newEnd = Math.max(end, lastEnd);
    let removed = 0;
    for (let k = i; k < j; k++) removed += xs[k]!.len;
    if (j - i === 1 && start >= first.base && newEnd <= first.base + first.buf.length) {
      // Inside (or growing within) the one range's buffer.
      chunk.copy(first.buf, offset - first.base);
      first.start = start;
      first.len = newEnd - start;
    } else {
      const merged = this.room(start, newEnd, first.len);
      for (let k = i; k < j; k++) {
        const x = xs[k]!;
        x.buf.copy(merged.buf, x.start - merged.base, x.start - x.base, x.start - x.base + x.len);
        this.release(x.buf);
      }
      chunk.copy(merged.buf, offset - merged.base);
      xs.splice(i, j - i, merged);
    }
    this.bytes += xs[i]!.len - removed;
  }

  /** Whether the block is written whole (one range over all of it). */
  get full(): boolean {
    return (
      this.extents.length === 1 && this.extents[0]!.start === 0 && this.extents[0]!.len === this.blockSize
    );
  }

  /** The bytes of each range, in order (views of the buffers). */
  views(): Buffer[] {
    return this.extents.map((x) => x.buf.subarray(x.start - x.base, x.start - x.base + x.len));
  }

  /** Drops bytes at and past block offset `keep` (a truncate). */
  truncate(keep: number): void {
    const xs = this.extents;
    for (let k = xs.length - 1; k >= 0; k--) {
      const x = xs[k]!;
      if (x.start >= keep) {
        this.bytes -= x.len;
        this.release(x.buf);
        xs.splice(k, 1);
      } else if (x.start + x.len > keep) {
        this.bytes -= x.start + x.len - keep;
        x.len = keep - x.start;
      }
    }
  }

  /** Gives every buffer back (after the bytes were sent, or dropped). */
  releaseAll(): void {
    for (const x of this.extents) this.release(x.buf);
    this.extents.length = 0;
    this.bytes = 0;
  }

  private fresh(offset: number, chunk: Buffer): Extent {
    const x = this.room(offset, offset + chunk.length, 0);
    chunk.copy(x.buf, offset - x.base);
    return x;
  }

  /** An empty range [start, end) with a buffer for it, room to grow when small. */
  private room(start: number, end: number, grownFrom: number): Extent {
    const len = end - start;
    if (len >= LARGE_EXTENT_BYTES) return { start, len, buf: this.alloc(this.blockSize), base: 0 };
    const want = Math.max(len, Math.min(LARGE_EXTENT_BYTES, grownFrom * 2));
    return { start, len, buf: this.alloc(Math.min(want, this.blockSize - start)), base: start };
  }
}
