import { describe, expect, it } from 'vitest';
import { SERVICE, testApp } from './support/app.js';
import { followTicket } from './support/ticket-stream.js';

const t = await testApp();
const join = (call: ReturnType<typeof t.build>['call'], item: string, userId: string, payload?: unknown) =>
  call('POST', `/v1/items/${item}/tickets`, payload === undefined ? { userId } : { userId, payload }, SERVICE);

describe('tickets through the API', () => {
  it('gives 200 concurrent joiners positions exactly 1..200, with Location headers', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/a', { handler: 'external' });
    const res = await Promise.all(Array.from({ length: 200 }, (_, i) => join(call, 'a', `user-${i}`)));
    expect(res.every((r) => r.status === 202)).toBe(true);
    expect(res[0].headers.get('location')).toBe(`/v1/tickets/${res[0].body.ticketId}`);
    const positions = res.map((r) => r.body.position).sort((x, y) => x - y);
    expect(positions).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
    const polled = await Promise.all(res.map((r) => call('GET', `/v1/tickets/${r.body.ticketId}`, undefined, null)));
    expect(polled.map((p) => p.body.position)).toEqual(res.map((r) => r.body.position));
  });

  it('answers a repeated join with 200 and the same ticket', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/a', { handler: 'external' });
    const first = await join(call, 'a', 'u1', { addressId: 7 });
    const again = await join(call, 'a', 'u1');
    expect(again.status).toBe(200);
    expect(again.body.ticketId).toBe(first.body.ticketId);
  });

  it('answers a repeated join of a waiting ticket with what its poll answers, from the cached view or from Redis', async () => {
    const clock = t.manualClock();
    const { call } = t.build({ clock, cacheMs: 1000 });
    await call('PUT', '/v1/items/a', { handler: 'external', gate: { mode: 'manual', rate: 5 } });
    for (let i = 0; i < 5; i++) await join(call, 'a', `u${i}`);
    clock.advance(1001); // the view read before the joins is old: the next one holds them all
    const poll = await call('GET', `/v1/tickets/${(await join(call, 'a', 'u3')).body.ticketId}`, undefined, null);
    expect(poll.body).toMatchObject({ state: 'waiting', position: 4 });
    const cached = await join(call, 'a', 'u3');
    expect(cached.status).toBe(200);
    expect(cached.body).toEqual(poll.body);
    clock.advance(1001); // old again: the repeated join reads Redis
    const read = await join(call, 'a', 'u3');
    expect(read.body).toEqual({ ...poll.body, etaMs: read.body.etaMs });
    expect(read.body.etaMs).toBeGreaterThan(0);
  });

  it('reports waiting tickets with position, eta, pollAfterMs growing with distance', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/a', { handler: 'external', gate: { mode: 'manual', rate: 10 } });
    const ids: string[] = [];
    for (let i = 0; i < 300; i++) ids.push((await join(call, 'a', `u${i}`)).body.ticketId);
    const near = (await call('GET', `/v1/tickets/${ids[0]}`, undefined, null)).body;
    const far = (await call('GET', `/v1/tickets/${ids[299]}`, undefined, null)).body;
    expect(near).toMatchObject({ state: 'waiting', position: 1, etaMs: 100, pollAfterMs: 1000, itemId: 'a', userId: 'u0' });
    expect(far.position).toBe(300);
    expect(far.etaMs).toBe(30_000);
    expect(far.pollAfterMs).toBeGreaterThan(near.pollAfterMs);
    expect(new Date(near.createdAt).getTime()).toBeLessThanOrEqual(Date.now());
  });

  it('answers 404 ticket_not_found for ids it did not issue, whatever their shape', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/a', { handler: 'external' });
    const real = (await join(call, 'a', 'u1')).body.ticketId as string;
    const forged = real.slice(0, -2) + (real.endsWith('AA') ? 'BB' : 'AA');
    const otherSeq = real.replace(/\.1\./, '.2.');
    for (const id of [forged, otherSeq, 'x', 'a'.repeat(400), 'YQ.1.AAAAAAAAAAAAAAAAAAAAAA', '%00', 'b'.repeat(3000), '.'.repeat(5)]) {
      const r = await call('GET', `/v1/tickets/${encodeURIComponent(id)}`, undefined, null);
      expect(r.status, id).toBe(404);
      expect(r.body.error.code).toBe('ticket_not_found');
    }
  });

  it('lets the holder cancel a waiting ticket (a repeat reads it again), and join again', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/a', { handler: 'external' });
    const a = (await join(call, 'a', 'u1')).body;
    const b = (await join(call, 'a', 'u2')).body;
    const c = await call('DELETE', `/v1/tickets/${a.ticketId}`, undefined, null);
    expect(c.body).toMatchObject({ state: 'cancelled', outcome: { status: 'cancelled' } });
    // A second DELETE (a client retrying after a lost answer) reads the cancelled ticket again.
    const again = await call('DELETE', `/v1/tickets/${a.ticketId}`, undefined, null);
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ state: 'cancelled' });
    // The cancelled ticket ahead no longer counts: u2 is next.
    expect((await call('GET', `/v1/tickets/${b.ticketId}`, undefined, null)).body.position).toBe(1);
    const pulled = await call('POST', '/v1/items/a/pull', { max: 5 }, SERVICE);
    expect(pulled.body.tickets.map((x: { userId: string }) => x.userId)).toEqual(['u2']);
    const rejoin = await join(call, 'a', 'u1');
    expect(rejoin.status).toBe(202);
  });

  it('answers a poll after a refused cancel with the ticket as the refusal found it, not the cached view from before its turn came', async () => {
    // A cached view young enough to answer polls (cacheMs) still shows the ticket waiting after
    // its pull; the cancel's 409 says it is not. The poll that follows (the waiting page's, to show
    // why) must not say "waiting" again.
    const clock = t.manualClock();
    const { call } = t.build({ clock, cacheMs: 5000 });
    await call('PUT', '/v1/items/a', { handler: 'external', gate: { mode: 'manual', rate: 1000 } });
    const a = (await join(call, 'a', 'u1')).body;
    clock.advance(5001); // the view read before the join is old: the poll reads one that holds it
    expect((await call('GET', `/v1/tickets/${a.ticketId}`, undefined, null)).body.state).toBe('waiting');
    expect((await call('POST', '/v1/items/a/pull', { max: 1 }, SERVICE)).body.tickets.map((x: { ticketId: string }) => x.ticketId)).toEqual([a.ticketId]);
    const c = await call('DELETE', `/v1/tickets/${a.ticketId}`, undefined, null);
    expect([c.status, c.body.error?.code]).toEqual([409, 'not_cancellable']);
    expect((await call('GET', `/v1/tickets/${a.ticketId}`, undefined, null)).body.state).toBe('admitted');
  });

  it('holds a cancel, as a poll, while the reconnect hold lasts (admitHold), and cancels once it ends', async () => {
    // The daemon's hold after a Redis reconnect (daemon.ts fence), pending until released.
    let release!: () => void;
    let hold: Promise<void> | null = null;
    const { call } = t.build({ admitHold: () => hold });
    await call('PUT', '/v1/items/a', { handler: 'external' });
    const a = (await join(call, 'a', 'u1')).body;
    hold = new Promise<void>((r) => (release = r));
    let answered = false;
    const cancel = call('DELETE', `/v1/tickets/${a.ticketId}`, undefined, null).then((r) => ((answered = true), r));
    await new Promise((r) => setTimeout(r, 200));
    expect(answered).toBe(false);
    // Nothing was cancelled meanwhile: the ticket still waits in Redis.
    hold = null;
    expect((await call('GET', `/v1/tickets/${a.ticketId}`, undefined, null)).body.state).toBe('waiting');
    release();
    const c = await cancel;
    expect(c.status).toBe(200);
    expect(c.body).toMatchObject({ state: 'cancelled' });
  });

  it.each(['a poll', "an event stream's first view"])('reads %s again when a reconnect came while it read: the close the hold put back is answered, not the rolled-back `waiting`', async (what) => {
    let hold: Promise<void> | null = null;
    let raised = 0;
    const t1 = t.build({ admitHold: () => hold, reconnects: () => raised });
    await t1.call('PUT', '/v1/items/r', { handler: 'external' });
    const a = (await join(t1.call, 'r', 'u1')).body;
    // The poll's read is answered as Redis had it (waiting) and, before the answer goes out, a
    // reconnect comes: the hold is raised, its check puts an operator's lost close back, and ends.
    const status = t1.queue.tickets.status;
    let reads = 0;
    t1.queue.tickets.status = async (id) => {
      const read = await status(id);
      if (reads++ === 0) {
        let lift!: () => void;
        hold = new Promise<void>((r) => (lift = r));
        raised++;
        void (async () => {
          await t1.queue.definitions.cut('r', 'closed');
          hold = null;
          lift();
        })();
      }
      return read;
    };
    const stream = what === 'a poll' ? null : followTicket(t1.app, a.ticketId);
    const view = stream ? await stream.next() : (await t1.call('GET', `/v1/tickets/${a.ticketId}`, undefined, null)).body;
    expect([reads, view.state, view.outcome?.reason]).toEqual([2, 'cancelled', 'item_closed']); // before: 1 read, 'waiting'
    await stream?.done;
  });

  it('enforces the window (425 not_open with opensAt and now; 410 closed) and capacity (429 queue_full)', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/later', { handler: 'external', opensAt: '2099-01-01T00:00:00Z' });
    const early = await join(call, 'later', 'u1');
    expect(early.status).toBe(425);
    expect(early.body.error.details.opensAt).toBe('2099-01-01T00:00:00.000Z');
    expect(Date.parse(early.body.error.details.now)).toBeGreaterThan(0);
    await call('PUT', '/v1/items/over', { handler: 'external', opensAt: '2020-01-01T00:00:00Z', closesAt: '2020-01-02T00:00:00Z' });
    expect((await join(call, 'over', 'u1')).body.error.code).toBe('closed');
    await call('PUT', '/v1/items/small', { handler: 'external', capacity: 2 });
    await join(call, 'small', 'u1');
    await join(call, 'small', 'u2');
    const full = await join(call, 'small', 'u3');
    expect(full.status).toBe(429);
    expect(full.body.error.code).toBe('queue_full');
    expect(Number(full.headers.get('retry-after'))).toBeGreaterThan(0);
    // A user who already holds a ticket gets it back, full line or not.
    const mine = await join(call, 'small', 'u1');
    expect(mine.status).toBe(200);
    expect(mine.body).toMatchObject({ userId: 'u1', state: 'waiting', position: 1 });
    expect((await join(call, 'nope', 'u1')).body.error.code).toBe('item_not_found');
  });

  it('validates bodies: malformed JSON, wrong types, bad user ids, oversized payloads', async () => {
    const { call, app } = t.build();
    await call('PUT', '/v1/items/a', { handler: 'external' });
    const cases: [unknown, number][] = [
      ['{"userId":', 400],
      [{}, 400],
      [{ userId: '' }, 400],
      [{ userId: 'x'.repeat(129) }, 400],
      [{ userId: 'a\u0007b' }, 400],
      [{ userId: 'u', payload: [1] }, 400],
      [{ userId: 'u', extra: 1 }, 400],
      [{ userId: 'u', payload: { big: 'x'.repeat(9000) } }, 413],
      [{ userId: 'u', payload: { big: 'x'.repeat(20000) } }, 413],
    ];
    for (const [body, status] of cases) {
      const r = await call('POST', '/v1/items/a/tickets', body, SERVICE);
      expect(r.status, JSON.stringify(body).slice(0, 40)).toBe(status);
      expect(r.body.error.code).toBe(status === 400 ? 'invalid_request' : 'payload_too_large');
    }
    expect((await join(call, 'a', '用户-😀'.repeat(10))).status).toBe(202);
    // A body without Content-Length (chunked) is counted as it streams.
    const big = JSON.stringify({ userId: 'u', payload: { big: 'x'.repeat(20000) } });
    const chunked = await app.request('/v1/items/a/tickets', {
      method: 'POST',
      headers: { authorization: `Bearer ${SERVICE}`, 'content-type': 'application/json' },
      body: new ReadableStream({ start: (c) => (c.enqueue(new TextEncoder().encode(big)), c.close()) }),
      duplex: 'half',
    } as RequestInit);
    expect(chunked.status).toBe(413);
    expect((await call('POST', '/v1/items/a/tickets', { userId: 'u' }, null)).status).toBe(401);
  });
});

