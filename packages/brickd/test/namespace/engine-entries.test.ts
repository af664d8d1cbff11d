import { directoryPg, limits, pgOfIno } from '@dunix/proto';
import t from 'tap';
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG, S_IFSOCK } from '../../src/store/records.js';
import { alice, b, bob, Fixture, nobody, ROOT, root } from './harness.js';

t.test('ensureRoot creates ino 1 once, without allocating', async (t) => {
  const f = await Fixture.make();
  const r = await f.stat(ROOT);
  t.match(r, {
    ino: 1n,
    mode: S_IFDIR | 0o755,
    uid: 0,
    gid: 0,
    nlink: 2,
    parent: 1n,
    entries: 0,
    nextCookie: 1n,
  });
  t.equal(pgOfIno(r.ino), 0);
  t.same(f.allocated, [], 'allocIno not called');
  await f.run((tx) => f.engine.ensureRoot(tx));
  t.equal((await f.stat(ROOT)).ctimeNs, r.ctimeNs, 'second ensureRoot changes nothing');
});

t.test('mkdir: record, placement, parent nlink/entries, cookies and times', async (t) => {
  const f = await Fixture.make();
  const before = await f.stat(ROOT);
  const a = await f.mkdir(ROOT, 'a', 0o750);
  const now = f.clockNs;
  const rec = await f.stat(a);
  t.equal(pgOfIno(a), directoryPg(ROOT, b('a'), f.cfg.pgCount), 'directory PG from (parent, name)');
  t.match(rec, { mode: S_IFDIR | 0o750, nlink: 2, parent: ROOT, entries: 0, nextCookie: 1n, uid: 0, gid: 0 });
  t.match(rec, { atimeNs: now, mtimeNs: now, ctimeNs: now, inline: false, size: 0n });
  const p = await f.stat(ROOT);
  t.equal(p.nlink, 3);
  t.equal(p.entries, 1);
  t.equal(p.nextCookie, 2n);
  t.equal(p.mtimeNs, now);
  t.equal(p.ctimeNs, now);
  t.ok(p.mtimeNs > before.mtimeNs);
  t.equal(p.atimeNs, before.atimeNs, 'parent atime untouched');
  const x = await f.mkdir(a, 'x');
  await f.mkdir(a, 'y');
  await f.create(a, 'f');
  t.equal((await f.stat(a)).nlink, 4, '2 + two subdirectories (files do not count)');
  t.equal((await f.stat(a)).entries, 3);
  const l = await f.run((tx) => f.engine.lookup(tx, root, a, b('x')));
  t.equal(l.dirent.ino, x);
  t.equal(l.dirent.cookie, 1n);
  t.equal(l.dirent.type, S_IFDIR >> 12);
  t.equal((await f.run((tx) => f.engine.lookup(tx, root, a, b('f')))).dirent.cookie, 3n);
  t.equal(l.inode?.parent, a);
});

t.test('mkdir ignores set-id bits in mode; keeps sticky', async (t) => {
  const f = await Fixture.make();
  const d = await f.mkdir(ROOT, 'd', 0o7777);
  t.equal((await f.stat(d)).mode, S_IFDIR | 0o1777);
});

t.test('mknod: regular, fifo, socket, devices', async (t) => {
  const f = await Fixture.make();
  const a = await f.mkdir(ROOT, 'a');
  const r = await f.run((tx) => f.engine.mknod(tx, root, a, b('f'), S_IFREG | 0o640, 99n, true));
  t.equal(r.existed, false);
  t.match(r.inode, {
    mode: S_IFREG | 0o640,
    nlink: 1,
    size: 0n,
    inline: true,
    parent: 0n,
    entries: 0,
    rdev: 0n,
  });
  t.equal(pgOfIno(r.inode.ino), pgOfIno(a), 'file goes to the parent PG');
  t.equal(await f.run((tx) => f.engine.readInline(tx, r.inode.ino)).then((x) => x?.length), 0);
  t.notOk((await f.keysOf(r.inode.ino)).includes('inline'), 'no inline record yet');
  const plain = await f.run((tx) => f.engine.mknod(tx, root, a, b('plain'), 0o600, 0n, true));
  t.equal(plain.inode.mode, S_IFREG | 0o600, 'type 0 means regular');
  for (const [name, type, rdev] of [
    ['fifo', S_IFIFO, 0n],
    ['sock', S_IFSOCK, 0n],
    ['chr', S_IFCHR, 0x10203n],
    ['blk', S_IFBLK, (1n << 63n) | 0x0801n],
  ] as const) {
    const n = await f.run((tx) => f.engine.mknod(tx, root, a, b(name), type | 0o600, rdev || 77n, true));
    t.equal(n.inode.mode, type | 0o600, name);
    t.equal(n.inode.rdev, rdev, `${name} rdev`);
    t.equal(n.inode.inline, false, `${name} not inline`);
    t.equal(n.dirent.type, type >> 12);
    t.equal(pgOfIno(n.inode.ino), pgOfIno(a));
  }
  t.equal(
    await f.code((tx) => f.engine.mknod(tx, root, a, b('d'), S_IFDIR | 0o755, 0n, true)),
    'NOT_PERMITTED',
  );
  t.equal(
    await f.code((tx) => f.engine.mknod(tx, root, a, b('d'), 0o030000 | 0o755, 0n, true)),
    'INVALID_ARGUMENT',
  );
  t.equal(
    await f.code((tx) => f.engine.mknod(tx, root, a, b('l'), S_IFLNK | 0o755, 0n, true)),
    'INVALID_ARGUMENT',
  );
  await f.chmod(a, 0o777);
  t.equal(
    await f.code((tx) => f.engine.mknod(tx, alice, a, b('c2'), S_IFCHR | 0o600, 1n, true)),
    'NOT_PERMITTED',
  );
  t.equal(await f.code((tx) => f.engine.mknod(tx, alice, a, b('p2'), S_IFIFO | 0o600, 0n, true)), 'OK');
  t.equal((await f.stat(a)).entries, 7);
  t.equal((await f.stat(a)).nlink, 2);
});

