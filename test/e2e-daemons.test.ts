import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';
import { http } from './support/http.js';
import { startDaemonProcess, type RunningDaemon } from './support/daemon.js';

const { redis, newPrefix } = testRedis();
const db = await testDb();
const running: RunningDaemon[] = [];
afterAll(async () => {
  await Promise.all(running.map((d) => d.stop('SIGKILL')));
});

const env = (prefix: string) => ({
  REDIS_URL: redis.options.host ? `redis://${redis.options.host}:${redis.options.port}` : '',
  DATABASE_URL: db.url,
  FLOODGATE_REDIS_PREFIX: prefix,
  FLOODGATE_SERVICE_KEYS: 'svc-a,svc-b',
  FLOODGATE_OPERATOR_KEYS: 'op',
});


describe('two daemon processes on one Redis and one Postgres', () => {
  it('share one line and one gate, serve health and metrics, and stop gracefully on SIGTERM', { timeout: 90_000 }, async () => {
    const prefix = newPrefix();
    const [a, b] = await Promise.all([startDaemonProcess(env(prefix)), startDaemonProcess(env(prefix))]);
    running.push(a, b);
    const item = `e2e-${randomBytes(3).toString('hex')}`;
    expect((await http(a.url, 'PUT', `/v1/items/${item}`, { handler: 'external', gate: { mode: 'manual', maxInFlight: 5 } }, 'op')).status).toBe(201);
    const joins = await Promise.all(
      Array.from({ length: 40 }, (_, i) => http(i % 2 ? a.url : b.url, 'POST', `/v1/items/${item}/tickets`, { userId: `u${i}` }, i % 2 ? 'svc-a' : 'svc-b')),
    );
    expect(joins.map((j) => j.body.position).sort((x, y) => x - y)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));

    const p1 = await http(a.url, 'POST', `/v1/items/${item}/pull`, { max: 3 }, 'svc-a');
    const p2 = await http(b.url, 'POST', `/v1/items/${item}/pull`, { max: 10 }, 'svc-b');
    expect(p1.body.tickets.length + p2.body.tickets.length).toBe(5);
    const first = p1.body.tickets[0];
    // The other daemon reads it admitted once its cached counters are renewed (FLOODGATE_CACHE_MS, 250 ms).
    let seen: string | undefined;
    for (const until = Date.now() + 5000; seen !== 'admitted' && Date.now() < until; await new Promise((r) => setTimeout(r, 50)))
      seen = (await http(b.url, 'GET', `/v1/tickets/${first.ticketId}`)).body.state;
    expect(seen).toBe('admitted');
    const done = await http(b.url, 'POST', `/v1/tickets/${first.ticketId}/outcome`, { leaseId: first.leaseId, status: 'succeeded', result: { orderId: 'o1' } }, 'svc-b');
    expect(done.body.state).toBe('succeeded');

    expect((await http(a.url, 'GET', '/healthz')).body).toEqual({ status: 'ok' });
    // (Polled: a daemon just started under a loaded machine's suite answered 503 once, its checks past their time.)
    await expect.poll(async () => (await http(b.url, 'GET', '/readyz')).status, { timeout: 15_000 }).toBe(200);
    // A scrape shows the daemon's cached item view (at most FLOODGATE_CACHE_MS old, refreshed by its
    // dispatcher): a pull through the other daemon shows up within that time.
    const waiting = new RegExp(`floodgate_line_waiting\\{item="${item}"\\} 35`);
    let metrics = await http(a.url, 'GET', '/metrics');
    for (const until = Date.now() + 10_000; !waiting.test(metrics.body) && Date.now() < until; metrics = await http(a.url, 'GET', '/metrics'))
      await new Promise((r) => setTimeout(r, 50));
    expect(metrics.body).toMatch(/floodgate_joins_total\{item="[^"]+",result="created"\} \d+/);
    expect(metrics.body).toMatch(waiting);
    expect((await http(a.url, 'GET', '/openapi.json')).body.paths['/v1/items/{itemId}/tickets']).toBeTruthy();

    expect(await a.stop('SIGTERM')).toBe(0);
    expect(a.output()).toMatch(/"msg":"stopped"/);
    // The line survives the other daemon's exit.
    const polled = await http(b.url, 'GET', `/v1/tickets/${joins[39].body.ticketId}`);
    expect(polled.body.state).toBe('waiting');
  });
});