describe('pull and outcome (external items)', () => {
  it('pulls the head in FIFO order and respects maxInFlight', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/e', { handler: 'external', gate: { mode: 'manual', maxInFlight: 3 } });
    for (let i = 1; i <= 5; i++) await join(call, 'e', `u${i}`, { n: i });
    const first = await call('POST', '/v1/items/e/pull', { max: 10, leaseMs: 5000 }, SERVICE);
    expect(first.body.tickets.map((x: { userId: string }) => x.userId)).toEqual(['u1', 'u2', 'u3']);
    expect(first.body.tickets[0]).toMatchObject({ payload: { n: 1 }, position: 1 });
    expect((await call('POST', '/v1/items/e/pull', { max: 10 }, SERVICE)).body.tickets).toEqual([]);
    const t1 = first.body.tickets[0];
    const done = await call('POST', `/v1/tickets/${t1.ticketId}/outcome`, { leaseId: t1.leaseId, status: 'succeeded', result: { orderId: 'A1' } }, SERVICE);
    expect(done.body).toMatchObject({ state: 'succeeded', outcome: { status: 'succeeded', result: { orderId: 'A1' } } });
    const repeat = await call('POST', `/v1/tickets/${t1.ticketId}/outcome`, { leaseId: t1.leaseId, status: 'succeeded', result: { orderId: 'A1' } }, SERVICE);
    expect(repeat.status).toBe(200);
    const different = await call('POST', `/v1/tickets/${t1.ticketId}/outcome`, { leaseId: t1.leaseId, status: 'failed', reason: 'x' }, SERVICE);
    // Not "lease lost": the lease was right, the outcome differs from the one written.
    expect(different.status).toBe(409);
    expect(different.body.error.code).toBe('conflict');
    expect(different.body.error.message).toMatch(/different outcome/);
    const next = await call('POST', '/v1/items/e/pull', {}, SERVICE);
    expect(next.body.tickets.map((x: { userId: string }) => x.userId)).toEqual(['u4']);
  });

  it('reads an empty body or null as no body, with a JSON type or without one, and still refuses malformed JSON', async () => {
    const { call, app } = t.build();
    // Its own item: the last test's `e` keeps its gate (maxInFlight 3) through a PUT without one.
    await call('PUT', '/v1/items/nobody', { handler: 'external' });
    for (let i = 1; i <= 4; i++) await join(call, 'nobody', `u${i}`);
    const pull = (body: string | undefined, type?: string) =>
      app.request('/v1/items/nobody/pull', { method: 'POST', headers: { authorization: `Bearer ${SERVICE}`, ...(type ? { 'content-type': type } : {}) }, body });
    // docs/api.md: the body may be left out (max 1). A client that sends its JSON type on every
    // request, body or not, got 400 "Malformed JSON".
    // `null`, as the routes without a body take it (a fuzzing run: 400 here, none there).
    for (const [body, type, user] of [[undefined, undefined, 'u1'], ['', 'application/json', 'u2'], ['', 'application/json; charset=utf-8', 'u3'], ['null', 'application/json', 'u4']] as const) {
      const res = await pull(body, type);
      expect(res.status, `${type}: ${await res.clone().text()}`).toBe(200);
      expect((await res.json()).tickets.map((x: { userId: string }) => x.userId)).toEqual([user]);
    }
    for (const body of ['{"max":', ' ', 'null x']) {
      const res = await pull(body, 'application/json');
      expect(res.status, body).toBe(400);
      expect((await res.json()).error.code).toBe('invalid_request');
    }
    expect((await pull('{"max":0}', 'application/json')).status).toBe(400);
    expect((await pull('max=1', 'text/plain')).status).toBe(415);
  });

  it('returns a failed ticket with retry to the head, ahead of later tickets, whose places count it again', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/e', { handler: 'external' });
    for (let i = 1; i <= 3; i++) await join(call, 'e', `u${i}`);
    const [p1] = (await call('POST', '/v1/items/e/pull', { max: 1 }, SERVICE)).body.tickets;
    const u3 = (await join(call, 'e', 'u3')).body;
    expect(u3.position).toBe(2);
    const r = await call('POST', `/v1/tickets/${p1.ticketId}/outcome`, { leaseId: p1.leaseId, status: 'failed', reason: 'db_busy', retry: true }, SERVICE);
    expect(r.body).toMatchObject({ state: 'waiting', position: 1 });
    // u1 at the head again, u2 behind it, u3 third (this test read 2 for u3, beside u2's 2).
    expect((await call('GET', `/v1/tickets/${u3.ticketId}`, undefined, null)).body.position).toBe(3);
    const again = (await call('POST', '/v1/items/e/pull', { max: 2 }, SERVICE)).body.tickets;
    expect(again.map((x: { userId: string }) => x.userId)).toEqual(['u1', 'u2']);
    const stale = await call('POST', `/v1/tickets/${p1.ticketId}/outcome`, { leaseId: p1.leaseId, status: 'succeeded' }, SERVICE);
    expect(stale.body.error.code).toBe('lease_lost');
  });

  it('re-offers a ticket whose lease expired ahead of later tickets, within a second of expiry', async () => {
    const clock = t.manualClock(Date.now());
    const { call, queue } = t.build({ clock });
    await call('PUT', '/v1/items/e', { handler: 'external' });
    for (let i = 1; i <= 3; i++) await join(call, 'e', `u${i}`);
    const [p1] = (await call('POST', '/v1/items/e/pull', { max: 1, leaseMs: 1000 }, SERVICE)).body.tickets;
    clock.advance(1001);
    await queue.admissions.sweep(); // the daemon runs this every 500 ms
    expect((await call('GET', `/v1/tickets/${p1.ticketId}`, undefined, null)).body).toMatchObject({ state: 'waiting', position: 1 });
    const [again] = (await call('POST', '/v1/items/e/pull', { max: 1 }, SERVICE)).body.tickets;
    expect(again.userId).toBe('u1');
    expect(again.leaseId).not.toBe(p1.leaseId);
    const late = await call('POST', `/v1/tickets/${p1.ticketId}/outcome`, { leaseId: p1.leaseId, status: 'succeeded' }, SERVICE);
    expect(late.body.error.code).toBe('lease_lost');
  });

  it('refuses pull and outcome on items whose handler is not external (409 conflict)', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/s', { handler: 'seckill', config: { stock: 1 } });
    const j = (await join(call, 's', 'u1')).body;
    expect((await call('POST', '/v1/items/s/pull', {}, SERVICE)).body.error.code).toBe('conflict');
    expect((await call('POST', `/v1/tickets/${j.ticketId}/outcome`, { leaseId: 'x', status: 'succeeded' }, SERVICE)).body.error.code).toBe('conflict');
    expect((await call('POST', '/v1/items/s/pull', { max: 0 }, SERVICE)).status).toBe(400);
    expect((await call('POST', '/v1/items/s/pull', { leaseMs: 10 }, SERVICE)).status).toBe(400);
    // An id the item did not issue is no ticket (404), and says nothing of the item: a forged one
    // (the item id base64url-encoded, any seq and tag) was answered 409 naming its handler.
    const forged = `${Buffer.from('s').toString('base64url')}.1.${'A'.repeat(22)}`;
    const refused = await call('POST', `/v1/tickets/${forged}/outcome`, { leaseId: 'x', status: 'succeeded' }, SERVICE);
    expect([refused.status, refused.body.error.code, JSON.stringify(refused.body).includes('seckill')]).toEqual([404, 'ticket_not_found', false]);
  });

  it('expires a ticket nobody polled for abandonAfterMs when it reaches the head, and skips it', async () => {
    const clock = t.manualClock(Date.now());
    const { call, queue } = t.build({ clock });
    await call('PUT', '/v1/items/e', { handler: 'external', abandonAfterMs: 60_000 });
    const a = (await join(call, 'e', 'idle')).body;
    const b = (await join(call, 'e', 'active')).body;
    clock.advance(50_000);
    await call('GET', `/v1/tickets/${b.ticketId}`, undefined, null);
    await queue.tickets.flush();
    clock.advance(20_000);
    const got = (await call('POST', '/v1/items/e/pull', { max: 5 }, SERVICE)).body.tickets;
    expect(got.map((x: { userId: string }) => x.userId)).toEqual(['active']);
    expect((await call('GET', `/v1/tickets/${a.ticketId}`, undefined, null)).body).toMatchObject({ state: 'expired', outcome: { reason: 'abandoned' } });
    expect((await call('GET', '/v1/items/e')).body.counts.expired).toBe(1);
  });
});
