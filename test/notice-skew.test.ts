import { describe, expect, it } from 'vitest';
import { testApp } from './support/app.js';

/**
 * Daemons keep Redis's time only when their clock is 100 ms or more off it (kernel/redis-time.ts),
 * so two may disagree by up to twice that. A change notice was stamped with the announcing
 * daemon's own time and compared with views other daemons read on theirs: from a daemon 95 ms
 * behind, an operator's change looked older than a view read before it, and that view was kept —
 * for good on an idle item (the list showed the old gate), and a newcomer to a restocked item was
 * refused `410 sold_out` from memory while the other daemon let them in.
 */
const t = await testApp();

describe('a change announced by a daemon whose clock is a little behind', () => {
  it('makes the other daemons read the item again', async () => {
    const T = Date.UTC(2026, 11, 5, 20, 0, 0);
    const ahead = t.manualClock(T + 95);
    const behind = t.manualClock(T);
    const a = t.build({ clock: ahead, cacheMs: 250 });
    const b = t.build({ clock: behind, prefix: a.prefix, cacheMs: 250 });
    const item = t.uniqueItem();
    expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'external', gate: { mode: 'closed', maxInFlight: 10 } })).status).toBe(201);
    const shown = async () => ((await a.call('GET', '/v1/items')).body.items as { itemId: string; gate: { maxInFlight: number } }[]).find((i) => i.itemId === item)!.gate.maxInFlight;
    ahead.advance(300);
    behind.advance(300);
    expect(await shown()).toBe(10);
    ahead.advance(10);
    behind.advance(10);
    expect((await b.call('PATCH', `/v1/items/${item}/gate`, { mode: 'closed', maxInFlight: 11 })).status).toBe(200);
    // Past FLOODGATE_CACHE_MS: a view nobody noticed a change of is trusted however old (idle
    // items cost nothing); one with a change noticed since is read again.
    ahead.advance(1000);
    behind.advance(1000);
    expect(await shown()).toBe(11); // before: 10, and for good
  });
});
