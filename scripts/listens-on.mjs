import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/**
 * Whether process `pid` holds a TCP socket listening on `port` (from /proc):
 * the launcher and the bench use it to tell their own etcd from another one
 * that answers /health on the same port. (packages/coord/src/etcd-process.ts
 * has the same check for spawnEtcd; plain .mjs callers run before the build.)
 */
export function listensOn(pid, port) {
  const hexPort = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const inodes = new Set();
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/); // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
    if (f[1]?.endsWith(hexPort) && f[3] === '0A') inodes.add(`socket:[${f[9]}]`);
  }
  try {
    return readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        return inodes.has(readlinkSync(`/proc/${pid}/fd/${fd}`));
      } catch {
        return false;
      }
    });
  } catch {
    return false;
  }
}
