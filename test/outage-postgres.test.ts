import { afterAll, describe, expect, it } from 'vitest';
import { testDb } from './support/db.js';
import { inProcessDaemon, waitFor } from './support/daemon-inproc.js';
import { proxyFor } from './support/proxy.js';
import { testRedis } from './support/redis.js';

// The daemon reaches this file's database only through a proxy the test cuts and restores. Its
// keys live under this file's prefix, removed after it (a prefix of its own was left behind).
const { newPrefix } = testRedis();
const db = await testDb();
const { proxy, url: viaProxy } = await proxyFor(db.url);
afterAll(() => proxy.close()); // after the daemon's stop (registered below, so run before this)
const { call } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: viaProxy });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('when Postgres is unreachable', () => {
  // (60 s: its own waits add up to 6 s of outage traffic and 20 s for the first change after it; a
  // clean-clone run once passed vitest's 30 s here, and a timeout says less than the measured ms.)
  it('refuses item changes with 503 leaving Redis unchanged, and takes them again within 2 s of its return', { timeout: 60_000 }, async () => {
    // Each phase's time is logged: a clean-clone run once spent 22 s more than the usual 8 s here,
    // and where is not known yet.
    let mark = performance.now();
    const phase = (name: string) => {
      console.log(`${name}: ${Math.round(performance.now() - mark)} ms`);
      mark = performance.now();
    };
    expect((await call('PUT', '/v1/items/sku-a', { handler: 'external', gate: { mode: 'manual', rate: 10 } })).status).toBe(201);
    phase('define');
    const before = (await call('GET', '/v1/items/sku-a')).body;

    await proxy.cut();
    phase('cut');
    const created = await call('PUT', '/v1/items/sku-b', { handler: 'external' });
    expect(created.status).toBe(503);
    expect(created.body.error.code).toBe('unavailable');
    expect((await call('GET', '/v1/items/sku-b')).status).toBe(404);
    const changed = await call('PUT', '/v1/items/sku-a', { handler: 'external', capacity: 5, gate: { mode: 'manual', rate: 20 } });
    expect(changed.status).toBe(503);
    expect((await call('PATCH', '/v1/items/sku-a/gate', { rate: 30 })).status).toBe(503);
    expect((await call('DELETE', '/v1/items/sku-a')).status).toBe(503);
    expect((await call('GET', '/v1/items/sku-a')).body).toMatchObject({ capacity: before.capacity, gate: before.gate, state: before.state });
    expect((await db.sql`select count(*)::int as n from items where item_id = 'sku-b'`)[0].n).toBe(0);
    const ready = await call('GET', '/readyz', undefined, null);
    expect(ready.status).toBe(503);
    expect(ready.body.checks).toMatchObject({ redis: 'ok', postgres: 'fail' });
    phase('refusals while cut');

    // Traffic goes on during the outage (each readiness probe is a query): every failed attempt
    // lengthens postgres.js's reconnect backoff.
    for (const until = performance.now() + 6000; performance.now() < until; ) {
      await call('GET', '/readyz', undefined, null);
      await sleep(100);
    }
    phase('traffic while cut');
    await proxy.restore();
    const restoredAt = performance.now();
    const back = await waitFor(() => call('PUT', '/v1/items/sku-b', { handler: 'external' }), (r) => r.status === 201, 20_000);
    const ms = performance.now() - restoredAt;
    expect(back.status).toBe(201);
    // At most about half a second by design (the reconnect backoff is capped at 0.5 s; 33 ms in a
    // run on 3 Dec); postgres.js's own backoff made this up to ~20 s. The bound leaves room for a
    // CI machine under load.
    expect(ms).toBeLessThan(5000);
    expect((await db.sql`select count(*)::int as n from items where item_id = 'sku-b'`)[0].n).toBe(1);
    console.log(`first item change ${Math.round(ms)} ms after postgres came back`);
  });
});
