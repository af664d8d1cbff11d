import fc from 'fast-check';
import t from 'tap';
import type { RenameFlags } from '../../src/namespace/api.js';
import type { MetaTxn } from '../../src/namespace/txn.js';
import { S_IFREG } from '../../src/store/records.js';
import { b, Fixture, ROOT, root } from './harness.js';

/**
 * Property: a random sequence of namespace operations on a handful of names
 * gives, step by step, the same result code as a naive in-memory tree, and
 * afterwards the engine's records agree with the tree: listings (in order),
 * link counts of files (occurrences), of directories (2 + subdirectories),
 * entry counts, ".." pointers and orphan marks.
 */

interface Node {
  ino: bigint;
  dir: boolean;
  /** Entries in insertion order, which is readdir order (cookies only grow). */
  children: Map<string, bigint>;
  parent: bigint;
  removed: boolean;
}

class Model {
  readonly nodes = new Map<bigint, Node>([
    [ROOT, { ino: ROOT, dir: true, children: new Map(), parent: ROOT, removed: false }],
  ]);
  /** Every directory and every node ever made, in creation order (ops pick from these by index). */
  readonly dirs: bigint[] = [ROOT];
  readonly all: bigint[] = [ROOT];

  node(ino: bigint): Node {
    return this.nodes.get(ino)!;
  }

  /** Occurrences of an inode in live directories. */
  links(ino: bigint): number {
    let n = 0;
    for (const d of this.nodes.values()) {
      if (!d.dir || d.removed) continue;
      for (const c of d.children.values()) if (c === ino) n++;
    }
    return n;
  }

  isAncestor(anc: bigint, start: bigint): boolean {
    for (let cur = start; ; cur = this.node(cur).parent) {
      if (cur === anc) return true;
      if (cur === ROOT) return false;
    }
  }

  add(parent: bigint, name: string, ino: bigint, dir: boolean): void {
    this.nodes.set(ino, { ino, dir, children: new Map(), parent: dir ? parent : 0n, removed: false });
    this.node(parent).children.set(name, ino);
    if (dir) this.dirs.push(ino);
    this.all.push(ino);
  }
}

type Op =
  | { kind: 'mkdir' | 'create' | 'unlink' | 'rmdir'; dir: number; name: string }
  | { kind: 'link'; node: number; dir: number; name: string }
  | { kind: 'rename'; dir: number; name: string; dir2: number; name2: string; flags: number };

const names = fc.constantFrom('a', 'b', 'c');
const idx = fc.nat({ max: 50 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ kind: fc.constantFrom('mkdir', 'create'), dir: idx, name: names }), weight: 4 },
  { arbitrary: fc.record({ kind: fc.constantFrom('unlink', 'rmdir'), dir: idx, name: names }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('link'), node: idx, dir: idx, name: names }), weight: 1 },
  {
    arbitrary: fc.record({
      kind: fc.constant('rename'),
      dir: idx,
      name: names,
      dir2: idx,
      name2: names,
      flags: fc.constantFrom(0, 0, 0, 1, 2),
    }),
    weight: 4,
  },
) as fc.Arbitrary<Op>;

const FLAGS: RenameFlags[] = [
  { noReplace: false, exchange: false },
  { noReplace: true, exchange: false },
  { noReplace: false, exchange: true },
];

