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

export function struct<F extends Fields>(name: string, fields: F): Struct<F> {
  const layout: { key: string; type: FieldType; at: number }[] = [];
  let size = 0;
  for (const [key, type] of Object.entries(fields)) {
    layout.push({ key, type, at: size });
    size += width[type];
  }
  return {
    name,
    size,
    fields,
    decode(buf, offset) {
      if (offset + size > buf.length) {
        throw new RangeError(`${name}: need ${size} bytes at ${offset}, have ${buf.length - offset}`);
      }
      const out: Record<string, number | bigint> = {};
      for (const f of layout) {
        const at = offset + f.at;
        switch (f.type) {
          case 'u16':
            out[f.key] = buf.readUInt16LE(at);
            break;
          case 'u32':
            out[f.key] = buf.readUInt32LE(at);
            break;
          case 'i32':
            out[f.key] = buf.readInt32LE(at);
            break;
          case 'u64':
            out[f.key] = buf.readBigUInt64LE(at);
            break;
          case 'i64':
            out[f.key] = buf.readBigInt64LE(at);
            break;
          default:
            break;
        }
      }
      return out as StructValue<F>;
    },
    encode(value, buf, offset) {
      const v = value as Record<string, number | bigint | undefined>;
      for (const f of layout) {
        const at = offset + f.at;
        const x = v[f.key];
        switch (f.type) {
          case 'u16':
            buf.writeUInt16LE((x as number | undefined) ?? 0, at);
            break;
          case 'u32':
            buf.writeUInt32LE((x as number | undefined) ?? 0, at);
            break;
          case 'i32':
            buf.writeInt32LE((x as number | undefined) ?? 0, at);
            break;
          case 'u64':
            buf.writeBigUInt64LE(BigInt.asUintN(64, (x as bigint | undefined) ?? 0n), at);
            break;
          case 'i64':
            buf.writeBigInt64LE(BigInt.asIntN(64, (x as bigint | undefined) ?? 0n), at);
            break;
          case 'pad16':
            buf.writeUInt16LE(0, at);
            break;
          case 'pad32':
            buf.writeUInt32LE(0, at);
            break;
        }
      }
      return offset + size;
    },
    build(value) {
      const b = Buffer.allocUnsafe(size);
      this.encode(value, b, 0);
      return b;
    },
  };
}
