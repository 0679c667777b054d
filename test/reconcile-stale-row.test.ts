import { describe, expect, it } from 'vitest';
import { SERVICE, testApp } from './support/app.js';

/**
 * A reconcile (every daemon's start, every daemon when Postgres comes back, `npm run reconcile`)
 * lists the item rows, then walks them, writing each item's stock row from its definition. An
 * operator's restock that lands between the listing and the item's turn (a walk over thousands of
 * items takes seconds) was set back: Postgres's target to the old 0, the counter to 0, the item
 * cut `sold_out` — its waiting users told `sold_out` — while its config read 5.
 */
const { build, db, uniqueItem } = await testApp();

describe('a reconcile walking its rows', () => {
  it('keeps an operator restock made after it listed them', async () => {
    const a = build();
    const item = uniqueItem();
    expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: 0 } })).status).toBe(201);
    expect((await a.call('GET', `/v1/items/${item}`)).body.state).toBe('sold_out');
    const store = a.store as { all: () => Promise<unknown[]> };
    const listAll = store.all.bind(store);
    const joined: string[] = [];
    // The operator's restock, and three joins, come right after the reconcile lists its rows.
    store.all = async () => {
      const rows = await listAll();
      const put = await a.call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: 5 } });
      expect([put.status, put.body.remaining]).toEqual([200, 5]);
      for (const u of ['u1', 'u2', 'u3']) {
        const j = await a.call('POST', `/v1/items/${item}/tickets`, { userId: u }, SERVICE);
        expect(j.status).toBe(202);
        joined.push(j.body.ticketId);
      }
      return rows;
    };
    try {
      await a.catalog.reconcile({ idleOnly: true });
    } finally {
      store.all = listAll;
    }
    const [row] = await db.sql`select total, target from item_stock where item_id = ${item}`;
    expect(row).toMatchObject({ total: 5, target: 5 });
    const view = (await a.call('GET', `/v1/items/${item}`)).body;
    expect([view.state, view.remaining]).toEqual(['open', 5]);
    for (const id of joined) expect((await a.call('GET', `/v1/tickets/${id}`, undefined, null)).body.state).toBe('waiting');
    expect((await a.call('POST', `/v1/items/${item}/tickets`, { userId: 'u4' }, SERVICE)).status).toBe(202);
  });
});

describe('a reconcile meeting an item whose lock stays taken', () => {
  it('counts the others and leaves that one to the next (it stopped there: at a start, the daemon did not start)', { timeout: 60_000 }, async () => {
    const a = build();
    const [held, free] = [uniqueItem(), uniqueItem()];
    for (const item of [held, free]) expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: 3 } })).status).toBe(201);
    // Redis's counters drift (a rollback): the reconcile puts them back from Postgres.
    for (const item of [held, free]) await a.stock.set(item, 1, 1);
    const lock = await db.sql.reserve();
    try {
      await lock`select pg_advisory_lock(hashtextextended(${`floodgate:op:${held}`}, 0))`;
      const counted = await a.catalog.reconcile({ idleOnly: true });
      expect(counted.map((r) => r.itemId)).toContain(free);
      expect(counted.map((r) => r.itemId)).not.toContain(held);
    } finally {
      await lock`select pg_advisory_unlock(hashtextextended(${`floodgate:op:${held}`}, 0))`.catch(() => {});
      lock.release();
    }
    expect((await a.call('GET', `/v1/items/${free}`)).body.remaining).toBe(3);
    expect((await a.catalog.reconcile({ itemId: held, idleOnly: true }))[0]).toMatchObject({ itemId: held, left: 3 });
  });
});
