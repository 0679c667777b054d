import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';
import { joinAll, userIds } from './support/joins.js';

const { newPrefix } = testRedis();
const db = await testDb();
const { call, daemon } = await inProcessDaemon({
  prefix: newPrefix(),
  databaseUrl: db.url,
  env: { FLOODGATE_JOB_ATTEMPTS: '3', FLOODGATE_JOB_BACKOFF_MS: '50' },
});

const ref = (ticketId: string) => createHash('sha256').update(ticketId).digest('base64url');

const settled = (id: string) =>
  waitFor(
    () => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body),
    (v) => !['waiting', 'admitted'].includes(v.state),
  );

describe('coupon', () => {
  it('hands out exactly the total; the per-user limit is enforced; a user under the limit may join again', async () => {
    await call('PUT', '/v1/items/cp', { handler: 'coupon', config: { total: 25, perUser: 2 } });
    const joins = await joinAll((u) => call('POST', '/v1/items/cp/tickets', { userId: u }, SVC), userIds(0, 80), { also: [410] });
    const views = await Promise.all(joins.filter((j) => j.status === 202).map((j) => settled(j.body.ticketId)));
    const won = views.filter((v) => v.state === 'succeeded');
    expect(won.length).toBe(25);
    expect(views.filter((v) => v.state === 'rejected').every((v) => v.outcome.reason === 'sold_out')).toBe(true);
    const [{ n }] = await db.sql`select count(*)::int as n from coupon_claims where item_id = 'cp'`;
    expect(n).toBe(25);

    await call('PUT', '/v1/items/cp2', { handler: 'coupon', config: { total: 10, perUser: 2 } });
    const results = [];
    for (let k = 0; k < 2; k++) {
      const j = await call('POST', '/v1/items/cp2/tickets', { userId: 'greedy' }, SVC);
      expect(j.status).toBe(202);
      results.push(await settled(j.body.ticketId));
    }
    expect(results.map((r) => r.state)).toEqual(['succeeded', 'succeeded']);
    // A user past perUser is answered their last ticket (200), as a seckill winner is, with no new
    // ticket made; a failure in between does not reset the count.
    const third = await call('POST', '/v1/items/cp2/tickets', { userId: 'greedy' }, SVC);
    expect([third.status, third.body.ticketId, third.body.state]).toEqual([200, results[1].ticketId, 'succeeded']);
    const claims = await db.sql`select claim_no from coupon_claims where item_id = 'cp2' order by claim_no`;
    expect(claims.map((c) => c.claim_no)).toEqual([1, 2]);
    expect((await call('GET', '/v1/items/cp2')).body.remaining).toBe(8);
    // A cancel between the wins: the count holds across it.
    await call('PUT', '/v1/items/cp3', { handler: 'coupon', config: { total: 10, perUser: 2 }, gate: { mode: 'closed' } });
    await call('PATCH', '/v1/items/cp3/gate', { mode: 'manual', rate: 1000 });
    const first = await call('POST', '/v1/items/cp3/tickets', { userId: 'g2' }, SVC);
    expect((await settled(first.body.ticketId)).state).toBe('succeeded');
    await call('PATCH', '/v1/items/cp3/gate', { mode: 'closed' });
    const waiting = await call('POST', '/v1/items/cp3/tickets', { userId: 'g2' }, SVC);
    expect(waiting.status).toBe(202);
    expect((await call('DELETE', `/v1/tickets/${waiting.body.ticketId}`, undefined, SVC)).status).toBe(200);
    await call('PATCH', '/v1/items/cp3/gate', { mode: 'manual', rate: 1000 });
    const again = await call('POST', '/v1/items/cp3/tickets', { userId: 'g2' }, SVC);
    expect(again.status).toBe(202);
    expect((await settled(again.body.ticketId)).state).toBe('succeeded');
    const past = await call('POST', '/v1/items/cp3/tickets', { userId: 'g2' }, SVC);
    expect([past.status, past.body.ticketId]).toEqual([200, again.body.ticketId]);
  });
});

