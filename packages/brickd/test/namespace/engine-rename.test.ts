import { limits } from '@dunix/proto';
import t from 'tap';
import type { RenameFlags } from '../../src/namespace/api.js';
import { S_IFDIR, S_IFREG } from '../../src/store/records.js';
import { alice, b, bob, Fixture, ROOT, root } from './harness.js';

const plain: RenameFlags = { noReplace: false, exchange: false };
const noReplace: RenameFlags = { noReplace: true, exchange: false };
const exchange: RenameFlags = { noReplace: false, exchange: true };

async function rename(
  f: Fixture,
  from: bigint,
  name: string,
  to: bigint,
  newName: string,
  flags = plain,
  cred = root,
): Promise<string> {
  return f.code((tx) => f.engine.rename(tx, cred, from, b(name), to, b(newName), flags));
}

t.test('rename a file within a directory: new cookie, counts and times', async (t) => {
  const f = await Fixture.make();
  const d = await f.mkdir(ROOT, 'd');
  const file = await f.create(d, 'a');
  await f.create(d, 'b');
  const before = await f.stat(file);
  t.equal(await rename(f, d, 'a', d, 'z'), 'OK');
  const now = f.clockNs;
  t.same(await f.names(d), ['b', 'z'], 'renamed entry takes a new, later cookie');
  t.equal(await f.lookupIno(d, 'z'), file);
  t.equal(await f.code((tx) => f.engine.lookup(tx, root, d, b('a'))), 'NOT_FOUND');
  t.match(await f.stat(d), { entries: 2, nlink: 2, mtimeNs: now, ctimeNs: now, nextCookie: 4n });
  t.match(await f.stat(file), { nlink: 1, ctimeNs: now, mtimeNs: before.mtimeNs });
});

t.test('rename a file across directories', async (t) => {
  const f = await Fixture.make();
  const a = await f.mkdir(ROOT, 'a');
  const c = await f.mkdir(ROOT, 'c');
  const file = await f.create(a, 'f');
  t.equal(await rename(f, a, 'f', c, 'g'), 'OK');
  const now = f.clockNs;
  t.match(await f.stat(a), { entries: 0, nlink: 2, mtimeNs: now, ctimeNs: now });
  t.match(await f.stat(c), { entries: 1, nlink: 2, mtimeNs: now, ctimeNs: now });
  t.match(await f.stat(file), { parent: 0n, nlink: 1, ctimeNs: now });
  t.equal(await f.lookupIno(c, 'g'), file);
});

t.test('rename a directory across parents: parent pointer and both nlinks', async (t) => {
  const f = await Fixture.make();
  const a = await f.mkdir(ROOT, 'a');
  const c = await f.mkdir(ROOT, 'c');
  const x = await f.mkdir(a, 'x');
  await f.mkdir(x, 'inner');
  t.equal((await f.stat(a)).nlink, 3);
  t.equal(await rename(f, a, 'x', c, 'y'), 'OK');
  t.equal((await f.stat(a)).nlink, 2);
  t.equal((await f.stat(c)).nlink, 3);
  t.equal((await f.stat(ROOT)).nlink, 4);
  t.match(await f.stat(x), { parent: c, nlink: 3 });
  t.equal((await f.run((tx) => f.engine.readdir(tx, root, x, 0n, 10))).parent, c, '".." follows');
  // Moving within the same parent leaves nlink alone.
  t.equal(await rename(f, c, 'y', c, 'w'), 'OK');
  t.equal((await f.stat(c)).nlink, 3);
  t.equal((await f.stat(x)).parent, c);
});

