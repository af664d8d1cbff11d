import { createHash } from 'node:crypto';
import { FsError, pgOfIno, ROOT_INO, type PgAssignment } from '@dunix/proto';
import { decodeStoredEntry, type LogEntry } from '../../src/pg/log-entry.js';
import { KeyKind, keys } from '../../src/store/keys.js';
import { prefixEnd } from '../../src/store/kv.js';
import type { Ack, BrickNode } from './brick-node.js';
import type { History, ObjectModel, OpRecord } from './workload.js';

const ROOT = { uid: 0, gid: 0, groups: [] };
const hex = (b: Buffer | undefined) => (b === undefined ? 'absent' : b.toString('hex'));
const short = (b: Buffer | undefined) => {
  const h = hex(b);
  return h.length > 24 ? `${h.slice(0, 24)}..(${b!.length} bytes)` : h;
};

/** A PG copy's key range and block files, as a crash would leave them. */
interface PgDump {
  brick: string;
  /** Every key but the log's: hex key → hex value. */
  state: Map<string, string>;
  /** seq → the stored entry. */
  log: Map<bigint, Buffer>;
  blocks: Map<string, Buffer>;
}

/**
 * An entry as the checkers compare it across copies. Catch-up sends block
 * changes as the block's current bytes (SYNC ops, their record beside), so a
 * copy brought up that way stores SYNC where the primary stored WRITE or
 * TRUNCATE: the change of a block counts, not its form.
 */
function normalize(e: LogEntry): string {
  return JSON.stringify({
    epoch: e.epoch,
    seq: e.seq.toString(),
    requestId: e.requestId,
    kind: e.kind,
    writes: e.writes.map((w) => [w.key.toString('hex'), hex(w.value)]),
    blocks: e.blocks.map((b) => [
      b.ino.toString(),
      b.index.toString(),
      b.kind === 'DELETE' ? 'DELETE' : 'CHANGE',
    ]),
  });
}

async function dumpPg(node: BrickNode, pg: number): Promise<PgDump> {
  const prefix = keys.pgPrefix(pg);
  const rows = await node.kv.range({ gte: prefix, lt: prefixEnd(prefix) });
  const state = new Map<string, string>();
  const log = new Map<bigint, Buffer>();
  for (const r of rows) {
    if (r.key[2] === KeyKind.log) log.set(r.key.readBigUInt64BE(3), r.value);
    else state.set(r.key.toString('hex'), r.value.toString('hex'));
  }
  return { brick: node.id, state, log, blocks: node.blocks.dump(pg) };
}

function diffMaps<V>(a: Map<string, V>, b: Map<string, V>, same: (x: V, y: V) => boolean): string[] {
  const out: string[] = [];
  for (const [k, v] of a) {
    const w = b.get(k);
    if (w === undefined) out.push(`${k} only on the first`);
    else if (!same(v, w)) out.push(`${k} differs`);
  }
  for (const k of b.keys()) if (!a.has(k)) out.push(`${k} only on the second`);
  return out;
}

/**
 * Checker 2: once healed, every in-sync copy of a PG is the same: the same
 * log position, byte-identical keys (stored replies, allocator reservation,
 * intents included), the same log entries where both logs reach (a copy
 * rebuilt by backfill keeps its log from the backfill on), byte-identical
 * block files.
 */
export async function checkReplicasIdentical(
  a: PgAssignment,
  nodes: Map<string, BrickNode>,
  failures: string[],
): Promise<void> {
  const primary = nodes.get(a.bricks[0]!)!;
  const pst = primary.pg(a.pg)!;
  const ref = await dumpPg(primary, a.pg);
  for (const b of a.isr) {
    if (b === primary.id) continue;
    const node = nodes.get(b)!;
    const st = node.pg(a.pg);
    const where = `pg ${a.pg}: replica ${b} vs primary ${primary.id}`;
    if (!st) {
      failures.push(`${where}: replica holds no copy`);
      continue;
    }
    if (st.opSeq !== pst.opSeq || st.lastEpoch !== pst.lastEpoch)
      failures.push(`${where}: log at ${st.opSeq}/${st.lastEpoch}, primary at ${pst.opSeq}/${pst.lastEpoch}`);
    const d = await dumpPg(node, a.pg);
    const keyDiff = diffMaps(ref.state, d.state, (x, y) => x === y);
    if (keyDiff.length) failures.push(`${where}: keys differ: ${keyDiff.slice(0, 5).join('; ')}`);
    const from = st.firstSeq > pst.firstSeq ? st.firstSeq : pst.firstSeq;
    for (let s = from; s <= pst.opSeq; s++) {
      const x = ref.log.get(s);
      const y = d.log.get(s);
      if (x && y && x.equals(y)) continue;
      const nx = x && normalize(decodeStoredEntry(x));
      const ny = y && normalize(decodeStoredEntry(y));
      if (nx === undefined || nx !== ny) {
        failures.push(`${where}: log entry ${s} differs: ${nx} / ${ny}`);
        break;
      }
    }
    const blockDiff = diffMaps(ref.blocks, d.blocks, (x, y) => x.equals(y));
    if (blockDiff.length) failures.push(`${where}: block files differ: ${blockDiff.slice(0, 5).join('; ')}`);
  }
}

