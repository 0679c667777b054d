import { describe, expect, it } from 'vitest';
import { createLogger } from '../src/kernel/logger.js';
import { itemKeys, jobQueuePrefix } from '../src/redis/keys.js';
import { queueName } from '../src/service/jobs.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { joinAll, userIds } from './support/joins.js';
import { ownCluster } from './support/redis-cluster.js';

/**
 * Whole sales on a real Redis Cluster: 3 masters with a replica each (the failover needs one),
 * two daemons in this process on it, one Postgres database. The cluster is made first, so it is
 * torn down after the daemons (vitest runs a file's afterAll hooks last-registered first).
 */
const cluster = await ownCluster({ masters: 3, replicas: 1 });
const db = await testDb();
const prefix = 'fgs:';
const env = { REDIS_URL: '', FLOODGATE_REDIS_CLUSTER: cluster.seeds };
// Error lines are printed: an answer the contract does not allow (a 500) names its cause in the output.
const log = createLogger('error');
const daemons = [await inProcessDaemon({ prefix, databaseUrl: db.url, env, log }), await inProcessDaemon({ prefix, databaseUrl: db.url, env, log })];
const terminal = new Set(['succeeded', 'rejected', 'failed', 'cancelled', 'expired']);

/** Item ids on distinct masters first, then round the masters again: `n` items that cover every master. */
async function itemsOverMasters(n: number, stem: string): Promise<{ id: string; master: number }[]> {
  const out: { id: string; master: number }[] = [];
  const used = new Set<number>();
  for (let i = 0; out.length < n; i++) {
    const id = `${stem}-${i}`;
    const master = await cluster.masterOf(itemKeys(prefix, id).meta);
    if (used.has(master) && used.size < 3) continue;
    used.add(master);
    out.push({ id, master });
  }
  return out;
}

/** Ticket id → the user it was answered to, over every join of the file: no id may name two users. */
const answered = new Map<string, Set<string>>();
async function join(item: string, users: string[]) {
  const answers = await joinAll((userId) => daemons[Number(userId.slice(1)) % 2].call('POST', `/v1/items/${item}/tickets`, { userId }, SVC), users, { batch: 50, deadlineMs: 60_000, also: [410] });
  answers.forEach((a, i) => {
    if (a.status === 410) return;
    answered.set(a.body.ticketId, (answered.get(a.body.ticketId) ?? new Set()).add(users[i]));
  });
  return answers;
}

/**
 * Each user's current ticket view, polled once a second as a waiting client polls (every pending
 * ticket each 100 ms was most of the file's CPU); a user whose ticket Redis lost (404) joins
 * again, as a client would.
 */
