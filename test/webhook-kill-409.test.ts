import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { http } from './support/http.js';
import { processEnv, startDaemonProcess, type RunningDaemon } from './support/daemon.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

/**
 * A daemon killed while its webhook call is at the downstream: the ticket's lease runs out, it is
 * admitted again (its attempt 1 again) and calls under the same Idempotency-Key while the first
 * call is still being worked on, and the downstream answers 409 "still processing". That is no
 * business "no": told `rejected`, the user joined again under a new key and got a second order (a
 * reviewer's runs: 5–25 users a kill). The run again knows the key went out (it was admitted
 * before), calls again, and ends with the order the first call made. And its call is kept before it
 * goes out, so that a run again that meets only 503s (or a refused connection) leaves the user's
 * next ticket to repeat it: nothing was kept, and that ticket made a second order under a new key
 * (6 of 40 users in a review's kill).
 */
const { newPrefix } = testRedis();
const db = await testDb();
const running: RunningDaemon[] = [];

// An idempotent shop: one order per key; a key being worked on answers 409; done, its stored answer.
const work = new Map<string, { done: boolean; orderId: string }>();
const calls: { key: string; status: number }[] = [];
let finish: (() => void) | null = null;
const held: ServerResponse[] = [];
/** Overloaded: every call but a first one that is held is answered 503. */
let overloaded = false;
/** A first call is held (false: its order is made and answered at once). */
let holdFirst = true;
const shop = createServer(async (req: IncomingMessage, res: ServerResponse) => {
  for await (const _ of req);
  const key = String(req.headers['idempotency-key']);
  const w = work.get(key);
  const answer = (status: number, body: unknown) => (calls.push({ key, status }), res.writeHead(status, { 'content-type': 'application/json' }), res.end(JSON.stringify(body)));
  if (overloaded) return answer(503, { error: 'overloaded' });
  if (!w && !holdFirst) {
    work.set(key, { done: true, orderId: `O${work.size + 1}` });
    return answer(201, { orderId: `O${work.size}` });
  }
  if (!w) {
    // The first call: worked on until the test says the order is made (its caller may be gone).
    const entry = { done: false, orderId: `O${work.size + 1}` };
    work.set(key, entry);
    calls.push({ key, status: 0 });
    held.push(res);
    finish = () => {
      entry.done = true;
      if (!res.destroyed) res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ orderId: entry.orderId }));
    };
    return;
  }
  if (!w.done) return answer(409, { error: 'in_progress' });
  answer(201, { orderId: w.orderId });
});
await new Promise<void>((r) => shop.listen(0, '127.0.0.1', r));
const url = `http://127.0.0.1:${(shop.address() as AddressInfo).port}/orders`;
afterAll(async () => {
  await Promise.all(running.map((d) => d.stop('SIGKILL')));
  for (const r of held) r.destroy();
  shop.closeAllConnections();
  await new Promise((r) => shop.close(r));
});
const waitUntil = async (ok: () => boolean, ms: number) => {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
};