/** The result code the naive tree predicts (Linux precedence for a root caller). */
function expected(m: Model, op: Op, dir: bigint, node: bigint, dir2: bigint): string {
  const p = m.node(dir);
  if (p.removed) return 'NOT_FOUND';
  const child = p.children.get(op.name);
  switch (op.kind) {
    case 'mkdir':
    case 'create':
      return child === undefined ? 'OK' : 'ALREADY_EXISTS';
    case 'unlink':
      if (child === undefined) return 'NOT_FOUND';
      return m.node(child).dir ? 'IS_A_DIRECTORY' : 'OK';
    case 'rmdir': {
      if (child === undefined) return 'NOT_FOUND';
      const c = m.node(child);
      if (!c.dir) return 'NOT_A_DIRECTORY';
      return c.children.size > 0 ? 'DIRECTORY_NOT_EMPTY' : 'OK';
    }
    case 'link': {
      const n = m.node(node);
      if (child !== undefined) return 'ALREADY_EXISTS';
      if (n.dir) return 'NOT_PERMITTED';
      return m.links(node) === 0 ? 'NOT_FOUND' : 'OK';
    }
    case 'rename': {
      const q = m.node(dir2);
      if (q.removed) return 'NOT_FOUND';
      if (child === undefined) return 'NOT_FOUND';
      const target = q.children.get(op.name2);
      if (op.flags === 1 && target !== undefined) return 'ALREADY_EXISTS';
      if (op.flags === 2 && target === undefined) return 'NOT_FOUND';
      const s = m.node(child);
      const d = target === undefined ? undefined : m.node(target);
      const crossing = dir !== dir2;
      if (crossing && s.dir && m.isAncestor(s.ino, dir2)) return 'INVALID_ARGUMENT';
      if (crossing && d?.dir && m.isAncestor(d.ino, dir))
        return op.flags === 2 ? 'INVALID_ARGUMENT' : 'DIRECTORY_NOT_EMPTY';
      if (d && d.ino === s.ino) return 'OK';
      if (d && op.flags !== 2 && s.dir && !d.dir) return 'NOT_A_DIRECTORY';
      if (d && op.flags !== 2 && !s.dir && d.dir) return 'IS_A_DIRECTORY';
      if (d && op.flags !== 2 && d.dir && d.children.size > 0) return 'DIRECTORY_NOT_EMPTY';
      return 'OK';
    }
  }
}

function applyModel(
  m: Model,
  op: Op,
  dir: bigint,
  node: bigint,
  dir2: bigint,
  newIno: bigint | undefined,
): void {
  const p = m.node(dir);
  switch (op.kind) {
    case 'mkdir':
    case 'create':
      m.add(dir, op.name, newIno!, op.kind === 'mkdir');
      return;
    case 'unlink':
      p.children.delete(op.name);
      return;
    case 'rmdir':
      m.node(p.children.get(op.name)!).removed = true;
      p.children.delete(op.name);
      return;
    case 'link':
      p.children.set(op.name, node);
      return;
    case 'rename': {
      const q = m.node(dir2);
      const src = p.children.get(op.name)!;
      const dst = q.children.get(op.name2);
      if (dst === src) return;
      const s = m.node(src);
      if (op.flags === 2) {
        const d = m.node(dst!);
        p.children.set(op.name, dst!);
        q.children.set(op.name2, src);
        if (s.dir) s.parent = dir2;
        if (d.dir) d.parent = dir;
        return;
      }
      if (dst !== undefined) {
        q.children.delete(op.name2);
        if (m.node(dst).dir) m.node(dst).removed = true;
      }
      p.children.delete(op.name);
      q.children.set(op.name2, src);
      if (s.dir) s.parent = dir2;
      return;
    }
  }
}

async function runEngine(f: Fixture, op: Op, dir: bigint, node: bigint, dir2: bigint) {
  let ino: bigint | undefined;
  const e = f.engine;
  const code = await f.code(async (tx: MetaTxn) => {
    switch (op.kind) {
      case 'mkdir':
        ino = (await e.mkdir(tx, root, dir, b(op.name), 0o755)).inode.ino;
        return;
      case 'create':
        ino = (await e.mknod(tx, root, dir, b(op.name), S_IFREG | 0o644, 0n, true)).inode.ino;
        return;
      case 'unlink':
        await e.unlink(tx, root, dir, b(op.name));
        return;
      case 'rmdir':
        await e.rmdir(tx, root, dir, b(op.name));
        return;
      case 'link':
        await e.link(tx, root, node, dir, b(op.name));
        return;
      case 'rename':
        await e.rename(tx, root, dir, b(op.name), dir2, b(op.name2), FLAGS[op.flags]!);
        return;
    }
  });
  return { code, ino };
}

