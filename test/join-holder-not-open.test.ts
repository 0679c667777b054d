import { describe, expect, it } from 'vitest';
import { SERVICE, testApp } from './support/app.js';

/**
 * A user who holds a ticket and joins again is answered their ticket (200), as the contract says.
 * After an operator moved the item's opensAt later, the join was refused `425 not_open` from the
 * cached view before the join script could find the ticket, which still read `waiting`.
 */
const t = await testApp();

describe('a holder joining again after opensAt moved later', () => {
  it('is answered their ticket; a newcomer is told not_open', async () => {
    const clock = t.manualClock();
    const { call } = t.build({ clock, cacheMs: 250 });
    const item = t.uniqueItem();
    await call('PUT', `/v1/items/${item}`, { handler: 'external', gate: { mode: 'manual' } });
    const j = await call('POST', `/v1/items/${item}/tickets`, { userId: 'holder' }, SERVICE);
    expect(j.status).toBe(202);
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'external', opensAt: new Date(clock.now() + 3_600_000).toISOString() })).status).toBe(200);
    clock.advance(1000);
    const again = await call('POST', `/v1/items/${item}/tickets`, { userId: 'holder' }, SERVICE);
    expect([again.status, again.body.ticketId, again.body.state]).toEqual([200, j.body.ticketId, 'waiting']); // before: 425
    const stranger = await call('POST', `/v1/items/${item}/tickets`, { userId: 'stranger' }, SERVICE);
    expect([stranger.status, stranger.body.error?.code]).toEqual([425, 'not_open']);
  });
});

describe('early joins to an item that had tickets before', () => {
  it('are refused from memory, counting against no quota: the user gets in at the opening', async () => {
    const clock = t.manualClock();
    const { call } = t.build({ clock, cacheMs: 250 });
    const item = t.uniqueItem();
    const quotas = { perUser: { limit: 3, windowMs: 3_600_000 } };
    await call('PUT', `/v1/items/${item}`, { handler: 'external', quotas, gate: { mode: 'manual' } });
    const left = (await call('POST', `/v1/items/${item}/tickets`, { userId: 'someone' }, SERVICE)).body.ticketId;
    await call('DELETE', `/v1/tickets/${left}`, undefined, null);
    const opensAt = clock.now() + 60_000;
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'external', quotas, opensAt: new Date(opensAt).toISOString() })).status).toBe(200);
    clock.advance(1000);
    for (let i = 0; i < 3; i++) expect((await call('POST', `/v1/items/${item}/tickets`, { userId: 'eager' }, SERVICE)).status).toBe(425);
    clock.set(opensAt + 1);
    expect((await call('POST', `/v1/items/${item}/tickets`, { userId: 'eager' }, SERVICE)).status).toBe(202); // with seq > 0 as the rule: 429
  });
});
