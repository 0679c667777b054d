import { describe, expect, it } from 'vitest';
import { createPgHealth } from '../src/db/health.js';
import { testDb } from './support/db.js';
import { inProcessDaemon, recordingLogger, waitFor } from './support/daemon-inproc.js';
import { testRedis } from './support/redis.js';

/**
 * A sale call that waits on something other than Postgres's answer (a driver defect held queries
 * for good twice: scripts/patch-postgres.mjs) never ends, and nothing said so: its tickets stayed
 * admitted with their units held while /readyz read ready (the stall check's `select 1` answers).
 * Past twice the silence watch's time such a call is logged, once, and its age is a gauge.
 */
const db = await testDb();
const { newPrefix } = testRedis();
const { call } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url });

describe('a sale call to Postgres that never ends', () => {
  it('is logged once as stuck past its time, and its age read until it ends', async () => {
    const rec = recordingLogger('error');
    const health = createPgHealth(db.sql, rec.log, { probeMs: 250, probeTimeoutMs: 5000, stuckAfterMs: 300 });
    try {
      let end!: () => void;
      const first = health.track(new Promise<void>((r) => (end = r)));
      expect(health.oldestMs(performance.now())).toBeLessThan(300);
      await waitFor(async () => rec.lines(), (l) => l.includes('waited past'), 5000);
      expect(health.oldestMs(performance.now())).toBeGreaterThan(300);
      // A second one: logged for itself; the first is not logged again.
      let endSecond!: () => void;
      const second = health.track(new Promise<void>((r) => (endSecond = r)));
      await waitFor(async () => rec.lines().split('\n').filter((l) => l.includes('waited past')), (l) => l.length === 2, 5000);
      await new Promise((r) => setTimeout(r, 400));
      const logged = rec.lines().split('\n').filter((l) => l.includes('waited past')).map((l) => JSON.parse(l));
      expect(logged.map((l) => l.stuck)).toEqual([1, 1]);
      end();
      await first;
      // The oldest is now the second.
      expect(health.oldestMs(performance.now())).toBeLessThan(1500);
      endSecond();
      await second;
      expect(health.oldestMs(performance.now())).toBe(0);
      // Calls that end in time say nothing.
      await health.track(new Promise((r) => setTimeout(r, 50)));
      await new Promise((r) => setTimeout(r, 400));
      expect(rec.lines().split('\n').filter((l) => l.includes('waited past'))).toHaveLength(2);
    } finally {
      health.stop();
    }
  });

  it("is a gauge of the daemon's metrics (0 with none under way)", async () => {
    const scrape = await call('GET', '/metrics');
    expect(scrape.status).toBe(200);
    expect(String(scrape.body)).toMatch(/^floodgate_postgres_oldest_call_seconds 0$/m);
  });
});
