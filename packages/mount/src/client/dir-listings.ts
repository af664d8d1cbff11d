import type { wire } from '@dunix/proto';

/**
 * Directories read whole with their entries' attributes after the kernel
 * looked several of their names up one by one, and the bricks found them
 * (statahead; a name not there, as before every create, does not count): a program that
 * stats the files of a directory it did not list through the kernel (`git
 * status`, `make`'s dependency checks, a find by name, the benchmark's cold
 * stats) then costs one ReadDir per 512 names instead of one Lookup per
 * name.
 *
 * An entry is handed out once (`take`): the kernel caches it from then on,
 * and asks again only when its own entry expires or is dropped, by which
 * time this copy is older than it needs to be. It is valid under the terms
 * of the other client caches (complete-dirs.ts), which here are:
 *
 * - the ReadDir registered the directory at its primary before it read
 *   (so a change of a name by another session is pushed), and each entry's
 *   inode after it read, leaving out the attributes of any inode changed
 *   while it ran (the brick's coherence service does): a push naming the
 *   directory or one of the inodes drops what it names;
 * - a change of ours naming the directory or one of the inodes (any call
 *   through BrickApi.mutate) drops the directory's listing, also one still
 *   being read;
 * - the registrations live: each entry is valid for the session's cache TTL
 *   from the sending of the ReadDir batch that returned it, measured from
 *   before the send, so always inside the primary's window; lookups do not
 *   extend it (they register the directory, not the inodes);
 * - a reset or a primary change of a PG drops every listing of a
 *   directory, and every entry of an inode, in it.
 *
 * Pure: the clock is injected.
 */
export interface DirListingsOptions {
  /** Lookups of one directory's names found by the bricks before it is read whole. */
  lookupsBeforeRead: number;
  /** A directory with more entries than this is not read whole (its names are looked up one by one). */
  entriesMax: number;
  /** Entries held over all listings; past it the least recently read listings go. */
  heldMax: number;
  /** Directories whose lookups are counted (least recently counted go first). */
  countedMax: number;
  /**
   * A directory too big to read whole, or that could not be read, is not
   * tried again for this long, whatever changes in it (a busy big directory
   * would otherwise be read in vain after every few lookups).
   */
  backoffMs: number;
}

export const dirListingsDefaults: DirListingsOptions = {
  lookupsBeforeRead: 3,
  entriesMax: 8192,
  // ~2 KiB of attributes per entry: 32,768 made the client 60 MiB bigger in the 100,000-file check.
  heldMax: 8192,
  countedMax: 1024,
  backoffMs: 60_000,
};

export function validateDirListingsOptions(o: DirListingsOptions): DirListingsOptions {
  const int = (v: number, lo: number, hi: number, what: string) => {
    if (!Number.isInteger(v) || v < lo || v > hi) throw new RangeError(`${what} must be ${lo}..${hi}`);
  };
  int(o.lookupsBeforeRead, 1, 1_000_000, 'lookupsBeforeRead');
  int(o.entriesMax, 1, 1_048_576, 'entriesMax');
  int(o.heldMax, 1, 4_194_304, 'heldMax');
  int(o.countedMax, 1, 1_048_576, 'countedMax');
  int(o.backoffMs, 0, 3_600_000, 'backoffMs');
  return o;
}

/** One entry of a whole-directory read: its name and, when the brick answered them, its attributes. */
export interface ListedEntry {
  name: Buffer;
  attr: wire.Attr__Output | null;
  /** Clock ms when the batch that returned it was sent. */
  sentAtMs: number;
}

interface Listing {
  /** name (latin1) -> attributes and valid-until (clock ms). */
  entries: Map<string, { attr: wire.Attr__Output; validUntilMs: number }>;
  /** The inodes of `entries`, for drops by inode. */
  inos: Set<bigint>;
  /** The last entry's validity: after it, the listing is of no use. */
  validUntilMs: number;
}

const key = (name: Buffer): string => name.toString('latin1');

export class DirListings {
  private readonly listings = new Map<bigint, Listing>();
  /** Directories being read -> whether something dropped them meanwhile. */
  private readonly reading = new Map<bigint, { spoiled: boolean; inos: Set<bigint> }>();
  /** Lookups found per directory since its last listing (or our last change in it). */
  private readonly lookups = new Map<bigint, number>();
  /** Directories not to read whole until then (clock ms): too big, or unreadable. */
  private readonly backoffUntil = new Map<bigint, number>();
  /** ino -> directories whose listing holds it. */
  private readonly dirsOf = new Map<bigint, Set<bigint>>();
  private held = 0;
  /** Lookups answered here (metrics, tests). */
  answered = 0;

  get entriesMax(): number {
    return this.o.entriesMax;
  }

  constructor(
    private readonly nowMs: () => number,
    private readonly o: DirListingsOptions = dirListingsDefaults,
  ) {
    validateDirListingsOptions(o);
  }

