import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { deadlineOf } from '../src/service/handler.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { processEnv, startDaemonProcess } from './support/daemon.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';
import { joinAll, userIds } from './support/joins.js';

const { newPrefix } = testRedis();
const db = await testDb();
const handlersModule = path.resolve(import.meta.dirname, 'fixtures/echo-handler.ts');
const { call } = await inProcessDaemon({
  prefix: newPrefix(),
  databaseUrl: db.url,
  env: { FLOODGATE_HANDLERS_MODULE: handlersModule, FLOODGATE_JOB_ATTEMPTS: '2', FLOODGATE_JOB_BACKOFF_MS: '50' },
});
const view = (id: string) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body);

describe('the service module', () => {
  it('does not let a hot item starve another item on the same handler queue', { timeout: 60_000 }, async () => {
    // The hot item drips through a slow gate (300 tickets at 10/s: 30 s; a line longer than the
    // dispatcher's batch of 200), opened once its whole line has joined; the cold item has no cap
    // of its own. Its 20 tickets must all be sold within 20 s (0.5-0.7 s at load 10), while the
    // hot line is still long: a dispatcher that served only the longest line (tried) would have
    // them wait ~28 s, until the hot line is shorter than theirs.
    await call('PUT', '/v1/items/hot', { handler: 'seckill', config: { stock: 5000 }, gate: { mode: 'closed' } });
    await call('PUT', '/v1/items/cold', { handler: 'seckill', config: { stock: 100 } });
    await joinAll((u) => call('POST', '/v1/items/hot/tickets', { userId: u }, SVC), userIds(0, 300, 'h'));
    await call('PATCH', '/v1/items/hot/gate', { mode: 'manual', rate: 10, maxInFlight: 20 });
    const cold = await joinAll((u) => call('POST', '/v1/items/cold/tickets', { userId: u }, SVC), userIds(0, 20, 'c'));
    const coldViews = await waitFor(
      () => Promise.all(cold.map((c) => view(c.body.ticketId))),
      (vs) => vs.every((v) => v.state === 'succeeded'),
      20_000,
    );
    expect(coldViews.every((v) => v.state === 'succeeded')).toBe(true);
    const hot = (await call('GET', '/v1/items/hot')).body;
    expect(hot.counts.waiting).toBeGreaterThan(0); // the hot line is still draining
    // The rest of the file needs none of its sales.
    expect((await call('PATCH', '/v1/items/hot/gate', { mode: 'closed' })).status).toBe(200);
  });

  it('runs a handler registered by the deployment from FLOODGATE_HANDLERS_MODULE', async () => {
    expect((await call('PUT', '/v1/items/e1', { handler: 'echo', config: { prefix: 'hi ' } })).status).toBe(201);
    expect((await call('PUT', '/v1/items/e2', { handler: 'echo', config: { nope: 1 } })).status).toBe(400);
    const a = (await call('POST', '/v1/items/e1/tickets', { userId: 'ann' }, SVC)).body;
    const b = (await call('POST', '/v1/items/e1/tickets', { userId: 'bob', payload: { refuse: true } }, SVC)).body;
    const [va, vb] = await waitFor(
      () => Promise.all([view(a.ticketId), view(b.ticketId)]),
      (vs) => vs.every((v) => v.state !== 'waiting' && v.state !== 'admitted'),
    );
    expect(va).toMatchObject({ state: 'succeeded', outcome: { result: { echoed: 'hi ann', attempt: 1 } } });
    expect(vb).toMatchObject({ state: 'rejected', outcome: { reason: 'refused' } });
  });

  it("ends a deployment's misbehaving handler's tickets with what is true: a call that never settles, `throw undefined`, an answer the contract does not know, a result Postgres cannot store, an error's text, a result over 64 KiB as UTF-8", { timeout: 30_000 }, async () => {
    expect((await call('PUT', '/v1/items/e4', { handler: 'echo', config: { deadlineMs: 200 } })).status).toBe(201);
    const join = (userId: string, payload: Record<string, unknown>) => call('POST', '/v1/items/e4/tickets', { userId, payload }, SVC).then((r) => r.body.ticketId as string);
    const ids = {
      hang: await join('hang', { hang: true }),
      nothing: await join('nothing', { throwNothing: true }),
      string: await join('string', { answer: 'ok' }),
      failed: await join('failed', { answer: { status: 'failed', reason: 'said_failed' } }),
      numeric: await join('numeric', { answer: { status: 'rejected', reason: 42 } }),
      nul: await join('nul', { nul: true }),
      prose: await join('prose', { permanent: 'connect ECONNREFUSED 10.0.0.5:5432 user=shop password=hunter2' }),
      code: await join('code', { permanent: 'stock.locked' }),
      // 30,000 characters, 90,000 bytes: past 64 KiB as UTF-8 (its length alone passed).
      wide: await join('wide', { wide: 30_000 }),
    };
    const views = await waitFor(
      () => Promise.all(Object.values(ids).map(view)),
      (vs) => vs.every((v) => v.state !== 'waiting' && v.state !== 'admitted'),
      20_000,
    );
    const by = Object.fromEntries(Object.keys(ids).map((k, i) => [k, views[i]]));
    // Given up 1 s past its deadline, each of its two attempts: a drop, as a webhook's timeout.
    expect(by.hang).toMatchObject({ state: 'failed', outcome: { reason: 'timeout' } });
    expect(by.nothing).toMatchObject({ state: 'failed', outcome: { reason: 'handler_error' } });
    for (const k of ['string', 'failed', 'numeric']) expect(by[k]).toMatchObject({ state: 'failed', outcome: { reason: 'invalid_result' } });
    expect(by.nul).toMatchObject({ state: 'succeeded' });
    expect(by.nul.outcome.result).toBeUndefined();
    // An error's text is not a reason: it named a host, a user and a password to the buyer.
    expect(by.prose).toMatchObject({ state: 'failed', outcome: { reason: 'handler_error' } });
    expect(by.code).toMatchObject({ state: 'failed', outcome: { reason: 'stock.locked' } });
    expect(by.wide).toMatchObject({ state: 'succeeded' });
    expect(by.wide.outcome.result).toBeUndefined();
    // Its ledger row is written (a NUL in it was refused and parked: the outcome lost once the state left Redis).
    const rows = await waitFor(() => db.sql`select status, reason from ticket_outcomes where item_id = 'e4' order by status`, (r) => r.length >= 9);
    expect(rows.map((r) => r.status)).toEqual(['failed', 'failed', 'failed', 'failed', 'failed', 'failed', 'failed', 'succeeded', 'succeeded']);
    expect(rows.map((r) => r.reason).join(' ')).not.toContain('hunter2');
  });

  it('loads a TypeScript handlers module into the daemon as `npm start` runs it (built, plain node)', { timeout: 60_000 }, async () => {
    const d = await startDaemonProcess(processEnv(db.url, newPrefix(), { FLOODGATE_HANDLERS_MODULE: handlersModule }));
    try {
      const req = (method: string, p: string, body: unknown, key: string) =>
        fetch(`${d.url}${p}`, { method, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: body ? JSON.stringify(body) : undefined }).then(async (r) => ({ status: r.status, body: await r.json() }));
      expect((await req('PUT', '/v1/items/e3', { handler: 'echo', config: { prefix: 'built ' } }, 'op')).status).toBe(201);
      const t = (await req('POST', '/v1/items/e3/tickets', { userId: 'cy' }, 'svc')).body;
      const v = await waitFor(
        () => fetch(`${d.url}/v1/tickets/${t.ticketId}`).then((r) => r.json()),
        (x) => x.state === 'succeeded',
      );
      expect(v).toMatchObject({ outcome: { result: { echoed: 'built cy' } } });
      // The module's DropError is the sources' class, the built daemon's its own copy: still a drop.
      const dropped = (await req('POST', '/v1/items/e3/tickets', { userId: 'dee', payload: { drop: true } }, 'svc')).body;
      const dv = await waitFor(
        () => fetch(`${d.url}/v1/tickets/${dropped.ticketId}`).then((r) => r.json()),
        (x) => x.state !== 'waiting' && x.state !== 'admitted',
        20_000,
      );
      expect(dv).toMatchObject({ state: 'failed', outcome: { reason: 'downstream_busy' } });
    } finally {
      expect(await d.stop()).toBe(0);
    }
  });
});

describe("a handler's deadline", () => {
  it('is its own when a positive number, at most an hour (Infinity too), else 10 s (a timer given Infinity or NaN fired at once and cut the call off)', () => {
    const of = (ms: unknown) => deadlineOf({ deadlineMs: () => ms as number }, {});
    expect([of(250), of(2.5), of(5e9), of(Infinity), of(Number.NaN), of(0), of(-1), deadlineOf({}, {})]).toEqual([250, 3, 3_600_000, 3_600_000, 10_000, 10_000, 10_000, 10_000]);
  });
});
