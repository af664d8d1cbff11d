#!/usr/bin/env node
/**
 * dunixfs-passthrough SRC MNT: mirrors SRC at MNT through our FUSE layer and
 * stays in the foreground until unmounted or signalled (like `bindfs -f`).
 *
 * This entry is CommonJS on purpose: libuv sizes its threadpool once, at first
 * use, and loading an ES module already uses it. Every outstanding /dev/fuse
 * read blocks one pool thread, so the size must be set before anything loads.
 * The session checks the size it gets (see threadpoolSizeFor).
 */
process.env.UV_THREADPOOL_SIZE ??= '24';
import('./passthrough-main.js').then(
  async (m) => {
    process.exitCode = await m.main(process.argv.slice(2));
  },
  (err) => {
    console.error(err);
    process.exitCode = 1;
  },
);
