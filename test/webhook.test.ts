import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { HandlerContext } from '../src/service/handler.js';
import { webhook } from '../src/service/handlers/webhook.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { recordingDownstream } from './support/downstream.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

const logLines: string[] = [];
const { newPrefix } = testRedis();
const db = await testDb();
const { call } = await inProcessDaemon({
  prefix: newPrefix(),
  databaseUrl: db.url,
  env: { FLOODGATE_JOB_ATTEMPTS: '3', FLOODGATE_JOB_BACKOFF_MS: '50' },
  log: pino({ level: 'debug' }, { write: (line: string) => void logLines.push(line) }),
});

const downstream = recordingDownstream;

const json = (res: ServerResponse, status: number, body: string) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(body);
};

const settled = (id: string) =>
  waitFor(
    () => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body),
    (v) => !['waiting', 'admitted'].includes(v.state),
  );

async function join(itemId: string, userId: string) {
  const j = await call('POST', `/v1/items/${itemId}/tickets`, { userId, payload: { sku: 7 } }, SVC);
  expect(j.status).toBe(202);
  return j.body.ticketId as string;
}

/** What a downstream does with node:crypto alone (the README's example). */
function verify(secret: string, header: string, rawBody: string, nowSec: number): boolean {
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header);
  if (!m || Math.abs(nowSec - Number(m[1])) > 300) return false;
  const want = createHmac('sha256', secret).update(`${m[1]}.${rawBody}`).digest();
  return timingSafeEqual(want, Buffer.from(m[2], 'hex'));
}

