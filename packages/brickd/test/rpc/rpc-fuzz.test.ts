import t, { type Test } from 'tap';
import fc from 'fast-check';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import {
  brickProto,
  createLogger,
  ERROR_CODE_METADATA_KEY,
  errorTable,
  PEER_ONLY_METHODS,
} from '@dunix/proto';
import { brickHandlers } from '../../src/rpc/server.js';
import { PG_COUNT, trio } from '../replication/trio.js';

/**
 * Every RPC's validation and handler, fuzzed against a real Brick (the trio
 * of in-process bricks over memory stores): requests built from each
 * method's message type with edge values (inode numbers of every PG, huge
 * and zero numbers, names with '/', '.', NUL, empty and too long, nested
 * messages, lists), sent as the wire would (serialized, then deserialized).
 * Each must be answered, success or an error of the table, within a
 * deadline; nothing may be logged as a bug; afterwards the brick still
 * serves a mkdir, a file write and reads of both. FUZZ_RUNS=N for longer runs.
 */
const RUNS = Number(process.env.FUZZ_RUNS ?? 150);
const ANSWER_MS = 10_000;

type Field = { name: string; type: string; label: string; typeName: string };
const pkg = brickProto().dunix.v1 as unknown as Record<string, { type?: { field: Field[] } }>;
const service = brickProto().dunix.v1.Brick.service as unknown as Record<
  string,
  grpc.MethodDefinition<unknown, unknown> & { requestType: { type: { field: Field[] } } }
>;
const allMethods = Object.keys(service).sort();
const clientMethods = allMethods.filter((m) => !PEER_ONLY_METHODS.has(m));
/** Brick-to-brick RPCs: a peer is trusted with the protocol (a higher epoch makes this copy step down). */
const peerMethods = allMethods.filter((m) => PEER_ONLY_METHODS.has(m));

const seq48 = 2n ** 48n;
const u64s = fc.oneof(
  fc.constantFrom('0', '1', '2', '18446744073709551615', '9223372036854775808', String(seq48)),
  fc.tuple(fc.nat(PG_COUNT + 1), fc.nat(40)).map(([pg, s]) => String(BigInt(pg) * seq48 + BigInt(s))),
  fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map(String),
);
const i64s = fc.oneof(
  u64s,
  fc.constantFrom('-1', '-9223372036854775808'),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(String),
);
const u32s = fc.oneof(fc.constantFrom(0, 1, 0o777, 0o100644, 0o40755, 4096, 65534, 2 ** 32 - 1), fc.nat());
const i32s = fc.oneof(fc.constantFrom(0, -1, 1, 2 ** 31 - 1, -(2 ** 31)), fc.integer());
const bytes = fc.oneof(
  fc
    .constantFrom('', '.', '..', 'a/b', 'a\0b', 'x'.repeat(256), 'user.x', 'system.posix_acl_access', 'name')
    .map((s) => Buffer.from(s)),
  fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
);
const strings = fc.oneof(
  fc.constantFrom('', 'x', 'req-1', 'A', 'B', 'C', 'BEGIN', 'END'),
  fc.string({ maxLength: 40 }),
);

function scalar(f: Field): fc.Arbitrary<unknown> {
  switch (f.type) {
    case 'TYPE_UINT64':
    case 'TYPE_FIXED64':
      return u64s;
    case 'TYPE_INT64':
    case 'TYPE_SINT64':
    case 'TYPE_SFIXED64':
      return i64s;
    case 'TYPE_UINT32':
    case 'TYPE_FIXED32':
      return u32s;
    case 'TYPE_INT32':
    case 'TYPE_SINT32':
    case 'TYPE_SFIXED32':
    case 'TYPE_ENUM':
      return i32s;
    case 'TYPE_BOOL':
      return fc.boolean();
    case 'TYPE_BYTES':
      return bytes;
    case 'TYPE_STRING':
      return strings;
    case 'TYPE_DOUBLE':
    case 'TYPE_FLOAT':
      return fc.double({ noNaN: true });
    default:
      return fc.constant(undefined);
  }
}

