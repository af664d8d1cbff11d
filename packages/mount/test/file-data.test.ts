/**
 * FileData's write error reporting against a fake BrickApi: a block write
 * that fails is reported to every handle once (at its next write, flush or
 * fsync), never swallowed by a read or by another handle, so an fsync never
 * returns success over bytes no brick took; reads go on meanwhile.
 */
import { FsError, initHashing, type wire } from '@dunix/proto';
import t from 'tap';
import type { BrickApi } from '../src/client/brick-api.js';
import { FileData } from '../src/client/file-data.js';

await initHashing();

const INO = (3n << 48n) | 7n;
const BLOCK = 1024 * 1024;

function attr(size: bigint): wire.Attr__Output {
  return {
    ino: INO.toString(),
    mode: 0o100644,
    nlink: 1,
    uid: 0,
    gid: 0,
    size: size.toString(),
    atimeNs: '0',
    mtimeNs: '0',
    ctimeNs: '0',
    rdev: null,
    dataVersion: '1',
    inline: false,
    blocks: '0',
    parent: '0',
    noXattrs: false,
  };
}

/** Block writes fail while `failing`, Extend while `extendFailing`; ReadBlock returns zeros. */
function fakeApi() {
  const state = { failing: false, extendFailing: false, blockWrites: 0, extends: [] as bigint[] };
  const api = {
    pgCount: 16,
    config: { blockSizeBytes: BLOCK, inlineMaxBytes: 4096 },
    changed: () => {},
    read: async (_pg: number, method: string, body: { length?: number }) => {
      if (method === 'WriteBlock') {
        if (state.failing) throw new FsError('NOT_ENOUGH_REPLICAS', 'read-only PG');
        state.blockWrites++;
        return {};
      }
      if (method === 'ReadBlock') return { data: Buffer.alloc(body.length ?? 0) };
      throw new Error(`unexpected ${method}`);
    },
    mutate: async (_pg: number, method: string, body: { end?: string }) => {
      if (method !== 'Extend') throw new Error(`unexpected ${method}`);
      if (state.extendFailing) throw new FsError('NOT_ENOUGH_REPLICAS', 'read-only PG');
      state.extends.push(BigInt(body.end!));
      return { attr: attr(BigInt(body.end!)) };
    },
  };
  return { api: api as unknown as BrickApi, state };
}

const caller: wire.Caller = { uid: 0, gid: 0, groups: [], pid: 1 };

t.test('a read goes on and leaves a failed block write to the writer', async (t) => {
  const { api, state } = fakeApi();
  const f = new FileData(INO, api, 3, attr(8192n), undefined);
  const writer = f.newMark();
  state.failing = true;
  await f.write(8192n, Buffer.alloc(4096, 1), false, caller, writer);
  // A read (another handle's, or the kernel's readahead) publishes first, and the block write fails.
  const got = await f.read(0n, 4096);
  t.equal(got.length, 4096, 'the read goes on');
  await t.rejects(f.flush(writer), { code: 'NOT_ENOUGH_REPLICAS' }, "the writer's fsync reports the failure");
  await f.flush(writer);
  t.pass('once');
});

t.test('every handle open at a failed block write hears of it once', async (t) => {
  const { api, state } = fakeApi();
  const f = new FileData(INO, api, 3, attr(8192n), undefined);
  const writer = f.newMark();
  const other = f.newMark();
  state.failing = true;
  await f.write(8192n, Buffer.alloc(4096, 1), false, caller, writer);
  await t.rejects(f.flush(other), { code: 'NOT_ENOUGH_REPLICAS' }, 'another handle hears of it');
  await t.rejects(f.flush(writer), { code: 'NOT_ENOUGH_REPLICAS' }, 'and the writer still does');
  await t.rejects(f.flush(f.syncfsMark), { code: 'NOT_ENOUGH_REPLICAS' }, 'and syncfs');
  const later = f.newMark();
  state.failing = false;
  await f.write(16384n, Buffer.alloc(100, 2), false, caller, later);
  await f.flush(later);
  t.equal(state.blockWrites, 1, 'a handle opened after the failure writes on without hearing of it');
  t.same(state.extends.slice(-1), [16484n], 'and publishes the size');
});

t.test("a reader's close leaves publishing failures to the writer", async (t) => {
  const { api, state } = fakeApi();
  const f = new FileData(INO, api, 3, attr(8192n), undefined);
  const writer = f.newMark();
  state.extendFailing = true;
  await f.write(8192n, Buffer.alloc(4096, 1), false, caller, writer);
  await f.publishForReader();
  t.pass("a read-only handle's close does not fail");
  await t.rejects(f.flush(writer), { code: 'NOT_ENOUGH_REPLICAS' }, "the writer's fsync does");
  state.extendFailing = false;
  await f.flush(writer);
  t.same(state.extends, [12288n], 'and publishes once the PG takes writes again');
});
