/**
 * Model test of holes: random sequences of write, truncate, fallocate (mode
 * 0, KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE with and without KEEP_SIZE) and
 * SEEK_DATA / SEEK_HOLE on a file of the mount and on a local ext4 file in
 * a temp dir, compared after every op: size and bytes equal, SEEK_DATA never
 * skips data, SEEK_HOLE lands on a zero byte inside the file, st_blocks
 * covers every 4 KiB page holding data. Runs on a replica-3 volume (every
 * block change is replicated); seeds settable by DUNIX_HOLES_SEEDS=a..b.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { run, startCluster } from '../src/cluster.js';

const tool = fileURLToPath(new URL('../../cluster/falloc-tool.py', import.meta.url));
const [first, last] = (process.env.DUNIX_HOLES_SEEDS ?? '1..4').split('..').map(Number) as [number, number];
const OPS = Number(process.env.DUNIX_HOLES_OPS ?? 40);

t.test('random write/truncate/fallocate/punch/seek sequences equal a local ext4 file', async (t) => {
  const c = await startCluster(t, { pgs: 16, replicas: 3 });
  const local = mkdtempSync(join(tmpdir(), 'dunix-holes-'));
  t.teardown(() => rmSync(local, { recursive: true, force: true }));
  for (let seed = first; seed <= last; seed++) {
    const r = run(
      'python3',
      [tool, 'model', String(seed), String(OPS), c.path(`m${seed}`), join(local, `m${seed}`)],
      {
        timeoutMs: 300_000,
      },
    );
    const line = r.stdout.trim().split('\n').pop() ?? '';
    t.equal(r.status, 0, `seed ${seed}: ${line || r.stderr.slice(-2000)}`);
    if (r.status === 0) t.comment(line);
  }
});
