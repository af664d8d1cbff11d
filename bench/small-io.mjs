/**
 * The small-file and metadata rows of the standing benchmark (issue 11,
 * item 5): rm -rf of the tar tree, git status on a generated work tree, a
 * make -j2 build of a generated C project, buffered 4 KiB random writes and
 * reads with fio (1 and 4 jobs), fsync'd 4 KiB appends (p50 and p99) and a
 * mixed small-I/O run. fuse-bench.mjs runs them on every target after its own
 * rows; this module only knows how to run one row on one target directory.
 *
 * smallIoWorkloads(h) takes the bench's helpers (h.run, h.runOk, h.dropCaches,
 * h.fio, h.fioArgs, h.fioSide) so that timing, timeouts and cache
 * dropping are the bench's own, and returns workload objects of the shape
 * WORKLOADS documents, plus:
 *   tools: commands the row needs; the bench skips the row, saying so, when
 *          one is missing.
 *   from:  a row with no run() of its own, filled from the rows object of the
 *          run() result of the row it names (one loop gives p50 and p99).
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Functions per generated C file: enough that gcc has some work, little enough that the row is not all compiler. */
const C_FUNCTIONS = 6;

/** Random writes cover at most this much of the sequential file, so the end fsync stays short. */
const RAND_WRITE_MAX_MIB = 256;

/**
 * Writes n files of 1-2 KiB into 100 directories (10 x 10 deep, as a source
 * tree), from a fixed seed, so every target hashes the same content.
 */
const PY_GIT_TREE = `
import json, os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(20261207)
pool = rng.randbytes(1 << 16).hex()
for i in range(n):
    d = os.path.join(root, 'd%d' % (i % 10), 'e%d' % ((i // 10) % 10))
    os.makedirs(d, exist_ok=True)
    off = rng.randrange(1 << 16)
    with open(os.path.join(d, 'f%05d.txt' % i), 'w') as f:
        f.write(pool[off:off + 1024 + rng.randrange(1024)])
print(json.dumps({'files': n, 'dirs': 110}))
`;

/** n appends of 4 KiB, each followed by fsync; every pair timed on its own; stops early after maxS seconds. */
const PY_FSYNC_APPEND = `
import json, math, os, sys, time
path, n, max_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
buf = os.urandom(4096)
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644)
lat = []
t0 = time.perf_counter()
for _ in range(n):
    t = time.perf_counter()
    os.write(fd, buf)
    os.fsync(fd)
    lat.append(time.perf_counter() - t)
    if t - t0 > max_s:
        break
total = time.perf_counter() - t0
asked, n = n, len(lat)
size = os.fstat(fd).st_size
os.close(fd)
os.unlink(path)
lat.sort()
q = lambda p: lat[max(0, math.ceil(p * n) - 1)] * 1e6
print(json.dumps({'n': n, 'asked': asked, 'seconds': total, 'bytes': size, 'p50Us': q(0.5), 'p90Us': q(0.9),
                  'p99Us': q(0.99), 'maxUs': lat[-1] * 1e6, 'meanUs': total / n * 1e6}))
`;

/**
 * Mixed small I/O. setup: n files of 16 KiB. run: opens random files (fixed
 * seed) O_RDWR and on each does 4 calls drawn from pread 4 KiB 40%, pwrite
 * 4 KiB 30%, fstat 15%, ftruncate 15% (to 0..16 KiB), then closes it; every
 * call (open and close too) is timed, and the rate counts every call; stops
 * early after maxS seconds.
 */
const PY_MIXED = `
import json, math, os, random, sys, time
mode, d, nfiles = sys.argv[1], sys.argv[2], int(sys.argv[3])
names = [os.path.join(d, 'm%04d' % i) for i in range(nfiles)]
if mode == 'setup':
    os.mkdir(d)
    data = os.urandom(16384)
    for p in names:
        with open(p, 'wb') as f:
            f.write(data)
    print(json.dumps({'files': nfiles}))
    sys.exit(0)
opens, max_s = int(sys.argv[4]), float(sys.argv[5])
rng = random.Random(20261207)
buf = os.urandom(4096)
ops = ['pread'] * 8 + ['pwrite'] * 6 + ['fstat'] * 3 + ['ftruncate'] * 3
lat = {k: [] for k in ['open', 'pread', 'pwrite', 'fstat', 'ftruncate', 'close']}
pc = time.perf_counter
t0 = pc()
done = 0
while done < opens and pc() - t0 < max_s:
    done += 1
    p = names[rng.randrange(nfiles)]
    t = pc(); fd = os.open(p, os.O_RDWR | os.O_CLOEXEC); lat['open'].append(pc() - t)
    for _ in range(4):
        op = rng.choice(ops)
        off = rng.randrange(4) * 4096
        t = pc()
        if op == 'pread':
            os.pread(fd, 4096, off)
        elif op == 'pwrite':
            os.pwrite(fd, buf, off)
        elif op == 'fstat':
            os.fstat(fd)
        else:
            os.ftruncate(fd, rng.randrange(16385))
        lat[op].append(pc() - t)
    t = pc(); os.close(fd); lat['close'].append(pc() - t)
total = pc() - t0
calls = sum(len(v) for v in lat.values())
def summary(v):
    v.sort()
    q = lambda p: v[max(0, math.ceil(p * len(v)) - 1)] * 1e6
    return {'n': len(v), 'p50Us': q(0.5), 'p99Us': q(0.99), 'maxUs': v[-1] * 1e6, 'totalS': sum(v)}
print(json.dumps({'opens': done, 'asked': opens, 'calls': calls, 'seconds': total,
                  'byCall': {k: summary(v) for k, v in lat.items() if v}}))
`;

