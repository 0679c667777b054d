import { describe, expect, it } from 'vitest';
import { subLineOf } from '../src/queue/split-line.js';
import { SERVICE, testApp } from './support/app.js';

/**
 * An operator's stock change mid-sale on a split item (lines > 1): the units admitted tickets hold
 * are not on the counters (they sell or come back), so they come off the new count before it is
 * shared out over the sub-lines. Shared out first, a sub-line holding more than its share stopped
 * at 0 and the others kept theirs: units counted twice, as many tickets admitted too many.
 */
const t = await testApp();

describe("a split item's stock set mid-sale", () => {
  it('leaves off its counters the units its admitted tickets hold, whichever sub-line holds them', async () => {
    const a = t.build();
    const item = t.uniqueItem();
    const put = (stock: number) => a.call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock }, lines: 2, gate: { mode: 'manual' } });
    expect((await put(4)).status).toBe(201);
    // Three users of sub-line 0 join and are admitted (the sub-line takes a unit from the other's share).
    const users = Array.from({ length: 60 }, (_, i) => `u${i}`).filter((u) => subLineOf(u, 2) === 0).slice(0, 3);
    for (const userId of users) expect((await a.call('POST', `/v1/items/${item}/tickets`, { userId }, SERVICE)).status).toBe(202);
    const admitted = await a.queue.admissions.admit(item, 3, 3_600_000);
    expect(admitted.map((x) => x.userId).sort()).toEqual([...users].sort());
    expect((await a.call('GET', `/v1/items/${item}`)).body.remaining).toBe(1);
    // The operator sets the stock again (nothing sold): 4, of which the three admitted hold three.
    const again = await put(4);
    expect(again.status).toBe(200);
    expect(again.body.remaining).toBe(1); // before: 2 (4 − 3 only on sub-line 0's share of 2, floored at 0, and 2 on the other's)
  });
});
