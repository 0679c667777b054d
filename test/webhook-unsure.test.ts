import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { recordingDownstream, type Seen } from './support/downstream.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';
import { manualClock, systemClock } from '../src/kernel/clock.js';
import { createUnsureCalls } from '../src/service/unsure-calls.js';
import { ticketRef } from '../src/kernel/ticket-ref.js';
import { itemKeys } from '../src/redis/keys.js';

const { redis, newPrefix } = testRedis();
const db = await testDb();
const prefix = newPrefix();
const { call } = await inProcessDaemon({
  prefix,
  databaseUrl: db.url,
  env: { FLOODGATE_JOB_ATTEMPTS: '2', FLOODGATE_JOB_BACKOFF_MS: '50' },
});

const settled = (id: string) =>
  waitFor(
    () => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body),
    (v) => !['waiting', 'admitted'].includes(v.state),
  );

async function join(itemId: string, userId: string, payload: Record<string, unknown>) {
  const j = await call('POST', `/v1/items/${itemId}/tickets`, { userId, payload }, SVC);
  expect(j.status).toBe(202);
  return j.body.ticketId as string;
}

/** A loopback port nothing listens on (fetch refuses some low ones outright, port 9 among them). */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

/**
 * A shop that de-duplicates on the Idempotency-Key, as the README asks: an order per key, made on
 * the first call that reaches it; the same key again answers the same order. `fault` says how the
 * answer of a call that made (or found) its order fails to come back.
 */
async function idempotentShop() {
  const orders = new Map<string, { orderId: string; userId: string; payload: unknown }>();
  const shop = {
    fault: 'none' as 'none' | 'hang' | 'http_502',
    /** A call under a key seen before is answered this status (a firewall's 403 to retries, a 404 or a redirect mid-deploy). */
    repeatsAnswered: null as number | null,
    /** Every call answered 503 before the shop looks at it. */
    overloaded: false,
    /** New keys are refused with a 422 the shop keeps: a call repeated under such a key is refused again. */
    refusing: false,
    refused: new Set<string>(),
    orders,
    ...(await recordingDownstream((req: Seen, res: ServerResponse) => {
      const key = String(req.headers['idempotency-key']);
      const body = JSON.parse(req.body) as { userId: string; payload: unknown };
      if (shop.overloaded) {
        res.writeHead(503).end();
        return;
      }
      if (shop.refused.has(key) || (shop.refusing && !orders.has(key))) {
        shop.refused.add(key);
        res.writeHead(422, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'not_eligible' }));
        return;
      }
      if (orders.has(key) && shop.repeatsAnswered !== null) {
        res.writeHead(shop.repeatsAnswered, { location: 'http://127.0.0.1:9/' }).end();
        return;
      }
      if (!orders.has(key)) orders.set(key, { orderId: `O${orders.size + 1}`, userId: body.userId, payload: body.payload });
      if (shop.fault === 'hang') return; // the order is made; the answer never comes (the daemon times out)
      if (shop.fault === 'http_502') {
        res.writeHead(502).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ orderId: orders.get(key)!.orderId }));
    })),
  };
  return shop;
}

/** A shop and an item that calls it with a 300 ms timeout; `userId`'s first ticket timed out after the shop made its order. */
async function orderThatTimedOut(itemId: string, userId: string, payload: Record<string, unknown>) {
  const shop = await idempotentShop();
  expect((await call('PUT', `/v1/items/${itemId}`, { handler: 'webhook', config: { url: shop.url, timeoutMs: 300 } })).status).toBe(201);
  shop.fault = 'hang';
  const first = await join(itemId, userId, payload);
  expect(await settled(first)).toMatchObject({ state: 'failed', outcome: { reason: 'timeout' } });
  expect(shop.orders.size).toBe(1);
  return shop;
}

