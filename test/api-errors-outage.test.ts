import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { toFloodgateError } from '../src/api/errors.js';
import { connectDb } from '../src/db/client.js';
import { createItemsStore } from '../src/db/items-store.js';
import { testDb } from './support/db.js';

const SECRET = 'Bearer downstream-secret-7f3a';
const row = (itemId: string) => ({ itemId, handler: 'webhook', config: { url: 'http://x.test', headers: { authorization: SECRET } }, gate: {} });

function capturingLogger() {
  const lines: string[] = [];
  return { log: pino({ level: 'info' }, { write: (s: string) => void lines.push(s) }), lines };
}

const db = await testDb();
const down = connectDb('postgres://postgres@127.0.0.1:1/none', { max: 1 });
afterAll(() => down.close());

describe('errors from Postgres behind drizzle', () => {
  it('answers 503 for a wrapped connection error and logs no query parameters', async () => {
    const err = await createItemsStore(down.db).upsert(row('a')).catch((e: unknown) => e);
    expect((err as Error).message).toContain(SECRET); // what drizzle puts in its message
    const { log, lines } = capturingLogger();
    const fe = toFloodgateError(err, log);
    expect(fe.status).toBe(503);
    expect(fe.code).toBe('unavailable');
    expect(fe.retryAfterSec).toBeGreaterThan(0);
    expect(lines.length).toBe(1);
    expect(lines.join('')).not.toContain('downstream-secret');
    expect(lines.join('')).toContain('ECONNREFUSED');
  });

  it('answers 503 when Postgres gave the call up for now (a statement timeout), not 500', async () => {
    const timed = connectDb(db.url, { max: 1 });
    const err = await timed.sql`set statement_timeout = 50; select pg_sleep(2)`.simple().catch((e: unknown) => e);
    await timed.close();
    expect((err as { code?: string }).code).toBe('57014');
    const fe = toFloodgateError(err, capturingLogger().log);
    expect(fe.status).toBe(503);
    expect(fe.code).toBe('unavailable');
  });

  it('answers 500 for an unexpected one and logs its code, not its parameters or message', async () => {
    // Postgres refuses \u0000 in jsonb: a failure that is nobody's outage.
    const bad = { ...row('b'), config: { headers: { authorization: SECRET }, note: 'a\u0000b' } };
    const err = await createItemsStore(db.db).upsert(bad).catch((e: unknown) => e);
    const { log, lines } = capturingLogger();
    const fe = toFloodgateError(err, log);
    expect(fe.status).toBe(500);
    expect(lines.length).toBe(1);
    const logged = JSON.parse(lines[0]);
    expect(lines[0]).not.toContain('downstream-secret');
    expect(logged.msg).toBe('unexpected error');
    expect(logged.err.some((e: { code?: string }) => typeof e.code === 'string' && /^22/.test(e.code))).toBe(true);
  });

  it('answers 503 for the errors of a Redis connection that fails fast', () => {
    const { log } = capturingLogger();
    for (const message of ["Stream isn't writeable and enableOfflineQueue options is false", 'Command timed out', 'Connection is closed.'])
      expect(toFloodgateError(new Error(message), log).status, message).toBe(503);
  });

  it("answers 503 for a Redis Cluster's failover under way, and 500 for a script's own error", () => {
    const { log } = capturingLogger();
    for (const message of ['CLUSTERDOWN The cluster is down', 'TRYAGAIN Multiple keys request during rehashing of slot', 'MOVED 3999 127.0.0.1:6381', 'Too many Cluster redirections. Last error: Error: Connection is closed.', 'Failed to refresh slots cache.', 'Node is disconnected', 'Redis: the pipeline answered no reply for this command (redis/ioredis#1931)'])
      expect(toFloodgateError(new Error(message), log).status, message).toBe(503);
    expect(toFloodgateError(new Error('ERR user_script:12: attempt to compare nil with number'), log).status).toBe(500);
  });
});
