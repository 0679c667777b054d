import { describe, expect, it } from 'vitest';
import { SERVICE, testApp } from './support/app.js';

/**
 * A waiting ticket is told when to poll again (`pollAfterMs`, up to 30 s far back in a slow line),
 * and an item with `abandonAfterMs` expires a ticket not polled for that long when it reaches the
 * head. With abandonAfterMs under 30 s, users who polled exactly as told were expired once the line
 * moved faster than its ETA: told 30 s, expired at 20. The hint is now at most a third of it.
 */
const t = await testApp();

describe('a user who polls as told', () => {
  it('is never expired as abandoned', async () => {
    const clock = t.manualClock();
    const { call, queue } = t.build({ clock });
    const item = t.uniqueItem();
    // A slow line: one a second, so far back the hint is long.
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'external', abandonAfterMs: 20_000, gate: { mode: 'manual', rate: 1 } })).status).toBe(201);
    const ids: string[] = [];
    for (let i = 0; i < 200; i++) ids.push((await call('POST', `/v1/items/${item}/tickets`, { userId: `u${i}` }, SERVICE)).body.ticketId);
    const due = new Map<string, number>();
    let longest = 0;
    const poll = async (id: string) => {
      const v = (await call('GET', `/v1/tickets/${id}`, undefined, null)).body;
      longest = Math.max(longest, v.pollAfterMs);
      due.set(id, clock.now() + v.pollAfterMs);
    };
    for (const id of ids) await poll(id);
    // 19 s go by, everyone polling when told.
    for (let s = 0; s < 38; s++) {
      clock.advance(500);
      for (const id of ids) if (due.get(id)! <= clock.now()) await poll(id);
      await queue.tickets.flush();
    }
    expect(longest).toBeLessThanOrEqual(20_000 / 3);
    // The line speeds up (the operator lifts the rate): everyone reaches the head now.
    clock.advance(1500);
    expect((await call('PATCH', `/v1/items/${item}/gate`, { mode: 'manual', clear: ['rate'] })).status).toBe(200);
    let pulled = 0;
    for (let i = 0; i < 5 && pulled < ids.length; i++) pulled += (await call('POST', `/v1/items/${item}/pull`, { max: 1000 }, SERVICE)).body.tickets.length;
    const states = await Promise.all(ids.map(async (id) => (await call('GET', `/v1/tickets/${id}`, undefined, null)).body.state as string));
    expect(states.filter((s) => s === 'expired').length).toBe(0); // before: those told to come back in 20.5–30 s
    expect(pulled).toBe(ids.length);
  });
});
