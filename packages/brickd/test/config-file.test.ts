import t from 'tap';
import { configArgs, configFileOf } from '../src/config-file.js';

const options = [
  { name: 'data', takesValue: true },
  { name: 'listen', takesValue: true },
  { name: 'insecure', takesValue: false },
  { name: 'config', takesValue: true },
];

t.test('name = value lines become the long options, in order', async (t) => {
  const text = ['# a brick', '', 'data = /srv/dunix/disk1', '  listen=0.0.0.0:7101  ', 'insecure', ''].join(
    '\n',
  );
  t.same(configArgs(text, options), ['--data', '/srv/dunix/disk1', '--listen', '0.0.0.0:7101', '--insecure']);
});

t.test('flags: true, false or no value; quoted values keep spaces and #', async (t) => {
  t.same(configArgs('insecure = true', options), ['--insecure']);
  t.same(configArgs('insecure = false', options), []);
  t.same(configArgs('data = "/srv/my disk #1"', options), ['--data', '/srv/my disk #1']);
});

t.test('mistakes name the file, the line and what is wrong', async (t) => {
  const bad: [string, RegExp][] = [
    ['data = /a\nbogus = 1', /^f\.conf:2: unknown option "bogus"/],
    ['data', /^f\.conf:1: data needs a value/],
    ['data =', /^f\.conf:1: data needs a value/],
    ['insecure = yes', /^f\.conf:1: insecure is a flag/],
    ['data = /a\ndata = /b', /^f\.conf:2: data is given twice/],
    ['config = other.conf', /^f\.conf:1: unknown option "config"/],
    ['--data /a', /^f\.conf:1: expected "name = value"/],
    ['data = "/a', /^f\.conf:1: unterminated quoted value of data/],
    ['Data = /a', /^f\.conf:1: expected "name = value"/],
  ];
  for (const [text, want] of bad)
    t.throws(() => configArgs(text, options, 'f.conf'), want, JSON.stringify(text));
});

t.test('the config file is found in argv in both spellings', async (t) => {
  t.equal(configFileOf(['--config', '/etc/dunix/b.conf', '--listen', 'x']), '/etc/dunix/b.conf');
  t.equal(configFileOf(['--config=/etc/dunix/b.conf']), '/etc/dunix/b.conf');
  t.equal(configFileOf(['--data', 'x']), undefined);
});
