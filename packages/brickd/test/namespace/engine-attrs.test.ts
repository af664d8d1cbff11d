import { limits } from '@dunix/proto';
import t from 'tap';
import type { Cred, SetAttrChanges } from '../../src/namespace/api.js';
import {
  FMODE_EXEC,
  O_RDWR,
  O_TRUNC,
  O_WRONLY,
  XATTR_CREATE,
  XATTR_REPLACE,
} from '../../src/namespace/engine.js';
import { S_IFCHR, S_IFDIR, S_IFIFO, S_IFREG } from '../../src/store/records.js';
import { hasNoXattrs } from '../../src/rpc/wire.js';
import {
  ACL_GROUP_OBJ,
  ACL_MASK,
  ACL_OTHER,
  ACL_USER,
  ACL_USER_OBJ,
  serializeAcl,
} from '../../src/namespace/acl.js';

/** user::rw- user:1000:r-- group::r-- mask::r-- other::---, in the kernel's xattr format. */
const namedUserAcl = serializeAcl([
  { tag: ACL_USER_OBJ, perm: 6, id: -1 },
  { tag: ACL_USER, perm: 4, id: 1000 },
  { tag: ACL_GROUP_OBJ, perm: 4, id: -1 },
  { tag: ACL_MASK, perm: 4, id: -1 },
  { tag: ACL_OTHER, perm: 0, id: -1 },
]);
import { alice, b, bob, Fixture, nobody, ROOT, root } from './harness.js';

async function setattr(f: Fixture, cred: Cred, ino: bigint, changes: SetAttrChanges): Promise<string> {
  return f.code((tx) => f.engine.setattr(tx, cred, ino, changes));
}

/** A fixture with /d (0777) and /d/f owned by alice:1000 mode 0644. */
async function withFile(): Promise<{ f: Fixture; d: bigint; file: bigint }> {
  const f = await Fixture.make();
  const d = await f.mkdir(ROOT, 'd');
  await f.chmod(d, 0o777);
  const r = await f.run((tx) => f.engine.mknod(tx, alice, d, b('f'), S_IFREG | 0o644, 0n, true));
  return { f, d, file: r.inode.ino };
}

t.test('chmod: owner or root; S_ISGID dropped for non-members; ctime', async (t) => {
  const { f, file } = await withFile();
  const before = await f.stat(file);
  t.equal(await setattr(f, bob, file, { mode: 0o600 }), 'NOT_PERMITTED');
  t.equal(await setattr(f, alice, file, { mode: 0o2755 }), 'OK');
  const now = f.clockNs;
  t.match(await f.stat(file), {
    mode: S_IFREG | 0o2755,
    ctimeNs: now,
    mtimeNs: before.mtimeNs,
    atimeNs: before.atimeNs,
  });
  await f.chown(file, 1000, 100);
  t.equal(await setattr(f, alice, file, { mode: 0o2755 }), 'OK', 'alice is in group 100');
  t.equal((await f.stat(file)).mode, S_IFREG | 0o2755);
  await f.chown(file, 1000, 4242);
  t.equal(await setattr(f, alice, file, { mode: 0o2755 }), 'OK');
  t.equal((await f.stat(file)).mode, S_IFREG | 0o755, 'not in group 4242: S_ISGID cleared');
  t.equal(await setattr(f, root, file, { mode: 0o2755 }), 'OK');
  t.equal((await f.stat(file)).mode, S_IFREG | 0o2755, 'root keeps it');
  t.equal(await setattr(f, alice, file, { mode: 0o170777 }), 'OK');
  t.equal((await f.stat(file)).mode, S_IFREG | 0o777, 'type bits from the inode, not the request');
});

