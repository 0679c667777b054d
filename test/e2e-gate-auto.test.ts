import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { http } from './support/http.js';
import { startDaemonProcess, type RunningDaemon } from './support/daemon.js';
import { testDb } from './support/db.js';
import { redisUrl, testRedis } from './support/redis.js';

const { newPrefix } = testRedis();
const db = await testDb();
const running: RunningDaemon[] = [];

// A downstream with K = 8 workers (20 ms a call) and a backlog bound of 40 (then 503).
let active = 0;
let queued = 0;
let maxOutstanding = 0;
const waiters: (() => void)[] = [];
const server = createServer(async (req, res) => {
  for await (const _ of req);
  if (queued >= 40) {
    res.writeHead(503).end();
    return;
  }
  queued++;
  maxOutstanding = Math.max(maxOutstanding, active + queued);
  if (active >= 8) await new Promise<void>((r) => waiters.push(r));
  queued--;
  active++;
  await new Promise((r) => setTimeout(r, 20));
  active--;
  waiters.shift()?.();
  res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
});
afterAll(async () => {
  await Promise.all(running.map((d) => d.stop('SIGKILL')));
  await new Promise((r) => server.close(r));
});


describe('the adaptive gate across two daemons', () => {
  it('has one leader, fails over when it is killed, and both daemons obey one published limit', { timeout: 100_000 }, async () => {
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    const env = { REDIS_URL: redisUrl(), DATABASE_URL: db.url, FLOODGATE_REDIS_PREFIX: newPrefix(), FLOODGATE_SERVICE_KEYS: 'svc', FLOODGATE_OPERATOR_KEYS: 'op' };
    const [a, b] = await Promise.all([startDaemonProcess(env), startDaemonProcess(env)]);
    running.push(a, b);
    await http(a.url, 'PUT', '/v1/items/auto', { handler: 'webhook', config: { url, timeoutMs: 2000 }, gate: { mode: 'auto' } }, 'op');
    for (let i = 0; i < 2000; i += 100)
      await Promise.all(Array.from({ length: 100 }, (_, j) => http(i % 200 ? a.url : b.url, 'POST', '/v1/items/auto/tickets', { userId: `u${i + j}` }, 'svc')));

    let view: any;
    for (let i = 0; i < 50; i++) {
      view = (await http(a.url, 'GET', '/v1/items/auto', undefined, 'op')).body;
      if (view.gate.controller?.baseMs) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const leader = view.gate.controller.leader as string;
    expect([a.proc.pid, b.proc.pid].map(String)).toContain(leader.split('-').at(-2));
    const viewB = (await http(b.url, 'GET', '/v1/items/auto', undefined, 'op')).body;
    expect(viewB.gate.controller.leader).toBe(leader);
    expect(view.gate.effective.maxInFlight).toBe(view.gate.controller.limit);

    const [dead, alive] = leader.split('-').at(-2) === String(a.proc.pid) ? [a, b] : [b, a];
    await dead.stop('SIGKILL');
    const killedAt = Date.now();
    let next = leader;
    while (next === leader && Date.now() - killedAt < 10_000) {
      await new Promise((r) => setTimeout(r, 100));
      next = (await http(alive.url, 'GET', '/v1/items/auto', undefined, 'op')).body.gate.controller.leader;
    }
    expect(next).not.toBe(leader);
    expect(Date.now() - killedAt).toBeLessThan(5000);

    // Manual: the operator's numbers rule and the controller's opinion stays visible (shadow).
    const manual = (await http(alive.url, 'PATCH', '/v1/items/auto/gate', { mode: 'manual', maxInFlight: 4 }, 'op')).body;
    expect(manual.effective).toEqual({ rate: null, maxInFlight: 4 });
    expect(manual.controller).not.toBeNull();
    // Back to auto: restart from the observed in-flight with a probe, never the stale estimate.
    await http(alive.url, 'PATCH', '/v1/items/auto/gate', { mode: 'auto' }, 'op');
    let probing = false;
    for (let i = 0; i < 30 && !probing; i++) {
      await new Promise((r) => setTimeout(r, 100));
      probing = (await http(alive.url, 'GET', '/v1/items/auto', undefined, 'op')).body.gate.controller.probing;
    }
    expect(probing).toBe(true);

    // The line keeps draining through the survivor, and the downstream was never driven to 503s.
    let item: any;
    for (const until = Date.now() + 45_000; Date.now() < until; ) {
      item = (await http(alive.url, 'GET', '/v1/items/auto', undefined, 'op')).body;
      if (item.counts.waiting === 0 && item.counts.admitted === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(item.counts.succeeded).toBeGreaterThan(1900);
    expect(item.counts.failed).toBe(0);
    expect(maxOutstanding, 'the downstream reached its 503 bound').toBeLessThan(48);
    const audit = await db.sql`select actor from gate_audit where item_id = 'auto'`;
    expect(audit.length).toBeGreaterThanOrEqual(1);
  });
});
