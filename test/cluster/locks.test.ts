/**
 * Cluster-wide locks on real mounts: two clients of one volume (replicas 3,
 * sessions with a 2 s TTL). flock and fcntl (and OFD) locks taken on one
 * mount exclude the other; F_SETLKW waits and is woken when the holder
 * unlocks; Ctrl-C of a waiting flock returns at once; a two-session
 * deadlock gets EDEADLK; a SIGKILLed client's locks go once its session
 * expires; a lock survives a SIGKILL of its PG's primary; sqlite3 in
 * rollback-journal mode on both mounts keeps one consistent database.
 * Prints the uncontended acquire latency and the handoff latency between
 * mounts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { statSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { coordinatorDefaults } from '@dunix/coord';
import { pgOfIno, run, startCluster, waitUntil, type Cluster } from '../src/cluster.js';

const tool = fileURLToPath(new URL('../../cluster/lock-tool.py', import.meta.url));
const TTL_MS = 2000;
const lockTool = (...args: (string | number)[]) => run('python3', [tool, ...args.map(String)]).stdout.trim();

/** Processes this test started, each in its own process group (killed by PID at teardown, whatever happened). */
const started = new Set<ChildProcess>();
const killGroup = (p: ChildProcess, signal: NodeJS.Signals) => {
  try {
    process.kill(-p.pid!, signal);
  } catch {
    // already gone
  }
};
t.teardown(() => {
  for (const p of started) killGroup(p, 'SIGKILL');
});

/** A process whose stdout lines are awaited one by one. */
function proc(cmd: string, args: string[]) {
  // Its own process group: a signal reaches what it started too (flock -c runs a shell).
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  started.add(child);
  const lines: string[] = [];
  let waiter: (() => void) | undefined;
  let buf = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    for (let i; (i = buf.indexOf('\n')) >= 0; buf = buf.slice(i + 1)) lines.push(buf.slice(0, i));
    waiter?.();
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
    child.once('exit', (code, signal) => {
      started.delete(child);
      waiter?.();
      res({ code, signal });
    }),
  );
  return {
    child,
    exit,
    kill: (signal: NodeJS.Signals) => killGroup(child, signal),
    get stderr() {
      return stderr;
    },
    /** The next line (waits up to ms); undefined if the process ended or time ran out. */
    async line(ms = 30_000): Promise<string | undefined> {
      const end = Date.now() + ms;
      while (lines.length === 0) {
        if (child.exitCode !== null || child.signalCode !== null) return undefined;
        const left = end - Date.now();
        if (left <= 0) return undefined;
        await new Promise<void>((r) => {
          const timer = setTimeout(r, left);
          waiter = () => {
            clearTimeout(timer);
            r();
          };
        });
      }
      return lines.shift();
    },
    /** Whether a line is already there (without waiting). */
    pending: () => lines.length > 0,
    send: (s: string) => child.stdin!.write(`${s}\n`),
    end: () => child.stdin!.end(),
  };
}

const hold = (path: string, type: string, start: number, len: number, ...flags: string[]) =>
  proc('python3', [tool, 'hold', path, type, String(start), String(len), ...flags]);
