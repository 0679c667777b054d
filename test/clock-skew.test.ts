import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { steadyClock } from '../src/kernel/clock.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { processEnv, startDaemonProcess } from './support/daemon.js';
import { http } from './support/http.js';
import { testDb } from './support/db.js';
import { recordingDownstream } from './support/downstream.js';
import { testRedis } from './support/redis.js';

// Two daemons on one line, the second on a machine whose clock runs two minutes ahead.
const SKEW_MS = 120_000;
const { newPrefix } = testRedis();
const db = await testDb();
const prefix = newPrefix();
const a = await inProcessDaemon({ prefix, databaseUrl: db.url });
const b = await inProcessDaemon({ prefix, databaseUrl: db.url, clock: { now: () => Date.now() + SKEW_MS } });
// A third whose machine's wall clock steps two minutes ahead once it runs (NTP, `date -s`), and a
// fourth whose machine is suspended for two minutes (its monotonic clock stands still meanwhile);
// both read time as the daemon does by default: the wall clock at start, moved on by the monotonic one.
let step = 0;
let frozen = 0;
const c = await inProcessDaemon({ prefix, databaseUrl: db.url, clock: steadyClock(() => Date.now() + step) });
const d = await inProcessDaemon({ prefix, databaseUrl: db.url, clock: steadyClock(Date.now, () => performance.now() - frozen) });

// A fifth, a process on a line of its own, whose machine's clock runs six minutes ahead for every
// library in it: past the five minutes a shop's signature check allows.
const e = await startDaemonProcess({ ...processEnv(db.url, newPrefix()), NODE_OPTIONS: `--import ${fileURLToPath(new URL('./fixtures/skewed-clock.mjs', import.meta.url))}`, SKEW_MS: '360000' });
afterAll(() => e.stop('SIGKILL'));

describe('a daemon whose machine clock is wrong', () => {
  it("keeps Redis's time: it does not sweep another daemon's lease as expired, and stamps times as the others do", { timeout: 30_000 }, async () => {
    expect((await a.call('PUT', '/v1/items/skew', { handler: 'external', gate: { mode: 'manual', rate: 100 } })).status).toBe(201);
    const first = await waitFor(() => a.call('POST', '/v1/items/skew/tickets', { userId: 'u1' }, SVC), (r) => r.status === 202);
    expect(first.status).toBe(202);
    // A second user joins through the skewed daemon (so the item is active in its view and its
    // lease sweep visits it), stamped with the same time as the first.
    const joined = await waitFor(() => b.call('POST', '/v1/items/skew/tickets', { userId: 'u2' }, SVC), (r) => r.status === 202);
    expect(joined.status).toBe(202);
    expect(Math.abs(Date.parse(joined.body.createdAt) - Date.parse(first.body.createdAt))).toBeLessThan(5000);

    // An outside worker takes it through the other daemon, under a 60 s lease.
    const pulled = await waitFor(() => a.call('POST', '/v1/items/skew/pull', { max: 1, leaseMs: 60_000 }, SVC), (r) => r.body.tickets?.length === 1);
    const [ticket] = pulled.body.tickets;
    expect(ticket.ticketId).toBe(first.body.ticketId);
    // Four of the skewed daemon's lease sweeps (every 500 ms) go by: on its own clock this lease
    // ended a minute ago.
    await new Promise((r) => setTimeout(r, 2000));
    const view = (await b.call('GET', `/v1/tickets/${ticket.ticketId}`, undefined, null)).body;
    expect(view.state).toBe('admitted');
    const done = await a.call('POST', `/v1/tickets/${ticket.ticketId}/outcome`, { leaseId: ticket.leaseId, status: 'succeeded', result: { ref: 'w1' } }, SVC);
    expect(done.status).toBe(200);
    expect(done.body.state).toBe('succeeded');
  });

  it("never follows a step of its machine's wall clock, and comes back to Redis's time soon after a suspend", { timeout: 30_000 }, async () => {
    expect((await a.call('PUT', '/v1/items/step', { handler: 'external', gate: { mode: 'manual', rate: 100 } })).status).toBe(201);
    const first = await waitFor(() => a.call('POST', '/v1/items/step/tickets', { userId: 's1' }, SVC), (r) => r.status === 202);
    const joined = await waitFor(() => c.call('POST', '/v1/items/step/tickets', { userId: 's2' }, SVC), (r) => r.status === 202);
    expect(joined.status).toBe(202);
    const pulled = await waitFor(() => a.call('POST', '/v1/items/step/pull', { max: 1, leaseMs: 60_000 }, SVC), (r) => r.body.tickets?.length === 1);
    const [ticket] = pulled.body.tickets;
    // The wall clock steps two minutes on: on it the lease ended a minute ago. Four of the
    // daemon's lease sweeps go by (before: the step was trusted until the next measure, 10 s).
    step = SKEW_MS;
    await new Promise((r) => setTimeout(r, 2000));
    expect((await c.call('GET', `/v1/tickets/${ticket.ticketId}`, undefined, null)).body.state).toBe('admitted');
    const late = await c.call('POST', '/v1/items/step/tickets', { userId: 's3' }, SVC);
    expect(Math.abs(Date.parse(late.body.createdAt) - Date.now())).toBeLessThan(5000);
    expect((await a.call('POST', `/v1/tickets/${ticket.ticketId}/outcome`, { leaseId: ticket.leaseId, status: 'succeeded', result: { ref: 'w2' } }, SVC)).status).toBe(200);

    // The fourth machine is suspended two minutes: its monotonic clock stood still, so the daemon
    // reads two minutes behind until it asks Redis, which the change in the wall clock's drift makes it do.
    frozen = SKEW_MS;
    const back = await waitFor(
      () => d.call('POST', '/v1/items/step/tickets', { userId: `s4-${Date.now()}` }, SVC),
      (r) => r.status === 202 && Math.abs(Date.parse(r.body.createdAt) - Date.now()) < 5000,
      5000,
    );
    expect(Math.abs(Date.parse(back.body.createdAt) - Date.parse(first.body.createdAt))).toBeLessThan(20_000);
  });

  it("signs its webhook calls with Redis's time, which a shop's five-minute check takes", { timeout: 30_000 }, async () => {
    const seen: string[] = [];
    const down = await recordingDownstream((req, res) => {
      seen.push(String(req.headers['floodgate-signature']));
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"orderId":"K1"}');
    });
    const call = (method: string, path: string, body?: unknown, key: string | null = 'op') => http(e.url, method, path, body, key);
    expect((await call('PUT', '/v1/items/signed', { handler: 'webhook', config: { url: down.url } })).status).toBe(201);
    const id = (await call('POST', '/v1/items/signed/tickets', { userId: 'k1' }, 'svc')).body.ticketId as string;
    expect((await waitFor(() => call('GET', `/v1/tickets/${id}`, undefined, null), (r) => r.body.state === 'succeeded')).body.state).toBe('succeeded');
    // Before: stamped by the machine's clock, 360 s ahead, and every shop's check refused it.
    const t = Number(/^t=(\d+),/.exec(seen[0])?.[1]);
    expect(Math.abs(t - Date.now() / 1000)).toBeLessThan(60);
  });
});
