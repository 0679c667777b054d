import { describe, expect, it } from 'vitest';
import { SERVICE, testApp } from './support/app.js';

/**
 * A line waiting behind a closed gate leaves the loops' active set (it costs nothing); clocks wake
 * it for what is due (a pre-queue's draw, the window's end). A `closesAt` set, or moved earlier, by
 * a PUT that leaves the gate closed asked for no wake: the tickets read `waiting` past the end
 * until a join, an opening gate or a restart came. The PUT now asks for one.
 */
const t = await testApp();

describe('a closesAt set on a line parked behind a closed gate', () => {
  it('wakes the line at the end, so the loops end its tickets', async () => {
    const clock = t.manualClock();
    const { call, queue } = t.build({ clock });
    const item = t.uniqueItem();
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: 100 }, gate: { mode: 'closed' } })).status).toBe(201);
    for (const u of ['a', 'b']) expect((await call('POST', `/v1/items/${item}/tickets`, { userId: u }, SERVICE)).status).toBe(202);
    clock.advance(120_000); // the joins' activity long over
    expect(await queue.items.activeItemIds()).not.toContain(item);
    const closesAt = clock.now() + 1500;
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: 100 }, closesAt: new Date(closesAt).toISOString() })).status).toBe(200);
    clock.advance(100);
    expect(await queue.items.activeItemIds()).not.toContain(item);
    clock.advance(1500);
    // Due: the dispatcher's next read of the active items finds it, and cuts it closed.
    expect(await queue.items.activeItemIds()).toContain(item);
  });
});
