import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { manualClock } from '../src/kernel/clock.js';
import { createLogger } from '../src/kernel/logger.js';
import { createLine } from '../src/queue/line.js';
import { startDispatcher } from '../src/scheduler/dispatcher.js';
import { createJobQueues } from '../src/service/jobs.js';
import { createHandlerRegistry } from '../src/service/registry.js';
import { redisUrl, testRedis } from './support/redis.js';

/**
 * The dispatcher delivers a manual gate's rate once joins stop. Between about 5/s and 25/s the
 * pace's burst is one ticket (max(1, 0.1 × rate), whole tickets), and the dispatcher, with nothing
 * to wake it, came back every ~105 ms: each admission waited for the first visit after it was due,
 * and that time was lost (7/s delivered 4.1-6.7/s, 15/s 7.4-13.3/s). It now comes back when the
 * pace lets the next ticket in (admit-12.lua's code 2).
 *
 * Shown on the test's clock: the dispatcher's idle wait is a minute, so one that waited it out
 * admits nothing more within the 5 s each step is given. (This was a count of admissions in 4 s
 * of wall time against 0.9 × 15/s, which the fixed code missed beside the heaviest test files of
 * a clean-clone run on a slower machine: 12.2/s. The rate delivered is the gate benchmark's.)
 */
const t = testRedis();
const conn = new Redis(redisUrl(), { maxRetriesPerRequest: null });
afterAll(() => conn.disconnect());

/** A handler that succeeds at once: the dispatcher's work is what this test watches. */
const probe = { name: 'probe', config: z.record(z.string(), z.unknown()), rejoin: () => 'any' as const, external: false, handle: async () => ({ status: 'succeeded' as const, result: {} }) };

describe('the dispatcher under a manual pace', () => {
  it('comes back when the pace lets the next ticket in, not after its idle wait', { timeout: 60_000 }, async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const line = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
    const jobs = createJobQueues(conn, { prefix, attempts: 3, backoffMs: 100, concurrency: 4, lockDurationMs: 10_000, stalledIntervalMs: 5000, batch: 200 }, (err) => console.error('job queue error', err));
    let admitted = 0;
    const dispatcher = startDispatcher(
      { queue: line, handlers: createHandlerRegistry([probe]), jobs, clock, log: createLogger('silent'), onAdmitted: (_itemId, n) => void (admitted += n) },
      { idleMs: 60_000, batch: 200, dispatchLeaseMs: 60_000, autoCap: 10 },
    );
    try {
      const rate = 15;
      await line.definitions.define({ itemId: 'paced', handler: 'probe', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' }, { mode: 'manual', rate, maxInFlight: null }, { reopen: false });
      for (let i = 0; i < 20; i++) await line.tickets.join('paced', `u${i}`, null);
      dispatcher.wake('paced');
      // The pace's burst goes in at once; the rest wait for the test's clock, which stands still.
      await expect.poll(() => admitted, { timeout: 5000 }).toBeGreaterThan(0);
      const burst = admitted;
      await new Promise((r) => setTimeout(r, 300));
      expect(admitted).toBe(burst);
      // Each ticket's due time reached: it is admitted without a join or a settle to wake the dispatcher.
      for (let k = 1; k <= 5; k++) {
        clock.advance(Math.ceil(1000 / rate));
        await expect.poll(() => admitted, { timeout: 5000 }).toBe(burst + k);
      }
    } finally {
      await dispatcher.stop();
      await jobs.close();
    }
  });
});