/** A request of the message type `fields`; the header is valid most of the time so requests reach the handler. */
function message(fields: Field[], depth: number): fc.Arbitrary<Record<string, unknown>> {
  const parts: Record<string, fc.Arbitrary<unknown>> = {};
  for (const f of fields) {
    let one: fc.Arbitrary<unknown>;
    if (f.name === 'header' && f.typeName.endsWith('Header'))
      one = fc.oneof(
        {
          weight: 4,
          arbitrary: fc.record({
            pg: fc.nat(PG_COUNT - 1),
            epoch: fc.constant('1'),
            requestId: strings,
            attempt: fc.nat(2),
          }),
        },
        { weight: 1, arbitrary: message(pkg[f.typeName.split('.').pop()!]?.type?.field ?? [], depth + 1) },
      );
    else if (f.type === 'TYPE_MESSAGE')
      one =
        depth >= 2
          ? fc.constant(undefined)
          : message(pkg[f.typeName.split('.').pop()!]?.type?.field ?? [], depth + 1);
    else one = scalar(f);
    parts[f.name] = f.label === 'LABEL_REPEATED' ? fc.array(one, { maxLength: 3 }) : one;
  }
  return fc.record(parts, { requiredKeys: [] });
}

/** The RPC handlers of brick A of an in-process trio, and what they log as a bug. */
async function servedBrick(t: Test) {
  const { bricks } = await trio();
  const dataDir = mkdtempSync(join(tmpdir(), 'dunix-rpc-fuzz-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const bugs: string[] = [];
  const log = createLogger('rpc-fuzz', (line) => {
    if (/"level":"error"/.test(line) && /bug/.test(line)) bugs.push(line);
  });
  const handlers = brickHandlers({
    brick: bricks.A,
    brickId: 'A',
    dataDir,
    log,
    startedAtMs: Date.now(),
  }) as unknown as Record<string, grpc.handleUnaryCall<unknown, unknown>>;
  return { handlers, bugs };
}

async function fuzz(t: Test, methods: string[], checkServing: boolean): Promise<void> {
  const { handlers, bugs } = await servedBrick(t);
  const codes = new Map<string, number>();

  /** Runs one call as the servers do; resolves with its result code (OK or the table's). */
  const call = (method: string, request: unknown) =>
    new Promise<string>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${method} not answered in ${ANSWER_MS} ms: ${JSON.stringify(request)}`)),
        ANSWER_MS,
      );
      try {
        handlers[method]!({ request, getPeer: () => '127.0.0.1:1' } as never, (err) => {
          clearTimeout(timer);
          if (!err) return resolve('OK');
          const code = (err as grpc.ServiceError).metadata?.get(ERROR_CODE_METADATA_KEY)[0];
          if (typeof code !== 'string' || !(code in errorTable))
            reject(new Error(`${method} failed without a table code: ${JSON.stringify(err)}`));
          else resolve(code);
        });
      } catch (err) {
        clearTimeout(timer);
        reject(new Error(`${method} threw: ${String(err)}`));
      }
    });

  const requests = fc
    .constantFrom(...methods)
    .chain((method) => message(service[method]!.requestType.type.field, 0).map((req) => ({ method, req })));
  await fc.assert(
    fc.asyncProperty(requests, async ({ method, req }) => {
      let wire: unknown;
      try {
        // As the wire carries it: what cannot be serialized never reaches a brick.
        wire = service[method]!.requestDeserialize(service[method]!.requestSerialize(req));
      } catch {
        return true;
      }
      const code = await call(method, wire);
      codes.set(code, (codes.get(code) ?? 0) + 1);
      if (bugs.length > 0) throw new Error(`${method} logged a bug: ${bugs[0]!.slice(0, 600)}`);
      return true;
    }),
    { numRuns: RUNS * methods.length },
  );
  t.same(bugs, [], 'nothing was logged as a bug');
  t.comment(`results: ${JSON.stringify(Object.fromEntries(codes))}`);

  if (!checkServing) return;
  // The brick still serves: a new directory, found again.
  const header = (pg: number) => ({ pg, epoch: '1', requestId: `after-${Math.random()}`, attempt: 0 });
  const root = { uid: 0, gid: 0, groups: [] };
  const rootIno = (await callReply(handlers, 'Lookup', {
    header: header(0),
    caller: root,
    parent: '1',
    name: Buffer.from('.'),
  }).catch(() => undefined)) as undefined | { entry?: { attr?: { ino: string } } };
  t.ok(rootIno === undefined || rootIno.entry?.attr?.ino, 'lookups still answer');
  const mk = (await callReply(handlers, 'Mkdir', {
    header: header(0),
    caller: root,
    parent: '1',
    name: Buffer.from('after-fuzz'),
    mode: 0o755,
  })) as { entry: { attr: { ino: string } } };
  t.ok(mk.entry.attr.ino, 'mkdir after the fuzz works');
  const look = (await callReply(handlers, 'Lookup', {
    header: header(0),
    caller: root,
    parent: '1',
    name: Buffer.from('after-fuzz'),
  })) as { entry: { attr: { ino: string } } };
  t.equal(look.entry.attr.ino, mk.entry.attr.ino, 'and the new directory is found');
}

t.test(
  'random requests to every client RPC: answered from the error table, no bug, no hang; the brick serves on',
  (t) => fuzz(t, clientMethods, true),
);

t.test('random requests to every brick-to-brick RPC: answered from the error table, no bug, no hang', (t) =>
  fuzz(t, peerMethods, false),
);

function callReply(
  handlers: Record<string, grpc.handleUnaryCall<unknown, unknown>>,
  method: string,
  req: unknown,
) {
  const def = service[method]!;
  const wire = def.requestDeserialize(def.requestSerialize(req));
  return new Promise<unknown>((resolve, reject) =>
    handlers[method]!({ request: wire, getPeer: () => '127.0.0.1:1' } as never, (err, reply) =>
      err ? reject(new Error(`${method}: ${JSON.stringify(err.details ?? err)}`)) : resolve(reply),
    ),
  );
}

t.test(
  'kept from the fuzz: an Rmdir sent under the request id of a Mkdir is refused, not answered with its reply',
  async (t) => {
    const { handlers, bugs } = await servedBrick(t);
    const root = { uid: 0, gid: 0, groups: [] };
    const header = { pg: 0, epoch: '1', requestId: 'reused-id', attempt: 1 };
    const mk = (await callReply(handlers, 'Mkdir', {
      header,
      caller: root,
      parent: '1',
      name: Buffer.from('kept'),
      mode: 0o755,
    })) as { entry: { attr: { ino: string } } };
    const code = await new Promise<unknown>((resolve) => {
      const def = service.Rmdir!;
      const wire = def.requestDeserialize(
        def.requestSerialize({ header, caller: root, parent: '1', name: Buffer.from('kept') }),
      );
      handlers.Rmdir!({ request: wire, getPeer: () => '127.0.0.1:1' } as never, (err) =>
        resolve(err ? (err as grpc.ServiceError).metadata?.get(ERROR_CODE_METADATA_KEY)[0] : 'OK'),
      );
    });
    t.equal(code, 'INVALID_ARGUMENT', 'the reused id is refused with a table code');
    t.same(bugs, [], 'nothing logged as a bug (it was: a Mkdir reply turned into an inode number)');
    const look = (await callReply(handlers, 'Lookup', {
      header: { pg: 0, epoch: '1', requestId: 'look', attempt: 0 },
      caller: root,
      parent: '1',
      name: Buffer.from('kept'),
    })) as { entry: { attr: { ino: string } } };
    t.equal(look.entry.attr.ino, mk.entry.attr.ino, 'and the directory is still there');
  },
);
