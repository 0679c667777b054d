import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { whenDone } from './support/cleanup.js';
import { writeSales } from '../src/db/sales.js';
import { ticketRef } from '../src/kernel/ticket-ref.js';
import { systemClock } from '../src/kernel/clock.js';
import { createSplitLine } from '../src/queue/split-line.js';
import { itemKeys, subLineTag } from '../src/redis/keys.js';
import { createScriptRunner, scripts } from '../src/redis/scripts.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

/**
 * A daemon killed between a sale's commit in Postgres and its settle in Redis leaves the ticket
 * admitted under a lease nobody renews. If its item sells out or closes before that lease runs
 * out (or while the ticket is back at the head), the cut must not tell the user "sold out" or
 * "closed" while Postgres holds their order: the ticket waits in doubt, and Postgres's word ends it.
 * (A clean-clone run of e2e-crash once ended 149 tickets succeeded with 150 units sold: this.)
 *
 * The dead daemon is played by hand, deterministically: with no daemon running, the test admits
 * tickets with the real admission script and sells one of them with the real sale function, then
 * never settles it; a daemon started afterwards finds them as a SIGKILLed one leaves them.
 */
const { redis, newPrefix } = testRedis();
const db = await testDb();
const prefix = newPrefix();
const env = { FLOODGATE_DOUBT_GRACE_MS: '200', FLOODGATE_RECONCILE_ON_START: 'true' };

/**
 * The webhook's downstream: de-duplicates by Idempotency-Key as the contract asks (the same key is
 * answered as the first time), and counts the calls per key.
 */
const calls = new Map<string, number>();
const downstream = createServer(async (req, res) => {
  for await (const _ of req);
  const key = String(req.headers['idempotency-key']);
  calls.set(key, (calls.get(key) ?? 0) + 1);
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ booking: `b-${key.slice(0, 8)}` }));
});
await new Promise<void>((r) => downstream.listen(0, '127.0.0.1', r));
whenDone(() => {
  downstream.closeAllConnections();
  return new Promise((r) => downstream.close(r));
});
const hookUrl = `http://127.0.0.1:${(downstream.address() as AddressInfo).port}/hook`;

const first = await inProcessDaemon({ prefix, databaseUrl: db.url, env });
const ids: Record<string, string> = {};
// so: sells out while a dead lease runs; sp: the same on a line split in two sub-lines; cl: closes.
for (const item of ['so', 'sp', 'cl']) {
  await first.define(item, { handler: 'seckill', config: { stock: item === 'cl' ? 5 : 2 }, gate: { mode: 'closed' }, ...(item === 'sp' ? { lines: 2 } : {}) });
  for (const user of ['alice', 'bob', 'carol', 'dave']) ids[`${item}/${user}`] = (await first.call('POST', `/v1/items/${item}/tickets`, { userId: user }, SVC)).body.ticketId;
}
// ex: an external item whose worker writes back after its lease ran out and the item closed.
await first.define('ex', { handler: 'external', gate: { mode: 'manual' } });
for (const user of ['alice', 'bob']) ids[`ex/${user}`] = (await first.call('POST', `/v1/items/ex/tickets`, { userId: user }, SVC)).body.ticketId;
// bl: a seckill item whose buyers back at the head are blocked before they run again.
await first.define('bl', { handler: 'seckill', config: { stock: 5 }, gate: { mode: 'closed' } });
for (const user of ['alice', 'bob', 'carol']) ids[`bl/${user}`] = (await first.call('POST', `/v1/items/bl/tickets`, { userId: user }, SVC)).body.ticketId;
// wb: a webhook item whose user back at the head is blocked before the ticket runs again.
await first.define('wb', { handler: 'webhook', config: { url: hookUrl, timeoutMs: 500 }, gate: { mode: 'closed' } });
for (const user of ['alice', 'bob']) ids[`wb/${user}`] = (await first.call('POST', `/v1/items/wb/tickets`, { userId: user }, SVC)).body.ticketId;
// wh: a webhook item that closes while the dead daemon's call had been answered.
await first.define('wh', { handler: 'webhook', config: { url: hookUrl }, gate: { mode: 'closed' } });
for (const user of ['alice', 'bob', 'carol', 'dave']) ids[`wh/${user}`] = (await first.call('POST', `/v1/items/wh/tickets`, { userId: user }, SVC)).body.ticketId;
await first.daemon.stop();

