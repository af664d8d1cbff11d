/**
 * Recycled 1 MiB buffers for block data on its way out of a brick: a fresh
 * 1 MiB allocation costs page faults (~0.3 ms on the test machine), more
 * than filling it. The frame reader takes one for each tail frame (block
 * bytes coming in). A buffer is handed back only where its last use is
 * certain: by the frame server once the socket has written a reply made of
 * it, by the brick's WriteBlock and Replicate handlers once the bytes are in
 * the block files and no replica send holds them, and by the FUSE session
 * once a reply made of it is written (`giveBack`).
 * Anything else simply lets it go to the garbage collector.
 */
/** A block (1 MiB by default) plus room for a frame's message around it. */
const POOLED_BYTES = 1024 * 1024 + 64 * 1024;
const SPARE_MAX = 16;
const spare: ArrayBuffer[] = [];
const ours = new WeakSet<ArrayBuffer>();

/** A buffer of `bytes` (uninitialised), from the pool when it fits a pooled buffer. */
export function takeBuffer(bytes: number): Buffer {
  if (bytes > POOLED_BYTES) return Buffer.allocUnsafeSlow(bytes);
  let ab = spare.pop();
  if (!ab) {
    ab = Buffer.allocUnsafeSlow(POOLED_BYTES).buffer as ArrayBuffer;
    ours.add(ab);
  }
  return Buffer.from(ab, 0, bytes);
}

/** Returns a buffer (or any view of one) taken from the pool. The caller must not touch it again. */
export function giveBack(view: Buffer): void {
  const ab = view.buffer as ArrayBuffer;
  if (ours.has(ab) && spare.length < SPARE_MAX && !spare.includes(ab)) spare.push(ab);
}
