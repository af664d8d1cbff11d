/**
 * POSIX ACLs on a real mount (replicas 3), with setfacl/getfacl and other
 * users (setpriv): an ACL grants and refuses as on ext4, chmod masks it,
 * only the owner sets it, a directory's default ACL is inherited by what
 * is created in it with the umask ignored (getfacl output as ext4 gives
 * it), the umask applies where there is no default ACL, `setfacl -b`
 * removes it, and it survives the SIGKILL of its PG's primary.
 */
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import t from 'tap';
import { pgOfIno } from '@dunix/proto';
import { run, startCluster, type Cluster } from '../src/cluster.js';

const NOBODY = 65534;

function as(uid: number, groups: number[], cmd: string, args: string[], cwd?: string) {
  return run(
    'setpriv',
    [
      `--reuid=${uid}`,
      `--regid=${groups[0] ?? uid}`,
      groups.length ? `--groups=${groups.join(',')}` : '--clear-groups',
      cmd,
      ...args,
    ],
    cwd ? { cwd } : {},
  );
}

function sh(c: Cluster, script: string) {
  const r = run('sh', ['-c', script], { cwd: c.mountpoint });
  if (r.status !== 0) throw new Error(`${script}: ${r.stderr}`);
  return r.stdout;
}

t.test('POSIX ACLs: grant, mask, owner only, inheritance, umask, removal, failover', async (t) => {
  const c = await startCluster(t, { pgs: 16, replicas: 3 });
  chmodSync(c.mountpoint, 0o755);

  t.equal(
    sh(c, 'umask 027; touch g; mkdir h; stat -c %a g h'),
    '640\n750\n',
    'no default ACL: the umask applies',
  );

  writeFileSync(c.path('f'), 'secret\n');
  chmodSync(c.path('f'), 0o600);
  t.not(as(NOBODY, [], 'cat', [c.path('f')]).status, 0, 'before: nobody may not read');
  sh(c, `setfacl -m u:${NOBODY}:r f`);
  t.equal(
    sh(c, 'getfacl -n f'),
    `# file: f\n# owner: 0\n# group: 0\nuser::rw-\nuser:${NOBODY}:r--\ngroup::---\nmask::r--\nother::---\n\n`,
  );
  t.match(sh(c, 'ls -l f'), /^-rw-r-----\+ /, 'ls shows the ACL and the mask as the group bits');
  let r = as(NOBODY, [], 'cat', [c.path('f')]);
  t.equal(r.stdout, 'secret\n', `the named user reads: ${r.stderr}`);
  r = as(1000, [], 'cat', [c.path('f')]);
  t.match(r.stderr, /Permission denied/, 'others still may not');
  t.not(as(NOBODY, [], 'sh', ['-c', `echo x >> ${c.path('f')}`]).status, 0, 'nor may the named user write');

  chmodSync(c.path('f'), 0o600);
  t.match(sh(c, 'getfacl -n f'), new RegExp(`user:${NOBODY}:r--\\t+#effective:---\\n`), 'chmod 600 masks it');
  t.not(as(NOBODY, [], 'cat', [c.path('f')]).status, 0, 'and so nobody may not read');
  chmodSync(c.path('f'), 0o640);

  sh(c, 'setfacl -m g:1000:rw f');
  r = as(2000, [1000], 'sh', ['-c', `echo appended >> ${c.path('f')}`]);
  t.equal(r.status, 0, `a member of a named group writes: ${r.stderr}`);
  t.equal(readFileSync(c.path('f'), 'utf8'), 'secret\nappended\n');
  r = as(1000, [1000], 'setfacl', ['-m', 'u:1000:rwx', c.path('f')]);
  t.match(r.stderr, /Operation not permitted/, 'only the owner sets an ACL');

  // A default ACL: inherited, the umask ignored (what ext4 gives for the same commands).
  sh(c, 'mkdir d && setfacl -d -m g:100:rwx d && umask 077 && mkdir d/sub && touch d/file');
  t.equal(
    sh(c, 'getfacl -n d/sub d/file'),
    '# file: d/sub\n# owner: 0\n# group: 0\nuser::rwx\ngroup::r-x\ngroup:100:rwx\nmask::rwx\nother::r-x\n' +
      'default:user::rwx\ndefault:group::r-x\ndefault:group:100:rwx\ndefault:mask::rwx\ndefault:other::r-x\n\n' +
      '# file: d/file\n# owner: 0\n# group: 0\nuser::rw-\ngroup::r-x\t#effective:r--\ngroup:100:rwx\t#effective:rw-\n' +
      'mask::rw-\nother::r--\n\n',
  );
  t.equal(sh(c, 'stat -c %a d/sub d/file'), '775\n664\n');
  r = as(3000, [100], 'sh', ['-c', `echo team > ${c.path('d/sub/new')} && cat ${c.path('d/sub/new')}`]);
  t.equal(r.stdout, 'team\n', `the group of the default ACL creates in the inherited directory: ${r.stderr}`);
  t.match(sh(c, 'getfacl -n d/sub/new'), /group:100:rwx\t#effective:rw-\n/, 'two levels down too');

  // The ACL is replicated: the primary of its PG dies, the ACL and its effect remain.
  const ino = statSync(c.path('f'), { bigint: true }).ino;
  const primary = await c.brickOfPg(pgOfIno(ino));
  await primary.kill('SIGKILL');
  r = as(NOBODY, [], 'cat', [c.path('f')]);
  t.equal(r.stdout, 'secret\nappended\n', `after the primary's death the ACL still grants: ${r.stderr}`);
  t.match(
    sh(c, 'getfacl -n f'),
    new RegExp(`user:${NOBODY}:r--\\ngroup::---\\ngroup:1000:rw-\\nmask::rw-\\n`),
  );
  await primary.restart();

  sh(c, 'setfacl -b f');
  t.equal(sh(c, 'getfacl -n f'), '# file: f\n# owner: 0\n# group: 0\nuser::rw-\ngroup::---\nother::---\n\n');
  // As on ext4: the owning group's entry (---) is the group bits again.
  t.match(sh(c, 'ls -l f'), /^-rw------- /, 'no ACL left, the owning group entry back as the group bits');
  t.not(as(NOBODY, [], 'cat', [c.path('f')]).status, 0, 'and the grant is gone');
});