t.test('create: exclusive and non-exclusive', async (t) => {
  const f = await Fixture.make();
  const ino = await f.create(ROOT, 'f');
  const d = await f.mkdir(ROOT, 'd');
  t.equal(
    await f.code((tx) => f.engine.mknod(tx, root, ROOT, b('f'), S_IFREG | 0o644, 0n, true)),
    'ALREADY_EXISTS',
  );
  const again = await f.run((tx) => f.engine.mknod(tx, root, ROOT, b('f'), S_IFREG | 0o600, 0n, false));
  t.equal(again.existed, true);
  t.equal(again.inode.ino, ino);
  t.equal(again.inode.mode, S_IFREG | 0o644, 'existing file unchanged');
  t.equal(
    await f.code((tx) => f.engine.mknod(tx, root, ROOT, b('d'), S_IFREG | 0o644, 0n, false)),
    'IS_A_DIRECTORY',
  );
  t.equal((await f.stat(d)).nlink, 2);
  t.equal((await f.stat(ROOT)).entries, 2);
});

t.test('names are validated by every entry operation', async (t) => {
  const f = await Fixture.make();
  const file = await f.create(ROOT, 'f');
  const long = 'x'.repeat(limits.nameMaxBytes + 1);
  const max = 'y'.repeat(limits.nameMaxBytes);
  const ops = {
    mkdir: (n: string) => f.code((tx) => f.engine.mkdir(tx, root, ROOT, b(n), 0o755)),
    mknod: (n: string) => f.code((tx) => f.engine.mknod(tx, root, ROOT, b(n), S_IFREG | 0o644, 0n, true)),
    symlink: (n: string) => f.code((tx) => f.engine.symlink(tx, root, ROOT, b(n), b('t'))),
    link: (n: string) => f.code((tx) => f.engine.link(tx, root, file, ROOT, b(n))),
    lookup: (n: string) => f.code((tx) => f.engine.lookup(tx, root, ROOT, b(n))),
    unlink: (n: string) => f.code((tx) => f.engine.unlink(tx, root, ROOT, b(n))),
    rmdir: (n: string) => f.code((tx) => f.engine.rmdir(tx, root, ROOT, b(n))),
    renameFrom: (n: string) => f.code((tx) => f.engine.rename(tx, root, ROOT, b(n), ROOT, b('z'), noFlags)),
    renameTo: (n: string) => f.code((tx) => f.engine.rename(tx, root, ROOT, b('f'), ROOT, b(n), noFlags)),
  };
  for (const [op, run] of Object.entries(ops)) {
    t.equal(await run(long), 'NAME_TOO_LONG', `${op} long`);
    t.equal(await run(''), 'INVALID_ARGUMENT', `${op} empty`);
    t.equal(await run('a/b'), 'INVALID_ARGUMENT', `${op} slash`);
    t.equal(await run('.'), 'INVALID_ARGUMENT', `${op} dot`);
    t.equal(await run('..'), 'INVALID_ARGUMENT', `${op} dotdot`);
  }
  t.equal(await ops.mkdir(max), 'OK', '255 bytes is fine');
  t.equal(await ops.lookup(max), 'OK');
});

const noFlags = { noReplace: false, exchange: false };

