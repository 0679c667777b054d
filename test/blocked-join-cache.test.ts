import { describe, expect, it } from 'vitest';
import { SERVICE, testApp } from './support/app.js';

/**
 * A blocked user's join is about that user, not the item: the item's cached view stays, so the
 * polls of everyone else go on being answered from it. A blocked bot repeating its join had every
 * poll of the item read Redis (100 of 100 in a review's run: the refusal marked the view stale).
 */
const t = await testApp();

describe("a blocked user's join", () => {
  it("is refused without dropping the item's cached view", async () => {
    const { call, queue } = t.build({ cacheMs: 5000, clock: t.manualClock() });
    const item = t.uniqueItem();
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'external', gate: { mode: 'closed' } })).status).toBe(201);
    const waiting = (await call('POST', `/v1/items/${item}/tickets`, { userId: 'alice' }, SERVICE)).body.ticketId as string;
    expect((await call('PUT', `/v1/items/${item}/blocks/bot`)).status).toBe(200);
    // A poll answered once (the view read), then from the cache.
    expect((await call('GET', `/v1/tickets/${waiting}`, undefined, null)).body.state).toBe('waiting');
    expect(queue.tickets.statusNow(waiting)).not.toBeNull();
    for (let i = 0; i < 3; i++) {
      const refused = await call('POST', `/v1/items/${item}/tickets`, { userId: 'bot' }, SERVICE);
      expect([refused.status, refused.body.error.code]).toEqual([403, 'blocked']);
      expect(queue.tickets.statusNow(waiting)).not.toBeNull(); // before: null (the view dropped)
    }
  });
});
