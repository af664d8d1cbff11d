import fc from 'fast-check';
import t from 'tap';
import {
  checkAccess,
  inGroup,
  isOwnerOrRoot,
  mayAccess,
  mayDeleteFromSticky,
  R_OK,
  shouldDropSgid,
  W_OK,
  X_OK,
} from '../../src/namespace/permissions.js';
import { S_IFDIR, S_IFREG } from '../../src/store/records.js';
import { alice, bob, nobody, root } from './harness.js';

const file = (mode: number, uid = 1000, gid = 1000) => ({ mode: S_IFREG | mode, uid, gid });
const dir = (mode: number, uid = 1000, gid = 1000) => ({ mode: S_IFDIR | mode, uid, gid });

t.test('exactly one class applies: owner, else group, else other', async (t) => {
  t.ok(mayAccess(alice, file(0o400), R_OK));
  t.notOk(mayAccess(alice, file(0o044), R_OK), 'owner class 0 even though group/other allow');
  t.ok(mayAccess(bob, file(0o040, 1000, 100), R_OK), 'supplementary group');
  t.notOk(mayAccess(bob, file(0o404, 1000, 100), R_OK), 'group class 0 even though other allows');
  t.ok(mayAccess(nobody, file(0o004, 1000, 100), R_OK));
  t.ok(mayAccess({ uid: 5, gid: 100, groups: [] }, file(0o040, 1000, 100), R_OK), 'primary group');
  t.ok(mayAccess(alice, file(0o700), R_OK | W_OK | X_OK));
  t.notOk(mayAccess(alice, file(0o600), R_OK | W_OK | X_OK), 'every wanted bit');
  t.ok(mayAccess(alice, file(0o000), 0), 'nothing wanted');
  t.ok(inGroup(alice, 100) && inGroup(alice, 1000) && !inGroup(alice, 1001));
});

t.test('root: read/write anything, search any directory, exec needs an x bit', async (t) => {
  t.ok(mayAccess(root, file(0o000), R_OK | W_OK));
  t.ok(mayAccess(root, dir(0o000), R_OK | W_OK | X_OK));
  t.notOk(mayAccess(root, file(0o666), X_OK));
  t.ok(mayAccess(root, file(0o001), X_OK), 'any x bit will do');
  t.ok(mayAccess(root, file(0o010), X_OK));
});

t.test('checkAccess throws PERMISSION_DENIED', async (t) => {
  t.throws(() => checkAccess(nobody, file(0o640), R_OK), { code: 'PERMISSION_DENIED' });
  t.doesNotThrow(() => checkAccess(nobody, file(0o644), R_OK));
});

t.test('sticky deletion: file owner, directory owner or root', async (t) => {
  const tmp = dir(0o1777, 0, 0);
  const alices = file(0o666, 1000);
  t.notOk(mayDeleteFromSticky(bob, tmp, alices));
  t.ok(mayDeleteFromSticky(alice, tmp, alices));
  t.ok(mayDeleteFromSticky(root, tmp, alices));
  t.ok(mayDeleteFromSticky(bob, dir(0o1777, 1001), alices), 'directory owner');
  t.ok(mayDeleteFromSticky(bob, dir(0o777, 0), alices), 'not sticky');
  t.ok(isOwnerOrRoot(alice, alices) && isOwnerOrRoot(root, alices) && !isOwnerOrRoot(bob, alices));
});

t.test('shouldDropSgid follows setattr_should_drop_sgid', async (t) => {
  t.notOk(shouldDropSgid(alice, file(0o755)));
  t.ok(shouldDropSgid(root, file(0o2755)), 'group-exec: always');
  t.notOk(shouldDropSgid(alice, file(0o2745, 1000, 100)), 'member keeps the lock marker');
  t.ok(shouldDropSgid(nobody, file(0o2745, 1000, 100)), 'non-member loses it');
  t.notOk(shouldDropSgid(root, file(0o2745, 1000, 100)));
});

t.test('mayAccess against a naive reference', async (t) => {
  const cred = fc.record({
    uid: fc.constantFrom(0, 1, 2),
    gid: fc.constantFrom(10, 11),
    groups: fc.subarray([10, 11, 12]),
  });
  const inode = fc.record({
    mode: fc.nat({ max: 0o777 }).chain((perm) => fc.constantFrom(S_IFREG | perm, S_IFDIR | perm)),
    uid: fc.constantFrom(1, 2),
    gid: fc.constantFrom(10, 11, 12),
  });
  fc.assert(
    fc.property(cred, inode, fc.integer({ min: 0, max: 7 }), (c, i, want) => {
      const perm = i.mode & 0o777;
      let ok: boolean;
      if (c.uid === 0) {
        ok = !(want & 1) || (i.mode & S_IFDIR) === S_IFDIR || (perm & 0o111) !== 0;
      } else {
        const shift = c.uid === i.uid ? 6 : c.gid === i.gid || c.groups.includes(i.gid) ? 3 : 0;
        ok = ((perm >> shift) & want) === want;
      }
      return mayAccess(c, i, want) === ok;
    }),
  );
  t.pass('property held');
});
