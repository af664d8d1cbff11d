import t from 'tap';
import { encodeDeviceId } from '@dunix/proto';
import {
  ACL_GROUP,
  ACL_GROUP_OBJ,
  ACL_MASK,
  ACL_OTHER,
  ACL_USER,
  ACL_USER_OBJ,
  parseAcl,
  serializeAcl,
} from '../../src/namespace/acl.js';
import { alice, b, bob, Fixture, nobody, ROOT, root } from './harness.js';

const ACCESS = b('system.posix_acl_access');
const DEFAULT = b('system.posix_acl_default');
const acl = (...entries: [number, number, number?][]) =>
  serializeAcl(entries.map(([tag, perm, id]) => ({ tag, perm, id: id ?? -1 })));

t.test(
  'an access ACL: set by the owner, sets the mode, is enforced, follows chmod, goes with -b',
  async (t) => {
    const f = await Fixture.make();
    const d = await f.mkdir(ROOT, 'd', 0o777);
    const file = await f.create(d, 'f', 0o600, alice);
    const grant = acl(
      [ACL_USER_OBJ, 6],
      [ACL_USER, 4, bob.uid],
      [ACL_GROUP_OBJ, 0],
      [ACL_MASK, 4],
      [ACL_OTHER, 0],
    );
    t.equal(
      await f.code((x) => f.engine.setxattr(x, bob, file, ACCESS, grant, 0)),
      'NOT_PERMITTED',
      'not the owner',
    );
    t.equal(
      await f.code((x) => f.engine.open(x, bob, file, 0)),
      'PERMISSION_DENIED',
      'before: bob may not read',
    );
    await f.run((x) => f.engine.setxattr(x, alice, file, ACCESS, grant, 0));
    t.equal((await f.stat(file)).mode, 0o100640, 'the mask is the group bits');
    t.equal(await f.code((x) => f.engine.open(x, bob, file, 0)), 'OK', 'bob reads through his entry');
    t.equal(await f.code((x) => f.engine.open(x, bob, file, 1)), 'PERMISSION_DENIED', 'but does not write');
    t.equal(await f.code((x) => f.engine.open(x, nobody, file, 0)), 'PERMISSION_DENIED');
    t.same(
      parseAcl(await f.read((x) => f.engine.getxattr(x, nobody, file, ACCESS))),
      parseAcl(grant),
      'anyone reads it back',
    );
    const names = (await f.read((x) => f.engine.listxattr(x, nobody, file))).map(String);
    t.ok(names.includes('system.posix_acl_access'), 'listed');
    await f.chmod(file, 0o600, alice);
    t.equal(
      await f.code((x) => f.engine.open(x, bob, file, 0)),
      'PERMISSION_DENIED',
      'chmod 600: the mask is ---',
    );
    t.same(
      parseAcl(await f.read((x) => f.engine.getxattr(x, root, file, ACCESS))).map((e) => e.perm),
      [6, 4, 0, 0, 0],
      'the entry stays, masked',
    );
    await f.run((x) => f.engine.removexattr(x, alice, file, ACCESS));
    t.equal(await f.code((x) => f.engine.getxattr(x, root, file, ACCESS)), 'NO_XATTR');
    t.equal((await f.stat(file)).mode, 0o100600, 'removal leaves the mode');
    t.equal(await f.code((x) => f.engine.removexattr(x, alice, file, ACCESS)), 'NO_XATTR');
    // An ACL of base entries only is just a mode.
    await f.run((x) =>
      f.engine.setxattr(
        x,
        alice,
        file,
        ACCESS,
        acl([ACL_USER_OBJ, 7], [ACL_GROUP_OBJ, 5], [ACL_OTHER, 4]),
        0,
      ),
    );
    t.equal((await f.stat(file)).mode, 0o100754);
    t.equal(
      await f.code((x) => f.engine.getxattr(x, root, file, ACCESS)),
      'NO_XATTR',
      'no ACL kept for a plain mode',
    );
    t.equal(
      await f.code((x) => f.engine.setxattr(x, alice, file, ACCESS, Buffer.from('junk'), 0)),
      'INVALID_ARGUMENT',
    );
  },
);

