import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { joinAll } from './support/joins.js';
import { testDb } from './support/db.js';
import { ticketRef } from '../src/kernel/ticket-ref.js';
import { itemKeys } from '../src/redis/keys.js';
import { parseTicketId } from '../src/queue/ticket-id.js';
import { testRedis } from './support/redis.js';

const { redis, newPrefix } = testRedis();
const db = await testDb();
const prefix = newPrefix();
const { call } = await inProcessDaemon({ prefix, databaseUrl: db.url });

describe('seckill', () => {
  it('sells exactly the stock to distinct users; everyone else reads rejected/sold_out', { timeout: 90_000 }, async () => {
    const stock = 50;
    await call('PUT', '/v1/items/sk1', { handler: 'seckill', config: { stock, shards: 4 }, gate: { mode: 'auto', maxInFlight: 16 } });
    const users = Array.from({ length: 400 }, (_, i) => `u${i % 300}`); // 300 users, 100 repeat joins
    // (A busy machine's 503 is asked again, as a client would: test/support/joins.ts.)
    const joins = await joinAll((userId) => call('POST', '/v1/items/sk1/tickets', { userId }, SVC), users, { batch: 50, also: [410] });
    const accepted = joins.filter((j) => j.status === 202 || j.status === 200);
    for (const j of joins) expect([200, 202, 410]).toContain(j.status);
    const ticketIds = [...new Set(accepted.map((j) => j.body.ticketId as string))];
    expect(ticketIds.length).toBeLessThanOrEqual(300);

    const views = await waitFor(
      () => Promise.all(ticketIds.map((id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body))),
      (vs) => vs.every((v) => v.state === 'succeeded' || v.state === 'rejected'),
      60_000,
    );
    const won = views.filter((v) => v.state === 'succeeded');
    expect(won.length).toBe(stock);
    expect(new Set(won.map((v) => v.userId)).size).toBe(stock);
    for (const v of views.filter((x) => x.state === 'rejected')) expect(v.outcome.reason).toBe('sold_out');
    for (const v of won) expect(v.outcome.result.orderId).toMatch(/^\d+$/);

    const orders = await db.sql`select user_id, ticket_id from orders where item_id = 'sk1'`;
    expect(orders.length).toBe(stock);
    expect(new Set(orders.map((o) => o.user_id)).size).toBe(stock);
    const [row] = await db.sql`select total, sold from item_stock where item_id = 'sk1'`;
    expect(row).toEqual({ total: stock, sold: stock });

    const item = (await call('GET', '/v1/items/sk1')).body;
    expect(item).toMatchObject({ state: 'sold_out', remaining: 0, counts: { succeeded: stock, waiting: 0, admitted: 0 } });
    const late = await call('POST', '/v1/items/sk1/tickets', { userId: 'late-comer' }, SVC);
    expect(late.status).toBe(410);
    expect(late.body.error.code).toBe('sold_out');
    // The outcome ledger: every ticket, with its times, including those the sell-out ended at once.
    const ledger = await waitFor(
      () => db.sql`select ticket_id, status, reason, joined_at, admitted_at, finished_at from ticket_outcomes where item_id = 'sk1'`,
      (rows) => rows.length >= ticketIds.length,
      60_000,
    );
    expect(ledger.length).toBe(ticketIds.length);
    expect(new Set(ledger.map((r) => r.ticket_id))).toEqual(new Set(ticketIds.map(ticketRef)));
    // Postgres holds refs, never a working ticket id.
    expect(orders.every((o) => !o.ticket_id.includes('.'))).toBe(true);
    expect(ledger.filter((r) => r.status === 'succeeded').length).toBe(stock);
    for (const r of ledger.filter((x) => x.status === 'succeeded')) {
      // (drizzle's driver hands timestamps back as strings)
      expect(Date.parse(r.joined_at)).toBeLessThanOrEqual(Date.parse(r.admitted_at));
      expect(Date.parse(r.admitted_at)).toBeLessThanOrEqual(Date.parse(r.finished_at));
    }
    expect(ledger.filter((r) => r.status === 'rejected').every((r) => r.reason === 'sold_out')).toBe(true);
    expect(ledger.some((r) => r.status === 'rejected' && r.admitted_at === null)).toBe(true);

    const winnerAgain = await call('POST', '/v1/items/sk1/tickets', { userId: won[0].userId }, SVC);
    expect(winnerAgain.status).toBe(200);
    expect(winnerAgain.body).toMatchObject({ ticketId: won[0].ticketId, state: 'succeeded' });
    // Self-limited: no controller reads shared latency samples for it, so none were written.
    expect(await redis.exists(itemKeys(prefix, 'sk1').samples)).toBe(0);
  });

  it('fails only the ticket whose order Postgres refuses, sells the others in its batch, and gives its unit back', async () => {
    await call('PUT', '/v1/items/sk-poison', { handler: 'seckill', config: { stock: 7 }, gate: { mode: 'closed' } });
    const joins = await Promise.all(Array.from({ length: 6 }, (_, i) => call('POST', '/v1/items/sk-poison/tickets', { userId: `p${i}` }, SVC)));
    // A payload the API would refuse, planted in Redis: as bytes that entered some other way would be.
    const seq = parseTicketId(joins[2].body.ticketId)!.seq;
    await redis.hset(itemKeys(prefix, 'sk-poison').payloads, String(seq), JSON.stringify({ note: 'a\u0000b' }));
    await call('PATCH', '/v1/items/sk-poison/gate', { mode: 'auto' });
    const views = await waitFor(
      () => Promise.all(joins.map((j) => call('GET', `/v1/tickets/${j.body.ticketId}`, undefined, null).then((r) => r.body))),
      (vs) => vs.every((v) => v.state === 'succeeded' || v.state === 'failed'),
    );
    expect(views.map((v) => v.state)).toEqual(['succeeded', 'succeeded', 'failed', 'succeeded', 'succeeded', 'succeeded']);
    expect(views[2].outcome.reason).toBe('sale_refused (22P05)');
    const [row] = await db.sql`select sold from item_stock where item_id = 'sk-poison'`;
    expect(row.sold).toBe(5);
    expect((await call('GET', '/v1/items/sk-poison')).body).toMatchObject({ state: 'open', remaining: 2 });
  });
});
