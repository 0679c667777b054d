import { describe, expect, it } from 'vitest';
import { itemKeys } from '../src/redis/keys.js';
import { testApp } from './support/app.js';

/**
 * A replacement that names no gate keeps the item's gate, also for an item Redis lost whose
 * restore has not run yet (a second or so after a flush; longer with many items): its gate is the
 * row's. The PUT reset it to auto — a paused sale opened — and the audit read it as a creation.
 */
const t = await testApp();

describe('a PUT without `gate` on an item Redis lost', () => {
  it("keeps the gate its row holds, and audits no change of it", async () => {
    const { call, prefix } = t.build();
    const item = t.uniqueItem();
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'external', gate: { mode: 'manual', rate: 3 } })).status).toBe(201);
    expect((await call('PATCH', `/v1/items/${item}/gate`, { mode: 'closed' })).status).toBe(200);
    const k = itemKeys(prefix, item);
    await t.redis.del(k.meta, k.ctr, k.gate);
    const put = await call('PUT', `/v1/items/${item}`, { handler: 'external' });
    expect(put.status).toBe(201);
    expect(put.body.gate).toMatchObject({ mode: 'closed', rate: 3 }); // before: auto, the sale open
    const audit = (await call('GET', `/v1/items/${item}/audit`)).body.entries as { from: unknown; to: { mode: string } }[];
    expect(audit.map((e) => e.to.mode)).toEqual(['closed', 'manual']); // before: auto (from null) on top
  });
});

describe('a PATCH of the gate that changes nothing', () => {
  it('is answered and audits nothing, as a PUT with the same gate', async () => {
    const { call } = t.build();
    const item = t.uniqueItem();
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'external', gate: { mode: 'auto' } })).status).toBe(201);
    expect((await call('PATCH', `/v1/items/${item}/gate`, { mode: 'auto' })).status).toBe(200);
    expect((await call('PATCH', `/v1/items/${item}/gate`, { clear: ['rate'] })).status).toBe(200);
    expect((await call('PATCH', `/v1/items/${item}/gate`, { mode: 'manual', rate: 4 })).status).toBe(200);
    expect((await call('PATCH', `/v1/items/${item}/gate`, { mode: 'manual', rate: 4 })).status).toBe(200); // a retry
    const audit = (await call('GET', `/v1/items/${item}/audit`)).body.entries as { to: { mode: string } }[];
    expect(audit.map((e) => e.to.mode)).toEqual(['manual', 'auto']); // before: five rows
  });
});
