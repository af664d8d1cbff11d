/**
 * The brick's addresses (net-address.ts): --listen forms (IPv4, bracketed
 * IPv6, names, default port), the any-address refused as --advertise and
 * requiring it on --listen, names that do not resolve, the data port rule.
 */
import t from 'tap';
import {
  brickAddresses,
  DATA_PORT_OFFSET,
  formatHostPort,
  GRPC_PORT_DEFAULT,
  parseFailureDomain,
  parseHost,
  parseListen,
  type HostLookup,
} from '../src/net-address.js';

/** A resolver that knows `names` only. */
const dns =
  (names: Record<string, string[]>): HostLookup =>
  async (h) => {
    const a = names[h];
    if (!a) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${h}`), { code: 'ENOTFOUND' });
    return a;
  };
const noDns: HostLookup = async (h) => {
  throw new Error(`no lookup expected (${h})`);
};

t.test('--listen forms', async (t) => {
  t.same(parseListen('127.0.0.1:0'), { host: '127.0.0.1', port: 0 });
  t.same(parseListen('10.0.0.5'), { host: '10.0.0.5', port: GRPC_PORT_DEFAULT });
  t.same(parseListen('[::1]:7101'), { host: '::1', port: 7101 });
  t.same(parseListen('[fd00::5]'), { host: 'fd00::5', port: GRPC_PORT_DEFAULT });
  t.same(parseListen('fd00::5'), { host: 'fd00::5', port: GRPC_PORT_DEFAULT });
  t.same(parseListen('brick-1.example:9000'), { host: 'brick-1.example', port: 9000 });
  t.same(parseListen(':7300'), { host: '127.0.0.1', port: 7300 });
  t.throws(() => parseListen('10.0.0.5:70000'), /past 65535/);
  t.throws(() => parseListen('[10.0.0.5]:1'), /not an IPv6/);
  t.throws(() => parseListen('a b:1'), /neither an IP address nor a host name/);
  t.throws(() => parseListen('-bad:1'), /neither/);
});

t.test('IPv6 literals are bracketed with a port', async (t) => {
  t.equal(formatHostPort('fd00::5', 7101), '[fd00::5]:7101');
  t.equal(formatHostPort('10.0.0.5', 7101), '10.0.0.5:7101');
  t.equal(formatHostPort('b1.example', 7101), 'b1.example:7101');
  t.equal(parseHost('[fd00::5]'), 'fd00::5');
});

t.test('advertise: defaults to the listen host; never the any-address', async (t) => {
  t.same(await brickAddresses({ listen: '10.0.0.5:7101' }, noDns), {
    listenHost: '10.0.0.5',
    listenPort: 7101,
    dataPort: 7101 + DATA_PORT_OFFSET,
    advertiseHost: '10.0.0.5',
  });
  t.same(await brickAddresses({ listen: '0.0.0.0:7101', advertise: '[fd00::5]' }, noDns), {
    listenHost: '0.0.0.0',
    listenPort: 7101,
    dataPort: 8101,
    advertiseHost: 'fd00::5',
  });
  for (const any of ['0.0.0.0', '::', '[::]', '[0:0::0]'])
    await t.rejects(
      brickAddresses({ listen: '10.0.0.5:1', advertise: any }, noDns),
      /any-address cannot be dialled/,
      any,
    );
  for (const any of ['0.0.0.0:7101', '[::]:7101'])
    await t.rejects(brickAddresses({ listen: any }, noDns), /binds every address: .*--advertise/, any);
});

t.test('names must resolve', async (t) => {
  const lookup = dns({ 'b1.example': ['10.0.0.5'], 'empty.example': [] });
  const a = await brickAddresses({ listen: '0.0.0.0:7101', advertise: 'b1.example' }, lookup);
  t.equal(a.advertiseHost, 'b1.example');
  await t.rejects(
    brickAddresses({ listen: '0.0.0.0:7101', advertise: 'nope.example' }, lookup),
    /--advertise nope.example: the name does not resolve \(getaddrinfo ENOTFOUND/,
  );
  await t.rejects(
    brickAddresses({ listen: 'nope.example:7101' }, lookup),
    /--listen nope.example: the name does not resolve/,
  );
  await t.rejects(
    brickAddresses({ listen: '0.0.0.0:1', advertise: 'empty.example' }, lookup),
    /resolves to no address/,
  );
});

t.test('data port: gRPC port + offset, any with port 0, explicit wins, never the gRPC port', async (t) => {
  t.equal((await brickAddresses({ listen: '127.0.0.1:0' }, noDns)).dataPort, 0);
  t.equal((await brickAddresses({ listen: '127.0.0.1:7102' }, noDns)).dataPort, 8102);
  t.equal((await brickAddresses({ listen: '127.0.0.1:7101', dataPort: 9000 }, noDns)).dataPort, 9000);
  await t.rejects(brickAddresses({ listen: '127.0.0.1:65500' }, noDns), /pass --data-port/);
  await t.rejects(brickAddresses({ listen: '127.0.0.1:9000', dataPort: 9000 }, noDns), /must differ/);
});

t.test('failure domain labels', async (t) => {
  t.equal(parseFailureDomain('rack-3.row:a_1'), 'rack-3.row:a_1');
  t.throws(() => parseFailureDomain(''), /failure domain/);
  t.throws(() => parseFailureDomain('a b'), /failure domain/);
  t.throws(() => parseFailureDomain('x'.repeat(256)), /failure domain/);
});
