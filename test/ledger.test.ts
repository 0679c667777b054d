import { ticketRef } from '../src/kernel/ticket-ref.js';
import postgres from 'postgres';
import { describe, expect, it } from 'vitest';
import { insertDeadOutcomes, writeOutcomes } from '../src/db/outcomes.js';
import { writeSales } from '../src/db/sales.js';
import { createLogger } from '../src/kernel/logger.js';
import { itemKeys } from '../src/redis/keys.js';
import { createLedgerFeed } from '../src/service/outcome-ledger-feed.js';
import { startLedger } from '../src/service/outcome-ledger.js';
import { SERVICE, testApp } from './support/app.js';
import { drainLedger, lockOutcomes } from './support/ledger.js';

const t = await testApp();

describe('the outcome ledger', () => {
  it("makes Postgres refuse the sale of a ticket its user cancelled, once it holds the cancel: a Redis rollback that takes the cancel back revives the ticket, and it was sold", async () => {
    const { call, queue, prefix, metrics } = t.build();
    const item = t.uniqueItem();
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: 5 }, gate: { mode: 'closed' } })).status).toBe(201);
    const bob = (await call('POST', `/v1/items/${item}/tickets`, { userId: 'bob' }, SERVICE)).body.ticketId as string;
    expect((await call('DELETE', `/v1/tickets/${bob}`, undefined, null)).body.state).toBe('cancelled');
    await drainLedger({ queue, redis: t.redis, prefix, sql: t.db.sql, metrics, consumer: 'ledger-void' });
    expect((await t.db.sql`select status from ticket_outcomes where ticket_id = ${ticketRef(bob)}`)[0]?.status).toBe('cancelled');
    // The rollback's revived ticket is admitted and its job sells: refused.
    const [sale] = await writeSales(t.db.sql, 'orders', [{ itemId: item, userId: 'bob', ticketRef: ticketRef(bob) }]);
    expect(sale.kind).toBe('void');
    expect((await t.db.sql`select count(*)::int as n from orders where item_id = ${item}`)[0].n).toBe(0);
  });

  it('parks a row Postgres refuses and an unreadable entry in ticket_outcomes_dead, writes every other row, and empties the streams', async () => {
    const { call, queue, prefix, metrics } = t.build();
    const [a, b] = [t.uniqueItem(), t.uniqueItem()];
    // Settles through the queue module, past the API's door: as a custom handler's result could.
    const settleAll = async (itemId: string, n: number, outcome: (i: number) => Parameters<typeof queue.admissions.settle>[1]) => {
      expect((await call('PUT', `/v1/items/${itemId}`, { handler: 'external' })).status).toBe(201);
      for (let i = 0; i < n; i++) await call('POST', `/v1/items/${itemId}/tickets`, { userId: `u${i}` }, SERVICE);
      const got = await queue.admissions.admit(itemId, n, 30_000);
      for (const [i, g] of got.entries()) await queue.admissions.settle(g.ticketId, { ...outcome(i), leaseId: g.leaseId });
      return got.map((g) => g.ticketId);
    };
    const ticketsA = await settleAll(a, 3, (i) =>
      i === 0 ? { leaseId: '', status: 'succeeded', result: { note: 'a\u0000b' } } : i === 1 ? { leaseId: '', status: 'succeeded', result: { ok: 1 } } : { leaseId: '', status: 'rejected', reason: 'no' },
    );
    const ticketsB = await settleAll(b, 2, () => ({ leaseId: '', status: 'succeeded', result: { ok: 2 } }));
    await t.redis.xadd(itemKeys(prefix, b).done, '*', 's', '999', 'o', '{not json');

    // The first round's acknowledgements are lost (Redis out for a moment after Postgres took the
    // rows): the next round reads the same entries and parks them again — once, and counted once
    // (each round counted them again, and the unreadable entry had a row per round).
    const feed = createLedgerFeed(t.redis, prefix, 'ledger-test');
    let lost = 2;
    const flaky: typeof feed = { ...feed, ack: (...args) => (lost-- > 0 ? Promise.reject(new Error('Connection is closed.')) : feed.ack(...args)) };
    const ledger = startLedger({ queue, feed: flaky, sql: t.db.sql, log: createLogger('silent'), metrics }, { everyMs: 3_600_000, batch: 100, busyElu: 1, maxDeferMs: 0 });
    try {
      for (let i = 0; i < 3; i++) await ledger.drain().catch((err: Error) => expect(err.message).toBe('Connection is closed.'));
    } finally {
      await ledger.stop();
    }
    expect(lost).toBeLessThan(0);

    const rows = await t.db.sql`select ticket_id, item_id, status from ticket_outcomes where item_id in (${a}, ${b})`;
    expect(new Set(rows.map((r) => r.ticket_id))).toEqual(new Set([...ticketsA.slice(1), ...ticketsB].map(ticketRef)));
    // (items are drained in no particular order)
    const dead = await t.db.sql`select item_id, ticket_id, fields, error from ticket_outcomes_dead where item_id in (${a}, ${b}) order by item_id = ${b}`;
    expect(dead.length).toBe(2);
    expect(dead[0]).toMatchObject({ item_id: a, ticket_id: ticketRef(ticketsA[0]) });
    expect(JSON.parse(dead[0].fields)).toMatchObject({ ticketId: ticketRef(ticketsA[0]), userId: 'u0', status: 'succeeded', result: { note: 'a\u0000b' } });
    expect(dead[0].error).toMatch(/^22P05: /);
    expect(dead[1]).toMatchObject({ item_id: b, ticket_id: null });
    expect(JSON.parse(dead[1].fields).fields).toEqual(['s', '999', 'o', '{not json']);
    const counted = (await metrics.ledgerDeadLetters.get()).values.map((v) => [v.labels.item, v.value]);
    expect(Object.fromEntries(counted)).toEqual({ [a]: 1, [b]: 1 });
    for (const itemId of [a, b]) expect(await t.redis.xlen(itemKeys(prefix, itemId).done)).toBe(0);
  });

  it('parks nothing when Postgres refuses every row alike (a lock it cannot take): the entries wait for a later round', async () => {
    const { call, queue, prefix, metrics } = t.build();
    const itemId = t.uniqueItem();
    expect((await call('PUT', `/v1/items/${itemId}`, { handler: 'external' })).status).toBe(201);
    for (let i = 0; i < 3; i++) await call('POST', `/v1/items/${itemId}/tickets`, { userId: `u${i}` }, SERVICE);
    const got = await queue.admissions.admit(itemId, 3, 30_000);
    for (const g of got) await queue.admissions.settle(g.ticketId, { leaseId: g.leaseId, status: 'succeeded', result: { ok: 1 } });
    // The ledger's own connection gives up on a lock after 50 ms (55P03: neither a lost connection nor a bad row).
    const sql = postgres(t.db.url, { max: 1, onnotice: () => {}, connection: { lock_timeout: 50 } });
    const holder = postgres(t.db.url, { max: 1, onnotice: () => {} });
    const ledger = startLedger(
      { queue, feed: createLedgerFeed(t.redis, prefix, 'ledger-test'), sql, log: createLogger('silent'), metrics },
      { everyMs: 3_600_000, batch: 100, busyElu: 1, maxDeferMs: 0 },
    );
    try {
      const { release, held } = await lockOutcomes(holder);
      await expect(ledger.drain()).rejects.toMatchObject({ code: '55P03' });
      release();
      await held;
      expect(await t.redis.xlen(itemKeys(prefix, itemId).done)).toBe(3);
      const [parked] = await t.db.sql`select count(*)::int as n from ticket_outcomes_dead where item_id = ${itemId}`;
      expect(parked.n).toBe(0);
      // The lock gone, the next round writes them all.
      await ledger.drain();
      const rows = await t.db.sql`select ticket_id from ticket_outcomes where item_id = ${itemId}`;
      expect(new Set(rows.map((r) => r.ticket_id))).toEqual(new Set(got.map((g) => ticketRef(g.ticketId))));
      expect(await t.redis.xlen(itemKeys(prefix, itemId).done)).toBe(0);
    } finally {
      await ledger.stop();
      await Promise.all([sql.end({ timeout: 5 }), holder.end({ timeout: 5 })]);
    }
  });

  it('parks an unreadable entry once when two daemons park it at the same moment', async () => {
    const itemId = t.uniqueItem();
    const counts: number[] = [];
    for (let i = 0; i < 20; i++) {
      const entry = { itemId, ticketId: null, fields: { entry: `1-${i}`, fields: ['s', String(i), 'o', '{not json'] }, error: new Error('unreadable') };
      const parked = await Promise.all([0, 1, 2, 3].map(() => insertDeadOutcomes(t.db.sql, [entry])));
      counts.push(parked.reduce((n, p) => n + p.length, 0));
    }
    expect(counts).toEqual(counts.map(() => 1));
    const [rows] = await t.db.sql`select count(*)::int as n from ticket_outcomes_dead where item_id = ${itemId}`;
    expect(rows.n).toBe(20);
  });

  it("parks a row the driver cannot send (an undefined field) and writes the others", async () => {
    const itemId = t.uniqueItem();
    const row = (n: number) => ({ ticketId: `${itemId}-r${n}`, itemId, userId: `u${n}`, status: 'succeeded', reason: null, result: { n }, joinedAt: new Date(), admittedAt: null, finishedAt: new Date() });
    const rows = [row(1), { ...row(2), status: undefined as unknown as string }, row(3)];
    const dead = await writeOutcomes(t.db.sql, rows);
    expect(dead.map((d) => [d.ticketId, (d.error as { code?: string }).code])).toEqual([[`${itemId}-r2`, 'UNDEFINED_VALUE']]);
    const written = await t.db.sql`select ticket_id from ticket_outcomes where item_id = ${itemId} order by ticket_id`;
    expect(written.map((r) => r.ticket_id)).toEqual([`${itemId}-r1`, `${itemId}-r3`]);
    const [parked] = await t.db.sql`select count(*)::int as n from ticket_outcomes_dead where item_id = ${itemId}`;
    expect(parked.n).toBe(1);
  });

  it('drains more items than it reads at once, and finds the one refused row among hundreds across them', async () => {
    const { call, queue, prefix, metrics } = t.build();
    const items = Array.from({ length: 130 }, () => t.uniqueItem());
    const tickets = new Map<string, string[]>();
    await Promise.all(
      items.map(async (itemId, k) => {
        expect((await call('PUT', `/v1/items/${itemId}`, { handler: 'external' })).status).toBe(201);
        for (let i = 0; i < 3; i++) await call('POST', `/v1/items/${itemId}/tickets`, { userId: `u${i}` }, SERVICE);
        const got = await queue.admissions.admit(itemId, 3, 30_000);
        for (const [i, g] of got.entries()) {
          const bad = k === 77 && i === 1;
          await queue.admissions.settle(g.ticketId, { leaseId: g.leaseId, status: 'succeeded', result: bad ? { note: 'x\u0000y' } : { k, i } });
        }
        tickets.set(itemId, got.map((g) => g.ticketId));
      }),
    );
    const ledger = startLedger(
      { queue, feed: createLedgerFeed(t.redis, prefix, 'ledger-test'), sql: t.db.sql, log: createLogger('silent'), metrics },
      // A batch of 2 per line: every line is read twice in a round (3 tickets each).
      { everyMs: 3_600_000, batch: 2, busyElu: 1, maxDeferMs: 0 },
    );
    try {
      await ledger.drain();
    } finally {
      await ledger.stop();
    }
    const bad = tickets.get(items[77])![1];
    const rows = await t.db.sql`select ticket_id from ticket_outcomes where item_id in ${t.db.sql(items)}`;
    const want = [...tickets.values()].flat().filter((id) => id !== bad).map(ticketRef);
    expect(rows.length).toBe(want.length);
    expect(new Set(rows.map((r) => r.ticket_id))).toEqual(new Set(want));
    const dead = await t.db.sql`select item_id, ticket_id from ticket_outcomes_dead where item_id in ${t.db.sql(items)}`;
    expect(dead.map((d) => ({ ...d }))).toEqual([{ item_id: items[77], ticket_id: ticketRef(bad) }]);
    for (const itemId of items) expect(await t.redis.xlen(itemKeys(prefix, itemId).done)).toBe(0);
  });
  it("reads an item's view only for lines with ended tickets, and after them", async () => {
    const { call, queue, prefix, metrics } = t.build();
    const [busy, quiet] = [t.uniqueItem(), t.uniqueItem()];
    for (const itemId of [busy, quiet]) expect((await call('PUT', `/v1/items/${itemId}`, { handler: 'external' })).status).toBe(201);
    for (let i = 0; i < 2; i++) for (const itemId of [busy, quiet]) await call('POST', `/v1/items/${itemId}/tickets`, { userId: `u${i}` }, SERVICE);
    for (const g of await queue.admissions.admit(busy, 2, 30_000)) await queue.admissions.settle(g.ticketId, { leaseId: g.leaseId, status: 'succeeded', result: { ok: 1 } });
    await queue.items.activateAll();
    // The fresh view reads the ledger asks for, by item.
    const fresh: string[] = [];
    const items = Object.create(queue.items) as typeof queue.items;
    items.item = (itemId, opts) => {
      if (opts?.fresh) fresh.push(itemId);
      return queue.items.item(itemId, opts);
    };
    const ledger = startLedger(
      { queue: { items }, feed: createLedgerFeed(t.redis, prefix, 'ledger-test'), sql: t.db.sql, log: createLogger('silent'), metrics },
      { everyMs: 3_600_000, batch: 100, busyElu: 1, maxDeferMs: 0 },
    );
    try {
      await ledger.drain();
      expect(fresh.filter((id) => id === busy || id === quiet)).toEqual([busy]);
      fresh.length = 0;
      await ledger.drain();
      expect(fresh.filter((id) => id === busy || id === quiet)).toEqual([]);
    } finally {
      await ledger.stop();
    }
    const rows = await t.db.sql`select item_id, status from ticket_outcomes where item_id in (${busy}, ${quiet})`;
    expect(rows.map((r) => `${r.item_id === busy ? 'busy' : 'quiet'}:${r.status}`)).toEqual(['busy:succeeded', 'busy:succeeded']);
  });
});