/**
 * Checker 3 (per-PG history): the final log replayed gives the final state
 * (from an empty PG when the log reaches back to 1, else for every key the
 * retained entries write); every acknowledged op is in the log exactly once,
 * at the sequence it was acknowledged with, its stored reply still there;
 * and sequences respect real time: an op acknowledged before another was
 * invoked has the lower sequence.
 */
export async function checkHistory(
  a: PgAssignment,
  nodes: Map<string, BrickNode>,
  history: History,
  acks: Ack[],
  opLogRetain: number,
  failures: string[],
  stats: { fullReplays: number; windowReplays: number; reappliedAfterTrim: number },
): Promise<void> {
  const pg = a.pg;
  const primary = nodes.get(a.bricks[0]!)!;
  const st = primary.pg(pg)!;
  const prefix = keys.pgPrefix(pg);
  const rows = await primary.kv.range({ gte: prefix, lt: prefixEnd(prefix) });
  const state = new Map<string, string>();
  const entries: LogEntry[] = [];
  for (const r of rows) {
    if (r.key[2] === KeyKind.log) entries.push(decodeStoredEntry(r.value));
    else state.set(r.key.toString('hex'), r.value.toString('hex'));
  }
  entries.forEach((e, i) => {
    if (e.seq !== st.firstSeq + BigInt(i)) failures.push(`pg ${pg}: log hole at ${st.firstSeq + BigInt(i)}`);
  });
  // Replay.
  const replayed = new Map<string, string | undefined>();
  const put = (k: Buffer, v: Buffer | undefined) => {
    if (k[2] !== KeyKind.log) replayed.set(k.toString('hex'), v?.toString('hex'));
  };
  for (const e of entries) {
    for (const w of e.writes) put(w.key, w.value);
    for (const op of e.blocks) if (op.kind === 'SYNC') put(keys.block(pg, op.ino, op.index), op.record);
  }
  if (st.firstSeq === 1n) {
    stats.fullReplays++;
    const want = new Map([...replayed].filter((x): x is [string, string] => x[1] !== undefined));
    const diff = diffMaps(want, state, (x, y) => x === y);
    if (diff.length) failures.push(`pg ${pg}: state is not the log replayed: ${diff.slice(0, 5).join('; ')}`);
  } else {
    stats.windowReplays++;
    for (const [k, v] of replayed) {
      if (state.get(k) !== v) failures.push(`pg ${pg}: key ${k} is not what the log's last write of it left`);
    }
  }
  // Where each request is: its applications in the retained log, and the sequences bricks acknowledged.
  const retain = BigInt(opLogRetain);
  const inLog = new Map<string, bigint[]>();
  for (const e of entries)
    if (e.requestId) inLog.set(e.requestId, [...(inLog.get(e.requestId) ?? []), e.seq]);
  const ackSeqs = new Map<string, bigint[]>();
  for (const ack of acks) {
    if (ack.pg !== pg || !ack.requestId) continue;
    if (ack.seq === undefined) {
      failures.push(`pg ${pg}: ${ack.brick} acknowledged ${ack.requestId} without a stored reply`);
      continue;
    }
    const list = ackSeqs.get(ack.requestId) ?? [];
    if (!list.includes(ack.seq)) list.push(ack.seq);
    ackSeqs.set(
      ack.requestId,
      list.sort((x, y) => (x < y ? -1 : 1)),
    );
  }
  // A request is applied once while its stored reply is kept (opLogRetain entries): a retry that
  // comes later is applied again (its reply was trimmed: the dedup window's documented limit).
  const apart = (seqs: bigint[]) => seqs.every((x, i) => i === 0 || x - seqs[i - 1]! >= retain);
  for (const [requestId, seqs] of inLog) {
    if (!apart(seqs)) failures.push(`pg ${pg}: ${requestId} is applied at seqs [${seqs.join(', ')}]`);
    else if (seqs.length > 1) stats.reappliedAfterTrim++;
  }
  // Every acknowledgement a brick gave (whether or not its client heard it) is in the final log.
  for (const [requestId, seqs] of ackSeqs) {
    if (!apart(seqs)) {
      failures.push(`pg ${pg}: ${requestId} was acknowledged at seqs [${seqs.join(', ')}]`);
      continue;
    }
    const found = inLog.get(requestId) ?? [];
    for (const seq of seqs) {
      if (seq >= st.firstSeq && !found.includes(seq))
        failures.push(
          `pg ${pg}: ${requestId} was acknowledged at seq ${seq}, is in the log at [${found.join(', ')}]`,
        );
    }
    const last = seqs[seqs.length - 1]!;
    if (last + retain > st.opSeq) {
      const stored = state.get(keys.request(pg, requestId).toString('hex'));
      const storedSeq = stored && (JSON.parse(Buffer.from(stored, 'hex').toString()) as { seq: string }).seq;
      if (storedSeq !== last.toString())
        failures.push(
          `pg ${pg}: ${requestId} was acknowledged at seq ${last}, its stored reply says ${storedSeq}`,
        );
    }
  }
  const acked: { op: OpRecord; first: bigint; last: bigint }[] = [];
  for (const op of history.ops) {
    if (op.pg !== pg || op.status !== 'acked' || !op.requestId) continue;
    const seqs = ackSeqs.get(op.requestId);
    if (!seqs) {
      failures.push(`pg ${pg}: op ${op.id} (${op.requestId}) was acknowledged to its client, by no brick`);
      continue;
    }
    acked.push({ op, first: seqs[0]!, last: seqs[seqs.length - 1]! });
  }
  // Real time: every application of an op acknowledged before another op was invoked precedes
  // every application of that other op.
  const byDone = [...acked].sort((x, y) => x.op.doneAt! - y.op.doneAt!);
  const byInvoke = [...acked].sort((x, y) => x.op.invokedAt - y.op.invokedAt);
  let i = 0;
  let maxSeq = -1n;
  let maxOp: OpRecord | undefined;
  for (const b of byInvoke) {
    while (i < byDone.length && byDone[i]!.op.doneAt! < b.op.invokedAt) {
      if (byDone[i]!.last > maxSeq) {
        maxSeq = byDone[i]!.last;
        maxOp = byDone[i]!.op;
      }
      i++;
    }
    if (maxSeq >= b.first)
      failures.push(
        `pg ${pg}: op ${maxOp!.id} was acknowledged (seq ${maxSeq}) before op ${b.op.id} was invoked, which has seq ${b.first}`,
      );
  }
}

