import { describe, expect, it } from 'vitest';
import { SERVICE, testApp } from './support/app.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { itemKeys } from '../src/redis/keys.js';
import { subLineOf } from '../src/queue/split-line.js';
import { retrying503 } from './support/joins.js';
import { testRedis } from './support/redis.js';
import { followTicket } from './support/ticket-stream.js';

/**
 * Edges of the coupon handler and of the external workers' pull and outcome API, through the HTTP
 * API against real Redis and Postgres: what users and workers are told on a bad day or with
 * hostile input.
 */
const t = await testApp();
const { redis, newPrefix } = testRedis();
// The daemon with its loops (sweep, dispatcher, workers), for what only a running daemon does;
// its own key prefix, and the file's database.
const prefix = newPrefix();
const d = await inProcessDaemon({ prefix, databaseUrl: t.db.url, env: { FLOODGATE_JOB_ATTEMPTS: '3', FLOODGATE_JOB_BACKOFF_MS: '50' } });
// A client's calls: a 503 (a busy machine's Redis command past its budget) asked again.
const dcall = retrying503(d.call);

describe('external: what the ticket holder is told', () => {
  // Over HTTP the stream is written straight to Node's response; through app.request it is a web stream.
  it.each(['over HTTP', 'through app.request'])("a ticket's event stream carries the admission token its poll shows, admitted and succeeded (%s)", async (how) => {
    const call = dcall;
    const app = how === 'over HTTP' ? { request: (p: string) => fetch(`${d.daemon.url}${p}`) } : d.daemon.app;
    const key = SVC;
    const item = `tok-${how === 'over HTTP' ? 'h' : 'a'}`;
    await d.define(item, { handler: 'external' });
    const j = (await call('POST', `/v1/items/${item}/tickets`, { userId: 'u1' }, key)).body;
    const stream = followTicket(app, j.ticketId);
    expect((await stream.next()).state).toBe('waiting');
    const [p] = (await call('POST', `/v1/items/${item}/pull`, { max: 1 }, key)).body.tickets;
    const admitted = await stream.next();
    const polled = (await call('GET', `/v1/tickets/${j.ticketId}`, undefined, null)).body;
    expect(polled.admissionToken).toMatch(/^eyJ/);
    // The waiting page follows the stream and passes this token on to the shop's returnUrl.
    expect(admitted).toMatchObject({ state: 'admitted', admissionToken: polled.admissionToken });
    expect((await call('POST', `/v1/tickets/${j.ticketId}/outcome`, { leaseId: p.leaseId, status: 'succeeded', result: { orderId: 'A1' } }, key)).status).toBe(200);
    const succeeded = await stream.next();
    expect(succeeded).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'A1' } } });
    expect(succeeded.admissionToken).toBe((await call('GET', `/v1/tickets/${j.ticketId}`, undefined, null)).body.admissionToken);
    await stream.done;
  });
});

describe('external: a holder who watches the event stream', () => {
  it('is not expired as abandoned when the ticket reaches the head: the open stream counts as polls do', { timeout: 60_000 }, async () => {
    const call = dcall;
    await d.define('ab', { handler: 'external', abandonAfterMs: 8000 });
    const watcher = (await call('POST', '/v1/items/ab/tickets', { userId: 'watcher' }, SVC)).body;
    const gone = (await call('POST', '/v1/items/ab/tickets', { userId: 'gone' }, SVC)).body;
    const opened = Date.now();
    // The waiting page follows the stream and never polls while it is open.
    const stream = followTicket({ request: (p: string) => fetch(`${d.daemon.url}${p}`) }, watcher.ticketId);
    expect((await stream.next()).state).toBe('waiting');
    // The stream's keep-alive comes after 10 s of silence, well past abandonAfterMs since it opened;
    // then its sign of life reaches Redis (poll times are written once a second).
    await waitFor(async () => stream.comments(), (n) => n >= 1, 20_000);
    const seen = await waitFor(() => redis.hget(itemKeys(prefix, 'ab').pollPage(1), '1'), (v) => Number(v) >= opened + 9000, 5000);
    expect(Number(seen)).toBeGreaterThanOrEqual(opened + 9000);
    const pulled = (await call('POST', '/v1/items/ab/pull', { max: 2 }, SVC)).body.tickets;
    expect(pulled.map((x: { userId: string }) => x.userId)).toEqual(['watcher']);
    expect(await stream.next()).toMatchObject({ state: 'admitted' });
    // The holder who went away (no poll, no stream) is expired, as before.
    expect((await call('GET', `/v1/tickets/${gone.ticketId}`, undefined, null)).body).toMatchObject({ state: 'expired', outcome: { reason: 'abandoned' } });
    expect((await call('POST', `/v1/tickets/${watcher.ticketId}/outcome`, { leaseId: pulled[0].leaseId, status: 'succeeded' }, SVC)).status).toBe(200);
    await stream.done;
  });
});

