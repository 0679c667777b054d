import type { ServerResponse } from 'node:http';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { retryAfterMs } from '../src/service/handlers/webhook.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { recordingDownstream } from './support/downstream.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

/**
 * A webhook downstream that answers 429/503 with `Retry-After` is called again no sooner than it
 * asked, and its waits use no attempt more than FLOODGATE_JOB_ATTEMPTS. The backoff is 50 ms, so
 * a call that comes in time is BullMQ's backoff, not the wait asked. Times are the downstream's own
 * (Date.now() when a request has arrived, the clock the daemon's delays are read by too).
 */
const ATTEMPTS = 3;
/** Resolvers waiting for a log line that contains all their texts. */
const awaited: { texts: string[]; resolve: () => void }[] = [];
const { newPrefix } = testRedis();
const db = await testDb();
const { call, define } = await inProcessDaemon({
  prefix: newPrefix(),
  databaseUrl: db.url,
  env: { FLOODGATE_JOB_ATTEMPTS: String(ATTEMPTS), FLOODGATE_JOB_BACKOFF_MS: '50' },
  log: pino(
    { level: 'info' },
    {
      write(line: string) {
        for (const w of awaited.splice(0)) (w.texts.every((t) => line.includes(t)) ? w.resolve() : awaited.push(w));
      },
    },
  ),
});

/** Resolves at the daemon's next log line with all of `texts` (asked before what makes it). */
const logged = (...texts: string[]) => new Promise<void>((resolve) => awaited.push({ texts, resolve }));

/** A downstream that answers each call as `answer` says, told the user and that user's call count; keeps each call's arrival. */
async function downstream(answer: (userId: string, n: number, res: ServerResponse) => void) {
  const calls: { userId: string; at: number; key: string }[] = [];
  const { url } = await recordingDownstream((req, res) => {
    const { userId } = JSON.parse(req.body);
    calls.push({ userId, at: Date.now(), key: String(req.headers['idempotency-key']) });
    answer(userId, calls.filter((c) => c.userId === userId).length, res);
  });
  return { url, calls, of: (userId: string) => calls.filter((c) => c.userId === userId) };
}

const ok = (res: ServerResponse) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end('{"orderId":"R1"}');
};
const busy = (res: ServerResponse, status: number, retryAfter: string, headers: Record<string, string> = {}) => {
  res.writeHead(status, { 'retry-after': retryAfter, ...headers });
  res.end();
};

const settled = (id: string) =>
  waitFor(
    () => call('GET', `/v1/tickets/${id}`, undefined, null),
    (r) => r.status !== 200 || !['waiting', 'admitted'].includes(r.body.state),
    60_000,
  );

async function join(itemId: string, userId: string) {
  const j = await call('POST', `/v1/items/${itemId}/tickets`, { userId }, SVC);
  expect(j.status).toBe(202);
  return j.body.ticketId as string;
}

/** Gaps between consecutive calls (ms). */
const gaps = (calls: { at: number }[]) => calls.slice(1).map((c, i) => c.at - calls[i].at);

