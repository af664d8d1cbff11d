/**
 * tar onto the mount: many small files, symlinks, modes and mtimes, compared
 * byte for byte and attribute by attribute with the same archive extracted
 * to a local directory; then rm -rf leaves nothing behind (no entry, no
 * inode, no block).
 */
import { lstatSync, readdirSync, readlinkSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { run, sh, startCluster, waitUntil } from '../src/cluster.js';

/** The whole of /usr/include with DUNIX_TAR_FULL=1; by default a subset of about 400 entries (the suite's time: tar speed is measured by the bench). */
function members(): string[] {
  if (process.env.DUNIX_TAR_FULL === '1') return ['include'];
  const top = readdirSync('/usr/include', { withFileTypes: true })
    .filter((d) => !d.isDirectory())
    .map((d) => `include/${d.name}`);
  const dirs = ['linux/netfilter', 'linux/usb', 'asm-generic', 'netinet', 'ncursesw', 'arpa'].filter((d) => {
    try {
      return lstatSync(`/usr/include/${d}`).isDirectory();
    } catch {
      return false;
    }
  });
  return [...top, ...dirs.map((d) => `include/${d}`)];
}

interface Meta {
  type: string;
  mode: number;
  size: bigint;
  mtimeS: bigint;
  uid: number;
  gid: number;
  nlink: bigint;
  target?: string;
}

/** relative path → attributes, for every entry under `root`. */
function walk(root: string): Map<string, Meta> {
  const out = new Map<string, Meta>();
  const visit = (rel: string) => {
    const p = join(root, rel);
    const st = lstatSync(p, { bigint: true });
    const type = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other';
    out.set(rel, {
      type,
      mode: Number(st.mode),
      size: type === 'dir' ? 0n : st.size,
      mtimeS: st.mtimeNs / 1_000_000_000n,
      uid: Number(st.uid),
      gid: Number(st.gid),
      nlink: st.nlink,
      ...(type === 'symlink' ? { target: readlinkSync(p) } : {}),
    });
    if (type === 'dir') for (const name of readdirSync(p)) visit(rel ? join(rel, name) : name);
  };
  visit('');
  return out;
}

t.test('tar extract, compare and rm -rf on the mount', async (t) => {
  const c = await startCluster(t);
  const tarFile = join(c.base, 'include.tar');
  const ref = join(c.base, 'ref');
  sh(`tar -C /usr -cf ${tarFile} ${members().join(' ')}`);
  sh(`mkdir ${ref} && tar -C ${ref} -xpf ${tarFile}`);
  const before = await c.counts();

  const dst = c.path('x');
  sh(`mkdir ${dst}`);
  const started = Date.now();
  const x = run('tar', ['-C', dst, '-xpf', tarFile], { timeoutMs: 900_000 });
  t.equal(x.status, 0, `tar -x exits 0 ${x.stderr.slice(0, 500)}`);
  t.comment(`extracted in ${Date.now() - started} ms`);

  const want = walk(ref);
  const got = walk(dst);
  const files = [...want.values()].filter((m) => m.type === 'file').length;
  const links = [...want.values()].filter((m) => m.type === 'symlink').length;
  t.ok(files >= 250, `many small files (${files})`);
  t.ok(links >= 5, `symlinks (${links})`);
  t.same([...got.keys()].sort(), [...want.keys()].sort(), 'the same entries');
  const mismatches: string[] = [];
  const implied = new Set(
    members().flatMap((m) =>
      m
        .split('/')
        .slice(0, -1)
        .map((_, i, parts) => parts.slice(0, i + 1).join('/')),
    ),
  );
  for (const [rel, w] of want) {
    // Directories above the archived members are created by tar itself (their times are not in the archive).
    if (rel === '' || implied.has(rel)) continue;
    const g = got.get(rel);
    if (!g) continue;
    for (const k of ['type', 'mode', 'size', 'mtimeS', 'uid', 'gid', 'target', 'nlink'] as const) {
      if (k === 'nlink' && w.type === 'symlink') continue;
      if (String(g[k]) !== String(w[k])) mismatches.push(`${rel}: ${k} ${String(g[k])} != ${String(w[k])}`);
    }
  }
  t.same(
    mismatches.slice(0, 20),
    [],
    `modes, sizes, mtimes, owners, symlink targets and nlinks match (${mismatches.length} mismatches)`,
  );

  const diff = run('diff', ['-r', '--no-dereference', ref, dst], { timeoutMs: 300_000 });
  t.equal(
    diff.status,
    0,
    `diff -r finds no difference ${diff.stdout.slice(0, 1000)}${diff.stderr.slice(0, 500)}`,
  );
  // Checksums of a sample read back through a fresh open (not only diff's reads).
  const sample = [...want.entries()].filter(([, m]) => m.type === 'file').slice(0, 50);
  for (const [rel] of sample) {
    if (!readFileSync(join(dst, rel)).equals(readFileSync(join(ref, rel)))) t.fail(`content of ${rel}`);
  }

  const rm = run('rm', ['-rf', join(dst, 'include')], { timeoutMs: 300_000 });
  t.equal(rm.status, 0, `rm -rf exits 0 ${rm.stderr.slice(0, 500)}`);
  t.same(readdirSync(dst), [], 'the directory is empty');
  t.equal(lstatSync(dst).nlink, 2, 'nlink of the emptied directory is 2');
  // Every inode and block of the removed tree is reclaimed.
  let after = await c.counts();
  await waitUntil(
    async () => {
      after = await c.counts();
      return after.inodes === before.inodes + 1 && after.blocks === before.blocks;
    },
    'reclaim',
    20_000,
    500,
  ).catch(() => {});
  t.equal(after.inodes, before.inodes + 1, 'only the emptied directory is left as a new inode');
  t.equal(after.blocks, before.blocks, 'no block of a removed file is left');

  // What tar does per file: write, futimens on the still open fd, close. The
  // times set last must win over the data flushed at close.
  for (const size of [100, 3 * 1024 * 1024]) {
    const p = join(dst, `futimens-${size}`);
    const py = [
      'import os, sys',
      'fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)',
      `os.write(fd, b"x" * ${size})`,
      'os.utime(fd, ns=(1000000000, 2000000123))',
      'os.close(fd)',
    ].join('\n');
    t.equal(run('python3', ['-c', py, p]).status, 0, 'write, futimens, close');
    // Past the attribute TTL: the kernel asks the bricks again.
    await new Promise((r) => setTimeout(r, 1500));
    t.equal(
      lstatSync(p, { bigint: true }).mtimeNs,
      2000000123n,
      `futimens before close sticks (${size} bytes)`,
    );
  }
});
