import { describe, expect, it } from 'vitest';
import { SERVICE, testApp } from './support/app.js';

/** An outside worker writing a ticket's outcome back: what its answer says is what happened. */
const t = await testApp();

describe('outcome writeback', () => {
  it.each([1, 4])('an id mistyped in its binding half (lines: %i) changes nothing and answers 404; the real id then writes', async (lines) => {
    const { call } = t.build();
    await call('PUT', '/v1/items/e', { handler: 'external', lines });
    await call('POST', '/v1/items/e/tickets', { userId: 'u1' }, SERVICE);
    const [p] = (await call('POST', '/v1/items/e/pull', {}, SERVICE)).body.tickets;
    // The seq half of the tag intact, the binding half not: the id of no ticket. (Not the last
    // character: of its six bits only two count, and A and B decode alike.)
    const i = p.ticketId.length - 6;
    const typo = p.ticketId.slice(0, i) + (p.ticketId[i] === 'A' ? 'B' : 'A') + p.ticketId.slice(i + 1);
    const wrote = await call('POST', `/v1/tickets/${typo}/outcome`, { leaseId: p.leaseId, status: 'rejected', reason: 'out_of_stock' }, SERVICE);
    expect(wrote.status).toBe(404);
    expect(wrote.body.error.code).toBe('ticket_not_found');
    expect((await call('GET', `/v1/tickets/${p.ticketId}`, undefined, null)).body.state).toBe('admitted');
    const real = await call('POST', `/v1/tickets/${p.ticketId}/outcome`, { leaseId: p.leaseId, status: 'succeeded', result: { orderId: 'A1' } }, SERVICE);
    expect(real.status).toBe(200);
    expect((await call('GET', `/v1/tickets/${p.ticketId}`, undefined, null)).body).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'A1' } } });
  });
  it('the same outcome again under the same lease is 200; the same status with another result or reason is 409, and the first stands', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/twice', { handler: 'external' });
    await call('POST', '/v1/items/twice/tickets', { userId: 'u1' }, SERVICE);
    await call('POST', '/v1/items/twice/tickets', { userId: 'u2' }, SERVICE);
    const [p, q] = (await call('POST', '/v1/items/twice/pull', { max: 2 }, SERVICE)).body.tickets;
    const a1 = { leaseId: p.leaseId, status: 'succeeded', result: { orderId: 'A1' } };
    expect((await call('POST', `/v1/tickets/${p.ticketId}/outcome`, a1, SERVICE)).status).toBe(200);
    expect((await call('POST', `/v1/tickets/${p.ticketId}/outcome`, a1, SERVICE)).status).toBe(200);
    const a2 = await call('POST', `/v1/tickets/${p.ticketId}/outcome`, { ...a1, result: { orderId: 'A2' } }, SERVICE);
    expect([a2.status, a2.body.error?.code]).toEqual([409, 'conflict']);
    const r1 = { leaseId: q.leaseId, status: 'rejected', reason: 'limit_reached' };
    expect((await call('POST', `/v1/tickets/${q.ticketId}/outcome`, r1, SERVICE)).status).toBe(200);
    expect((await call('POST', `/v1/tickets/${q.ticketId}/outcome`, { ...r1, reason: 'fraud' }, SERVICE)).status).toBe(409);
    const [vp, vq] = await Promise.all([p, q].map((x) => call('GET', `/v1/tickets/${x.ticketId}`, undefined, null).then((r) => r.body)));
    expect(vp.outcome.result).toEqual({ orderId: 'A1' });
    expect(vq.outcome.reason).toBe('limit_reached');
  });
  it('a reason with a control character is 400 and writes nothing; the same code without it writes', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/ctl', { handler: 'external' });
    await call('POST', '/v1/items/ctl/tickets', { userId: 'u1' }, SERVICE);
    const [p] = (await call('POST', '/v1/items/ctl/pull', {}, SERVICE)).body.tickets;
    // Stored as given before (a fuzzing run), shown to the user and in operators' logs and console.
    for (const reason of ['out\tof_stock', 'x\u001b[31m', 'a\nb', 'c\u0085']) {
      const r = await call('POST', `/v1/tickets/${p.ticketId}/outcome`, { leaseId: p.leaseId, status: 'rejected', reason }, SERVICE);
      expect([r.status, r.body.error?.code], JSON.stringify(reason)).toEqual([400, 'invalid_request']);
    }
    expect((await call('GET', `/v1/tickets/${p.ticketId}`, undefined, null)).body.state).toBe('admitted');
    const ok = await call('POST', `/v1/tickets/${p.ticketId}/outcome`, { leaseId: p.leaseId, status: 'rejected', reason: 'out_of_stock' }, SERVICE);
    expect(ok.body).toMatchObject({ state: 'rejected', outcome: { reason: 'out_of_stock' } });
  });
  it("a blocked user's ticket back at the head after its lease ran out waits in doubt, and the worker's late write-back is taken", async () => {
    const { call, queue } = t.build();
    await call('PUT', '/v1/items/late', { handler: 'external' });
    const j = await call('POST', '/v1/items/late/tickets', { userId: 'u1' }, SERVICE);
    const [adm] = await queue.admissions.admit('late', 1, 200);
    // The worker did the work, but its write-back is late: the lease ran out and the ticket went back.
    while (Date.now() <= Date.parse(adm.leaseExpiresAt) + 5) await new Promise((r) => setTimeout(r, 20));
    await queue.admissions.sweep();
    expect((await call('PUT', '/v1/items/late/blocks/u1')).status).toBe(200);
    await queue.admissions.admit('late', 1, 60_000);
    expect((await call('GET', `/v1/tickets/${j.body.ticketId}`, undefined, null)).body.state).toBe('admitted');
    const wb = await call('POST', `/v1/tickets/${j.body.ticketId}/outcome`, { leaseId: adm.leaseId, status: 'succeeded', result: { ref: 'done' } }, SERVICE);
    expect(wb.status).toBe(200);
    expect((await call('GET', `/v1/tickets/${j.body.ticketId}`, undefined, null)).body).toMatchObject({ state: 'succeeded', outcome: { result: { ref: 'done' } } });
  });
});
