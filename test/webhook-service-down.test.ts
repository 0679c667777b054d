import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { inProcessDaemon, recordingLogger, SVC, waitFor } from './support/daemon-inproc.js';
import { whenDone } from './support/cleanup.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';
import { itemKeys } from '../src/redis/keys.js';

/**
 * The webhook's service goes away mid-sale (a deploy, a crash) and comes back. Before, nothing
 * marked it away: every admitted ticket spent its attempts in ~3 s and ended `failed`
 * (`connection_refused`), a manual gate at 50/s burning through the line (777 users in a review's
 * 20 s outage), waiting users read an ETA counting down, and users whose call was cut after the
 * shop had made their order were told `failed`. Now a run of calls not answered marks the item's
 * downstream away: nothing more is admitted but a probe now and then, waiting tickets read
 * `paused`, tickets whose calls go unanswered go back to the head of the line, and once the shop
 * answers again the line runs on: every user gets one order and is told it.
 */
const { redis, newPrefix } = testRedis();
const db = await testDb();
const { log, lines } = recordingLogger('info', 200);
const prefix = newPrefix();
const { call, daemon } = await inProcessDaemon({ prefix, databaseUrl: db.url, log });
const metrics = async () => (await fetch(`${daemon.url}/metrics`)).text();

/**
 * A shop on a port of its own that de-duplicates on the Idempotency-Key (an order per key; the same
 * key again answers the same order). `cutAfterOrder`: the next calls make their order and the
 * connection is cut before the answer (the shop dying mid-call). Stopped, nothing listens on its
 * port (connections refused); started again, on the same port.
 */
async function shop() {
  const orders = new Map<string, { orderId: string; userId: string }>();
  const s = { orders, calls: 0, cutAfterOrder: 0, server: null as Server | null, port: 0 };
  const answer = async (req: import('node:http').IncomingMessage, res: ServerResponse) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    s.calls++;
    const key = String(req.headers['idempotency-key']);
    if (!orders.has(key)) orders.set(key, { orderId: `O${orders.size + 1}`, userId: (JSON.parse(body) as { userId: string }).userId });
    if (s.cutAfterOrder > 0) {
      s.cutAfterOrder--;
      res.socket?.destroy();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ orderId: orders.get(key)!.orderId }));
  };
  const start = async () => {
    const server = createServer((req, res) => void answer(req, res));
    await new Promise<void>((r) => server.listen(s.port, '127.0.0.1', r));
    s.port = (server.address() as AddressInfo).port;
    s.server = server;
  };
  const stop = async () => {
    const server = s.server!;
    s.server = null;
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  };
  await start();
  whenDone(() => (s.server ? stop() : undefined));
  return { ...s, state: s, start, stop, url: () => `http://127.0.0.1:${s.port}/hook` };
}

const view = async (id: string) => (await call('GET', `/v1/tickets/${id}`, undefined, null)).body;
async function join(itemId: string, userId: string) {
  const j = await call('POST', `/v1/items/${itemId}/tickets`, { userId }, SVC);
  expect(j.status).toBe(202);
  return j.body.ticketId as string;
}