t.test('chown: uid only by root; gid by the owner to own groups', async (t) => {
  const { f, file } = await withFile();
  t.equal(await setattr(f, alice, file, { uid: 1001 }), 'NOT_PERMITTED');
  t.equal(await setattr(f, bob, file, { uid: 1000 }), 'NOT_PERMITTED');
  t.equal(await setattr(f, alice, file, { uid: 1000 }), 'OK', 'owner may "change" to itself');
  t.equal(await setattr(f, alice, file, { gid: 100 }), 'OK', 'supplementary group');
  t.equal((await f.stat(file)).gid, 100);
  t.equal(await setattr(f, alice, file, { gid: 1000 }), 'OK', 'primary group');
  t.equal(await setattr(f, alice, file, { gid: 65534 }), 'NOT_PERMITTED', 'not a member');
  t.equal(await setattr(f, bob, file, { gid: 100 }), 'NOT_PERMITTED', 'member but not owner');
  t.equal(await setattr(f, alice, file, { uid: 1000, gid: 100 }), 'OK');
  t.equal(await setattr(f, root, file, { uid: 65534, gid: 65533 }), 'OK');
  const now = f.clockNs;
  t.match(await f.stat(file), { uid: 65534, gid: 65533, ctimeNs: now });
});

t.test('chown of a non-directory clears set-user-ID, and set-group-ID per Linux', async (t) => {
  const { f, file } = await withFile();
  const d = await f.mkdir(ROOT, 'sd');
  // Set-group-ID with group-exec: both bits go, even for root.
  await f.chmod(file, 0o6755);
  await f.chown(file, 1000, 1000);
  t.equal((await f.stat(file)).mode, S_IFREG | 0o755);
  // Without group-exec (a lock marker), root keeps S_ISGID, S_ISUID still goes.
  await f.chmod(file, 0o6745);
  await f.chown(file, 1000, 1000);
  t.equal((await f.stat(file)).mode, S_IFREG | 0o2745);
  // A non-member changing the group of a lock-marked file loses it... alice is in 100 and owns the file.
  await f.chmod(file, 0o6745);
  t.equal(await setattr(f, alice, file, { gid: 100 }), 'OK');
  t.equal((await f.stat(file)).mode, S_IFREG | 0o2745, 'member keeps the marker');
  // Owner chown to itself still clears (Linux clears on any chown).
  await f.chmod(file, 0o4755);
  t.equal(await setattr(f, alice, file, { uid: 1000 }), 'OK');
  t.equal((await f.stat(file)).mode, S_IFREG | 0o755);
  // Directories keep their bits.
  await f.chmod(d, 0o6755);
  await f.chown(d, 1000, 1000);
  t.equal((await f.stat(d)).mode, S_IFDIR | 0o6755);
});

t.test('utimens: explicit times by owner/root; now by owner, root or writers', async (t) => {
  const { f, file } = await withFile();
  t.equal(await setattr(f, alice, file, { atimeNs: 5n, mtimeNs: 7n }), 'OK');
  let now = f.clockNs;
  t.match(await f.stat(file), { atimeNs: 5n, mtimeNs: 7n, ctimeNs: now });
  t.equal(await setattr(f, bob, file, { mtimeNs: 9n }), 'PERMISSION_DENIED', 'no write: EACCES first');
  t.equal(await setattr(f, bob, file, { atimeNs: 'now', mtimeNs: 'now' }), 'PERMISSION_DENIED');
  await f.chmod(file, 0o666);
  t.equal(await setattr(f, bob, file, { mtimeNs: 9n }), 'NOT_PERMITTED', 'writer, explicit: EPERM');
  t.equal(await setattr(f, bob, file, { atimeNs: 'now', mtimeNs: 'now' }), 'OK', 'writer, now: allowed');
  now = f.clockNs;
  t.match(await f.stat(file), { atimeNs: now, mtimeNs: now, ctimeNs: now });
  t.equal(await setattr(f, root, file, { atimeNs: 1n }), 'OK');
  const after = await f.stat(file);
  t.equal(after.atimeNs, 1n);
  t.equal(after.mtimeNs, now, 'omitted time untouched');
  t.equal(await setattr(f, alice, file, { mtimeNs: 'now' }), 'OK', 'owner without the write bit');
  t.equal(await setattr(f, nobody, file, {}), 'OK', 'empty change');
  const emptyAt = f.clockNs;
  t.equal((await f.stat(file)).ctimeNs, emptyAt, 'setattr always sets ctime');
});

