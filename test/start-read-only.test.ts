import postgres from 'postgres';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

/**
 * A daemon started while Postgres takes no writes for now (a standby just after a failover, a
 * read-only default) with no migration due: it starts and serves what needs no write, and sells
 * once writes come back, as a running daemon does. It failed at the migrator's first step (a
 * CREATE SCHEMA IF NOT EXISTS, a write even when the schema exists) with a message naming only
 * the query (a review's run).
 */
const { newPrefix } = testRedis();
const db = await testDb();
const admin = postgres(inject('pgAdminUrl'), { max: 1, onnotice: () => {} });
const dbName = new URL(db.url).pathname.slice(1);
afterAll(async () => {
  await admin.unsafe(`alter database "${dbName}" reset default_transaction_read_only`).catch(() => {});
  await admin.end({ timeout: 2 });
});

describe('a start on a Postgres that takes no writes', () => {
  it('starts with nothing to migrate, and sells once writes come back', { timeout: 60_000 }, async () => {
    const prefix = newPrefix();
    const first = await inProcessDaemon({ prefix, databaseUrl: db.url });
    expect((await first.call('PUT', '/v1/items/ro-start', { handler: 'seckill', config: { stock: 2 } })).status).toBe(201);
    await first.daemon.stop();
    await admin.unsafe(`alter database "${dbName}" set default_transaction_read_only = on`);
    await admin`select pg_terminate_backend(pid) from pg_stat_activity where datname = ${dbName}`;
    const d = await inProcessDaemon({ prefix, databaseUrl: db.url }); // before: "cannot be used: Failed query: CREATE SCHEMA…"
    expect((await d.call('GET', '/healthz', undefined, null)).status).toBe(200);
    expect((await d.call('GET', '/readyz', undefined, null)).body.checks.postgres).toBe('fail');
    const t = await d.call('POST', '/v1/items/ro-start/tickets', { userId: 'u1' }, SVC);
    expect(t.status).toBe(202);
    await admin.unsafe(`alter database "${dbName}" reset default_transaction_read_only`);
    expect(await waitFor(() => d.call('GET', `/v1/tickets/${t.body.ticketId}`, undefined, null).then((r) => r.body.state), (s) => s === 'succeeded', 30_000)).toBe('succeeded');
  });
});
