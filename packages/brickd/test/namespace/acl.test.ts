import t from 'tap';
import {
  ACL_GROUP,
  ACL_GROUP_OBJ,
  ACL_MASK,
  ACL_OTHER,
  ACL_USER,
  ACL_USER_OBJ,
  aclAllows,
  chmodAcl,
  inheritAcl,
  isBaseAcl,
  modeOfAcl,
  parseAcl,
  serializeAcl,
  type AclEntry,
} from '../../src/namespace/acl.js';
import { R_OK, W_OK, X_OK } from '../../src/namespace/permissions.js';
import { alice, bob, nobody } from './harness.js';

const e = (tag: number, perm: number, id = -1): AclEntry => ({ tag, perm, id });
/** user::rw- user:1001:r-- group::r-- group:100:rw- mask::rw- other::--- (owner alice, group 1000). */
const acl: AclEntry[] = [
  e(ACL_USER_OBJ, 6),
  e(ACL_USER, 4, 1001),
  e(ACL_GROUP_OBJ, 4),
  e(ACL_GROUP, 6, 100),
  e(ACL_MASK, 6),
  e(ACL_OTHER, 0),
];
const owner = { uid: 1000, gid: 1000 };

t.test('the xattr format round-trips; malformed values are EINVAL', async (t) => {
  const bytes = serializeAcl(acl);
  t.equal(bytes.length, 4 + 6 * 8);
  t.equal(bytes.readUInt32LE(0), 2, 'version 2');
  t.equal(bytes.readUInt32LE(4 + 4), 0xffffffff, 'unnamed entries carry ACL_UNDEFINED_ID');
  t.same(parseAcl(bytes), acl);
  const bad = (entries: AclEntry[]) => serializeAcl(entries);
  const cases: [string, Buffer][] = [
    ['short', Buffer.alloc(3)],
    ['torn entry', Buffer.concat([bytes, Buffer.alloc(3)])],
    ['version', Buffer.from([1, 0, 0, 0])],
    ['no other', bad([e(ACL_USER_OBJ, 7), e(ACL_GROUP_OBJ, 5)])],
    [
      'named without mask',
      bad([e(ACL_USER_OBJ, 7), e(ACL_USER, 4, 5), e(ACL_GROUP_OBJ, 5), e(ACL_OTHER, 0)]),
    ],
    ['out of order', bad([e(ACL_GROUP_OBJ, 5), e(ACL_USER_OBJ, 7), e(ACL_OTHER, 0)])],
    ['two owners', bad([e(ACL_USER_OBJ, 7), e(ACL_USER_OBJ, 7), e(ACL_GROUP_OBJ, 5), e(ACL_OTHER, 0)])],
    [
      'repeated id',
      bad([
        e(ACL_USER_OBJ, 7),
        e(ACL_USER, 4, 5),
        e(ACL_USER, 6, 5),
        e(ACL_GROUP_OBJ, 5),
        e(ACL_MASK, 7),
        e(ACL_OTHER, 0),
      ]),
    ],
    ['perm', bad([e(ACL_USER_OBJ, 8), e(ACL_GROUP_OBJ, 5), e(ACL_OTHER, 0)])],
    ['unknown tag', bad([e(ACL_USER_OBJ, 7), e(0x40, 1), e(ACL_GROUP_OBJ, 5), e(ACL_OTHER, 0)])],
  ];
  for (const [what, value] of cases) t.throws(() => parseAcl(value), { code: 'INVALID_ARGUMENT' }, what);
});

t.test('the access check: owner, named user under the mask, groups, other', async (t) => {
  t.ok(aclAllows(alice, owner, acl, R_OK | W_OK), 'owner: user:: entry');
  t.notOk(aclAllows(alice, owner, acl, X_OK));
  t.ok(aclAllows(bob, owner, acl, R_OK), 'named user 1001: r');
  t.notOk(
    aclAllows(bob, owner, acl, W_OK),
    'not w, though bob is in group 100 (rw): the named user entry decides',
  );
  const carol = { uid: 1002, gid: 100, groups: [] };
  t.ok(aclAllows(carol, owner, acl, R_OK | W_OK), 'named group 100: rw');
  const dave = { uid: 1003, gid: 1000, groups: [] };
  t.ok(aclAllows(dave, owner, acl, R_OK), 'owning group: r');
  t.notOk(aclAllows(dave, owner, acl, W_OK), 'a matching group that grants too little: refused, not other');
  const masked = chmodAcl(acl, 0o640);
  t.notOk(aclAllows(carol, owner, masked, W_OK), 'the mask (r after chmod 640) limits named group entries');
  t.notOk(aclAllows(nobody, owner, acl, R_OK), 'other: ---');
  t.ok(aclAllows(nobody, owner, [e(ACL_USER_OBJ, 6), e(ACL_GROUP_OBJ, 4), e(ACL_OTHER, 4)], R_OK));
});

t.test('modes and chmod: the mask stands for the group bits', async (t) => {
  t.equal(modeOfAcl(acl), 0o660);
  t.equal(modeOfAcl([e(ACL_USER_OBJ, 7), e(ACL_GROUP_OBJ, 5), e(ACL_OTHER, 1)]), 0o751);
  const c = chmodAcl(acl, 0o751);
  t.same(
    c.map((x) => x.perm),
    [7, 4, 4, 6, 5, 1],
    'owner, mask and other follow; named entries and the owning group stay',
  );
  t.same(
    chmodAcl([e(ACL_USER_OBJ, 7), e(ACL_GROUP_OBJ, 5), e(ACL_OTHER, 1)], 0o640).map((x) => x.perm),
    [6, 4, 0],
  );
  t.ok(isBaseAcl([e(ACL_USER_OBJ, 7), e(ACL_GROUP_OBJ, 5), e(ACL_OTHER, 1)]));
  t.notOk(isBaseAcl(acl));
});

t.test('inheritance: the default ACL limited by the mode, the umask ignored; else the umask', async (t) => {
  const def = [
    e(ACL_USER_OBJ, 7),
    e(ACL_GROUP_OBJ, 5),
    e(ACL_GROUP, 7, 100),
    e(ACL_MASK, 7),
    e(ACL_OTHER, 5),
  ];
  // What ext4 gives under `umask 077; touch d/file; mkdir d/sub` with this default ACL.
  const file = inheritAcl(def, 0o100666, 0o077, false);
  t.equal(file.mode, 0o100664);
  t.same(
    file.acl!.map((x) => x.perm),
    [6, 5, 7, 6, 4],
  );
  t.equal(file.defaultAcl, undefined, 'a file has no default ACL');
  const dir = inheritAcl(def, 0o040777, 0o077, true);
  t.equal(dir.mode, 0o040775);
  t.same(
    dir.acl!.map((x) => x.perm),
    [7, 5, 7, 7, 5],
  );
  t.same(dir.defaultAcl, def, 'a directory inherits the default as its own');
  const base = inheritAcl([e(ACL_USER_OBJ, 7), e(ACL_GROUP_OBJ, 5), e(ACL_OTHER, 0)], 0o100666, 0o022, false);
  t.equal(base.mode, 0o100640, 'a default of base entries only: just the mode');
  t.equal(base.acl, undefined);
  t.same(inheritAcl(undefined, 0o100666, 0o027, false), { mode: 0o100640 }, 'no default: the umask');
  t.same(inheritAcl(undefined, 0o104755, 0o022, false), { mode: 0o104755 }, 'the umask leaves set-id bits');
});