/** Compares every record the model knows with the engine's; returns the first difference. */
async function compare(f: Fixture, m: Model): Promise<string | undefined> {
  const orphans = await f.orphans();
  for (const n of m.nodes.values()) {
    const rec = await f.stat(n.ino);
    const orphan = orphans.has(n.ino);
    if (n.dir) {
      if (n.removed) {
        if (rec.nlink !== 0 || !orphan) return `removed dir ${n.ino}: nlink ${rec.nlink}, orphan ${orphan}`;
        continue;
      }
      const subdirs = [...n.children.values()].filter((c) => m.node(c).dir).length;
      if (rec.nlink !== 2 + subdirs) return `dir ${n.ino}: nlink ${rec.nlink}, model ${2 + subdirs}`;
      if (rec.entries !== n.children.size)
        return `dir ${n.ino}: entries ${rec.entries} vs ${n.children.size}`;
      if (rec.parent !== n.parent) return `dir ${n.ino}: parent ${rec.parent} vs ${n.parent}`;
      if (orphan) return `live dir ${n.ino} marked orphan`;
      const page = await f.read((tx) => f.engine.readdir(tx, root, n.ino, 0n, 1000));
      const got = page.entries.map((e) => `${e.name}=${e.dirent.ino}`).join(',');
      const want = [...n.children].map(([k, v]) => `${k}=${v}`).join(',');
      if (got !== want) return `dir ${n.ino}: listing [${got}], model [${want}]`;
      if (page.parent !== n.parent) return `dir ${n.ino}: readdir parent ${page.parent}`;
    } else {
      const links = m.links(n.ino);
      if (rec.nlink !== links) return `file ${n.ino}: nlink ${rec.nlink}, model ${links}`;
      if (orphan !== (links === 0)) return `file ${n.ino}: orphan ${orphan} with ${links} links`;
    }
  }
  return undefined;
}

t.test('engine agrees with a naive tree on random operation sequences', async (t) => {
  let runs = 0;
  const seen = new Map<string, number>();
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 20, maxLength: 60 }), async (ops) => {
      runs++;
      const f = await Fixture.make({ pgCount: 4 });
      const m = new Model();
      for (const [i, op] of ops.entries()) {
        const dir = m.dirs[op.dir % m.dirs.length]!;
        const node = op.kind === 'link' ? m.all[op.node % m.all.length]! : 0n;
        const dir2 = op.kind === 'rename' ? m.dirs[op.dir2 % m.dirs.length]! : 0n;
        const want = expected(m, op, dir, node, dir2);
        const got = await runEngine(f, op, dir, node, dir2);
        if (got.code !== want)
          throw new Error(`step ${i} ${JSON.stringify(op)}: engine ${got.code}, model ${want}`);
        const key = `${op.kind}${op.kind === 'rename' ? op.flags : ''}:${want}`;
        seen.set(key, (seen.get(key) ?? 0) + 1);
        if (want === 'OK') applyModel(m, op, dir, node, dir2, got.ino);
        const diff = await compare(f, m);
        if (diff) throw new Error(`after step ${i} ${JSON.stringify(op)}: ${diff}`);
      }
    }),
    { numRuns: 200 },
  );
  t.equal(runs >= 200, true, 'ran every sequence');
  // The sequences reach the interesting outcomes, not only failures.
  for (const key of [
    'mkdir:OK',
    'create:OK',
    'unlink:OK',
    'rmdir:OK',
    'rmdir:DIRECTORY_NOT_EMPTY',
    'link:OK',
    'link:NOT_PERMITTED',
    'rename0:OK',
    'rename0:INVALID_ARGUMENT',
    'rename0:IS_A_DIRECTORY',
    'rename0:NOT_A_DIRECTORY',
    'rename1:ALREADY_EXISTS',
    'rename2:OK',
  ]) {
    t.ok((seen.get(key) ?? 0) > 0, `reached ${key} (${seen.get(key) ?? 0})`);
  }
});
