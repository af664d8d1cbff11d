/**
 * Store records: JSON with 64-bit integers as decimal strings. The encoder
 * and decoder convert bigints without replacer or reviver functions; they
 * must give exactly what the reviver form gave, at any depth.
 */
import t from 'tap';
import { decodeRecord, encodeRecord, type InodeRecord } from '../../src/store/records.js';

const BIG = new Set(['ino', 'size', 'atimeNs', 'sinceNs', 'oldSize', 'from', 'to', 'cookie']);
/** The form the store used before: replacer and reviver functions. */
const encodeBefore = (rec: object) =>
  Buffer.from(JSON.stringify(rec, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)));
const decodeBefore = (buf: Buffer): unknown =>
  JSON.parse(buf.toString(), (k, v: unknown) => (BIG.has(k) && typeof v === 'string' ? BigInt(v) : v));

t.test('round trip of nested records, as the reviver form did', async (t) => {
  const inode = {
    ino: 123456789012345678n,
    mode: 0o100644,
    nlink: 1,
    size: 2n ** 63n - 1n,
    atimeNs: 1765150000123456789n,
    acl: [
      { tag: 2, perm: 6, id: 1000 },
      { tag: 4, perm: 4, id: -1 },
    ],
    listener: { owner: 'm-1', sinceNs: 42n, value: 'aGk=' },
    xattrs: 0,
  };
  const trim = { size: 0n, oldSize: 5n * 1024n * 1024n };
  const ranges = { ranges: [{ from: 1n, to: 2n }], note: 'size' };
  for (const rec of [inode, trim, ranges]) {
    const buf = encodeRecord(rec);
    t.same(buf, encodeBefore(rec), 'same bytes as the replacer form');
    t.same(decodeRecord(buf), decodeBefore(buf), 'same value as the reviver form');
    t.same(decodeRecord(buf), rec, 'round trip');
  }
  // A string that is not under a big field stays a string; a number under one stays a number.
  const odd = decodeRecord<{ name: string; size: number; ino: bigint }>(
    Buffer.from('{"name":"123","size":7,"ino":"9"}'),
  );
  t.same(odd, { name: '123', size: 7, ino: 9n });
  // A view into a larger buffer decodes its own bytes only.
  const big = Buffer.concat([Buffer.from('xx'), encodeRecord(trim), Buffer.from('yy')]);
  const view = new Uint8Array(big.buffer, big.byteOffset + 2, big.length - 4);
  t.same(decodeRecord(view), trim);
  const typed: InodeRecord = decodeRecord(encodeRecord(inode));
  t.equal(typeof typed.ino, 'bigint');
});
