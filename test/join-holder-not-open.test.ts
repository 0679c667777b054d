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
