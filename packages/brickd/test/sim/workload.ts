import {
  blockPg,
  CHECKSUM_CHUNK_BYTES,
  FsError,
  pgOfIno,
  Router,
  type RetryKnobs,
  type RoutingSnapshot,
  type wire,
} from '@dunix/proto';
import type { SimNet, SimNode } from './net.js';
import type { SimRandom } from './random.js';
import type { Trace } from './trace.js';

export const ROOT_CALLER = { uid: 0, gid: 0, groups: [], pid: 1 };

/** One operation a client issued, and what became of it. */
export interface OpRecord {
  id: number;
  client: string;
  kind: 'mkdir' | 'create' | 'setxattr' | 'write-inline' | 'write-block';
  pg: number;
  requestId: string;
  invokedAt: number;
  doneAt: number | undefined;
  /** acked: a success reply came back; maybe: it failed, and may or may not have been applied. */
  status: 'pending' | 'acked' | 'maybe';
  error: string | undefined;
  /** create, mkdir: the directory and name; and the inode the reply named. */
  dir?: bigint;
  name?: string;
  ino?: bigint;
  /** setxattr, write-inline, write-block: the object written and its content once this op applies. */
  object?: string;
  after?: Buffer;
}

/**
 * A piece of state that one client alone writes, one op at a time: an
 * xattr, an inline file's content, a block. Its final content must be what
 * its last acknowledged op left, or what the op after it left if that one
 * failed (it may have been applied); after a failed op the client writes the
 * object no more, so no other outcome is possible.
 */
export interface ObjectModel {
  key: string;
  kind: 'xattr' | 'inline' | 'block';
  ino: bigint;
  pg: number;
  /** xattr: its name; block: its index. */
  detail: string;
  /** Content before any op (undefined: absent). */
  initial: Buffer | undefined;
  ops: OpRecord[];
  retired: boolean;
}

export interface FileModel {
  ino: bigint;
  pg: number;
  dir: bigint;
  name: string;
}

export interface WorkloadKnobs {
  /** A client waits 0 .. this between ops. */
  thinkMaxMs: number;
  /** How long one op is retried through failover before it fails (TIMED_OUT). */
  opDeadlineMs: number;
  /** Backstop deadline of one attempt. */
  callTimeoutMs: number;
  blockSizeBytes: number;
  pgCount: number;
}

/** Everything the clients did: the model the checkers compare the cluster with. */
export class History {
  readonly ops: OpRecord[] = [];
  readonly objects = new Map<string, ObjectModel>();
  readonly files: FileModel[] = [];
  /** Directories to create files in (root and the pre-made ones). */
  readonly dirs: bigint[] = [];
  /** Things a client saw that no correct cluster does (an acked file missing, a bug's error). */
  readonly anomalies: string[] = [];
}

/**
 * A client process: its own Router (the real retry policy: same request id
 * on every attempt, retried through failover until the op's deadline) over
 * the simulated network, and a workload of single-PG ops: creates in the
 * given directories, setxattr and inline writes on its own files, block
 * writes (spread over every PG by the block hash).
 */
export class SimClient {
  readonly router: Router;
  private counter = 0;
  private files: FileModel[] = [];
  busy = false;

  constructor(
    readonly id: string,
    readonly node: SimNode,
    net: SimNet,
    private readonly history: History,
    private readonly rng: SimRandom,
    private readonly k: WorkloadKnobs,
    private readonly trace: Trace,
    retryKnobs: Partial<RetryKnobs>,
    onRefused: (brickId: string) => void,
  ) {
    this.router = new Router({
      knobs: retryKnobs,
      clock: node.clock,
      connect: (b, events) => net.conn(node, b.id, events.onConnectionRefused),
      onConnectionRefused: onRefused,
    });
  }