t.test('a directory cannot move into its own subtree', async (t) => {
  const f = await Fixture.make();
  const a = await f.mkdir(ROOT, 'a');
  const bb = await f.mkdir(a, 'b');
  const c = await f.mkdir(bb, 'c');
  t.equal(await rename(f, ROOT, 'a', c, 'a2'), 'INVALID_ARGUMENT', 'into a grandchild');
  t.equal(await rename(f, ROOT, 'a', a, 'a2'), 'INVALID_ARGUMENT', 'into itself');
  t.equal(await rename(f, a, 'b', c, 'z'), 'INVALID_ARGUMENT');
  t.equal(await rename(f, ROOT, 'a', c, 'z', exchange), 'NOT_FOUND', 'exchange needs the target first');
  await f.create(c, 'z');
  t.equal(await rename(f, ROOT, 'a', c, 'z', exchange), 'INVALID_ARGUMENT');
  // Over an ancestor of the source: the ancestor is never empty.
  t.equal(await rename(f, bb, 'c', ROOT, 'a'), 'DIRECTORY_NOT_EMPTY');
  t.equal(await rename(f, bb, 'c', ROOT, 'a', exchange), 'INVALID_ARGUMENT');
  // Sideways and upwards is fine.
  t.equal(await rename(f, bb, 'c', ROOT, 'c'), 'OK');
  t.equal((await f.stat(c)).parent, ROOT);
  t.equal(await rename(f, ROOT, 'a', c, 'a'), 'OK', 'a is no longer above c');
  t.equal((await f.stat(a)).parent, c);
  t.equal((await f.stat(c)).nlink, 3);
});

t.test('same inode: no-op', async (t) => {
  const f = await Fixture.make();
  const file = await f.create(ROOT, 'f');
  await f.run((tx) => f.engine.link(tx, root, file, ROOT, b('g')));
  const before = await f.stat(file);
  const r = await f.run((tx) => f.engine.rename(tx, root, ROOT, b('f'), ROOT, b('g'), plain));
  t.same(r, {});
  t.same(await f.names(ROOT), ['f', 'g'], 'both names stay');
  t.same(await f.stat(file), before, 'inode unchanged');
  t.equal(await rename(f, ROOT, 'f', ROOT, 'f'), 'OK');
  t.same(await f.names(ROOT), ['f', 'g']);
  t.equal(await rename(f, ROOT, 'f', ROOT, 'f', noReplace), 'ALREADY_EXISTS');
  t.equal(await rename(f, ROOT, 'nope', ROOT, 'f'), 'NOT_FOUND');
});

t.test('type rules when replacing', async (t) => {
  const f = await Fixture.make();
  const d1 = await f.mkdir(ROOT, 'd1');
  const d2 = await f.mkdir(ROOT, 'd2');
  const full = await f.mkdir(ROOT, 'full');
  await f.create(full, 'x');
  await f.create(ROOT, 'f');
  t.equal(await rename(f, ROOT, 'd1', ROOT, 'f'), 'NOT_A_DIRECTORY');
  t.equal(await rename(f, ROOT, 'f', ROOT, 'd1'), 'IS_A_DIRECTORY');
  t.equal(await rename(f, ROOT, 'd1', ROOT, 'full'), 'DIRECTORY_NOT_EMPTY');
  t.equal((await f.stat(ROOT)).nlink, 5);
  const r = await f.run((tx) => f.engine.rename(tx, root, ROOT, b('d1'), ROOT, b('d2'), plain));
  t.same(r.replaced, { ino: d2, nlink: 0, size: 0n, isDir: true });
  t.equal((await f.stat(d2)).nlink, 0);
  t.ok(await f.isOrphan(d2));
  t.equal((await f.stat(ROOT)).nlink, 4, 'root lost the replaced subdirectory');
  t.equal((await f.stat(ROOT)).entries, 3);
  t.equal(await f.lookupIno(ROOT, 'd2'), d1);
});

