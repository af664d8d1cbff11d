import { MOUNT_ID_RE, volumeConfig, type VolumeSnapshot } from '@dunix/coord';
import { hostname } from 'node:os';
import t from 'tap';
import { CLIENT_VERSION, mountInfo, newMountId, volumeGone } from '../src/client/mount-record.js';

t.test('the mount record: id, host, pid, mount point, start, version', async (t) => {
  const id = newMountId();
  t.match(id, /^m-[0-9a-f]{12}$/);
  t.not(newMountId(), id, 'fresh per mount');
  t.match(newMountId('client:web-1'), /^web-1~m-[0-9a-f]{12}$/, "a client certificate's name goes first");
  t.match(newMountId('admin:ops'), /^m-[0-9a-f]{12}$/, 'other etcd users name nothing');
  t.ok(MOUNT_ID_RE.test(newMountId('client:web-1')), 'the coordinator takes it');
  for (const bad of ['~m-1', 'a~b~c', 'a/b~m-1', 'web-1~'])
    t.notOk(MOUNT_ID_RE.test(bad), `not a mount id: ${bad}`);
  t.equal(CLIENT_VERSION, '0.1.0', "the mount package's version");
  t.same(mountInfo(id, '/mnt/x', 123), {
    id,
    host: hostname(),
    pid: process.pid,
    mountPoint: '/mnt/x',
    startedAtMs: 123,
    version: CLIENT_VERSION,
  });
});

t.test('the volume mounted is gone when its config goes or another incarnation replaces it', async (t) => {
  const mounted = volumeConfig('v', { createdAtMs: 1000 });
  const snap = (config: VolumeSnapshot['config']): VolumeSnapshot => ({
    config,
    placement: [],
    bricks: [],
    rebalance: null,
  });
  t.equal(volumeGone(mounted, snap(mounted)), undefined);
  t.equal(
    volumeGone(mounted, snap({ ...mounted, minInsync: 1 })),
    undefined,
    'a changed option is the same volume',
  );
  t.equal(volumeGone(mounted, snap(null)), 'deleted');
  t.equal(volumeGone(mounted, snap({ ...mounted, createdAtMs: 2000 })), 're-created');
});