describe('a webhook call whose outcome is unknown', () => {
  it('is repeated, key and body, for the user\'s next ticket: a timeout that made the order, then a join again, is one order', async () => {
    const shop = await orderThatTimedOut('unsure-t', 'u1', { size: 42 }); // the shop made the order; the user was told `failed`
    expect(shop.seen).toHaveLength(2); // both attempts, under one key

    // The answers come back now; the user, told `failed`, joins again (another payload, even).
    shop.fault = 'none';
    const second = await join('unsure-t', 'u1', { size: 43 });
    const v = await settled(second);
    expect(v).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'O1' } } });
    expect(shop.orders.size).toBe(1); // before: a new key, a second order (O2)
    const [a, , c] = shop.seen;
    expect(c.headers['idempotency-key']).toBe(a.headers['idempotency-key']);
    expect(c.body).toBe(a.body); // the first call's body: an idempotent shop may compare them

    // That call was answered: the user's next ticket is a call of its own (a new key, its payload).
    const third = await join('unsure-t', 'u1', { size: 44 });
    expect(await settled(third)).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'O2' } } });
    expect(shop.orders.get(String(shop.seen[3].headers['idempotency-key']))).toMatchObject({ userId: 'u1', payload: { size: 44 } });
  });

  it('is kept after a 502 (a gateway that gave up after the work), not after a refused connection', async () => {
    const shop = await idempotentShop();
    expect((await call('PUT', '/v1/items/unsure-5', { handler: 'webhook', config: { url: shop.url, timeoutMs: 2000 } })).status).toBe(201);
    shop.fault = 'http_502';
    const first = await join('unsure-5', 'u2', { n: 1 });
    expect(await settled(first)).toMatchObject({ state: 'failed', outcome: { reason: 'http_502' } });
    shop.fault = 'none';
    const second = await join('unsure-5', 'u2', { n: 2 });
    expect(await settled(second)).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'O1' } } });
    expect(shop.orders.size).toBe(1);

    // Nobody listens: nothing can have been done, and the next ticket is a call of its own.
    const closed = await idempotentShop();
    const { url } = closed;
    await call('PUT', '/v1/items/unsure-r', { handler: 'webhook', config: { url: `http://127.0.0.1:${await freePort()}/hook`, timeoutMs: 2000 } });
    const refused = await join('unsure-r', 'u3', { n: 1 });
    expect(await settled(refused)).toMatchObject({ state: 'failed', outcome: { reason: 'connection_refused' } });
    expect((await call('PUT', '/v1/items/unsure-r', { handler: 'webhook', config: { url, timeoutMs: 2000 } })).status).toBe(200);
    const again = await join('unsure-r', 'u3', { n: 2 });
    expect(await settled(again)).toMatchObject({ state: 'succeeded' });
    expect(JSON.parse(closed.seen[0].body)).toMatchObject({ userId: 'u3', payload: { n: 2 } });
  });
});

