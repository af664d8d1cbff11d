/**
 * Coherent caches, free of I/O: which op invalidates what (cache-rules),
 * the registration table and session queues with their bounds
 * (cache-table), and the primary's service over fake timers: a change is
 * answered once the other sessions acknowledged, a session that does not
 * acknowledge in time is dropped, other PGs' inodes are forwarded.
 */
import { createLogger } from '@dunix/proto';
import t from 'tap';
import { cacheEffects, InvalKind, type Inval } from '../../src/coherence/cache-rules.js';
import { CacheTable, CHANGES_REMEMBERED_MAX } from '../../src/coherence/cache-table.js';
import { CoherenceService, coherenceDefaults } from '../../src/coherence/coherence-service.js';

const PG = 2;
const ino = (pg: number, n: number) => (BigInt(pg) << 48n) | BigInt(n);
const DIR = ino(PG, 1);
const FILE = ino(PG, 2);
const OTHER_DIR = ino(5, 1);
const name = (s: string) => Buffer.from(s);
const kinds = (l: Inval[]) =>
  l.map((i) => `${i.kind}:${i.parent}/${i.name.toString()}:${i.ino}${i.data ? '+data' : ''}`);

t.test('rules: reads register what they return, also when they fail', async (t) => {
  t.same(cacheEffects('GetAttr', { ino: String(FILE) }, undefined).reads, [FILE]);
  t.same(
    cacheEffects('Lookup', { parent: String(DIR), name: name('a') }, undefined).reads,
    [DIR],
    'negative entry',
  );
  t.same(cacheEffects('Lookup', { parent: String(DIR) }, { entry: { attr: { ino: String(FILE) } } }).reads, [
    DIR,
    FILE,
  ]);
  t.same(
    cacheEffects(
      'ReadDir',
      { dir: String(DIR) },
      { entries: [{ attr: { ino: String(FILE) } }, { attr: null }] },
    ).reads,
    [DIR, FILE],
  );
  t.same(cacheEffects('GetAttr', { ino: 'garbage' }, undefined).reads, [0n], 'malformed is no inode');
  t.same(
    cacheEffects('SetAttr', { ino: String(FILE), setMode: true }, undefined).changes,
    [],
    'a failed change',
  );
});

t.test('rules: each change names what it made stale', async (t) => {
  const ch = (m: string, req: object, rep: object = {}) =>
    kinds(cacheEffects(m, req as never, rep as never).changes);
  t.same(ch('SetAttr', { ino: String(FILE), setMode: true }), [`0:0/:${FILE}`], 'chmod: attributes');
  t.same(ch('SetAttr', { ino: String(FILE), setSize: true }), [`0:0/:${FILE}+data`], 'truncate: pages too');
  t.same(ch('Extend', { ino: String(FILE) }), [`0:0/:${FILE}+data`], 'write + close');
  t.same(ch('WriteInline', { ino: String(FILE) }), [`0:0/:${FILE}+data`]);
  t.same(ch('Mkdir', { parent: String(DIR), name: name('d') }), [`1:${DIR}/d:0`, `0:0/:${DIR}`]);
  t.same(ch('Mknod', { parent: String(DIR), name: name('f') }), [`1:${DIR}/f:0`, `0:0/:${DIR}`]);
  t.same(ch('Unlink', { parent: String(DIR), name: name('f') }, { ino: String(FILE) }), [
    `2:${DIR}/f:${FILE}`,
    `0:0/:${DIR}`,
    `0:0/:${FILE}`,
  ]);
  t.same(ch('Rmdir', { parent: String(DIR), name: name('d') }), [`1:${DIR}/d:0`, `0:0/:${DIR}`]);
  t.same(
    ch(
      'Rename',
      { parent: String(DIR), name: name('a'), newParent: String(OTHER_DIR), newName: name('b') },
      { replacedIno: String(FILE) },
    ),
    [`1:${DIR}/a:0`, `1:${OTHER_DIR}/b:0`, `0:0/:${DIR}`, `0:0/:${OTHER_DIR}`, `0:0/:${FILE}`],
    'both sides, and the replaced inode',
  );
  t.same(ch('Link', { ino: String(FILE), newParent: String(DIR), newName: name('l') }), [
    `1:${DIR}/l:0`,
    `0:0/:${DIR}`,
    `0:0/:${FILE}`,
  ]);
  t.same(ch('ReadBlock', {}), [], 'reads change nothing');
});

function table(registrationsMax = 100, queuedPerSessionMax = 100) {
  let g = 0;
  return new CacheTable({ registrationsMax, queuedPerSessionMax }, () => `g${++g}`);
}
const attrs = (i: bigint): Inval => ({
  kind: InvalKind.INODE,
  ino: i,
  parent: 0n,
  name: Buffer.alloc(0),
  data: false,
});
const entry = (p: bigint, n: string): Inval => ({
  kind: InvalKind.ENTRY,
  ino: 0n,
  parent: p,
  name: name(n),
  data: false,
});