t.test('named groups, set-group-ID, symlinks and default ACLs on files', async (t) => {
  const f = await Fixture.make();
  const d = await f.mkdir(ROOT, 'd', 0o777);
  const file = await f.create(d, 'f', 0o2750, alice);
  // bob is in group 100; alice's file is group 1000.
  await f.run((x) =>
    f.engine.setxattr(
      x,
      alice,
      file,
      ACCESS,
      acl([ACL_USER_OBJ, 7], [ACL_GROUP_OBJ, 5], [ACL_GROUP, 6, 100], [ACL_MASK, 7], [ACL_OTHER, 0]),
      0,
    ),
  );
  t.equal(await f.code((x) => f.engine.open(x, bob, file, 2)), 'OK', 'group 100 may read and write');
  t.equal((await f.stat(file)).mode & 0o2000, 0o2000, 'the owner is in the group: set-group-ID stays');
  await f.chown(file, alice.uid, 4242);
  await f.run((x) =>
    f.engine.setxattr(x, alice, file, ACCESS, acl([ACL_USER_OBJ, 7], [ACL_GROUP_OBJ, 5], [ACL_OTHER, 0]), 0),
  );
  t.equal((await f.stat(file)).mode & 0o2000, 0, 'set by a non-member of the group: set-group-ID goes');
  const link = await f.run((x) => f.engine.symlink(x, alice, d, b('l'), b('f')));
  t.equal(
    await f.code((x) =>
      f.engine.setxattr(
        x,
        alice,
        link.inode.ino,
        ACCESS,
        acl([ACL_USER_OBJ, 7], [ACL_GROUP_OBJ, 5], [ACL_OTHER, 0]),
        0,
      ),
    ),
    'NOT_SUPPORTED',
  );
  const def = acl([ACL_USER_OBJ, 7], [ACL_GROUP_OBJ, 5], [ACL_OTHER, 0]);
  t.equal(
    await f.code((x) => f.engine.setxattr(x, alice, file, DEFAULT, def, 0)),
    'PERMISSION_DENIED',
    'files have no default ACL',
  );
  t.equal(
    await f.code((x) => f.engine.setxattr(x, root, d, DEFAULT, def, 2)),
    'NO_XATTR',
    'XATTR_REPLACE of none',
  );
  await f.run((x) => f.engine.setxattr(x, root, d, DEFAULT, def, 1));
  t.equal(
    await f.code((x) => f.engine.setxattr(x, root, d, DEFAULT, def, 1)),
    'ALREADY_EXISTS',
    'XATTR_CREATE of one',
  );
});

t.test('creation: a default ACL is inherited (no umask), else the umask applies', async (t) => {
  const f = await Fixture.make();
  const d = await f.mkdir(ROOT, 'd', 0o755);
  await f.run((x) =>
    f.engine.setxattr(
      x,
      root,
      d,
      DEFAULT,
      acl([ACL_USER_OBJ, 7], [ACL_GROUP_OBJ, 5], [ACL_GROUP, 7, 100], [ACL_MASK, 7], [ACL_OTHER, 5]),
      0,
    ),
  );
  const file = await f.run((x) => f.engine.mknod(x, root, d, b('f'), 0o100666, 0n, true, 0o077));
  t.equal(file.inode.mode, 0o100664, 'the umask does not apply under a default ACL');
  t.same(
    file.inode.acl?.map((e) => e.perm),
    [6, 5, 7, 6, 4],
  );
  t.equal(
    await f.code((x) => f.engine.open(x, bob, file.inode.ino, 2)),
    'OK',
    'group 100 writes the new file',
  );
  const sub = await f.run((x) => f.engine.mkdir(x, root, d, b('sub'), 0o777, 0o077));
  t.equal(sub.inode.mode, 0o040775);
  t.ok(sub.inode.defaultAcl, 'a new directory carries the default on');
  const deeper = await f.run((x) =>
    f.engine.mknod(x, root, sub.inode.ino, b('g'), 0o100600, 0n, true, 0o022),
  );
  t.same(
    deeper.inode.acl?.map((e) => e.perm),
    [6, 5, 7, 0, 0],
    'two levels down, limited by mode 600 (the mask, not the owning group)',
  );
  const tmp = await f.run((x) => f.engine.tmpfile(x, root, d, 0o640, 'm', 0o077));
  t.equal(tmp.mode, 0o100640);
  const link = await f.run((x) => f.engine.symlink(x, root, d, b('l'), b('f')));
  t.equal(link.inode.mode & 0o777, 0o777, 'symlinks inherit nothing');
  t.equal(link.inode.acl, undefined);
  // Without a default ACL: the umask.
  const plain = await f.run((x) => f.engine.mknod(x, root, ROOT, b('p'), 0o100666, 0n, true, 0o027));
  t.equal(plain.inode.mode, 0o100640);
  const plainDir = await f.run((x) => f.engine.mkdir(x, root, ROOT, b('q'), 0o777, 0o022));
  t.equal(plainDir.inode.mode, 0o040755);
  t.equal(
    await f.code((x) => f.engine.mkdir(x, root, ROOT, b('r'), 0o777)),
    'OK',
    'umask absent: 0 (the kernel applied it)',
  );
  t.equal((await f.stat(await f.lookupIno(ROOT, 'r'))).mode, 0o040777);
});

