/**
 * git on the mount: init, add, commit, a second commit with a rename and a
 * deleted file, log, status, gc (pack files, renames, fsync) and fsck --full.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { ok, run, startCluster } from '../src/cluster.js';

t.test('git init, commit, log, gc and fsck on the mount', async (t) => {
  const c = await startCluster(t);
  const repo = c.path('repo');
  mkdirSync(repo);
  const env = { ...process.env, GIT_CONFIG_NOSYSTEM: '1', HOME: c.base };
  const git = (...args: string[]) =>
    ok('git', ['-c', 'user.name=Dunix Test', '-c', 'user.email=test@dunix.invalid', ...args], {
      cwd: repo,
      env,
    });

  git('init', '-q', '-b', 'main');
  mkdirSync(join(repo, 'src', 'deep'), { recursive: true });
  const files: Record<string, string> = {
    'README.md': '# dunix\n',
    'src/a.c': 'int a(void) { return 1; }\n',
    'src/deep/b.txt': 'x'.repeat(20_000),
    'big.bin': Buffer.alloc(3 * 1024 * 1024 + 17, 7).toString('latin1'),
  };
  for (const [p, v] of Object.entries(files)) writeFileSync(join(repo, p), v, 'latin1');
  git('add', '-A');
  git('commit', '-q', '-m', 'first');

  git('mv', 'src/a.c', 'src/renamed.c');
  git('rm', '-q', 'src/deep/b.txt');
  writeFileSync(join(repo, 'README.md'), '# dunix\nsecond line\n');
  git('add', '-A');
  git('commit', '-q', '-m', 'second');

  const log = git('log', '--format=%s').trim().split('\n');
  t.same(log, ['second', 'first'], 'git log shows both commits, newest first');
  t.equal(git('status', '--porcelain'), '', 'the work tree is clean');
  t.equal(git('show', 'HEAD:README.md'), '# dunix\nsecond line\n', 'blob content from HEAD');
  t.equal(git('show', 'HEAD~1:src/a.c'), files['src/a.c'], 'blob content from the first commit');
  t.equal(
    git('diff', '--name-status', '-M', 'HEAD~1', 'HEAD').trim().split('\n').sort().join('\n'),
    ['D\tsrc/deep/b.txt', 'M\tREADME.md', 'R100\tsrc/a.c\tsrc/renamed.c'].join('\n'),
    'the second commit: a rename, a change and a delete',
  );

  const fsck = run('git', ['fsck', '--full', '--strict'], { cwd: repo, env });
  t.equal(fsck.status, 0, `git fsck --full passes ${fsck.stderr.slice(0, 1000)}`);
  git('gc', '-q', '--prune=now');
  const fsck2 = run('git', ['fsck', '--full', '--strict'], { cwd: repo, env });
  t.equal(fsck2.status, 0, `git fsck --full after gc passes ${fsck2.stderr.slice(0, 1000)}`);
  t.match(git('count-objects', '-v'), /in-pack: [1-9]/, 'objects are packed');

  // A clone off the mount reads every object back.
  const clone = join(c.base, 'clone');
  ok('git', ['clone', '-q', repo, clone], { env });
  t.equal(
    ok('git', ['log', '--format=%s'], { cwd: clone, env }).trim(),
    'second\nfirst',
    'the clone has the history',
  );
  t.equal(
    ok('sha256sum', ['big.bin'], { cwd: clone }),
    ok('sha256sum', ['big.bin'], { cwd: repo }),
    'big file intact',
  );
});
