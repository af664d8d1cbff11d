/**
 * SIGKILL during writes: a writer process creates files one after another,
 * each written, fsync'd and closed, and logs each name (off the mount) only
 * once fsync returned. Bricks are killed with SIGKILL in the middle (first
 * the primary of the directory's PG, then another one once the first is
 * back in every in-sync set) and restarted. With three copies the writer
 * goes on while a brick is down and sees no error. Every logged file must
 * then read back exactly, through a fresh mount (not the kernel's page
 * cache).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { pgOfIno, runAsync, startCluster, waitUntil } from '../src/cluster.js';
import { lstatSync, mkdirSync } from 'node:fs';

/** Upper bound of files; the test stops the writer (stop file) once both kills are done. */
const FILES = 5000;
const SIZES = [10, 3000, 9000, 150_000];

/** The writer, run as its own process: argv = dir, log, errlog, count, stop file; prints files tried. */
const writerJs = `
const fs = require('node:fs');
const [dir, log, errlog, count, stop] = process.argv.slice(2);
function content(i, size) {
  const b = Buffer.alloc(size);
  for (let k = 0; k < size; k++) b[k] = (i * 131 + k * 7 + (k >> 8)) & 0xff;
  return b;
}
const sizes = ${JSON.stringify(SIZES)};
let tried = 0;
for (let i = 0; i < Number(count) && !fs.existsSync(stop); i++) {
  tried++;
  const name = 'f' + i;
  try {
    const fd = fs.openSync(dir + '/' + name, 'w', 0o644);
    const data = content(i, sizes[i % sizes.length]);
    let off = 0;
    while (off < data.length) off += fs.writeSync(fd, data, off, Math.min(65536, data.length - off), off);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.appendFileSync(log, name + '\\n');
  } catch (err) {
    fs.appendFileSync(errlog, name + ' ' + err.code + '\\n');
  }
}
process.stdout.write(String(tried));
`;

function content(i: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let k = 0; k < size; k++) b[k] = (i * 131 + k * 7 + (k >> 8)) & 0xff;
  return b;
}

const lines = (p: string) => (existsSync(p) ? readFileSync(p, 'utf8').split('\n').filter(Boolean) : []);

t.test('SIGKILL a brick while a writer fsyncs files', async (t) => {
  const c = await startCluster(t);
  const dir = c.path('w');
  mkdirSync(dir);
  const dirPg = pgOfIno(lstatSync(dir, { bigint: true }).ino);
  const metaBrick = await c.brickOfPg(dirPg);
  const otherBrick = c.bricks.find((b) => b !== metaBrick)!;
  const script = join(c.base, 'writer.cjs');
  const log = join(c.base, 'fsynced.log');
  const errlog = join(c.base, 'errors.log');
  writeFileSync(script, writerJs);

  const stopFile = join(c.base, 'stop');
  const writer = runAsync(process.execPath, [script, dir, log, errlog, String(FILES), stopFile], {
    timeoutMs: 400_000,
  });
  const killAt = async (b: typeof metaBrick, after: number, what: string) => {
    await waitUntil(
      () => lines(log).length >= after || writer.child.exitCode !== null,
      `${after} files`,
      200_000,
      20,
    );
    const at = lines(log).length;
    await b.kill('SIGKILL');
    t.comment(`killed brick${b.index} (${what}) after ${at} fsync'd files`);
    await new Promise((r) => setTimeout(r, 2000));
    const during = lines(log).length;
    await b.restart();
    return { at, during };
  };
  /** Every PG has all its copies in sync again. */
  const fullyInSync = () =>
    waitUntil(
      async () => (await c.placement()).every((a) => a.isr.length === a.bricks.length),
      'every PG back to three in-sync copies',
      60_000,
      100,
    );
  const first = await killAt(metaBrick, 30, 'the directory PG');
  t.ok(first.at < FILES, 'the first kill happened while the writer was writing');
  t.ok(first.during > first.at, 'files completed while the primary of the directory PG was down');
  const back = Date.now();
  await fullyInSync();
  t.comment(`full redundancy ${Date.now() - back} ms after the restart`);
  const second = await killAt(otherBrick, lines(log).length + 10, 'another brick');
  t.ok(second.at < FILES, 'the second kill happened while the writer was writing');
  // A few more files after the second restart, then the writer stops.
  const more = lines(log).length + 10;
  await waitUntil(
    () => lines(log).length >= more || writer.child.exitCode !== null,
    'more files',
    60_000,
    20,
  );
  writeFileSync(stopFile, '');

  const w = await writer.done;
  t.equal(w.status, 0, `the writer finished ${w.stderr.slice(0, 500)}`);
  const logged = lines(log);
  const failed = lines(errlog);
  t.same(failed, [], 'no write failed: the client waited for the bricks');
  t.equal(new Set(logged).size, logged.length, 'no name logged twice');
  for (const f of failed) t.notOk(logged.includes(f.split(' ')[0]!), `${f} failed and is not logged`);
  t.equal(
    logged.length + failed.length,
    Number(w.stdout.trim()),
    "every file tried was either fsync'd or failed",
  );

  // Read back through a fresh mount: the bricks, not the kernel's page cache.
  await c.unmount();
  await c.mount();
  const bad: string[] = [];
  for (const name of logged) {
    const i = Number(name.slice(1));
    const want = content(i, SIZES[i % SIZES.length]!);
    let got: Buffer;
    try {
      got = readFileSync(join(dir, name));
    } catch (err) {
      bad.push(`${name}: ${(err as Error).message}`);
      continue;
    }
    if (!got.equals(want)) bad.push(`${name}: ${got.length} bytes, want ${want.length}, content differs`);
  }
  t.same(bad.slice(0, 20), [], `every fsync'd file reads back exactly (${logged.length} files)`);
});