t.test('table: only registered sessions but the changer are sent, and acknowledge by polling', async (t) => {
  const c = table();
  c.register('A', DIR, 1000, 0);
  c.register('B', DIR, 1000, 0);
  c.register('C', FILE, 1000, 0);
  const ticket = c.push([entry(DIR, 'x'), attrs(DIR)], 'A', 10);
  t.same([...ticket.keys()], ['B'], 'A made it, C caches something else');
  t.notOk(c.done(ticket));
  const p = c.poll('B', '', 0, 100, 11);
  t.equal(p.reset, false, 'a first poll is no reset');
  t.same(
    p.items.map((i) => i.seq),
    [1, 2],
  );
  t.notOk(c.done(ticket), 'not acknowledged before the next poll');
  const p2 = c.poll('B', p.generation, 2, 100, 12);
  t.same(p2.items, []);
  t.ok(c.done(ticket));
  t.same(c.pending(ticket), []);
});

t.test('table: registrations expire with the TTL the session gave', async (t) => {
  const c = table();
  c.register('B', FILE, 100, 0);
  t.same(c.sessionsOf(FILE, '', 99), ['B']);
  t.same(c.sessionsOf(FILE, '', 100), [], 'expired: its kernel revalidates by itself');
  t.equal(c.registrations, 0);
  t.equal(c.push([attrs(FILE)], '', 200).size, 0, 'nothing sent');
});

t.test('table: bounded; the evicted session is sent FORGOTTEN', async (t) => {
  const c = table(2);
  c.register('B', ino(PG, 10), 1000, 0);
  c.register('B', ino(PG, 11), 1000, 0);
  t.equal(c.register('B', ino(PG, 11), 1000, 0), undefined, 'a refresh adds nothing');
  const ticket = c.register('C', ino(PG, 12), 1000, 0);
  t.equal(c.registrations, 2);
  t.same([...(ticket?.keys() ?? [])], ['B']);
  const p = c.poll('B', '', 0, 100, 1);
  t.same(
    p.items.map((i) => [i.inval.kind, i.inval.ino]),
    [[InvalKind.FORGOTTEN, ino(PG, 10)]],
  );
  t.equal(c.stats.evicted, 1);
});

t.test('table: a dropped session sees a reset and loses its registrations', async (t) => {
  const c = table();
  c.register('B', FILE, 1000, 0);
  const g = c.poll('B', '', 0, 100, 0).generation;
  const ticket = c.push([attrs(FILE)], '', 1);
  c.dropSession('B');
  t.ok(c.done(ticket), 'nothing waits for a dropped session');
  t.equal(c.registrations, 0);
  const p = c.poll('B', g, 1, 100, 2);
  t.equal(p.reset, true);
  t.not(p.generation, g);
  t.same(p.items, [], 'the lost invalidation is covered by the reset');
});

t.test('table: a session too far behind is dropped, not queued for without end', async (t) => {
  const c = table(100, 2);
  c.register('B', FILE, 1000, 0);
  const g = c.poll('B', '', 0, 100, 0).generation;
  t.equal(c.push([attrs(FILE), attrs(FILE)], '', 1).size, 1);
  t.equal(c.push([attrs(FILE)], '', 2).size, 0, 'over the bound: dropped');
  t.equal(c.poll('B', g, 0, 100, 3).reset, true);
});

t.test('table: a poll returns at most `max` and acknowledges by sequence', async (t) => {
  const c = table();
  c.register('B', FILE, 1000, 0);
  const g = c.poll('B', '', 0, 100, 0).generation;
  const ticket = c.push([attrs(FILE), attrs(FILE), attrs(FILE)], '', 1);
  const p = c.poll('B', g, 0, 2, 2);
  t.same(
    p.items.map((i) => i.seq),
    [1, 2],
  );
  t.same(
    c.poll('B', g, 2, 2, 3).items.map((i) => i.seq),
    [3],
  );
  t.notOk(c.done(ticket));
  c.poll('B', g, 3, 2, 4);
  t.ok(c.done(ticket));
  t.same(c.poll('B', g, 99, 2, 5).items, [], 'an ack past the end acknowledges what exists');
});

function fakeTimers() {
  let now = 0;
  const due: { at: number; fn: () => void; id: number }[] = [];
  let next = 0;
  return {
    nowMs: () => now,
    set: (fn: () => void, ms: number) => {
      const id = ++next;
      due.push({ at: now + ms, fn, id });
      return id;
    },
    clear: (h: unknown) => {
      const i = due.findIndex((d) => d.id === h);
      if (i >= 0) due.splice(i, 1);
    },
    advance(ms: number) {
      now += ms;
      for (;;) {
        due.sort((a, b) => a.at - b.at);
        const d = due[0];
        if (!d || d.at > now) break;
        due.shift();
        d.fn();
      }
    },
  };
}

