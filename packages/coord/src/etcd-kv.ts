import { FsError, type Logger } from '@dunix/proto';
import {
  CompareResult,
  CompareTarget,
  Etcd3,
  EtcdLeaseInvalidError,
  EtcdPermissionDeniedError,
  type IOptions,
  type Lease,
} from 'etcd3';
import type { EtcdAuthApi } from './etcd-access.js';
import type { EtcdTls } from './etcd-security.js';
import type { KvBackend, KvCompare, KvEntry, KvPut, KvRange } from './kv.js';

/** Largest gRPC message either way: a volume of 65536 PGs reads and writes ~8 MiB of placement. */
const GRPC_MESSAGE_MAX_BYTES = 64 * 1024 * 1024;

type HostPolicy = NonNullable<NonNullable<IOptions['faultHandling']>['host']>;
type Policy = ReturnType<HostPolicy>;
/**
 * etcd3's default policies retry three times and open a circuit for 5 s
 * after three failures; the coordinator has its own retry loops and
 * deadlines, so calls go straight through.
 */
const passthrough = { execute: async (fn: () => unknown) => fn() } as unknown as Policy;

function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i]! < 0xff) {
      const end = Buffer.from(b.subarray(0, i + 1));
      end[i]!++;
      return end;
    }
  }
  return Buffer.from([0]);
}