t.test('truncate: write permission, type, limits, inline contents', async (t) => {
  const { f, d, file } = await withFile();
  t.equal(await setattr(f, bob, file, { size: 10n }), 'PERMISSION_DENIED');
  t.equal(await setattr(f, bob, file, { size: 10n, viaOpenFile: true }), 'OK', 'checked at open');
  t.equal(await setattr(f, root, d, { size: 0n }), 'IS_A_DIRECTORY');
  const fifo = await f.run((tx) => f.engine.mknod(tx, root, d, b('p'), S_IFIFO | 0o666, 0n, true));
  t.equal(await setattr(f, root, fifo.inode.ino, { size: 0n }), 'INVALID_ARGUMENT');
  const big = BigInt(limits.fileSizeMaxBytes) + 1n;
  t.equal(await setattr(f, alice, file, { size: big }), 'FILE_TOO_LARGE');
  t.equal(await setattr(f, alice, file, { size: BigInt(limits.fileSizeMaxBytes) }), 'OK');
  await f.run((tx) => f.engine.setattr(tx, alice, file, { size: 0n }));

  await f.run((tx) => f.engine.writeInline(tx, alice, file, 0n, b('hello world'), false));
  const v0 = (await f.stat(file)).dataVersion;
  const shrink = await f.run((tx) => f.engine.setattr(tx, alice, file, { size: 5n }));
  const now = f.clockNs;
  t.equal(shrink.truncatedFrom, undefined, 'inline: no blocks to trim');
  t.match(shrink.inode, { size: 5n, inline: true, mtimeNs: now, ctimeNs: now, dataVersion: v0 + 1n });
  t.equal((await f.run((tx) => f.engine.readInline(tx, file)))?.toString(), 'hello');
  const grow = await f.run((tx) => f.engine.setattr(tx, alice, file, { size: 100n }));
  t.match(grow.inode, { size: 100n, inline: true, dataVersion: v0 + 2n });
  t.equal((await f.run((tx) => f.engine.readInline(tx, file)))?.toString(), 'hello', 'record stays short');
  await f.run((tx) => f.engine.writeInline(tx, alice, file, 8n, b('XY'), false));
  const content = await f.run((tx) => f.engine.readInline(tx, file));
  t.same(
    content,
    Buffer.concat([b('hello'), Buffer.alloc(3), b('XY')]),
    'gap between record end and write is zeros',
  );
  t.equal((await f.stat(file)).size, 100n);
  // Same size: no content change, ctime only.
  const v = (await f.stat(file)).dataVersion;
  const m = (await f.stat(file)).mtimeNs;
  await f.run((tx) => f.engine.setattr(tx, alice, file, { size: 100n }));
  const sameAt = f.clockNs;
  t.match(await f.stat(file), { dataVersion: v, mtimeNs: m, ctimeNs: sameAt });
});

t.test('truncate of a block file reports where it shrank from', async (t) => {
  const { f, file } = await withFile();
  await f.run((tx) => f.engine.writeInline(tx, alice, file, 0n, b('abc'), false));
  const v = (await f.stat(file)).dataVersion;
  await f.run((tx) => f.engine.convertInline(tx, file, v));
  await f.run((tx) => f.engine.extend(tx, alice, file, 300_000n, false));
  const grow = await f.run((tx) => f.engine.setattr(tx, alice, file, { size: 400_000n }));
  t.equal(grow.truncatedFrom, undefined);
  const shrink = await f.run((tx) => f.engine.setattr(tx, alice, file, { size: 10n }));
  t.equal(shrink.truncatedFrom, 400_000n);
  t.match(shrink.inode, { size: 10n, inline: false });
});

t.test('killSuidgid on setattr, writeInline and extend', async (t) => {
  const { f, file } = await withFile();
  await f.chmod(file, 0o6755);
  await f.run((tx) => f.engine.setattr(tx, alice, file, { size: 1n, killSuidgid: true }));
  t.equal((await f.stat(file)).mode, S_IFREG | 0o755);
  await f.chmod(file, 0o6745);
  await f.run((tx) => f.engine.writeInline(tx, alice, file, 0n, b('x'), true));
  t.equal((await f.stat(file)).mode, S_IFREG | 0o2745, 'no group-exec: S_ISGID stays');
  await f.chmod(file, 0o6755);
  await f.run((tx) => f.engine.writeInline(tx, alice, file, 0n, b('x'), false));
  t.equal((await f.stat(file)).mode, S_IFREG | 0o6755, 'no kill requested');
  await f.run((tx) => f.engine.extend(tx, alice, file, 2n, true));
  t.equal((await f.stat(file)).mode, S_IFREG | 0o755);
});

