/**
 * What one server (a brick's frame server) lets its peers hold: connections,
 * calls and bytes per connection, idle time. A peer that misbehaves (opens
 * connections without end, sends calls without reading replies) is slowed
 * or dropped; it never grows the brick's memory without bound.
 * docs/LIMITS.md "Server connections" explains each.
 */
export interface ConnLimits {
  /**
   * Connections a server keeps at once. One more closes the connection that
   * has been idle longest (nothing in flight), or is refused when none is idle.
   */
  connectionsMax: number;
  /** Calls of one connection being served at once; past it the server stops reading that connection. */
  inflightCallsPerConnMax: number;
  /**
   * Bytes of one connection's calls being served, each call counting its
   * request and the reply it asks for (a read's `length`); past it the
   * server stops reading that connection.
   */
  inflightBytesPerConnMax: number;
  /**
   * Reply bytes queued on one connection that its peer has not read; past it
   * the server stops reading that connection until the peer drains them.
   */
  queuedBytesPerConnMax: number;
  /** A connection with nothing in flight and no traffic for this long is closed (the peer redials). */
  idleTimeoutMs: number;
}

export const connLimitDefaults: ConnLimits = {
  connectionsMax: 4096,
  inflightCallsPerConnMax: 1024,
  inflightBytesPerConnMax: 64 * 1024 * 1024,
  queuedBytesPerConnMax: 32 * 1024 * 1024,
  idleTimeoutMs: 10 * 60_000,
};

/** The bounds; `messageMaxBytes` is the largest frame (one always fits). */
export function validateConnLimits(l: ConnLimits, messageMaxBytes: number): ConnLimits {
  const bad: string[] = [];
  const within = (name: keyof ConnLimits, min: number, max: number) => {
    const v = l[name];
    if (!Number.isInteger(v) || v < min || v > max) bad.push(`${name} ${v} must be ${min}..${max}`);
  };
  within('connectionsMax', 1, 1_000_000);
  within('inflightCallsPerConnMax', 1, 65_536);
  within('inflightBytesPerConnMax', messageMaxBytes, 2 ** 34);
  within('queuedBytesPerConnMax', 64 * 1024, 2 ** 34);
  within('idleTimeoutMs', 1000, 86_400_000);
  if (bad.length) throw new RangeError(`invalid connection limits: ${bad.join('; ')}`);
  return l;
}