describe('a webhook ticket whose daemon was killed mid-call', () => {
  it('is called again under its key and ends with the order the first call made, not rejected on a 409', { timeout: 120_000 }, async () => {
    const env = processEnv(db.url, newPrefix(), { FLOODGATE_JOB_LOCK_MS: '2000', FLOODGATE_DISPATCH_LEASE_MS: '2000', FLOODGATE_JOB_ATTEMPTS: '6', FLOODGATE_JOB_BACKOFF_MS: '300' });
    const first = await startDaemonProcess(env);
    running.push(first);
    expect((await http(first.url, 'PUT', '/v1/items/wk', { handler: 'webhook', config: { url, timeoutMs: 30_000 } }, 'op')).status).toBe(201);
    const t = (await http(first.url, 'POST', '/v1/items/wk/tickets', { userId: 'ann' }, 'svc')).body.ticketId as string;
    await waitUntil(() => calls.length === 1, 20_000);
    await first.stop('SIGKILL');

    const second = await startDaemonProcess(env);
    running.push(second);
    // Its run again reaches the shop while the first call is still worked on: 409.
    await waitUntil(() => calls.some((c) => c.status === 409), 60_000);
    finish!(); // the first call's order is made
    let view: { state: string; outcome?: { reason?: string; result?: { orderId?: string } } } = { state: 'admitted' };
    const end = Date.now() + 60_000;
    while (Date.now() < end && (view.state === 'admitted' || view.state === 'waiting')) {
      view = (await http(second.url, 'GET', `/v1/tickets/${t}`)).body;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(view).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'O1' } } });
    expect(work.size).toBe(1); // one key, one order
  });

  it('keeps its call when the run again meets only 503s: the user\'s next ticket repeats it, one order', { timeout: 120_000 }, async () => {
    const env = processEnv(db.url, newPrefix(), { FLOODGATE_JOB_LOCK_MS: '2000', FLOODGATE_DISPATCH_LEASE_MS: '2000', FLOODGATE_JOB_ATTEMPTS: '3', FLOODGATE_JOB_BACKOFF_MS: '100' });
    const first = await startDaemonProcess(env);
    running.push(first);
    expect((await http(first.url, 'PUT', '/v1/items/wk503', { handler: 'webhook', config: { url, timeoutMs: 30_000 } }, 'op')).status).toBe(201);
    const keysBefore = work.size;
    const t = (await http(first.url, 'POST', '/v1/items/wk503/tickets', { userId: 'bob' }, 'svc')).body.ticketId as string;
    await waitUntil(() => work.size === keysBefore + 1, 20_000);
    await first.stop('SIGKILL');
    finish!(); // the first call's order is made (its answer goes nowhere)
    overloaded = true;

    const second = await startDaemonProcess(env);
    running.push(second);
    let view: { state: string; outcome?: { reason?: string; result?: { orderId?: string } } } = { state: 'admitted' };
    const until = async (id: string) => {
      const end = Date.now() + 60_000;
      do {
        view = (await http(second.url, 'GET', `/v1/tickets/${id}`)).body;
        if (view.state !== 'admitted' && view.state !== 'waiting') return view;
        await new Promise((r) => setTimeout(r, 200));
      } while (Date.now() < end);
      return view;
    };
    expect(await until(t)).toMatchObject({ state: 'failed', outcome: { reason: 'http_503' } });
    // The shop is back; the user, told `failed`, joins again.
    overloaded = false;
    holdFirst = false;
    const again = (await http(second.url, 'POST', '/v1/items/wk503/tickets', { userId: 'bob' }, 'svc')).body.ticketId as string;
    expect(await until(again)).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: `O${keysBefore + 1}` } } });
    expect(work.size).toBe(keysBefore + 1); // before: a new key, a second order
  });

  it("keeps the call a daemon held up past its lease learns the answer of after its ticket ended elsewhere: the user's next ticket repeats it, one order", { timeout: 120_000 }, async () => {
    // (A review: the late 2xx cleared the call before its settle was refused, and the next ticket made a second order.)
    const env = processEnv(db.url, newPrefix(), { FLOODGATE_JOB_LOCK_MS: '2000', FLOODGATE_DISPATCH_LEASE_MS: '2000', FLOODGATE_JOB_ATTEMPTS: '3', FLOODGATE_JOB_BACKOFF_MS: '100' });
    overloaded = false;
    holdFirst = true;
    const first = await startDaemonProcess(env);
    running.push(first);
    expect((await http(first.url, 'PUT', '/v1/items/wkstop', { handler: 'webhook', config: { url, timeoutMs: 60_000 } }, 'op')).status).toBe(201);
    const keysBefore = work.size;
    const t = (await http(first.url, 'POST', '/v1/items/wkstop/tickets', { userId: 'cat' }, 'svc')).body.ticketId as string;
    await waitUntil(() => work.size === keysBefore + 1, 20_000);
    // Held up mid-call (a VM pause, a long GC) past its run's lease.
    first.proc.kill('SIGSTOP');
    try {
      const second = await startDaemonProcess(env);
      running.push(second);
      const view = async (id: string) => (await http(second.url, 'GET', `/v1/tickets/${id}`)).body as { state: string; outcome?: { reason?: string; result?: { orderId?: string } } };
      const until = async (id: string, ok: (v: Awaited<ReturnType<typeof view>>) => boolean) => {
        const end = Date.now() + 60_000;
        let v = await view(id);
        while (!ok(v) && Date.now() < end) {
          await new Promise((r) => setTimeout(r, 200));
          v = await view(id);
        }
        return v;
      };
      // Run again there under the same key while the first call is worked on: 409 after 409, then `failed`.
      expect(await until(t, (v) => v.state !== 'admitted' && v.state !== 'waiting')).toMatchObject({ state: 'failed', outcome: { reason: 'http_409' } });
      // The first call's order is made; its answer waits in the held-up daemon's socket.
      const answeredAt = calls.length;
      finish!();
      first.proc.kill('SIGCONT');
      await waitUntil(() => /job outcome not settled/.test(first.output()), 30_000);
      holdFirst = false;
      const again = (await http(second.url, 'POST', '/v1/items/wkstop/tickets', { userId: 'cat' }, 'svc')).body.ticketId as string;
      expect(await until(again, (v) => v.state !== 'admitted' && v.state !== 'waiting')).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: `O${keysBefore + 1}` } } });
      expect(work.size).toBe(keysBefore + 1); // before: a new key, a second order
      expect(calls.length).toBeGreaterThan(answeredAt);
    } finally {
      first.proc.kill('SIGCONT');
    }
  });
});
