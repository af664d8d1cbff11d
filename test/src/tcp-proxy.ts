/**
 * A TCP proxy on loopback for fault tests: listens on 127.0.0.1 (port 0, the
 * kernel picks it) and forwards every connection to one target. `cut()` is a
 * network partition between whoever dials the proxy and the target: every
 * open connection is destroyed and new ones are closed as soon as they are
 * accepted (the listener stays bound, so `restore()` never has to take a
 * port again); `restore()` forwards again.
 *
 * The forwarding runs in a child process (this file, forked): the test
 * process blocks its event loop at times (spawnSync of dunixctl, sync file
 * reads of a mount), which must not stall the proxied traffic.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { createConnection, createServer, type Socket } from 'node:net';
import { fileURLToPath, pathToFileURL } from 'node:url';

type Command = { cmd: 'cut' | 'restore'; id: number };
type Reply = { port: number } | { id: number; accepted: number; refused: number };

// ------------------------------------------------------------------ the child

function runProxy(targetHost: string, targetPort: number): void {
  const pairs = new Set<[Socket, Socket]>();
  let cut = false;
  let accepted = 0;
  let refused = 0;
  const server = createServer((client) => {
    if (cut) {
      refused++;
      client.destroy();
      return;
    }
    accepted++;
    client.setNoDelay(true);
    const upstream = createConnection({ host: targetHost, port: targetPort });
    upstream.setNoDelay(true);
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  server.listen(0, '127.0.0.1', () => {
    const addr = server.address();
    if (!addr || typeof addr === 'string') throw new Error('proxy: no TCP address');
    process.send!({ port: addr.port } satisfies Reply);
  });
  process.on('message', (m: Command) => {
    if (m.cmd === 'cut') {
      cut = true;
      for (const [a, b] of [...pairs]) {
        a.destroy();
        b.destroy();
      }
      pairs.clear();
    } else cut = false;
    process.send!({ id: m.id, accepted, refused } satisfies Reply);
  });
  // The parent is gone (or closed the channel): so is the proxy.
  process.on('disconnect', () => process.exit(0));
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runProxy(process.argv[2]!, Number(process.argv[3]));
}

// ------------------------------------------------------------------ the parent

const children = new Set<ChildProcess>();
let exitHook = false;

export class TcpProxy {
  private nextId = 0;
  private readonly waiting = new Map<number, (r: { accepted: number; refused: number }) => void>();
  private isCut = false;
  private closed = false;

  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
  ) {
    child.on('message', (m: Reply) => {
      if ('id' in m) {
        this.waiting.get(m.id)?.(m);
        this.waiting.delete(m.id);
      }
    });
  }

  /** Starts a proxy (a child process) to targetHost:targetPort. */
  static async start(targetHost: string, targetPort: number): Promise<TcpProxy> {
    if (!exitHook) {
      exitHook = true;
      process.on('exit', () => {
        for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
      });
    }
    const child = fork(fileURLToPath(import.meta.url), [targetHost, String(targetPort)], {
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    children.add(child);
    child.once('exit', () => children.delete(child));
    // Never what keeps the test process alive.
    child.unref();
    (child.channel as { unref?: () => void } | undefined)?.unref?.();
    const port = await new Promise<number>((resolve, reject) => {
      // A node start-up takes seconds at load 20 (CI once saw more than 10 s); the harness gives daemons 90.
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`proxy (pid ${child.pid}) did not report its port in 60 s`));
      }, 60_000);
      child.once('message', (m: Reply) => {
        clearTimeout(timer);
        if ('port' in m) resolve(m.port);
        else reject(new Error(`proxy: unexpected message ${JSON.stringify(m)}`));
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`proxy exited (${code}) before listening`));
      });
    });
    return new TcpProxy(child, port);
  }

  /** A proxy to an http://host:port endpoint (etcd's), e.g. for a brick's --etcd. */
  static async forEndpoint(endpoint: string): Promise<TcpProxy> {
    const u = new URL(endpoint);
    return TcpProxy.start(u.hostname, Number(u.port));
  }

  /** http://127.0.0.1:PORT of the proxy. */
  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get cutOff(): boolean {
    return this.isCut;
  }

  private send(cmd: Command['cmd']): Promise<{ accepted: number; refused: number }> {
    if (this.closed) return Promise.reject(new Error('proxy closed'));
    const id = ++this.nextId;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`proxy did not answer ${cmd} in 30 s`)), 30_000);
      this.waiting.set(id, (r) => {
        clearTimeout(timer);
        resolve(r);
      });
      this.child.send({ cmd, id } satisfies Command);
    });
  }

  /** Destroys every connection and refuses new ones until restore(); resolves once done. */
  async cut(): Promise<{ accepted: number; refused: number }> {
    this.isCut = true;
    return this.send('cut');
  }

  /** Forwards new connections again; resolves with the connection counts so far. */
  async restore(): Promise<{ accepted: number; refused: number }> {
    this.isCut = false;
    return this.send('restore');
  }

  /** Stops the proxy process. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.child.ref(); // until it is gone
    this.child.kill('SIGKILL');
    await exited;
  }
}