/**
 * Checker 2, all along the run (every few simulated milliseconds, not only
 * once healed): within the in-sync set of a PG's current primary, logs
 * match. For the primary etcd names, once it serves at etcd's epoch, every
 * member of its in-sync set holds no entry the primary does not, and where
 * both logs reach, the last common entry is the same (epoch and request).
 * Returns the violations found (each PG at most once).
 */
export async function checkInSyncLogs(
  placement: PgAssignment[],
  nodes: Map<string, BrickNode>,
): Promise<string[]> {
  const out: string[] = [];
  for (const a of placement) {
    const primary = nodes.get(a.bricks[0]!);
    const pst = primary?.pg(a.pg);
    if (!primary || !pst || pst.role !== 'primary' || !pst.ready || pst.epoch !== a.epoch || primary.fenced())
      continue;
    for (const b of pst.isr) {
      if (b === primary.id) continue;
      const node = nodes.get(b);
      const st = node?.pg(a.pg);
      if (!node || !st || st.backfilling) continue;
      const where = `pg ${a.pg} epoch ${a.epoch}: in-sync replica ${b} of primary ${primary.id}`;
      if (st.opSeq > pst.opSeq) {
        out.push(`${where} holds entries up to ${st.opSeq}, its primary up to ${pst.opSeq}`);
        break;
      }
      const s = st.opSeq;
      if (s === 0n || s < st.firstSeq || s < pst.firstSeq) continue;
      const [x, y] = await Promise.all([primary.kv.get(keys.log(a.pg, s)), node.kv.get(keys.log(a.pg, s))]);
      if (!x || !y || x.equals(y)) continue;
      const ex = decodeStoredEntry(x);
      const ey = decodeStoredEntry(y);
      if (ex.epoch !== ey.epoch || ex.requestId !== ey.requestId) {
        out.push(
          `${where}: entry ${s} is ${ey.requestId || ey.kind}@${ey.epoch} there, ${ex.requestId || ex.kind}@${ex.epoch} on the primary`,
        );
        break;
      }
    }
  }
  return out;
}