t.test('parent must exist, be a directory and not be removed', async (t) => {
  const f = await Fixture.make();
  const file = await f.create(ROOT, 'f');
  const gone = await f.mkdir(ROOT, 'gone');
  await f.run((tx) => f.engine.rmdir(tx, root, ROOT, b('gone')));
  for (const [parent, code] of [
    [999n, 'NOT_FOUND'],
    [file, 'NOT_A_DIRECTORY'],
    [gone, 'NOT_FOUND'],
  ] as const) {
    t.equal(await f.code((tx) => f.engine.mkdir(tx, root, parent, b('n'), 0o755)), code, `mkdir ${parent}`);
    t.equal(await f.code((tx) => f.engine.mknod(tx, root, parent, b('n'), S_IFREG, 0n, true)), code);
    t.equal(await f.code((tx) => f.engine.symlink(tx, root, parent, b('n'), b('x'))), code);
    t.equal(await f.code((tx) => f.engine.link(tx, root, file, parent, b('n'))), code);
    t.equal(await f.code((tx) => f.engine.lookup(tx, root, parent, b('n'))), code);
    t.equal(await f.code((tx) => f.engine.unlink(tx, root, parent, b('n'))), code);
    t.equal(await f.code((tx) => f.engine.rmdir(tx, root, parent, b('n'))), code);
    t.equal(await f.code((tx) => f.engine.rename(tx, root, ROOT, b('f'), parent, b('n'), noFlags)), code);
  }
  t.equal(await f.code((tx) => f.engine.readdir(tx, root, file, 0n, 10)), 'NOT_A_DIRECTORY');
  t.equal(await f.code((tx) => f.engine.readdir(tx, root, 999n, 0n, 10)), 'NOT_FOUND');
  t.equal(
    (await f.run((tx) => f.engine.readdir(tx, root, gone, 0n, 10))).entries.length,
    0,
    'removed dir lists empty',
  );
});

t.test('search and write permission on the parent, owner/group/other classes', async (t) => {
  const f = await Fixture.make();
  const d = await f.mkdir(ROOT, 'd');
  await f.create(d, 'f');
  // root:root 0755 — others may search, not write.
  t.equal(await f.code((tx) => f.engine.lookup(tx, alice, d, b('f'))), 'OK');
  t.equal(await f.code((tx) => f.engine.mkdir(tx, alice, d, b('n'), 0o755)), 'PERMISSION_DENIED');
  t.equal(await f.code((tx) => f.engine.mknod(tx, alice, d, b('n'), S_IFREG, 0n, true)), 'PERMISSION_DENIED');
  t.equal(await f.code((tx) => f.engine.symlink(tx, alice, d, b('n'), b('x'))), 'PERMISSION_DENIED');
  t.equal(await f.code((tx) => f.engine.unlink(tx, alice, d, b('f'))), 'PERMISSION_DENIED');
  t.equal(
    await f.code((tx) => f.engine.mkdir(tx, alice, d, b('f'), 0o755)),
    'ALREADY_EXISTS',
    'EEXIST before EACCES',
  );
  // No search permission: lookups fail before anything else.
  await f.chmod(d, 0o776);
  t.equal(await f.code((tx) => f.engine.lookup(tx, alice, d, b('f'))), 'PERMISSION_DENIED');
  t.equal(await f.code((tx) => f.engine.mknod(tx, alice, d, b('n'), S_IFREG, 0n, true)), 'PERMISSION_DENIED');
  t.equal(await f.code((tx) => f.engine.mkdir(tx, alice, d, b('f'), 0o755)), 'PERMISSION_DENIED');
  t.equal(await f.code((tx) => f.engine.lookup(tx, root, d, b('f'))), 'OK', 'root searches anything');
  await f.chmod(d, 0o000);
  t.equal(await f.code((tx) => f.engine.mkdir(tx, root, d, b('r'), 0o755)), 'OK', 'root writes anything');
  // Group class through a supplementary group; the owner class wins over it.
  await f.chown(d, 1000, 100);
  await f.chmod(d, 0o070);
  t.equal(
    await f.code((tx) => f.engine.mknod(tx, bob, d, b('bob'), S_IFREG, 0n, true)),
    'OK',
    'bob via group 100',
  );
  t.equal(
    await f.code((tx) => f.engine.lookup(tx, alice, d, b('bob'))),
    'PERMISSION_DENIED',
    'owner class: 0',
  );
  t.equal(
    await f.code((tx) => f.engine.lookup(tx, nobody, d, b('bob'))),
    'PERMISSION_DENIED',
    'other class: 0',
  );
  await f.chmod(d, 0o007);
  t.equal(await f.code((tx) => f.engine.lookup(tx, bob, d, b('bob'))), 'PERMISSION_DENIED', 'group class: 0');
  t.equal(await f.code((tx) => f.engine.lookup(tx, nobody, d, b('bob'))), 'OK');
  await f.chmod(d, 0o003);
  t.equal(await f.code((tx) => f.engine.unlink(tx, nobody, d, b('bob'))), 'OK', 'w+x suffices to delete');
  await f.chmod(d, 0o005);
  t.equal(await f.code((tx) => f.engine.mkdir(tx, nobody, d, b('q'), 0o755)), 'PERMISSION_DENIED');
});

