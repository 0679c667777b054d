import { describe, expect, it } from 'vitest';
import { SERVICE, testApp } from './support/app.js';
import { followTicket } from './support/ticket-stream.js';

const t = await testApp();

/**
 * An item split into sub-lines moves no head when it admits (its sub-lines' heads move only by
 * cuts): a stream's watcher was never taken as passed by the head, and an admission reached it at
 * its next visit — the last view's pollAfterMs or the 10 s heartbeat — while a poll showed it at
 * once (a review: 5.9 s at place 30, 83 ms on one line). Its watcher now counts in join numbers
 * against the highest admitted.
 */
describe('event stream of a split item', () => {
  it.each([
    [1, 0],
    [2, 0],
    [2, 5],
  ])('tells an admission as a poll shows it (lines: %i, tickets returned to the head: %i)', async (lines, returned) => {
    const { app, call } = t.build({ cacheMs: 50 });
    const item = `split-stream-${lines}-${returned}`;
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'external', lines, gate: { mode: 'manual', rate: returned ? 1000 : 1 } })).status).toBe(201);
    const ids: string[] = [];
    for (let i = 0; i < 120; i++) ids.push((await call('POST', `/v1/items/${item}/tickets`, { userId: `u${i}` }, SERVICE)).body.ticketId);
    if (returned) {
      // Handed out and given back by their worker: they go before the line, and every place counts them.
      const out = (await call('POST', `/v1/items/${item}/pull`, { max: returned }, SERVICE)).body.tickets as { ticketId: string; leaseId: string }[];
      expect(out).toHaveLength(returned);
      for (const p of out) expect((await call('POST', `/v1/tickets/${p.ticketId}/outcome`, { leaseId: p.leaseId, status: 'failed', reason: 'busy', retry: true }, SERVICE)).status).toBe(200);
      expect((await call('PATCH', `/v1/items/${item}/gate`, { rate: 1 })).status).toBe(200);
    }
    const last = ids.at(-1)!;
    const s = followTicket(app, last);
    const first = await s.next();
    expect(first).toMatchObject({ state: 'waiting' });
    // Told to come back in 10 s or more: a stream that waits for its next visit is that late.
    expect(first.pollAfterMs).toBeGreaterThanOrEqual(10_000);
    expect((await call('PATCH', `/v1/items/${item}/gate`, { rate: 1000 })).status).toBe(200);
    let pulled = 0;
    while (pulled < ids.length) {
      const got = (await call('POST', `/v1/items/${item}/pull`, { max: 200 }, SERVICE)).body.tickets.length;
      pulled += got;
      if (!got) await new Promise((r) => setTimeout(r, 20));
    }
    expect((await call('GET', `/v1/tickets/${last}`, undefined, null)).body.state).toBe('admitted');
    const at = performance.now();
    let v = first;
    while (v.state === 'waiting') v = await s.next(15_000);
    expect(v.state).toBe('admitted');
    // A tick or two (100 ms) and a view refresh, not the 10 s a visit waited for.
    expect(performance.now() - at).toBeLessThan(5000);
  }, 60_000);
});
