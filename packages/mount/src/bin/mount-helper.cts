#!/usr/bin/env node
/**
 * mount.dunixfs SPEC DIR [-sfnv] [-o options]: what mount(8) runs for
 * `mount -t dunixfs` and fstab entries. Starts the client in the background
 * (its log goes to -o log=FILE, default /var/log/dunixfs/<dir>.log) and
 * returns once the mount is live, or fails with the client's last log lines.
 */
import('./mount-helper-main.js').then(
  async (m) => {
    process.exitCode = await m.main(process.argv.slice(2));
  },
  (err) => {
    console.error(err);
    process.exitCode = 1;
  },
);