t.test('new inode ownership: caller, or the set-group-ID parent', async (t) => {
  const f = await Fixture.make();
  const open = await f.mkdir(ROOT, 'open', 0o777);
  await f.chmod(open, 0o777);
  const af = await f.run((tx) => f.engine.mknod(tx, alice, open, b('af'), S_IFREG | 0o755, 0n, true));
  t.match(af.inode, { uid: 1000, gid: 1000 });
  const g = await f.mkdir(ROOT, 'g');
  await f.chown(g, 0, 100);
  await f.chmod(g, 0o2777);
  const file = await f.run((tx) => f.engine.mknod(tx, alice, g, b('f'), S_IFREG | 0o644, 0n, true));
  t.match(file.inode, { uid: 1000, gid: 100, mode: S_IFREG | 0o644 });
  const sub = await f.run((tx) => f.engine.mkdir(tx, alice, g, b('sub'), 0o755));
  t.match(sub.inode, { uid: 1000, gid: 100, mode: S_IFDIR | 0o2755 }, 'directories inherit set-group-ID');
  const link = await f.run((tx) => f.engine.symlink(tx, nobody, g, b('l'), b('target')));
  t.match(link.inode, { uid: 65534, gid: 100 });
  // nobody is not in group 100: a set-group-ID executable loses the bit.
  const s1 = await f.run((tx) => f.engine.mknod(tx, nobody, g, b('s1'), S_IFREG | 0o2755, 0n, true));
  t.equal(s1.inode.mode, S_IFREG | 0o755);
  const s2 = await f.run((tx) => f.engine.mknod(tx, nobody, g, b('s2'), S_IFREG | 0o2745, 0n, true));
  t.equal(s2.inode.mode, S_IFREG | 0o2745, 'without group-exec (lock marker) kept, as Linux');
  const s3 = await f.run((tx) => f.engine.mknod(tx, bob, g, b('s3'), S_IFREG | 0o6755, 0n, true));
  t.equal(s3.inode.mode, S_IFREG | 0o6755, 'member of the group keeps it');
  const s4 = await f.run((tx) => f.engine.mknod(tx, root, g, b('s4'), S_IFREG | 0o2755, 0n, true));
  t.equal(s4.inode.mode, S_IFREG | 0o2755, 'root keeps it');
  const s5 = await f.run((tx) => f.engine.mknod(tx, alice, open, b('s5'), S_IFREG | 0o2755, 0n, true));
  t.equal(s5.inode.mode, S_IFREG | 0o2755, 'own gid in a plain directory keeps it');
});

t.test('symlink: target inline, size, limits', async (t) => {
  const f = await Fixture.make();
  const d = await f.mkdir(ROOT, 'd');
  const r = await f.run((tx) => f.engine.symlink(tx, root, d, b('l'), b('../some/target')));
  t.match(r.inode, { mode: S_IFLNK | 0o777, size: 14n, inline: true, nlink: 1, parent: 0n });
  t.equal(r.dirent.type, S_IFLNK >> 12);
  t.equal(pgOfIno(r.inode.ino), pgOfIno(d));
  t.equal((await f.run((tx) => f.engine.readlink(tx, r.inode.ino))).toString(), '../some/target');
  t.equal(await f.code((tx) => f.engine.readlink(tx, d)), 'INVALID_ARGUMENT');
  t.equal(await f.code((tx) => f.engine.symlink(tx, root, d, b('e'), Buffer.alloc(0))), 'NOT_FOUND');
  const big = Buffer.alloc(limits.symlinkMaxBytes + 1, 0x61);
  t.equal(await f.code((tx) => f.engine.symlink(tx, root, d, b('big'), big)), 'NAME_TOO_LONG');
  const max = Buffer.alloc(limits.symlinkMaxBytes, 0x61);
  t.equal(await f.code((tx) => f.engine.symlink(tx, root, d, b('max'), max)), 'OK');
  t.equal(await f.code((tx) => f.engine.symlink(tx, root, d, b('l'), b('x'))), 'ALREADY_EXISTS');
  t.equal((await f.stat(d)).entries, 2);
});

