import { afterAll, describe, expect, it } from 'vitest';
import { itemKeys } from '../src/redis/keys.js';
import { testDb } from './support/db.js';
import { http } from './support/http.js';
import { startDaemonProcess, type RunningDaemon } from './support/daemon.js';
import { redisUrl, testRedis } from './support/redis.js';

const { redis, newPrefix } = testRedis();
const db = await testDb();
const running: RunningDaemon[] = [];
afterAll(async () => {
  await Promise.all(running.map((d) => d.stop('SIGKILL')));
});

const env = (prefix: string) => ({
  REDIS_URL: redisUrl(),
  DATABASE_URL: db.url,
  FLOODGATE_REDIS_PREFIX: prefix,
  FLOODGATE_SERVICE_KEYS: 'svc',
  FLOODGATE_OPERATOR_KEYS: 'op',
});
const start = async (prefix: string) => {
  const d = await startDaemonProcess(env(prefix));
  running.push(d);
  return d;
};

async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
}

const units = async (prefix: string, item: string) => (await redis.hvals(itemKeys(prefix, item).stock)).reduce((a, v) => a + Number(v), 0);
const orders = (item: string) =>
  db.sql`select count(*) filter (where status = 'reserved')::int as reserved, count(*) filter (where status = 'released')::int as released,
         count(*) filter (where status = 'released' and returned_at is null)::int as unreturned from orders where item_id = ${item}`.then((r) => r[0]);

/**
 * Everyone joins behind a closed gate, which then opens: the sales happen together, so no
 * reservation can expire (and give its unit back) while the others are still being made, however
 * slow the machine.
 */
async function reserveAll(url: string, item: string, n: number, tag: string) {
  expect((await http(url, 'PATCH', `/v1/items/${item}/gate`, { mode: 'closed' }, 'op')).status).toBe(200);
  const ids: string[] = [];
  for (let i = 0; i < n; i++) ids.push((await http(url, 'POST', `/v1/items/${item}/tickets`, { userId: `${tag}-${i}` }, 'svc')).body.ticketId as string);
  expect((await http(url, 'PATCH', `/v1/items/${item}/gate`, { mode: 'auto' }, 'op')).status).toBe(200);
  await until(() => Promise.all(ids.map((id) => http(url, 'GET', `/v1/tickets/${id}`))), (vs) => vs.every((v) => v.body.state === 'succeeded'));
}

describe('reservation expiry across daemon processes', () => {
  it('two daemons release each expired reservation exactly once: every unit comes back once', { timeout: 120_000 }, async () => {
    const prefix = newPrefix();
    const [a, b] = await Promise.all([start(prefix), start(prefix)]);
    const item = 'resv-two';
    const n = 30;
    expect((await http(a.url, 'PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: n, reserveMs: 3000 } }, 'op')).status).toBe(201);
    await reserveAll(a.url, item, n, 'two');
    // Every unit is held by a reservation, and Redis offers none of them (on a slow machine some
    // may have expired already: their units come back, Postgres first, then Redis). Read Redis
    // first: it never shows more units than Postgres has free after it, whatever a sweep does in
    // between (an equality of the two failed when a sweep ran between the reads).
    const offered = await units(prefix, item);
    const [held] = await db.sql`select count(*) filter (where status = 'reserved')::int as r from orders where item_id = ${item}`;
    expect(offered).toBeLessThanOrEqual(n - held.r);
    const done = await until(() => orders(item), (o) => o.released === n && o.unreturned === 0);
    expect(done).toEqual({ reserved: 0, released: n, unreturned: 0 });
    // Counted twice, the counter would read 2n (until a recount), and the set of returned orders.
    await new Promise((r) => setTimeout(r, 600));
    expect(await units(prefix, item)).toBe(n);
    expect(await redis.scard(itemKeys(prefix, item).returned)).toBe(n);
    const [s] = await db.sql`select sold, reserved from item_stock where item_id = ${item}`;
    expect(s).toEqual({ sold: 0, reserved: 0 });
    const logged = [a, b].flatMap((d) => [...d.output().matchAll(/"released":(\d+).*"msg":"expired reservations released"/g)].map((m) => Number(m[1])));
    expect(logged.reduce((x, y) => x + y, 0)).toBe(n);
    // (They share this file's database with the next test's daemons, under another Redis prefix.)
    await Promise.all([a.stop(), b.stop()]);
  });

  it('loses no reservation due while its daemon was SIGKILLed: the restarted daemon releases them and sells the units again', { timeout: 120_000 }, async () => {
    const prefix = newPrefix();
    const a = await start(prefix);
    const item = 'resv-kill';
    const n = 10;
    expect((await http(a.url, 'PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: n, reserveMs: 6000 } }, 'op')).status).toBe(201);
    await reserveAll(a.url, item, n, 'first');
    expect(await a.stop('SIGKILL')).toBeNull();
    // All held when it died (on a very slow machine the first may have expired and been released
    // by it already: the rest must still be released by the next daemon).
    const atKill = await orders(item);
    expect(atKill.reserved + atKill.released).toBe(n);
    expect(atKill.reserved).toBeGreaterThan(0);
    // The new daemon starts before they are due or after: either way it releases each once.
    const b = await start(prefix);
    await until(() => orders(item), (o) => o.released === n && o.unreturned === 0);
    expect(await orders(item)).toEqual({ reserved: 0, released: n, unreturned: 0 });
    expect(await until(() => units(prefix, item), (u) => u === n)).toBe(n);
    // Their buyers may buy again, and so may others: the units are on sale.
    await reserveAll(b.url, item, n, 'first');
    // (They may have run out again by now on a slow machine: count the orders made.)
    const [{ made }] = await db.sql`select count(*)::int as made from orders where item_id = ${item}`;
    expect(made).toBe(2 * n);
  });
});
