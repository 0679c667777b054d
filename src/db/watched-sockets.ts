import net from 'node:net';
import tls from 'node:tls';
import { giveUpWhenSilent, postgresExchanges } from '../kernel/silent-socket.js';

/** The TLS a Postgres URL asks for, as postgres.js reads it (`sslmode`, else `ssl`; `sslrootcert=system` is verify-full); false for none. */
export function sslModeOf(url: string): string | false {
  const q = new URL(url).searchParams;
  const mode = q.get('sslrootcert') === 'system' ? 'verify-full' : (q.get('sslmode') ?? q.get('ssl'));
  return mode === null || mode === 'disable' || mode === 'false' ? false : mode;
}

/** Modes that encrypt without checking the server's certificate (postgres.js's reading of them). */
const UNVERIFIED = new Set(['require', 'allow', 'prefer']);
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]); // length 8, code 80877103

/**
 * postgres.js's sockets, each given up once it has owed an answer for `timeoutMs` with no byte
 * coming (kernel/silent-socket.ts; postgres.js has no query timeout): an answer is owed for every
 * exchange sent until its ReadyForQuery comes (and for a Flush, until its answer begins), so an
 * answer that stopped halfway counts too. ETIMEDOUT counts as Postgres lost (kernel/pg-lost.ts):
 * the sale path waits and retries as after a cut. A single statement that runs longer is given up
 * too (the daemon runs none; migrations run on connections without the watch).
 *
 * With TLS (`ssl`, from the URL: sslModeOf) the socket is upgraded here — the SSLRequest, then
 * TLS as postgres.js would set it up: `require`, `allow` and `prefer` without checking the
 * certificate, any other mode checking it and the host name; `prefer` goes on in plain text when
 * the server has no TLS — and postgres.js is given the encrypted socket with its own TLS off, so
 * the watch sees the protocol's bytes. (postgres.js's own TLS wraps the socket and reads past it,
 * where no watch can see.) The upgrade has `connectTimeoutMs`, as postgres.js's connect does.
 */
export function watchedSockets(timeoutMs: number, ssl: string | false, connectTimeoutMs: number) {
  let next = 0;
  return async (o: { host: string[]; port: number[]; path?: string | false }) => {
    const i = next++ % o.host.length;
    const host = o.host[i];
    const raw = o.path ? net.connect(o.path) : net.connect(o.port[i], host);
    // What postgres.js's own socket carries.
    Object.assign(raw, { host, port: o.port[i] });
    let socket: net.Socket = raw;
    if (ssl) {
      try {
        socket = await upgrade(raw, host, ssl, connectTimeoutMs);
      } catch (err) {
        raw.destroy();
        throw err;
      }
    }
    giveUpWhenSilent(socket, timeoutMs, 'Postgres', postgresExchanges());
    return socket;
  };
}

async function upgrade(raw: net.Socket, host: string, ssl: string, ms: number): Promise<net.Socket> {
  const within = <T>(what: string, run: (resolve: (v: T) => void, reject: (e: Error) => void) => void) =>
    new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(Object.assign(new Error(`Postgres: ${what} took over ${ms} ms`), { code: 'CONNECT_TIMEOUT' })), ms);
      run(
        (v) => (clearTimeout(timer), resolve(v)),
        (e) => (clearTimeout(timer), reject(e)),
      );
    });
  raw.write(SSL_REQUEST);
  const answer = await within<number>('the TLS request', (resolve, reject) => {
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
  if (UNVERIFIED.has(ssl)) options.rejectUnauthorized = false;
  const secure = tls.connect(options);
  return within<net.Socket>('the TLS handshake', (resolve, reject) => {
    secure.once('secureConnect', () => {
      secure.removeAllListeners('error');
      resolve(secure);
    });
    secure.once('error', reject);
  });
}