function service(leads?: (pg: number) => boolean) {
  const timers = fakeTimers();
  const forwarded: { pg: number; invals: Inval[]; session: string }[] = [];
  let g = 0;
  const s = new CoherenceService({
    knobs: { ...coherenceDefaults, invalAckTimeoutMs: 1000 },
    timers,
    log: createLogger('test', () => {}),
    newGeneration: () => `g${++g}`,
    ...(leads ? { leads } : {}),
    forward: async (pg, invals, session) => {
      forwarded.push({ pg, invals, session });
    },
  });
  const header = (session: string) => ({
    pg: PG,
    session,
    cacheTtlMs: 60_000,
    epoch: '1',
    requestId: '',
    attempt: 0,
  });
  const tick = () => new Promise((r) => setImmediate(r));
  return { s, timers, forwarded, header, tick };
}

t.test('service: a change is answered after the caching session acknowledged', async (t) => {
  const { s, header, tick } = service();
  t.teardown(() => s.stop());
  await s.around('GetAttr', { header: header('B'), ino: String(FILE) }, async () => ({
    attr: { ino: String(FILE) },
  }));
  const first = await s.poll('B', '', 0, 0);
  let answered = false;
  const change = s
    .around('SetAttr', { header: header('A'), ino: String(FILE), setMode: true }, async () => ({}))
    .then(() => (answered = true));
  await tick();
  t.notOk(answered, 'waits for B');
  const pushed = await s.poll('B', first.generation, 0, 5000);
  t.same(
    pushed.items.map((i) => i.inval.ino),
    [FILE],
  );
  await tick();
  t.notOk(answered, 'received is not acknowledged');
  const next = s.poll('B', first.generation, pushed.items.at(-1)!.seq, 5000);
  await change;
  t.ok(answered, 'acknowledged: answered');
  s.stop();
  await next;
});

t.test('service: the changer itself is not waited for', async (t) => {
  const { s, header } = service();
  t.teardown(() => s.stop());
  await s.around('GetAttr', { header: header('A'), ino: String(FILE) }, async () => ({}));
  await s.around('SetAttr', { header: header('A'), ino: String(FILE), setMode: true }, async () => ({}));
  t.pass('answered at once');
});

t.test('service: a session that does not acknowledge in time is dropped and sees a reset', async (t) => {
  const { s, header, timers, tick } = service();
  t.teardown(() => s.stop());
  await s.around('GetAttr', { header: header('B'), ino: String(FILE) }, async () => ({}));
  const g = (await s.poll('B', '', 0, 0)).generation;
  const parked = s.poll('B', g, 0, 20_000);
  let answered = false;
  const change = s
    .around('SetAttr', { header: header('A'), ino: String(FILE), setMode: true }, async () => ({}))
    .then(() => (answered = true));
  await parked; // B got it, and never acknowledges
  timers.advance(999);
  await tick();
  t.notOk(answered);
  timers.advance(1);
  await change;
  t.ok(answered, 'bounded wait');
  const p = await s.poll('B', g, 1, 0);
  t.equal(p.reset, true, 'B learns its registrations are gone');
  t.equal(s.stats.dropped, 1);
});

t.test('service: a session silent for longer than the ack timeout is not waited for', async (t) => {
  const { s, header, timers } = service();
  t.teardown(() => s.stop());
  await s.around('GetAttr', { header: header('B'), ino: String(FILE) }, async () => ({}));
  await s.poll('B', '', 0, 0);
  timers.advance(5000); // B was killed: no poll parked, none for 5 s
  await s.around('SetAttr', { header: header('A'), ino: String(FILE), setMode: true }, async () => ({}));
  t.pass('answered without waiting');
});

t.test('service: inodes of other PGs are forwarded to their primary', async (t) => {
  const { s, header, forwarded } = service();
  t.teardown(() => s.stop());
  await s.around(
    'Rename',
    {
      header: header('A'),
      parent: String(DIR),
      name: name('a'),
      newParent: String(OTHER_DIR),
      newName: name('b'),
    },
    async () => ({ replacedIno: '0' }),
  );
  t.equal(forwarded.length, 1);
  t.equal(forwarded[0]!.pg, 5);
  t.equal(forwarded[0]!.session, 'A');
  t.same(kinds(forwarded[0]!.invals), [`1:${OTHER_DIR}/b:0`, `0:0/:${OTHER_DIR}`]);
});

t.test('service: a read of another PG registers nothing here; no TTL registers nothing', async (t) => {
  const { s, header } = service();
  t.teardown(() => s.stop());
  await s.around('GetAttr', { header: header('B'), ino: String(OTHER_DIR) }, async () => ({}));
  await s.around(
    'GetAttr',
    { header: { ...header('B'), cacheTtlMs: 0 }, ino: String(FILE) },
    async () => ({}),
  );
  t.equal(s.stats.registrations, 0);
});