async function settle(item: string, users: string[], timeoutMs = 60_000) {
  const views = new Map<string, { state: string; status: number }>();
  const until = Date.now() + timeoutMs;
  let tickets = new Map<string, string>();
  const rejoin = async (who: string[]) => {
    const answers = await join(item, who);
    answers.forEach((a, i) => a.status !== 410 && tickets.set(who[i], a.body.ticketId));
    answers.forEach((a, i) => a.status === 410 && views.set(who[i], { state: 'rejected', status: 410 }));
  };
  await rejoin(users);
  for (;;) {
    const pending = [...tickets].filter(([u]) => !terminal.has(views.get(u)?.state ?? ''));
    const read = await Promise.all(pending.map(([u, id]) => daemons[0].call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => [u, r] as const)));
    const lost: string[] = [];
    for (const [u, r] of read) {
      if (r.status === 404) lost.push(u);
      else if (r.status === 200) views.set(u, { state: r.body.state, status: 200 });
    }
    if (lost.length) await rejoin(lost);
    if (users.every((u) => terminal.has(views.get(u)?.state ?? ''))) return views;
    if (Date.now() > until) throw new Error(`tickets of ${item} not terminal: ${users.filter((u) => !terminal.has(views.get(u)?.state ?? '')).length} left`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function orders(item: string) {
  return db.sql<{ user_id: string }[]>`select user_id from orders where item_id = ${item}`;
}

describe('a seckill sale on a Redis Cluster, two daemons', () => {
  it('sells each item exactly its stock once, to distinct users, on items spread over every master', { timeout: 90_000 }, async () => {
    const items = await itemsOverMasters(4, 'sale');
    expect(new Set(items.map((i) => i.master)).size).toBe(3);
    const stock = 20;
    for (const { id } of items) expect((await daemons[0].call('PUT', `/v1/items/${id}`, { handler: 'seckill', config: { stock, shards: 2 } })).status).toBe(201);
    const users = userIds(0, 80);
    const views = await Promise.all(items.map(({ id }) => settle(id, users)));
    for (const [i, { id }] of items.entries()) {
      const won = [...views[i]].filter(([, v]) => v.state === 'succeeded');
      expect(won.length, id).toBe(stock);
      const rows = await orders(id);
      expect(rows.length, id).toBe(stock);
      expect(new Set(rows.map((r) => r.user_id)).size, id).toBe(stock);
      expect((await daemons[1].call('GET', `/v1/items/${id}`)).body).toMatchObject({ state: 'sold_out', remaining: 0, counts: { succeeded: stock, waiting: 0, admitted: 0 } });
    }
    for (const [id, who] of answered) expect(who.size, id).toBe(1);
  });

  it('completes a sale through a master failover without a restart: no second order, no oversell, no ticket id for two users', { timeout: 120_000 }, async () => {
    // The item's master holds none of the handlers' job queues. When it does, the sale completes
    // too, but a BullMQ worker whose blocking fetch was in flight to the killed master never
    // finishes its graceful close (service.ts bounds it and drops the connections), and what it
    // leaves behind is a timer now and then: a known limit, kept out of this test's verdict.
    const queueMasters = new Set(await Promise.all(['seckill', 'coupon', 'webhook', 'external'].map((h) => cluster.masterOf(`${jobQueuePrefix(prefix, queueName(h))}:x`))));
    const candidates = await itemsOverMasters(3, 'failover');
    const { id: item, master } = candidates.find((c) => !queueMasters.has(c.master)) ?? candidates[0];
    expect(queueMasters.has(master)).toBe(false);
    const stock = 40;
    // A paced gate keeps the sale going for a few seconds, so the kill lands mid-sale.
    const put = await daemons[0].call('PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock, shards: 2 }, gate: { mode: 'manual', rate: 15, maxInFlight: 4 } });
    expect(put.status).toBe(201);
    const users = userIds(0, 80);
    const sale = settle(item, users, 100_000);
    // Mid-sale: some sold, most not yet.
    const mid = await waitFor(
      () => daemons[1].call('GET', `/v1/items/${item}`),
      (r) => (r.body?.counts?.succeeded ?? 0) >= 5,
      30_000,
    );
    expect(mid.body.counts.succeeded).toBeLessThan(stock);
    await cluster.nodes.find((n) => n.port === master)!.kill();
    // More users join while the replica is promoted: their joins answer 503 until it is (joinAll asks again).
    const late = settle(item, userIds(80, 120), 100_000);
    const promoted = await cluster.waitPromoted(itemKeys(prefix, item).meta, master);
    expect(promoted).not.toBe(master);

    const views = new Map([...(await sale), ...(await late)]);
    const rows = await orders(item);
    // Async replication: what the old master acknowledged but had not sent on may be gone from
    // Redis (tickets answer 404 and their users joined again); Postgres still decides the sale.
    expect(rows.length).toBeLessThanOrEqual(stock);
    expect(new Set(rows.map((r) => r.user_id)).size).toBe(rows.length);
    const won = [...views].filter(([, v]) => v.state === 'succeeded').map(([u]) => u);
    expect(new Set(won)).toEqual(new Set(rows.map((r) => r.user_id)));
    for (const [id, who] of answered) expect(who.size, id).toBe(1);
    // The sale went on after the failover, through the same daemons: the stock is sold out.
    const [row] = await db.sql`select total, sold from item_stock where item_id = ${item}`;
    expect(row).toEqual({ total: stock, sold: rows.length });
    expect(rows.length).toBe(stock);
  });
});
