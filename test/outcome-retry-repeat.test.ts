import { describe, expect, it } from 'vitest';
import { SERVICE, testApp } from './support/app.js';

/**
 * A worker's `retry` write-back asks one thing, "back to the head", and stores no outcome: its
 * `reason` is kept nowhere. A repeat of it therefore takes nothing that the first did not, and is
 * 200 whatever its reason (docs/api.md, the outcome write-back); what would contradict it (an
 * outcome that is no retry, under the same lease) is 409 conflict, and a lease superseded by the
 * ticket's next admission is 409 lease_lost.
 */
const t = await testApp();
/** floodgate_settles_total of an item, by status. */
const settled = async (metrics: ReturnType<typeof t.build>['metrics'], item: string) => Object.fromEntries((await metrics.settles.get()).values.filter((v) => v.labels.item === item).map((v) => [v.labels.status, v.value]));

describe('a repeated retry write-back', () => {
  it('is 200 under the same lease whatever its reason while the ticket waits; an outcome after it is 409 conflict; after the next admission the old lease is lost', async () => {
    const { call, metrics } = t.build();
    await call('PUT', '/v1/items/again', { handler: 'external' });
    const joined = await call('POST', '/v1/items/again/tickets', { userId: 'u1' }, SERVICE);
    const [p] = (await call('POST', '/v1/items/again/pull', {}, SERVICE)).body.tickets;
    expect(p.ticketId).toBe(joined.body.ticketId);
    const outcome = (body: Record<string, unknown>) => call('POST', `/v1/tickets/${p.ticketId}/outcome`, { leaseId: p.leaseId, ...body }, SERVICE);
    const first = await outcome({ status: 'failed', reason: 'downstream_busy', retry: true });
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ state: 'waiting', position: 1 });
    expect(first.body.outcome).toBeUndefined();
    // The same retry again, and again with another reason (a worker that rebuilt its message): taken, nothing changes.
    expect((await outcome({ status: 'failed', reason: 'downstream_busy', retry: true })).status).toBe(200);
    const other = await outcome({ status: 'failed', reason: 'timeout after 5000 ms', retry: true });
    expect(other.status).toBe(200);
    expect(other.body).toMatchObject({ state: 'waiting', position: 1 });
    expect(other.body.outcome).toBeUndefined();
    // An outcome that is no retry, under the retried lease: another answer, refused; the ticket still waits.
    for (const body of [{ status: 'failed', reason: 'downstream_busy' }, { status: 'succeeded' }, { status: 'rejected', reason: 'no' }]) {
      const r = await outcome(body);
      expect([r.status, r.body.error?.code]).toEqual([409, 'conflict']);
    }
    expect((await call('GET', `/v1/tickets/${p.ticketId}`, undefined, null)).body.state).toBe('waiting');
    // Handed out again: the first lease is superseded, a retry under it is no repeat any more.
    const [again] = (await call('POST', '/v1/items/again/pull', {}, SERVICE)).body.tickets;
    expect(again.ticketId).toBe(p.ticketId);
    expect(again.leaseId).not.toBe(p.leaseId);
    const stale = await outcome({ status: 'failed', reason: 'downstream_busy', retry: true });
    expect([stale.status, stale.body.error?.code]).toEqual([409, 'lease_lost']);
    expect((await call('POST', `/v1/tickets/${p.ticketId}/outcome`, { leaseId: again.leaseId, status: 'succeeded' }, SERVICE)).status).toBe(200);
    // The same outcome again (a worker that heard no answer): 200 as the first, counted once, as
    // the retry and its repeats were (each was counted: 3 retries and 2 outcomes for 1 and 1).
    expect((await call('POST', `/v1/tickets/${p.ticketId}/outcome`, { leaseId: again.leaseId, status: 'succeeded' }, SERVICE)).status).toBe(200);
    expect(await settled(metrics, 'again')).toEqual({ retry: 1, succeeded: 1 });
  });

  it('after a stored outcome, a retry under the same lease is 409 conflict and the outcome stands', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/ended', { handler: 'external' });
    await call('POST', '/v1/items/ended/tickets', { userId: 'u1' }, SERVICE);
    const [p] = (await call('POST', '/v1/items/ended/pull', {}, SERVICE)).body.tickets;
    expect((await call('POST', `/v1/tickets/${p.ticketId}/outcome`, { leaseId: p.leaseId, status: 'failed', reason: 'card_declined' }, SERVICE)).status).toBe(200);
    const retry = await call('POST', `/v1/tickets/${p.ticketId}/outcome`, { leaseId: p.leaseId, status: 'failed', reason: 'card_declined', retry: true }, SERVICE);
    expect([retry.status, retry.body.error?.code]).toEqual([409, 'conflict']);
    expect((await call('GET', `/v1/tickets/${p.ticketId}`, undefined, null)).body).toMatchObject({ state: 'failed', outcome: { status: 'failed', reason: 'card_declined' } });
  });
});