describe('external: what the shop is told of a ticket', () => {
  it("a worker's large result leaves the admission token one the daemon's own introspection accepts (the result stays on the ticket)", async () => {
    const call = dcall;
    await d.define('big', { handler: 'external' });
    const j = (await call('POST', '/v1/items/big/tickets', { userId: 'u1' }, SVC)).body;
    const [p] = (await call('POST', '/v1/items/big/pull', { max: 1 }, SVC)).body.tickets;
    // Well inside the body limit (16 KiB): a worker's order details, say.
    const result = { orderId: 'A1', lines: Array.from({ length: 120 }, (_, i) => ({ sku: `sku-${i}`, note: 'x'.repeat(40) })) };
    expect(JSON.stringify(result).length).toBeGreaterThan(7000);
    const wrote = await call('POST', `/v1/tickets/${j.ticketId}/outcome`, { leaseId: p.leaseId, status: 'succeeded', result }, SVC);
    expect(wrote.status).toBe(200);
    const view = (await call('GET', `/v1/tickets/${j.ticketId}`, undefined, null)).body;
    expect(view.outcome.result).toEqual(result);
    expect(view.admissionToken).toBe(wrote.body.admissionToken);
    const seen = await call('POST', '/v1/tokens/introspect', { token: view.admissionToken }, SVC);
    expect(seen.body).toMatchObject({ active: true, sub: 'u1', aud: 'big' });
  });
});

describe('external: leases between workers', () => {
  it('two workers pulling at once never get the same ticket', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/e', { handler: 'external' });
    for (let i = 0; i < 60; i++) await call('POST', '/v1/items/e/tickets', { userId: `u${i}` }, SERVICE);
    const pulls = await Promise.all(Array.from({ length: 12 }, () => call('POST', '/v1/items/e/pull', { max: 7 }, SERVICE)));
    const ids = pulls.flatMap((p) => p.body.tickets.map((x: { ticketId: string }) => x.ticketId));
    expect(ids.length).toBe(60);
    expect(new Set(ids).size).toBe(60);
  });

  it("a lease that ran out refuses its worker's write-back, swept or not; the next lease's write-back is taken and stands", async () => {
    const clock = t.manualClock(Date.now());
    const { call } = t.build({ clock });
    await call('PUT', '/v1/items/e', { handler: 'external' });
    const j = (await call('POST', '/v1/items/e/tickets', { userId: 'u1' }, SERVICE)).body;
    const [first] = (await call('POST', '/v1/items/e/pull', { max: 1, leaseMs: 1000 }, SERVICE)).body.tickets;
    clock.advance(1001);
    // No sweep yet: the write-back itself finds the lease over, and puts the ticket back at the head.
    const late = await call('POST', `/v1/tickets/${j.ticketId}/outcome`, { leaseId: first.leaseId, status: 'succeeded', result: { by: 'first' } }, SERVICE);
    expect([late.status, late.body.error?.code]).toEqual([409, 'lease_lost']);
    expect((await call('GET', `/v1/tickets/${j.ticketId}`, undefined, null)).body).toMatchObject({ state: 'waiting', position: 1 });
    const [second] = (await call('POST', '/v1/items/e/pull', { max: 1, leaseMs: 5000 }, SERVICE)).body.tickets;
    expect(second.ticketId).toBe(j.ticketId);
    expect((await call('POST', `/v1/tickets/${j.ticketId}/outcome`, { leaseId: first.leaseId, status: 'succeeded', result: { by: 'first' } }, SERVICE)).body.error.code).toBe('lease_lost');
    const taken = await call('POST', `/v1/tickets/${j.ticketId}/outcome`, { leaseId: second.leaseId, status: 'rejected', reason: 'out_of_stock' }, SERVICE);
    expect(taken.body).toMatchObject({ state: 'rejected', outcome: { reason: 'out_of_stock' } });
    expect((await call('POST', `/v1/tickets/${j.ticketId}/outcome`, { leaseId: first.leaseId, status: 'succeeded', result: { by: 'first' } }, SERVICE)).body.error.code).toBe('lease_lost');
    expect((await call('GET', `/v1/tickets/${j.ticketId}`, undefined, null)).body.outcome).toEqual({ status: 'rejected', reason: 'out_of_stock' });
    expect((await call('GET', '/v1/items/e')).body.counts).toMatchObject({ waiting: 0, admitted: 0, rejected: 1, succeeded: 0 });
  });

  it("an item closed while its tickets are out: the holder's write-back under its lease is taken, and nobody pulls any more", async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/e', { handler: 'external' });
    const a = (await call('POST', '/v1/items/e/tickets', { userId: 'u1' }, SERVICE)).body;
    const b = (await call('POST', '/v1/items/e/tickets', { userId: 'u2' }, SERVICE)).body;
    const [p] = (await call('POST', '/v1/items/e/pull', { max: 1 }, SERVICE)).body.tickets;
    expect((await call('DELETE', '/v1/items/e')).body.state).toBe('closed');
    expect((await call('GET', `/v1/tickets/${a.ticketId}`, undefined, null)).body.state).toBe('admitted');
    expect((await call('GET', `/v1/tickets/${b.ticketId}`, undefined, null)).body.outcome).toEqual({ status: 'cancelled', reason: 'item_closed' });
    expect((await call('POST', '/v1/items/e/pull', { max: 5 }, SERVICE)).body.tickets).toEqual([]);
    const wrote = await call('POST', `/v1/tickets/${a.ticketId}/outcome`, { leaseId: p.leaseId, status: 'succeeded', result: { orderId: 'A1' } }, SERVICE);
    expect(wrote.body).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'A1' } } });
  });
});

