import { describe, expect, it } from 'vitest';
import { testApp } from './support/app.js';

/**
 * The console's series is read up to the daemon's own time, which its recorder stamps seconds
 * with (Redis's time: kernel/redis-time.ts), not the machine's clock: a daemon on a machine two
 * minutes behind Redis answered an empty series for an item that had points (a review's run).
 */
const t = await testApp();

describe("an item's series", () => {
  it("is read up to the daemon's time, whatever the machine's clock says", async () => {
    const clock = t.manualClock(Date.now() + 120_000); // the daemon's time: ahead of this machine's clock
    const { call, series } = t.build({ clock });
    const item = t.uniqueItem();
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'external' })).status).toBe(201);
    const now = Math.floor(clock.now() / 1000);
    for (let s = now - 2; s <= now; s++) await series.add(item, s, { at: s * 1000, waiting: 5, admissions: s - now + 10, succeeded: 0, rejected: 0, failed: 0, rate: 10, maxInFlight: null, ctlRate: null, ctlLimit: null, p50Ms: null, p99Ms: null });
    const r = await call('GET', `/v1/items/${item}/series?windowMs=60000`);
    expect(r.status).toBe(200);
    expect(r.body.points.length).toBeGreaterThanOrEqual(2); // before: 0
  });

  it('takes its window, and the audit its limit, as decimal digits only (0x3e8 was 1000)', async () => {
    const { call } = t.build();
    const item = t.uniqueItem();
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'external' })).status).toBe(201);
    for (const q of ['windowMs=0x3e8', 'windowMs=%201000', 'windowMs=0b1111101000', 'windowMs=1e4', 'windowMs=-1000']) expect((await call('GET', `/v1/items/${item}/series?${q}`)).status, q).toBe(400);
    for (const q of ['limit=0x10', 'limit=1.0', 'limit=']) expect((await call('GET', `/v1/items/${item}/audit?${q}`)).status, q).toBe(400);
    expect((await call('GET', `/v1/items/${item}/series?windowMs=1000`)).status).toBe(200);
    expect((await call('GET', `/v1/items/${item}/series`)).status).toBe(200);
    expect((await call('GET', `/v1/items/${item}/audit?limit=5`)).status).toBe(200);
  });
});
