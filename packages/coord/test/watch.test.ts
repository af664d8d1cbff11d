/**
 * `dunixctl watch`, its pure parts: which dunixfs mount holds a path (and
 * its volume), and which pushed invalidations concern the watched inode,
 * as lines and as JSON.
 */
import t from 'tap';
import { eventOf, formatEvent, volumeOfPath, type WatchTarget } from '../src/cli/watch.js';

const mountinfo = [
  '22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw',
  '90 22 0:50 / /mnt/x rw,nosuid,nodev shared:60 - fuse.dunixfs 127.0.0.1:2379/vol1 rw,user_id=0',
  '91 90 0:51 / /mnt/x/inner rw shared:61 - fuse.dunixfs 10.0.0.1:2379,10.0.0.2:2379/vol2 rw',
  '92 22 0:52 / /mnt/with\\040space rw shared:62 - fuse.dunixfs 127.0.0.1:2379/vol3 rw',
  '93 22 0:53 / /mnt/other rw shared:63 - fuse.sshfs host:/ rw',
].join('\n');

t.test('the mount holding a path, longest mount point first', async (t) => {
  t.equal(volumeOfPath('/mnt/x', mountinfo), 'vol1');
  t.equal(volumeOfPath('/mnt/x/d/f', mountinfo), 'vol1');
  t.equal(volumeOfPath('/mnt/x/inner/d', mountinfo), 'vol2');
  t.equal(volumeOfPath('/mnt/xy', mountinfo), undefined, 'a prefix of a name is not inside');
  t.equal(volumeOfPath('/mnt/with space/a', mountinfo), 'vol3', 'escaped mount points');
  t.equal(volumeOfPath('/mnt/other/a', mountinfo), undefined, 'not dunixfs');
});

const target: WatchTarget = { path: '/mnt/x/d', volume: 'vol1', ino: '42', type: 'directory' };
const inval = (kind: number, ino: bigint, parent = 0n, name = '', data = false) => ({
  kind,
  ino,
  parent,
  name: Buffer.from(name),
  data,
});

t.test('events of the watched inode only', async (t) => {
  const at = Date.UTC(2026, 11, 7, 6, 30);
  t.same(eventOf(target, inval(0, 42n), at), {
    time: '2026-12-07T06:30:00.000Z',
    event: 'attrs',
    path: '/mnt/x/d',
  });
  t.equal(eventOf(target, inval(0, 42n, 0n, '', true), at)?.event, 'data');
  t.same(eventOf(target, inval(1, 0n, 42n, 'a'), at), {
    time: '2026-12-07T06:30:00.000Z',
    event: 'entry',
    path: '/mnt/x/d/a',
    name: 'a',
  });
  t.equal(eventOf(target, inval(2, 7n, 42n, 'a'), at)?.event, 'delete');
  t.equal(eventOf(target, inval(3, 42n), at)?.event, 'reset', 'a registration evicted');
  t.equal(eventOf(target, inval(0, 43n), at), undefined, 'another inode');
  t.equal(eventOf(target, inval(1, 0n, 43n, 'a'), at), undefined, 'another directory');
});

t.test('one line per event, or one JSON object', async (t) => {
  const e = { time: '2026-12-07T06:30:00.000Z', event: 'delete' as const, path: '/mnt/x/d/a', name: 'a' };
  t.equal(formatEvent(e, false), '2026-12-07T06:30:00.000Z delete /mnt/x/d/a\n');
  t.same(JSON.parse(formatEvent(e, true)), e);
});
