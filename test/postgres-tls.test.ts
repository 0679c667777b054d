import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { afterAll, describe, expect, it } from 'vitest';
import postgres from 'postgres';
import { connectDb } from '../src/db/client.js';
import { tlsModeOf } from '../src/db/watched-sockets.js';
import { testDb } from './support/db.js';
import { freePort, proxyFor } from './support/proxy.js';

// Postgres over TLS: a terminator of the test's own (a self-signed certificate) answers the
// SSLRequest and decrypts into a TCP proxy in front of the test's database, which it can silence.
const db = await testDb();
const { proxy } = await proxyFor(db.url);
// A test-only key and self-signed certificate (CN=localhost, valid 100 years), made with
// `openssl req -x509 -newkey rsa:2048 -nodes -days 36500 -subj /CN=localhost`.
const key = readFileSync(new URL('./fixtures/tls/key.pem', import.meta.url));
const cert = readFileSync(new URL('./fixtures/tls/cert.pem', import.meta.url));
let handshakes = 0;
/** A TLS terminator on `port` (0: any) in front of the proxy. */
async function terminator(port = 0) {
  const open = new Set<net.Socket>();
  const server = net.createServer((client) => {
    open.add(client);
    client.on('error', () => {});
    client.once('data', () => {
      // The SSLRequest: yes, then TLS on the same connection, decrypted into the proxy.
      client.write('S');
      const secure = new tls.TLSSocket(client, { isServer: true, key, cert });
      secure.on('error', () => {});
      secure.once('secure', () => handshakes++);
      const upstream = net.connect(proxy.port, '127.0.0.1');
      open.add(upstream);
      upstream.on('error', () => {});
      secure.pipe(upstream).pipe(secure);
      secure.on('close', () => upstream.destroy());
      upstream.on('close', () => secure.destroy());
    });
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: async () => {
      for (const s of open) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}
const front = await terminator();
const tlsPort = front.port;
afterAll(async () => {
  await front.close();
  await proxy.close();
});

const urlWith = (port: number, query: string) => {
  const u = new URL(db.url);
  u.port = String(port);
  u.search = query;
  return u.toString();
};
const TIMEOUT_MS = 1500;

describe('Postgres over TLS', () => {
  it('encrypts as sslmode=require asks, and gives up on a connection that falls silent', { timeout: 30_000 }, async () => {
    const handle = connectDb(urlWith(tlsPort, '?sslmode=require'), { max: 1, timeoutMs: TIMEOUT_MS });
    try {
      const [{ n }] = await handle.sql`select ${41}::int + 1 as n`;
      expect(n).toBe(42);
      expect(handshakes).toBeGreaterThanOrEqual(1);
      proxy.silence();
      const at = performance.now();
      const err = await handle.sql`select ${2}::int as m, 'x' as y`.then(() => null, (e: { code?: string }) => e);
      expect(err?.code).toBe('ETIMEDOUT');
      expect(performance.now() - at).toBeLessThan(TIMEOUT_MS + 10_000); // (the fault: minutes)
      // A new connection passes (only the open ones fell silent).
      const [again] = await handle.sql`select 7 as n`;
      expect(again.n).toBe(7);
    } finally {
      await handle.sql.end({ timeout: 0 });
    }
  });

  it('checks the certificate unless the mode says not to (verify-full refuses a self-signed one)', async () => {
    const handle = connectDb(urlWith(tlsPort, '?sslmode=verify-full'), { max: 1, timeoutMs: TIMEOUT_MS });
    try {
      const err = await handle.sql`select 1`.then(() => null, (e: { code?: string }) => e);
      expect(err?.code).toMatch(/SELF_SIGNED|UNABLE_TO_VERIFY|CERT/);
    } finally {
      await handle.sql.end({ timeout: 0 });
    }
  });

  it('goes on in plain text with sslmode=prefer when the server has no TLS, and refuses with sslmode=require', async () => {
    const plainPort = Number(new URL(db.url).port || 5432);
    const prefer = connectDb(urlWith(plainPort, '?sslmode=prefer'), { max: 1, timeoutMs: TIMEOUT_MS });
    const require = connectDb(urlWith(plainPort, '?sslmode=require'), { max: 1, timeoutMs: TIMEOUT_MS });
    try {
      const [{ n }] = await prefer.sql`select 1 as n`;
      expect(n).toBe(1);
      const err = await require.sql`select 1`.then(() => null, (e: { code?: string }) => e);
      expect(err?.code).toBe('SSL_NOT_SUPPORTED');
    } finally {
      await prefer.sql.end({ timeout: 0 });
      await require.sql.end({ timeout: 0 });
    }
  });

  it('keeps its pool through failed connects: a server that is not there yet fails each query, and is used once it is', { timeout: 30_000 }, async () => {
    const port = await freePort();
    const handle = connectDb(urlWith(port, '?sslmode=require'), { max: 2, timeoutMs: TIMEOUT_MS });
    try {
      // More failures than the pool has connections: a connect that failed had kept its slot for good.
      for (let i = 0; i < 4; i++) {
        const err = await handle.sql`select 1`.then(() => null, (e: { code?: string }) => e);
        expect(err?.code).toBe('ECONNREFUSED');
      }
      const late = await terminator(port);
      try {
        const [{ n }] = await handle.sql`select 5 as n`;
        expect(n).toBe(5);
      } finally {
        await handle.sql.end({ timeout: 0 });
        await late.close();
      }
    } finally {
      await handle.sql.end({ timeout: 0 });
    }
  });

  it('reads the TLS mode as postgres.js does, from a URL with several hosts too', () => {
    const modeOf = (url: string) => {
      const sql = postgres(url, { max: 1 });
      void sql.end({ timeout: 0 });
      return tlsModeOf(sql.options as never);
    };
    expect(modeOf('postgres://u@h1:5432,h2:5433/db?sslmode=require')).toBe('require');
    expect(modeOf('postgres://u@h/db?ssl=verify-full')).toBe('verify-full');
    expect(modeOf('postgres://u@h/db?sslrootcert=system')).toBe('verify-full');
    expect(modeOf('postgres://u@h/db?sslmode=disable')).toBe(false);
    expect(modeOf('postgres://u@h/db')).toBe(false);
    // What only postgres.js can set up stays with it.
    expect(modeOf('postgres://u@h/db?sslmode=require&sslnegotiation=direct')).toBe(null);
  });
});
