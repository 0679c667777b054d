import { afterAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/kernel/logger.js';
import { itemKeys } from '../src/redis/keys.js';
import { inProcessDaemon } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { http } from './support/http.js';
import { processEnv, startDaemonProcess, type RunningDaemon } from './support/daemon.js';
import { testRedis } from './support/redis.js';

const { redis, newPrefix } = testRedis();
const db = await testDb();
const running: RunningDaemon[] = [];
afterAll(async () => {
  await Promise.all(running.map((d) => d.stop('SIGKILL')));
});

const env = (prefix: string) => processEnv(db.url, prefix);
/** A daemon as a process: the one a test SIGKILLs. */
const startProcess = async (prefix: string) => {
  const d = await startDaemonProcess(env(prefix));
  running.push(d);
  return d;
};
/**
 * A whole daemon in this process, with the same keys, stopped after its test; `released` sums what
 * its log says its sweeps released. Two of them share nothing but Redis and Postgres, as two
 * processes do: what makes a release happen once is there, not in a process.
 */
const startInProcess = async (prefix: string) => {
  let released = 0;
  const log = createLogger('info', {
    destination: {
      write(line: string) {
        const m = /"released":(\d+).*"msg":"expired reservations released"/.exec(line);
        if (m) released += Number(m[1]);
      },
    },
  });
  const { daemon } = await inProcessDaemon({ prefix, databaseUrl: db.url, env: { FLOODGATE_SERVICE_KEYS: 'svc', FLOODGATE_OPERATOR_KEYS: 'op' }, log });
  return { url: daemon.url, stop: () => daemon.stop(), released: () => released };
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

describe('reservation expiry across daemons', () => {
  it('two daemons release each expired reservation exactly once: every unit comes back once', { timeout: 120_000 }, async () => {
    const prefix = newPrefix();
    const [a, b] = await Promise.all([startInProcess(prefix), startInProcess(prefix)]);
    const item = 'resv-two';
    const n = 30;
    // The daemon's own deadline: 1.5 s after each sale, the two sweepers (every 250 ms each) race for them.
    expect((await http(a.url, 'PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: n, reserveMs: 1500 } }, 'op')).status).toBe(201);
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
    // Both stopped (a stop waits for the sweep in progress): nothing can count a unit after this.
    // Counted twice, the counter would read 2n (until a recount), and the set of returned orders.
    await Promise.all([a.stop(), b.stop()]);
    expect(await units(prefix, item)).toBe(n);
    expect(await redis.scard(itemKeys(prefix, item).returned)).toBe(n);
    const [s] = await db.sql`select sold, reserved from item_stock where item_id = ${item}`;
    expect(s).toEqual({ sold: 0, reserved: 0 });
    expect(a.released() + b.released()).toBe(n);
    // (They share this file's database with the next test's daemons, under another Redis prefix.)
  });

  it('loses no reservation due while its daemon was SIGKILLed: the restarted daemon releases them and sells the units again', { timeout: 120_000 }, async () => {
    const prefix = newPrefix();
    const a = await startProcess(prefix);
    const item = 'resv-kill';
    const n = 10;
    // Reservations that outlive the test: they fall due when the test says, while no daemon runs.
    expect((await http(a.url, 'PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock: n, reserveMs: 600_000 } }, 'op')).status).toBe(201);
    await reserveAll(a.url, item, n, 'first');
    expect(await a.stop('SIGKILL')).toBeNull();
    expect(await orders(item)).toEqual({ reserved: n, released: 0, unreturned: 0 });
    // Their deadlines pass while the daemon is dead (Postgres's clock decides: reserved_until <= now()).
    await db.sql`update orders set reserved_until = now() where item_id = ${item} and status = 'reserved'`;
    const b = await startInProcess(prefix);
    await until(() => orders(item), (o) => o.released === n && o.unreturned === 0);
    expect(await orders(item)).toEqual({ reserved: 0, released: n, unreturned: 0 });
    expect(await until(() => units(prefix, item), (u) => u === n)).toBe(n);
    expect(b.released()).toBe(n);
    // Their buyers may buy again, and so may others: the units are on sale.
    await reserveAll(b.url, item, n, 'first');
    const [{ made }] = await db.sql`select count(*)::int as made from orders where item_id = ${item}`;
    expect(made).toBe(2 * n);
  });
});
