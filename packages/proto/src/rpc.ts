import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import { errorTable, FsError, GrpcStatus, type ErrorCode } from './errors.js';
import { limits } from './limits.js';
import type { ProtoGrpcType } from './gen/brick.js';
import type { BrickClient } from './gen/dunix/v1/Brick.js';
import {
  assertInsecureAllowed,
  grpcChannelCredentials,
  INSECURE_TRANSPORT,
  type TransportSecurity,
} from './transport-security.js';

export type { BrickClient, BrickHandlers } from './gen/dunix/v1/Brick.js';
export type * as wire from './gen/wire.js';

/** Options shared by both ends: 64-bit integers as decimal strings, defaults filled in. */
export const protoLoaderOptions: protoLoader.Options = {
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

const protoPath = fileURLToPath(new URL('../../proto/brick.proto', import.meta.url));

let loaded: ProtoGrpcType | undefined;
export function brickProto(): ProtoGrpcType {
  loaded ??= grpc.loadPackageDefinition(
    protoLoader.loadSync(protoPath, protoLoaderOptions),
  ) as unknown as ProtoGrpcType;
  return loaded;
}

export const channelOptions: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': limits.messageMaxBytes,
  'grpc.max_send_message_length': limits.messageMaxBytes,
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
};

/** A gRPC client of a brick; with TLS, the brick must show a brick certificate of our CA for `address`. */
export function brickClient(address: string, security: TransportSecurity = INSECURE_TRANSPORT): BrickClient {
  const Ctor = brickProto().dunix.v1.Brick;
  if (security.kind === 'insecure')
    assertInsecureAllowed(address.slice(0, address.lastIndexOf(':')), 'brick address');
  return new Ctor(address, grpcChannelCredentials(security), channelOptions);
}

export const ERROR_CODE_METADATA_KEY = 'dunix-code';

/** An FsError as a gRPC status (the table's status, the code in metadata). */
export function toServiceError(err: FsError): Partial<grpc.StatusObject> {
  const metadata = new grpc.Metadata();
  metadata.set(ERROR_CODE_METADATA_KEY, err.code);
  return { code: err.grpcStatus, details: err.message, metadata };
}

/** A failed call back into the error table; transport failures become UNAVAILABLE / TIMED_OUT. */
export function fromServiceError(err: grpc.ServiceError): FsError {
  const code = err.metadata?.get(ERROR_CODE_METADATA_KEY)[0];
  if (typeof code === 'string' && code in errorTable) {
    const summary = errorTable[code as ErrorCode].summary;
    const detail = err.details?.startsWith(`${summary}: `)
      ? err.details.slice(summary.length + 2)
      : undefined;
    return new FsError(code as ErrorCode, detail);
  }
  if (err.code === GrpcStatus.DEADLINE_EXCEEDED) return new FsError('TIMED_OUT', err.details);
  if (err.code === GrpcStatus.UNAVAILABLE || err.code === GrpcStatus.CANCELLED) {
    return new FsError('UNAVAILABLE', err.details);
  }
  if (err.code === GrpcStatus.RESOURCE_EXHAUSTED) return new FsError('OUT_OF_RANGE', err.details);
  return new FsError('IO', `${err.code}: ${err.details}`);
}
