/**
 * POSIX behaviour through a real FUSE mount of the passthrough backend, with
 * every syscall made by another process (coreutils, or node as another user).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { mountPassthrough, ok, run } from './helpers/passthrough-mount.js';

const NOBODY = 65534;
const NOGROUP = 65534;

if (process.getuid?.() !== 0 || !existsSync('/dev/fuse')) {
  t.fail('mounted tests need root and /dev/fuse');
}

t.test('files are owned by the creating user, and chmod/chown follow POSIX rules', async (t) => {
  const m = await mountPassthrough(t);
  ok('chmod', ['1777', m.mnt]);
  const f = join(m.mnt, 'mine');
  ok('sh', ['-c', `umask 022; echo data > ${f}`], { uid: NOBODY, gid: NOGROUP });
  t.equal(
    ok('stat', ['-c', '%u:%g %a', f]).trim(),
    `${NOBODY}:${NOGROUP} 644`,
    'owner, group and mode of a new file',
  );
  t.equal(statSync(join(m.src, 'mine')).uid, NOBODY, 'the backing file has the same owner');
  ok('chmod', ['600', f], { uid: NOBODY, gid: NOGROUP });
  t.equal(ok('stat', ['-c', '%a', f]).trim(), '600', 'owner may chmod');
  const denied = run('chown', ['0', f], { uid: NOBODY, gid: NOGROUP });
  t.not(denied.status, 0, 'a non-root owner may not give the file away');
  t.match(denied.stderr, /Operation not permitted/);
  const otherRead = run('cat', [f], { uid: 1000, gid: 1000 });
  t.not(otherRead.status, 0, 'mode 600 keeps other users out');
  t.match(otherRead.stderr, /Permission denied/);
  ok('chown', ['1000:1000', f]);
  t.equal(ok('stat', ['-c', '%u:%g', f]).trim(), '1000:1000', 'root may chown');
  t.equal(run('cat', [f], { uid: 1000, gid: 1000 }).stdout, 'data\n', 'the new owner can read it');

  // setgid directories pass their group on; suid is cleared when the owner changes.
  const d = join(m.mnt, 'sgid');
  ok('mkdir', [d]);
  ok('chown', [`0:${NOGROUP}`, d]);
  ok('chmod', ['2777', d]);
  ok('touch', [join(d, 'inherits')], { uid: 1000, gid: 1000 });
  t.equal(
    ok('stat', ['-c', '%g', join(d, 'inherits')]).trim(),
    String(NOGROUP),
    'group inherited from setgid dir',
  );
  const s = join(m.mnt, 'suid');
  ok('touch', [s]);
  ok('chmod', ['4755', s]);
  ok('chown', ['1000', s]);
  t.equal(ok('stat', ['-c', '%a', s]).trim(), '755', 'chown clears the setuid bit');
});

t.test('hard links, symlinks, rename over existing, rename flags', async (t) => {
  const m = await mountPassthrough(t);
  const a = join(m.mnt, 'a');
  ok('sh', ['-c', `echo one > ${a}`]);
  ok('ln', [a, join(m.mnt, 'b')]);
  t.equal(ok('stat', ['-c', '%h', a]).trim(), '2', 'nlink counts both names');
  t.equal(ok('stat', ['-c', '%i', a]), ok('stat', ['-c', '%i', join(m.mnt, 'b')]), 'same inode');
  ok('rm', [a]);
  t.equal(ok('cat', [join(m.mnt, 'b')]), 'one\n', 'data survives through the other name');
  t.equal(ok('stat', ['-c', '%h', join(m.mnt, 'b')]).trim(), '1');

  ok('ln', ['-s', 'b', join(m.mnt, 'sl')]);
  t.equal(ok('readlink', [join(m.mnt, 'sl')]).trim(), 'b');
  t.equal(ok('cat', [join(m.mnt, 'sl')]), 'one\n', 'symlink is followed');
  t.ok(lstatSync(join(m.src, 'sl')).isSymbolicLink(), 'a real symlink in the backing dir');
  const long = 'x'.repeat(1000);
  ok('ln', ['-s', long, join(m.mnt, 'longlink')]);
  t.equal(ok('readlink', [join(m.mnt, 'longlink')]).trim(), long, '1000-byte symlink target');

  ok('sh', ['-c', `echo two > ${join(m.mnt, 'c')}`]);
  ok('mv', [join(m.mnt, 'c'), join(m.mnt, 'b')]);
  t.equal(ok('cat', [join(m.mnt, 'b')]), 'two\n', 'rename replaced the target');
  t.notOk(existsSync(join(m.mnt, 'c')), 'old name gone');

  ok('mkdir', ['-p', join(m.mnt, 'd1/sub'), join(m.mnt, 'd2')]);
  ok('mv', ['-T', join(m.mnt, 'd1'), join(m.mnt, 'd2')]);
  t.ok(existsSync(join(m.mnt, 'd2/sub')), 'directory renamed over an empty directory');
  ok('mkdir', [join(m.mnt, 'd3')]);
  const notEmpty = run('mv', ['-T', join(m.mnt, 'd3'), join(m.mnt, 'd2')]);
  t.not(notEmpty.status, 0, 'cannot replace a non-empty directory');

  ok('sh', ['-c', `echo x > ${join(m.mnt, 'x')}; echo y > ${join(m.mnt, 'y')}`]);
  const renameat2 = (flags: number) =>
    ok('python3', [
      '-c',
      `import ctypes
libc=ctypes.CDLL(None,use_errno=True)
r=libc.renameat2(-100,b"${join(m.mnt, 'x')}",-100,b"${join(m.mnt, 'y')}",${flags})
print(r, ctypes.get_errno())`,
    ]).trim();
  t.equal(renameat2(1), '-1 17', 'RENAME_NOREPLACE onto an existing name fails with EEXIST');
  t.equal(ok('cat', [join(m.mnt, 'y')]), 'y\n', 'and leaves the target alone');
  t.equal(renameat2(2), '0 0', 'RENAME_EXCHANGE succeeds');
  t.equal(ok('cat', [join(m.mnt, 'x')]), 'y\n', 'contents swapped');
  t.equal(ok('cat', [join(m.mnt, 'y')]), 'x\n', 'contents swapped');
  t.equal(renameat2(3), '-1 22', 'both flags at once is EINVAL');
});

t.test('xattrs, FIFOs, device nodes, sockets', async (t) => {
  const m = await mountPassthrough(t);
  const f = join(m.mnt, 'f');
  ok('touch', [f]);
  ok('setfattr', ['-n', 'user.color', '-v', 'blue', f]);
  ok('setfattr', ['-n', 'user.empty', f]);
  t.match(ok('getfattr', ['-d', f]), /user\.color="blue"/);
  t.match(ok('getfattr', ['-d', f]), /user\.empty/);
  t.equal(ok('getfattr', ['--only-values', '-n', 'user.color', f]), 'blue');
  ok('setfattr', ['-x', 'user.color', f]);
  const gone = run('getfattr', ['-n', 'user.color', f]);
  t.match(gone.stderr, /No such attribute/, 'removed xattr reports ENODATA');
  // ext4 keeps a value within one block: 3000 bytes fit everywhere.
  const big = 'v'.repeat(3000);
  ok('setfattr', ['-n', 'user.big', '-v', big, f]);
  t.equal(ok('getfattr', ['--only-values', '-n', 'user.big', f]), big, '3000-byte xattr value');

  ok('mkfifo', [join(m.mnt, 'pipe')]);
  t.equal(ok('stat', ['-c', '%F', join(m.mnt, 'pipe')]).trim(), 'fifo');
  const out = ok('sh', ['-c', `(echo through-fifo > ${join(m.mnt, 'pipe')} &) ; cat ${join(m.mnt, 'pipe')}`]);
  t.equal(out, 'through-fifo\n', 'a FIFO on the mount carries data between processes');

  ok('mknod', [join(m.mnt, 'null2'), 'c', '1', '3']);
  t.equal(ok('stat', ['-c', '%F %t:%T', join(m.mnt, 'null2')]).trim(), 'character special file 1:3');
  t.equal(
    ok('sh', ['-c', `echo discard > ${join(m.mnt, 'null2')} && echo ok`]).trim(),
    'ok',
    'char device works',
  );
  ok('mknod', [join(m.mnt, 'blk'), 'b', '259', '1048575']);
  t.equal(
    ok('stat', ['-c', '%t:%T', join(m.mnt, 'blk')]).trim(),
    '103:fffff',
    'major 259, 20-bit minor kept',
  );

  const sock = join(m.mnt, 'sock');
  const py = run('python3', [
    '-c',
    `import socket,os
s=socket.socket(socket.AF_UNIX); s.bind("${sock}"); s.listen(1)
c=socket.socket(socket.AF_UNIX); c.connect("${sock}")
a,_=s.accept(); c.sendall(b"hi"); print(a.recv(2).decode())`,
  ]);
  t.equal(py.stdout.trim(), 'hi', 'a unix socket bound on the mount accepts connections');
  t.equal(ok('stat', ['-c', '%F', sock]).trim(), 'socket');
});

t.test('truncate, sparse files, large offsets, nanosecond times', async (t) => {
  const m = await mountPassthrough(t);
  const f = join(m.mnt, 'f');
  ok('sh', ['-c', `printf 0123456789 > ${f}`]);
  ok('truncate', ['-s', '4', f]);
  t.equal(ok('cat', [f]), '0123', 'shrink');
  ok('truncate', ['-s', '10', f]);
  t.same([...readFileSync(f)], [48, 49, 50, 51, 0, 0, 0, 0, 0, 0], 'grow fills with zeros');

  const sparse = join(m.mnt, 'sparse');
  ok('dd', ['if=/dev/zero', `of=${sparse}`, 'bs=1', 'count=0', 'seek=1G'], {});
  t.equal(ok('stat', ['-c', '%s', sparse]).trim(), String(1024 ** 3), 'sparse size');
  t.ok(Number(ok('stat', ['-c', '%b', sparse]).trim()) < 64, 'sparse file allocates (almost) nothing');
  const holes = run('python3', [
    '-c',
    `import os
fd=os.open("${sparse}",os.O_RDWR); os.pwrite(fd,b"D",1<<29)
print(os.lseek(fd,0,os.SEEK_DATA), os.lseek(fd,(1<<29)+4096,os.SEEK_HOLE))`,
  ]);
  t.equal(holes.status, 0, holes.stderr);
  const [data, hole] = holes.stdout.trim().split(' ').map(Number);
  t.ok(
    data !== undefined && data <= 2 ** 29 && data > 2 ** 29 - 2 ** 20,
    'SEEK_DATA finds the written block',
  );
  t.ok(hole !== undefined && hole > 2 ** 29, 'SEEK_HOLE after it');

  const big = join(m.mnt, 'big');
  const off = 5 * 1024 ** 3 + 123;
  ok('sh', ['-c', `printf tail | dd of=${big} bs=1 seek=${off} conv=notrunc status=none`]);
  t.equal(ok('stat', ['-c', '%s', big]).trim(), String(off + 4), 'size past 4 GiB');
  t.equal(
    ok('dd', [`if=${big}`, 'bs=1', `skip=${off}`, 'count=4', 'status=none']),
    'tail',
    'read back past 4 GiB',
  );

  const ts = join(m.mnt, 'ts');
  ok('touch', ['-d', '2001-02-03 04:05:06.123456789', ts]);
  t.equal(
    ok('stat', ['-c', '%y', ts]).trim(),
    '2001-02-03 04:05:06.123456789 +0000',
    'mtime keeps nanoseconds',
  );
  ok('touch', ['-a', '-d', '1969-12-31 23:59:59.5', ts]);
  t.equal(
    ok('stat', ['-c', '%x', ts]).trim(),
    '1969-12-31 23:59:59.500000000 +0000',
    'atime before the epoch',
  );
  t.equal(
    ok('stat', ['-c', '%y', ts]).trim(),
    '2001-02-03 04:05:06.123456789 +0000',
    'UTIME_OMIT kept mtime',
  );
  const st = statSync(join(m.src, 'ts'), { bigint: true });
  t.equal(st.mtimeNs, 981173106123456789n, 'backing file has the exact nanoseconds');
});

t.test('readdir of 10,000 entries, with attributes', async (t) => {
  const m = await mountPassthrough(t);
  const d = join(m.src, 'many');
  execFileSync('sh', ['-c', `mkdir ${d} && cd ${d} && seq -f 'file-%05g' 1 10000 | xargs touch`]);
  const names = ok('ls', ['-f', join(m.mnt, 'many')])
    .split('\n')
    .filter((n) => n && n !== '.' && n !== '..');
  t.equal(names.length, 10000, 'all entries listed');
  t.equal(new Set(names).size, 10000, 'no duplicates');
  const long = ok('ls', ['-l', join(m.mnt, 'many')]).split('\n');
  t.equal(long.filter((l) => l.startsWith('-rw')).length, 10000, 'ls -l stats every entry');
  const inodes = ok('ls', ['-i1', join(m.mnt, 'many')])
    .trim()
    .split('\n');
  const backing = new Map(
    ok('ls', ['-i1', d])
      .trim()
      .split('\n')
      .map((l) => {
        const [ino, name] = l.trim().split(/\s+/);
        return [name, ino];
      }),
  );
  const mismatched = inodes.filter((l) => {
    const [ino, name] = l.trim().split(/\s+/);
    return backing.get(name!) !== ino;
  });
  t.equal(mismatched.length, 0, 'd_ino matches the backing inode numbers');
});

t.test('concurrent writers to distinct and shared files', async (t) => {
  const m = await mountPassthrough(t);
  const writers = 8;
  const script = Array.from({ length: writers }, (_, i) => {
    const f = join(m.mnt, `w${i}`);
    return `(dd if=/dev/urandom of=${join(m.src, '..', `ref${i}`)} bs=64k count=32 status=none && cp ${join(m.src, '..', `ref${i}`)} ${f}) &`;
  }).join('\n');
  ok('bash', ['-c', `${script}\nwait`]);
  for (let i = 0; i < writers; i++) {
    const want = readFileSync(join(m.src, '..', `ref${i}`));
    const got = readFileSync(join(m.src, `w${i}`));
    t.ok(want.equals(got), `writer ${i}: 2 MiB written concurrently arrive intact`);
  }
  // Disjoint regions of one file, written at once by many processes.
  const shared = join(m.mnt, 'shared');
  const parts = Array.from(
    { length: writers },
    (_, i) =>
      `(head -c 1048576 /dev/zero | tr '\\0' '${String.fromCharCode(65 + i)}' | dd of=${shared} bs=1M seek=${i} conv=notrunc status=none) &`,
  ).join('\n');
  ok('bash', ['-c', `${parts}\nwait`]);
  const all = readFileSync(join(m.src, 'shared'));
  t.equal(all.length, writers * 1048576);
  let bad = 0;
  for (let i = 0; i < writers; i++) {
    const region = all.subarray(i * 1048576, (i + 1) * 1048576);
    if (!region.every((b) => b === 65 + i)) bad++;
  }
  t.equal(bad, 0, 'every region holds exactly its writer’s bytes');
});

for (const mode of [['--writeback-cache'], ['--direct-io'], ['--attr-ttl-ms', '0', '--entry-ttl-ms', '0']]) {
  t.test(`data stays exact with ${mode.join(' ')}`, async (t) => {
    const m = await mountPassthrough(t, mode);
    const ref = join(m.src, '..', 'ref');
    ok('dd', ['if=/dev/urandom', `of=${ref}`, 'bs=1M', 'count=3', 'status=none']);
    const f = join(m.mnt, 'f');
    ok('cp', [ref, f]);
    ok('sh', ['-c', `printf tail >> ${f}`]);
    ok('sh', ['-c', `printf XYZ | dd of=${f} bs=1 seek=1000 conv=notrunc status=none`]);
    const want = Buffer.concat([readFileSync(ref), Buffer.from('tail')]);
    want.write('XYZ', 1000);
    const got = readFileSync(join(m.src, 'f'));
    t.equal(got.length, want.length, 'size after write and append');
    t.ok(got.equals(want), 'backing file holds exactly the bytes written');
    t.ok(readFileSync(f).equals(want), 'reading through the mount gives them back');

    // A user allowed only to write (mode 0222) can still append: with the
    // write-back cache the kernel reads pages of write-only files itself.
    ok('chmod', ['0777', m.mnt]);
    const wo = join(m.mnt, 'wo');
    ok('sh', ['-c', `printf abc > ${wo}`], { uid: 1000, gid: 1000 });
    ok('chmod', ['0222', wo], { uid: 1000, gid: 1000 });
    ok('sh', ['-c', `printf def >> ${wo}`], { uid: 1000, gid: 1000 });
    t.equal(readFileSync(join(m.src, 'wo'), 'utf8'), 'abcdef', 'append by a write-only user');
  });
}

t.test('bad input from callers gets clear errors and loses nothing', async (t) => {
  const m = await mountPassthrough(t);
  ok('sh', ['-c', `echo keep > ${join(m.mnt, 'keep')}`]);
  const long = 'n'.repeat(256);
  const tooLong = run('touch', [join(m.mnt, long)]);
  t.match(tooLong.stderr, /File name too long/, '256-byte name: ENAMETOOLONG');
  t.ok(existsSync(join(m.mnt, 'n'.repeat(255))) === false, 'nothing half-created');
  ok('touch', [join(m.mnt, 'n'.repeat(255))]);
  t.ok(existsSync(join(m.src, 'n'.repeat(255))), '255-byte name works');
  const py = (code: string) => run('python3', ['-c', `import os,errno\n${code}`]);
  const efbig = py(`fd=os.open("${join(m.mnt, 'big')}",os.O_CREAT|os.O_WRONLY,0o644)
try:
  os.pwrite(fd,b"x",(1<<63)-1); print("wrote")
except OSError as e: print(errno.errorcode[e.errno])`);
  t.match(efbig.stdout.trim(), /^(EFBIG|EINVAL)$/, `write at 2^63-1: ${efbig.stdout.trim()}`);
  const rmNonEmpty = run('rmdir', [m.mnt]);
  t.not(rmNonEmpty.status, 0, 'rmdir of the busy mount root fails');
  const xattr = run('setfattr', ['-n', 'user.' + 'x'.repeat(300), '-v', '1', join(m.mnt, 'keep')]);
  t.not(xattr.status, 0, 'xattr name over 255 bytes is refused');
  t.equal(ok('cat', [join(m.mnt, 'keep')]), 'keep\n', 'existing data untouched');
  t.equal(m.proc.exitCode, null, 'server still running');
  t.notMatch(m.log(), /"level":"error"/, 'no bug logged by the server');
});
