import {
  authorizeMethod,
  callerUnderPolicy,
  FsError,
  peerOf,
  type CallerLike,
  type PeerIdentity,
} from '@dunix/proto';

/**
 * What a brick lets a call do, from the certificate of its connection
 * (peer-identity.ts in proto): peer-only RPCs need a brick certificate, and
 * a client's caller is served under its certificate's policy (root squash,
 * uid range). Returns the request to serve (the same object, or a copy with
 * the caller replaced). `requireCertificate`: the brick runs with TLS, so a
 * call without a certificate cannot be (both servers refuse such
 * connections); refused all the same.
 */
export function admit<Req>(method: string, call: { request: Req }, requireCertificate: boolean): Req {
  return admitCall(method, call, requireCertificate).req;
}

/** admit(), also giving the peer (block grants need it). */
export function admitCall<Req>(
  method: string,
  call: { request: Req },
  requireCertificate: boolean,
): { req: Req; peer: PeerIdentity } {
  let peer: PeerIdentity;
  try {
    peer = peerOf(call);
  } catch (err) {
    throw new FsError('NOT_PERMITTED', (err as Error).message);
  }
  if (peer.kind === 'insecure') {
    if (requireCertificate)
      throw new FsError('NOT_PERMITTED', `${method}: the connection carries no certificate`);
    return { req: call.request, peer };
  }
  authorizeMethod(peer, method);
  const req = call.request as Req & { caller?: CallerLike | null };
  if (!req || !req.caller) return { req: call.request, peer };
  const caller = callerUnderPolicy(peer, req.caller);
  return { req: caller === req.caller ? call.request : { ...req, caller }, peer };
}
