/**
 * A TCP proxy (node:net) between a client and a server that a bench can cut: `cut()` stops
 * listening (new connections are refused: ECONNREFUSED) and destroys every open pair (clients see
 * their sockets reset); `restore()` listens on the same port again. The chaos scenario puts it
 * between the daemon and Postgres; the fault and outage tests do the same. (The one TCP proxy of the
 * repository: test/tcp-proxy.test.ts checks it.)
 *
 *   const proxy = await tcpProxy({ host: '127.0.0.1', port: 5432 });
 *   // DATABASE_URL=postgres://…@127.0.0.1:${proxy.port}/db
 *   await proxy.cut(); … await proxy.restore();
 */
import net, { connect, createServer, type Server, type Socket } from 'node:net';

export interface TcpProxy {
  readonly port: number;
  readonly isCut: boolean;
  /** Connections accepted since the start (refused ones are never seen). */
  readonly accepted: number;
  cut(): Promise<void>;
  restore(): Promise<void>;
  /** Holds every chunk this long before passing it on, both ways, in order (a slow link). */
  delay(ms: number): void;
  close(): Promise<void>;
}

export async function tcpProxy(target: { host: string; port: number }, listenPort = 0): Promise<TcpProxy> {
  const open = new Set<Socket>();
  let accepted = 0;
  let isCut = false;
  let server: Server;
  let port = listenPort;

  const onConnection = (client: Socket) => {
    accepted++;
    const upstream = connect(target.port, target.host);
    open.add(client).add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    for (const s of [client, upstream]) {
      s.setNoDelay(true);
      s.on('error', end);
      s.on('close', end);
    }
    forward(client, upstream);
    forward(upstream, client);
  };
  let delayMs = 0;
  /** Passes `from`'s chunks to `to` (with backpressure), or each `delayMs` after it came, never overtaking one before it. */
  function forward(from: Socket, to: Socket) {
    let last = 0;
    from.on('data', (chunk) => {
      if (!delayMs && last <= Date.now()) {
        if (!to.write(chunk)) from.pause(), to.once('drain', () => from.resume());
        return;
      }
      const at = Math.max(Date.now() + delayMs, last);
      last = at;
      setTimeout(() => to.writable && to.write(chunk), at - Date.now());
    });
    from.on('end', () => setTimeout(() => to.writable && to.end(), Math.max(0, last - Date.now())));
  }

  const listen = () =>
    new Promise<void>((resolve, reject) => {
      server = createServer(onConnection);
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        const addr = server.address();
        port = typeof addr === 'object' && addr ? addr.port : port;
        resolve();
      });
    });
  const stopListening = () => new Promise<void>((resolve) => server.close(() => resolve()));
  const dropAll = () => {
    // A reset is what a server that went away looks like. A socket already half-closed is only
    // destroyed: resetting it leaves its handle open for good (seen on Node 20: the leak check,
    // test/support/leak-check.ts, caught it).
    for (const s of open) (s.writableEnded || s.readableEnded ? s.destroy() : s.resetAndDestroy());
    open.clear();
  };

  await listen();
  return {
    get port() {
      return port;
    },
    get isCut() {
      return isCut;
    },
    get accepted() {
      return accepted;
    },
    async cut() {
      if (isCut) return;
      isCut = true;
      const closed = stopListening();
      dropAll();
      await closed;
    },
    async restore() {
      if (!isCut) return;
      await listen();
      isCut = false;
    },
    delay(ms) {
      delayMs = ms;
    },
    async close() {
      dropAll();
      if (!isCut) await stopListening();
      isCut = true;
    },
  };
}

/** A loopback port nothing listens on right now. */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', () => resolve()));
  const { port } = s.address() as net.AddressInfo;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}
