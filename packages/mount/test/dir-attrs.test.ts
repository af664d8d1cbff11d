import type { wire } from '@dunix/proto';
import t from 'tap';
import { DirAttrs } from '../src/client/dir-attrs.js';

const attr = (ino: bigint, nlink: number) => ({ ino: ino.toString(), nlink }) as unknown as wire.Attr__Output;

t.test("a directory's attributes from our change, while the registration lives", async (t) => {
  const clock = { ms: 1000 };
  const d = new DirAttrs(() => clock.ms, 2);
  t.equal(d.get(5n), undefined);
  d.set(5n, attr(5n, 3), 1000, 500);
  t.equal(d.get(5n)?.nlink, 3);
  clock.ms = 1500;
  t.equal(d.get(5n), undefined, 'expired with the registration');
  d.set(5n, attr(5n, 4), 1500, 0);
  t.equal(d.get(5n), undefined, 'no session (ttl 0): nothing kept');
  d.set(5n, attr(6n, 4), 1500, 500);
  t.equal(d.get(5n), undefined, "another inode's attributes are not taken");
  d.set(5n, attr(5n, 4), 1500, 500);
  d.set(5n, null, 1500, 500);
  t.equal(d.get(5n), undefined, 'an answer without attributes forgets the old ones');
  d.set(5n, attr(5n, 4), 1500, 500);
  d.forget(5n);
  t.equal(d.get(5n), undefined, 'a push forgets');
  for (const i of [1n, 2n, 3n]) d.set(i, attr(i, 2), 1500, 500);
  t.equal(d.size, 2, 'bounded');
  t.equal(d.get(1n), undefined, 'the oldest went');
  d.forgetWhere((i) => i === 2n);
  t.equal(d.get(2n), undefined);
  t.equal(d.get(3n)?.nlink, 2);
  d.clear();
  t.equal(d.size, 0);
  t.equal(d.answered, 2);
});
