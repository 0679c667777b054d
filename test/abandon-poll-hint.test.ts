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

/**
 * Switched on, or shortened, on a live line: holders were told to poll again within the old
 * setting's interval (30 s with none), so the new one counts from when that has passed. Counted
 * from the change, every holder of a line given `abandonAfterMs: 5000` was expired 5 s after it,
 * having polled as told (a review's experiment).
 */
describe('abandonment switched on or shortened on a live line', () => {
  for (const from of [null, 90_000] as const) {
    it(`expires nobody who polls as told (from ${from === null ? 'none' : `${from} ms`} to 5000 ms), and those who stop polling after that`, async () => {
      const clock = t.manualClock();
      const { call, queue } = t.build({ clock });
      const item = t.uniqueItem();
      const def = (abandonAfterMs: number | null, rate: number | null) => ({ handler: 'external', abandonAfterMs, gate: rate === null ? { mode: 'manual' } : { mode: 'manual', rate } });
      expect((await call('PUT', `/v1/items/${item}`, def(from, 0.05))).status).toBe(201);
      const ids: string[] = [];
      for (let i = 0; i < 10; i++) ids.push((await call('POST', `/v1/items/${item}/tickets`, { userId: `u${i}` }, SERVICE)).body.ticketId);
      const told = new Map<string, number>();
      for (const id of ids) told.set(id, (await call('GET', `/v1/tickets/${id}`, undefined, null)).body.pollAfterMs);
      await queue.tickets.flush();
      expect(Math.max(...told.values())).toBe(30_000);
      clock.advance(1000);
      expect((await call('PUT', `/v1/items/${item}`, def(5000, null))).status).toBe(200);
      clock.advance(5500);
      // Nobody was due to poll yet: all are handed out, none expired.
      const pulled = (await call('POST', `/v1/items/${item}/pull`, { max: 5 }, SERVICE)).body.tickets as { ticketId: string }[];
      expect(pulled.map((p) => p.ticketId)).toEqual(ids.slice(0, 5)); // before: [] (all 10 expired)
      // A replacement that keeps the setting keeps where its clock starts.
      expect((await call('PUT', `/v1/items/${item}`, def(5000, null))).status).toBe(200);
      // The other five poll when told (the first of them told less than 30 s), then stop: expired
      // once 5 s have passed after the last interval anyone may have been told.
      for (const id of ids.slice(5)) if (told.get(id)! <= 6500) await call('GET', `/v1/tickets/${id}`, undefined, null);
      await queue.tickets.flush();
      clock.advance(31_000 - 6500 + 5000 + 1000);
      const rest = (await call('POST', `/v1/items/${item}/pull`, { max: 10 }, SERVICE)).body.tickets as { ticketId: string }[];
      expect(rest.map((r) => r.ticketId).filter((id) => ids.slice(5).includes(id))).toEqual([]);
      const states = await Promise.all(ids.slice(5).map(async (id) => (await call('GET', `/v1/tickets/${id}`, undefined, null)).body.state as string));
      expect(states).toEqual(Array(5).fill('expired'));
    });
  }
});