const lastJsonLine = (stdout) => JSON.parse(stdout.trim().split('\n').pop());

/** A deterministic C project: files .c files including one header, linked into one program that prints a sum. */
function writeCProject(dir, files) {
  mkdirSync(join(dir, 'src'), { recursive: true });
  mkdirSync(join(dir, 'include'), { recursive: true });
  const decls = [];
  for (let i = 0; i < files; i++) decls.push(`unsigned long mod${i}(unsigned long x);`);
  writeFileSync(
    join(dir, 'include/common.h'),
    `#ifndef COMMON_H\n#define COMMON_H\n#include <stddef.h>\n#include <string.h>\n` +
      `struct item { unsigned long key; char name[32]; };\n${decls.join('\n')}\n#endif\n`,
  );
  let expected = 0n;
  for (let i = 0; i < files; i++) {
    const fns = [];
    for (let k = 0; k < C_FUNCTIONS; k++) {
      fns.push(
        `static unsigned long f${k}(unsigned long x) {\n` +
          `  struct item it[8];\n` +
          `  for (int j = 0; j < 8; j++) { it[j].key = x * ${k + 3} + j; memset(it[j].name, 'a' + j, sizeof it[j].name); }\n` +
          `  unsigned long s = 0;\n` +
          `  for (int j = 0; j < 8; j++) s += it[j].key ^ (unsigned long)it[j].name[j % 32];\n` +
          `  return s % 1000003UL;\n}\n`,
      );
    }
    const calls = Array.from({ length: C_FUNCTIONS }, (_, k) => `f${k}(x + ${k})`).join(' + ');
    writeFileSync(
      join(dir, `src/mod${i}.c`),
      `#include "common.h"\n${fns.join('\n')}\nunsigned long mod${i}(unsigned long x) { return (${calls}) % 1000003UL; }\n`,
    );
    expected += BigInt(modValue(i));
  }
  const sum = Array.from({ length: files }, (_, i) => `mod${i}(${i})`).join(' + ');
  writeFileSync(
    join(dir, 'src/main.c'),
    `#include <stdio.h>\n#include "common.h"\nint main(void) { printf("%lu\\n", ${sum}); return 0; }\n`,
  );
  const objs = Array.from({ length: files }, (_, i) => `obj/mod${i}.o`).join(' ') + ' obj/main.o';
  writeFileSync(
    join(dir, 'Makefile'),
    `CC ?= cc\nCFLAGS = -O1 -pipe -Wall -Iinclude\nOBJS = ${objs}\n\n` +
      `app: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n\n` +
      `obj/%.o: src/%.c include/common.h | obj\n\t$(CC) $(CFLAGS) -c $< -o $@\n\n` +
      `obj:\n\tmkdir -p obj\n`,
  );
  return expected.toString();
}

/** What mod<i>(i) returns, computed as the C code does (64-bit unsigned, chars 'a'+j). */
function modValue(i) {
  const M64 = (1n << 64n) - 1n;
  const x0 = BigInt(i);
  let total = 0n;
  for (let k = 0; k < C_FUNCTIONS; k++) {
    const x = (x0 + BigInt(k)) & M64;
    let s = 0n;
    for (let j = 0; j < 8; j++) {
      const key = (x * BigInt(k + 3) + BigInt(j)) & M64;
      s = (s + (key ^ BigInt(97 + j))) & M64;
    }
    total = (total + (s % 1000003n)) & M64;
  }
  return total % 1000003n;
}