t.test('service: a child changed while a read ran is answered without its attributes', async (t) => {
  const { s, header, tick } = service();
  t.teardown(() => s.stop());
  const FILE2 = ino(PG, 3);
  const attr = (i: bigint) => ({ ino: String(i), mode: 0o100644 });
  // A Lookup whose read took its snapshot before A's chmod, and returns after A's change was pushed
  // (to nobody: B registers the file only once its read has run).
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const lookup = s.around(
    'Lookup',
    { header: header('B'), parent: String(DIR), name: name('f') },
    async () => {
      await gate;
      return { entry: { name: name('f'), ino: String(FILE), attr: attr(FILE) } };
    },
  );
  await tick();
  await s.around('SetAttr', { header: header('A'), ino: String(FILE), setMode: true }, async () => ({}));
  release();
  const r = (await lookup) as { entry: { ino: string; attr: unknown } };
  t.equal(r.entry.ino, String(FILE), 'the entry is answered');
  t.equal(r.entry.attr, null, 'its attributes, possibly older than the change, are not');
  t.equal(s.stats.staleAttrsDropped, 1);

  // A listing: only the entry changed meanwhile loses its attributes; without a change, all stay.
  let release2!: () => void;
  const gate2 = new Promise<void>((r) => (release2 = r));
  const listing = s.around('ReadDir', { header: header('B'), dir: String(DIR), plus: true }, async () => {
    await gate2;
    return {
      entries: [
        { name: name('f'), ino: String(FILE), attr: attr(FILE) },
        { name: name('g'), ino: String(FILE2), attr: attr(FILE2) },
      ],
    };
  });
  await tick();
  await s.around('SetAttr', { header: header('A'), ino: String(FILE2), setMode: true }, async () => ({}));
  release2();
  const l = (await listing) as { entries: { attr: unknown }[] };
  t.same(l.entries[0]!.attr, attr(FILE), 'an entry not changed since the read began keeps them');
  t.equal(l.entries[1]!.attr, null, 'the changed one does not');
  const again = (await s.around(
    'Lookup',
    { header: header('B'), parent: String(DIR), name: name('g') },
    async () => ({
      entry: { name: name('g'), ino: String(FILE2), attr: attr(FILE2) },
    }),
  )) as { entry: { attr: unknown } };
  t.same(again.entry.attr, attr(FILE2), 'a read begun after the change answers them');
});

t.test('table: a read across more changes than are remembered sees every inode as changed', async (t) => {
  const c = new CacheTable({ registrationsMax: 16, queuedPerSessionMax: 16 }, () => 'g');
  const before = c.changeCount;
  t.notOk(c.changedSince(FILE, before));
  c.push([{ kind: InvalKind.INODE, ino: FILE, parent: 0n, name: name(''), data: false }], 'A', 0);
  t.ok(c.changedSince(FILE, before), 'changed');
  t.notOk(c.changedSince(DIR, before), 'another inode: not');
  t.notOk(c.changedSince(FILE, c.changeCount), 'not since the change');
  c.push([{ kind: InvalKind.ENTRY, ino: 0n, parent: DIR, name: name('x'), data: false }], 'A', 0);
  t.notOk(c.changedSince(DIR, before), "a name's change is not a change of the directory's attributes");
  const mid = c.changeCount;
  for (let i = 0; i < CHANGES_REMEMBERED_MAX + 1; i++)
    c.push(
      [{ kind: InvalKind.INODE, ino: ino(PG, 100 + i), parent: 0n, name: name(''), data: false }],
      'A',
      0,
    );
  t.ok(c.changedSince(DIR, mid), 'past the bound: taken as changed');
  t.notOk(c.changedSince(DIR, c.changeCount), 'a read begun now: not');
});

t.test(
  'service: a child of another PG this brick leads is registered; of one it does not, not',
  async (t) => {
    const { s, header } = service((pg) => pg === PG || pg === 5);
    t.teardown(() => s.stop());
    const led = ino(5, 9);
    const notLed = ino(6, 9);
    await s.around('Lookup', { header: header('B'), parent: String(DIR), name: name('d') }, async () => ({
      entry: { name: name('d'), ino: String(led), attr: { ino: String(led) } },
    }));
    t.equal(s.stats.registrations, 2, 'the directory and the subdirectory of PG 5');
    await s.around('Lookup', { header: header('B'), parent: String(DIR), name: name('e') }, async () => ({
      entry: { name: name('e'), ino: String(notLed), attr: { ino: String(notLed) } },
    }));
    t.equal(s.stats.registrations, 2, 'PG 6 is not led here');
  },
);