describe('webhook security', () => {
  it('signs each call with the item secret, keys it by the ticket ref, and never sends the ticket id', async () => {
    const down = await downstream((_, res) => json(res, 200, '{"orderId":"S1"}'));
    const put = await call('PUT', '/v1/items/sig', { handler: 'webhook', config: { url: down.url, headers: { 'x-shop-key': 'shop-secret-value' } } });
    expect(put.status).toBe(201);
    expect(put.body.config.secret).toBeUndefined();
    expect(put.body.config.headers).toEqual({ 'x-shop-key': '[redacted]' });
    const view = await call('GET', '/v1/items/sig');
    const list = await call('GET', '/v1/items');
    for (const shown of [JSON.stringify(view.body), JSON.stringify(list.body)]) expect(shown).not.toContain('shop-secret-value');

    expect((await call('GET', '/v1/items/sig/webhook-secret', undefined, SVC)).status).toBe(403);
    const got = await call('GET', '/v1/items/sig/webhook-secret');
    expect(got.status).toBe(200);
    const secret = got.body.secret as string;
    expect(secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(JSON.stringify(view.body)).not.toContain(secret);

    const ticketId = await join('sig', 'u1');
    expect(await settled(ticketId)).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'S1' } } });
    expect(down.seen).toHaveLength(1);
    const [req] = down.seen;
    expect(verify(secret, String(req.headers['floodgate-signature']), req.body, Math.floor(Date.now() / 1000))).toBe(true);
    expect(verify(secret, String(req.headers['floodgate-signature']), req.body.replace('u1', 'u2'), Math.floor(Date.now() / 1000))).toBe(false);
    const ref = createHash('sha256').update(ticketId).digest('base64url');
    expect(req.headers['idempotency-key']).toBe(ref);
    expect(JSON.parse(req.body)).toEqual({ ticketRef: ref, itemId: 'sig', userId: 'u1', payload: { sku: 7 } });
    expect(req.headers['x-shop-key']).toBe('shop-secret-value');
    expect(req.rawHeaders.join('\n') + req.body).not.toContain(ticketId);
  });

  it('keeps the secret when the item is replaced without one, takes a given one, and refuses bad ones', async () => {
    const { url } = await downstream((_, res) => json(res, 200, '{}'));
    await call('PUT', '/v1/items/keep', { handler: 'webhook', config: { url } });
    const first = (await call('GET', '/v1/items/keep/webhook-secret')).body.secret;
    expect((await call('PUT', '/v1/items/keep', { handler: 'webhook', config: { url, timeoutMs: 900 } })).status).toBe(200);
    expect((await call('GET', '/v1/items/keep/webhook-secret')).body.secret).toBe(first);
    const mine = 'm'.repeat(40);
    expect((await call('PUT', '/v1/items/keep', { handler: 'webhook', config: { url, secret: mine } })).body.config.secret).toBeUndefined();
    expect((await call('GET', '/v1/items/keep/webhook-secret')).body.secret).toBe(mine);

    expect((await call('PUT', '/v1/items/keep', { handler: 'webhook', config: { url, secret: 'short' } })).status).toBe(400);
    expect((await call('PUT', '/v1/items/keep', { handler: 'webhook', config: { url, headers: { 'x-a': 'v\r\nx-b: injected' } } })).status).toBe(400);
    // Headers the HTTP client owns: with one, every call of the item failed (connection_error).
    for (const name of ['Transfer-Encoding', 'content-length', 'connection', 'keep-alive', 'upgrade', 'expect']) {
      const refused = await call('PUT', '/v1/items/keep', { handler: 'webhook', config: { url, headers: { [name]: '5' } } });
      expect(refused.status, name).toBe(400);
      expect(JSON.stringify(refused.body.error.details.issues)).toContain('config.headers');
    }
    // Headers every call sets itself: the item's own went out replaced, without a word (a fuzz review).
    for (const name of ['Host', 'content-type', 'Idempotency-Key', 'floodgate-signature']) {
      const refused = await call('PUT', '/v1/items/keep', { handler: 'webhook', config: { url, headers: { [name]: 'mine' } } });
      expect(refused.status, name).toBe(400);
      expect(JSON.stringify(refused.body.error.details.issues)).toContain('config.headers');
    }
    // A port fetch refuses to call: taken (201), every call failed connection_error, and the
    // service never heard a thing.
    for (const port of [6000, 10080, 1, 0]) {
      const refused = await call('PUT', '/v1/items/keep', { handler: 'webhook', config: { url: `http://127.0.0.1:${port}/orders` } });
      expect(refused.status, String(port)).toBe(400);
      expect(JSON.stringify(refused.body.error.details.issues)).toContain('config.url');
    }
    await call('PUT', '/v1/items/plain', { handler: 'external' });
    expect((await call('GET', '/v1/items/plain/webhook-secret')).status).toBe(409);
    expect((await call('GET', '/v1/items/nothing-here/webhook-secret')).status).toBe(404);
  });

  it('fails a call to a port fetch refuses at once (blocked_port, nothing kept as unsure), for an item defined before such ports were refused', async () => {
    const unsure = { take: async () => null, answered: async () => {}, keep: async () => expect.fail('nothing was sent: no unsure call') };
    const ctx = { signal: new AbortController().signal, deadlineMs: 5000, now: () => Date.now(), log: pino({ level: 'silent' }), unsure } as unknown as HandlerContext;
    const t = { ticketId: 'old-item-ticket', itemId: 'old', seq: 1, userId: 'u', payload: null, config: { url: 'http://127.0.0.1:6000/orders', headers: {} }, attempt: 1 };
    await expect(webhook.handle!(t, ctx)).rejects.toMatchObject({ permanent: true, message: 'blocked_port' });
  });

  it('does not follow a redirect: the target never hears of it and the ticket fails http_302', async () => {
    const target = await downstream((_, res) => json(res, 200, '{"stolen":true}'));
    const redirecting = await downstream((_, res) => {
      res.writeHead(302, { location: target.url });
      res.end();
    });
    await call('PUT', '/v1/items/redir', { handler: 'webhook', config: { url: redirecting.url, headers: { authorization: 'Bearer downstream-key' } } });
    const v = await settled(await join('redir', 'u1'));
    expect(v).toMatchObject({ state: 'failed', outcome: { reason: 'http_302' } });
    expect(v.outcome.result).toBeUndefined();
    expect(redirecting.seen).toHaveLength(1);
    expect(target.seen).toHaveLength(0);
  });

  it('ends a ticket succeeded, without a result, when its 2xx answer is over 64 KiB or cut short, reading no further than the bound', async () => {
    const big = JSON.stringify({ pad: 'x'.repeat(1024 * 1024) });
    let endless = { written: 0, closed: false };
    const down = await downstream((req, res) => {
      if (JSON.parse(req.body).userId === 'big') return json(res, 200, big);
      // No length given and no end: only the daemon closing the connection stops this.
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"pad":"');
      const chunk = 'y'.repeat(16 * 1024);
      const pump = () => {
        while (!res.destroyed && endless.written < 256 * 1024 * 1024) {
          endless.written += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
      };
      res.on('close', () => (endless.closed = true));
      pump();
    });
    await call('PUT', '/v1/items/big', { handler: 'webhook', config: { url: down.url, timeoutMs: 20_000 } });
    const views = await Promise.all([settled(await join('big', 'big')), settled(await join('big', 'endless'))]);
    // The status said the downstream made the order: the user is told so, once (no second call).
    for (const v of views) {
      expect(v).toMatchObject({ state: 'succeeded', outcome: { status: 'succeeded' } });
      expect(v.outcome.result).toBeUndefined();
    }
    expect(down.seen).toHaveLength(2);
    await waitFor(async () => endless.closed, (c) => c);
    expect(endless.closed).toBe(true);
    expect(endless.written).toBeLessThan(256 * 1024 * 1024);
  });

  it("keeps a 2xx answer's body that comes after the call's deadline, once its status came in time", async () => {
    // The status at once, the body (the order id) after the 300 ms deadline: as a busy daemon
    // reads a body that arrived in time. Bound by the deadline, it was cut, and the user told
    // `succeeded` without their order id.
    const down = await downstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"orderId":');
      setTimeout(() => res.end('"L-1"}'), 800);
    });
    await call('PUT', '/v1/items/late-body', { handler: 'webhook', config: { url: down.url, timeoutMs: 300 } });
    const v = await settled(await join('late-body', 'u1'));
    expect(v).toMatchObject({ state: 'succeeded', outcome: { status: 'succeeded', result: { orderId: 'L-1' } } }); // before: no result
    expect(down.seen).toHaveLength(1);
  });

  it('ends a ticket succeeded when the connection is cut in the middle of its 2xx answer', async () => {
    const down = await downstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
      res.write('{"orderId":');
      setTimeout(() => res.destroy(), 20);
    });
    await call('PUT', '/v1/items/cut-answer', { handler: 'webhook', config: { url: down.url } });
    const v = await settled(await join('cut-answer', 'u1'));
    expect(v).toMatchObject({ state: 'succeeded', outcome: { status: 'succeeded' } });
    expect(down.seen).toHaveLength(1);
  });

  it("calls again, under the same key, a ticket whose retry is answered 409 while its first call is still being processed, and ends it with that call's answer", async () => {
    // The first call outlives its 150 ms timeout: the downstream is still making the order when
    // the retry comes, which it tells 409 (IETF Idempotency-Key draft, Stripe); the order is made
    // just after, and a call after that is answered what the first call did.
    const orders = new Map<string, 'processing' | string>();
    const finish = new Map<string, () => void>();
    const down = await downstream((req, res) => {
      const key = String(req.headers['idempotency-key']);
      const done = orders.get(key);
      if (done === 'processing') {
        json(res, 409, '{"error":"request in progress"}');
        return finish.get(key)!();
      }
      if (done) return json(res, 200, done);
      orders.set(key, 'processing');
      finish.set(key, () => {
        orders.set(key, '{"orderId":"A-1"}');
        if (!res.destroyed) json(res, 200, '{"orderId":"A-1"}');
      });
    });
    await call('PUT', '/v1/items/in-progress', { handler: 'webhook', config: { url: down.url, timeoutMs: 150 } });
    const v = await settled(await join('in-progress', 'u1'));
    expect(v).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'A-1' } } });
    expect([...orders.values()]).toEqual(['{"orderId":"A-1"}']);
    expect(new Set(down.seen.map((r) => r.headers['idempotency-key'])).size).toBe(1);
  });

  it('keeps the outcome of an answer Postgres cannot store (NUL, lone surrogate), without the body: the downstream did the work', async () => {
    const down = await downstream((req, res) => {
      const u = JSON.parse(req.body).userId;
      if (u === 'nul') return json(res, 200, '{"a":"x\\u0000y"}');
      if (u === 'surrogate') return json(res, 200, '{"a":"\\ud800"}');
      if (u === 'key') return json(res, 409, '{"\\udfff":1}');
      json(res, 200, '{"a":"\\ud83d\\ude00"}');
    });
    await call('PUT', '/v1/items/odd', { handler: 'webhook', config: { url: down.url } });
    const users = ['nul', 'surrogate', 'key', 'fine'];
    const views = await Promise.all((await Promise.all(users.map((u) => join('odd', u)))).map(settled));
    expect(views.map((v) => [v.state, v.outcome.reason ?? null, v.outcome.result ?? null])).toEqual([
      ['succeeded', null, null],
      ['succeeded', null, null],
      ['rejected', 'http_409', null],
      ['succeeded', null, { a: '😀' }],
    ]);
  });

  it('logs neither the secret nor header values', async () => {
    const secret = (await call('GET', '/v1/items/sig/webhook-secret')).body.secret;
    expect(secret).toMatch(/^.{32,}$/);
    expect(logLines.length).toBeGreaterThan(0);
    const all = logLines.join('');
    for (const s of [secret, 'shop-secret-value', 'downstream-key', 'm'.repeat(40)]) expect(all).not.toContain(s);
  });
});