/**
 * Checker 4: no two primaries acknowledge in one PG: acknowledgements come
 * from the PG's primary, one brick per epoch, and epochs never go back in
 * (simulated) time. A brick just woken from a suspension its clock did not
 * count may still answer as the old primary (its lease looks valid to it):
 * its acknowledgements are left out here, and checkHistory requires each of
 * them to be an op of the final log, at the sequence it was acknowledged
 * with (what epoch fencing guarantees).
 */
export function checkAcks(acks: Ack[], failures: string[]): void {
  const byPg = new Map<number, Ack[]>();
  for (const a of acks) {
    const list = byPg.get(a.pg) ?? [];
    list.push(a);
    byPg.set(a.pg, list);
  }
  for (const [pg, list] of byPg) {
    const owner = new Map<number, string>();
    let last: Ack | undefined;
    for (const a of list) {
      if (a.staleClock) continue;
      // A primary that stopped serving a moment ago (peering again) may still answer a retry
      // queued before from its stored reply: its entry was on the whole in-sync set.
      if (!a.role.startsWith('primary'))
        failures.push(
          `pg ${pg}: ${a.brick} acknowledged ${a.method} at ${a.atMs} as ${a.role} (epoch ${a.epoch})`,
        );
      const o = owner.get(a.epoch);
      if (o !== undefined && o !== a.brick)
        failures.push(
          `pg ${pg}: two bricks acknowledged at epoch ${a.epoch}: ${o} and ${a.brick} (at ${a.atMs})`,
        );
      owner.set(a.epoch, a.brick);
      if (last && a.epoch < last.epoch)
        failures.push(
          `pg ${pg}: ${a.brick} acknowledged at epoch ${a.epoch} (at ${a.atMs}) after ${last.brick} at epoch ${last.epoch} (at ${last.atMs})`,
        );
      last = a;
    }
  }
}

/**
 * Checker 1: every acknowledged op is in the final state, read through the
 * primaries' read path: acked creates exist with the inode their reply
 * named, no directory holds a name nobody created, every object holds what
 * its last acknowledged op left (or what a later failed op left).
 */
