import { describe, expect, it } from 'vitest';
import { createItemsStore } from '../src/db/items-store.js';
import { itemKeys } from '../src/redis/keys.js';
import { SERVICE, testApp } from './support/app.js';

const t = await testApp();
const auditCount = async (itemId: string) => (await createItemsStore(t.db.db).auditLog(itemId)).length;

describe('gate edges (operator API)', () => {
  it('answers an empty patch with the unchanged gate view, and audits nothing', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/e1', { handler: 'external', gate: { mode: 'manual', rate: 5 } });
    const audited = await auditCount('e1');
    const res = await call('PATCH', '/v1/items/e1/gate', {});
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ mode: 'manual', rate: 5, maxInFlight: null, effective: { rate: 5, maxInFlight: null } });
    expect(await auditCount('e1')).toBe(audited);
    expect((await call('PATCH', '/v1/items/nope/gate', {})).status).toBe(404);
  });

  it('clears a ceiling named in `clear`: a manual rate of 20 does not survive a switch to auto that clears it; null is 400, as the contract says', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/n1', { handler: 'external' });
    await call('PATCH', '/v1/items/n1/gate', { mode: 'manual', rate: 20, maxInFlight: 8 });
    for (const bad of [{ rate: null }, { maxInFlight: null }, { rate: 5, clear: ['rate'] }, { clear: ['mode'] }, { clear: 'rate' }]) {
      const r = await call('PATCH', '/v1/items/n1/gate', bad);
      expect([r.status, r.body.error?.code], JSON.stringify(bad)).toEqual([400, 'invalid_request']);
    }
    const res = await call('PATCH', '/v1/items/n1/gate', { mode: 'auto', clear: ['rate'] });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ mode: 'auto', rate: null, maxInFlight: 8, effective: { rate: null, maxInFlight: 8 } });
    const cleared = await call('PATCH', '/v1/items/n1/gate', { clear: ['maxInFlight'] });
    expect(cleared.body).toMatchObject({ rate: null, maxInFlight: null });
    const view = await call('GET', '/v1/items/n1');
    expect(view.body.gate).toMatchObject({ mode: 'auto', rate: null, maxInFlight: null });
    const log = await createItemsStore(t.db.db).auditLog('n1');
    expect(log.at(-1)!.after).toMatchObject({ mode: 'auto', rate: null, maxInFlight: null });
  });

  it('takes a definition whose gate names no ceilings as none, and refuses null there too', async () => {
    const { call } = t.build();
    expect((await call('PUT', '/v1/items/n2', { handler: 'external', gate: { mode: 'manual', rate: null } })).status).toBe(400);
    const res = await call('PUT', '/v1/items/n2', { handler: 'external', gate: { mode: 'manual' } });
    expect(res.status).toBe(201);
    expect(res.body.gate).toMatchObject({ mode: 'manual', rate: null, maxInFlight: null });
  });

  it('rejects a rate below 0.01/s and an in-flight cap that is not a whole number ≥ 1', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/b1', { handler: 'external' });
    for (const bad of [{ rate: 1e-300 }, { rate: 0.009 }, { rate: 0 }, { rate: -1 }, { maxInFlight: 0 }, { maxInFlight: 1.5 }, { maxInFlight: -3 }]) {
      const res = await call('PATCH', '/v1/items/b1/gate', bad);
      expect(res.status, JSON.stringify(bad)).toBe(400);
      expect(res.body.error.code).toBe('invalid_request');
    }
    expect((await call('PUT', '/v1/items/b2', { handler: 'external', gate: { rate: 1e-300 } })).status).toBe(400);
    expect((await call('PATCH', '/v1/items/b1/gate', { rate: 0.01, maxInFlight: 1 })).status).toBe(200);
  });

  it('admits at once from an idle line paced at 3/s (the clock at a real epoch time)', async () => {
    const { call } = t.build({ clock: t.manualClock(Date.UTC(2027, 0, 15, 9, 30)) });
    await call('PUT', '/v1/items/p3', { handler: 'external', gate: { mode: 'manual', rate: 3 } });
    for (const u of ['a', 'b']) await call('POST', '/v1/items/p3/tickets', { userId: u }, SERVICE);
    const pulled = await call('POST', '/v1/items/p3/pull', { max: 10 }, SERVICE);
    expect(pulled.body.tickets.map((x: { userId: string }) => x.userId)).toEqual(['a']);
  });

  it('starts the controller afresh on a switch to auto through a PUT, as through a PATCH', async () => {
    const app = t.build();
    for (const via of ['patch', 'put'] as const) {
      const id = t.uniqueItem();
      const def = { handler: 'webhook', config: { url: 'http://127.0.0.1:2/never' } };
      expect((await app.call('PUT', `/v1/items/${id}`, { ...def, gate: { mode: 'manual', rate: 5 } })).status).toBe(201);
      // What the controller kept in shadow while the gate was manual (a cut limit of 2).
      await t.redis.hset(itemKeys(app.prefix, id).gate, 'aLimit', '2', 'aRate', '3', 'aState', '{}');
      const res = via === 'patch' ? await app.call('PATCH', `/v1/items/${id}/gate`, { mode: 'auto', clear: ['rate'] }) : await app.call('PUT', `/v1/items/${id}`, { ...def, gate: { mode: 'auto' } });
      expect(res.status).toBe(200);
      const g = await t.redis.hgetall(itemKeys(app.prefix, id).gate);
      expect({ via, mode: g.mode, aReset: g.aReset ?? null }).toEqual({ via, mode: 'auto', aReset: '1' });
    }
  });

  it("answers the controller's latencies in whole milliseconds, as every duration (it kept them to a hundredth)", async () => {
    const app = t.build();
    const id = t.uniqueItem();
    expect((await app.call('PUT', `/v1/items/${id}`, { handler: 'webhook', config: { url: 'http://127.0.0.1:2/never' } })).status).toBe(201);
    // What a controller publishes (scheduler/controller.ts).
    await t.redis.hset(itemKeys(app.prefix, id).gate, 'aLimit', '8', 'aRate', '41.250', 'aBase', '18.97', 'aP50', '18.49', 'aP99', '49.31', 'aLeader', 'd1', 'aProbeStart', '');
    const c = (await app.call('GET', `/v1/items/${id}`)).body.gate.controller;
    expect(c).toMatchObject({ baseMs: 19, p50Ms: 18, p99Ms: 49 });
  });
});
