import { startRetention } from '../src/catalog/retention.js';
import { createLogger } from '../src/kernel/logger.js';
import { ticketRef } from '../src/kernel/ticket-ref.js';
import { itemKeys } from '../src/redis/keys.js';
import { createLedgerFeed } from '../src/service/outcome-ledger-feed.js';
import { startLedger } from '../src/service/outcome-ledger.js';
import { SERVICE, testApp } from './support/app.js';
import { lockOutcomes } from './support/ledger.js';
import postgres from 'postgres';
import { describe, expect, it } from 'vitest';

/**
 * The outcome ledger does not lose or strand what ended on a bad day: a cut entry whose expansion a
 * Redis read failed for a moment waits for the next round (it was parked, and every ticket the cut
 * ended lost its row for good: 404 once retention removed the item), and an item whose rows
 * Postgres would not take for longer than the active grace stays active until they are written
 * (it left the active set, and its entries waited for the next start).
 */
const t = await testApp();

describe('the outcome ledger, when a Redis read fails for a moment while a cut entry is expanded', () => {
  it("writes the cut's tickets once Redis answers again (not park the cut and lose them)", async () => {
    const clock = t.manualClock();
    const { call, queue, prefix, metrics, store } = t.build({ clock });
    const itemId = t.uniqueItem();
    expect((await call('PUT', `/v1/items/${itemId}`, { handler: 'external', gate: { mode: 'closed' } })).status).toBe(201);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await call('POST', `/v1/items/${itemId}/tickets`, { userId: `u${i}` }, SERVICE)).body.ticketId);
    expect((await call('DELETE', `/v1/items/${itemId}`)).status).toBe(200);
    expect(await t.redis.xlen(itemKeys(prefix, itemId).done)).toBe(1);

    // The ledger's own connection: one HGETALL (a ticket page of the cut) fails, as on a connection lost for a moment.
    const conn = t.redis.duplicate();
    let failOnce = true;
    const hgetall = conn.hgetall.bind(conn);
    (conn as unknown as { hgetall: unknown }).hgetall = (...args: unknown[]) => {
      if (failOnce) {
        failOnce = false;
        return Promise.reject(new Error('Connection is closed.'));
      }
      return (hgetall as (...a: unknown[]) => Promise<unknown>)(...args);
    };
    const ledger = startLedger(
      { queue, feed: createLedgerFeed(conn, prefix, 'zz-led'), sql: t.db.sql, log: createLogger('silent'), metrics },
      { everyMs: 3_600_000, batch: 100, busyElu: 1, maxDeferMs: 0 },
    );
    try {
      await ledger.drain().catch(() => {});
      await ledger.drain().catch(() => {});
      await ledger.drain().catch(() => {});
    } finally {
      await ledger.stop();
      conn.disconnect();
    }
    // Nothing parked: the entry waited for Redis.
    expect(await t.db.sql`select fields, error from ticket_outcomes_dead where item_id = ${itemId}`).toHaveLength(0);
    const rows = await t.db.sql`select ticket_id, status, reason from ticket_outcomes where item_id = ${itemId}`;
    // What the user sees once retention removed the item (24 h later): Postgres holds no end.
    clock.advance(25 * 3600_000);
    const retention = startRetention({ queue, store, clock, log: createLogger('silent') }, { everyMs: 3_600_000, retentionMs: 24 * 3600_000 });
    try {
      await retention.round();
    } finally {
      await retention.stop();
    }
    const poll = await call('GET', `/v1/tickets/${ids[0]}`, undefined, null);
    expect(new Set(rows.map((r) => r.ticket_id))).toEqual(new Set(ids.map(ticketRef)));
    expect(poll.status).toBe(200);
  });
});

describe('the outcome ledger, when Postgres inserts hit statement_timeout for a while', () => {
  it('writes the entries once Postgres takes them again', async () => {
    const clock = t.manualClock();
    const { call, queue, prefix, metrics } = t.build({ clock });
    const itemId = t.uniqueItem();
    expect((await call('PUT', `/v1/items/${itemId}`, { handler: 'external' })).status).toBe(201);
    for (let i = 0; i < 8; i++) await call('POST', `/v1/items/${itemId}/tickets`, { userId: `u${i}` }, SERVICE);
    for (const g of await queue.admissions.admit(itemId, 8, 1000)) await queue.admissions.settle(g.ticketId, { leaseId: g.leaseId, status: 'succeeded', result: { ok: 1 } });
    expect(await t.redis.xlen(itemKeys(prefix, itemId).done)).toBe(8);

    // The ledger's connection: statement_timeout (as an operator may set on the role). Each statement
    // is charged 20 s of the daemon's clock: what a statement_timeout of 20 s costs while a lock is held.
    const real = postgres(t.db.url, { max: 1, onnotice: () => {}, connection: { statement_timeout: 100 } });
    const sql = ((...args: Parameters<typeof real>) => {
      clock.advance(20_000);
      return (real as unknown as (...a: unknown[]) => unknown)(...args);
    }) as unknown as typeof real;
    const holder = postgres(t.db.url, { max: 1, onnotice: () => {} });
    const ledger = startLedger(
      { queue, feed: createLedgerFeed(t.redis, prefix, 'zz-led-slow', () => clock.now()), sql, log: createLogger('silent'), metrics },
      { everyMs: 3_600_000, batch: 100, busyElu: 1, maxDeferMs: 0 },
    );
    try {
      const { release, held } = await lockOutcomes(holder);
      await ledger.drain().catch(() => {});
      release();
      await held;
      // Postgres is fine again: the next rounds (every 500 ms in the daemon).
      for (let i = 0; i < 5; i++) {
        clock.advance(500);
        await ledger.drain();
      }
      const [n] = await t.db.sql`select count(*)::int as n from ticket_outcomes where item_id = ${itemId}`;
      expect(n.n).toBe(8);
    } finally {
      await ledger.stop();
      await Promise.all([real.end({ timeout: 5 }), holder.end({ timeout: 5 })]);
    }
  });
});
