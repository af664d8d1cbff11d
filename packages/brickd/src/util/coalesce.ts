/**
 * An expensive read (a full scan for a status RPC) shared by concurrent
 * callers: at most one run at a time and one queued. A caller never gets a
 * result that began before it called (it joins the queued run), so sharing
 * costs no freshness; a flood of callers costs two runs, not one each.
 */
export function coalesced<T>(run: () => Promise<T>): () => Promise<T> {
  let running: Promise<T> | undefined;
  let queued: Promise<T> | undefined;
  const start = (): Promise<T> => {
    const p = run().finally(() => {
      if (running === p) running = undefined;
    });
    running = p;
    return p;
  };
  return () => {
    if (!running) return start();
    queued ??= running
      .catch(() => undefined)
      .then(() => {
        queued = undefined;
        return start();
      });
    return queued;
  };
}