  /** A Lookup of a name in `dir` found it at the bricks: whether to read `dir` whole now. */
  lookupFound(dir: bigint): boolean {
    if (this.reading.has(dir)) return false;
    // A name the listing has no attributes for (an inode of a PG another brick leads): not a
    // reason to read the directory again while the listing lasts.
    const l = this.listings.get(dir);
    if (l && this.nowMs() < l.validUntilMs) return false;
    if (l) this.drop(dir);
    const until = this.backoffUntil.get(dir);
    if (until !== undefined) {
      if (this.nowMs() < until) return false;
      this.backoffUntil.delete(dir);
    }
    const n = this.lookups.get(dir) ?? 0;
    this.lookups.delete(dir);
    if (n + 1 >= this.o.lookupsBeforeRead) return true;
    this.lookups.set(dir, n + 1);
    if (this.lookups.size > this.o.countedMax) this.lookups.delete(this.lookups.keys().next().value!);
    return false;
  }

  /** A whole-directory ReadDir (with attributes) of `dir` is about to be sent. */
  startReading(dir: bigint): void {
    this.drop(dir);
    this.reading.set(dir, { spoiled: false, inos: new Set() });
  }

  /**
   * The whole-directory read of `dir` ended: `entries` is every entry, or
   * null (it was spoiled by a reset, or `backoff`: it failed, or the
   * directory has more than entriesMax entries, so it is not read whole
   * again for backoffMs).
   */
  finishReading(dir: bigint, entries: ListedEntry[] | null, ttlMs: number, backoff = false): void {
    const r = this.reading.get(dir);
    this.reading.delete(dir);
    if (backoff) {
      this.backoffUntil.delete(dir);
      this.backoffUntil.set(dir, this.nowMs() + this.o.backoffMs);
      if (this.backoffUntil.size > this.o.countedMax)
        this.backoffUntil.delete(this.backoffUntil.keys().next().value!);
    }
    if (!r || r.spoiled || entries === null || ttlMs <= 0) return;
    const l: Listing = { entries: new Map(), inos: new Set(), validUntilMs: 0 };
    for (const e of entries) {
      if (!e.attr) continue;
      const ino = BigInt(e.attr.ino);
      if (r.inos.has(ino)) continue; // dropped while the read ran
      l.entries.set(key(e.name), { attr: e.attr, validUntilMs: e.sentAtMs + ttlMs });
      l.inos.add(ino);
      l.validUntilMs = Math.max(l.validUntilMs, e.sentAtMs + ttlMs);
    }
    if (l.entries.size === 0) return;
    this.listings.set(dir, l);
    for (const ino of l.inos) {
      let dirs = this.dirsOf.get(ino);
      if (!dirs) this.dirsOf.set(ino, (dirs = new Set()));
      dirs.add(dir);
    }
    this.held += l.entries.size;
    while (this.held > this.o.heldMax) this.drop(this.listings.keys().next().value!);
  }

  /** The attributes of `name` in `dir`, while valid; handed out once (counts the answer). */
  take(dir: bigint, name: Buffer): wire.Attr__Output | undefined {
    const l = this.listings.get(dir);
    if (!l) return undefined;
    const k = key(name);
    const e = l.entries.get(k);
    if (!e) return undefined;
    l.entries.delete(k);
    this.held--;
    if (l.entries.size === 0) this.drop(dir);
    if (this.nowMs() >= e.validUntilMs) return undefined;
    this.answered++;
    return e.attr;
  }

  /** Something about directory `dir` (its names) is not known any more. */
  forgetDir(dir: bigint): void {
    const r = this.reading.get(dir);
    if (r) r.spoiled = true;
    this.lookups.delete(dir);
    this.drop(dir);
  }

  /**
   * `inos` changed (by us, or a push named their attributes): listings of
   * them as directories and listings holding them go, and reads running
   * leave them out.
   */
  forgetInodes(inos: readonly bigint[]): void {
    for (const ino of inos) {
      this.forgetDir(ino);
      for (const r of this.reading.values()) r.inos.add(ino);
      const dirs = this.dirsOf.get(ino);
      if (dirs) for (const d of [...dirs]) this.drop(d);
    }
  }

  /** Registrations at some primaries were lost: what `lost` names goes. */
  forgetWhere(lost: (ino: bigint) => boolean): void {
    // A read in flight may already hold entries whose registrations were just lost (each batch
    // registered its entries' inodes): none is kept, whichever PGs its entries are in.
    for (const r of this.reading.values()) r.spoiled = true;
    for (const [dir, l] of [...this.listings]) {
      if (lost(dir) || [...l.inos].some(lost)) this.drop(dir);
    }
  }

  /** Listings held and entries in them (tests). */
  get size(): { listings: number; entries: number } {
    return { listings: this.listings.size, entries: this.held };
  }

  private drop(dir: bigint): void {
    const l = this.listings.get(dir);
    if (!l) return;
    this.listings.delete(dir);
    this.held -= l.entries.size;
    for (const ino of l.inos) {
      const dirs = this.dirsOf.get(ino);
      dirs?.delete(dir);
      if (dirs?.size === 0) this.dirsOf.delete(ino);
    }
  }
}
