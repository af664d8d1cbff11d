import { certCommonName, FsError } from '@dunix/proto';
import { KEY_PREFIX, keys } from './keys.js';

/**
 * etcd's role-based access (RBAC) for dunix. With --client-cert-auth and
 * auth enabled, etcd takes a certificate's CN as the user's name; our CNs
 * are `<kind>:<name>` (peer-identity.ts), so a brick and a client of the
 * same name are two users. Each kind has one etcd role:
 *
 * - `dunix-brick` reads and writes every dunix key: a brick (and the
 *   controller, which runs in one) writes placement, membership, liveness,
 *   recovery, usage, scrub and rebalance state; a brick certificate is
 *   trusted with every block already, so narrower keys would buy nothing.
 * - `dunix-client` (a mount) reads every dunix key and writes none.
 * - `dunix-mounts:NAME`, one role per client user `client:NAME`, writes
 *   what that client's mounts write, in each volume: their session records
 *   `mounts/NAME~<id>` and their suspect reports `suspects/NAME~<id>/...`
 *   (a mount of that certificate names itself `NAME~<id>`; `~` is in no
 *   name, so one client's prefix never covers another's). etcd grants key
 *   ranges, and these are per volume, so `volume create` (and `etcd auth
 *   enable`, for the volumes already there) grant them. Another client can
 *   read those keys but neither rewrite nor delete them: the bricks drop a
 *   session's locks and reclaim its O_TMPFILE orphans once its record is
 *   gone, and a withdrawn report would slow a failover.
 * - `admin:NAME` users (dunixctl) get etcd's `root` role: volumes, config
 *   and users. etcd needs a `root` user before it enables auth; it has no
 *   password, and no certificate we issue has CN=root.
 *
 * The plan (which permissions) is pure; EtcdAccess applies it through the
 * injected part of etcd's Auth API.
 */
export const ETCD_ROLES = { brick: 'dunix-brick', client: 'dunix-client', admin: 'root' } as const;
export type EtcdUserKind = keyof typeof ETCD_ROLES;

/** etcd's permission types, as the etcd3 client names them. */
export type EtcdPermType = 'Read' | 'Write' | 'Readwrite';

export interface EtcdPermission {
  permType: EtcdPermType;
  key: string;
  /** Exclusive end of a range; '' for the key alone. */
  rangeEnd: string;
}