describe('a call kept after its own ticket was answered', () => {
  it("is no unsure call: the user's next ticket calls under its own key and gets its own order", async () => {
    // A run superseded while it waited (its daemon paused past the run lease; another daemon ran
    // the ticket, got the shop's answer and cleared the call) keeps its call when its drop comes
    // after: a review saw the user's next ticket told `succeeded` with the first ticket's order,
    // and no second order made. Played by keeping the call after the ticket succeeded.
    const shop = await idempotentShop();
    expect((await call('PUT', '/v1/items/unsure-late', { handler: 'webhook', config: { url: shop.url } })).status).toBe(201);
    const first = await join('unsure-late', 'u9', { n: 1 });
    expect(await settled(first)).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'O1' } } });
    await waitFor(() => db.sql`select status from ticket_outcomes where ticket_id = ${ticketRef(first)}`, (rows) => rows.length === 1);
    const late = createUnsureCalls({ redis, prefix, clock: systemClock })('unsure-late');
    await late.keep('u9', { key: ticketRef(first), body: shop.seen[0].body });
    const second = await join('unsure-late', 'u9', { n: 2 });
    expect(await settled(second)).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'O2' } } });
    expect(shop.seen.map((c) => c.headers['idempotency-key'])).toEqual([ticketRef(first), ticketRef(second)]);
    expect(await redis.hget(itemKeys(prefix, 'unsure-late').unsure, 'u9')).toBeNull();
  });

  it("is no unsure call when the shop refused it: the user's next ticket is not told the old refusal", async () => {
    // As above with a ticket the shop refused (a 422 it keeps under the key): repeated, the
    // user's next ticket was told `rejected` with the first ticket's refusal.
    const shop = await idempotentShop();
    expect((await call('PUT', '/v1/items/unsure-late-no', { handler: 'webhook', config: { url: shop.url } })).status).toBe(201);
    shop.refusing = true;
    const first = await join('unsure-late-no', 'u10', { n: 1 });
    expect(await settled(first)).toMatchObject({ state: 'rejected', outcome: { reason: 'http_422' } });
    await waitFor(() => db.sql`select status from ticket_outcomes where ticket_id = ${ticketRef(first)}`, (rows) => rows.length === 1);
    const late = createUnsureCalls({ redis, prefix, clock: systemClock })('unsure-late-no');
    await late.keep('u10', { key: ticketRef(first), body: shop.seen[0].body });
    shop.refusing = false;
    const second = await join('unsure-late-no', 'u10', { n: 2 });
    expect(await settled(second)).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'O1' } } });
    expect(shop.seen.map((c) => c.headers['idempotency-key'])).toEqual([ticketRef(first), ticketRef(second)]);
  });

  it('stays unsure when its ticket was refused by the daemon, not the shop: the call may still have made an order', async () => {
    // A first call that timed out (the shop made the order), then the ticket ended without a
    // call of the shop's answering (the item closed on it): the call is still unsure, and the
    // user's next ticket repeats it and is told the order the first call made.
    const shop = await idempotentShop();
    expect((await call('PUT', '/v1/items/unsure-late-closed', { handler: 'webhook', config: { url: shop.url } })).status).toBe(201);
    const first = await join('unsure-late-closed', 'u11', { n: 1 });
    expect(await settled(first)).toMatchObject({ state: 'succeeded' });
    await waitFor(() => db.sql`select status from ticket_outcomes where ticket_id = ${ticketRef(first)}`, (rows) => rows.length === 1);
    // (The ledger's word, as a ticket ended by the daemon's own refusal would leave it.)
    await db.sql`update ticket_outcomes set status = 'rejected', reason = 'item_closed', result = null where ticket_id = ${ticketRef(first)}`;
    const late = createUnsureCalls({ redis, prefix, clock: systemClock })('unsure-late-closed');
    await late.keep('u11', { key: ticketRef(first), body: shop.seen[0].body });
    const second = await join('unsure-late-closed', 'u11', { n: 2 });
    expect(await settled(second)).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'O1' } } });
    expect(shop.seen.map((c) => c.headers['idempotency-key'])).toEqual([ticketRef(first), ticketRef(first)]);
  });
});

describe("a repetition of an unsure call that never reached the shop", () => {
  it("leaves the call to the user's next ticket: a timeout that made the order, a ticket met by 503s, then one that repeats it, one order", async () => {
    const shop = await orderThatTimedOut('unsure-503', 'u6', { n: 1 });
    // The shop is overloaded: the next ticket's repetition is answered 503 (it never looked at it).
    shop.fault = 'none';
    shop.overloaded = true;
    const second = await join('unsure-503', 'u6', { n: 2 });
    expect(await settled(second)).toMatchObject({ state: 'failed', outcome: { reason: 'http_503' } });
    shop.overloaded = false;
    const third = await join('unsure-503', 'u6', { n: 3 });
    expect(await settled(third)).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'O1' } } });
    expect(shop.orders.size).toBe(1); // before: the third ticket's own key, a second order
  });
});

describe('a timeout, then a refusal of the attempt after it', () => {
  for (const status of [403, 404, 307, 400]) {
    it(`keeps the call that timed out (${status} to its retry): the user's next ticket repeats it, one order`, async () => {
      const shop = await idempotentShop();
      const item = `unsure-${status}`;
      expect((await call('PUT', `/v1/items/${item}`, { handler: 'webhook', config: { url: shop.url, timeoutMs: 300 } })).status).toBe(201);
      shop.fault = 'hang';
      shop.repeatsAnswered = status;
      const first = await join(item, 'u5', { n: 1 });
      expect(await settled(first)).toMatchObject({ state: 'failed', outcome: { reason: `http_${status}` } });
      expect(shop.orders.size).toBe(1); // the first call made the order; its retry was refused
      shop.fault = 'none';
      shop.repeatsAnswered = null;
      const second = await join(item, 'u5', { n: 2 });
      expect(await settled(second)).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'O1' } } });
      expect(shop.orders.size).toBe(1); // before: the refusal settled the kept call; a new key, O2
    });
  }
});

