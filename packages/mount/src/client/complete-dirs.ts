/**
 * Directories whose every name this client knows, so that a LOOKUP of a
 * name not among them is answered "not there" without asking the bricks:
 * the kernel looks a name up before every create, mkdir, symlink and rename
 * onto a new name, and in a directory this client just made (tar, cp -r,
 * make's output trees, a benchmark's create loop) that lookup is one of a
 * create's three round trips.
 *
 * Completeness comes only from a ReadDir that read the whole directory: the
 * primary registers the session on the directory before the read runs, so
 * every change committed after its snapshot is pushed to this session.
 * From then on it holds while
 *
 * - no push names the directory (another session changed a name in it, its
 *   attributes, or the primary forgot our registration), no reset or
 *   primary change drops the PG's registrations, and
 * - the registration lives: the primary keeps it for the session's cache
 *   TTL (+2 s) after the last call that registered the directory, so a
 *   directory stays complete until `ttlMs` after the sending of the last
 *   such call (its lookups, its own changes, a getattr), measured from
 *   before the send, so always inside the primary's window;
 *
 * and this client's own changes (create, unlink, rename...) keep the names.
 * A change of ours made while the ReadDir was in flight may or may not be
 * in its snapshot: it is applied again on top. Anything unclear (a change
 * of ours that failed, too many names) drops the directory to "ask the
 * bricks". Pure: the clock is injected.
 */
export interface CompleteDirsOptions {
  /** Complete directories remembered (least recently used go first). */
  dirsMax: number;
  /** Names remembered over all complete directories; past it the least recently used go. */
  namesMax: number;
}

export const completeDirsDefaults: CompleteDirsOptions = { dirsMax: 4096, namesMax: 65_536 };

interface Dir {
  names: Set<string>;
  /** Complete until then (clock ms). */
  validUntilMs: number;
}

interface Reading {
  /** Our own changes while the listing was read: name -> present. */
  changes: Map<string, boolean>;
  /** A push or a failed change of ours named the directory meanwhile. */
  spoiled: boolean;
}

const key = (name: Buffer): string => name.toString('latin1');

export class CompleteDirs {
  private readonly dirs = new Map<bigint, Dir>();
  private readonly reading = new Map<bigint, Reading>();
  private namesHeld = 0;
  /** Lookups answered here (metrics, tests). */
  answered = 0;

  constructor(
    private readonly nowMs: () => number,
    private readonly o: CompleteDirsOptions = completeDirsDefaults,
  ) {}

  /** A whole-directory ReadDir of `dir` is about to be sent. */
  startReading(dir: bigint): void {
    this.reading.set(dir, { changes: new Map(), spoiled: false });
  }

  /**
   * The ReadDir sent at `sentAtMs` returned every name (`names`; null: it
   * failed or did not reach the end): the directory is complete unless
   * something spoiled it meanwhile.
   */
  finishReading(dir: bigint, names: Buffer[] | null, sentAtMs: number, ttlMs: number): void {
    const r = this.reading.get(dir);
    this.reading.delete(dir);
    if (!r || r.spoiled || names === null || names.length > this.o.namesMax) return;
    const set = new Set(names.map(key));
    for (const [name, present] of r.changes) {
      if (present) set.add(name);
      else set.delete(name);
    }
    this.drop(dir);
    this.dirs.set(dir, { names: set, validUntilMs: sentAtMs + ttlMs });
    this.namesHeld += set.size;
    this.trim();
  }

  /** Whether `name` is known not to be in `dir` (counts the answer). */
  absent(dir: bigint, name: Buffer): boolean {
    const d = this.dirs.get(dir);
    if (!d) return false;
    if (this.nowMs() >= d.validUntilMs) {
      this.drop(dir);
      return false;
    }
    if (d.names.has(key(name))) return false;
    // Recently used: kept longest.
    this.dirs.delete(dir);
    this.dirs.set(dir, d);
    this.answered++;
    return true;
  }

  /** A call registering `dir` at its primary was sent at `sentAtMs` (and answered). */
  registered(dir: bigint, sentAtMs: number, ttlMs: number): void {
    const d = this.dirs.get(dir);
    if (d && this.nowMs() < d.validUntilMs) d.validUntilMs = Math.max(d.validUntilMs, sentAtMs + ttlMs);
  }

  /** A change of ours made `name` present (or absent) in `dir`. */
  changed(dir: bigint, name: Buffer, present: boolean): void {
    this.reading.get(dir)?.changes.set(key(name), present);
    const d = this.dirs.get(dir);
    if (!d) return;
    const k = key(name);
    if (present && !d.names.has(k)) {
      d.names.add(k);
      this.namesHeld++;
      this.trim();
    } else if (!present && d.names.delete(k)) this.namesHeld--;
  }

  /** Something about `dir` is not known any more (a push, a failed change of ours). */
  forget(dir: bigint): void {
    const r = this.reading.get(dir);
    if (r) r.spoiled = true;
    this.drop(dir);
  }

  /** Registrations at some primaries were lost: directories `lost` holds for go. */
  forgetWhere(lost: (dir: bigint) => boolean): void {
    for (const [dir, r] of this.reading) if (lost(dir)) r.spoiled = true;
    for (const dir of [...this.dirs.keys()]) if (lost(dir)) this.drop(dir);
  }

  /** Complete directories held (tests). */
  get size(): number {
    return this.dirs.size;
  }

  private drop(dir: bigint): void {
    const d = this.dirs.get(dir);
    if (!d) return;
    this.namesHeld -= d.names.size;
    this.dirs.delete(dir);
  }

  private trim(): void {
    while (this.dirs.size > this.o.dirsMax || this.namesHeld > this.o.namesMax) {
      const oldest = this.dirs.keys().next();
      if (oldest.done) break;
      this.drop(oldest.value);
    }
  }
}
