import { describe, expect, it } from 'vitest';
import { whenDone } from './support/cleanup.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { proxyFor } from './support/proxy.js';
import { testRedis } from './support/redis.js';

/**
 * A sale window ends while Postgres answers, but too slowly for the cut's look at who bought (an
 * item of a million sales took 4–5 s to read; here every answer is held 4 s, past the look's 2 s):
 * the cut goes on without the look, as an operator's close does. A version that waited for the
 * look whenever it failed never ended such an item's window: its tickets read `waiting` for good
 * (a review of this stop). Only a Postgres that is away makes the window's end wait.
 */
const { newPrefix } = testRedis();
const db = await testDb();

describe("a sale window's end while Postgres is slow", () => {
  it('ends the waiting tickets closed all the same', { timeout: 90_000 }, async () => {
    const { proxy, url } = await proxyFor(db.url);
    whenDone(() => proxy.close());
    const d = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: url, env: { FLOODGATE_PG_TIMEOUT_MS: '30000' } });
    const closesAt = Date.now() + 3000;
    await d.define('ws', { handler: 'external', gate: { mode: 'closed' }, closesAt: new Date(closesAt).toISOString() });
    const ids: string[] = [];
    for (const u of ['a', 'b']) ids.push((await d.call('POST', '/v1/items/ws/tickets', { userId: u }, SVC)).body.ticketId as string);
    proxy.delay(4000);
    whenDone(() => proxy.delay(0));
    const views = await waitFor(() => Promise.all(ids.map((id) => d.call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body))), (vs) => vs.every((v) => v.state === 'cancelled'), 20_000);
    expect(views.map((v) => [v.state, v.outcome?.reason])).toEqual([['cancelled', 'closed'], ['cancelled', 'closed']]);
    proxy.delay(0);
  });
});
