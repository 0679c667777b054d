import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { retrying503, userIds } from './support/joins.js';
import { testRedis } from './support/redis.js';

/**
 * A split item (`lines` > 1) shows a waiting ticket the place n − A (its join number less the
 * highest admitted). Joins refused before a sale opens, or while the item is closed, took join
 * numbers all the same, and nobody held those places: the first joiner once the item opened was
 * told every refused join as people ahead, with an ETA to match (a review: 100 joins refused before
 * a restocked item's opening, then place 101 and an ETA of 50 s for a ticket admitted at once).
 * One line counts only tickets that exist; the split line now takes no number for a join it will
 * refuse.
 */
const { newPrefix } = testRedis();
const db = await testDb();
const { call: callOnce } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url });
const call = retrying503(callOnce);
const join = (item: string, userId: string) => call('POST', `/v1/items/${item}/tickets`, { userId }, SVC);

describe('joins a split item refuses', () => {
  it.each([4, 1])('take no place from the joiners after them: not open yet, then closed (lines: %i)', { timeout: 60_000 }, async (lines) => {
    const item = `refused-${lines}`;
    const define = (extra: Record<string, unknown>) => call('PUT', `/v1/items/${item}`, { handler: 'external', lines, gate: { mode: 'closed' }, ...extra });
    expect((await define({})).status).toBe(201);
    // Someone in line already: new users' joins reach the line's scripts, not only the cached refusal.
    expect((await join(item, 'early')).status).toBe(202);
    // The sale moved to later: refused until then.
    expect((await define({ opensAt: new Date(Date.now() + 3_600_000).toISOString() })).status).toBe(200);
    for (const u of userIds(0, 40, 'pre')) expect((await join(item, u)).status).toBe(425);
    expect((await define({ opensAt: null })).status).toBe(200);
    const second = await join(item, 'second');
    expect(second.body.position).toBe(2); // before: 42 on a split item
    // Closed: refused; opened again.
    expect((await call('DELETE', `/v1/items/${item}`)).status).toBe(200);
    for (const u of userIds(0, 40, 'shut')) expect((await join(item, u)).status).toBe(410);
    expect((await define({})).status).toBe(200);
    const third = await join(item, 'third');
    expect(third.status).toBe(202);
    expect(third.body.position).toBe(1); // the close ended the two before it
    const polled = await waitFor(() => call('GET', `/v1/tickets/${third.body.ticketId}`, undefined, null), (r) => r.status === 200);
    expect(polled.body.position).toBe(1);
  });
});