export function smallIoWorkloads(h) {
  const { run, runOk, dropCaches, fio, fioArgs, fioSide } = h;

  async function randWrite(ctx, t, jobs) {
    const mib = Math.min(ctx.o.sizeMiB, RAND_WRITE_MAX_MIB);
    const { job, wallMs } = await fio(
      ctx,
      fioArgs('randwrite', t.file, [
        '--rw=randwrite',
        '--bs=4k',
        `--size=${mib}M`,
        `--numjobs=${jobs}`,
        '--group_reporting',
        '--norandommap',
        '--time_based',
        `--runtime=${ctx.o.runtimeS}`,
        // Not in the rate (fio stops the clock first); leaves nothing dirty for the next row.
        '--end_fsync=1',
      ]),
    );
    const d = fioSide(job.write, wallMs);
    return { value: d.iops, detail: { ...d, jobs, regionMiB: mib } };
  }

  /** git with no user or system configuration, so the host's cannot change what is measured. */
  function gitEnv(ctx, extra = {}) {
    return {
      ...process.env,
      HOME: ctx.root,
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_CONFIG_GLOBAL: '/dev/null',
      GIT_AUTHOR_NAME: 'bench',
      GIT_AUTHOR_EMAIL: 'bench@localhost',
      GIT_COMMITTER_NAME: 'bench',
      GIT_COMMITTER_EMAIL: 'bench@localhost',
      ...extra,
    };
  }
  // No automatic gc or maintenance: after the commit of 10,000 loose objects
  // git would start one in the background, racing the removal of the local
  // object directory and the timed status.
  const git = (ctx, repo, args, env = gitEnv(ctx)) =>
    runOk(
      'git',
      ['-c', 'safe.directory=*', '-c', 'gc.auto=0', '-c', 'maintenance.auto=false', '-C', repo, ...args],
      { timeoutMs: ctx.timeoutMs, env },
    );

  return [
    {
      id: 'rm_rf',
      label: 'rm -rf of the tar tree, cold',
      unit: 's',
      lowerBetter: true,
      tools: ['tar'],
      async run(ctx, t) {
        const dest = join(t.dir, 'tarx');
        // tar_extract leaves the tree; when that row did not run (--rows), extract it here, untimed.
        let extracted = false;
        if (!existsSync(join(dest, 'tree'))) {
          rmSync(dest, { recursive: true, force: true });
          mkdirSync(dest);
          await runOk('tar', ['-xf', ctx.tarball.file, '-C', dest], { timeoutMs: ctx.timeoutMs });
          extracted = true;
        }
        const cold = await dropCaches(ctx);
        const r = await runOk('rm', ['-rf', dest], { timeoutMs: ctx.timeoutMs });
        if (existsSync(dest)) throw new Error(`rm -rf ${dest} exited 0 but the directory is still there`);
        const tar = ctx.tarball.detail;
        return {
          value: r.ms / 1000,
          detail: { files: tar.files, dirs: tar.dirs, seconds: r.ms / 1000, extractedHere: extracted, cold },
        };
      },
    },
    {
      id: 'rand_read_cold_1j',
      label: '4 KiB rand read, buffered, cold start, 1 job',
      unit: 'IOPS',
      tools: ['fio'],
      async run(ctx, t) {
        const cold = await dropCaches(ctx);
        const { job, wallMs } = await fio(
          ctx,
          fioArgs('randread1', t.file, [
            '--rw=randread',
            '--bs=4k',
            `--size=${ctx.o.sizeMiB}M`,
            '--numjobs=1',
            '--norandommap',
            '--time_based',
            `--runtime=${ctx.o.runtimeS}`,
          ]),
        );
        const d = fioSide(job.read, wallMs);
        return { value: d.iops, detail: { ...d, jobs: 1, cold } };
      },
    },
    {
      id: 'rand_write_1j',
      label: '4 KiB rand write, buffered, 1 job',
      unit: 'IOPS',
      tools: ['fio'],
      run: (ctx, t) => randWrite(ctx, t, 1),
    },
    {
      id: 'rand_write_4j',
      label: '4 KiB rand write, buffered, 4 jobs',
      unit: 'IOPS',
      tools: ['fio'],
      run: (ctx, t) => randWrite(ctx, t, 4),
    },
    {
      id: 'fsync_append',
      label: "fsync'd 4 KiB append, p50 latency",
      unit: 'µs',
      lowerBetter: true,
      tools: ['python3'],
      async run(ctx, t) {
        await run('sync', ['-f', ctx.root]);
        const r = await runOk(
          'python3',
          [
            '-c',
            PY_FSYNC_APPEND,
            join(t.dir, 'append.log'),
            String(ctx.o.fsyncAppends),
            String(ctx.o.loopMaxS),
          ],
          { timeoutMs: ctx.timeoutMs },
        );
        const j = lastJsonLine(r.stdout);
        if (j.bytes !== j.n * 4096)
          throw new Error(`appended ${j.n} x 4 KiB but the file has ${j.bytes} bytes`);
        return { value: j.p50Us, detail: j, rows: { fsync_append_p99: { value: j.p99Us, detail: j } } };
      },
    },
    {
      id: 'fsync_append_p99',
      label: "fsync'd 4 KiB append, p99 latency",
      unit: 'µs',
      lowerBetter: true,
      from: 'fsync_append',
    },
    {
      id: 'mixed_small_io',
      label: 'mixed small I/O (open, 4 KiB r/w, fstat, ftruncate, close), cold',
      unit: 'calls/s',
      tools: ['python3'],
      async run(ctx, t) {
        const d = join(t.dir, 'mixed');
        rmSync(d, { recursive: true, force: true });
        await runOk('python3', ['-c', PY_MIXED, 'setup', d, String(ctx.o.mixedFiles)], {
          timeoutMs: ctx.timeoutMs,
        });
        const cold = await dropCaches(ctx);
        const r = await runOk(
          'python3',
          [
            '-c',
            PY_MIXED,
            'run',
            d,
            String(ctx.o.mixedFiles),
            String(ctx.o.mixedOpens),
            String(ctx.o.loopMaxS),
          ],
          { timeoutMs: ctx.timeoutMs },
        );
        const j = lastJsonLine(r.stdout);
        return { value: j.calls / j.seconds, detail: { ...j, files: ctx.o.mixedFiles, cold } };
      },
    },
    {
      id: 'git_status',
      label: 'git status, cold',
      unit: 's',
      lowerBetter: true,
      tools: ['git', 'python3'],
      async run(ctx, t) {
        const repo = join(t.dir, 'gitrepo');
        rmSync(repo, { recursive: true, force: true });
        const tree = await runOk('python3', ['-c', PY_GIT_TREE, repo, String(ctx.o.gitFiles)], {
          timeoutMs: ctx.timeoutMs,
        });
        // The objects go to a local directory and come back as one pack: the
        // repository ends up as git clone would leave it (index, one pack),
        // without tens of thousands of loose-object writes on the target
        // before the row can start. The index is written in place, so its
        // stat data is the target's own.
        const objects = mkdtempSync(join(ctx.root, 'git-objects-'));
        try {
          await git(ctx, repo, ['init', '-q']);
          const local = gitEnv(ctx, { GIT_OBJECT_DIRECTORY: objects });
          await git(ctx, repo, ['add', '-A'], local);
          await git(ctx, repo, ['commit', '-q', '-m', 'bench tree'], local);
          await git(ctx, repo, ['repack', '-a', '-d', '-q'], local);
          const pack = join(objects, 'pack');
          const files = readdirSync(pack).filter((f) => /\.(pack|idx)$/.test(f));
          if (files.length < 2)
            throw new Error(`git repack left ${files.join(', ') || 'nothing'} in ${pack}`);
          await runOk('cp', [...files.map((f) => join(pack, f)), join(repo, '.git/objects/pack/')], {
            timeoutMs: ctx.timeoutMs,
          });
        } finally {
          rmSync(objects, { recursive: true, force: true });
        }
        // Untimed: checks the repository is whole and clean, and lets git
        // rewrite the index once, as a work tree in use would have it.
        const warm = await git(ctx, repo, ['status', '--porcelain']);
        if (warm.stdout.trim())
          throw new Error(`git status right after the commit lists changes: ${warm.stdout.slice(0, 200)}`);
        const cold = await dropCaches(ctx);
        const r = await git(ctx, repo, ['status', '--porcelain']);
        if (r.stdout.trim())
          throw new Error(`git status lists changes on an untouched tree: ${r.stdout.slice(0, 200)}`);
        return { value: r.ms / 1000, detail: { ...lastJsonLine(tree.stdout), seconds: r.ms / 1000, cold } };
      },
    },
    {
      id: 'make_build',
      label: 'make -j2 of a small C project, cold',
      unit: 's',
      lowerBetter: true,
      tools: ['make', 'cc'],
      async run(ctx, t) {
        const d = join(t.dir, 'cproject');
        rmSync(d, { recursive: true, force: true });
        const expected = writeCProject(d, ctx.o.makeFiles);
        const cold = await dropCaches(ctx);
        const r = await runOk('make', ['-s', '-j2', '-C', d], { timeoutMs: ctx.timeoutMs });
        // Untimed: the program built from the target's files gives the sum worked out here.
        const out = await runOk(join(d, 'app'), [], { timeoutMs: 60_000 });
        if (out.stdout.trim() !== expected)
          throw new Error(
            `the built program printed ${out.stdout.trim().slice(0, 40)}, expected ${expected}`,
          );
        return { value: r.ms / 1000, detail: { sources: ctx.o.makeFiles + 1, seconds: r.ms / 1000, cold } };
      },
    },
  ];
}
