import net from 'node:net';

export interface TcpProxy {
  port: number;
  /** Refuses new connections and resets the open ones, as a server that went away. */
  cut(): Promise<void>;
  /** Listens again on the same port. */
  restore(): Promise<void>;
  /** Holds every chunk this long before passing it on, both ways, in order (a slow link). */
  delay(ms: number): void;
  close(): Promise<void>;
}

/** A TCP proxy on a free loopback port to `target`, which a test can cut and restore. */
export async function tcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const open = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    for (const s of [client, upstream]) {
      open.add(s);
      s.on('close', () => open.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    forward(client, upstream);
    forward(upstream, client);
  });
  let delayMs = 0;
  /** Passes `from`'s chunks to `to`, each `delayMs` after it came (a chunk never overtakes one before it). */
  function forward(from: net.Socket, to: net.Socket) {
    let last = 0;
    from.on('data', (chunk) => {
      if (!delayMs) return void to.write(chunk);
      const at = Math.max(Date.now() + delayMs, last);
      last = at;
      setTimeout(() => to.writable && to.write(chunk), at - Date.now());
    });
    from.on('end', () => setTimeout(() => to.end(), Math.max(0, last - Date.now())));
  }
  const listen = (port: number) =>
    new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve((server.address() as net.AddressInfo).port);
      });
    });
  const port = await listen(0);
  let listening = true;

  async function cut() {
    if (!listening) return;
    listening = false;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of open) s.resetAndDestroy();
    await closed;
  }
  return {
    port,
    cut,
    async restore() {
      if (listening) return;
      await listen(port);
      listening = true;
    },
    delay(ms) {
      delayMs = ms;
    },
    close: cut,
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
