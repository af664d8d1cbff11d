import { parseUidRange } from '@dunix/proto';
import type { CaInfo, CertRole, IssuedCert } from '../ca.js';

/**
 * `dunixctl ca init` and `dunixctl cert issue`: local commands (no etcd),
 * handlers return data and render* turns it into text (program.ts wires
 * them). The certificate format is in proto's peer-identity.ts. ca.ts
 * (node-forge) is loaded only when one of these runs: the daemons import
 * this package too.
 */
export const DEFAULT_CA_DIR = '/etc/dunix';

export async function caInit(dir: string, o: { days?: number; force?: boolean }): Promise<CaInfo> {
  const { initCa } = await import('../ca.js');
  return initCa(dir, o);
}

export function renderCaInit(r: CaInfo): string {
  return (
    `cluster CA created in ${r.dir}: ${r.cert} (give to every host), ${r.key} (mode 0600; keep it on this host only)\n` +
    `  subject ${r.subject}, valid until ${r.notAfter}\n` +
    `  sha256 ${r.fingerprint256}\n` +
    `next: dunixctl cert issue --brick NAME (one per brick) and --client NAME (one per mounting host)\n`
  );
}

export interface CertIssueArgs {
  brick?: string;
  client?: string;
  admin?: string;
  etcdServer?: string;
  squashRoot?: boolean;
  uidRange?: string;
  san?: string;
  days?: number;
  force?: boolean;
}

export async function certIssue(dir: string, a: CertIssueArgs): Promise<IssuedCert> {
  if ([a.brick, a.client, a.admin, a.etcdServer].filter(Boolean).length !== 1)
    throw new Error('name one of --brick NAME, --client NAME, --admin NAME or --etcd-server NAME');
  const role: CertRole = a.brick ? 'brick' : a.etcdServer ? 'etcd' : a.admin ? 'admin' : 'client';
  const name = (a.brick ?? a.etcdServer ?? a.admin ?? a.client)!;
  const uidRange = a.uidRange === undefined ? undefined : parseUidRange(a.uidRange);
  const { issueCert } = await import('../ca.js');
  return issueCert(dir, {
    role,
    name,
    policy: { squashRoot: !!a.squashRoot, uidRange },
    sans: a.san
      ?.split(',')
      .map((s) => s.trim())
      .filter(Boolean),
    ...(a.days !== undefined ? { days: a.days } : {}),
    force: !!a.force,
  });
}

export function renderCertIssue(r: IssuedCert): string {
  const use =
    r.role === 'brick'
      ? `brickd --tls-dir ${r.dir}`
      : r.role === 'etcd'
        ? `etcd --cert-file ${r.dir}/tls.crt --key-file ${r.dir}/tls.key --trusted-ca-file ${r.dir}/ca.crt ` +
          '--client-cert-auth (and the same as --peer-*; docs/OPERATIONS.md, "etcd")'
        : r.role === 'admin'
          ? `dunixctl --tls-dir ${r.dir} ... (etcd's root role once etcd auth is on)`
          : `dunixfs ... -o tls_dir=${r.dir} (or in fstab)`;
  return (
    `${r.role} certificate ${r.name} issued in ${r.dir} (ca.crt, tls.crt, tls.key mode 0600)\n` +
    `  subject ${r.subject}${r.subjectAltName ? `; ${r.subjectAltName}` : ''}\n` +
    `  valid until ${r.notAfter}, serial ${r.serial}\n` +
    `use: ${use}\n` +
    (r.role === 'etcd'
      ? ''
      : `etcd with auth on knows it once added: dunixctl etcd user add ${r.role}:${r.name}\n`)
  );
}
