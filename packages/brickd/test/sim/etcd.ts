import {
  KvCoordinator,
  type KvBackend,
  type KvCompare,
  type KvCoordinatorOptions,
  type KvPut,
  type KvRange,
  type KvEntry,
  type MemoryKv,
} from '@dunix/coord';
import { FsError } from '@dunix/proto';
import type { SimNode } from './net.js';
import type { SimRandom } from './random.js';

/**
 * One process's session with the simulated etcd (a MemoryKv shared by every
 * node, whose leases expire on the simulation clock). While the node is cut
 * off from etcd every call fails with UNAVAILABLE and its watches hear
 * nothing (when the cut heals they resynchronize, as an etcd watch does
 * after a reconnect); a session of a crashed incarnation fails the same
 * way; watch events for a paused node wait until it resumes. With
 * node.etcdReplyLoss > 0 a write may be applied in etcd and still fail for
 * the caller (the reply was lost): the outcome of a compare-and-swap is
 * then unknown to it.
 */
export class SessionKv implements KvBackend {
  private readonly incarnation: number;

  constructor(
    private readonly base: MemoryKv,
    private readonly node: SimNode,
    private readonly rng: SimRandom,
  ) {
    this.incarnation = node.incarnation;
  }

  /** A write whose reply may be lost (node.etcdReplyLoss): applied in etcd, failed for the caller. */
  private async write<T>(what: string, fn: () => Promise<T>): Promise<T> {
    this.check(what);
    const out = await fn();
    if (this.node.etcdReplyLoss > 0 && this.rng.chance(this.node.etcdReplyLoss))
      throw new FsError('UNAVAILABLE', `${what}: the reply from etcd was lost`);
    return out;
  }

  private check(what: string): void {
    if (this.node.incarnation !== this.incarnation)
      throw new FsError('UNAVAILABLE', `${what}: session of a dead process`);
    if (this.node.etcdCut) throw new FsError('UNAVAILABLE', `${what}: ${this.node.id} is cut off from etcd`);
  }

  async probe(timeoutMs: number): Promise<void> {
    this.check('probe');
    return this.base.probe(timeoutMs);
  }

  async range(prefix: string): Promise<KvRange> {
    this.check('range');
    return this.base.range(prefix);
  }

  async get(key: string): Promise<KvEntry | undefined> {
    this.check('get');
    return this.base.get(key);
  }

  async next(from: string, prefix: string): Promise<string | undefined> {
    this.check('next');
    return this.base.next(from, prefix);
  }

  put(p: KvPut): Promise<void> {
    return this.write('put', () => this.base.put(p));
  }

  txn(compares: KvCompare[], puts: KvPut[], deletes?: string[], deletePrefixes?: string[]): Promise<boolean> {
    return this.write('txn', () => this.base.txn(compares, puts, deletes, deletePrefixes));
  }

  grantLease(ttlMs: number): Promise<string> {
    return this.write('grant', () => this.base.grantLease(ttlMs));
  }

  keepalive(lease: string, timeoutMs: number): Promise<boolean> {
    return this.write('keepalive', () => this.base.keepalive(lease, timeoutMs));
  }

  revokeLease(lease: string): Promise<void> {
    return this.write('revoke', () => this.base.revokeLease(lease));
  }

  async watchPrefix(
    prefix: string,
    onEvent: (changed: string[] | undefined) => void,
  ): Promise<() => Promise<void>> {
    this.check('watch');
    const node = this.node;
    const incarnation = this.incarnation;
    let missed = false;
    let cancelled = false;
    const deliver = (changed: string[] | undefined) => {
      if (cancelled || node.incarnation !== incarnation) return;
      if (node.etcdCut) {
        missed = true;
        return;
      }
      if (node.paused) {
        node.held.push(() => deliver(changed));
        return;
      }
      onEvent(changed);
    };
    const healed = () => {
      if (!missed) return;
      missed = false;
      deliver(undefined);
    };
    node.onEtcdHeal.add(healed);
    const cancel = await this.base.watchPrefix(prefix, deliver);
    return async () => {
      cancelled = true;
      node.onEtcdHeal.delete(healed);
      await cancel();
    };
  }

  async close(): Promise<void> {}
}

/** The real coordinator logic (KvCoordinator) over one node's session. */
export class SimCoordinator extends KvCoordinator {
  constructor(kv: KvBackend, opts: KvCoordinatorOptions) {
    super(kv, opts);
  }

  /** The process died: leases are left to expire, nothing is revoked. */
  crash(): Promise<void> {
    return this.abandon();
  }
}
