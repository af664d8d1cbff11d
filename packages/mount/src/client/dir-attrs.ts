import type { wire } from '@dunix/proto';

/**
 * A directory's attributes as this client's own last change of it left
 * them (the brick answers a create, mkdir, symlink, link, unlink or rename
 * with the directory after the change). The kernel forgets a directory's
 * attributes whenever one of its names changes and, checking permissions
 * itself (default_permissions), asks GETATTR of the directory before the
 * next create in it: answered from here, a create is one round trip
 * instead of two.
 *
 * Valid under the same terms as a complete directory (complete-dirs.ts):
 * the change registered the directory at its primary, so another
 * session's change of it is pushed here, and the entry goes with that
 * push, with a reset or a primary change of its PG, with any change of
 * ours that does not answer the new attributes, and `ttlMs` after the
 * change was sent. Pure: the clock is injected.
 */
export class DirAttrs {
  private readonly dirs = new Map<bigint, { attr: wire.Attr__Output; validUntilMs: number }>();
  /** GETATTRs answered here (metrics, tests). */
  answered = 0;

  constructor(
    private readonly nowMs: () => number,
    private readonly dirsMax = 4096,
  ) {}

  /** The directory `ino` is `attr` after our change sent at `sentAtMs`. */
  set(ino: bigint, attr: wire.Attr__Output | null | undefined, sentAtMs: number, ttlMs: number): void {
    this.dirs.delete(ino);
    if (!attr || ttlMs <= 0 || BigInt(attr.ino) !== ino) return;
    this.dirs.set(ino, { attr, validUntilMs: sentAtMs + ttlMs });
    if (this.dirs.size > this.dirsMax) this.dirs.delete(this.dirs.keys().next().value!);
  }

  /** The attributes, while valid (counts the answer). */
  get(ino: bigint): wire.Attr__Output | undefined {
    const d = this.dirs.get(ino);
    if (!d) return undefined;
    if (this.nowMs() >= d.validUntilMs) {
      this.dirs.delete(ino);
      return undefined;
    }
    this.answered++;
    return d.attr;
  }

  forget(ino: bigint): void {
    this.dirs.delete(ino);
  }

  forgetWhere(lost: (ino: bigint) => boolean): void {
    for (const ino of [...this.dirs.keys()]) if (lost(ino)) this.dirs.delete(ino);
  }

  clear(): void {
    this.dirs.clear();
  }

  get size(): number {
    return this.dirs.size;
  }
}
