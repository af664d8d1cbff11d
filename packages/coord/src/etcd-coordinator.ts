import { createLogger, type Logger } from '@dunix/proto';
import { type Clock, KvCoordinator } from './coordinator.js';
import { EtcdAccess } from './etcd-access.js';
import { EtcdKv } from './etcd-kv.js';
import type { EtcdTls } from './etcd-security.js';
import { type CoordinatorKnobs, validateCoordinatorKnobs } from './knobs.js';

export interface EtcdCoordinatorOptions {
  /** e.g. ["http://127.0.0.1:2379"], or https:// with `tls` (etcdEndpoints() checks the pair). */
  endpoints: string[];
  /** Client certificate for an etcd with --client-cert-auth (loadEtcdTls()). */
  tls?: EtcdTls | undefined;
  /** Overrides knobs.dialTimeoutMs: how long start() waits for etcd. */
  dialTimeoutMs?: number;
  log?: Logger;
  knobs?: Partial<CoordinatorKnobs>;
  clock?: Clock;
}

/** The Coordinator over a real etcd (v3 API). */
export class EtcdCoordinator extends KvCoordinator {
  /** Roles and users of etcd's RBAC (dunixctl etcd ..., volume create and delete). */
  readonly access: EtcdAccess;

  constructor(opts: EtcdCoordinatorOptions) {
    const log = opts.log ?? createLogger('coord');
    const knobs = validateCoordinatorKnobs({
      ...opts.knobs,
      ...(opts.dialTimeoutMs !== undefined ? { dialTimeoutMs: opts.dialTimeoutMs } : {}),
    });
    const kv = new EtcdKv({
      endpoints: opts.endpoints,
      tls: opts.tls,
      rpcTimeoutMs: knobs.rpcTimeoutMs,
      log,
    });
    super(kv, {
      knobs,
      log,
      ...(opts.clock ? { clock: opts.clock } : {}),
    });
    this.access = new EtcdAccess(kv.authApi());
  }
}
