/**
 * A private network of "hosts" for multi-host tests: one network namespace
 * per host, each with a veth pair whose other end is on a bridge inside a
 * "switch" namespace of its own. Nothing is created in the root namespace:
 * no interface, route or address of the machine is touched, and the
 * addresses (10.213.0.0/24, fd13:213::/64) exist only inside these namespaces. A host's link
 * can be cut (`ip link set eth0 down` in it) and brought back. destroy()
 * removes every namespace; the reaper does it if the test process dies.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { reap } from './reaper.js';

export const SUBNET_PREFIX = '10.213.0.';
/** IPv6 too (a unique-local prefix), so that bricks can be tested on IPv6 literals. */
export const SUBNET6_PREFIX = 'fd13:213::';

export interface NetHost {
  /** The namespace's name (ip netns). */
  readonly ns: string;
  /** Its address on the private bridge. */
  readonly address: string;
  /** Its IPv6 address there (bare, no brackets). */
  readonly address6: string;
  /** The command prefix that runs a program in this host's namespace. */
  exec(cmd: string, args: string[]): [string, string[]];
  /** Takes its link down (as a pulled cable) or up again. */
  link(up: boolean): void;
}

export interface NetLab {
  readonly hosts: NetHost[];
  /** Removes every namespace (kill what runs in them first). Idempotent. */
  destroy(): void;
}

function ip(args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${(r.stderr || String(r.error)).trim()}`);
}

/** Why namespaces cannot be made here (not root, no ip, no permission), or undefined when they can. */
export function netnsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'not root';
  const name = `dunix-probe-${randomBytes(3).toString('hex')}`;
  const r = spawnSync('ip', ['netns', 'add', name], { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) return `ip netns add: ${(r.stderr || String(r.error)).trim()}`;
  spawnSync('ip', ['netns', 'del', name], { timeout: 10_000 });
  return undefined;
}

/** Hosts h0..h(n-1) at 10.213.0.(10+i) and fd13:213::(10+i) on one bridge. */
export function createNetLab(n: number): NetLab {
  const tag = `dunix-${randomBytes(3).toString('hex')}`;
  const sw = `${tag}-sw`;
  const made: string[] = [];
  const add = (name: string) => {
    reap.add({ kind: 'netns', path: name });
    ip(['netns', 'add', name]);
    made.push(name);
  };
  let destroyed = false;
  const destroy = () => {
    if (destroyed) return;
    destroyed = true;
    for (const name of made.reverse()) {
      spawnSync('ip', ['netns', 'del', name], { timeout: 10_000 });
      reap.remove({ kind: 'netns', path: name });
    }
  };
  try {
    add(sw);
    ip(['-n', sw, 'link', 'add', 'br0', 'type', 'bridge']);
    ip(['-n', sw, 'link', 'set', 'br0', 'up']);
    const hosts: NetHost[] = [];
    for (let i = 0; i < n; i++) {
      const ns = `${tag}-h${i}`;
      const address = `${SUBNET_PREFIX}${10 + i}`;
      const address6 = `${SUBNET6_PREFIX}${10 + i}`;
      add(ns);
      // Both ends are made inside the switch namespace; one moves to the host's.
      ip(['-n', sw, 'link', 'add', `p${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      ip(['-n', sw, 'link', 'set', `p${i}`, 'master', 'br0']);
      ip(['-n', sw, 'link', 'set', `p${i}`, 'up']);
      ip(['-n', ns, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
      // nodad: usable at once (duplicate address detection would hold it ~1 s; nothing else is on this bridge).
      ip(['-n', ns, 'addr', 'add', `${address6}/64`, 'dev', 'eth0', 'nodad']);
      ip(['-n', ns, 'link', 'set', 'lo', 'up']);
      ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
      hosts.push({
        ns,
        address,
        address6,
        exec: (cmd, args) => ['ip', ['netns', 'exec', ns, cmd, ...args]],
        link: (up) => ip(['-n', ns, 'link', 'set', 'eth0', up ? 'up' : 'down']),
      });
    }
    return { hosts, destroy };
  } catch (err) {
    destroy();
    throw err;
  }
}
