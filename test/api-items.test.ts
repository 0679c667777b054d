import { describe, expect, it } from 'vitest';
import { createItemsStore } from '../src/db/items-store.js';
import { OPERATOR, SERVICE, testApp } from './support/app.js';

const t = await testApp();

describe('items and gate (operator)', () => {
  it('creates with 201, replaces with 200, and shows the item view', async () => {
    const { call } = t.build();
    const body = { handler: 'seckill', config: { stock: 1000 }, capacity: 1200, opensAt: '2099-12-12T02:00:00Z', gate: { mode: 'auto', rate: 500, maxInFlight: 64 } };
    const created = await call('PUT', '/v1/items/sku-10001', body);
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({
      itemId: 'sku-10001',
      handler: 'seckill',
      config: { stock: 1000 },
      capacity: 1200,
      opensAt: '2099-12-12T02:00:00.000Z',
      closesAt: null,
      state: 'scheduled',
      gate: { mode: 'auto', rate: 500, maxInFlight: 64, effective: { rate: 500, maxInFlight: 64 } },
      counts: { waiting: 0, admitted: 0, succeeded: 0, rejected: 0, failed: 0, cancelled: 0, expired: 0 },
      remaining: 1000,
    });
    const replaced = await call('PUT', '/v1/items/sku-10001', { ...body, opensAt: null });
    expect(replaced.status).toBe(200);
    expect(replaced.body.state).toBe('open');
    const list = await call('GET', '/v1/items');
    expect(list.body.items.map((i: { itemId: string }) => i.itemId)).toEqual(['sku-10001']);
  });

  it('rejects unknown handlers and config the handler refuses with 400 and the fields', async () => {
    const { call } = t.build();
    const a = await call('PUT', '/v1/items/x1', { handler: 'nope' });
    expect(a.status).toBe(400);
    expect(a.body.error.code).toBe('invalid_request');
    const b = await call('PUT', '/v1/items/x1', { handler: 'seckill', config: { stock: -1 } });
    expect(b.status).toBe(400);
    expect(b.body.error.details.issues[0].path).toBe('config.stock');
    const c = await call('PUT', '/v1/items/x1', { handler: 'webhook', config: { url: 'ftp://x' } });
    expect(c.status).toBe(400);
    const d = await call('PUT', '/v1/items/-bad', { handler: 'external' });
    expect(d.status).toBe(400);
    const e = await call('PUT', '/v1/items/x1', { handler: 'external', opensAt: '2026-01-02T00:00:00Z', closesAt: '2026-01-01T00:00:00Z' });
    expect(e.status).toBe(400);
  });

  it.each([
    ['opensAt', '0000-01-01T00:00:00Z'],
    ['opensAt', '0001-01-01T00:00:00+01:00'],
    ['closesAt', '9999-12-31T23:59:59-23:59'],
    ['closesAt', '9999-12-31T23:00:00-01:00'],
  ])('answers 400 naming %s for %s, a time outside the years 0001-9999 once in UTC (Postgres has no room for it)', async (field, time) => {
    const { call } = t.build();
    const item = t.uniqueItem();
    const res = await call('PUT', `/v1/items/${item}`, { handler: 'external', [field]: time });
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('invalid_request');
    expect(res.body.error.details.issues.map((i: { path: string }) => i.path)).toContain(field);
    expect((await call('GET', `/v1/items/${item}`)).status).toBe(404);
  });

  it('keeps the first and last instants of the years 0001-9999, whatever offset names them', async () => {
    const { call } = t.build();
    const item = t.uniqueItem();
    const res = await call('PUT', `/v1/items/${item}`, { handler: 'external', opensAt: '0001-01-01T01:00:00+01:00', closesAt: '9999-12-31T22:59:59.999-01:00' });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ opensAt: '0001-01-01T00:00:00.000Z', closesAt: '9999-12-31T23:59:59.999Z' });
  });

  it('refuses to change the handler of an item with live tickets (409 conflict)', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/i1', { handler: 'external' });
    await call('POST', '/v1/items/i1/tickets', { userId: 'u1' }, SERVICE);
    const res = await call('PUT', '/v1/items/i1', { handler: 'seckill', config: { stock: 1 } });
    expect(res.status).toBe(409);
    expect(res.body.error.code).toBe('conflict');
  });

  it('keeps tickets and counters when an item is replaced', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/i1', { handler: 'external' });
    const j = await call('POST', '/v1/items/i1/tickets', { userId: 'u1' }, SERVICE);
    await call('PUT', '/v1/items/i1', { handler: 'external', capacity: 5 });
    const s = await call('GET', `/v1/tickets/${j.body.ticketId}`, undefined, null);
    expect(s.body).toMatchObject({ state: 'waiting', position: 1 });
    expect((await call('GET', '/v1/items/i1')).body.counts.waiting).toBe(1);
  });

  it('applies roles: 401 without or with an unknown key, 403 for a service key', async () => {
    const { call } = t.build();
    expect((await call('GET', '/v1/items', undefined, null)).status).toBe(401);
    expect((await call('GET', '/v1/items', undefined, 'wrong')).body.error.code).toBe('unauthorized');
    expect((await call('GET', '/v1/items', undefined, SERVICE)).status).toBe(403);
    expect((await call('GET', '/v1/items', undefined, OPERATOR)).status).toBe(200);
    expect((await call('GET', '/v1/items/none')).body.error.code).toBe('item_not_found');
  });

  it('patches the gate, keeps omitted fields, audits every change, and rejects bad values', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/g1', { handler: 'external' });
    const a = await call('PATCH', '/v1/items/g1/gate', { mode: 'manual', rate: 50, maxInFlight: 20 });
    expect(a.status).toBe(200);
    expect(a.body).toEqual({ mode: 'manual', rate: 50, maxInFlight: 20, effective: { rate: 50, maxInFlight: 20 }, controller: null });
    const b = await call('PATCH', '/v1/items/g1/gate', { rate: 2.5 });
    expect(b.body).toMatchObject({ mode: 'manual', rate: 2.5, maxInFlight: 20 });
    expect((await call('PATCH', '/v1/items/g1/gate', { rate: 0 })).status).toBe(400);
    expect((await call('PATCH', '/v1/items/g1/gate', { mode: 'open' })).status).toBe(400);
    const closed = await call('PATCH', '/v1/items/g1/gate', { mode: 'closed' });
    expect(closed.body.effective).toEqual({ rate: 0, maxInFlight: 0 });
    expect((await call('GET', '/v1/items/g1')).body.state).toBe('paused');
    const log = await createItemsStore(t.db.db).auditLog('g1');
    expect(log.map((r) => [r.actor, (r.after as { mode: string }).mode])).toEqual([
      ['operator', 'auto'],
      ['operator', 'manual'],
      ['operator', 'manual'],
      ['operator', 'closed'],
    ]);
    expect(log[1].keyId).toMatch(/^[0-9a-f]{12}$/);
  });

  it('closes an item: waiting tickets end cancelled and new joins get 410 closed', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/c1', { handler: 'external' });
    const j = await call('POST', '/v1/items/c1/tickets', { userId: 'u1' }, SERVICE);
    const del = await call('DELETE', '/v1/items/c1');
    expect(del.status).toBe(200);
    expect(del.body).toMatchObject({ state: 'closed', counts: { waiting: 0, cancelled: 1 } });
    const s = await call('GET', `/v1/tickets/${j.body.ticketId}`, undefined, null);
    expect(s.body).toMatchObject({ state: 'cancelled', outcome: { status: 'cancelled', reason: 'item_closed' } });
    const again = await call('POST', '/v1/items/c1/tickets', { userId: 'u2' }, SERVICE);
    expect(again.status).toBe(410);
    expect(again.body.error.code).toBe('closed');
  });

  it('restores item definitions into an empty Redis from Postgres', async () => {
    const first = t.build();
    await first.call('PUT', '/v1/items/r1', { handler: 'seckill', config: { stock: 3 }, gate: { mode: 'manual', rate: 7 } });
    await first.call('PUT', '/v1/items/r2', { handler: 'external' });
    await first.call('DELETE', '/v1/items/r2');
    const second = t.build(); // a fresh prefix: as if Redis had been flushed
    expect(await second.catalog.restore()).toBeGreaterThanOrEqual(2);
    const r1 = await second.call('GET', '/v1/items/r1');
    expect(r1.body).toMatchObject({ handler: 'seckill', config: { stock: 3 }, gate: { mode: 'manual', rate: 7 } });
    expect((await second.call('GET', '/v1/items/r2')).body.state).toBe('closed');
  });

  it('lists idle items from the views it holds, and shows a gate changed through another daemon', async () => {
    const clock = t.manualClock(Date.UTC(2027, 0, 5, 9));
    const a = t.build({ clock });
    const b = t.build({ clock, prefix: a.prefix });
    for (let i = 0; i < 30; i++) expect((await a.call('PUT', `/v1/items/idle-${i}`, { handler: 'external', gate: { mode: 'closed' } })).status).toBe(201);
    clock.advance(120_000); // nobody worked on them for two minutes: none is active
    let reads = 0;
    const item = a.queue.items.item.bind(a.queue.items);
    a.queue.items.item = (...args: Parameters<typeof item>) => ((reads += 1), item(...args));
    expect((await a.call('GET', '/v1/items')).body.items).toHaveLength(30);
    const first = reads;
    reads = 0;
    const again = await a.call('GET', '/v1/items');
    expect(again.body.items.map((v: { itemId: string }) => v.itemId)).toEqual(Array.from({ length: 30 }, (_, i) => `idle-${i}`).sort());
    expect(reads).toBe(0);
    expect(first).toBeLessThanOrEqual(30);
    // Another daemon opens one gate: the item turns active, and the list reads it again.
    expect((await b.call('PATCH', '/v1/items/idle-7/gate', { mode: 'manual', rate: 5 })).status).toBe(200);
    clock.advance(200);
    const after = await a.call('GET', '/v1/items');
    expect(after.body.items.find((v: { itemId: string }) => v.itemId === 'idle-7').gate).toMatchObject({ mode: 'manual', rate: 5 });
    expect(reads).toBeGreaterThanOrEqual(1);
  });
});
