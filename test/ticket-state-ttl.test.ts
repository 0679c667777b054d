import { describe, expect, it } from 'vitest';
import { parseTicketId } from '../src/queue/ticket-id.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

const { redis, newPrefix } = testRedis();
const db = await testDb();
const prefix = newPrefix();
const { call } = await inProcessDaemon({ prefix, databaseUrl: db.url, env: { FLOODGATE_TICKET_STATE_TTL_MS: '1000' } });

describe("an ended ticket's state in Redis", () => {
  it('leaves Redis once its outcome is in Postgres, and the ticket reads the same from there', { timeout: 30_000 }, async () => {
    await call('PUT', '/v1/items/ttl', { handler: 'seckill', config: { stock: 5 } });
    const joined = await call('POST', '/v1/items/ttl/tickets', { userId: 'u1', payload: { address: 'x'.repeat(200) } }, SVC);
    const id = joined.body.ticketId as string;
    const seq = parseTicketId(id)!.seq;
    const done = await waitFor(() => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body), (v) => v.state === 'succeeded');
    // The payload goes when the ticket ends; the rest once the ledger row is committed and the TTL ran.
    expect(await redis.hexists(`${prefix}{ttl}:pl`, String(seq))).toBe(0);
    await waitFor(() => db.sql`select 1 from ticket_outcomes where item_id = 'ttl'`, (rows) => rows.length === 1);
    await waitFor(() => redis.exists(`${prefix}{ttl}:x:${seq}`), (n) => n === 0, 10_000);
    expect(await redis.exists(`${prefix}{ttl}:x:${seq}`)).toBe(0);
    const later = (await call('GET', `/v1/tickets/${id}`, undefined, null)).body;
    expect(later).toEqual(done);
    // Joining again still answers the earlier, terminal ticket (seckill: one per user).
    const again = await call('POST', '/v1/items/ttl/tickets', { userId: 'u1' }, SVC);
    expect(again.status).toBe(200);
    expect(again.body).toEqual(done);
  });
});