export interface EtcdUser {
  kind: EtcdUserKind;
  name: string;
  /** The user's name in etcd: the certificate's CN. */
  user: string;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** `brick:NAME`, `client:NAME` or `admin:NAME` (a certificate's CN) as a user; throws INVALID_ARGUMENT. */
export function parseEtcdUser(s: string): EtcdUser {
  const m = /^(brick|client|admin):(.*)$/.exec(s);
  if (!m || !NAME_RE.test(m[2]!))
    throw new FsError(
      'INVALID_ARGUMENT',
      `etcd user ${JSON.stringify(s)}: expected brick:NAME, client:NAME or admin:NAME (the certificate's CN)`,
    );
  const kind = m[1] as EtcdUserKind;
  return { kind, name: m[2]!, user: certCommonName(kind, m[2]!) };
}

/** The range of every key that starts with `prefix`. */
export function prefixRange(prefix: string): { key: string; rangeEnd: string } {
  const last = prefix.charCodeAt(prefix.length - 1);
  if (!(last < 0x7f)) throw new Error(`prefix ${prefix} must end in ASCII`);
  return { key: prefix, rangeEnd: prefix.slice(0, -1) + String.fromCharCode(last + 1) };
}

/** What each dunix role may do whatever the volumes. */
export function baseRolePermissions(): Record<'dunix-brick' | 'dunix-client', EtcdPermission[]> {
  const all = prefixRange(KEY_PREFIX);
  return {
    [ETCD_ROLES.brick]: [{ permType: 'Readwrite', ...all }],
    [ETCD_ROLES.client]: [{ permType: 'Read', ...all }],
  };
}

/**
 * What `dunix-client` could write in `volume` before per-client suspect
 * reports (the `mounted` stamp, every report): taken back wherever the
 * roles are set again.
 */
function sharedClientPermissions(volume: string): EtcdPermission[] {
  return [
    { permType: 'Readwrite', key: keys.mountStamp(volume), rangeEnd: '' },
    { permType: 'Readwrite', ...prefixRange(keys.suspects(volume)) },
    { permType: 'Readwrite', ...prefixRange(keys.mountsAll(volume)) },
  ];
}

/** The role of client NAME's own session records. */
export function clientMountsRole(name: string): string {
  return `dunix-mounts:${name}`;
}

/** What client NAME may write in `volume`: its mounts' records `mounts/NAME~...` and reports `suspects/NAME~...`. */
export function clientMountPermissions(volume: string, name: string): EtcdPermission[] {
  return [
    { permType: 'Readwrite', ...prefixRange(keys.mountsOf(volume, name)) },
    { permType: 'Readwrite', ...prefixRange(keys.suspectsOf(volume, name)) },
  ];
}

/** The part of etcd's Auth API (etcd3's AuthClient) that EtcdAccess uses. */
export interface EtcdAuthApi {
  roleAdd(req: { name: string }): Promise<unknown>;
  roleGet(req: { role: string }): Promise<unknown>;
  roleGrantPermission(req: {
    name: string;
    perm: { permType: EtcdPermType; key: Buffer; range_end: Buffer };
  }): Promise<unknown>;
  roleRevokePermission(req: { role: string; key: Buffer; range_end: Buffer }): Promise<unknown>;
  userAdd(req: { name: string; options: { no_password: boolean } }): Promise<unknown>;
  userGrantRole(req: { user: string; role: string }): Promise<unknown>;
  /** Every user's name. */
  userList(): Promise<string[]>;
  authEnable(): Promise<unknown>;
}

/** etcd's answers as error messages (etcdserver: ...) that mean "already so" or "not there". */
const EXISTS_RE = /already exists/i;
const ROLE_NOT_FOUND_RE = /role name not found/i;

async function ignoring(p: Promise<unknown>, re: RegExp): Promise<void> {
  try {
    await p;
  } catch (err) {
    if (!re.test(String((err as Error).message))) throw err;
  }
}

export interface EnableResult {
  roles: string[];
  users: string[];
  volumes: string[];
}

/** Sets etcd's roles and users for dunix and enables auth; each step may be run again. */
export class EtcdAccess {
  constructor(private readonly api: EtcdAuthApi) {}

  private async grant(role: string, perms: EtcdPermission[]): Promise<void> {
    for (const p of perms)
      await this.api.roleGrantPermission({
        name: role,
        perm: { permType: p.permType, key: Buffer.from(p.key), range_end: Buffer.from(p.rangeEnd) },
      });
  }

  private async revoke(role: string, perms: EtcdPermission[]): Promise<void> {
    for (const p of perms)
      await ignoring(
        this.api.roleRevokePermission({
          role,
          key: Buffer.from(p.key),
          range_end: Buffer.from(p.rangeEnd),
        }),
        /not found|not granted/i,
      );
  }

  /**
   * Creates the users (no password: certificates only) with their kind's
   * role; a client also gets its own records' role, over `volumes`.
   */
  async addUsers(users: EtcdUser[], volumes: string[]): Promise<void> {
    for (const u of users) {
      await ignoring(this.api.userAdd({ name: u.user, options: { no_password: true } }), EXISTS_RE);
      await this.api.userGrantRole({ user: u.user, role: ETCD_ROLES[u.kind] });
      if (u.kind !== 'client') continue;
      const role = clientMountsRole(u.name);
      await ignoring(this.api.roleAdd({ name: role }), EXISTS_RE);
      for (const v of volumes) await this.grant(role, clientMountPermissions(v, u.name));
      await this.api.userGrantRole({ user: u.user, role });
    }
  }

  /** The names of etcd's client users (client:NAME). */
  private async clientNames(): Promise<string[]> {
    const out: string[] = [];
    for (const user of await this.api.userList()) {
      try {
        const u = parseEtcdUser(user);
        if (u.kind === 'client') out.push(u.name);
      } catch {
        // root and users made by hand: not ours.
      }
    }
    return out;
  }

  /**
   * The roles with their permissions (the per-volume ones of `volumes`),
   * the root user, `users`, then auth on. Run before auth is on by any
   * certificate of the CA; after, by an admin.
   */
  async enable(users: EtcdUser[], volumes: string[]): Promise<EnableResult> {
    for (const role of Object.values(ETCD_ROLES)) await ignoring(this.api.roleAdd({ name: role }), EXISTS_RE);
    for (const [role, perms] of Object.entries(baseRolePermissions())) await this.grant(role, perms);
    for (const v of volumes) await this.revoke(ETCD_ROLES.client, sharedClientPermissions(v));
    await ignoring(this.api.userAdd({ name: 'root', options: { no_password: true } }), EXISTS_RE);
    await this.api.userGrantRole({ user: 'root', role: 'root' });
    // Clients added before (by `etcd user add`) get their records' role in every volume too.
    const known = await this.clientNames();
    const listed = new Set(users.filter((u) => u.kind === 'client').map((u) => u.name));
    await this.addUsers(
      [...users, ...known.filter((n) => !listed.has(n)).map((n) => parseEtcdUser(`client:${n}`))],
      volumes,
    );
    await this.api.authEnable();
    return { roles: Object.values(ETCD_ROLES), users: users.map((u) => u.user), volumes };
  }

  /** Lets clients register mounts in `volume`; false when etcd has no dunix roles (auth never set up). */
  async grantVolume(volume: string): Promise<boolean> {
    try {
      await this.api.roleGet({ role: ETCD_ROLES.client });
    } catch (err) {
      if (ROLE_NOT_FOUND_RE.test(String((err as Error).message))) return false;
      throw err;
    }
    for (const name of await this.clientNames()) {
      const role = clientMountsRole(name);
      await ignoring(this.api.roleAdd({ name: role }), EXISTS_RE);
      await this.grant(role, clientMountPermissions(volume, name));
    }
    return true;
  }

  /** Takes back what grantVolume gave (a deleted volume); a permission not there is not an error. */
  async revokeVolume(volume: string): Promise<void> {
    await this.revoke(ETCD_ROLES.client, sharedClientPermissions(volume));
    for (const name of await this.clientNames())
      await this.revoke(clientMountsRole(name), clientMountPermissions(volume, name));
  }
}