t.test('writeInline: bounds, zero fill, size, times, version', async (t) => {
  const { f, d, file } = await withFile();
  const max = BigInt(f.cfg.inlineMaxBytes);
  const v0 = (await f.stat(file)).dataVersion;
  const r = await f.run((tx) => f.engine.writeInline(tx, alice, file, 4n, b('abcd'), false));
  const now = f.clockNs;
  t.match(r, { size: 8n, mtimeNs: now, ctimeNs: now, dataVersion: v0 + 1n, inline: true });
  t.same(await f.run((tx) => f.engine.readInline(tx, file)), Buffer.concat([Buffer.alloc(4), b('abcd')]));
  await f.run((tx) => f.engine.writeInline(tx, alice, file, 0n, b('XY'), false));
  t.same(
    await f.run((tx) => f.engine.readInline(tx, file)),
    Buffer.concat([b('XY'), Buffer.alloc(2), b('abcd')]),
  );
  t.equal((await f.stat(file)).size, 8n, 'overwrite inside keeps the size');
  t.equal(
    await f.code((tx) => f.engine.writeInline(tx, alice, file, max - 1n, b('ab'), false)),
    'NOT_INLINE',
  );
  t.equal(await f.code((tx) => f.engine.writeInline(tx, alice, file, max - 2n, b('ab'), false)), 'OK');
  t.equal((await f.stat(file)).size, max);
  t.equal(await f.code((tx) => f.engine.writeInline(tx, alice, d, 0n, b('ab'), false)), 'NOT_INLINE');
  const before = await f.stat(file);
  t.same(await f.run((tx) => f.engine.writeInline(tx, alice, file, 0n, Buffer.alloc(0), false)), before);
  t.equal((await f.stat(file)).mtimeNs, before.mtimeNs, 'empty write changes nothing');
});

t.test('convertInline and extend', async (t) => {
  const { f, file } = await withFile();
  await f.run((tx) => f.engine.writeInline(tx, alice, file, 0n, b('abc'), false));
  const v = (await f.stat(file)).dataVersion;
  t.equal(await f.code((tx) => f.engine.convertInline(tx, file, v - 1n)), 'CONFLICT');
  const c = await f.run((tx) => f.engine.convertInline(tx, file, v));
  t.match(c, { inline: false, size: 3n, dataVersion: v });
  t.notOk((await f.keysOf(file)).includes('inline'), 'inline record deleted');
  t.equal(await f.run((tx) => f.engine.readInline(tx, file)), undefined);
  t.equal(await f.code((tx) => f.engine.writeInline(tx, alice, file, 0n, b('x'), false)), 'NOT_INLINE');
  const e = await f.run((tx) => f.engine.extend(tx, alice, file, 100_000n, false));
  const now = f.clockNs;
  t.match(e, { size: 100_000n, mtimeNs: now, ctimeNs: now, dataVersion: v + 1n });
  const e2 = await f.run((tx) => f.engine.extend(tx, alice, file, 10n, false));
  t.match(e2, { size: 100_000n, dataVersion: v + 2n }, 'a write inside the file keeps the size');
  t.equal(
    await f.code((tx) => f.engine.extend(tx, alice, file, BigInt(limits.fileSizeMaxBytes) + 1n, false)),
    'FILE_TOO_LARGE',
  );
});

t.test('open for exec (FMODE_EXEC) needs execute, not read: 0711 runs for everyone', async (t) => {
  const { f, file } = await withFile();
  await f.chmod(file, 0o711);
  t.equal(
    await f.code((tx) => f.engine.open(tx, bob, file, 0)),
    'PERMISSION_DENIED',
    'a read open is refused',
  );
  t.equal(await f.code((tx) => f.engine.open(tx, bob, file, FMODE_EXEC)), 'OK', 'an exec open is not');
  t.equal(await f.code((tx) => f.engine.open(tx, root, file, FMODE_EXEC)), 'OK');
  await f.chmod(file, 0o644);
  t.equal(
    await f.code((tx) => f.engine.open(tx, bob, file, FMODE_EXEC)),
    'PERMISSION_DENIED',
    'read without x is no exec',
  );
  t.equal(
    await f.code((tx) => f.engine.open(tx, root, file, FMODE_EXEC)),
    'PERMISSION_DENIED',
    'root execs only with some x bit',
  );
  await f.chmod(file, 0o701);
  t.equal(await f.code((tx) => f.engine.open(tx, bob, file, FMODE_EXEC)), 'OK', 'x for others is enough');
  t.equal(
    await f.code((tx) => f.engine.open(tx, bob, file, FMODE_EXEC | O_TRUNC)),
    'PERMISSION_DENIED',
    'O_TRUNC still needs write',
  );
});

