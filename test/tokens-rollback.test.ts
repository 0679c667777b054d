import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { ownRedis } from './support/redis-server.js';

/**
 * A revocation is kept in Postgres and in Redis; a daemon reads Postgres's every 2 s and answers
 * introspection from what it read, then from Redis. Redis restarted from a snapshot taken before a
 * revoke made on another daemon (a rollback) lost the Redis half, and this daemon answered
 * `active` for the revoked token until its next read (a review: ~2 s; as long as Postgres is slow).
 * After a reconnect, an introspection about to answer `active` reads Postgres's revocations first.
 */
const db = await testDb();
const server = await ownRedis();
const env = { REDIS_URL: server.url };
const a = await inProcessDaemon({ prefix: 'fg:', databaseUrl: db.url, env });
const b = await inProcessDaemon({ prefix: 'fg:', databaseUrl: db.url, env });
const introspect = (d: typeof a, token: unknown) => d.call('POST', '/v1/tokens/introspect', { token }, SVC);

describe('a revoked token after a Redis rollback', () => {
  it('is inactive on every daemon at once, not only on the one that revoked it', { timeout: 60_000 }, async () => {
    expect((await a.call('PUT', '/v1/items/tok-rb', { handler: 'external' })).status).toBe(201);
    const { ticketId } = (await a.call('POST', '/v1/items/tok-rb/tickets', { userId: 'u1' }, SVC)).body;
    expect((await a.call('POST', '/v1/items/tok-rb/pull', { max: 1 }, SVC)).body.tickets).toHaveLength(1);
    const view = (await waitFor(() => a.call('GET', `/v1/tickets/${ticketId}`, undefined, null), (r) => typeof r.body.admissionToken === 'string', 5000)).body;
    const token = view.admissionToken as string;
    expect((await introspect(b, token)).body.active).toBe(true);

    // Redis's snapshot before the revoke; the revoke; Redis back at the snapshot.
    const admin = new Redis(server.url, { maxRetriesPerRequest: 1 });
    await admin.save();
    admin.disconnect();
    expect((await a.call('POST', '/v1/tokens/revoke', { token }, SVC)).status).toBe(200);
    await server.kill();
    await server.start();
    await waitFor(() => b.call('GET', '/readyz', undefined, null), (r) => r.status === 200, 20_000);

    // (Before: `active: true` here until b's next read of Postgres's revocations.)
    expect((await introspect(b, token)).body).toEqual({ active: false });
    expect((await introspect(a, token)).body).toEqual({ active: false });
  });
});