t.test('replacing a directory across parents', async (t) => {
  const f = await Fixture.make();
  const a = await f.mkdir(ROOT, 'a');
  const c = await f.mkdir(ROOT, 'c');
  const x = await f.mkdir(a, 'x');
  const y = await f.mkdir(c, 'y');
  t.equal(await rename(f, a, 'x', c, 'y'), 'OK');
  t.match(await f.stat(a), { nlink: 2, entries: 0 });
  t.match(await f.stat(c), { nlink: 3, entries: 1 });
  t.match(await f.stat(x), { parent: c, nlink: 2 });
  t.equal((await f.stat(y)).nlink, 0);
});

t.test('replacing a file: the target loses one link', async (t) => {
  const f = await Fixture.make();
  const src = await f.create(ROOT, 'src');
  const dst = await f.create(ROOT, 'dst');
  await f.run((tx) => f.engine.link(tx, root, dst, ROOT, b('dst2')));
  const r1 = await f.run((tx) => f.engine.rename(tx, root, ROOT, b('src'), ROOT, b('dst'), plain));
  const now = f.clockNs;
  t.same(r1.replaced, { ino: dst, nlink: 1, size: 0n, isDir: false });
  t.match(await f.stat(dst), { nlink: 1, ctimeNs: now });
  t.notOk(await f.isOrphan(dst));
  const r2 = await f.run((tx) => f.engine.rename(tx, root, ROOT, b('dst'), ROOT, b('dst2'), plain));
  t.same(r2.replaced, { ino: dst, nlink: 0, size: 0n, isDir: false });
  t.ok(await f.isOrphan(dst), 'last link: orphan');
  t.same(await f.names(ROOT), ['dst2']);
  t.equal(await f.lookupIno(ROOT, 'dst2'), src);
  t.equal((await f.stat(ROOT)).entries, 1);
});

t.test('noReplace', async (t) => {
  const f = await Fixture.make();
  await f.create(ROOT, 'a');
  await f.create(ROOT, 'b');
  t.equal(await rename(f, ROOT, 'a', ROOT, 'b', noReplace), 'ALREADY_EXISTS');
  t.equal(await rename(f, ROOT, 'a', ROOT, 'c', noReplace), 'OK');
  t.same(await f.names(ROOT), ['b', 'c']);
  t.equal(await rename(f, ROOT, 'b', ROOT, 'c', { noReplace: true, exchange: true }), 'INVALID_ARGUMENT');
});

t.test('exchange swaps two entries, fixing parents and nlinks', async (t) => {
  const f = await Fixture.make();
  const a = await f.mkdir(ROOT, 'a');
  const c = await f.mkdir(ROOT, 'c');
  const dir = await f.mkdir(a, 'dir');
  const file = await f.create(c, 'file');
  const cookieDir = (await f.run((tx) => f.engine.lookup(tx, root, a, b('dir')))).dirent.cookie;
  t.equal(await rename(f, a, 'dir', c, 'missing', exchange), 'NOT_FOUND');
  t.equal(await rename(f, a, 'dir', c, 'file', exchange), 'OK');
  const now = f.clockNs;
  const inA = await f.run((tx) => f.engine.lookup(tx, root, a, b('dir')));
  t.equal(inA.dirent.ino, file);
  t.equal(inA.dirent.type, S_IFREG >> 12);
  t.equal(inA.dirent.cookie, cookieDir, 'exchanged names keep their cookies');
  const inC = await f.run((tx) => f.engine.lookup(tx, root, c, b('file')));
  t.equal(inC.dirent.ino, dir);
  t.equal(inC.dirent.type, S_IFDIR >> 12);
  t.match(await f.stat(a), { nlink: 2, entries: 1, mtimeNs: now, ctimeNs: now });
  t.match(await f.stat(c), { nlink: 3, entries: 1, mtimeNs: now, ctimeNs: now });
  t.match(await f.stat(dir), { parent: c, ctimeNs: now });
  t.match(await f.stat(file), { parent: 0n, nlink: 1, ctimeNs: now });
  // Two directories across parents: each points at its new parent, nlinks unchanged.
  const d2 = await f.mkdir(a, 'd2');
  t.equal(await rename(f, a, 'd2', c, 'file', exchange), 'OK');
  t.equal((await f.stat(d2)).parent, c);
  t.equal((await f.stat(dir)).parent, a);
  t.equal((await f.stat(a)).nlink, 3);
  t.equal((await f.stat(c)).nlink, 3);
  // Within one directory.
  t.equal(await rename(f, a, 'dir', a, 'd2', exchange), 'OK');
  t.equal(await f.lookupIno(a, 'dir'), dir);
  t.equal(await f.lookupIno(a, 'd2'), file);
  t.equal((await f.stat(a)).nlink, 3);
  t.equal((await f.stat(dir)).parent, a);
});