t.test('open: access modes, directories, inline content', async (t) => {
  const { f, d, file } = await withFile();
  await f.run((tx) => f.engine.writeInline(tx, alice, file, 0n, b('hi'), false));
  const r = await f.run((tx) => f.engine.open(tx, bob, file, 0));
  t.equal(r.inline?.toString(), 'hi');
  t.equal(r.inode.ino, file);
  t.equal(await f.code((tx) => f.engine.open(tx, bob, file, O_WRONLY)), 'PERMISSION_DENIED');
  t.equal(await f.code((tx) => f.engine.open(tx, bob, file, O_RDWR)), 'PERMISSION_DENIED');
  t.equal(
    await f.code((tx) => f.engine.open(tx, bob, file, O_TRUNC)),
    'PERMISSION_DENIED',
    'O_TRUNC needs write',
  );
  t.equal(await f.code((tx) => f.engine.open(tx, alice, file, O_RDWR)), 'OK');
  t.equal(await f.code((tx) => f.engine.open(tx, root, file, O_RDWR)), 'OK');
  await f.chmod(file, 0o200);
  t.equal(await f.code((tx) => f.engine.open(tx, alice, file, 0)), 'PERMISSION_DENIED');
  t.equal(await f.code((tx) => f.engine.open(tx, alice, file, O_WRONLY)), 'OK');
  t.equal(await f.code((tx) => f.engine.open(tx, root, d, O_WRONLY)), 'IS_A_DIRECTORY');
  t.equal(await f.code((tx) => f.engine.open(tx, root, d, O_RDWR)), 'IS_A_DIRECTORY');
  const od = await f.run((tx) => f.engine.open(tx, root, d, 0));
  t.equal(od.inline, undefined);
  const l = await f.run((tx) => f.engine.symlink(tx, root, d, b('l'), b('f')));
  t.equal(await f.code((tx) => f.engine.open(tx, root, l.inode.ino, 0)), 'SYMLINK_LOOP');
  t.equal(await f.code((tx) => f.engine.open(tx, root, 4242n, 0)), 'NOT_FOUND');
});

