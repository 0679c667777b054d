import net from 'node:net';
import tls from 'node:tls';
import { CANCEL_CODE, giveUpWhenSilent, postgresExchanges } from '../kernel/silent-socket.js';

/** Modes that encrypt without checking the server's certificate (postgres.js's reading of them). */
const UNVERIFIED = new Set(['require', 'allow', 'prefer']);
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]); // length 8, code 80877103

/**
 * postgres.js's sockets, each given up once it has owed an answer for `timeoutMs` with no byte
 * coming (kernel/silent-socket.ts; postgres.js has no query timeout): an answer is owed for every
 * exchange sent until its ReadyForQuery comes (and for a Flush, until its answer ends), so an
 * answer that stopped halfway counts too. ETIMEDOUT counts as Postgres lost (kernel/pg-lost.ts):
 * the sale path waits and retries as after a cut. A single statement that runs longer is given up
 * too (the daemon runs none; migrations run on connections without the watch).
 *
 * With TLS (`ssl`: the mode postgres.js read from the URL or PGSSL, tlsModeOf) the socket is
 * upgraded here — the SSLRequest, then TLS as postgres.js would set it up: `require`, `allow` and `prefer` without checking the
 * certificate, any other mode checking it and the host name; `prefer` goes on in plain text when
 * the server has no TLS — and postgres.js is given the encrypted socket with its own TLS off, so
 * the watch sees the protocol's bytes. (postgres.js's own TLS wraps the socket and reads past it,
 * where no watch can see.) The upgrade has `connectTimeoutMs`, as postgres.js's connect does.
 */
export function watchedSockets(timeoutMs: number, ssl: string | true | false, connectTimeoutMs: number) {
  let next = 0;
  return async (o: { host: string[]; port: number[]; path?: string | false }) => {
    const i = next++ % o.host.length;
    const host = o.host[i];
    const raw = o.path ? net.connect(o.path) : net.connect(o.port[i], host);
    let socket: net.Socket = raw;
    try {
      // Connected, or failed, before it is handed over: postgres.js listens for its errors only
      // after this function's promise settles, and an error emitted before that (EMFILE: every file
      // descriptor of the process in use, as under a flood of connections) had no listener and
      // ended the daemon (a review: exit 1 within 90 ms of Postgres ending its sessions).
      if (ssl) socket = await upgrade(raw, host, ssl, connectTimeoutMs);
      else await opened(raw, connectTimeoutMs);
    } catch (err) {
      raw.destroy();
      // Never a rejection: postgres.js would keep the connection "connecting" for good (a pool
      // slot lost per failed attempt). A socket that fails once postgres.js listens to it goes
      // through its error, close, backoff and reconnect like any other.
      return failing(err as Error);
    }
    // What postgres.js's own socket carries (its error messages name them).
    Object.assign(socket, { host, port: o.port[i] });
    const exchanges = postgresExchanges();
    // Given up, its statement is cancelled on the server: the server did not know the client had
    // gone, and a statement waiting on a lock (an operator's LOCK TABLE, a VACUUM FULL) kept its
    // session, another every 15 s, for as long as the lock was held (a review: 4 sessions to 20).
    exchanges.onGiveUp = () => {
      const key = exchanges.backendKey;
      if (key) cancelOnServer(() => (o.path ? net.connect(o.path) : net.connect(o.port[i], host)), key);
    };
    giveUpWhenSilent(socket, timeoutMs, 'Postgres', exchanges);
    return socket;
  };
}

/**
 * Sends Postgres a CancelRequest for the session `key` names (its BackendKeyData), on a connection of
 * its own, and forgets it: best effort (a server that takes connections only over TLS may refuse it,
 * and the statement then runs on until it ends by itself). Bounded: the connection goes after 3 s.
 */
function cancelOnServer(connect: () => net.Socket, key: Buffer): void {
  const request = Buffer.alloc(16);
  request.writeInt32BE(16, 0);
  request.writeInt32BE(CANCEL_CODE, 4);
  key.copy(request, 8, 0, 8);
  const c = connect();
  c.setTimeout(3000, () => c.destroy());
  c.on('error', () => {});
  c.on('connect', () => c.end(request));
}

/**
 * A socket that takes writes and fails with `err` once its new owner has listened and sent: two
 * turns later, after postgres.js's deferred write of its StartupMessage (a close before that write
 * ran left postgres.js's write timer set for good, and every later connect of that slot sent
 * nothing: a CONNECT_TIMEOUT once the server was back).
 */
function failing(err: Error): net.Socket {
  const s = new net.Socket();
  s.write = (() => true) as net.Socket['write'];
  setImmediate(() => setImmediate(() => s.destroy(err)));
  return s;
}

/** Settles `run` within `ms` (a CONNECT_TIMEOUT naming `what` after it), as postgres.js's connect timeout would. */
const within = <T>(what: string, ms: number, run: (resolve: (v: T) => void, reject: (e: Error) => void) => void) =>
  new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(Object.assign(new Error(`Postgres: ${what} took over ${ms} ms`), { code: 'CONNECT_TIMEOUT' })), ms);
    run(
      (v) => (clearTimeout(timer), resolve(v)),
      (e) => (clearTimeout(timer), reject(e)),
    );
  });

/** The socket's connection made (postgres.js's connect timer starts only once it has the socket). */
async function opened(raw: net.Socket, ms: number): Promise<void> {
  await within<void>('the connection', ms, (resolve, reject) => {
    raw.once('connect', () => resolve());
    raw.once('error', reject);
  });
  raw.removeAllListeners('error');
  raw.removeAllListeners('connect');
}

async function upgrade(raw: net.Socket, host: string, ssl: string | true, ms: number): Promise<net.Socket> {
  raw.write(SSL_REQUEST);
  const answer = await within<number>('the TLS request', ms, (resolve, reject) => {
    raw.once('data', (d: Buffer) => resolve(d[0]));
    raw.once('error', reject);
    raw.once('close', () => reject(Object.assign(new Error('Postgres closed the connection at the TLS request'), { code: 'CONNECTION_CLOSED' })));
  });
  raw.removeAllListeners();
  if (answer !== 0x53) {
    if (ssl === 'prefer') return raw;
    throw Object.assign(new Error('The Postgres server does not support TLS, which the URL requires (sslmode)'), { code: 'SSL_NOT_SUPPORTED' });
  }
  const options: tls.ConnectionOptions = { socket: raw, servername: net.isIP(host) ? undefined : host };
  if (typeof ssl === 'string' && UNVERIFIED.has(ssl)) options.rejectUnauthorized = false;
  const secure = tls.connect(options);
  try {
    return await within<net.Socket>('the TLS handshake', ms, (resolve, reject) => {
      secure.once('secureConnect', () => {
        secure.removeAllListeners('error');
        resolve(secure);
      });
      secure.once('error', reject);
    });
  } catch (err) {
    secure.on('error', () => {});
    secure.destroy();
    throw err;
  }
}

/**
 * The TLS mode postgres.js reads for `url` (its `sslmode`/`ssl` parameter, `sslrootcert=system`,
 * PGSSL; hosts lists and all), when the watch can set that TLS up itself: false for none, null
 * when postgres.js must do it (a TLS options object, `sslnegotiation=direct`).
 */
export function tlsModeOf(parsed: { ssl?: unknown; sslnegotiation?: unknown }): string | true | false | null {
  const { ssl } = parsed;
  if (parsed.sslnegotiation === 'direct') return ssl ? null : false;
  if (!ssl) return false;
  return ssl === true || typeof ssl === 'string' ? ssl : null;
}
