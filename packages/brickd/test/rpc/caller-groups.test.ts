/** A caller's group list is bounded (limits.callerGroupsMax): one more is refused, not scanned at every check. */
import { FsError, limits } from '@dunix/proto';
import t from 'tap';
import { Brick } from '../../src/brick.js';

t.test('groups up to callerGroupsMax pass, one more is INVALID_ARGUMENT', async (t) => {
  const groups = Array.from({ length: limits.callerGroupsMax }, (_v, i) => i);
  t.equal(Brick.cred({ uid: 1, gid: 1, groups }).groups.length, limits.callerGroupsMax);
  let err: unknown;
  try {
    Brick.cred({ uid: 1, gid: 1, groups: [...groups, 1] });
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof FsError && err.code === 'INVALID_ARGUMENT', 'INVALID_ARGUMENT');
  t.match((err as Error).message, /65537 groups \(at most 65536\)/);
});
