import { describe, expect, it } from 'vitest';
import { SERVICE, testApp } from './support/app.js';

/** An outside worker writing a ticket's outcome back: what its answer says is what happened. */
const t = await testApp();

describe('outcome writeback', () => {
  it.each([1, 4])('an id mistyped in its last character (lines: %i) changes nothing and answers 404; the real id then writes', async (lines) => {
    const { call } = t.build();
    await call('PUT', '/v1/items/e', { handler: 'external', lines });
    await call('POST', '/v1/items/e/tickets', { userId: 'u1' }, SERVICE);
    const [p] = (await call('POST', '/v1/items/e/pull', {}, SERVICE)).body.tickets;
    // The seq half of the tag intact, the binding half not: the id of no ticket.
    const last = p.ticketId.slice(-1);
    const typo = p.ticketId.slice(0, -1) + (last === 'A' ? 'B' : 'A');
    const wrote = await call('POST', `/v1/tickets/${typo}/outcome`, { leaseId: p.leaseId, status: 'rejected', reason: 'out_of_stock' }, SERVICE);
    expect(wrote.status).toBe(404);
    expect(wrote.body.error.code).toBe('ticket_not_found');
    expect((await call('GET', `/v1/tickets/${p.ticketId}`, undefined, null)).body.state).toBe('admitted');
    const real = await call('POST', `/v1/tickets/${p.ticketId}/outcome`, { leaseId: p.leaseId, status: 'succeeded', result: { orderId: 'A1' } }, SERVICE);
    expect(real.status).toBe(200);
    expect((await call('GET', `/v1/tickets/${p.ticketId}`, undefined, null)).body).toMatchObject({ state: 'succeeded', outcome: { result: { orderId: 'A1' } } });
  });
});