  update(s: RoutingSnapshot): void {
    this.router.update(s);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.node.clock.setTimeout(resolve, ms));
  }

  /** Issues ops one after the other until `stopAt` (simulated ms). */
  async run(stopAt: number): Promise<void> {
    this.busy = true;
    try {
      while (this.node.clock.now() < stopAt) {
        await this.sleep(this.rng.int(0, this.k.thinkMaxMs));
        if (this.node.clock.now() >= stopAt) break;
        await this.oneOp();
      }
    } finally {
      this.busy = false;
    }
  }

  private newOp(kind: OpRecord['kind'], pg: number, requestId: string): OpRecord {
    const op: OpRecord = {
      id: this.history.ops.length,
      client: this.id,
      kind,
      pg,
      requestId,
      invokedAt: this.node.clock.now(),
      doneAt: undefined,
      status: 'pending',
      error: undefined,
    };
    this.history.ops.push(op);
    return op;
  }

  private requestId(): string {
    return `${this.id}.${(++this.counter).toString(36)}`;
  }

  /** Runs one call under the router's retry policy and records its outcome. */
  private async call<Rep>(op: OpRecord, method: string, body: object): Promise<Rep | undefined> {
    this.trace.add(this.id, `call ${op.id} ${op.kind}`, { pg: op.pg, req: op.requestId, object: op.object });
    try {
      const reply = await this.router.call<Rep>(op.pg, method, body, {
        requestId: op.requestId,
        deadlineMs: this.k.opDeadlineMs,
        callTimeoutMs: this.k.callTimeoutMs,
      });
      op.status = 'acked';
      op.doneAt = this.node.clock.now();
      this.trace.add(this.id, `acked ${op.id}`);
      return reply;
    } catch (err) {
      op.status = 'maybe';
      op.doneAt = this.node.clock.now();
      op.error = err instanceof FsError ? err.code : String(err);
      this.trace.add(this.id, `failed ${op.id}`, { err: op.error });
      const expected =
        err instanceof FsError &&
        (err.code === 'TIMED_OUT' ||
          err.code === 'NOT_ENOUGH_REPLICAS' ||
          // An exclusive create whose earlier attempt was applied, and whose stored reply the retry missed.
          (err.code === 'ALREADY_EXISTS' && (op.kind === 'create' || op.kind === 'mkdir')));
      if (!expected)
        this.history.anomalies.push(
          `${this.id}: op ${op.id} (${op.kind} in pg ${op.pg}) failed: ${String(err)}`,
        );
      return undefined;
    }
  }

  /** mkdir in the root (setup: a directory whose inode lands in another PG is a cross-PG transaction). */
  async mkdir(parent: bigint, name: string): Promise<bigint | undefined> {
    const op = this.newOp('mkdir', pgOfIno(parent), this.requestId());
    op.dir = parent;
    op.name = name;
    const r = await this.call<wire.EntryReply__Output>(op, 'Mkdir', {
      caller: ROOT_CALLER,
      parent: parent.toString(),
      name: Buffer.from(name),
      mode: 0o755,
    });
    if (!r?.entry) return undefined;
    op.ino = BigInt(r.entry.ino);
    return op.ino;
  }

  private async oneOp(): Promise<void> {
    const live = this.files;
    const kind = live.length === 0 ? 0 : this.rng.weighted([3, 2, 2, 3]); // create, setxattr, inline, block
    if (kind === 0) return this.create();
    const file = this.rng.pick(live);
    if (kind === 1) return this.setxattr(file);
    if (kind === 2) return this.writeInline(file);
    return this.writeBlock(file);
  }

  private async create(): Promise<void> {
    const dir = this.rng.pick(this.history.dirs);
    const name = `${this.id}-f${this.counter + 1}`;
    const op = this.newOp('create', pgOfIno(dir), this.requestId());
    op.dir = dir;
    op.name = name;
    const r = await this.call<wire.EntryReply__Output>(op, 'Mknod', {
      caller: ROOT_CALLER,
      parent: dir.toString(),
      name: Buffer.from(name),
      mode: 0o100644,
      exclusive: true,
    });
    if (!r) return;
    if (!r.entry || r.existed) {
      this.history.anomalies.push(`${this.id}: create ${op.id} answered without a new entry`);
      return;
    }
    op.ino = BigInt(r.entry.ino);
    const f: FileModel = { ino: op.ino, pg: pgOfIno(op.ino), dir, name };
    this.files.push(f);
    this.history.files.push(f);
  }

  /** The model of an object this client writes; undefined once retired. */
  private object(
    key: string,
    kind: ObjectModel['kind'],
    ino: bigint,
    pg: number,
    detail: string,
    initial: Buffer | undefined,
  ): ObjectModel | undefined {
    let o = this.history.objects.get(key);
    if (!o) {
      o = { key, kind, ino, pg, detail, initial, ops: [], retired: false };
      this.history.objects.set(key, o);
    }
    return o.retired ? undefined : o;
  }

  private current(o: ObjectModel): Buffer | undefined {
    return o.ops.length > 0 ? o.ops[o.ops.length - 1]!.after : o.initial;
  }

  private async writeObject(
    o: ObjectModel,
    op: OpRecord,
    after: Buffer,
    method: string,
    body: object,
  ): Promise<void> {
    op.object = o.key;
    op.after = after;
    o.ops.push(op);
    await this.call(op, method, body);
    if (op.status !== 'acked') o.retired = true;
  }

  private async setxattr(f: FileModel): Promise<void> {
    const name = `user.k${this.rng.int(0, 2)}`;
    const o = this.object(`x:${f.ino}:${name}`, 'xattr', f.ino, f.pg, name, undefined);
    if (!o) return;
    const value = this.rng.bytes(this.rng.int(1, 32));
    const op = this.newOp('setxattr', f.pg, this.requestId());
    await this.writeObject(o, op, value, 'SetXattr', {
      caller: ROOT_CALLER,
      ino: f.ino.toString(),
      name: Buffer.from(name),
      value,
      flags: 0,
    });
  }

  private async writeInline(f: FileModel): Promise<void> {
    const o = this.object(`i:${f.ino}`, 'inline', f.ino, f.pg, '', Buffer.alloc(0));
    if (!o) return;
    const offset = this.rng.int(0, 600);
    const data = this.rng.bytes(this.rng.int(1, 200));
    const op = this.newOp('write-inline', f.pg, this.requestId());
    await this.writeObject(o, op, overlay(this.current(o)!, offset, data), 'WriteInline', {
      caller: ROOT_CALLER,
      ino: f.ino.toString(),
      offset: String(offset),
      data,
      killSuidgid: false,
    });
  }

  private async writeBlock(f: FileModel): Promise<void> {
    const index = BigInt(this.rng.int(0, 3));
    const pg = blockPg(f.ino, index, this.k.pgCount);
    const o = this.object(`b:${f.ino}:${index}`, 'block', f.ino, pg, String(index), undefined);
    if (!o) return;
    const len = this.rng.int(1, 8192);
    // Often across the edge of a checksum chunk.
    const offset = this.rng.chance(0.5)
      ? Math.max(0, CHECKSUM_CHUNK_BYTES - this.rng.int(0, len))
      : this.rng.int(0, this.k.blockSizeBytes - len);
    const data = this.rng.bytes(len);
    // Block writes carry no request id (as the client sends them): a retry writes the same bytes again.
    const op = this.newOp('write-block', pg, '');
    await this.writeObject(o, op, overlay(this.current(o) ?? Buffer.alloc(0), offset, data), 'WriteBlock', {
      ino: f.ino.toString(),
      index: index.toString(),
      offset,
      data,
    });
  }
}

/** `base` with `data` written at `offset` (a gap reads as zeros). */
export function overlay(base: Buffer, offset: number, data: Buffer): Buffer {
  const out = Buffer.alloc(Math.max(base.length, offset + data.length));
  base.copy(out);
  data.copy(out, offset);
  return out;
}
