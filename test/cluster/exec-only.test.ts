/**
 * Execute-only files on a real mount, as another user: a mode 0711 binary
 * runs (the kernel's open for exec carries FMODE_EXEC and needs x, not r),
 * while reading it is refused; a 0711 script does not run (its interpreter
 * must read it, as on ext4); a setuid 04711 binary runs; O_PATH opens need
 * no permission on the file; root's access(X_OK) needs some x bit.
 */
import { chmodSync, copyFileSync, writeFileSync } from 'node:fs';
import t from 'tap';
import { run, startCluster } from '../src/cluster.js';

const NOBODY = 65534;

/** Runs `cmd` as uid/gid 65534 with no supplementary groups. */
function asNobody(cmd: string, args: string[]) {
  return run('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', cmd, ...args]);
}

t.test('execute-only files for another user, O_PATH, root and X_OK', async (t) => {
  const c = await startCluster(t, { pgs: 8 });
  chmodSync(c.mountpoint, 0o755);

  const bin = c.path('true-0711');
  copyFileSync('/bin/true', bin);
  chmodSync(bin, 0o711);
  let r = asNobody(bin, []);
  t.equal(r.status, 0, `a 0711 binary runs as another user: ${r.stderr}`);
  r = asNobody('cat', [bin]);
  t.not(r.status, 0, 'but reading it is refused');
  t.match(r.stderr, /Permission denied/);

  const echo = c.path('echo-0711');
  copyFileSync('/bin/echo', echo);
  chmodSync(echo, 0o711);
  r = asNobody(echo, ['hello', 'there']);
  t.equal(r.stdout, 'hello there\n', 'and does its work');

  const noX = c.path('true-0644');
  copyFileSync('/bin/true', noX);
  chmodSync(noX, 0o644);
  r = asNobody(noX, []);
  t.not(r.status, 0, 'readable without x does not run');

  const script = c.path('script-0711');
  writeFileSync(script, '#!/bin/sh\necho ran\n');
  chmodSync(script, 0o711);
  r = asNobody(script, []);
  t.not(r.status, 0, 'a 0711 script does not run: its interpreter must read it (as on ext4)');
  chmodSync(script, 0o755);
  r = asNobody(script, []);
  t.equal(r.stdout, 'ran\n', 'a 0755 script runs');

  const suid = c.path('id-04711');
  copyFileSync('/usr/bin/id', suid);
  chmodSync(suid, 0o4711);
  r = asNobody(suid, []);
  t.equal(r.status, 0, `a setuid 04711 binary runs as another user: ${r.stderr}`);
  t.match(r.stdout, /uid=65534/, 'as that user');
  t.comment(`setuid exec as nobody: ${r.stdout.trim()}`);

  // O_PATH (0o10000000): no open reaches the filesystem; fstat works.
  const secret = c.path('secret-0000');
  writeFileSync(secret, 'x');
  chmodSync(secret, 0o000);
  const probe =
    `const fs=require('fs');const fd=fs.openSync(process.argv[1],0o10000000);` +
    `process.stdout.write(String(fs.fstatSync(fd).mode & 0o7777));`;
  r = asNobody(process.execPath, ['-e', probe, secret]);
  t.equal(r.stdout, '0', `O_PATH of a mode 0000 file as another user, fstat: ${r.stderr}`);
  r = asNobody(process.execPath, ['-e', `require('fs').openSync(process.argv[1],'r')`, secret]);
  t.match(r.stderr, /EACCES/, 'a read open of it is refused');

  // Root: X_OK only when some x bit is set; R_OK and W_OK always.
  const access = (path: string, mode: string) =>
    run(process.execPath, [
      '-e',
      `require('fs').accessSync(process.argv[1], require('fs').constants.${mode})`,
      path,
    ]).status === 0;
  t.notOk(access(secret, 'X_OK'), 'root: X_OK of a mode 0000 file is refused');
  t.ok(access(secret, 'R_OK'), 'root: R_OK of it is granted');
  t.ok(access(secret, 'W_OK'), 'root: W_OK of it is granted');
  chmodSync(secret, 0o001);
  t.ok(access(secret, 'X_OK'), 'root: X_OK with only the others x bit');
  t.notOk(access(noX, 'X_OK'), 'root: X_OK of a 0644 file is refused');
  r = run(noX, []);
  t.not(r.status, 0, 'root cannot exec a file without x bits either');
  t.equal(run(bin, []).status, 0, 'root execs the 0711 binary');
});
