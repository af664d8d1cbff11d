import t from 'tap';
import { keys } from '../../src/store/keys.js';
import { decodeRecord, type OrphanRecord } from '../../src/store/records.js';
import { pgOfIno } from '@dunix/proto';
import { alice, b, bob, Fixture, ROOT, root } from './harness.js';

/** O_TMPFILE: an unnamed orphan with an owner, linkable once. */

t.test('tmpfile: nlink 0, an orphan owned by the mount, named once by link', async (t) => {
  const f = await Fixture.make();
  const d = await f.mkdir(ROOT, 'd', 0o777);
  const inode = await f.run((tx) => f.engine.tmpfile(tx, alice, d, 0o600, 'm-abc'));
  t.match(inode, { nlink: 0, uid: alice.uid, mode: 0o100600, linkable: true, inline: true });
  const marker = await f.kv.get(keys.orphan(pgOfIno(inode.ino), inode.ino));
  t.match(decodeRecord<OrphanRecord>(marker!), { owner: 'm-abc' }, 'the orphan marker names the owner');
  t.same(await f.names(d), [], 'no entry');

  const linked = await f.run((tx) => f.engine.link(tx, alice, inode.ino, d, b('named')));
  t.match(linked.inode, { nlink: 1 });
  t.notOk('linkable' in linked.inode, 'linkable only once');
  t.equal(await f.kv.get(keys.orphan(pgOfIno(inode.ino), inode.ino)), undefined, 'no longer an orphan');
  t.same(await f.names(d), ['named']);

  // Unlinked again: an ordinary orphan, not linkable.
  await f.run((tx) => f.engine.unlink(tx, alice, d, b('named')));
  t.equal(await f.code((tx) => f.engine.link(tx, alice, inode.ino, d, b('again'))), 'NOT_FOUND');
});

t.test('tmpfile: permission, type and owner checks; no owner: a plain orphan', async (t) => {
  const f = await Fixture.make();
  const d = await f.mkdir(ROOT, 'd', 0o755);
  t.equal(await f.code((tx) => f.engine.tmpfile(tx, bob, d, 0o600, 'm')), 'PERMISSION_DENIED');
  t.equal(await f.code((tx) => f.engine.tmpfile(tx, alice, d, 0o040755, 'm')), 'INVALID_ARGUMENT');
  t.equal(await f.code((tx) => f.engine.tmpfile(tx, alice, ROOT, 0o600, 'x'.repeat(65))), 'INVALID_ARGUMENT');
  const inode = await f.run((tx) => f.engine.tmpfile(tx, root, ROOT, 0o644, ''));
  t.same(
    await f.kv.get(keys.orphan(pgOfIno(inode.ino), inode.ino)),
    Buffer.alloc(0),
    'a plain orphan marker',
  );
  await f.run((tx) => f.engine.reclaim(tx, inode.ino));
  t.equal(await f.run((tx) => tx.getInode(inode.ino)), undefined, 'reclaimed like any orphan');
});
