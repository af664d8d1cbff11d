/**
 * cc on the mount: sources, objects, a static archive and the executable all
 * live on the mount; the program runs from the mount (exec maps it from FUSE).
 */
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { ok, run, startCluster } from '../src/cluster.js';

const header = `#ifndef SUM_H
#define SUM_H
unsigned long sum_file(const char *path);
#endif
`;
const sumC = `#include <stdio.h>
#include "sum.h"
unsigned long sum_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  unsigned long s = 0; int ch;
  while ((ch = fgetc(f)) != EOF) s = s * 31 + (unsigned char)ch;
  fclose(f);
  return s;
}
`;
const mainC = `#include <stdio.h>
#include <string.h>
#include "sum.h"
int main(int argc, char **argv) {
  printf("hello from dunixfs, argc=%d\\n", argc);
  for (int i = 1; i < argc; i++) printf("%s %lu\\n", argv[i], sum_file(argv[i]));
  return 7;
}
`;

function hashLikeC(data: Buffer): bigint {
  let s = 0n;
  for (const b of data) s = (s * 31n + BigInt(b)) & 0xffff_ffff_ffff_ffffn;
  return s;
}

t.test('compile, link and run a C program on the mount', async (t) => {
  const c = await startCluster(t);
  const dir = c.path('proj');
  mkdirSync(join(dir, 'include'), { recursive: true });
  writeFileSync(join(dir, 'include', 'sum.h'), header);
  writeFileSync(join(dir, 'sum.c'), sumC);
  writeFileSync(join(dir, 'main.c'), mainC);
  const input = Buffer.alloc(200_000);
  for (let i = 0; i < input.length; i++) input[i] = (i * 7 + 3) & 0xff;
  writeFileSync(join(dir, 'input.bin'), input);

  ok('cc', ['-O2', '-Wall', '-Werror', '-Iinclude', '-c', 'sum.c', '-o', 'sum.o'], { cwd: dir });
  ok('ar', ['rcs', 'libsum.a', 'sum.o'], { cwd: dir });
  ok('cc', ['-O2', '-Wall', '-Werror', '-Iinclude', 'main.c', '-L.', '-lsum', '-o', 'hello'], { cwd: dir });
  const st = statSync(join(dir, 'hello'));
  t.ok(st.isFile() && (st.mode & 0o111) === 0o111, 'the executable has its x bits');
  t.ok(st.size > 1000, 'the executable has content');

  const r = run(join(dir, 'hello'), ['input.bin'], { cwd: dir });
  t.equal(r.status, 7, 'the program ran from the mount and exited with its code');
  t.equal(r.stdout, `hello from dunixfs, argc=2\ninput.bin ${hashLikeC(input)}\n`, 'its output');

  // Rebuild in place (the linker replaces a file that was just executed) and run again.
  writeFileSync(join(dir, 'main.c'), mainC.replace('return 7;', 'return 9;'));
  ok('cc', ['-O2', '-Iinclude', 'main.c', '-L.', '-lsum', '-o', 'hello'], { cwd: dir });
  t.equal(run(join(dir, 'hello'), [], { cwd: dir }).status, 9, 'the rebuilt program runs');
  t.match(ok('nm', ['libsum.a'], { cwd: dir }), /T sum_file/, 'the archive holds the symbol');
});