t.test('link: counts, times, and refusals', async (t) => {
  const f = await Fixture.make();
  const a = await f.mkdir(ROOT, 'a');
  const c = await f.mkdir(ROOT, 'c');
  const file = await f.create(a, 'f');
  const before = await f.stat(file);
  const r = await f.run((tx) => f.engine.link(tx, root, file, c, b('g')));
  const now = f.clockNs;
  t.equal(r.inode.nlink, 2);
  t.equal(r.dirent.ino, file);
  const after = await f.stat(file);
  t.equal(after.nlink, 2);
  t.equal(after.ctimeNs, now);
  t.equal(after.mtimeNs, before.mtimeNs, 'link leaves mtime');
  const cd = await f.stat(c);
  t.match(cd, { entries: 1, nlink: 2, mtimeNs: now, ctimeNs: now });
  t.equal((await f.stat(a)).mtimeNs, before.mtimeNs, 'old parent untouched');
  t.equal(await f.code((tx) => f.engine.link(tx, root, file, c, b('g'))), 'ALREADY_EXISTS');
  t.equal(await f.code((tx) => f.engine.link(tx, root, a, c, b('dirlink'))), 'NOT_PERMITTED');
  t.equal(await f.code((tx) => f.engine.link(tx, root, 12345n, c, b('x'))), 'NOT_FOUND');
  t.equal(await f.code((tx) => f.engine.link(tx, alice, file, c, b('x'))), 'PERMISSION_DENIED');
  // At the link limit.
  await f.run(async (tx) => tx.putInode({ ...(await tx.getInode(file))!, nlink: limits.linkMax }));
  t.equal(await f.code((tx) => f.engine.link(tx, root, file, c, b('x'))), 'TOO_MANY_LINKS');
  await f.run(async (tx) => tx.putInode({ ...(await tx.getInode(file))!, nlink: 2 }));
  // An unlinked (orphan) inode cannot get a name again.
  await f.run((tx) => f.engine.unlink(tx, root, a, b('f')));
  await f.run((tx) => f.engine.unlink(tx, root, c, b('g')));
  t.equal((await f.stat(file)).nlink, 0);
  t.equal(await f.code((tx) => f.engine.link(tx, root, file, c, b('x'))), 'NOT_FOUND');
});

t.test('mkdir at the parent link limit', async (t) => {
  const f = await Fixture.make();
  const a = await f.mkdir(ROOT, 'a');
  await f.run(async (tx) => tx.putInode({ ...(await tx.getInode(a))!, nlink: limits.linkMax }));
  t.equal(await f.code((tx) => f.engine.mkdir(tx, root, a, b('x'), 0o755)), 'TOO_MANY_LINKS');
  t.equal(
    await f.code((tx) => f.engine.mknod(tx, root, a, b('x'), S_IFREG, 0n, true)),
    'OK',
    'files do not count',
  );
});

t.test('unlink: links, orphans, refusals, times', async (t) => {
  const f = await Fixture.make();
  const d = await f.mkdir(ROOT, 'd');
  const file = await f.create(d, 'f');
  await f.run((tx) => f.engine.link(tx, root, file, d, b('g')));
  const u1 = await f.run((tx) => f.engine.unlink(tx, root, d, b('f')));
  const now = f.clockNs;
  const { dir: dir1, ...rest1 } = u1;
  t.same(rest1, { ino: file, nlink: 1, size: 0n, isDir: false });
  t.same(dir1, await f.stat(d), 'the directory as the unlink left it (the client answers GETATTR with it)');
  t.notOk(await f.isOrphan(file));
  t.match(await f.stat(file), { nlink: 1, ctimeNs: now });
  t.match(await f.stat(d), { entries: 1, mtimeNs: now, ctimeNs: now });
  await f.run((tx) => f.engine.writeInline(tx, root, file, 0n, b('hello'), false));
  const u2 = await f.run((tx) => f.engine.unlink(tx, root, d, b('g')));
  const { dir: dir2, ...rest2 } = u2;
  t.same(rest2, { ino: file, nlink: 0, size: 5n, isDir: false });
  t.same(dir2, await f.stat(d));
  t.ok(await f.isOrphan(file), 'last link: orphan');
  t.equal((await f.stat(file)).nlink, 0, 'inode kept for open files');
  t.equal((await f.stat(d)).entries, 0);
  t.same(await f.names(d), []);
  t.equal(await f.code((tx) => f.engine.unlink(tx, root, d, b('g'))), 'NOT_FOUND');
  const sub = await f.mkdir(d, 'sub');
  t.equal(await f.code((tx) => f.engine.unlink(tx, root, d, b('sub'))), 'IS_A_DIRECTORY');
  t.equal((await f.stat(sub)).nlink, 2);
});

