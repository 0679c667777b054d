import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { recordingDownstream } from './support/downstream.js';
import { testDb } from './support/db.js';
import { joinAll, userIds } from './support/joins.js';
import { testRedis } from './support/redis.js';

/**
 * A daemon stopping takes no more jobs: its workers stop fetching at the stop's first moment, not
 * after the HTTP drain. A client that stopped sending mid-body held the drain its full 5 s, the
 * workers took the jobs the other daemon queued meanwhile, and the stop then dropped them (exit 1)
 * and they were called again elsewhere, under the same key (a review's run).
 */
const { newPrefix } = testRedis();
const db = await testDb();
const prefix = newPrefix();

describe('a daemon stopping while another queues jobs', () => {
  it('takes none of them: the jobs it runs finish, none is cut short or called twice', { timeout: 90_000 }, async () => {
    const shop = await recordingDownstream((_, res) => void setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'), 3500));
    const a = await inProcessDaemon({ prefix, databaseUrl: db.url });
    const b = await inProcessDaemon({ prefix, databaseUrl: db.url });
    expect((await a.call('PUT', '/v1/items/stopjobs', { handler: 'webhook', config: { url: shop.url, timeoutMs: 20_000 }, gate: { mode: 'manual', rate: 4 } })).status).toBe(201);
    const joins = await joinAll((u) => b.call('POST', '/v1/items/stopjobs/tickets', { userId: u }, SVC), userIds(0, 40));
    const ids = joins.map((r) => r.body.ticketId as string);
    await waitFor(async () => shop.seen.length, (n) => n >= 4, 20_000);
    // A client that sends half a body and then nothing: it holds A's drain to its end (5 s).
    const port = Number(new URL(a.daemon.url).port);
    const stalled = connect(port, '127.0.0.1');
    await new Promise<void>((r) => stalled.once('connect', () => r()));
    stalled.write(`PUT /v1/items/other HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer op-key\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{"handler"`);
    try {
      const { jobsCutShort } = await a.daemon.stop();
      expect(jobsCutShort).toBe(false); // before: true (jobs taken during the drain, dropped at the close)
    } finally {
      stalled.destroy();
    }
    const views = await waitFor(() => Promise.all(ids.map((id) => b.call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body.state))), (vs) => vs.every((s) => s === 'succeeded'), 60_000);
    expect(views.every((s) => s === 'succeeded')).toBe(true);
    const keys = shop.seen.map((s) => String(s.headers['idempotency-key']));
    expect(keys.length - new Set(keys).size).toBe(0); // before: a key called again after the drop
  });
});
