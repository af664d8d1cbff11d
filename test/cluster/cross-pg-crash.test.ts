/**
 * Cross-PG intents under crashes. mkdir, rename across directories and rmdir
 * touch two PGs on two bricks; the brick coordinating the intent (the home
 * PG's primary) is started with DUNIX_FAULTS so it SIGKILLs itself after the
 * prepare, after the decision, or after the first participant committed. It
 * is restarted without the fault; after recovery every operation is either
 * complete or absent, never half: no orphan inode, no duplicate entry, a
 * renamed file under exactly one name, nlink of the parents right.
 */
import { lstatSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { callUnary } from '@dunix/proto';
import {
  newDirPg,
  pgOfIno,
  run,
  runAsync,
  startCluster,
  waitUntil,
  type BrickProc,
  type Cluster,
} from '../src/cluster.js';

const POINTS = ['tx-after-prepare', 'tx-after-decision', 'tx-after-first-commit'] as const;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const inoOf = (p: string) => lstatSync(p, { bigint: true }).ino;

/** Distinct inodes reachable from the mount's root (find prints st_ino). */
function reachableInodes(c: Cluster): number {
  const r = run('find', [c.mountpoint, '-printf', '%i\\n'], { timeoutMs: 60_000 });
  return new Set(r.stdout.split('\n').filter(Boolean)).size;
}

async function brickIndexOfPg(c: Cluster, pg: number): Promise<number> {
  return (await c.brickOfPg(pg)).index;
}

/** A name under `parent` whose new directory lands on a brick for which `want` holds. */
async function pickName(
  c: Cluster,
  parent: bigint,
  prefix: string,
  want: (brick: number) => boolean,
): Promise<string> {
  for (let j = 0; j < 10_000; j++) {
    const name = `${prefix}${j}`;
    if (want(await brickIndexOfPg(c, newDirPg(parent, name, c.pgs)))) return name;
  }
  throw new Error('no suitable name');
}

/**
 * Runs `cmd` with `coordinator` crashing at `point`; restarts it without the
 * fault and returns the command's result once it finished and recovery ran.
 */
async function crashDuring(t: Test, coordinator: BrickProc, point: string, cmd: string[]) {
  await coordinator.restart({ DUNIX_FAULTS: point });
  const op = runAsync(cmd[0]!, cmd.slice(1), { timeoutMs: 120_000 });
  const died = await Promise.race([coordinator.exited(), sleep(30_000).then(() => undefined)]);
  t.equal(died?.signal, 'SIGKILL', `brick${coordinator.index} crashed at ${point}`);
  await coordinator.restart({});
  const r = await op.done;
  t.comment(`${cmd.join(' ')} -> exit ${r.status} ${r.stderr.trim()}`);
  // A prepared intent older than 2 s asks its coordinator (presumed abort); the prepare was
  // before the restart, so a sweep or two (every second) resolve it.
  await sleep(2000);
  return r;
}

/** The number of inodes stored equals the number reachable: no orphan survived. */
async function noOrphans(t: Test, c: Cluster, what: string) {
  let stored = 0;
  let reachable = 0;
  await waitUntil(
    async () => {
      stored = (await c.counts()).inodes;
      reachable = reachableInodes(c);
      return stored === reachable;
    },
    'inode counts to settle',
    15_000,
    500,
  ).catch(() => {});
  t.equal(stored, reachable, `${what}: every stored inode is reachable (no orphan)`);
}

function noDuplicates(t: Test, dir: string): string[] {
  const names = readdirSync(dir);
  t.equal(new Set(names).size, names.length, `no duplicate names in ${dir}`);
  return names;
}

function exists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

t.test('cross-PG intents survive a coordinator crash at every point', async (t) => {
  // One copy per PG: the crashing brick must stay the coordinator's primary
  // across its restart, which a replicated PG would fail over elsewhere.
  // Failover in the middle of an intent is covered by test/cluster/failover.
  const c = await startCluster(t, { replicas: 1 });
  let k = 0;
  for (const point of POINTS) {
    await t.test(`mkdir, crash ${point}`, async (t) => {
      const caseDir = c.path(`mkdir-${k++}`);
      mkdirSync(caseDir);
      const parent = inoOf(caseDir);
      const coordinator = await c.brickOfPg(pgOfIno(parent));
      const name = await pickName(c, parent, 'd', (b) => b !== coordinator.index);
      const childPg = newDirPg(parent, name, c.pgs);
      t.not((await c.brickOfPg(childPg)).index, coordinator.index, 'the new directory is on another brick');
      const r = await crashDuring(t, coordinator, point, ['mkdir', join(caseDir, name)]);

      const names = noDuplicates(t, caseDir);
      const listed = names.includes(name);
      t.equal(exists(join(caseDir, name)), listed, 'lookup agrees with readdir');
      if (r.status === 0) t.ok(listed, 'mkdir succeeded, so the directory is there');
      t.equal(lstatSync(caseDir).nlink, listed ? 3 : 2, 'nlink of the parent');
      if (listed) {
        const st = lstatSync(join(caseDir, name), { bigint: true });
        t.ok(st.isDirectory(), 'a directory');
        t.equal(st.nlink, 2n, 'nlink 2');
        t.equal(pgOfIno(st.ino), childPg, 'its inode lives in PG hash(parent, name)');
        writeFileSync(join(caseDir, name, 'file'), 'usable');
        t.equal(readFileSync(join(caseDir, name, 'file'), 'utf8'), 'usable', 'usable: a file created in it');
        t.same(readdirSync(join(caseDir, name)), ['file']);
      }
      await noOrphans(t, c, `mkdir at ${point}`);
    });

    await t.test(`mkdir sent once (no client retry), crash ${point}`, async (t) => {
      const caseDir = c.path(`once-${k++}`);
      mkdirSync(caseDir);
      const parent = inoOf(caseDir);
      const pg = pgOfIno(parent);
      const coordinator = await c.brickOfPg(pg);
      const name = await pickName(c, parent, 'o', (b) => b !== coordinator.index);
      await coordinator.restart({ DUNIX_FAULTS: point });
      const epoch = (await c.placement())[pg]!.epoch;
      const sent = await callUnary(
        coordinator.client(),
        'Mkdir',
        {
          header: { pg, epoch: String(epoch), requestId: `once.${point}` },
          caller: { uid: 0, gid: 0, groups: [], pid: 1 },
          parent: parent.toString(),
          name: Buffer.from(name),
          mode: 0o755,
        },
        30_000,
      ).then(
        () => 'answered',
        (err: Error) => err.message,
      );
      t.comment(`Mkdir -> ${sent}`);
      const died = await Promise.race([coordinator.exited(), sleep(30_000).then(() => undefined)]);
      t.equal(died?.signal, 'SIGKILL', `brick${coordinator.index} crashed at ${point}`);
      await coordinator.restart({});
      await sleep(2000);
      // Before the decision the intent is rolled back; after it, recovery finishes it.
      const want = point !== 'tx-after-prepare';
      const listed = noDuplicates(t, caseDir).includes(name);
      t.equal(
        listed,
        want,
        want ? 'the decided mkdir is finished by recovery' : 'the undecided mkdir is rolled back',
      );
      t.equal(exists(join(caseDir, name)), listed, 'lookup agrees with readdir');
      t.equal(lstatSync(caseDir).nlink, listed ? 3 : 2, 'nlink of the parent');
      if (listed) {
        writeFileSync(join(caseDir, name, 'file'), 'usable');
        t.same(readdirSync(join(caseDir, name)), ['file'], 'the directory is usable');
      }
      await noOrphans(t, c, `single mkdir at ${point}`);
    });

    await t.test(`rename across directories, crash ${point}`, async (t) => {
      const caseDir = c.path(`rename-${k++}`);
      mkdirSync(caseDir);
      const parent = inoOf(caseDir);
      // A on some brick X (the coordinator: the source parent's PG), B elsewhere.
      const x = k % c.bricks.length;
      const a = await pickName(c, parent, 'a', (b) => b === x);
      const b = await pickName(c, parent, 'b', (b) => b !== x);
      mkdirSync(join(caseDir, a));
      mkdirSync(join(caseDir, b));
      const coordinator = await c.brickOfPg(pgOfIno(inoOf(join(caseDir, a))));
      t.equal(coordinator.index, x, 'the source directory is on the coordinator');
      t.not(
        (await c.brickOfPg(pgOfIno(inoOf(join(caseDir, b))))).index,
        x,
        'the target directory is elsewhere',
      );
      writeFileSync(join(caseDir, a, 'f'), 'the file that moves');
      const ino = inoOf(join(caseDir, a, 'f'));
      const r = await crashDuring(t, coordinator, point, [
        'mv',
        join(caseDir, a, 'f'),
        join(caseDir, b, 'g'),
      ]);

      const inA = noDuplicates(t, join(caseDir, a)).includes('f');
      const inB = noDuplicates(t, join(caseDir, b)).includes('g');
      t.equal(
        Number(inA) + Number(inB),
        1,
        `the file is under exactly one name (source ${inA}, target ${inB})`,
      );
      t.equal(exists(join(caseDir, a, 'f')), inA, 'lookup of the old name agrees with readdir');
      t.equal(exists(join(caseDir, b, 'g')), inB, 'lookup of the new name agrees with readdir');
      if (r.status === 0) t.ok(inB, 'mv succeeded, so the file is under the new name');
      const p = inB ? join(caseDir, b, 'g') : join(caseDir, a, 'f');
      if (inA || inB) {
        const st = lstatSync(p, { bigint: true });
        t.equal(st.ino, ino, 'the same inode');
        t.equal(st.nlink, 1n, 'nlink 1');
        t.equal(readFileSync(p, 'utf8'), 'the file that moves', 'content intact');
      }
      await noOrphans(t, c, `rename at ${point}`);
    });

    await t.test(`rmdir, crash ${point}`, async (t) => {
      const caseDir = c.path(`rmdir-${k++}`);
      mkdirSync(caseDir);
      const parent = inoOf(caseDir);
      const coordinator = await c.brickOfPg(pgOfIno(parent));
      const name = await pickName(c, parent, 'r', (b) => b !== coordinator.index);
      mkdirSync(join(caseDir, name));
      t.equal(lstatSync(caseDir).nlink, 3, 'parent nlink before');
      const r = await crashDuring(t, coordinator, point, ['rmdir', join(caseDir, name)]);

      const listed = noDuplicates(t, caseDir).includes(name);
      t.equal(exists(join(caseDir, name)), listed, 'lookup agrees with readdir');
      if (r.status === 0) t.notOk(listed, 'rmdir succeeded, so the directory is gone');
      t.equal(lstatSync(caseDir).nlink, listed ? 3 : 2, 'nlink of the parent');
      if (listed) {
        writeFileSync(join(caseDir, name, 'file'), 'still usable');
        t.equal(readFileSync(join(caseDir, name, 'file'), 'utf8'), 'still usable', 'the directory is usable');
      }
      await noOrphans(t, c, `rmdir at ${point}`);
    });
  }
});