t.test('sticky directory: only the file owner, the directory owner or root delete', async (t) => {
  const f = await Fixture.make();
  const tmp = await f.mkdir(ROOT, 'tmp');
  await f.chmod(tmp, 0o1777);
  const mk = async (who: typeof alice, name: string) =>
    f.run((tx) => f.engine.mknod(tx, who, tmp, b(name), S_IFREG | 0o666, 0n, true));
  await mk(alice, 'a1');
  await mk(alice, 'a2');
  await mk(alice, 'a3');
  await f.run((tx) => f.engine.mkdir(tx, alice, tmp, b('ad'), 0o777));
  t.equal(await f.code((tx) => f.engine.unlink(tx, bob, tmp, b('a1'))), 'NOT_PERMITTED');
  t.equal(await f.code((tx) => f.engine.rmdir(tx, bob, tmp, b('ad'))), 'NOT_PERMITTED');
  t.equal(await f.code((tx) => f.engine.unlink(tx, alice, tmp, b('a1'))), 'OK', 'file owner');
  t.equal(await f.code((tx) => f.engine.unlink(tx, root, tmp, b('a2'))), 'OK', 'root');
  await f.chown(tmp, 1001, 1001);
  t.equal(await f.code((tx) => f.engine.unlink(tx, bob, tmp, b('a3'))), 'OK', 'directory owner');
  t.equal(await f.code((tx) => f.engine.rmdir(tx, bob, tmp, b('ad'))), 'OK');
  // Without the sticky bit, write permission is enough.
  const pub = await f.mkdir(ROOT, 'pub');
  await f.chmod(pub, 0o777);
  await f.run((tx) => f.engine.mknod(tx, alice, pub, b('x'), S_IFREG | 0o600, 0n, true));
  t.equal(await f.code((tx) => f.engine.unlink(tx, nobody, pub, b('x'))), 'OK');
});

t.test('rmdir: emptiness, type, counts, orphan', async (t) => {
  const f = await Fixture.make();
  const a = await f.mkdir(ROOT, 'a');
  const x = await f.mkdir(a, 'x');
  await f.create(x, 'f');
  await f.create(a, 'file');
  t.equal(await f.code((tx) => f.engine.rmdir(tx, root, a, b('x'))), 'DIRECTORY_NOT_EMPTY');
  t.equal(await f.code((tx) => f.engine.rmdir(tx, root, a, b('file'))), 'NOT_A_DIRECTORY');
  t.equal(await f.code((tx) => f.engine.rmdir(tx, root, a, b('none'))), 'NOT_FOUND');
  t.equal(await f.code((tx) => f.engine.rmdir(tx, alice, a, b('x'))), 'PERMISSION_DENIED');
  await f.run((tx) => f.engine.unlink(tx, root, x, b('f')));
  t.equal((await f.stat(a)).nlink, 3);
  const u = await f.run((tx) => f.engine.rmdir(tx, root, a, b('x')));
  const now = f.clockNs;
  t.same(u, { ino: x, nlink: 0, size: 0n, isDir: true });
  t.match(await f.stat(a), { nlink: 2, entries: 1, mtimeNs: now, ctimeNs: now });
  t.match(await f.stat(x), { nlink: 0, ctimeNs: now });
  t.ok(await f.isOrphan(x));
  t.same(await f.names(a), ['file']);
  await f.run((tx) => f.engine.reclaim(tx, x));
  t.same(await f.keysOf(x), [], 'reclaimed directory leaves no key');
});

t.test('orphan reclaim removes inode, inline data, xattrs and mark', async (t) => {
  const f = await Fixture.make();
  const file = await f.create(ROOT, 'f');
  await f.run((tx) => f.engine.writeInline(tx, root, file, 0n, b('data'), false));
  await f.run((tx) => f.engine.setxattr(tx, root, file, b('user.a'), b('1'), 0));
  await f.run((tx) => f.engine.setxattr(tx, root, file, b('trusted.b'), b('2'), 0));
  await f.run((tx) => f.engine.setxattr(tx, root, file, b('security.c'), b('3'), 0));
  await f.run((tx) => f.engine.reclaim(tx, file));
  t.same(
    (await f.keysOf(file)).sort(),
    ['inline', 'inode', 'xattr', 'xattr', 'xattr'],
    'linked: reclaim is a no-op',
  );
  await f.run((tx) => f.engine.unlink(tx, root, ROOT, b('f')));
  t.same((await f.keysOf(file)).sort(), ['inline', 'inode', 'orphan', 'xattr', 'xattr', 'xattr']);
  await f.run((tx) => f.engine.reclaim(tx, file));
  t.same(await f.keysOf(file), []);
  t.equal(await f.code((tx) => f.engine.getattr(tx, file)), 'NOT_FOUND');
  t.equal(await f.code((tx) => f.engine.reclaim(tx, file)), 'OK', 'gone: no-op');
  const l = await f.run((tx) => f.engine.symlink(tx, root, ROOT, b('l'), b('t')));
  await f.run((tx) => f.engine.unlink(tx, root, ROOT, b('l')));
  await f.run((tx) => f.engine.reclaim(tx, l.inode.ino));
  t.same(await f.keysOf(l.inode.ino), [], 'symlink target removed too');
});

