import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { SERVICE, testApp } from './support/app.js';

/**
 * An operator redefines an item through one daemon while another still holds its view of the
 * item from before (its cache, FLOODGATE_CACHE_MS): that daemon admitted the tickets that joined
 * next and ran them under the old definition — a coupon item changed to seckill gave its new
 * buyers coupon claims and no orders (a reviewer's two-daemon runs: 20 claims, then 100 orders more
 * on a 100-unit item once reconcile recounted it), a reservation just asked for was left out, a
 * webhook called at its old URL. The admission now names the definition it runs under, and one
 * made from a view older than the item's definition admits nothing until the view is read afresh.
 */
const t = await testApp();

describe('a redefinition another daemon has not seen yet', () => {
  it('runs the tickets that join after it under the new definition, never the old one', { timeout: 60_000 }, async () => {
    const a = t.build();
    const item = t.uniqueItem();
    expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'coupon', config: { total: 100 } })).status).toBe(201);
    // The daemon holds its view of the item for 5 s.
    const { call } = await inProcessDaemon({ prefix: a.prefix, databaseUrl: t.db.url, env: { FLOODGATE_CACHE_MS: '5000' } });
    const first = (await call('POST', `/v1/items/${item}/tickets`, { userId: 'early' }, SVC)).body.ticketId as string;
    const done = (id: string) => waitFor(() => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body), (v) => !['waiting', 'admitted'].includes(v.state), 30_000);
    expect(await done(first)).toMatchObject({ state: 'succeeded', outcome: { result: { claimId: expect.any(String) } } });

    // Redefined elsewhere (another daemon's PUT): a seckill item of 100 units, with reservations.
    expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: 100, reserveMs: 60_000 } })).status).toBe(200);
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) ids.push((await call('POST', `/v1/items/${item}/tickets`, { userId: `u${i}` }, SVC)).body.ticketId);
    const ends = await Promise.all(ids.map(done));
    for (const v of ends) expect(v).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: expect.any(String), reservedUntil: expect.any(String) } } }); // before: claimId
    const claims = await t.db.sql`select count(*)::int as n from coupon_claims where item_id = ${item}`;
    const orders = await t.db.sql`select count(*)::int as n from orders where item_id = ${item} and status = 'reserved'`;
    expect([claims[0].n, orders[0].n]).toEqual([1, 10]);
  });

  it('runs a split item\'s new tickets under the new definition too', { timeout: 60_000 }, async () => {
    const a = t.build();
    const item = t.uniqueItem();
    expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'coupon', config: { total: 100 }, lines: 2 })).status).toBe(201);
    const { call } = await inProcessDaemon({ prefix: a.prefix, databaseUrl: t.db.url, env: { FLOODGATE_CACHE_MS: '5000' } });
    const done = (id: string) => waitFor(() => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body), (v) => !['waiting', 'admitted'].includes(v.state), 30_000);
    const first = (await call('POST', `/v1/items/${item}/tickets`, { userId: 'early' }, SVC)).body.ticketId as string;
    expect(await done(first)).toMatchObject({ state: 'succeeded', outcome: { result: { claimId: expect.any(String) } } });
    expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: 100 }, lines: 2 })).status).toBe(200);
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) ids.push((await call('POST', `/v1/items/${item}/tickets`, { userId: `s${i}` }, SVC)).body.ticketId);
    for (const v of await Promise.all(ids.map(done))) expect(v).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: expect.any(String) } } }); // before: claimId
    const claims = await t.db.sql`select count(*)::int as n from coupon_claims where item_id = ${item}`;
    expect(claims[0].n).toBe(1);
  });

  it("does not close an item whose window an operator extended, from a view older than the extension", { timeout: 60_000 }, async () => {
    const a = t.build();
    const { call } = await inProcessDaemon({ prefix: a.prefix, databaseUrl: t.db.url, env: { FLOODGATE_CACHE_MS: '5000' } });
    // The window ends 3 s on: the second daemon's join (its view read then, kept 5 s) and the
    // extension through the first must both come before it. A loaded machine can take longer for
    // them, and then the end rightly comes first: such a round proves nothing and is made again.
    for (let round = 0; ; round++) {
      expect(round).toBeLessThan(5);
      const item = t.uniqueItem();
      const end = Date.now() + 3000;
      expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'external', closesAt: new Date(end).toISOString() })).status).toBe(201);
      const joined = await call('POST', `/v1/items/${item}/tickets`, { userId: 'w1' }, SVC);
      const extended = await a.call('PUT', `/v1/items/${item}`, { handler: 'external', closesAt: new Date(Date.now() + 600_000).toISOString() });
      if (joined.status !== 202 || Date.now() >= end - 200) continue;
      expect(extended.status).toBe(200);
      await new Promise((r) => setTimeout(r, end + 1500 - Date.now()));
      // (Before: cut as closed from the daemon's old view, every waiting user told `closed`.)
      expect((await call('GET', `/v1/tickets/${joined.body.ticketId}`, undefined, null)).body.state).toBe('waiting');
      expect((await a.call('GET', `/v1/items/${item}`)).body.state).toBe('open');
      return;
    }
  });

  it('hands an outside worker no ticket of an item that is no longer external', { timeout: 60_000 }, async () => {
    const a = t.build();
    const item = t.uniqueItem();
    expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'external' })).status).toBe(201);
    const { call } = await inProcessDaemon({ prefix: a.prefix, databaseUrl: t.db.url, env: { FLOODGATE_CACHE_MS: '5000' } });
    expect((await call('POST', `/v1/items/${item}/pull`, { max: 1 }, SVC)).status).toBe(200); // its view: external
    expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: 100 }, gate: { mode: 'closed' } })).status).toBe(200);
    for (let i = 0; i < 3; i++) expect((await call('POST', `/v1/items/${item}/tickets`, { userId: `x${i}` }, SVC)).status).toBe(202);
    const pulled = await call('POST', `/v1/items/${item}/pull`, { max: 10 }, SVC);
    expect([pulled.status, pulled.body.error?.code]).toEqual([409, 'conflict']); // before: 200 with the three tickets
    expect((await a.call('GET', `/v1/items/${item}`)).body.counts).toMatchObject({ waiting: 3, admitted: 0 });
  });

  it('admits nothing for a caller whose view is older than the definition', async () => {
    const a = t.build();
    const item = t.uniqueItem();
    expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'external' })).status).toBe(201);
    await a.call('POST', `/v1/items/${item}/tickets`, { userId: 'u1' }, SERVICE);
    const seen = (await a.queue.items.item(item, { fresh: true }))!.snap.version;
    expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'external', capacity: 50 })).status).toBe(200);
    expect(await a.queue.admissions.admitRound(item, 10, 60_000, undefined, seen)).toMatchObject({ tickets: [], stale: true });
    const now = (await a.queue.items.item(item, { fresh: true }))!.snap.version;
    expect(now).toBeGreaterThan(seen);
    expect((await a.queue.admissions.admitRound(item, 10, 60_000, undefined, now)).tickets).toHaveLength(1);
  });
});