describe('webhook', () => {
  const seen = new Map<string, { calls: number; keys: Set<string>; body: any }>();
  const slow = new Set<NodeJS.Timeout>();
  const server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    let raw = '';
    for await (const chunk of req) raw += chunk;
    const body = JSON.parse(raw);
    const s = seen.get(body.userId) ?? { calls: 0, keys: new Set<string>(), body };
    s.calls++;
    s.keys.add(String(req.headers['idempotency-key']));
    seen.set(body.userId, s);
    const send = (status: number, json?: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(json === undefined ? '' : JSON.stringify(json));
    };
    if (body.userId === 'ok') return send(200, { orderId: 'W1', auth: req.headers['x-shop-key'] });
    if (body.userId === 'no') return send(409, { error: 'limit' });
    if (body.userId === 'flaky') return s.calls < 3 ? send(503) : send(201, { orderId: 'W2' });
    if (body.userId === 'down') return send(503);
    if (body.userId === 'bad') return send(400, { error: 'bad' });
    if (body.userId === 'slow') return slow.add(setTimeout(() => send(200, {}), 5000)); // far past the timeout
    if (body.userId.startsWith('b-ok')) return send(200, { n: s.calls });
    if (body.userId.startsWith('b-flaky')) return s.calls < 2 ? send(503) : send(200, { n: s.calls });
    send(500);
  });
  afterAll(() => {
    slow.forEach(clearTimeout);
    server.closeAllConnections();
    return new Promise((r) => server.close(r));
  });

  it('maps 2xx, 409, 5xx with retries, timeouts and 4xx to outcomes, with the ticket ref as idempotency key', async () => {
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
    await call('PUT', '/v1/items/wh', { handler: 'webhook', config: { url, timeoutMs: 1000, headers: { 'x-shop-key': 'k1' } } });
    const ids: Record<string, string> = {};
    for (const u of ['ok', 'no', 'flaky', 'down', 'bad', 'slow']) ids[u] = (await call('POST', '/v1/items/wh/tickets', { userId: u, payload: { sku: 1 } }, SVC)).body.ticketId;
    const v = Object.fromEntries(await Promise.all(Object.entries(ids).map(async ([u, id]) => [u, await settled(id)])));
    expect(v.ok).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'W1', auth: 'k1' } } });
    expect(v.no).toMatchObject({ state: 'rejected', outcome: { reason: 'http_409', result: { error: 'limit' } } });
    expect(v.flaky).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'W2' } } });
    expect(v.down).toMatchObject({ state: 'failed', outcome: { reason: 'http_503' } });
    expect(v.bad).toMatchObject({ state: 'failed', outcome: { reason: 'http_400' } });
    expect(v.slow).toMatchObject({ state: 'failed', outcome: { reason: 'timeout' } });
    expect(seen.get('flaky')!.calls).toBe(3);
    expect(seen.get('down')!.calls).toBe(3);
    expect(seen.get('bad')!.calls).toBe(1);
    expect([...seen.get('flaky')!.keys]).toEqual([ref(ids.flaky)]);
    expect(seen.get('ok')!.body).toEqual({ ticketRef: ref(ids.ok), itemId: 'wh', userId: 'ok', payload: { sku: 1 } });
    const metrics = await (await fetch(`${daemon.url}/metrics`)).text();
    // Drops the gate will see: flaky 2 × 503, down 3 × 503, slow 3 timeouts.
    expect(metrics).toMatch(/floodgate_downstream_calls_total\{item="wh",result="drop"\} 8/);
  });

  it('tickets admitted together run as one job: a retry re-runs only the tickets that dropped', async () => {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
    await call('PUT', '/v1/items/wh2', { handler: 'webhook', config: { url, timeoutMs: 2000 }, gate: { mode: 'closed' } });
    const users = ['b-ok-1', 'b-flaky-1', 'b-ok-2', 'b-flaky-2', 'b-ok-3', 'b-ok-4'];
    const ids = [];
    for (const userId of users) ids.push((await call('POST', '/v1/items/wh2/tickets', { userId }, SVC)).body.ticketId as string);
    // One round of the dispatcher admits all six: one job.
    expect((await call('PATCH', '/v1/items/wh2/gate', { mode: 'manual', maxInFlight: 10 })).status).toBe(200);
    const views = await Promise.all(ids.map(settled));
    expect(views.map((v) => v.state)).toEqual(users.map(() => 'succeeded'));
    // The flaky ones dropped once and ran again; the others were settled at once and not re-run.
    expect(users.map((u) => seen.get(u)!.calls)).toEqual(users.map((u) => (u.startsWith('b-flaky') ? 2 : 1)));
    expect(views.map((v) => v.outcome.result.n)).toEqual(users.map((u) => (u.startsWith('b-flaky') ? 2 : 1)));
  });
});