// The dead daemon: admits (taking units) with a lease that would last an hour, sells alice, dies.
const { run } = createScriptRunner(redis, prefix);
const split = createSplitLine({ redis, prefix, clock: systemClock });
async function deadAdmit(item: string, n: number, lines = 1) {
  const k = itemKeys(prefix, item);
  await redis.hset(k.gate, 'mode', 'manual');
  const admitted =
    lines > 1
      ? (await split.admit({ itemId: item, lines }, n, 3_600_000))!.length
      : ((await run(scripts.admit, item, Date.now(), { max: n, leaseMs: 3_600_000, leasePrefix: 'dead.', autoCap: '', version: '' })) as number[])[1];
  await redis.hset(k.gate, 'mode', 'closed');
  expect(admitted).toBe(n);
}
await deadAdmit('so', 1);
await deadAdmit('sp', 1, 2);
await deadAdmit('cl', 2);
await deadAdmit('wh', 1);
await deadAdmit('bl', 2);
await deadAdmit('wb', 1);
// The dead daemon's webhook call for alice, answered by the downstream (the answer then lost).
await fetch(hookUrl, { method: 'POST', headers: { 'idempotency-key': ticketRef(ids['wh/alice']) }, body: '{}' });
for (const item of ['so', 'sp', 'cl', 'bl']) {
  const [sale] = await writeSales(db.sql, 'orders', [{ itemId: item, userId: 'alice', ticketRef: ticketRef(ids[`${item}/alice`]) }]);
  expect(sale.kind).toBe('sold');
}
/** Runs the dead daemon's leases out now. */
async function expireLeases(item: string, lines = 1) {
  let n = 0;
  for (let sub = 0; sub < lines; sub++) {
    const k = itemKeys(prefix, subLineTag(item, sub));
    const seqs = await redis.zrange(k.leases, '0', '-1');
    for (const s of seqs) await redis.zadd(k.leases, '1', s);
    n += seqs.length;
  }
  return n;
}

const { call, daemon: second } = await inProcessDaemon({ prefix, databaseUrl: db.url, env });
const daemonUrl = second.url;
const view = (item: string, user: string) => call('GET', `/v1/tickets/${ids[`${item}/${user}`]}`, undefined, null).then((r) => r.body);
const views = (item: string) => Promise.all(['alice', 'bob', 'carol', 'dave'].map((u) => view(item, u)));
const ended = (vs: { state: string }[]) => vs.every((v) => !['waiting', 'admitted'].includes(v.state));
const orders = async (item: string) => new Map((await db.sql`select user_id, order_id::text as id from orders where item_id = ${item}`).map((r) => [r.user_id as string, r.id as string]));

/**
 * A job of the dead daemon that had only stalled (more than its lease and the resolver's grace
 * between taking its unit and selling) sells for `user` after the ticket ended without a sale:
 * Postgres refuses it, and holds the orders of `buyers` alone.
 */
async function expectNoLateSale(item: string, user: string, buyers: string[]) {
  const [late] = await writeSales(db.sql, 'orders', [{ itemId: item, userId: user, ticketRef: ticketRef(ids[`${item}/${user}`]) }]);
  expect(late.kind).toBe('void');
  expect([...(await orders(item)).keys()].sort()).toEqual(buyers);
  const [stock] = await db.sql`select sold from item_stock where item_id = ${item}`;
  expect(stock.sold).toBe(buyers.length);
}

