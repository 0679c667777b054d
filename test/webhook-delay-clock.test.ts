import { Queue } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { jobQueuePrefix } from '../src/redis/keys.js';
import { queueName } from '../src/service/jobs.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { recordingDownstream } from './support/downstream.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

/**
 * BullMQ times a job's delay by the machine clock of the worker that takes it: with one daemon's
 * clock two minutes behind, another daemon's worker took the delayed job at once (a review: a
 * `Retry-After: 20` was called again 2.9 s later). A job taken before its time waits out the rest
 * on the daemons' clock. Played here by promoting the delayed job once the daemon that delayed it
 * has stopped, so another daemon's worker takes it.
 */
const { newPrefix, redis } = testRedis();
const db = await testDb();
const prefix = newPrefix();
const a = await inProcessDaemon({ prefix, databaseUrl: db.url, env: { FLOODGATE_JOB_BACKOFF_MS: '50' } });

describe('a delayed webhook job taken before its time', () => {
  it('is not called until the wait its downstream asked has passed', { timeout: 60_000 }, async () => {
    const calls: number[] = [];
    const down = await recordingDownstream((_req, res) => {
      calls.push(Date.now());
      if (calls.length === 1) res.writeHead(503, { 'retry-after': '3' }).end();
      else res.writeHead(200, { 'content-type': 'application/json' }).end('{"orderId":"D1"}');
    });
    await a.define('early', { handler: 'webhook', config: { url: down.url } });
    const id = (await a.call('POST', '/v1/items/early/tickets', { userId: 'u1' }, SVC)).body.ticketId as string;
    const q = new Queue(queueName('webhook'), { connection: redis, prefix: jobQueuePrefix(prefix, queueName('webhook')) });
    try {
      const [delayed] = await waitFor(() => q.getDelayed(), (jobs) => jobs.length === 1);
      expect(calls).toHaveLength(1);
      await a.daemon.stop();
      const b = await inProcessDaemon({ prefix, databaseUrl: db.url, env: { FLOODGATE_JOB_BACKOFF_MS: '50' } });
      await delayed.promote();
      const done = await waitFor(() => b.call('GET', `/v1/tickets/${id}`, undefined, null), (r) => r.body.state === 'succeeded', 30_000);
      expect(done.body.state).toBe('succeeded');
      expect(calls).toHaveLength(2);
      expect(calls[1] - calls[0]).toBeGreaterThanOrEqual(3000);
    } finally {
      await q.close();
    }
  });
});
