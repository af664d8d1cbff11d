import protobuf from 'protobufjs';
import { fileURLToPath } from 'node:url';
import type { LogEntry, LogEntry__Output } from './gen/dunix/v1/LogEntry.js';

/**
 * Binary codec of a PG log entry as stored in a brick's log: the same
 * `LogEntry` message the bricks exchange in Replicate, so an entry is
 * encoded once by its primary's schema and read back by any version that
 * knows the message. Options match proto-loader's (64-bit integers as
 * decimal strings, defaults filled in, enums as names).
 */
const protoPath = fileURLToPath(new URL('../../proto/brick.proto', import.meta.url));

let logEntryType: protobuf.Type | undefined;
function type(): protobuf.Type {
  logEntryType ??= protobuf.loadSync(protoPath).lookupType('dunix.v1.LogEntry');
  return logEntryType;
}

export function encodeLogEntry(entry: LogEntry): Buffer {
  const t = type();
  const msg = t.fromObject(entry);
  const bytes = t.encode(msg).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}

export function decodeLogEntry(bytes: Uint8Array): LogEntry__Output {
  const t = type();
  return t.toObject(t.decode(bytes), {
    longs: String,
    enums: String,
    defaults: true,
    arrays: true,
  }) as LogEntry__Output;
}