t.test('dunix.device: a device inode tells its binding; read-only, not listed', async (t) => {
  const f = await Fixture.make();
  const dev = (bound: boolean, node: number, major: number, minor: number) =>
    encodeDeviceId({ bound, node, major, minor });
  const cons = await f.run((x) =>
    f.engine.mknod(x, root, ROOT, b('null'), 0o020666, dev(false, 0, 1, 3), true),
  );
  const disk = await f.run((x) =>
    f.engine.mknod(x, root, ROOT, b('sda'), 0o060660, dev(true, 7, 8, 0), true),
  );
  const NAME = b('dunix.device');
  t.same(JSON.parse((await f.read((x) => f.engine.getxattr(x, nobody, cons.inode.ino, NAME))).toString()), {
    binding: 'virtual',
    node: 0,
    major: 1,
    minor: 3,
  });
  t.same(JSON.parse((await f.read((x) => f.engine.getxattr(x, nobody, disk.inode.ino, NAME))).toString()), {
    binding: 'node',
    node: 7,
    major: 8,
    minor: 0,
  });
  const file = await f.create(ROOT, 'plain');
  t.equal(await f.code((x) => f.engine.getxattr(x, root, file, NAME)), 'NO_XATTR', 'no device, no binding');
  t.equal(await f.code((x) => f.engine.setxattr(x, root, disk.inode.ino, NAME, b('{}'), 0)), 'NOT_PERMITTED');
  t.equal(await f.code((x) => f.engine.removexattr(x, root, disk.inode.ino, NAME)), 'NOT_PERMITTED');
  t.notOk(
    (await f.read((x) => f.engine.listxattr(x, root, disk.inode.ino))).map(String).includes('dunix.device'),
    'not listed',
  );
});

t.test('dunix.listener: on sockets and FIFOs, by who may write them, gone with its session', async (t) => {
  const f = await Fixture.make();
  const d = await f.mkdir(ROOT, 'd', 0o777);
  const sock = await f.run((x) => f.engine.mknod(x, alice, d, b('s'), 0o140666, 0n, true));
  const file = await f.create(d, 'plain', 0o666, alice);
  const NAME = b('dunix.listener');
  const gone = new Set<string>();
  const ctx = (owner: string) => ({ owner, gone: (r: { owner: string }) => gone.has(r.owner) });
  const rec = b('{"node":3,"pid":4242,"endpoint":"tcp:10.0.0.3:9000"}');
  t.equal(
    await f.code((x) => f.engine.setxattr(x, alice, file, NAME, rec, 0, ctx('m-a'))),
    'NOT_PERMITTED',
    'only sockets and FIFOs',
  );
  t.equal(await f.code((x) => f.engine.getxattr(x, bob, sock.inode.ino, NAME, ctx(''))), 'NO_XATTR');
  await f.run((x) => f.engine.setxattr(x, bob, sock.inode.ino, NAME, rec, 1, ctx('m-a')));
  t.same(
    await f.read((x) => f.engine.getxattr(x, nobody, sock.inode.ino, NAME, ctx(''))),
    rec,
    'anyone reads it',
  );
  t.equal(
    await f.code((x) => f.engine.setxattr(x, bob, sock.inode.ino, NAME, rec, 1, ctx('m-b'))),
    'ALREADY_EXISTS',
    'XATTR_CREATE over a live record',
  );
  t.equal(
    await f.code((x) => f.engine.setxattr(x, bob, sock.inode.ino, NAME, Buffer.alloc(4097), 0, ctx('m-b'))),
    'OUT_OF_RANGE',
  );
  await f.chmod(sock.inode.ino, 0o644, alice);
  t.equal(
    await f.code((x) => f.engine.setxattr(x, bob, sock.inode.ino, NAME, rec, 0, ctx('m-b'))),
    'PERMISSION_DENIED',
    'writing it needs write permission on the inode',
  );
  gone.add('m-a');
  t.equal(
    await f.code((x) => f.engine.getxattr(x, nobody, sock.inode.ino, NAME, ctx(''))),
    'NO_XATTR',
    'its session gone: absent',
  );
  await f.run((x) => f.engine.setxattr(x, alice, sock.inode.ino, NAME, b('new'), 1, ctx('m-c')));
  t.same(
    await f.read((x) => f.engine.getxattr(x, root, sock.inode.ino, NAME, ctx(''))),
    b('new'),
    'and set anew',
  );
  await f.run((x) => f.engine.removexattr(x, alice, sock.inode.ino, NAME, ctx('m-c')));
  t.equal(await f.code((x) => f.engine.removexattr(x, alice, sock.inode.ino, NAME, ctx('m-c'))), 'NO_XATTR');
});
