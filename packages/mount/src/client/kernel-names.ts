/** Directories remembered at most (the least recently used go first). */
const DIRS_MAX = 4096;
/** Names remembered per directory at most (the oldest go first). */
const NAMES_PER_DIR_MAX = 64;
/** Inodes remembered at most (the least recently handed out go first). */
const INODES_MAX = 65_536;

/**
 * Names this client has handed to the kernel (LOOKUP, CREATE), per
 * directory, and the directories an inode was found in: what the kernel may
 * still hold as cached entries. After a lock is granted on an inode, the
 * entries of its directories are dropped, so a program that coordinates
 * through locks (sqlite's rollback journal beside its database) sees names
 * another machine created or removed under the lock, not cached ones.
 * Bounded; forgetting a name only means its entry lives out its TTL.
 */
export class KernelNames {
  private readonly names = new Map<bigint, Map<string, Buffer>>();
  private readonly parents = new Map<bigint, bigint>();
  /** Inodes whose attributes were handed to the kernel (LOOKUP, GETATTR, CREATE, READDIRPLUS). */
  private readonly inodes = new Set<bigint>();

  /** The kernel was given `ino`'s attributes. */
  cached(ino: bigint): void {
    this.inodes.delete(ino);
    this.inodes.add(ino);
    if (this.inodes.size > INODES_MAX) this.inodes.delete(this.inodes.values().next().value!);
  }

  /**
   * What the kernel may hold of inodes for which `inPg` holds: the inodes, and the
   * names remembered in such directories. Used when registrations there were lost.
   */
  cachedWhere(inPg: (ino: bigint) => boolean): {
    inodes: bigint[];
    names: { parent: bigint; name: Buffer }[];
  } {
    const inodes = [...this.inodes].filter(inPg);
    const names: { parent: bigint; name: Buffer }[] = [];
    for (const [parent, dir] of this.names) {
      if (inPg(parent)) for (const name of dir.values()) names.push({ parent, name });
    }
    return { inodes, names };
  }

  /** The names remembered in directory `dir`. */
  namesIn(dir: bigint): Buffer[] {
    return [...(this.names.get(dir)?.values() ?? [])];
  }

  /** `name` in `parent` was handed to the kernel: as `ino`, or (no ino) as a name that is not there. */
  noted(parent: bigint, name: Buffer, ino?: bigint): void {
    let dir = this.names.get(parent);
    if (dir) this.names.delete(parent);
    else dir = new Map();
    this.names.set(parent, dir);
    const key = name.toString('latin1');
    dir.delete(key);
    dir.set(key, Buffer.from(name));
    if (dir.size > NAMES_PER_DIR_MAX) dir.delete(dir.keys().next().value!);
    if (this.names.size > DIRS_MAX) this.names.delete(this.names.keys().next().value!);
    if (ino === undefined) return;
    this.parents.delete(ino);
    this.parents.set(ino, parent);
    if (this.parents.size > DIRS_MAX * 4) this.parents.delete(this.parents.keys().next().value!);
  }

  /** The names remembered in the directory `ino` was last found in (with that directory). */
  siblingsOf(ino: bigint): { parent: bigint; names: Buffer[] } | undefined {
    const parent = this.parents.get(ino);
    const dir = parent === undefined ? undefined : this.names.get(parent);
    return parent === undefined || !dir ? undefined : { parent, names: [...dir.values()] };
  }
}