t.test('user.* xattrs: flags, permissions, ctime, listing', async (t) => {
  const { f, d, file } = await withFile();
  const set = (cred: Cred, ino: bigint, n: string, v: string, fl = 0) =>
    f.code((tx) => f.engine.setxattr(tx, cred, ino, b(n), b(v), fl));
  t.equal(await set(alice, file, 'user.a', '1'), 'OK');
  const now = f.clockNs;
  t.equal((await f.stat(file)).ctimeNs, now, 'setxattr sets ctime');
  t.equal((await f.run((tx) => f.engine.getxattr(tx, bob, file, b('user.a')))).toString(), '1');
  t.equal(await set(alice, file, 'user.a', '2', XATTR_CREATE), 'ALREADY_EXISTS');
  t.equal(await set(alice, file, 'user.b', '2', XATTR_REPLACE), 'NO_XATTR');
  t.equal(await set(alice, file, 'user.a', '3', XATTR_REPLACE), 'OK');
  t.equal(await set(alice, file, 'user.b', '4', XATTR_CREATE), 'OK');
  t.equal(await set(alice, file, 'user.c', '4', 4), 'INVALID_ARGUMENT');
  t.equal((await f.run((tx) => f.engine.getxattr(tx, root, file, b('user.a')))).toString(), '3');
  t.equal(await f.code((tx) => f.engine.getxattr(tx, root, file, b('user.zz'))), 'NO_XATTR');
  t.same((await f.run((tx) => f.engine.listxattr(tx, bob, file))).map(String), ['user.a', 'user.b']);
  t.equal(await set(bob, file, 'user.c', 'x'), 'PERMISSION_DENIED', 'needs write');
  await f.chmod(file, 0o600);
  t.equal(
    await f.code((tx) => f.engine.getxattr(tx, bob, file, b('user.a'))),
    'PERMISSION_DENIED',
    'needs read',
  );
  t.equal(await f.code((tx) => f.engine.getxattr(tx, root, file, b('user.a'))), 'OK');
  t.equal(await f.code((tx) => f.engine.removexattr(tx, bob, file, b('user.a'))), 'PERMISSION_DENIED');
  t.equal(await f.code((tx) => f.engine.removexattr(tx, alice, file, b('user.a'))), 'OK');
  const removedAt = f.clockNs;
  t.equal((await f.stat(file)).ctimeNs, removedAt, 'removexattr sets ctime');
  t.equal(await f.code((tx) => f.engine.removexattr(tx, alice, file, b('user.a'))), 'NO_XATTR');
  t.same((await f.run((tx) => f.engine.listxattr(tx, root, file))).map(String), ['user.b']);
  // Only regular files and directories carry user.*.
  t.equal(await set(root, d, 'user.dir', 'ok'), 'OK');
  const fifo = await f.run((tx) => f.engine.mknod(tx, root, d, b('p'), S_IFIFO | 0o666, 0n, true));
  const chr = await f.run((tx) => f.engine.mknod(tx, root, d, b('c'), S_IFCHR | 0o666, 5n, true));
  const lnk = await f.run((tx) => f.engine.symlink(tx, root, d, b('l'), b('f')));
  for (const ino of [fifo.inode.ino, chr.inode.ino, lnk.inode.ino]) {
    t.equal(await set(root, ino, 'user.x', 'v'), 'NOT_PERMITTED');
    t.equal(await f.code((tx) => f.engine.getxattr(tx, root, ino, b('user.x'))), 'NO_XATTR');
    t.equal(await set(root, ino, 'trusted.x', 'v'), 'OK', 'other namespaces are fine');
  }
  // Sticky directory: only owner or root set user.*.
  const tmp = await f.mkdir(ROOT, 'tmp');
  await f.chmod(tmp, 0o1777);
  t.equal(await set(alice, tmp, 'user.x', 'v'), 'NOT_PERMITTED');
  t.equal(await set(root, tmp, 'user.x', 'v'), 'OK');
  await f.chown(tmp, 1000, 1000);
  t.equal(await set(alice, tmp, 'user.y', 'v'), 'OK');
  t.equal(
    await f.code((tx) => f.engine.getxattr(tx, bob, tmp, b('user.y'))),
    'OK',
    'reading is not restricted',
  );
});

t.test('no_xattrs: the count of stored xattrs, ACLs and device bindings', async (t) => {
  const { f, d, file } = await withFile();
  const none = async (ino: bigint) => hasNoXattrs(await f.stat(ino));
  const set = (ino: bigint, n: string, fl = 0) =>
    f.code((tx) => f.engine.setxattr(tx, root, ino, b(n), b('v'), fl));
  const remove = (ino: bigint, n: string) => f.code((tx) => f.engine.removexattr(tx, root, ino, b(n)));
  t.ok(await none(file), 'a new file has none');
  t.ok(await none(d), 'a new directory has none');
  t.equal(await set(file, 'user.a'), 'OK');
  t.equal((await f.stat(file)).xattrs, 1);
  t.notOk(await none(file), 'one set');
  t.equal(await set(file, 'user.a', XATTR_REPLACE), 'OK');
  t.equal(await set(file, 'user.b'), 'OK');
  t.equal(await set(file, 'user.b', XATTR_CREATE), 'ALREADY_EXISTS');
  t.equal((await f.stat(file)).xattrs, 2, 'a replaced or refused set counts nothing');
  t.equal(await remove(file, 'user.a'), 'OK');
  t.equal(await remove(file, 'user.a'), 'NO_XATTR');
  t.notOk(await none(file));
  t.equal(await remove(file, 'user.b'), 'OK');
  t.ok(await none(file), 'none left');
  // An ACL lives in the inode record, not as a key: it is an xattr all the same.
  await f.run((tx) => f.engine.setxattr(tx, root, file, b('system.posix_acl_access'), namedUserAcl, 0));
  t.notOk(await none(file), 'an access ACL');
  t.equal(await remove(file, 'system.posix_acl_access'), 'OK');
  t.ok(await none(file));
  const chr = await f.run((tx) => f.engine.mknod(tx, root, d, b('c'), S_IFCHR | 0o666, 5n, true));
  t.notOk(await none(chr.inode.ino), 'a device has dunix.device');
  const old = await f.stat(file);
  delete old.xattrs;
  t.notOk(hasNoXattrs(old), 'an inode from before the count: unknown');
});

