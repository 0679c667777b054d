import { describe, expect, it } from 'vitest';
import { SERVICE, testApp } from './support/app.js';
import { followTicket } from './support/ticket-stream.js';

/** A ticket's event stream at its pre-queue's draw: the drawn place is news, as the poll shows it at once. */
const t = await testApp();

const follow = followTicket;

describe('ticket events at a pre-queue draw', () => {
  it('tell a pre-queued watcher its drawn place at the next tick after the draw, not at its 10 s heartbeat', async () => {
    const opensAt = Date.now() + 3600_000;
    const clock = t.manualClock(opensAt - 60_000);
    const { app, call, queue } = t.build({ clock });
    const item = t.uniqueItem();
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'external', gate: { mode: 'closed' }, opensAt: new Date(opensAt).toISOString(), preQueue: { fromMs: 600_000 } })).status).toBe(201);
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) ids.push((await call('POST', `/v1/items/${item}/tickets`, { userId: `u${i}` }, SERVICE)).body.ticketId);
    const s = follow(app, ids[0]);
    await expect.poll(() => s.views.length).toBe(1);
    expect(s.views[0]).toMatchObject({ position: null, reason: 'not_open' });
    // The watch sees the opening (a few ticks, 250 ms of the clock each) before the draw is written…
    clock.set(opensAt + 1);
    const tick = async () => {
      clock.advance(250);
      await new Promise((r) => setTimeout(r, 50));
    };
    for (let i = 0; i < 4; i++) await tick();
    // …then the draw lands: within a few ticks, the stream has its place.
    await queue.admissions.sweep();
    const polled = (await call('GET', `/v1/tickets/${ids[0]}`, undefined, null)).body;
    expect(typeof polled.position).toBe('number');
    for (let ms = 0; ms <= 2000 && !s.views.some((v) => typeof v.position === 'number'); ms += 250) await tick();
    expect(s.views.at(-1)?.position).toBe(polled.position);
    // Cancelled, its stream ends at the watch's next tick.
    await call('DELETE', `/v1/tickets/${ids[0]}`, undefined, null);
    let ended = false;
    void s.done.then(() => (ended = true));
    for (let i = 0; i < 40 && !ended; i++) await tick();
    expect(ended).toBe(true);
  });
});
