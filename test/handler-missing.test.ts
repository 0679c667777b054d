import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { inProcessDaemon, recordingLogger, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

/**
 * An item whose handler this daemon does not have — made by a daemon that loaded a module
 * (FLOODGATE_HANDLERS_MODULE) this one was started without — admits nobody here. Its waiting users
 * read `paused` with no ETA, its status `paused`, and the daemon says why in its log (a review: they
 * read positions and an ETA counting down to nothing, the status `open`, and nothing was logged).
 */
const { newPrefix } = testRedis();
const db = await testDb();
const handlersModule = path.resolve(import.meta.dirname, 'fixtures/echo-handler.ts');

describe('an item whose handler the daemon does not have', () => {
  it('reads paused, with no ETA, and is named in the log', { timeout: 60_000 }, async () => {
    const prefix = newPrefix();
    const a = await inProcessDaemon({ prefix, databaseUrl: db.url, env: { FLOODGATE_HANDLERS_MODULE: handlersModule } });
    await a.define('r1', { handler: 'echo', gate: { mode: 'closed' } });
    const ids: string[] = [];
    for (const u of ['ann', 'bob']) ids.push((await a.call('POST', '/v1/items/r1/tickets', { userId: u }, SVC)).body.ticketId as string);
    await a.daemon.stop();

    const logged = recordingLogger('warn', 1000);
    const b = await inProcessDaemon({ prefix, databaseUrl: db.url, log: logged.log });
    expect((await b.call('PATCH', '/v1/items/r1/gate', { mode: 'manual', rate: 100, maxInFlight: 10 })).status).toBe(200);
    const views = await Promise.all(ids.map((id) => b.call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body)));
    expect(views.map((v) => [v.state, v.reason, v.etaMs])).toEqual([
      ['waiting', 'paused', undefined],
      ['waiting', 'paused', undefined],
    ]);
    expect((await b.call('GET', '/v1/items/r1/status', undefined, SVC)).body.state).toBe('paused');
    expect(await waitFor(async () => logged.lines(), (l) => l.includes('no such handler'), 10_000)).toContain('"itemId":"r1"');
  });
});
