import { connect, createServer, type Socket } from 'node:net';
import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { isTypeFetchFailure } from '../src/db/faults.js';
import { testDb } from './support/db.js';

/**
 * postgres.js runs an array-type query on each new connection and drops its promise
 * (src/db/faults.ts): reset the connection right then, through a proxy that cuts the first
 * connection as soon as the client sends that query, and see what escapes.
 */
const db = await testDb();
const target = new URL(db.url);
const sockets = new Set<Socket>();
let cut = 0;
const server = createServer((client) => {
  const upstream = connect(Number(target.port || 5432), target.hostname);
  sockets.add(client).add(upstream);
  const end = () => (client.destroy(), upstream.destroy());
  for (const s of [client, upstream]) s.on('error', end).on('close', end);
  client.on('data', (chunk) => {
    if (cut === 0 && chunk.includes('pg_catalog.pg_type')) {
      cut++;
      client.resetAndDestroy();
      upstream.destroy();
      return;
    }
    upstream.write(chunk);
  });
  upstream.on('data', (chunk) => client.write(chunk));
});
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise((r) => server.close(r));
});

describe("postgres.js's dropped type-fetch promise", () => {
  it('escapes as an unhandled rejection that isTypeFetchFailure names, and the pool goes on with a new connection', async () => {
    const via = new URL(db.url);
    via.port = String((server.address() as { port: number }).port);
    const sql = postgres(via.toString(), { max: 1, onnotice: () => {} });
    const escaped = new Promise<unknown>((resolve) => process.once('unhandledRejection', resolve));
    try {
      // The first query waits behind the reset connection and may fail with it; the next one connects anew.
      await sql`select 1 as one`.catch(() => null);
      const reason = await escaped;
      expect(cut).toBe(1);
      expect(isTypeFetchFailure(reason)).toBe(true);
      expect(isTypeFetchFailure(new Error('read ECONNRESET'))).toBe(false);
      expect(await sql`select ${['a', 'b']}::text[] as xs`).toEqual([{ xs: ['a', 'b'] }]);
    } finally {
      await sql.end({ timeout: 1 });
    }
  });
});