/** Rejects with TIMED_OUT if `p` does not settle within `ms` (a safety net over gRPC deadlines). */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new FsError('TIMED_OUT', `${what} after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export interface EtcdKvOptions {
  /** Full URLs (etcdEndpoints() in etcd-security.ts): https:// exactly when `tls` is given. */
  endpoints: string[];
  /** CA to trust and the client certificate to present (etcd runs with --client-cert-auth). */
  tls?: EtcdTls | undefined;
  rpcTimeoutMs: number;
  log: Logger;
}

/** KvBackend over etcd's v3 API (the `etcd3` client). */
export class EtcdKv implements KvBackend {
  private readonly client: Etcd3;
  private readonly leases = new Map<string, Lease>();
  private readonly rpcTimeoutMs: number;
  private readonly log: Logger;

  constructor(opts: EtcdKvOptions) {
    if (opts.endpoints.length === 0) throw new FsError('INVALID_ARGUMENT', 'no etcd endpoints');
    for (const e of opts.endpoints)
      if (e.startsWith('https://') !== !!opts.tls)
        throw new FsError(
          'INVALID_ARGUMENT',
          `etcd endpoint ${e}: ${opts.tls ? 'certificates given for a plain http endpoint' : 'https without certificates'}`,
        );
    this.rpcTimeoutMs = opts.rpcTimeoutMs;
    this.log = opts.log;
    this.client = new Etcd3({
      hosts: opts.endpoints,
      ...(opts.tls
        ? {
            credentials: { rootCertificate: opts.tls.ca, certChain: opts.tls.cert, privateKey: opts.tls.key },
          }
        : {}),
      grpcOptions: {
        'grpc.max_receive_message_length': GRPC_MESSAGE_MAX_BYTES,
        'grpc.max_send_message_length': GRPC_MESSAGE_MAX_BYTES,
      },
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + this.rpcTimeoutMs }),
      faultHandling: { host: () => passthrough, global: passthrough },
    });
  }

  private call<T>(p: Promise<T>, what: string, ms = this.rpcTimeoutMs): Promise<T> {
    return withTimeout(p, ms + 1000, `etcd ${what}`).catch((err: unknown) => {
      if (err instanceof EtcdPermissionDeniedError)
        throw new FsError(
          'NOT_PERMITTED',
          `etcd refused the ${what}: permission denied to this certificate's user (its CN; ` +
            'docs/OPERATIONS.md, "etcd": dunixctl etcd user add, or a certificate of the right kind)',
        );
      throw err;
    });
  }

  /** etcd's Auth API, for dunixctl's etcd commands (etcd-access.ts), each call under the RPC timeout. */
  authApi(): EtcdAuthApi {
    const a = this.client.auth;
    return {
      roleAdd: (r) => this.call(a.roleAdd(r), 'role add'),
      roleGet: (r) => this.call(a.roleGet(r), 'role get'),
      roleGrantPermission: (r) => this.call(a.roleGrantPermission(r), 'role grant'),
      roleRevokePermission: (r) => this.call(a.roleRevokePermission(r), 'role revoke'),
      userAdd: (r) => this.call(a.userAdd(r), 'user add'),
      userGrantRole: (r) => this.call(a.userGrantRole(r), 'user grant'),
      userList: async () => (await this.call(a.userList({}), 'user list')).users,
      authEnable: () => this.call(a.authEnable(), 'auth enable'),
    };
  }

  async probe(timeoutMs: number): Promise<void> {
    try {
      await withTimeout(
        this.client
          .get('/dunix/v1/probe')
          .options({ deadline: Date.now() + timeoutMs })
          .exec(),
        timeoutMs + 500,
        'etcd did not answer',
      );
    } catch (e) {
      throw new FsError('UNAVAILABLE', `etcd unreachable: ${(e as Error).message}`);
    }
  }

  async range(prefix: string): Promise<KvRange> {
    const res = await this.call(this.client.getAll().prefix(prefix).sort('Key', 'Ascend').exec(), 'range');
    return { entries: res.kvs.map(toEntry), revision: Number(res.header.revision) };
  }

  async get(key: string): Promise<KvEntry | undefined> {
    const res = await this.call(this.client.get(key).exec(), 'get');
    const kv = res.kvs[0];
    return kv ? toEntry(kv) : undefined;
  }

  async next(from: string, prefix: string): Promise<string | undefined> {
    const res = await this.call(
      this.client
        .getAll()
        .inRange({ start: from, end: prefixEnd(prefix) })
        .sort('Key', 'Ascend')
        .limit(1)
        .exec(),
      'range',
    );
    const kv = res.kvs[0];
    return kv ? kv.key.toString() : undefined;
  }

  async put(p: KvPut): Promise<void> {
    await this.txn([], [p]);
  }

  async txn(
    compares: KvCompare[],
    puts: KvPut[],
    deletes: string[] = [],
    deletePrefixes: string[] = [],
  ): Promise<boolean> {
    const ops = [
      ...deletePrefixes.map((p) => this.client.delete().prefix(p)),
      ...deletes.map((k) => this.client.delete().key(k)),
      ...puts.map((p) => {
        const b = this.client.put(p.key).value(p.value);
        return p.lease !== undefined ? b.lease(p.lease) : b;
      }),
    ];
    const keyed = compares.filter((c): c is { key: string; modRevision: number } => !('prefix' in c));
    const ranged = compares.filter((c): c is { prefix: string; notWrittenAfter: number } => 'prefix' in c);
    // A builder txn needs a compare to start from: without a key compare, one that always holds.
    let b =
      keyed.length > 0
        ? this.client.if(keyed[0]!.key, 'Mod', '==', keyed[0]!.modRevision)
        : this.client.if('/dunix/v1/', 'Create', '>', -1);
    for (const c of keyed.slice(1)) b = b.and(c.key, 'Mod', '==', c.modRevision);
    // etcd compares over a range (Compare.range_end), which the builder cannot say: added to its
    // request as the builder's own compares are (etcd3 lib/builder.js, ComparatorBuilder.and).
    const request = (b as unknown as { request: { compare: Promise<unknown>[] } }).request;
    for (const c of ranged) {
      request.compare.push(
        Promise.resolve({
          key: Buffer.from(c.prefix),
          range_end: prefixEnd(c.prefix),
          target: CompareTarget.Mod,
          result: CompareResult.Less,
          mod_revision: c.notWrittenAfter + 1,
        }),
      );
    }
    const res = await this.call(b.then(...ops).commit(), 'txn');
    return res.succeeded;
  }

  async grantLease(ttlMs: number): Promise<string> {
    const lease = this.client.lease(Math.ceil(ttlMs / 1000), { autoKeepAlive: false });
    lease.on('lost', () => undefined); // loss is seen by keepalive(); no unhandled event
    const id = await this.call(lease.grant(), 'lease grant');
    this.leases.set(id, lease);
    return id;
  }

  async keepalive(lease: string, timeoutMs: number): Promise<boolean> {
    const l = this.leases.get(lease);
    if (!l) return false;
    try {
      await this.call(l.keepaliveOnce({ deadline: Date.now() + timeoutMs }), 'lease keepalive', timeoutMs);
      return true;
    } catch (e) {
      if (e instanceof EtcdLeaseInvalidError) {
        this.leases.delete(lease);
        return false;
      }
      throw e;
    }
  }

  async revokeLease(lease: string): Promise<void> {
    const l = this.leases.get(lease);
    this.leases.delete(lease);
    if (l) {
      await this.call(l.revoke(), 'lease revoke');
      return;
    }
    // Another session's lease (a brick found dead): revoked by id.
    try {
      await this.call(this.client.leaseClient.leaseRevoke({ ID: lease }), 'lease revoke');
    } catch (e) {
      if (!(e instanceof EtcdLeaseInvalidError)) throw e;
    }
  }

  async watchPrefix(
    prefix: string,
    onEvent: (changed: string[] | undefined) => void,
  ): Promise<() => Promise<void>> {
    const watcher = await this.call(this.client.watch().prefix(prefix).create(), 'watch');
    let connectedOnce = false;
    watcher
      .on('put', (kv) => onEvent([kv.key.toString()]))
      .on('delete', (kv) => onEvent([kv.key.toString()]))
      .on('connected', () => {
        // After a reconnect the watch resumes, but a compaction may have hidden changes: re-read.
        if (connectedOnce) onEvent(undefined);
        connectedOnce = true;
      })
      .on('disconnected', (err) => this.log.warn('etcd watch disconnected; reconnecting', { prefix, err }))
      .on('error', (err) => {
        this.log.warn('etcd watch error', { prefix, err });
        onEvent(undefined);
      });
    return async () => {
      await watcher.cancel().catch(() => undefined);
    };
  }

  async close(): Promise<void> {
    for (const l of this.leases.values()) l.release();
    this.leases.clear();
    this.client.close();
  }
}

function toEntry(kv: { key: Buffer; value: Buffer; mod_revision: string; lease: string }): KvEntry {
  return {
    key: kv.key.toString(),
    value: kv.value.toString(),
    modRevision: Number(kv.mod_revision),
    lease: kv.lease && kv.lease !== '0' ? kv.lease : undefined,
  };
}