const secs = (line: string | undefined) => Number(line?.split(' ')[1]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('cluster-wide locks on two mounts', async (t) => {
  const c = await startCluster(t, { pgs: 16, replicas: 3, mountOptions: `session_ttl_ms=${TTL_MS}` });
  try {
    await lockTests(t, c);
  } finally {
    // Before the cluster's teardown unmounts: nothing of ours keeps a file open on a mount.
    for (const p of started) killGroup(p, 'SIGKILL');
  }
});

async function lockTests(t: Test, c: Cluster): Promise<void> {
  const b = await c.mountAnother(`session_ttl_ms=${TTL_MS}`);
  const A = (...p: string[]) => c.path(...p);
  const B = (...p: string[]) => b.path(...p);
  run('mkdir', [A('d')]);
  writeFileSync(A('d', 'f'), 'x'.repeat(1000));
  writeFileSync(A('d', 'g'), '');

  await t.test('flock -x on one mount excludes the other', async (t) => {
    const holder = proc('flock', ['-x', A('d', 'f'), '-c', 'echo held; read x']);
    t.equal(await holder.line(), 'held');
    t.equal(run('flock', ['-n', '-x', B('d', 'f'), 'true']).status, 1, 'the other mount: busy');
    t.equal(run('flock', ['-n', '-s', B('d', 'f'), 'true']).status, 1, 'a shared lock too');
    t.equal(
      run('flock', ['-n', '-x', A('d', 'f'), 'true']).status,
      1,
      'another process on the same mount too',
    );
    t.equal(run('flock', ['-n', '-x', B('d', 'g'), 'true']).status, 0, 'another file is free');
    holder.end();
    await holder.exit;
    t.equal(run('flock', ['-n', '-x', B('d', 'f'), 'true']).status, 0, 'free once the holder exits');
    const s1 = proc('flock', ['-s', A('d', 'f'), '-c', 'echo held; read x']);
    t.equal(await s1.line(), 'held');
    t.equal(run('flock', ['-n', '-s', B('d', 'f'), 'true']).status, 0, 'shared locks on both mounts');
    s1.end();
    await s1.exit;
  });

  await t.test('fcntl F_SETLK ranges, F_GETLK, OFD locks', async (t) => {
    const h = hold(A('d', 'f'), 'w', 0, 100);
    t.match(await h.line(), /^locked /);
    t.equal(lockTool('try', B('d', 'f'), 'w', 50, 10), 'EAGAIN', 'an overlapping write lock: EAGAIN');
    t.equal(lockTool('try', B('d', 'f'), 'r', 99, 1), 'EAGAIN', 'a read lock on its last byte too');
    t.equal(lockTool('try', B('d', 'f'), 'w', 100, 100), 'ok', 'past the range: granted');
    t.equal(
      lockTool('getlk', B('d', 'f'), 'r', 10, 5),
      'w 0 100 0',
      'GETLK from the other mount: the range, pid 0',
    );
    t.match(
      lockTool('getlk', A('d', 'f'), 'r', 10, 5),
      new RegExp(`^w 0 100 ${h.child.pid}$`),
      'same mount: the pid',
    );
    t.equal(
      lockTool('try', B('d', 'f'), 'w', 0, 1, 'ofd'),
      'EAGAIN',
      'an OFD lock on the other mount: EAGAIN',
    );
    h.end();
    await h.exit;
    t.equal(lockTool('getlk', B('d', 'f'), 'w', 0, 0), 'unlck', 'released at close');
    const o = hold(B('d', 'f'), 'w', 0, 10, 'ofd');
    t.match(await o.line(), /^locked /);
    t.equal(lockTool('try', A('d', 'f'), 'r', 5, 1), 'EAGAIN', 'an OFD lock excludes the other mount');
    o.end();
    await o.exit;
    t.equal(lockTool('try', A('d', 'f'), 'w', 0, 0), 'ok', 'an OFD lock goes with its file');
  });

  let handoffMs: number[] = [];
  await t.test('F_SETLKW waits on the other mount and is woken in order', async (t) => {
    handoffMs = [];
    for (let i = 0; i < 5; i++) {
      const h = hold(A('d', 'f'), 'w', 0, 0);
      t.match(await h.line(), /^locked /);
      const w = hold(B('d', 'f'), 'w', 0, 0, 'wait');
      t.match(await w.line(), /^waiting /);
      await sleep(300);
      t.notOk(w.pending(), 'the waiter waits');
      h.send('unlock');
      const unlocking = secs(await h.line());
      t.match(await h.line(), /^unlocked /);
      const got = await w.line();
      t.match(got, /^locked /, 'woken');
      handoffMs.push((secs(got) - unlocking) * 1000);
      h.end();
      w.end();
      await Promise.all([h.exit, w.exit]);
    }
    // Two waiters: the first to ask is the first served.
    const h = hold(A('d', 'g'), 'w', 0, 0);
    t.match(await h.line(), /^locked /);
    const w1 = hold(B('d', 'g'), 'w', 0, 0, 'wait');
    t.match(await w1.line(), /^waiting /);
    await sleep(300);
    const w2 = hold(A('d', 'g'), 'w', 0, 0, 'wait');
    t.match(await w2.line(), /^waiting /);
    await sleep(300);
    h.send('unlock');
    t.match(await w1.line(), /^locked /, 'the first waiter got it');
    t.notOk(w2.pending(), 'the second still waits');
    w1.end();
    t.match(await w2.line(), /^locked /, 'then the second');
    h.end();
    w2.end();
    await Promise.all([h.exit, w1.exit, w2.exit]);
    handoffMs.sort((x, y) => x - y);
    t.comment(
      `handoff between mounts (unlock on A -> lock on B), ms: ${handoffMs.map((x) => x.toFixed(1)).join(' ')}`,
    );
  });

  await t.test('a two-session deadlock gets EDEADLK', async (t) => {
    const a = hold(A('d', 'g'), 'w', 0, 1);
    const bb = hold(B('d', 'g'), 'w', 1, 1);
    t.match(await a.line(), /^locked /);
    t.match(await bb.line(), /^locked /);
    bb.send('lock w 0 1'); // waits for a
    await sleep(300);
    a.send('lock w 1 1'); // would wait for b, which waits for a
    t.match(await a.line(), /^error EDEADL(K|OCK)$/, 'EDEADLK');
    a.end();
    t.match(await bb.line(), /^locked /, 'b gets it once a closes');
    bb.end();
    await Promise.all([a.exit, bb.exit]);
  });

  await t.test('Ctrl-C of a waiting flock returns at once', async (t) => {
    const holder = proc('flock', ['-x', A('d', 'f'), '-c', 'echo held; read x']);
    t.equal(await holder.line(), 'held');
    const waiter = proc('flock', ['-x', B('d', 'f'), '-c', 'echo got']);
    await sleep(700);
    t.equal(waiter.child.exitCode, null, 'waiting');
    const t0 = performance.now();
    waiter.kill('SIGINT'); // as Ctrl-C: to the process group
    const r = await Promise.race([waiter.exit, sleep(5000).then(() => undefined)]);
    const ms = performance.now() - t0;
    t.ok(r, `the waiter ended (${ms.toFixed(0)} ms after SIGINT)`);
    // Generous: a wait that ignored the interrupt would last until the holder unlocks (never, here).
    t.ok(ms < 3000, 'promptly');
    t.comment(`SIGINT of a waiting flock: exited after ${ms.toFixed(0)} ms`);
    holder.end();
    await holder.exit;
    t.equal(
      run('flock', ['-n', '-x', B('d', 'f'), 'true']).status,
      0,
      'no lock left behind by the interrupted wait',
    );
  });

  await t.test('uncontended acquire latency', async (t) => {
    const [acquire, release] = lockTool('bench', A('d', 'g'), '200').split(' ').map(Number);
    t.ok(acquire! > 0 && release! > 0, 'measured');
    t.comment(`uncontended on one mount (200 each): F_SETLK(w) ${acquire} us, F_UNLCK ${release} us`);
  });

  await t.test('a SIGKILLed client releases its locks when its session expires (default TTL)', async (t) => {
    // The default session TTL, as a user gets it: the target is a dead machine's locks free within 10 s.
    const ttlMs = coordinatorDefaults.mountLeaseTtlMs;
    const k = await c.mountAnother(`session_ttl_ms=${ttlMs}`);
    const holder = proc('flock', ['-x', k.path('d', 'f'), '-c', 'echo held; sleep 600']);
    t.equal(await holder.line(), 'held');
    t.equal(run('flock', ['-n', '-x', B('d', 'f'), 'true']).status, 1, 'held');
    const t0 = performance.now();
    await k.kill('SIGKILL');
    const r = run('flock', ['-w', '30', '-x', B('d', 'f'), 'true'], { timeoutMs: 40_000 });
    const ms = performance.now() - t0;
    t.equal(r.status, 0, 'the other mount got it');
    t.ok(ms < ttlMs + 8000, `within the TTL and the check interval (${ms.toFixed(0)} ms, TTL ${ttlMs} ms)`);
    t.comment(`lock of a SIGKILLed client free after ${ms.toFixed(0)} ms (session TTL ${ttlMs} ms)`);
    holder.kill('SIGKILL');
    await holder.exit;
    await k.unmount();
  });

  await t.test('a lock survives a SIGKILL of its PG primary', async (t) => {
    const ino = BigInt(statSync(A('d', 'g'), { bigint: true }).ino);
    const primary = await c.brickOfPg(pgOfIno(ino));
    const h = hold(A('d', 'g'), 'w', 0, 0);
    t.match(await h.line(), /^locked /);
    // A waiter from before the failover: its call fails over and waits at the new primary.
    const early = hold(B('d', 'g'), 'w', 0, 0, 'wait');
    t.match(await early.line(), /^waiting /);
    await sleep(300);
    await primary.kill('SIGKILL');
    await waitUntil(
      async () => (await c.brickOfPg(pgOfIno(ino))).id !== primary.id,
      'another primary for the lock PG',
      30_000,
    );
    t.equal(lockTool('try', B('d', 'g'), 'w', 0, 0), 'EAGAIN', 'still locked after the failover');
    t.equal(lockTool('getlk', B('d', 'g'), 'r', 0, 0), 'w 0 0 0', 'the new primary reports it');
    const w = hold(A('d', 'g'), 'w', 0, 0, 'wait');
    t.match(await w.line(), /^waiting /);
    await sleep(300);
    t.notOk(early.pending() || w.pending(), 'both waiters wait at the new primary');
    h.send('unlock');
    await waitUntil(() => early.pending() || w.pending(), 'a waiter woken by the unlock', 30_000);
    await sleep(200);
    const [got, other] = early.pending() ? [early, w] : [w, early];
    t.notOk(other.pending(), 'one waiter has it, the other still waits');
    t.match(await got.line(), /^locked /);
    got.end();
    t.match(await other.line(), /^locked /, 'then the other');
    other.end();
    h.end();
    await Promise.all([h.exit, early.exit, w.exit]);
    await primary.restart();
  });

  await t.test('sqlite3 in rollback-journal mode on two mounts', async (t) => {
    const db = 'd/test.db';
    const setup = run('sqlite3', [A(db), 'PRAGMA journal_mode=DELETE; CREATE TABLE t(who TEXT, n INTEGER);']);
    t.equal(setup.status, 0, setup.stderr);
    const rows = 40;
    const writer = (path: string, who: string) => {
      const sql = ['.timeout 60000', 'PRAGMA journal_mode=DELETE;'];
      for (let i = 0; i < rows; i++) sql.push(`INSERT INTO t VALUES('${who}', ${i});`);
      const p = spawn('sqlite3', [path], { stdio: ['pipe', 'ignore', 'pipe'], detached: true });
      started.add(p);
      let err = '';
      p.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
      p.stdin.end(`${sql.join('\n')}\n`);
      return new Promise<{ code: number | null; err: string }>((res) =>
        p.once('exit', (code) => {
          started.delete(p);
          res({ code, err });
        }),
      );
    };
    const t0 = performance.now();
    const [ra, rb] = await Promise.all([writer(A(db), 'a'), writer(B(db), 'b')]);
    t.comment(
      `sqlite: ${2 * rows} single-row transactions from two mounts in ${(performance.now() - t0).toFixed(0)} ms`,
    );
    t.equal(ra.code, 0, ra.err);
    t.equal(rb.code, 0, rb.err);
    for (const path of [A(db), B(db)]) {
      t.equal(
        run('sqlite3', [path, 'PRAGMA integrity_check;']).stdout.trim(),
        'ok',
        `integrity_check on ${path}`,
      );
      t.equal(
        run('sqlite3', [path, "SELECT count(*), count(DISTINCT who || '/' || n) FROM t;"]).stdout.trim(),
        `${2 * rows}|${2 * rows}`,
        'every row, once',
      );
    }
  });

  await b.unmount();
}
