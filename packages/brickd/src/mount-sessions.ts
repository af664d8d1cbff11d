import type { Coordinator } from '@dunix/coord';

/** How long one listing of the volume's mount records is reused. */
const MOUNT_SESSIONS_CACHE_MS = 2000;

/**
 * The ids of the volume's live mount sessions (their records in etcd, bound
 * to each mount's lease), for BrickDeps.mountsAlive: listed at most every
 * MOUNT_SESSIONS_CACHE_MS (`fresh`: listed now, e.g. before a session
 * missing from the cached list is taken for gone: it may have registered
 * since); undefined while etcd does not answer, so nothing is reclaimed on
 * a guess.
 */
export function mountSessions(
  coord: Coordinator,
  volume: string,
): (fresh?: boolean) => Promise<ReadonlySet<string> | undefined> {
  let cached: { ids: ReadonlySet<string>; atMs: number } | undefined;
  return async (fresh = false) => {
    if (!fresh && cached && Date.now() - cached.atMs < MOUNT_SESSIONS_CACHE_MS) return cached.ids;
    try {
      const ids = new Set((await coord.listMounts(volume)).map((m) => m.id));
      cached = { ids, atMs: Date.now() };
      return ids;
    } catch {
      return undefined;
    }
  };
}
