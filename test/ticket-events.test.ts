import { describe, expect, it } from 'vitest';
import { SERVICE, testApp } from './support/app.js';
import { followTicket } from './support/ticket-stream.js';

const t = await testApp();

const follow = followTicket;

const join = (call: ReturnType<typeof t.build>['call'], item: string, userId: string) => call('POST', `/v1/items/${item}/tickets`, { userId }, SERVICE).then((r) => r.body);

describe('ticket events (SSE)', () => {
  it('answers 404 ticket_not_found as JSON before any stream for ids it did not issue', async () => {
    const { app, call } = t.build();
    await call('PUT', '/v1/items/a', { handler: 'external' });
    const real = (await join(call, 'a', 'u1')).ticketId as string;
    for (const id of [real.slice(0, -2) + (real.endsWith('AA') ? 'BB' : 'AA'), 'x', 'b'.repeat(3000)]) {
      const res = await app.request(`/v1/tickets/${encodeURIComponent(id)}/events`);
      expect(res.status).toBe(404);
      expect(res.headers.get('content-type')).toContain('application/json');
      expect((await res.json()).error.code).toBe('ticket_not_found');
    }
  });

  it('sends the view at once, then position drops, then the terminal view, and closes', async () => {
    const { app, call } = t.build();
    await call('PUT', '/v1/items/a', { handler: 'external', gate: { mode: 'manual', rate: 1000 } });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await join(call, 'a', `u${i}`)).ticketId);
    const s = follow(app, ids[4]);
    expect((await s.res).headers.get('content-type')).toContain('text/event-stream');
    expect(await s.next()).toMatchObject({ state: 'waiting', position: 5, ticketId: ids[4] });
    await call('POST', '/v1/items/a/pull', { max: 2 }, SERVICE);
    expect(await s.next()).toMatchObject({ state: 'waiting', position: 3 });
    await call('DELETE', '/v1/items/a');
    expect(await s.next()).toMatchObject({ state: 'cancelled', outcome: { status: 'cancelled' } });
    await s.done;
    expect(await s.next()).toBeNull();
  });

  it('follows an admitted ticket to its outcome, and a terminal ticket gets one event', async () => {
    const { app, call } = t.build();
    await call('PUT', '/v1/items/a', { handler: 'external' });
    const id = (await join(call, 'a', 'u1')).ticketId;
    const s = follow(app, id);
    expect(await s.next()).toMatchObject({ state: 'waiting', position: 1 });
    const [pulled] = (await call('POST', '/v1/items/a/pull', { max: 1 }, SERVICE)).body.tickets;
    expect(await s.next()).toMatchObject({ state: 'admitted' });
    await call('POST', `/v1/tickets/${id}/outcome`, { leaseId: pulled.leaseId, status: 'succeeded', result: { orderId: 'A1' } }, SERVICE);
    expect(await s.next()).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'A1' } } });
    await s.done;
    const again = follow(app, id);
    await again.done;
    expect(again.views.map((v) => v.state)).toEqual(['succeeded']);
  });

  it('tells every waiting watcher of a sell-out from one item refresh, without a Redis read per ticket', async () => {
    const { app, call, queue } = t.build({ cacheMs: 100 });
    await call('PUT', '/v1/items/a', { handler: 'external' });
    const ids: string[] = [];
    for (let i = 0; i < 150; i++) ids.push((await join(call, 'a', `u${i}`)).ticketId);
    // The first one is admitted before the cut: it must not be told it was sold out.
    await call('POST', '/v1/items/a/pull', { max: 1 }, SERVICE);
    await new Promise((r) => setTimeout(r, 150)); // past cacheMs: the polls' cached view shows the admission
    const streams = ids.map((id) => follow(app, id));
    const firsts = await Promise.all(streams.map((s) => s.next()));
    expect(firsts[0].state).toBe('admitted');
    expect(firsts.slice(1).every((v) => v.state === 'waiting')).toBe(true);
    let perTicketReads = 0;
    const status = queue.tickets.status.bind(queue.tickets);
    queue.tickets.status = (id) => ((perTicketReads += 1), status(id));
    await queue.definitions.cut('a', 'sold_out');
    const ends = await Promise.all(streams.slice(1).map(async (s) => {
      let v;
      while ((v = await s.next()) && v.state === 'waiting');
      return v;
    }));
    expect(ends.every((v) => v?.state === 'rejected' && v.outcome.reason === 'sold_out')).toBe(true);
    expect(streams[0].views.map((v) => v.state)).toEqual(['admitted']);
    // Only the admitted ticket's stream may read Redis (the cache cannot tell its fate).
    expect(perTicketReads).toBeLessThanOrEqual(20);
  });

  it('does no per-watcher work while the line stands still, and visits the watchers again when it moves', async () => {
    const { app, call, queue } = t.build({ cacheMs: 50 });
    await call('PUT', '/v1/items/a', { handler: 'external', gate: { mode: 'manual', rate: 1000 } });
    const ids: string[] = [];
    for (let i = 0; i < 100; i++) ids.push((await join(call, 'a', `u${i}`)).ticketId);
    const streams = ids.map((id) => follow(app, id));
    expect((await Promise.all(streams.map((s) => s.next()))).every((v) => v.state === 'waiting')).toBe(true);
    let looks = 0;
    const cachedView = queue.tickets.cachedView.bind(queue.tickets);
    queue.tickets.cachedView = (id) => ((looks += 1), cachedView(id));
    // 2.5 s of a still line: each watcher is looked at once at most, when its first pollAfterMs
    // (1 s) is over, then parked until the head moves. (Looking every 250 ms tick would be ~800.)
    await new Promise((r) => setTimeout(r, 2500));
    expect(looks).toBeLessThanOrEqual(100);
    // The head moves: every watcher is told its new place.
    await call('POST', '/v1/items/a/pull', { max: 10 }, SERVICE);
    const moved = await Promise.all(streams.slice(10).map((s) => s.next()));
    expect(moved.map((v) => v.position)).toEqual(Array.from({ length: 90 }, (_, i) => i + 1));
  });
});