t.test('rename permissions: parents, sticky, and moving a directory', async (t) => {
  const f = await Fixture.make();
  const p = await f.mkdir(ROOT, 'p');
  const q = await f.mkdir(ROOT, 'q');
  await f.chown(p, 1000, 1000);
  await f.chown(q, 1000, 1000);
  const rootDir = await f.mkdir(p, 'rootdir');
  await f.create(p, 'rootfile');
  t.equal(await rename(f, p, 'rootfile', q, 'x', plain, alice), 'OK', 'file: parents suffice');
  t.equal(
    await rename(f, p, 'rootdir', p, 'renamed', plain, alice),
    'OK',
    'same parent: no write on the dir',
  );
  t.equal(
    await rename(f, p, 'renamed', q, 'x2', plain, alice),
    'PERMISSION_DENIED',
    'new parent: write on dir',
  );
  t.equal(await rename(f, p, 'renamed', q, 'x2', plain, root), 'OK');
  t.equal((await f.stat(rootDir)).parent, q);
  // No write permission on the source or target parent.
  await f.chmod(p, 0o555, alice);
  await f.run((tx) => f.engine.mknod(tx, root, p, b('pf'), S_IFREG | 0o644, 0n, true));
  t.equal(await rename(f, p, 'pf', q, 'pf', plain, alice), 'PERMISSION_DENIED');
  t.equal(await rename(f, q, 'x', p, 'x', plain, alice), 'PERMISSION_DENIED');
  // Sticky: source and target.
  const tmp = await f.mkdir(ROOT, 'tmp');
  await f.chmod(tmp, 0o1777);
  await f.run((tx) => f.engine.mknod(tx, alice, tmp, b('af'), S_IFREG | 0o666, 0n, true));
  await f.run((tx) => f.engine.mknod(tx, bob, tmp, b('bf'), S_IFREG | 0o666, 0n, true));
  t.equal(await rename(f, tmp, 'af', tmp, 'mine', plain, bob), 'NOT_PERMITTED', 'sticky source');
  t.equal(await rename(f, tmp, 'bf', tmp, 'af', plain, bob), 'NOT_PERMITTED', 'sticky target');
  t.equal(await rename(f, tmp, 'bf', tmp, 'bf2', plain, bob), 'OK');
  t.equal(
    await rename(f, tmp, 'bf2', tmp, 'af', plain, alice),
    'NOT_PERMITTED',
    'owning the target is not enough',
  );
  await f.chown(tmp, 1000, 1000);
  t.equal(await rename(f, tmp, 'bf2', tmp, 'af', plain, alice), 'OK', 'directory owner');
});

t.test('moving a directory into a parent at the link limit', async (t) => {
  const f = await Fixture.make();
  const a = await f.mkdir(ROOT, 'a');
  const c = await f.mkdir(ROOT, 'c');
  await f.mkdir(a, 'x');
  await f.create(a, 'f');
  await f.run(async (tx) => tx.putInode({ ...(await tx.getInode(c))!, nlink: limits.linkMax }));
  t.equal(await rename(f, a, 'x', c, 'x'), 'TOO_MANY_LINKS');
  t.equal(await rename(f, a, 'f', c, 'f'), 'OK', 'files do not count');
});
