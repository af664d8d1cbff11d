/**
 * Fixed-layout little-endian C structs, declared once as field lists and
 * used both ways (decode and encode). The FUSE protocol is host-endian; every
 * platform we run on is little-endian, which `assertLittleEndian` checks.
 */
import { endianness } from 'node:os';

export type FieldType = 'u16' | 'u32' | 'i32' | 'u64' | 'i64' | 'pad16' | 'pad32';
type FieldValue<T extends FieldType> = T extends 'u64' | 'i64' ? bigint : number;
type Fields = Record<string, FieldType>;
type PadKeys<F extends Fields> = { [K in keyof F]: F[K] extends 'pad16' | 'pad32' ? K : never }[keyof F];
export type StructValue<F extends Fields> = { [K in Exclude<keyof F, PadKeys<F>>]: FieldValue<F[K]> };

const width: Record<FieldType, number> = { u16: 2, u32: 4, i32: 4, u64: 8, i64: 8, pad16: 2, pad32: 4 };

export interface Struct<F extends Fields> {
  readonly name: string;
  readonly size: number;
  readonly fields: F;
  decode(buf: Buffer, offset: number): StructValue<F>;
  /** Writes the struct at offset; absent fields and padding are zero. Returns the end offset. */
  encode(value: Partial<StructValue<F>>, buf: Buffer, offset: number): number;
  /** A fresh buffer holding just this struct. */
  build(value: Partial<StructValue<F>>): Buffer;
}

export function assertLittleEndian(): void {
  if (endianness() !== 'LE') throw new Error('FUSE codec supports little-endian hosts only');
}

/**
 * Declares a struct. Its decoder and encoder are generated once as straight-line
 * code (one read or write per field at a constant offset): they run for every
 * request and reply, and a generic loop over the fields costs several times more.
 */
export function struct<F extends Fields>(name: string, fields: F): Struct<F> {
  const layout: { key: string; type: FieldType; at: number }[] = [];
  let size = 0;
  for (const [key, type] of Object.entries(fields)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new Error(`${name}: bad field name ${key}`);
    layout.push({ key, type, at: size });
    size += width[type];
  }
  const reads: string[] = [];
  const writes: string[] = [];
  for (const f of layout) {
    const at = `o + ${f.at}`;
    switch (f.type) {
      case 'u16':
        reads.push(`${f.key}: b.readUInt16LE(${at})`);
        writes.push(`b.writeUInt16LE(v.${f.key} ?? 0, ${at});`);
        break;
      case 'u32':
        reads.push(`${f.key}: b.readUInt32LE(${at})`);
        writes.push(`b.writeUInt32LE(v.${f.key} ?? 0, ${at});`);
        break;
      case 'i32':
        reads.push(`${f.key}: b.readInt32LE(${at})`);
        writes.push(`b.writeInt32LE(v.${f.key} ?? 0, ${at});`);
        break;
      case 'u64':
        reads.push(`${f.key}: b.readBigUInt64LE(${at})`);
        writes.push(`b.writeBigUInt64LE(BigInt.asUintN(64, v.${f.key} ?? 0n), ${at});`);
        break;
      case 'i64':
        reads.push(`${f.key}: b.readBigInt64LE(${at})`);
        writes.push(`b.writeBigInt64LE(BigInt.asIntN(64, v.${f.key} ?? 0n), ${at});`);
        break;
      case 'pad16':
        writes.push(`b.writeUInt16LE(0, ${at});`);
        break;
      case 'pad32':
        writes.push(`b.writeUInt32LE(0, ${at});`);
        break;
    }
  }
  const tooShort = (buf: Buffer, offset: number) =>
    new RangeError(`${name}: need ${size} bytes at ${offset}, have ${buf.length - offset}`);
  const decodeAt = new Function('b', 'o', `return { ${reads.join(', ')} };`) as (
    b: Buffer,
    o: number,
  ) => StructValue<F>;
  const encodeAt = new Function('v', 'b', 'o', `${writes.join('\n')}\nreturn o + ${size};`) as (
    v: Partial<StructValue<F>>,
    b: Buffer,
    o: number,
  ) => number;
  return {
    name,
    size,
    fields,
    decode(buf, offset) {
      if (offset < 0 || offset + size > buf.length) throw tooShort(buf, offset);
      return decodeAt(buf, offset);
    },
    encode(value, buf, offset) {
      if (offset < 0 || offset + size > buf.length) throw tooShort(buf, offset);
      return encodeAt(value, buf, offset);
    },
    build(value) {
      const b = Buffer.allocUnsafe(size);
      encodeAt(value, b, 0);
      return b;
    },
  };
}
