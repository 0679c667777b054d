/**
 * A TCP proxy (node:net) between a client and a server that a bench can cut: `cut()` stops
 * listening (new connections are refused: ECONNREFUSED) and destroys every open pair (clients see
 * their sockets reset); `restore()` listens on the same port again. The chaos scenario puts it
 * between the daemon and Postgres; the fault and outage tests do the same, and one test puts it
 * before Redis to silence it. (The one TCP proxy of the repository: test/tcp-proxy.test.ts checks it.)
 *
 *   const proxy = await tcpProxy({ host: '127.0.0.1', port: 5432 });
 *   // DATABASE_URL=postgres://…@127.0.0.1:${proxy.port}/db
 *   await proxy.cut(); … await proxy.restore();
 */
import { readFileSync } from 'node:fs';
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
  /**
   * The open connections fall silent: from now on their chunks are dropped, both ways, and nothing
   * is closed — a client that gives up closes its side only, and the server keeps its end (and
   * whatever its session holds) until close(). What a path that drops packets looks like (a
   * partition, a failover that moved the address): no reset ever comes. New connections pass.
   */
  silence(): void;
  /**
   * The open connections' answers are dropped (server to client), their requests still pass: the
   * server does what it is asked and its replies are lost, as when a connection breaks after a
   * command ran and before its reply came (a cut() afterwards). New connections pass both ways.
   */
  dropReplies(): void;
  close(): Promise<void>;
}

