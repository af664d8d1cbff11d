import type { PgAssignment } from '@dunix/proto';
import { KeyKind, keys } from '../../src/store/keys.js';
import { prefixEnd } from '../../src/store/kv.js';
import type { BrickNode } from './brick-node.js';
import { checkReplicasIdentical } from './checkers.js';
import type { SimRandom } from './random.js';

/**
 * Checker 6 (scrub), run once healed, after the others (a scrub may repair):
 * in half the seeds one block file of one in-sync replica is damaged first
 * (a byte flipped, or the file deleted); then every PG's primary scrubs its
 * PG over the simulated network. The scrub must reach every copy, find
 * nothing but the planted damage, report that repaired, and leave the
 * copies identical.
 */
export async function checkScrub(
  placement: PgAssignment[],
  nodes: Map<string, BrickNode>,
  random: SimRandom,
  failures: string[],
  stats: Record<string, number>,
  trace: (msg: string, fields?: Record<string, unknown>) => void,
): Promise<void> {
  const planted = random.chance(0.5) ? await plant(placement, nodes, random) : undefined;
  if (planted)
    trace('scrub: damage planted', {
      ...planted,
      ino: planted.ino.toString(),
      index: planted.index.toString(),
    });
  let bytes = 0;
  let found = 0;
  for (const a of placement) {
    const node = nodes.get(a.bricks[0]!)!;
    const st = node.pg(a.pg);
    if (!node.brick || !st) {
      failures.push(`scrub: pg ${a.pg} has no serving primary`);
      continue;
    }
    const o = await node.brick.repl.scrub.scrubPg(st);
    bytes += o.bytes;
    if (!o.complete) failures.push(`scrub: pg ${a.pg} not scrubbed to the end`);
    for (const s of o.skipped) failures.push(`scrub: pg ${a.pg}: replica ${s.brick} not compared: ${s.err}`);
    for (const p of o.problems) {
      found++;
      const expected =
        planted !== undefined &&
        a.pg === planted.pg &&
        p.brick === planted.brick &&
        p.ino === planted.ino &&
        p.index === planted.index &&
        p.kind === (planted.how === 'delete' ? 'block-missing' : 'block-corrupt');
      if (!expected)
        failures.push(
          `scrub: pg ${a.pg}: unexpected ${p.kind} on ${p.brick} (${p.ino ?? ''}/${p.index ?? ''}): ${p.detail}`,
        );
      else if (p.state !== 'repaired') failures.push(`scrub: pg ${a.pg}: the planted damage is ${p.state}`);
    }
  }
  if (planted && found === 0)
    failures.push(`scrub: the damage planted on ${planted.brick} in pg ${planted.pg} went unseen`);
  stats.scrubBytes = bytes;
  stats.scrubPlanted = planted ? 1 : 0;
  if (planted)
    await checkReplicasIdentical(
      placement.find((a) => a.pg === planted.pg)!,
      nodes,
      failures,
    );
}

/** Damages one block file of one in-sync replica (seeded). */
async function plant(
  placement: PgAssignment[],
  nodes: Map<string, BrickNode>,
  random: SimRandom,
): Promise<{ pg: number; brick: string; ino: bigint; index: bigint; how: 'flip' | 'delete' } | undefined> {
  const candidates: { pg: number; brick: string; ino: bigint; index: bigint }[] = [];
  for (const a of placement) {
    const primary = nodes.get(a.bricks[0]!)!;
    const prefix = keys.kindPrefix(a.pg, KeyKind.block);
    const rows = await primary.kv.range({ gte: prefix, lt: prefixEnd(prefix) });
    for (const r of rows)
      for (const b of a.isr.slice(1))
        candidates.push({
          pg: a.pg,
          brick: b,
          ino: r.key.readBigUInt64BE(3),
          index: r.key.readBigUInt64BE(11),
        });
  }
  if (candidates.length === 0) return undefined;
  const c = random.pick(candidates);
  const files = nodes.get(c.brick)!.blocks;
  const bytes = files.bytesOf(c.pg, c.ino, c.index);
  if (!bytes || bytes.length === 0) return undefined;
  const how = random.pick(['flip', 'delete'] as const);
  if (how === 'flip') {
    bytes[random.int(0, bytes.length - 1)]! ^= 1 << random.int(0, 7);
    files.setBytes(c.pg, c.ino, c.index, bytes);
  } else files.setBytes(c.pg, c.ino, c.index, undefined);
  return { ...c, how };
}
