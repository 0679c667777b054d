import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { ownRedis } from './support/redis-server.js';

/**
 * A rollback that takes a join no view of the item had seen: Redis restarts from a snapshot taken
 * just before it (an AOF `everysec` that lost its last moment). The daemon cannot tell from the
 * item's counters (they read as before the join), and the ticket's record it kept when it answered
 * the join still matched them: once another user's join took the seq again, the lost ticket's
 * poll read `waiting`, with a place, until the line reached it, where Redis holds no such ticket
 * (the README: its id answers 404, and its user joins again).
 */
const db = await testDb();
const server = await ownRedis();
const { call } = await inProcessDaemon({ prefix: 'fg:', databaseUrl: db.url, env: { REDIS_URL: server.url } });
const join = (userId: string) => call('POST', '/v1/items/ru/tickets', { userId }, SVC);
const poll = (id: string) => call('GET', `/v1/tickets/${id}`, undefined, null);

describe('a rollback past a join no view saw', () => {
  it('the lost ticket answers 404, not the place of the ticket another user got at its seq', { timeout: 60_000 }, async () => {
    expect((await call('PUT', '/v1/items/ru', { handler: 'external', gate: { mode: 'closed' } })).status).toBe(201);
    for (let i = 0; i < 5; i++) expect((await join(`u${i}`)).status).toBe(202);
    await waitFor(() => call('GET', '/v1/items/ru'), (r) => r.body.counts?.waiting === 5, 5_000);
    const admin = new Redis(server.url, { maxRetriesPerRequest: 1 });
    await admin.save();
    admin.disconnect();
    // Answered, then lost with Redis's last moment.
    const lost = (await join('amy')).body.ticketId as string;
    await server.kill();
    await server.start();
    await waitFor(() => call('GET', '/readyz', undefined, null), (r) => r.status === 200, 20_000);
    const other = await waitFor(() => join('bob'), (r) => r.status === 202, 20_000);
    expect(other.body.position).toBe(6);
    await waitFor(() => call('GET', '/v1/items/ru'), (r) => r.body.counts?.waiting === 6, 5_000);
    const r = await poll(lost);
    expect({ status: r.status, state: r.body.state, position: r.body.position }).toMatchObject({ status: 404 }); // before: 200, waiting, place 6
    expect((await poll(other.body.ticketId)).body).toMatchObject({ state: 'waiting', userId: 'bob', position: 6 });
  });
});
