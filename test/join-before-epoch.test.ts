import { describe, expect, it } from 'vitest';
import { SERVICE, testApp } from './support/app.js';

/**
 * A join whose daemon's clock reads a little before the item's epoch (the ms the daemon that made
 * the item read): another daemon 80 ms behind — under redis-time's 100 ms step, so not corrected —
 * or one whose clock was stepped back. Its record carried a negative offset that the admission's
 * parse did not read, and every admit and pull of the item failed (500) for good: the line stopped.
 */
const t = await testApp();

describe('a join stamped before the item was made', () => {
  for (const lines of [1, 2]) {
    it(`is admitted in its turn, and the line goes on (lines: ${lines})`, async () => {
      const T = Date.UTC(2026, 5, 1, 12, 0, 0);
      const clockA = t.manualClock(T);
      const clockB = t.manualClock(T - 80);
      const A = t.build({ clock: clockA });
      const B = t.build({ clock: clockB, prefix: A.prefix });
      const item = t.uniqueItem();
      expect((await A.call('PUT', `/v1/items/${item}`, { handler: 'external', lines, gate: { mode: 'manual', rate: 1000 } })).status).toBe(201);
      clockA.advance(30);
      clockB.advance(30); // B reads T - 50: before the epoch
      const early = await B.call('POST', `/v1/items/${item}/tickets`, { userId: 'early' }, SERVICE);
      const next = await A.call('POST', `/v1/items/${item}/tickets`, { userId: 'next' }, SERVICE);
      expect([early.status, next.status]).toEqual([202, 202]);
      clockA.advance(1000);
      const pull = await A.call('POST', `/v1/items/${item}/pull`, { max: 10 }, SERVICE);
      expect(pull.status).toBe(200);
      expect(pull.body.tickets.map((p: { ticketId: string }) => p.ticketId)).toEqual([early.body.ticketId, next.body.ticketId]);
      const view = await A.call('GET', `/v1/tickets/${early.body.ticketId}`, undefined, null);
      expect(view.body.state).toBe('admitted');
      expect(Date.parse(view.body.createdAt)).toBeGreaterThanOrEqual(T);
    });
  }
});