t.test('reclaim reads the xattr keys only of an inode that may have some', async (t) => {
  const f = await Fixture.make();
  // Counted: one set and removed again leaves the count at 0 and no key.
  const file = await f.create(ROOT, 'g');
  await f.run((tx) => f.engine.setxattr(tx, root, file, b('user.a'), b('1'), 0));
  await f.run((tx) => f.engine.removexattr(tx, root, file, b('user.a')));
  await f.run((tx) => f.engine.unlink(tx, root, ROOT, b('g')));
  const scans: bigint[] = [];
  const counting = (tx: Parameters<Parameters<typeof f.run>[0]>[0]) =>
    new Proxy(tx, {
      get: (o, k) =>
        k === 'listXattrNames'
          ? (ino: bigint) => (scans.push(ino), o.listXattrNames(ino))
          : (o as unknown as Record<string | symbol, unknown>)[k as string],
    });
  await f.run((tx) => f.engine.reclaim(counting(tx), file));
  t.same(await f.keysOf(file), [], 'nothing left');
  t.same(scans, [], 'no range read of its xattrs (count 0)');
  // Made before the count (no `xattrs` in its record): its keys are found by a scan.
  const old = await f.create(ROOT, 'h');
  await f.run((tx) => f.engine.setxattr(tx, root, old, b('user.b'), b('2'), 0));
  await f.run(async (tx) => {
    const rec = (await tx.getInode(old))!;
    delete rec.xattrs;
    tx.putInode(rec);
  });
  await f.run((tx) => f.engine.unlink(tx, root, ROOT, b('h')));
  await f.run((tx) => f.engine.reclaim(counting(tx), old));
  t.same(await f.keysOf(old), [], 'its xattr went with it');
  t.same(scans, [old], 'scanned');
});

t.test('readdir: permission, paging, parent, eof', async (t) => {
  const f = await Fixture.make();
  const d = await f.mkdir(ROOT, 'd');
  for (const n of ['a', 'b', 'c', 'd', 'e']) await f.create(d, n);
  const p1 = await f.run((tx) => f.engine.readdir(tx, root, d, 0n, 2));
  t.same(
    p1.entries.map((e) => [e.name.toString(), e.dirent.cookie]),
    [
      ['a', 1n],
      ['b', 2n],
    ],
  );
  t.equal(p1.eof, false);
  t.equal(p1.parent, ROOT);
  const p3 = await f.run((tx) => f.engine.readdir(tx, root, d, 4n, 2));
  t.same(
    p3.entries.map((e) => e.name.toString()),
    ['e'],
  );
  t.equal(p3.eof, true);
  t.equal(
    (await f.run((tx) => f.engine.readdir(tx, root, ROOT, 0n, 10))).parent,
    ROOT,
    'root is its own parent',
  );
  t.equal(await f.code((tx) => f.engine.readdir(tx, root, d, 0n, 0)), 'INVALID_ARGUMENT');
  await f.chmod(d, 0o711);
  t.equal(await f.code((tx) => f.engine.readdir(tx, alice, d, 0n, 10)), 'PERMISSION_DENIED', 'needs read');
  t.equal(await f.code((tx) => f.engine.lookup(tx, alice, d, b('a'))), 'OK', 'search still allowed');
  await f.chmod(d, 0o744);
  t.equal(await f.code((tx) => f.engine.readdir(tx, alice, d, 0n, 10)), 'OK', 'read without search lists');
});

t.test('readdir cookies are stable under concurrent inserts and deletes', async (t) => {
  const f = await Fixture.make();
  const d = await f.mkdir(ROOT, 'd');
  const stay: string[] = [];
  for (let i = 0; i < 40; i++) {
    await f.create(d, `s${i}`);
    stay.push(`s${i}`);
    await f.create(d, `v${i}`);
  }
  const seen: string[] = [];
  let cookie = 0n;
  let round = 0;
  for (;;) {
    const page = await f.run((tx) => f.engine.readdir(tx, root, d, cookie, 7));
    for (const e of page.entries) {
      seen.push(e.name.toString());
      t.ok(e.dirent.cookie > cookie, 'cookies increase');
      cookie = e.dirent.cookie;
    }
    if (page.eof) break;
    // Between pages: delete some volatile entries (seen or not), add new ones, rename a volatile one.
    round++;
    for (let k = 0; k < 3; k++) {
      const v = `v${(round * 7 + k * 13) % 40}`;
      await f.code((tx) => f.engine.unlink(tx, root, d, b(v)));
    }
    await f.create(d, `n${round}`);
    await f.code((tx) => f.engine.rename(tx, root, d, b(`v${round % 40}`), d, b(`r${round}`), noFlags));
  }
  for (const s of stay) t.equal(seen.filter((x) => x === s).length, 1, `${s} listed exactly once`);
  t.equal(new Set(seen).size, seen.length, 'no name listed twice');
  const final = await f.names(d);
  t.equal((await f.stat(d)).entries, final.length, 'entries count matches the listing');
});