export async function checkModel(
  placement: PgAssignment[],
  nodes: Map<string, BrickNode>,
  history: History,
  blockSizeBytes: number,
  failures: string[],
): Promise<void> {
  const primaryOf = (pg: number) => {
    const node = nodes.get(placement[pg]!.bricks[0]!)!;
    return { node, brick: node.brick! };
  };
  const optional = async <T>(p: Promise<T>, absent: string[]): Promise<T | undefined> => {
    try {
      return await p;
    } catch (err) {
      if (err instanceof FsError && absent.includes(err.code)) return undefined;
      throw err;
    }
  };
  const created = new Map<string, OpRecord[]>();
  for (const op of history.ops) {
    if (op.kind !== 'create' && op.kind !== 'mkdir') continue;
    const k = `${op.dir}/${op.name}`;
    created.set(k, [...(created.get(k) ?? []), op]);
    if (op.status !== 'acked') continue;
    const pg = pgOfIno(op.dir!);
    const { brick } = primaryOf(pg);
    // Records read directly: the engine's lookup may ask another PG's primary over the network.
    const found = await brick.read(pg, (t) => t.getDirent(op.dir!, Buffer.from(op.name!)));
    if (!found) failures.push(`acked ${op.kind} ${op.id} of ${op.name} in ${op.dir} (pg ${pg}) is gone`);
    else if (found.ino !== op.ino)
      failures.push(
        `acked ${op.kind} ${op.id}: ${op.name} names inode ${found.ino}, the reply said ${op.ino}`,
      );
    else {
      const ipg = pgOfIno(op.ino!);
      const ib = primaryOf(ipg).brick;
      const inode = await optional(
        ib.read(ipg, (t) => t.getInode(op.ino!)),
        [],
      );
      if (!inode) failures.push(`acked ${op.kind} ${op.id}: inode ${op.ino} is gone`);
    }
  }
  for (const dir of [ROOT_INO, ...history.dirs.filter((d) => d !== ROOT_INO)]) {
    const pg = pgOfIno(dir);
    const { brick } = primaryOf(pg);
    let cookie = 0n;
    for (;;) {
      const entries = await brick.read(pg, (t) => t.listDirents(dir, cookie, 1000));
      for (const e of entries) {
        if (!created.has(`${dir}/${e.name.toString()}`))
          failures.push(`directory ${dir} holds ${e.name.toString()}, which no client created`);
        cookie = e.rec.cookie;
      }
      if (entries.length === 0) break;
    }
  }
  for (const o of history.objects.values()) {
    const { brick } = primaryOf(o.pg);
    let got: Buffer | undefined;
    if (o.kind === 'xattr') {
      got = await optional(
        brick.read(o.pg, (t) => brick.engine.getxattr(t, ROOT, o.ino, Buffer.from(o.detail))),
        ['NO_XATTR'],
      );
    } else if (o.kind === 'inline') {
      got = (await brick.read(o.pg, (t) => brick.engine.readInline(t, o.ino))) ?? Buffer.alloc(0);
    } else {
      got = await brick.readBlock(o.pg, o.ino, BigInt(o.detail), 0, blockSizeBytes);
      if (got.length === 0) got = undefined;
    }
    const allowed = allowedValues(o);
    if (!allowed.some((v) => (v === undefined ? got === undefined : got !== undefined && v.equals(got)))) {
      failures.push(
        `${o.key} (pg ${o.pg}) holds ${short(got)}, expected ${allowed.map(short).join(' or ')} ` +
          `(ops ${o.ops.map((x) => `${x.id}:${x.status}`).join(' ')})`,
      );
    }
  }
}

function allowedValues(o: ObjectModel): (Buffer | undefined)[] {
  let lastAcked = -1;
  o.ops.forEach((op, i) => {
    if (op.status === 'acked') lastAcked = i;
  });
  const base = lastAcked >= 0 ? o.ops[lastAcked]!.after : o.initial;
  const out = [o.kind === 'block' && base?.length === 0 ? undefined : base];
  const tail = o.ops[o.ops.length - 1];
  if (tail && tail.status !== 'acked' && o.ops.length - 1 > lastAcked) out.push(tail.after);
  return out;
}

/**
 * A digest of every brick's whole store and block files: the same seed must
 * end in the same bytes. Cross-PG transaction records are left out: their
 * ids come from the brick's random prefix and their times from the wall
 * clock (only the setup's mkdirs make any, and they are gone by the end but
 * for the log entries that wrote them).
 */
export async function stateDigest(nodes: Map<string, BrickNode>): Promise<string> {
  const h = createHash('sha256');
  const txKind = (k: Buffer) => k[2] === KeyKind.prepared || k[2] === KeyKind.decision;
  for (const [id, node] of nodes) {
    h.update(id);
    for (const r of await node.kv.range({ gte: Buffer.alloc(0), lt: Buffer.alloc(3, 0xff) })) {
      h.update(r.key);
      if (r.key[2] !== KeyKind.log) {
        h.update(txKind(r.key) ? 'tx' : r.value);
        continue;
      }
      const tx = (kind: number) => Buffer.from([r.key[0]!, r.key[1]!, kind]);
      if (!r.value.includes(tx(KeyKind.prepared)) && !r.value.includes(tx(KeyKind.decision))) {
        h.update(r.value);
        continue;
      }
      const e = decodeStoredEntry(r.value);
      h.update(`${e.epoch} ${e.seq} ${e.requestId} ${e.kind}`);
      for (const w of e.writes) {
        if (txKind(w.key)) h.update('tx');
        else h.update(Buffer.concat([w.key, w.value ?? Buffer.from('-')]));
      }
      for (const b of e.blocks)
        h.update(`${b.ino} ${b.index} ${b.kind} ${b.offset} ${b.length} ${b.record?.toString('hex')}`);
    }
    for (const [k, v] of node.blocks.dump()) {
      h.update(k);
      h.update(v);
    }
  }
  return h.digest('hex').slice(0, 16);
}
