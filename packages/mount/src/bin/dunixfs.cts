#!/usr/bin/env node
/**
 * dunixfs HOST:PORT/VOLUME MOUNTPOINT [-o options]: the dunixfs client in the
 * foreground. CommonJS so UV_THREADPOOL_SIZE is set before libuv starts its
 * pool (see dunixfs-passthrough.cts).
 */
process.env.UV_THREADPOOL_SIZE ??= '24';
import('./dunixfs-main.js').then(
  async (m) => {
    process.exitCode = await m.main(process.argv.slice(2));
  },
  (err) => {
    console.error(err);
    process.exitCode = 1;
  },
);