export async function tcpProxy(target: { host: string; port: number }, listenPort = 0): Promise<TcpProxy> {
  const open = new Set<Socket>();
  let accepted = 0;
  let isCut = false;
  let server: Server;
  let port = listenPort;

  /** Sockets of silenced pairs: nothing read from them is passed on, and a close is not either. */
  const silent = new Set<Socket>();
  /** The server side of each open pair, and those whose chunks are dropped (dropReplies). */
  const upstreams = new Set<Socket>();
  const muted = new Set<Socket>();

  const onConnection = (client: Socket) => {
    accepted++;
    const upstream = connect(target.port, target.host);
    open.add(client).add(upstream);
    upstreams.add(upstream);
    upstream.once('close', () => (upstreams.delete(upstream), muted.delete(upstream)));
    const end = (closing: Socket) => {
      if (silent.has(closing)) {
        // Neither side hears of the other's close: the server's end stays open until close().
        closing.destroy();
        open.delete(closing);
        return;
      }
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    for (const s of [client, upstream]) {
      s.setNoDelay(true);
      s.on('error', () => end(s));
      s.on('close', () => end(s));
    }
    forward(client, upstream);
    forward(upstream, client);
  };
  let delayMs = 0;
  /**
   * Passes `from`'s chunks to `to` (with backpressure), or each `delayMs` after it came, in order:
   * a FIFO per direction drained by one timer. (A timer per chunk could reorder them: Node files a
   * timer under its duration, counted from the event loop's cached time, so a chunk whose duration
   * came out a millisecond shorter could fire before the one ahead of it, and a Postgres stream
   * with two chunks swapped leaves its client waiting for good.)
   */
  function forward(from: Socket, to: Socket) {
    const held: { at: number; chunk: Buffer }[] = [];
    let timer: NodeJS.Timeout | null = null;
    let ended = false;
    const pump = () => {
      timer = null;
      while (held.length && held[0].at <= Date.now()) {
        const { chunk } = held.shift()!;
        if (to.writable && !silent.has(from) && !muted.has(from)) to.write(chunk);
      }
      if (held.length) timer = setTimeout(pump, held[0].at - Date.now());
      else if (ended && to.writable) to.end();
    };
    from.on('data', (chunk: Buffer) => {
      if (silent.has(from) || muted.has(from)) return;
      if (!delayMs && !held.length) {
        if (!to.write(chunk)) from.pause(), to.once('drain', () => from.resume());
        return;
      }
      // Never ahead of a chunk held before it (the delay may have been lowered since).
      held.push({ at: Math.max(Date.now() + delayMs, held.at(-1)?.at ?? 0), chunk });
      timer ??= setTimeout(pump, held[0].at - Date.now());
    });
    from.on('end', () => {
      if (silent.has(from)) return;
      ended = true;
      if (!held.length && to.writable) to.end();
    });
    to.on('close', () => {
      if (timer) clearTimeout(timer);
      timer = null;
      held.length = 0;
    });
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
    silent.clear();
    muted.clear();
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
    silence() {
      for (const s of open) silent.add(s);
    },
    dropReplies() {
      for (const s of upstreams) muted.add(s);
    },
    async close() {
      dropAll();
      if (!isCut) await stopListening();
      isCut = true;
    },
  };
}

/** A proxy in front of the server a URL names (`postgres://`, `redis://`), and the URL through it. */
export async function proxyFor(url: string): Promise<{ proxy: TcpProxy; url: string }> {
  const u = new URL(url);
  // On a port of its own below the ephemeral range: while cut, an ephemeral one can be taken by
  // any client socket or listen(0) on the machine (another test's proxy, a daemon's HTTP port), and
  // a daemon told to wait for its store reached that instead, or the restore found it in use.
  const proxy = await tcpProxy({ host: u.hostname, port: Number(u.port || (u.protocol.startsWith('redis') ? 6379 : 5432)) }, await freePort());
  u.port = String(proxy.port);
  return { proxy, url: u.toString() };
}

/**
 * A loopback port for a server a test starts: nothing listens on it now, and it lies below the
 * kernel's ephemeral range, so no outgoing connection can take it before the server binds it (a
 * port from listen(0) is an ephemeral one: an embedded Postgres and a cluster's redis-server lost
 * theirs to client sockets in clean-clone runs). Each vitest worker draws from its own slice.
 */
const handedOut = new Set<number>();

export async function freePort(opts: { /** A Redis Cluster node: its bus port (port + 10000) must be free as well, and below the range too. */ bus?: boolean } = {}): Promise<number> {
  let ephemeralFrom = 32768;
  try {
    ephemeralFrom = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || ephemeralFrom;
  } catch {
    /* not Linux: the usual start of the range */
  }
  const from = 10_000;
  const slices = 8;
  const to = opts.bus ? ephemeralFrom - 10_000 : ephemeralFrom;
  const size = Math.max(100, Math.floor((to - from) / slices));
  const base = from + ((Number(process.env.VITEST_POOL_ID ?? 1) - 1) % slices) * size;
  for (let tries = 0; tries < 200; tries++) {
    const port = base + Math.floor(Math.random() * size);
    const wants = opts.bus ? [port, port + 10_000] : [port];
    // Not one handed out already in this worker: its server may not have bound it yet.
    if (wants.some((p) => handedOut.has(p))) continue;
    if (!(await bindable(port)) || (opts.bus && !(await bindable(port + 10_000)))) continue;
    for (const p of wants) handedOut.add(p);
    return port;
  }
  throw new Error(`no free port in ${base}–${base + size - 1}`);
}

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/**
 * Runs `call` with its reply lost: sent through `proxy`, done by the server (`done` says so), then
 * the connection cut and the proxy listening again. Resolves to how the call settled.
 */
export async function replyLost<T>(proxy: TcpProxy, call: () => Promise<T>, done: () => Promise<boolean>): Promise<PromiseSettledResult<T>> {
  proxy.dropReplies();
  const p = call().then(
    (value) => ({ status: 'fulfilled' as const, value }),
    (reason: unknown) => ({ status: 'rejected' as const, reason }),
  );
  for (const until = Date.now() + 5000; !(await done()); await new Promise((r) => setTimeout(r, 5))) if (Date.now() > until) throw new Error('the server never ran the call');
  await proxy.cut();
  await proxy.restore();
  return p;
}
