import t from 'tap';
import type { wire } from '@dunix/proto';
import { GRANT_READ, GRANT_WRITE, GrantHolder } from '../src/client/grant-holder.js';

/**
 * The client's block grants of one file: the widest grant for a need is
 * sent; renewed (one Open for concurrent callers) once half its life has
 * passed; a refused renewal keeps the old grant until it expires; no grant
 * (insecure cluster) sends none.
 */

const grant = (rights: number, expiresAtMs: number, tag = 'a'): wire.BlockGrant__Output => ({
  ino: '5',
  rights,
  holder: 'c',
  expiresAtMs: String(expiresAtMs),
  issuerCert: Buffer.alloc(1),
  signature: Buffer.from(tag),
  grantKey: Buffer.alloc(1),
  grantKeySignature: Buffer.alloc(1),
});

t.test('grant holder', async (t) => {
  let now = 1000;
  const h = new GrantHolder(() => now);
  t.equal(await h.get(GRANT_READ), null, 'nothing held: no grant (insecure cluster)');
  h.note(null);
  h.note(grant(GRANT_READ, 0, ''));
  t.equal(await h.get(GRANT_READ), null, 'unsigned grants are ignored');

  const ro = grant(GRANT_READ, 1000 + 100);
  h.note(ro);
  t.equal(await h.get(GRANT_READ), ro, 'read with the read grant');
  t.equal(await h.get(GRANT_WRITE), null, 'no write grant held');
  const rw = grant(GRANT_READ | GRANT_WRITE, 1000 + 100, 'b');
  h.note(rw);
  t.equal(await h.get(GRANT_READ), rw, 'the wider grant replaced the read one');
  t.equal(await h.get(GRANT_WRITE), rw);

  let opens = 0;
  let refuse = false;
  h.renew = async (rights) => {
    opens++;
    await new Promise((r) => setTimeout(r, 5));
    if (refuse) throw new Error('EACCES');
    return grant(rights, now + 100, `r${opens}`);
  };
  t.equal(await h.get(GRANT_WRITE), rw, 'before half its life: no renewal');
  t.equal(opens, 0);
  now = 1000 + 60;
  const [a, b] = await Promise.all([h.get(GRANT_WRITE), h.get(GRANT_READ)]);
  t.equal(opens, 1, 'one Open renews for concurrent callers');
  t.equal(a?.signature.toString(), 'r1');
  t.equal(b?.signature.toString(), 'r1');

  now += 60;
  refuse = true;
  const kept = await h.get(GRANT_WRITE);
  t.equal(
    kept?.signature.toString(),
    'r1',
    'a refused renewal keeps the old grant (the brick decides at expiry)',
  );
  const before = opens;
  await h.get(GRANT_WRITE);
  t.equal(opens, before, 'and does not ask again before it expires');
});