t.test('xattr namespaces, names and value sizes', async (t) => {
  const { f, file } = await withFile();
  const set = (cred: Cred, n: Buffer | string, v: Buffer | string) =>
    f.code((tx) => f.engine.setxattr(tx, cred, file, Buffer.from(n), Buffer.from(v), 0));
  t.equal(await set(alice, 'trusted.t', 'v'), 'NOT_PERMITTED');
  t.equal(await set(alice, 'security.s', 'v'), 'NOT_PERMITTED');
  t.equal(await set(root, 'trusted.t', 'v'), 'OK');
  t.equal(await set(root, 'security.s', 'v'), 'OK');
  t.equal(await set(root, 'user.u', 'v'), 'OK');
  t.equal(await f.code((tx) => f.engine.getxattr(tx, alice, file, b('trusted.t'))), 'NO_XATTR', 'hidden');
  t.equal((await f.run((tx) => f.engine.getxattr(tx, alice, file, b('security.s')))).toString(), 'v');
  t.same((await f.run((tx) => f.engine.listxattr(tx, alice, file))).map(String), ['security.s', 'user.u']);
  t.same((await f.run((tx) => f.engine.listxattr(tx, root, file))).map(String), [
    'security.s',
    'trusted.t',
    'user.u',
  ]);
  t.equal(await f.code((tx) => f.engine.removexattr(tx, alice, file, b('trusted.t'))), 'NOT_PERMITTED');
  t.equal(await set(root, 'system.posix_acl_access', 'v'), 'INVALID_ARGUMENT', 'an ACL must be one');
  t.equal(await set(root, 'system.other', 'v'), 'NOT_SUPPORTED', 'no other system.* name');
  t.equal(await set(root, 'other.x', 'v'), 'NOT_SUPPORTED');
  t.equal(await f.code((tx) => f.engine.getxattr(tx, root, file, b('os2.x'))), 'NOT_SUPPORTED');
  t.equal(await set(root, 'user.', 'v'), 'INVALID_ARGUMENT');
  t.equal(await set(root, '', 'v'), 'INVALID_ARGUMENT');
  t.equal(await set(root, 'user.' + 'n'.repeat(limits.xattrNameMaxBytes), 'v'), 'RANGE_TOO_SMALL');
  t.equal(await set(root, 'user.big', Buffer.alloc(limits.xattrValueMaxBytes + 1)), 'OUT_OF_RANGE');
  t.equal(await set(root, 'user.max', Buffer.alloc(limits.xattrValueMaxBytes)), 'OK');
  t.equal(await f.code((tx) => f.engine.getxattr(tx, root, 777n, b('user.x'))), 'NOT_FOUND');
});

t.test('creation and removal times of parents and targets', async (t) => {
  const f = await Fixture.make();
  const d = await f.mkdir(ROOT, 'd');
  const rootBefore = await f.stat(ROOT);
  const file = await f.create(d, 'f');
  const created = f.clockNs;
  t.match(await f.stat(file), { atimeNs: created, mtimeNs: created, ctimeNs: created });
  t.match(await f.stat(d), { mtimeNs: created, ctimeNs: created });
  t.same(await f.stat(ROOT), rootBefore, 'grandparent untouched');
  await f.run((tx) => f.engine.symlink(tx, root, d, b('l'), b('x')));
  t.equal((await f.stat(d)).mtimeNs, f.clockNs);
  const dirBefore = await f.stat(d);
  await f.run((tx) => f.engine.lookup(tx, root, d, b('f')));
  await f.run((tx) => f.engine.readdir(tx, root, d, 0n, 10));
  await f.run((tx) => f.engine.getxattr(tx, root, d, b('user.none')).catch(() => undefined));
  t.same(await f.stat(d), dirBefore, 'reads change nothing');
});
