import { afterAll, describe, expect, it } from 'vitest';
import { http } from './support/http.js';
import { processEnv, startDaemonProcess, type RunningDaemon } from './support/daemon.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';
import { joinAll, userIds } from './support/joins.js';

const { newPrefix } = testRedis();
const db = await testDb();
const running: RunningDaemon[] = [];
afterAll(async () => {
  await Promise.all(running.map((d) => d.stop('SIGKILL')));
});


describe('a daemon SIGKILLed in the middle of a sale', () => {
  it('loses nothing: after a restart every ticket ends, exactly the stock is sold, nobody twice', { timeout: 150_000 }, async () => {
    const env = processEnv(db.url, newPrefix(), { FLOODGATE_JOB_LOCK_MS: '2000', FLOODGATE_DISPATCH_LEASE_MS: '2000' });
    const first = await startDaemonProcess(env);
    running.push(first);
    const stock = 150;
    // Everyone joins while the gate is closed, so no sale starts before the line is complete; then
    // a slow drip (25/s: the stock lasts ~6 s) lets the kill land with tickets queued, running and
    // waiting however busy the machine is.
    await http(first.url, 'PUT', '/v1/items/crash', { handler: 'seckill', config: { stock }, gate: { mode: 'closed' } }, 'op');
    const ids = (await joinAll((u) => http(first.url, 'POST', '/v1/items/crash/tickets', { userId: u }, 'svc'), userIds(0, 600), { batch: 60 })).map((r) => r.body.ticketId as string);
    expect((await http(first.url, 'PATCH', '/v1/items/crash/gate', { mode: 'manual', rate: 25, maxInFlight: 40 }, 'op')).status).toBe(200);
    for (;;) {
      const r = await http(first.url, 'GET', '/v1/items/crash', undefined, 'op');
      const item = r.body;
      if (r.status === 200 && item.counts.succeeded >= 20) {
        expect(item.counts.waiting).toBeGreaterThan(0); // the kill lands mid-sale
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    await first.stop('SIGKILL');

    const second = await startDaemonProcess(env);
    running.push(second);
    await http(second.url, 'PATCH', '/v1/items/crash/gate', { clear: ['rate'] }, 'op'); // the rest at full speed
    // The item's counts say when the line is done (one request a poll; 600 a poll loaded a busy
    // machine further), then every ticket's view is read.
    const deadline = Date.now() + 60_000;
    let views: { state: string; userId: string; outcome?: { reason?: string } }[] = [];
    do {
      const r = await http(second.url, 'GET', '/v1/items/crash', undefined, 'op');
      if (r.status === 200 && r.body.counts.waiting === 0 && r.body.counts.admitted === 0) {
        views = await Promise.all(ids.map((id) => http(second.url, 'GET', `/v1/tickets/${id}`).then((r) => r.body)));
        if (views.every((v) => v.state === 'succeeded' || v.state === 'rejected')) break;
      }
      await new Promise((r) => setTimeout(r, 250));
    } while (Date.now() < deadline);

    const states = views.reduce<Record<string, number>>((acc, v) => ({ ...acc, [v.state]: (acc[v.state] ?? 0) + 1 }), {});
    expect(states).toEqual({ succeeded: stock, rejected: ids.length - stock });
    const orders = await db.sql`select user_id from orders where item_id = 'crash'`;
    expect(orders.length).toBe(stock);
    expect(new Set(orders.map((o) => o.user_id)).size).toBe(stock);
    const winners = new Set(views.filter((v) => v.state === 'succeeded').map((v) => v.userId));
    expect(orders.every((o) => winners.has(o.user_id))).toBe(true);
    const [row] = await db.sql`select sold from item_stock where item_id = 'crash'`;
    expect(row.sold).toBe(stock);
  });
});
