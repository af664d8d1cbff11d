import t from 'tap';
import {
  clientMountPermissions,
  clientMountsRole,
  EtcdAccess,
  parseEtcdUser,
  prefixRange,
  type EtcdAuthApi,
} from '../src/etcd-access.js';

t.test('etcd users are certificate CNs of three kinds', async (t) => {
  t.same(parseEtcdUser('brick:b1'), { kind: 'brick', name: 'b1', user: 'brick:b1' });
  t.same(parseEtcdUser('admin:ops').kind, 'admin');
  for (const bad of ['b1', 'root', 'etcd:e0', 'client:', 'client:a/b', 'brick:b1:x', 'Client:c'])
    t.throws(() => parseEtcdUser(bad), /expected brick:NAME, client:NAME or admin:NAME/, bad);
});

t.test("a client writes only its own mounts' records and suspect reports", async (t) => {
  t.same(prefixRange('/dunix/v1/'), { key: '/dunix/v1/', rangeEnd: '/dunix/v10' });
  const perms = clientMountPermissions('vol', 'c1');
  t.same(
    perms.map((p) => [p.permType, p.key, p.rangeEnd]),
    [
      ['Readwrite', '/dunix/v1/volumes/vol/mounts/c1~', '/dunix/v1/volumes/vol/mounts/c1\x7f'],
      ['Readwrite', '/dunix/v1/volumes/vol/suspects/c1~', '/dunix/v1/volumes/vol/suspects/c1\x7f'],
    ],
  );
  const within = (key: string) =>
    perms.some((p) => (p.rangeEnd ? key >= p.key && key < p.rangeEnd : key === p.key));
  t.ok(within('/dunix/v1/volumes/vol/mounts/c1~m-0123456789ab'));
  t.ok(within('/dunix/v1/volumes/vol/suspects/c1~m-0123456789ab/b2'));
  for (const key of [
    '/dunix/v1/volumes/vol/placement/0',
    '/dunix/v1/volumes/vol/config',
    '/dunix/v1/volumes/vol/mounted',
    // Other clients' and bricks' keys, whatever their names share with c1's:
    '/dunix/v1/volumes/vol/mounts/m-0123456789ab',
    '/dunix/v1/volumes/vol/mounts/c10~m-0123456789ab',
    '/dunix/v1/volumes/vol/mounts/c1.x~m-0123456789ab',
    '/dunix/v1/volumes/vol/mounts/c~m-0123456789ab',
    '/dunix/v1/volumes/vol2/mounts/c1~m-0123456789ab',
    '/dunix/v1/volumes/vo/mounts/c1~m-0123456789ab',
    '/dunix/v1/volumes/vol/suspects/b2',
    '/dunix/v1/volumes/vol/suspects/c1/b2',
    '/dunix/v1/volumes/vol/suspects/c10~m-0123456789ab/b2',
    '/dunix/v1/volumes/vol/suspects/b0/b2',
  ])
    t.notOk(within(key), `not ${key}`);
  t.equal(clientMountsRole('c1'), 'dunix-mounts:c1');
});

t.test('enable creates roles and users, may run again, and grants existing volumes', async (t) => {
  const calls: string[] = [];
  const roles = new Set<string>();
  const users = new Set<string>();
  const api: EtcdAuthApi = {
    roleAdd: async ({ name }) => {
      calls.push(`roleAdd ${name}`);
      if (roles.has(name)) throw new Error('etcdserver: role name already exists');
      roles.add(name);
    },
    roleGet: async ({ role }) => {
      if (!roles.has(role)) throw new Error('etcdserver: role name not found');
    },
    roleGrantPermission: async ({ name, perm }) =>
      void calls.push(`grant ${name} ${perm.permType} ${perm.key}`),
    roleRevokePermission: async ({ role, key }) => void calls.push(`revoke ${role} ${key}`),
    userAdd: async ({ name, options }) => {
      t.ok(options.no_password, 'certificate users have no password');
      if (users.has(name)) throw new Error('etcdserver: user name already exists');
      users.add(name);
    },
    userGrantRole: async ({ user, role }) => void calls.push(`user ${user} ${role}`),
    userList: async () => [...users],
    authEnable: async () => void calls.push('authEnable'),
  };
  const a = new EtcdAccess(api);
  t.equal(await a.grantVolume('v0'), false, 'no roles yet: nothing to grant');
  const users1 = ['brick:b0', 'client:c0', 'admin:ops'].map(parseEtcdUser);
  await a.enable(users1, ['v1']);
  t.ok(calls.includes('user brick:b0 dunix-brick'));
  t.ok(calls.includes('user client:c0 dunix-client'));
  t.ok(calls.includes('user admin:ops root'));
  t.ok(calls.includes('user root root'));
  t.ok(calls.includes('user client:c0 dunix-mounts:c0'), 'a client gets its own records role');
  t.ok(calls.includes('grant dunix-mounts:c0 Readwrite /dunix/v1/volumes/v1/mounts/c0~'));
  t.notOk(
    calls.includes('grant dunix-client Readwrite /dunix/v1/volumes/v1/mounts/'),
    'no client may write every mount record',
  );
  for (const shared of ['mounts/', 'suspects/', 'mounted'])
    t.ok(
      calls.includes(`revoke dunix-client /dunix/v1/volumes/v1/${shared}`),
      `the shared ${shared} grant is taken back`,
    );
  t.notOk(
    calls.some((c) => c.startsWith('grant dunix-client') && !c.endsWith(' Read /dunix/v1/')),
    'dunix-client is granted reading alone',
  );
  t.equal(calls[calls.length - 1], 'authEnable', 'auth is turned on last');
  await a.enable(users1, ['v1']);
  t.equal(calls.filter((c) => c === 'authEnable').length, 2, 'a second run goes through');
  await a.addUsers([parseEtcdUser('client:c9')], ['v1']);
  t.ok(calls.includes('grant dunix-mounts:c9 Readwrite /dunix/v1/volumes/v1/mounts/c9~'));
  t.equal(await a.grantVolume('v2'), true);
  t.ok(calls.includes('grant dunix-mounts:c0 Readwrite /dunix/v1/volumes/v2/suspects/c0~'));
  t.ok(calls.includes('grant dunix-mounts:c0 Readwrite /dunix/v1/volumes/v2/mounts/c0~'), 'every client');
  t.ok(calls.includes('grant dunix-mounts:c9 Readwrite /dunix/v1/volumes/v2/mounts/c9~'));
  await a.revokeVolume('v2');
  t.ok(calls.includes('revoke dunix-client /dunix/v1/volumes/v2/mounted'));
  t.ok(calls.includes('revoke dunix-mounts:c9 /dunix/v1/volumes/v2/mounts/c9~'));
  t.ok(calls.includes('revoke dunix-mounts:c9 /dunix/v1/volumes/v2/suspects/c9~'));
});