describe('the webhook service down mid-sale', () => {
  it('fails nobody: the line pauses, calls cut mid-way are repeated, and every user gets one order once it is back', { timeout: 90_000 }, async () => {
    const s = await shop();
    const item = 'down-mid-sale';
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'webhook', config: { url: s.url(), timeoutMs: 2000 }, gate: { mode: 'manual', rate: 10 } })).status).toBe(201);
    const ids = new Map<string, string>();
    for (let i = 0; i < 10; i++) ids.set(`early${i}`, await join(item, `early${i}`));
    await waitFor(() => Promise.all([...ids.values()].map(view)), (vs) => vs.every((v) => v.state === 'succeeded'));

    // The shop dies mid-call: the next three calls make their orders and lose their answers; then nothing listens.
    s.state.cutAfterOrder = 3;
    for (let i = 0; i < 60; i++) ids.set(`u${i}`, await join(item, `u${i}`));
    await waitFor(async () => s.state.cutAfterOrder, (n) => n === 0);
    await s.stop();

    // The item reads paused to those who wait, and nobody is told `failed` meanwhile.
    const last = ids.get('u59')!;
    const paused = await waitFor(() => view(last), (v) => v.reason === 'paused' || v.state !== 'waiting', 30_000);
    expect(paused, lines()).toMatchObject({ state: 'waiting', reason: 'paused' });
    expect(paused.etaMs).toBeUndefined();
    expect(await metrics()).toMatch(/floodgate_downstream_away\{item="down-mid-sale"\} 1/);
    // Down for longer than a ticket's attempts take (5 attempts 0.2 s apart, doubling: ~3 s).
    await new Promise((r) => setTimeout(r, 4000));
    const during = await Promise.all([...ids.values()].map(view));
    expect(during.filter((v) => v.state === 'failed')).toEqual([]); // before: tickets failed connection_refused
    // While it is away the gate admits nobody but a probe: the line is still there when it comes back.
    expect(during.filter((v) => v.state === 'waiting').length).toBeGreaterThan(30);

    await s.start();
    const ends = await waitFor(() => Promise.all([...ids.values()].map(view)), (vs) => vs.every((v) => !['waiting', 'admitted'].includes(v.state)), 60_000);
    expect(ends.filter((v) => v.state !== 'succeeded'), lines()).toEqual([]);
    // One order per user, and each user told their own (the cut calls repeated under their key).
    const byUser = new Map<string, string>();
    for (const o of s.state.orders.values()) {
      expect(byUser.has(o.userId)).toBe(false);
      byUser.set(o.userId, o.orderId);
    }
    expect(byUser.size).toBe(70);
    for (const v of ends) expect(v.outcome.result.orderId).toBe(byUser.get(v.userId));
    expect(await metrics()).not.toMatch(/floodgate_downstream_away\{/);
    expect(lines()).toMatch(/downstream not answering/);
    expect(lines()).toMatch(/downstream answers again/);
  });

  it('is read as down by a daemon that made no call: another daemon marked it, for all to read', { timeout: 90_000 }, async () => {
    const s = await shop();
    const prefix = newPrefix();
    const a = await inProcessDaemon({ prefix, databaseUrl: db.url });
    const item = 'down-shared';
    expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'webhook', config: { url: s.url(), timeoutMs: 2000 }, gate: { mode: 'manual', rate: 10 } })).status).toBe(201);
    await s.stop();
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) ids.push((await a.call('POST', `/v1/items/${item}/tickets`, { userId: `s${i}` }, SVC)).body.ticketId);
    const onA = (id: string) => a.call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body);
    expect(await waitFor(() => onA(ids[39]), (v) => v.reason === 'paused', 30_000)).toMatchObject({ state: 'waiting', reason: 'paused' });
    // A daemon started now has made no call of the item: it reads the first daemon's mark.
    const b = await inProcessDaemon({ prefix, databaseUrl: db.url });
    const onB = (id: string) => b.call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body);
    const first = await onB(ids[39]);
    expect(first).toMatchObject({ state: 'waiting', reason: 'paused' }); // before: an ETA counting down
    expect(first.etaMs).toBeUndefined();
    await s.start();
    const ends = await waitFor(() => Promise.all(ids.map(onB)), (vs) => vs.every((v) => !['waiting', 'admitted'].includes(v.state)), 60_000);
    expect(ends.filter((v) => v.state !== 'succeeded')).toEqual([]);
    expect(new Set([...s.state.orders.values()].map((o) => o.userId)).size).toBe(40);
  });

  it('does not hold the line for tickets whose own calls fail: they end failed, and the users behind them are served', { timeout: 90_000 }, async () => {
    // A shop that answers 500 to some users' payloads, whatever happens, and takes everyone else's order.
    const orders = new Map<string, string>();
    const poisonShop = createServer(async (req, res) => {
      let body = '';
      for await (const chunk of req) body += chunk;
      const { userId } = JSON.parse(body) as { userId: string };
      if (userId.startsWith('poison')) return void res.writeHead(500).end();
      const key = String(req.headers['idempotency-key']);
      if (!orders.has(key)) orders.set(key, `P${orders.size + 1}`);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ orderId: orders.get(key) }));
    });
    await new Promise<void>((r) => poisonShop.listen(0, '127.0.0.1', r));
    whenDone(() => {
      poisonShop.closeAllConnections();
      return new Promise((r) => poisonShop.close(r));
    });
    const item = 'poison-tail';
    // A daemon that sends a ticket whose calls go unanswered back to the line for 5 s from its first time (FLOODGATE_DOWNSTREAM_HOLD_MS).
    const held = recordingLogger('info', 200);
    const { call } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url, log: held.log, env: { FLOODGATE_DOWNSTREAM_HOLD_MS: '5000' } });
    const view = async (id: string) => (await call('GET', `/v1/tickets/${id}`, undefined, null)).body;
    const join = async (itemId: string, userId: string) => (await call('POST', `/v1/items/${itemId}/tickets`, { userId }, SVC)).body.ticketId as string;
    const url = `http://127.0.0.1:${(poisonShop.address() as AddressInfo).port}/hook`;
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'webhook', config: { url }, gate: { mode: 'manual', rate: 50 } })).status).toBe(201);
    const first: string[] = [];
    for (let i = 0; i < 10; i++) first.push(await join(item, `early${i}`));
    const poison: string[] = [];
    for (let i = 0; i < 6; i++) poison.push(await join(item, `poison${i}`));
    await waitFor(() => Promise.all(first.map(view)), (vs) => vs.every((v) => v.state === 'succeeded'));
    // The six alone: their calls fail, nothing else is answered (the service may look down).
    await waitFor(() => Promise.all(poison.map(view)), (vs) => vs.some((v) => v.reason === 'paused' || v.state === 'failed'), 30_000);
    const later: string[] = [];
    for (let i = 0; i < 10; i++) later.push(await join(item, `later${i}`));
    // Served within seconds (before: probes of the six alone, held back for good — then 5 minutes).
    const served = await waitFor(() => Promise.all(later.map(view)), (vs) => vs.every((v) => v.state === 'succeeded'), 45_000);
    expect(served.map((v) => v.state), held.lines()).toEqual(later.map(() => 'succeeded'));
    const ends = await waitFor(() => Promise.all(poison.map(view)), (vs) => vs.every((v) => v.state === 'failed'), 45_000);
    expect(ends.map((v) => [v.state, v.outcome?.reason])).toEqual(poison.map(() => ['failed', 'http_500']));
  });

  it("ends with the downstream it was about: an item given another URL is not read as away", { timeout: 60_000 }, async () => {
    const s = await shop();
    const item = 'down-redefined';
    const define = (url: string) => call('PUT', `/v1/items/${item}`, { handler: 'webhook', config: { url, timeoutMs: 2000 }, gate: { mode: 'manual', rate: 50 } });
    // Another daemon's mark, as one that cannot reach the old URL keeps renewing it: nothing is admitted here.
    const mark = () => redis.hset(itemKeys(prefix, item).gate, 'dsAway', String(Date.now() + 60_000));
    const gone = await shop();
    await gone.stop();
    expect((await define(gone.url())).status).toBe(201);
    await mark();
    const first = await join(item, 'r1');
    expect(await waitFor(() => view(first), (v) => v.reason === 'paused', 10_000)).toMatchObject({ state: 'waiting', reason: 'paused' });
    // The operator points the item at the new service: its calls are tried at the gate's pace
    // (before: the old downstream's mark held it, paused, until it lapsed or an answer cleared it).
    expect((await define(s.url())).status).toBe(200);
    expect((await waitFor(() => view(first), (v) => v.state === 'succeeded', 10_000)).outcome.result.orderId).toBeDefined();
  });
});