t.test('failing operations buffer no write before they throw', async (t) => {
  const f = await Fixture.make();
  const d = await f.mkdir(ROOT, 'd');
  const file = await f.create(d, 'f');
  const sub = await f.mkdir(d, 's');
  await f.create(sub, 'x');
  const cases: [string, Parameters<typeof f.failure>[0]][] = [
    ['ALREADY_EXISTS', (tx) => f.engine.mkdir(tx, root, d, b('f'), 0o755)],
    ['PERMISSION_DENIED', (tx) => f.engine.mknod(tx, alice, d, b('n'), S_IFREG, 0n, true)],
    ['DIRECTORY_NOT_EMPTY', (tx) => f.engine.rmdir(tx, root, d, b('s'))],
    ['IS_A_DIRECTORY', (tx) => f.engine.unlink(tx, root, d, b('s'))],
    ['PERMISSION_DENIED', (tx) => f.engine.link(tx, alice, file, d, b('x'))],
    ['NOT_A_DIRECTORY', (tx) => f.engine.rename(tx, root, d, b('s'), d, b('f'), noFlags)],
    ['DIRECTORY_NOT_EMPTY', (tx) => f.engine.rename(tx, root, d, b('f'), ROOT, b('d'), noFlags)],
    ['NOT_PERMITTED', (tx) => f.engine.setattr(tx, alice, file, { mode: 0o777 })],
    ['NO_XATTR', (tx) => f.engine.setxattr(tx, root, file, b('user.x'), b('v'), 2)],
    ['NOT_INLINE', (tx) => f.engine.writeInline(tx, root, file, 5000n, b('v'), false)],
    ['CONFLICT', (tx) => f.engine.convertInline(tx, file, 7n)],
  ];
  for (const [code, op] of cases) t.same(await f.failure(op), { code, writes: 0 }, code);
});

t.test('broken invariants throw plain Errors, not FsErrors', async (t) => {
  const f = await Fixture.make();
  const d = await f.mkdir(ROOT, 'd');
  await f.create(d, 'f');
  // A directory record whose entry count lost track: removing the entry would go negative.
  await f.run(async (tx) => tx.putInode({ ...(await tx.getInode(d))!, entries: 0 }));
  const e1 = await f.run((tx) => f.engine.unlink(tx, root, d, b('f'))).catch((e: unknown) => e);
  t.ok(e1 instanceof Error && !('code' in e1), 'negative entries');
  t.match(String(e1), /invariant/);
  // An entry naming an inode that does not exist.
  await f.run(async (tx) => tx.putDirent(d, b('ghost'), { ino: 0xdeadn, type: 8, cookie: 99n }));
  const e2 = await f.run((tx) => f.engine.unlink(tx, root, d, b('ghost'))).catch((e: unknown) => e);
  t.ok(e2 instanceof Error && !('code' in e2), 'dangling entry');
  t.match(String(e2), /invariant/);
});

t.test('a change of names answers its directories as it left them', async (t) => {
  const f = await Fixture.make();
  const d = await f.mkdir(ROOT, 'd');
  const e = await f.mkdir(ROOT, 'e');
  const made = await f.run((tx) => f.engine.mknod(tx, root, d, b('f'), S_IFREG | 0o644, 0n, true));
  t.same(made.dir, await f.stat(d), 'mknod');
  const again = await f.run((tx) => f.engine.mknod(tx, root, d, b('f'), S_IFREG | 0o644, 0n, false));
  t.ok(again.existed, 'an existing name changes nothing (the reply then carries no directory)');
  const sub = await f.run((tx) => f.engine.mkdir(tx, root, d, b('s'), 0o755));
  t.same(sub.dir, await f.stat(d), 'mkdir');
  t.equal(sub.dir?.nlink, 3, "with the new subdirectory's link");
  const linked = await f.run((tx) => f.engine.link(tx, root, made.inode.ino, e, b('g')));
  t.same(linked.dir, await f.stat(e), 'link');
  const within = await f.run((tx) => f.engine.rename(tx, root, d, b('f'), d, b('f2'), noFlags));
  t.same(within.dirs, [await f.stat(d), await f.stat(d)], 'rename within a directory');
  const across = await f.run((tx) => f.engine.rename(tx, root, d, b('s'), e, b('s'), noFlags));
  t.same(across.dirs, [await f.stat(d), await f.stat(e)], 'rename across directories');
  t.same(
    [across.dirs?.[0].nlink, across.dirs?.[1].nlink],
    [2, 3],
    'the moved directory counted where it went',
  );
  const same = await f.run((tx) => f.engine.rename(tx, root, e, b('g'), d, b('f2'), noFlags));
  t.same(same, {}, 'a rename onto the same inode changes nothing and answers no directory');
});
