import { connect } from 'node:net';
import { controllerDefaults } from '../knobs.js';

/**
 * Whether a brick's process is gone: 'down' only when that is certain (a
 * connection refused: nothing listens on its port any more), 'up' for
 * everything else, including a brick that does not answer (paused,
 * partitioned, overloaded): those are left to their lease.
 */
export type BrickProbe = (brickId: string, address: string) => Promise<'down' | 'up'>;

export interface TcpProbeOptions {
  /** A refusal must come within this long; a slower or no answer counts as 'up'. */
  connectTimeoutMs?: number;
}

/** host:port (host may be a bracketed IPv6 address) → [host, port]. */
export function splitAddress(address: string): [string, number] {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  return [host, Number(address.slice(i + 1))];
}

/**
 * The probe adapter: a TCP connect to the brick's address. ECONNREFUSED
 * within connectTimeoutMs means 'down' (a SIGKILLed process's ports refuse
 * at once); a connection, a timeout or any other error means 'up' (a
 * SIGSTOPped process still accepts connections in the kernel's backlog).
 */
export function tcpProbe(opts: TcpProbeOptions = {}): BrickProbe {
  const timeoutMs = opts.connectTimeoutMs ?? controllerDefaults.probeConnectTimeoutMs;
  return (_brickId, address) =>
    new Promise((resolve) => {
      const [host, port] = splitAddress(address);
      const socket = connect({ host, port });
      let done = false;
      const finish = (r: 'down' | 'up') => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        socket.destroy();
        resolve(r);
      };
      const timer = setTimeout(() => finish('up'), timeoutMs);
      socket.once('connect', () => finish('up'));
      socket.once('error', (e: NodeJS.ErrnoException) => finish(e.code === 'ECONNREFUSED' ? 'down' : 'up'));
    });
}
