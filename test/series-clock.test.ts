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

  it('of an idle item with people waiting ends with a point for now from its view, not blank (a gate closed on a line)', async () => {
    const { call, series, clock } = t.build();
    const item = t.uniqueItem();
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'external', gate: { mode: 'closed' } })).status).toBe(201);
    for (const u of ['u1', 'u2', 'u3']) expect((await call('POST', `/v1/items/${item}/tickets`, { userId: u }, 'svc-key-test')).status).toBe(202);
    const shape = { waiting: 3, admitted: 0, succeeded: 0, rejected: 0, failed: 0, rate: 0, maxInFlight: 0 };
    // No point recorded in the window (no loop visits a closed line): its start and now, as it stands.
    const now = Math.floor(clock.now() / 1000);
    const blank = (await call('GET', `/v1/items/${item}/series?windowMs=60000`)).body.points;
    expect(blank).toHaveLength(2); // before: none, as if nobody waited
    expect(blank[0]).toMatchObject({ t: (now - 59) * 1000, ...shape });
    expect(blank[1].t).toBeGreaterThanOrEqual(now * 1000);
    expect(blank[1]).toMatchObject(shape);
    // Points recorded until it went idle, 20 s ago: they, then now.
    const sample = (s: number) => ({ at: s * 1000, waiting: 3, admissions: 0, succeeded: 0, rejected: 0, failed: 0, rate: 0, maxInFlight: 0, ctlRate: null, ctlLimit: null, p50Ms: null, p99Ms: null });
    for (let s = now - 22; s <= now - 20; s++) await series.add(item, s, sample(s));
    const after = (await call('GET', `/v1/items/${item}/series?windowMs=60000`)).body.points;
    expect(after.map((p: { t: number }) => p.t).slice(0, 2)).toEqual([(now - 21) * 1000, (now - 20) * 1000]);
    expect(after).toHaveLength(3);
    expect(after[2]).toMatchObject(shape);
    // A window of one second: one point (both had the same second), and a join just made is in it
    // (the daemon's cached view, up to FLOODGATE_CACHE_MS old, read 0 waiting after two joins).
    const other = t.uniqueItem();
    const cached = t.build({ cacheMs: 5000 });
    expect((await cached.call('PUT', `/v1/items/${other}`, { handler: 'external', gate: { mode: 'closed' } })).status).toBe(201);
    expect((await cached.call('GET', `/v1/items/${other}/series?windowMs=1000`)).body.points).toMatchObject([{ waiting: 0 }]);
    for (const u of ['u1', 'u2']) expect((await cached.call('POST', `/v1/items/${other}/tickets`, { userId: u }, 'svc-key-test')).status).toBe(202);
    expect((await cached.call('GET', `/v1/items/${other}/series?windowMs=1000`)).body.points).toMatchObject([{ waiting: 2 }]);
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
