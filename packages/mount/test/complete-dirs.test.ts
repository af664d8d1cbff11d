import t from 'tap';
import { CompleteDirs } from '../src/client/complete-dirs.js';

const n = (s: string) => Buffer.from(s);

function fixture(o = { dirsMax: 8, namesMax: 100 }) {
  const clock = { ms: 1000 };
  return { clock, dirs: new CompleteDirs(() => clock.ms, o) };
}

t.test('a whole listing makes a directory complete for the registration time', async (t) => {
  const { clock, dirs } = fixture();
  t.notOk(dirs.absent(5n, n('x')), 'nothing is known before a listing');
  dirs.startReading(5n);
  dirs.finishReading(5n, [n('a'), n('b')], 1000, 500);
  t.ok(dirs.absent(5n, n('x')), 'a name not listed is absent');
  t.notOk(dirs.absent(5n, n('a')), 'a listed name is asked for');
  t.notOk(dirs.absent(6n, n('x')), 'other directories are not known');
  clock.ms = 1499;
  t.ok(dirs.absent(5n, n('x')), 'still within the registration');
  dirs.registered(5n, 1400, 500);
  clock.ms = 1800;
  t.ok(dirs.absent(5n, n('x')), 'a later registering call extends it');
  clock.ms = 1900;
  t.notOk(dirs.absent(5n, n('x')), 'past the registration: ask the bricks');
  t.equal(dirs.size, 0, 'and forgotten');
  dirs.registered(5n, 1900, 500);
  t.notOk(dirs.absent(5n, n('x')), 'a registration does not bring an expired listing back');
  t.equal(dirs.answered, 3);
});

t.test("this client's own changes keep the names; a push or a failure forgets the directory", async (t) => {
  const { dirs } = fixture();
  dirs.startReading(5n);
  dirs.finishReading(5n, [], 1000, 500);
  dirs.changed(5n, n('new'), true);
  t.notOk(dirs.absent(5n, n('new')), 'a name we made is there');
  dirs.changed(5n, n('new'), false);
  t.ok(dirs.absent(5n, n('new')), 'a name we removed is gone');
  dirs.changed(7n, n('x'), true);
  t.notOk(dirs.absent(7n, n('y')), 'a change in an unknown directory makes nothing known');
  dirs.forget(5n);
  t.notOk(dirs.absent(5n, n('new')), 'a push about the directory: ask again');
});

t.test('changes of ours during the listing are applied on top; a push during it spoils it', async (t) => {
  const { dirs } = fixture();
  dirs.startReading(5n);
  dirs.changed(5n, n('made'), true);
  dirs.changed(5n, n('gone'), false);
  // The snapshot may have been taken before either change.
  dirs.finishReading(5n, [n('gone'), n('old')], 1000, 500);
  t.notOk(dirs.absent(5n, n('made')), 'made while reading: present');
  t.ok(dirs.absent(5n, n('gone')), 'removed while reading: absent');
  t.notOk(dirs.absent(5n, n('old')));

  dirs.startReading(6n);
  dirs.forget(6n);
  dirs.finishReading(6n, [], 1000, 500);
  t.notOk(dirs.absent(6n, n('x')), 'another session changed it while we read: not complete');

  dirs.startReading(8n);
  dirs.forgetWhere((d) => d === 8n);
  dirs.finishReading(8n, [], 1000, 500);
  t.notOk(dirs.absent(8n, n('x')), 'registrations lost while we read: not complete');

  dirs.startReading(9n);
  dirs.finishReading(9n, null, 1000, 500);
  t.notOk(dirs.absent(9n, n('x')), 'a listing that failed or did not reach the end: not complete');
  t.notOk(dirs.absent(10n, n('x')), 'a listing never started: not complete');
  dirs.finishReading(10n, [], 1000, 500);
  t.notOk(dirs.absent(10n, n('x')), 'a finish without a start makes nothing complete');
});

t.test('lost registrations forget the directories of those PGs', async (t) => {
  const { dirs } = fixture();
  for (const d of [1n, 2n, 3n]) {
    dirs.startReading(d);
    dirs.finishReading(d, [], 1000, 500);
  }
  dirs.forgetWhere((d) => d !== 2n);
  t.notOk(dirs.absent(1n, n('x')));
  t.ok(dirs.absent(2n, n('x')));
  t.notOk(dirs.absent(3n, n('x')));
});

t.test('bounded: directories and names', async (t) => {
  const { dirs } = fixture({ dirsMax: 2, namesMax: 5 });
  for (const d of [1n, 2n, 3n]) {
    dirs.startReading(d);
    dirs.finishReading(d, [n('a')], 1000, 500);
  }
  t.equal(dirs.size, 2, 'the least recently used directory went');
  t.notOk(dirs.absent(1n, n('x')));
  for (const name of ['b', 'c', 'd', 'e']) dirs.changed(3n, n(name), true);
  t.ok(dirs.size <= 2);
  t.notOk(dirs.absent(2n, n('x')), 'past the names budget the older directory went');
  t.ok(dirs.absent(3n, n('x')), 'the one in use stays');
  dirs.startReading(4n);
  dirs.finishReading(4n, [n('1'), n('2'), n('3'), n('4'), n('5'), n('6')], 1000, 500);
  t.notOk(dirs.absent(4n, n('x')), 'a listing bigger than the budget is not kept');
});