describe('webhook Retry-After', () => {
  it('calls again no sooner than a 429 asked (Retry-After: 2), then succeeds under one Idempotency-Key', async () => {
    const down = await downstream((_, n, res) => (n === 1 ? busy(res, 429, '2') : ok(res)));
    await define('ra-429', { handler: 'webhook', config: { url: down.url } });
    const r = await settled(await join('ra-429', 'u1'));
    expect(r.body).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'R1' } } });
    expect(down.calls).toHaveLength(2);
    const [gap] = gaps(down.calls);
    expect(gap).toBeGreaterThanOrEqual(2000);
    expect(gap).toBeLessThan(20_000);
    expect(new Set(down.calls.map((c) => c.key)).size).toBe(1);
  });

  it('reads an HTTP date against the answer\'s own Date (a 503), and calls again no sooner than that date', async () => {
    let asked = 0;
    const down = await downstream((_, n, res) => {
      if (n > 1) return ok(res);
      // The downstream's clock, whole seconds as HTTP dates have them: back at its second + 2.
      const sec = Math.floor(Date.now() / 1000) * 1000;
      asked = sec + 2000;
      busy(res, 503, new Date(asked).toUTCString(), { date: new Date(sec).toUTCString() });
    });
    await define('ra-date', { handler: 'webhook', config: { url: down.url } });
    const r = await settled(await join('ra-date', 'u1'));
    expect(r.body.state).toBe('succeeded');
    expect(down.calls).toHaveLength(2);
    expect(down.calls[1].at).toBeGreaterThanOrEqual(asked);
    expect(gaps(down.calls)[0]).toBeGreaterThanOrEqual(2000);
  });

  it('spends no more attempts on a downstream that keeps asking, and does not fail before the waits it asked add up', async () => {
    const down = await downstream((_, __, res) => busy(res, 429, '1'));
    await define('ra-always', { handler: 'webhook', config: { url: down.url } });
    const r = await settled(await join('ra-always', 'u1'));
    expect(r.body).toMatchObject({ state: 'failed', outcome: { reason: 'http_429' } });
    // Every attempt was a call (none spent by a wait), each a second after the last at least:
    // the ticket failed at its last call, (ATTEMPTS - 1) seconds after its first at the soonest.
    expect(down.calls).toHaveLength(ATTEMPTS);
    for (const gap of gaps(down.calls)) expect(gap).toBeGreaterThanOrEqual(1000);
    expect(down.calls[ATTEMPTS - 1].at - down.calls[0].at).toBeGreaterThanOrEqual((ATTEMPTS - 1) * 1000);
    expect(new Set(down.calls.map((c) => c.key)).size).toBe(1);
  });

  it('holds the item\'s other tickets until the wait one call was asked ends, without spending their attempts', async () => {
    // `third` always answers 503 without Retry-After: all its attempts are calls, however long it was held.
    const down = await downstream((userId, n, res) => {
      if (userId === 'first' && n === 1) return busy(res, 429, '2');
      if (userId === 'third') return void res.writeHead(503).end();
      ok(res);
    });
    await define('ra-item', { handler: 'webhook', config: { url: down.url } });
    const paused = logged('downstream asked for a pause', '"itemId":"ra-item"');
    const first = await join('ra-item', 'first');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([paused, new Promise((_, fail) => (timer = setTimeout(() => fail(new Error('the daemon never paused the item after its 429')), 20_000)))]);
    clearTimeout(timer);
    // Admitted after the downstream asked: their calls wait too.
    const later = await Promise.all(['second', 'third'].map((u) => join('ra-item', u)));
    const views = await Promise.all([first, ...later].map(settled));
    expect(views.map((v) => [v.body.state, v.body.outcome?.reason ?? null])).toEqual([
      ['succeeded', null],
      ['succeeded', null],
      ['failed', 'http_503'],
    ]);
    const asked = down.of('first')[0].at + 2000;
    expect(down.of('second')).toHaveLength(1);
    expect(down.of('third')).toHaveLength(ATTEMPTS);
    for (const u of ['second', 'third']) expect(down.of(u)[0].at, u).toBeGreaterThanOrEqual(asked);
  });

  it('holds a ticket whose retried call got 409 "still processing" with Retry-After, and no other user\'s call', async () => {
    // `slow`'s first call outlives the call's 300 ms timeout; its retry, under the same key, hears
    // 409 + Retry-After: 10 (its key's first call still being processed). That speaks of that key
    // alone: `other`, admitted meanwhile, waited the 10 s too (20 s in a review's run).
    const down = await downstream((userId, n, res) => {
      if (userId === 'slow' && n === 1) return void setTimeout(() => ok(res), 1000);
      if (userId === 'slow' && n === 2) return busy(res, 409, '10');
      ok(res);
    });
    await define('ra-409', { handler: 'webhook', config: { url: down.url, timeoutMs: 300 } });
    const slow = await join('ra-409', 'slow');
    await waitFor(async () => down.of('slow').length, (n) => n >= 2, 20_000);
    const asked = down.of('slow')[1].at;
    const other = await settled(await join('ra-409', 'other'));
    expect(other.body.state).toBe('succeeded');
    expect(down.of('other')[0].at - asked).toBeLessThan(8000);
    // The ticket that was asked waits it out, then ends with the answer under its key.
    expect((await settled(slow)).body).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'R1' } } });
    expect(down.of('slow')[2].at - asked).toBeGreaterThanOrEqual(10_000);
    expect(new Set(down.of('slow').map((c) => c.key)).size).toBe(1);
  });

  it('holds that ticket alone within its job too: another ticket of the job is retried after its own backoff', async () => {
    // Admitted together, `slow` and `flaky` run in one job; the job used to be delayed by the
    // longest wait any of its tickets asked, so flaky's third call came 10 s after slow's 409 (a review).
    const down = await downstream((userId, n, res) => {
      if (userId === 'slow' && n === 1) return void setTimeout(() => ok(res), 1000);
      if (userId === 'slow' && n === 2) return busy(res, 409, '10');
      if (userId === 'flaky' && n <= 2) return void res.writeHead(503).end();
      ok(res);
    });
    await define('ra-409-job', { handler: 'webhook', config: { url: down.url, timeoutMs: 300 }, gate: { mode: 'closed' } });
    const ids = [await join('ra-409-job', 'slow'), await join('ra-409-job', 'flaky')];
    expect((await call('PATCH', '/v1/items/ra-409-job/gate', { mode: 'manual', rate: 100, maxInFlight: 10 })).status).toBe(200);
    const [slow, flaky] = await Promise.all(ids.map(settled));
    expect([slow.body.state, flaky.body.state]).toEqual(['succeeded', 'succeeded']);
    const asked = down.of('slow')[1].at;
    expect(down.of('flaky')).toHaveLength(3);
    expect(down.of('flaky')[2].at - asked).toBeLessThan(5000);
    expect(down.of('slow')[2].at - asked).toBeGreaterThanOrEqual(10_000);
    expect(new Set(down.of('slow').map((c) => c.key)).size).toBe(1);
  });

  it('takes delay-seconds or an HTTP date ahead, and nothing else', () => {
    const now = Date.parse('Sat, 05 Dec 2026 08:00:00 GMT');
    const h = (retryAfter: string, date?: string) => new Headers({ 'retry-after': retryAfter, ...(date ? { date } : {}) });
    expect(retryAfterMs(h('2'), now)).toBe(2000);
    expect(retryAfterMs(h(' 120 '), now)).toBe(120_000);
    expect(retryAfterMs(h('Sat, 05 Dec 2026 08:00:05 GMT'), now)).toBe(5000);
    expect(retryAfterMs(h('Saturday, 05-Dec-26 08:00:05 GMT'), now)).toBe(5000);
    expect(retryAfterMs(h('Sat Dec  5 08:00:05 2026'), now)).toBe(5000);
    // Read against the answer's Date: its clock is 10 s behind ours, the wait is still 5 s.
    expect(retryAfterMs(h('Sat, 05 Dec 2026 07:59:55 GMT', 'Sat, 05 Dec 2026 07:59:50 GMT'), now)).toBe(5000);
    for (const nonsense of ['-1', '0', '1.5', 'soon', '0x10', '', 'Sat, 05 Dec 2026 07:59:59 GMT', 'Sat, 05 Dec 2026 08:00:00 GMT', '2026-12-05T08:00:05Z']) {
      expect(retryAfterMs(h(nonsense), now), nonsense).toBeUndefined();
    }
    expect(retryAfterMs(new Headers(), now)).toBeUndefined();
  });
});