describe('an unsure call kept for a user', () => {
  it('is repeated by the first ticket that takes it over, on each of its runs, and by no ticket after it', async () => {
    const calls = createUnsureCalls({ redis, prefix: newPrefix(), clock: systemClock })('item');
    await calls.keep('u', { key: 'k1', body: 'b1' });
    await calls.keep('u', { key: 'k9', body: 'b9' }); // an older one stays
    expect(await calls.take('u', 'k1')).toMatchObject({ key: 'k1', body: 'b1' }); // its own ticket, run again
    expect(await calls.take('u', 'r2')).toMatchObject({ key: 'k1', body: 'b1', by: 'r2' });
    // r2 is answered under k1, then its settle is lost and it runs again: k1 again, not a new key
    // (forgotten at the answer, the run again made a second order).
    expect(await calls.take('u', 'r2')).toMatchObject({ key: 'k1', by: 'r2' });
    // Its repetition reached the shop: the ticket after r2 calls under its own key.
    await calls.reached('u', 'r2');
    expect(await calls.take('u', 'r3')).toBeNull();
    expect(await calls.take('u', 'r2')).toBeNull();
  });

  it("is not made again by a late timeout of a run that repeated it, once it was let go", async () => {
    const calls = createUnsureCalls({ redis, prefix: newPrefix(), clock: systemClock })('item');
    await calls.keep('u', { key: 'k1', body: 'b1' }, 'k1');
    expect(await calls.take('u', 'r2')).toMatchObject({ key: 'k1', by: 'r2' });
    // Another daemon ran r2 again (r2's first run held up), its repetition reached the shop, and
    // the user's next ticket let the call go.
    await calls.reached('u', 'r2');
    expect(await calls.take('u', 'r3')).toBeNull();
    // r2's first run wakes and times out: its keep made the call again, and r4 repeated k1 (its
    // user told `succeeded` with the first order, no order of its own).
    await calls.keep('u', { key: 'k1', body: 'b1' }, 'r2');
    expect(await calls.take('u', 'r4')).toBeNull();
  });

  it('is taken over by the next ticket when the repetition never reached the shop, by three tickets at most', async () => {
    const calls = createUnsureCalls({ redis, prefix: newPrefix(), clock: systemClock })('item');
    await calls.keep('u', { key: 'k1', body: 'b1' });
    expect(await calls.take('u', 'r2')).toMatchObject({ key: 'k1', by: 'r2' });
    await calls.reached('u', 'r-other'); // not the taker: nothing
    // r2's repetition was refused before the shop heard it (503, a refused connection): r3 repeats it.
    expect(await calls.take('u', 'r3')).toMatchObject({ key: 'k1', by: 'r3' });
    expect(await calls.take('u', 'r4')).toMatchObject({ key: 'k1', by: 'r4' });
    // A call the shop never hears does not hold every ticket of the user after it.
    expect(await calls.take('u', 'r5')).toBeNull();
  });

  it('is settled when its own ticket is answered under its key', async () => {
    const calls = createUnsureCalls({ redis, prefix: newPrefix(), clock: systemClock })('item');
    await calls.keep('u', { key: 'k1', body: 'b1' });
    await calls.answered('u', 'r-other');
    expect(await calls.take('u', 'k1')).not.toBeNull();
    await calls.answered('u', 'k1');
    expect(await calls.take('u', 'r2')).toBeNull();
  });
});

describe('unsure calls kept for users who never come back', () => {
  it('go past their day on an item that keeps having unsure calls (each keep looks at a few)', async () => {
    const clock = manualClock();
    const prefix = newPrefix();
    const calls = createUnsureCalls({ redis, prefix, clock })('unsure-trim');
    await calls.keep('gone', { key: 'k-gone', body: '{"a":1}' });
    clock.advance(25 * 3600_000);
    for (let i = 0; i < 20; i++) await calls.keep(`u${i}`, { key: `k${i}`, body: '{}' });
    const k = `${prefix}{unsure-trim}:unsure`;
    expect(await redis.hexists(k, 'gone')).toBe(0);
    expect(await redis.hlen(k)).toBe(20);
    await redis.del(k);
  });
});
