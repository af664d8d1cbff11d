import type { wire } from '@dunix/proto';

/** Rights of a block grant (brick.proto, BlockGrant). */
export const GRANT_READ = 1;
export const GRANT_WRITE = 2;
/** Any grant of the file (Seek: lseek works on a descriptor of any access mode). */
export const GRANT_ANY = 0;

type Grant = wire.BlockGrant__Output;

/**
 * The block grants of one open file (TLS clusters): what the inode's primary
 * allowed this client at Open, which every block call of the file carries
 * (the block's brick checks it; brickd's rpc/block-grants.ts). A grant is
 * renewed by a new Open once half its life has passed; if that Open is
 * refused (permission gone) the old grant is sent until it expires, and the
 * bricks then refuse the file's block calls (EACCES). Insecure clusters give
 * no grants: calls carry none and bricks ask for none.
 */
export class GrantHolder {
  private held: { grant: Grant; renewAtMs: number }[] = [];
  private renewing: Promise<Grant | null> | undefined;
  /** Asks for a grant of `rights` again (an Open with the matching access mode). */
  renew: ((rights: number) => Promise<Grant | null>) | undefined;

  constructor(private readonly nowMs: () => number = Date.now) {}

  /** Keeps `g` (from an Open or a create), replacing grants with no more rights than it. */
  note(g: Grant | null | undefined): void {
    if (!g || !g.signature || g.signature.length === 0) return;
    const now = this.nowMs();
    const renewAtMs = now + Math.max(0, Number(g.expiresAtMs) - now) / 2;
    this.held = this.held.filter((h) => (h.grant.rights & g.rights) !== h.grant.rights);
    this.held.push({ grant: g, renewAtMs });
  }

  /** The grant to send for `need`; null when none is held (an insecure cluster). */
  async get(need: number): Promise<Grant | null> {
    const h = this.held.find((x) => (x.grant.rights & need) === need);
    if (!h) return null;
    if (this.nowMs() < h.renewAtMs || !this.renew) return h.grant;
    this.renewing ??= this.renew(h.grant.rights).finally(() => (this.renewing = undefined));
    try {
      const g = await this.renewing;
      this.note(g);
      return g ?? h.grant;
    } catch {
      // Refused (a chmod since the open): the old grant stands until it expires.
      h.renewAtMs = Number(h.grant.expiresAtMs);
      return h.grant;
    }
  }
}