describe('coupon: the per-user limit changed mid-sale', () => {
  const settled = (id: string) =>
    waitFor(() => dcall('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body), (v) => !['waiting', 'admitted'].includes(v.state));
  const join = (item: string, userId: string) => dcall('POST', `/v1/items/${item}/tickets`, { userId }, SVC);

  it.each([1, 4])('a user may claim again once it is raised, is given their claim back once it is lowered, never holds more than the limit of the moment, and past it is given their last claim (lines %i)', async (lines) => {
    const item = `limit-${lines}`;
    const define = (perUser: number) => d.define(item, { handler: 'coupon', config: { total: 10, perUser }, lines });
    await define(1);
    const first = await settled((await join(item, 'g')).body.ticketId);
    expect(first.state).toBe('succeeded');
    // perUser 1: the claim is the user's answer.
    expect(await join(item, 'g')).toMatchObject({ status: 200, body: { ticketId: first.ticketId, state: 'succeeded' } });
    await define(2);
    const second = await join(item, 'g');
    expect(second.status).toBe(202);
    expect((await settled(second.body.ticketId)).state).toBe('succeeded');
    await define(1);
    expect(await join(item, 'g')).toMatchObject({ status: 200, body: { ticketId: second.body.ticketId, state: 'succeeded' } });
    await define(3);
    const third = await settled((await join(item, 'g')).body.ticketId);
    expect(third.state).toBe('succeeded');
    // Three claims under perUser 3: the user is given their last one back (200), no ticket made.
    expect(await join(item, 'g')).toMatchObject({ status: 200, body: { ticketId: third.ticketId, state: 'succeeded' } });
    const claims = await t.db.sql`select claim_no from coupon_claims where item_id = ${item} order by claim_no`;
    expect(claims.map((c) => c.claim_no)).toEqual([1, 2, 3]);
    expect((await dcall('GET', `/v1/items/${item}`)).body.remaining).toBe(7);
  });

  it.each([1, 4])("a success under an item's earlier handler is no claim: the user claims perUser coupons after a change to coupon (lines %i)", async (lines) => {
    const item = `was-external-${lines}`;
    // On a split item, a user whose sub-line is not the item's own (sub-line 0).
    let h = 'h';
    for (let i = 0; lines > 1 && subLineOf(h, lines) === 0; i++) h = `h${i}`;
    await d.define(item, { handler: 'external', lines });
    const ext = (await join(item, h)).body.ticketId;
    const [p] = (await dcall('POST', `/v1/items/${item}/pull`, { max: 1 }, SVC)).body.tickets;
    expect((await dcall('POST', `/v1/tickets/${ext}/outcome`, { leaseId: p.leaseId, status: 'succeeded' }, SVC)).status).toBe(200);
    await d.define(item, { handler: 'coupon', config: { total: 10, perUser: 2 }, lines });
    const first = await join(item, h);
    expect(first.status).toBe(202);
    expect((await settled(first.body.ticketId)).state).toBe('succeeded');
    const second = await join(item, h);
    expect(second.status).toBe(202); // was 200 with the first claim: the external success counted as one
    expect((await settled(second.body.ticketId)).state).toBe('succeeded');
    expect(await join(item, h)).toMatchObject({ status: 200, body: { ticketId: second.body.ticketId } });
    const claims = await t.db.sql`select claim_no from coupon_claims where item_id = ${item} order by claim_no`;
    expect(claims.map((c) => c.claim_no)).toEqual([1, 2]);
  });
});