describe('a ticket whose sale committed before its daemon died', () => {
  it.each([
    ['so', 1],
    ['sp', 2],
  ])('is told its order, not "sold out", when the item sold out while its lease still ran (%s: %i line(s))', { timeout: 60_000 }, async (item, lines) => {
    await call('PATCH', `/v1/items/${item}/gate`, { mode: 'manual' });
    // bob buys the last unit Postgres has; carol and dave are cut sold out; alice is still admitted.
    const cut = await waitFor(() => call('GET', `/v1/items/${item}`).then((r) => r.body), (v) => v.counts.succeeded === 1 && v.counts.rejected === 2);
    expect(cut.counts).toMatchObject({ waiting: 0, admitted: 1, succeeded: 1, rejected: 2 });
    expect(cut.state).toBe('sold_out');
    expect(await expireLeases(item, lines)).toBe(1);

    const vs = await waitFor(() => views(item), ended);
    const sold = await orders(item);
    expect([...sold.keys()].sort()).toEqual(['alice', 'bob']);
    expect(vs.map((v) => [v.userId, v.state, v.outcome?.result?.orderId ?? v.outcome?.reason])).toEqual([
      ['alice', 'succeeded', sold.get('alice')],
      ['bob', 'succeeded', sold.get('bob')],
      ['carol', 'rejected', 'sold_out'],
      ['dave', 'rejected', 'sold_out'],
    ]);
    expect((await call('GET', `/v1/items/${item}`)).body.counts).toMatchObject({ waiting: 0, admitted: 0, succeeded: 2, rejected: 2 });
    // The outcome ledger in Postgres says the same.
    const ledger = await waitFor(
      () => db.sql`select ticket_id, status from ticket_outcomes where item_id = ${item}`,
      (rows) => rows.length === 4,
    );
    expect(ledger.filter((r) => r.status === 'succeeded').length).toBe(2);
  });

  it('is told its order, not "closed", when the item closed while it was back at the head', { timeout: 60_000 }, async () => {
    // The leases run out with the gate closed: alice (sold) and bob (not) go back to the head.
    expect(await expireLeases('cl')).toBe(2);
    await waitFor(() => call('GET', '/v1/items/cl').then((r) => r.body), (v) => v.counts.waiting === 4 && v.counts.admitted === 0);
    // Back at the head, they cannot be cancelled: "cancelled" would be false for alice, who bought.
    for (const user of ['alice', 'bob']) {
      const r = await call('DELETE', `/v1/tickets/${ids[`cl/${user}`]}`, undefined, null);
      expect([r.status, r.body.error?.code]).toEqual([409, 'not_cancellable']);
    }
    expect((await call('DELETE', '/v1/items/cl')).status).toBe(200);

    const vs = await waitFor(() => views('cl'), ended);
    const sold = await orders('cl');
    expect([...sold.keys()]).toEqual(['alice']);
    expect(vs.map((v) => [v.userId, v.state, v.outcome?.result?.orderId ?? v.outcome?.reason])).toEqual([
      ['alice', 'succeeded', sold.get('alice')],
      ['bob', 'cancelled', 'item_closed'],
      ['carol', 'cancelled', 'item_closed'],
      ['dave', 'cancelled', 'item_closed'],
    ]);
    expect((await call('GET', '/v1/items/cl')).body.counts).toMatchObject({ waiting: 0, admitted: 0, succeeded: 1, cancelled: 3 });
    // The dead daemon's job for bob had only stalled, and comes to sell now: bob was told "closed".
    await expectNoLateSale('cl', 'bob', ['alice']);
  });

  it('is run again, not told "closed", when its webhook item closed while its lease still ran', { timeout: 60_000 }, async () => {
    expect((await call('DELETE', '/v1/items/wh')).status).toBe(200);
    expect((await call('GET', '/v1/items/wh')).body.counts).toMatchObject({ waiting: 0, admitted: 1, cancelled: 3 });
    expect(await expireLeases('wh')).toBe(1);

    const vs = await waitFor(() => views('wh'), ended);
    const alice = ticketRef(ids['wh/alice']);
    expect(vs.map((v) => [v.userId, v.state, v.outcome?.result?.booking ?? v.outcome?.reason])).toEqual([
      ['alice', 'succeeded', `b-${alice.slice(0, 8)}`],
      ['bob', 'cancelled', 'item_closed'],
      ['carol', 'cancelled', 'item_closed'],
      ['dave', 'cancelled', 'item_closed'],
    ]);
    // Asked once by the dead daemon and once by the run that replaced it; nobody else was called.
    expect([...calls]).toEqual([[alice, 2]]);
  });

  it("takes an outside worker's late outcome under its last lease, once its external item closed", { timeout: 60_000 }, async () => {
    const pulled = (await call('POST', '/v1/items/ex/pull', { max: 2, leaseMs: 600_000 }, SVC)).body.tickets;
    expect(pulled.map((t: { userId: string }) => t.userId)).toEqual(['alice', 'bob']);
    expect((await call('DELETE', '/v1/items/ex')).status).toBe(200);
    // bob's lease ran out a moment ago, before any sweep: his worker's outcome lands too.
    const bobSeq = parseInt(pulled[1].ticketId.split('.')[1], 36);
    await redis.hset(itemKeys(prefix, 'ex').x(bobSeq), 'leaseExp', '1');
    const bob = await call('POST', `/v1/tickets/${ids['ex/bob']}/outcome`, { leaseId: pulled[1].leaseId, status: 'rejected', reason: 'no_room' }, SVC);
    expect([bob.status, bob.body.state, bob.body.outcome?.reason]).toEqual([200, 'rejected', 'no_room']);
    // The lease runs out (the sweep as it would run ten minutes on): alice waits in doubt, as of then.
    expect(await run(scripts.sweep, 'ex', Date.now() + 700_000, {})).toBe(1);
    const seq = parseInt(pulled[0].ticketId.split('.')[1], 36);
    expect(await redis.zscore(itemKeys(prefix, 'ex').doubt, String(seq))).not.toBeNull();
    await redis.hset(itemKeys(prefix, 'ex').x(seq), 'leaseExp', '1'); // by the clock too
    const late = await call('POST', `/v1/tickets/${ids['ex/alice']}/outcome`, { leaseId: pulled[0].leaseId, status: 'succeeded', result: { done: true } }, SVC);
    expect([late.status, late.body.state, late.body.outcome?.result]).toEqual([200, 'succeeded', { done: true }]);
    expect((await call('GET', '/v1/items/ex')).body.counts).toMatchObject({ waiting: 0, admitted: 0, succeeded: 1, rejected: 1 });
  });

  it('is told its order, not "blocked", when its user was blocked while it was back at the head', { timeout: 60_000 }, async () => {
    // alice (sold) and bob (not) go back to the head; then both are blocked, and the gate opens.
    expect(await expireLeases('bl')).toBe(2);
    await waitFor(() => call('GET', '/v1/items/bl').then((r) => r.body), (v) => v.counts.waiting === 3 && v.counts.admitted === 0);
    for (const user of ['alice', 'bob']) expect((await call('PUT', `/v1/items/bl/blocks/${user}`)).status).toBe(200);
    await call('PATCH', '/v1/items/bl/gate', { mode: 'manual' });

    const vs = await waitFor(() => Promise.all(['alice', 'bob', 'carol'].map((u) => view('bl', u))), ended);
    const sold = await orders('bl');
    expect([...sold.keys()].sort()).toEqual(['alice', 'carol']);
    expect(vs.map((v) => [v.userId, v.state, v.outcome?.result?.orderId ?? v.outcome?.reason])).toEqual([
      ['alice', 'succeeded', sold.get('alice')],
      ['bob', 'rejected', 'blocked'],
      ['carol', 'succeeded', sold.get('carol')],
    ]);
    await expectNoLateSale('bl', 'bob', ['alice', 'carol']);
  });

  it('is never run again for a webhook whose user was blocked while it was back at the head, and ends blocked once no run can be left', { timeout: 60_000 }, async () => {
    // Its dead run's call may have gone on (and made the order) after the lease ran out: the
    // ticket waits in doubt for that run's settle instead of being told "blocked" at once, and is
    // not run again (a second call would serve the blocked user).
    expect(await expireLeases('wb')).toBe(1);
    await waitFor(() => call('GET', '/v1/items/wb').then((r) => r.body), (v) => v.counts.waiting === 2 && v.counts.admitted === 0);
    expect((await call('PUT', '/v1/items/wb/blocks/alice')).status).toBe(200);
    await call('PATCH', '/v1/items/wb/gate', { mode: 'manual' });
    expect(await waitFor(() => view('wb', 'bob'), (v) => v.state === 'succeeded')).toMatchObject({ state: 'succeeded' });
    expect(await view('wb', 'alice')).toMatchObject({ state: 'admitted' });
    const alice = await waitFor(() => view('wb', 'alice'), (v) => v.state !== 'admitted', 30_000);
    expect(alice).toMatchObject({ state: 'rejected', outcome: { reason: 'blocked' } });
    expect(calls.get(ticketRef(ids['wb/alice']))).toBeUndefined();
  });

  it('drops a doubt entry whose ticket already ended (an older daemon ended it), so it holds up nobody', async () => {
    // carol of 'so' ended rejected by the sold-out cut; an entry for her is what an older daemon's
    // script would leave behind.
    const k = itemKeys(prefix, 'so');
    const seq = parseInt(ids['so/carol'].split('.')[1], 36);
    await redis.zadd(k.doubt, '1', String(seq));
    await redis.hincrby(k.ctr, 'doubt', 1);
    expect(await run(scripts.readDoubt, 'so', Date.now(), { until: Date.now() })).toEqual([]);
    expect([await redis.zcard(k.doubt), await redis.hget(k.ctr, 'doubt')]).toEqual([0, '0']);
  });

  it('counts how each ticket left doubt, per item, in /metrics', async () => {
    const text = (await (await fetch(`${daemonUrl}/metrics`)).text()).split('\n').filter((l) => l.startsWith('floodgate_doubt_resolved_total'));
    expect(text.sort()).toEqual(
      [
        'floodgate_doubt_resolved_total{item="bl",how="cut"} 1',
        'floodgate_doubt_resolved_total{item="bl",how="sold"} 1',
        'floodgate_doubt_resolved_total{item="cl",how="cut"} 1',
        'floodgate_doubt_resolved_total{item="cl",how="sold"} 1',
        'floodgate_doubt_resolved_total{item="so",how="sold"} 1',
        'floodgate_doubt_resolved_total{item="sp",how="sold"} 1',
        'floodgate_doubt_resolved_total{item="wh",how="relaunched"} 1',
        'floodgate_doubt_resolved_total{item="wb",how="cut"} 1',
      ].sort(),
    );
  });

});
