import type { wire } from '@dunix/proto';
import t from 'tap';
import { DirListings, dirListingsDefaults, validateDirListingsOptions } from '../src/client/dir-listings.js';

const n = (s: string) => Buffer.from(s);
const attr = (ino: bigint, mode = 0o100644) =>
  ({ ino: ino.toString(), mode }) as unknown as wire.Attr__Output;
const DIR = 5n;

function fixture(o = { ...dirListingsDefaults, lookupsBeforeRead: 3, entriesMax: 10, heldMax: 6 }) {
  const clock = { ms: 1000 };
  return { clock, l: new DirListings(() => clock.ms, o) };
}

/** Reads DIR whole with entries a (ino 10), b (11), c (12) sent at 1000, valid for `ttlMs`. */
function listed(l: DirListings, ttlMs = 500, dir = DIR, base = 10n) {
  l.startReading(dir);
  l.finishReading(
    dir,
    ['a', 'b', 'c'].map((s, i) => ({ name: n(s), attr: attr(base + BigInt(i)), sentAtMs: 1000 })),
    ttlMs,
  );
}

t.test('the third lookup of a directory starts a whole read, once', async (t) => {
  const { l } = fixture();
  t.notOk(l.lookupFound(DIR));
  t.notOk(l.lookupFound(DIR));
  t.ok(l.lookupFound(DIR), 'the third');
  l.startReading(DIR);
  t.notOk(l.lookupFound(DIR), 'not while it is read');
  l.finishReading(DIR, null, 500);
  t.notOk(l.lookupFound(DIR));
  t.notOk(l.lookupFound(DIR));
  t.ok(l.lookupFound(DIR), 'a failed read: counted again');
  t.notOk(l.lookupFound(6n), 'each directory counts its own');
});

t.test('entries are handed out once, within the registration time', async (t) => {
  const { clock, l } = fixture();
  t.equal(l.take(DIR, n('a')), undefined, 'nothing before a read');
  listed(l);
  t.same(l.take(DIR, n('a')), attr(10n));
  t.equal(l.take(DIR, n('a')), undefined, 'once: the kernel caches it from then');
  t.equal(l.take(DIR, n('x')), undefined, 'a name not listed');
  t.equal(l.take(6n, n('b')), undefined, 'another directory');
  t.notOk(l.lookupFound(DIR), 'no new read while the listing lasts');
  clock.ms = 1500;
  t.equal(l.take(DIR, n('b')), undefined, 'past the registration: ask the bricks');
  t.equal(l.answered, 1);
  t.notOk(l.lookupFound(DIR), 'an expired listing counts lookups again');
});

t.test('pushes and our own changes drop what they name, also during a read', async (t) => {
  const { l } = fixture();
  listed(l);
  l.forgetInodes([11n]);
  t.equal(l.take(DIR, n('a')), undefined, 'a changed entry drops its whole directory');
  listed(l);
  l.forgetDir(DIR);
  t.equal(l.take(DIR, n('c')), undefined, "a change of the directory's names drops it");
  listed(l);
  l.forgetInodes([DIR]);
  t.equal(l.take(DIR, n('c')), undefined, "a change of the directory's attributes too");

  // A change while the read ran: of an entry, that entry is left out; of the directory, all.
  l.startReading(DIR);
  l.forgetInodes([11n]);
  l.finishReading(
    DIR,
    ['a', 'b'].map((s, i) => ({ name: n(s), attr: attr(10n + BigInt(i)), sentAtMs: 1000 })),
    500,
  );
  t.same(l.take(DIR, n('a')), attr(10n));
  t.equal(l.take(DIR, n('b')), undefined, 'the entry changed during the read');
  l.startReading(DIR);
  l.forgetDir(DIR);
  l.finishReading(DIR, [{ name: n('a'), attr: attr(10n), sentAtMs: 1000 }], 500);
  t.equal(l.take(DIR, n('a')), undefined, 'the directory changed during the read');

  listed(l);
  listed(l, 500, 7n, 20n);
  l.forgetWhere((ino) => ino === 21n);
  t.equal(l.take(7n, n('a')), undefined, 'a lost registration of an entry');
  t.same(l.take(DIR, n('a')), attr(10n), 'other listings stay');
  l.startReading(9n);
  l.forgetWhere((ino) => ino === 31n);
  l.finishReading(9n, [{ name: n('a'), attr: attr(31n), sentAtMs: 1000 }], 500);
  t.equal(l.take(9n, n('a')), undefined, 'a read in flight when registrations were lost is not kept');
});

t.test('bounded: entries without attributes, big directories, held entries', async (t) => {
  const { clock, l } = fixture();
  l.startReading(DIR);
  l.finishReading(
    DIR,
    [
      { name: n('a'), attr: null, sentAtMs: 1000 },
      { name: n('b'), attr: attr(11n), sentAtMs: 1000 },
    ],
    500,
  );
  t.equal(l.take(DIR, n('a')), undefined, 'no attributes: asked');
  t.same(l.take(DIR, n('b')), attr(11n));
  l.startReading(8n);
  l.finishReading(8n, null, 500, true);
  for (let i = 0; i < 5; i++) t.notOk(l.lookupFound(8n), 'a directory too big is not read whole again');
  l.forgetDir(8n);
  for (let i = 0; i < 5; i++) t.notOk(l.lookupFound(8n), 'not even once it changed');
  clock.ms += dirListingsDefaults.backoffMs;
  l.lookupFound(8n);
  l.lookupFound(8n);
  t.ok(l.lookupFound(8n), '...until the back-off is over');
  clock.ms = 1000;
  listed(l, 500, 1n, 10n);
  listed(l, 500, 2n, 20n);
  t.same(l.size, { listings: 2, entries: 6 });
  listed(l, 500, 3n, 30n);
  t.same(l.size, { listings: 2, entries: 6 }, 'the oldest listing went');
  t.equal(l.take(1n, n('a')), undefined);
  t.same(l.take(3n, n('a')), attr(30n));
  t.equal(l.entriesMax, 10);
  t.throws(
    () => validateDirListingsOptions({ ...dirListingsDefaults, lookupsBeforeRead: 0 }),
    /lookupsBeforeRead/,
  );
});
