/**
 * A TLS client that trusts the CA but presents no certificate, sending one
 * frame header's worth of bytes to a brick's data port: resolves with how
 * the brick ended it (an error message, 'connection closed', or 'the brick
 * answered' when it served the unauthenticated peer).
 */
import { connect as tlsConnect } from 'node:tls';

export function withoutClientCertificate(address: string, ca: Buffer): Promise<string> {
  const at = address.lastIndexOf(':');
  return new Promise((resolve) => {
    const sock = tlsConnect({ host: address.slice(0, at), port: Number(address.slice(at + 1)), ca });
    const timer = setTimeout(() => {
      sock.destroy();
      resolve('no answer within 5 s');
    }, 5000);
    sock.on('secureConnect', () => sock.write(Buffer.alloc(12)));
    sock.on('data', () => resolve('the brick answered'));
    sock.on('error', (err) => {
      clearTimeout(timer);
      resolve(err.message);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      resolve('connection closed');
    });
  });
}
