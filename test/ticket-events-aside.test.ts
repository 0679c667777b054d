import { describe, expect, it } from 'vitest';
import { SERVICE, testApp } from './support/app.js';
import { followTicket } from './support/ticket-stream.js';

const t = await testApp();
const join = (call: ReturnType<typeof t.build>['call'], item: string, userId: string) => call('POST', `/v1/items/${item}/tickets`, { userId }, SERVICE).then((r) => r.body);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** An external item at a fast manual gate and `n` users in its line: their ticket ids in order. */
async function lineOf(call: ReturnType<typeof t.build>['call'], item: string, n: number) {
  await call('PUT', `/v1/items/${item}`, { handler: 'external', gate: { mode: 'manual', rate: 1000 } });
  const ids: string[] = [];
  for (let i = 0; i < n; i++) ids.push((await join(call, item, `u${i}`)).ticketId);
  return ids;
}
/** Workers write back `retry` for pulled tickets: they go back to the head. */
async function retryAll(call: ReturnType<typeof t.build>['call'], pulled: { ticketId: string; leaseId: string }[]) {
  for (const p of pulled) expect((await call('POST', `/v1/tickets/${p.ticketId}/outcome`, { leaseId: p.leaseId, status: 'failed', reason: 'busy', retry: true }, SERVICE)).status).toBe(200);
}

/**
 * A ticket's event stream tells a drop of its place that no move of the head caused (a cancel
 * ahead, returned tickets admitted again) within its pollAfterMs, as a poll shows it: its watcher,
 * parked while the line stood still, waited for its 10 s heartbeat.
 */
describe('event stream: places that drop with the head still', () => {
  it('a cancel ahead reaches a parked stream within a few pollAfterMs, as a poll shows it', async () => {
    const { app, call } = t.build({ cacheMs: 50 });
    const ids = await lineOf(call, 'a', 5);
    const s = followTicket(app, ids[4]);
    expect(await s.next()).toMatchObject({ position: 5, pollAfterMs: 1000 });
    await sleep(1600); // past its pollAfterMs with a still line: parked
    expect((await call('DELETE', `/v1/tickets/${ids[0]}`, undefined, null)).body.state).toBe('cancelled');
    const polled = (await call('GET', `/v1/tickets/${ids[4]}`, undefined, null)).body;
    expect(polled.position).toBe(4);
    const next = await s.next(4000);
    expect(next).toMatchObject({ position: 4 });
  }, 30_000);

  it('returned tickets admitted again (served unchanged) reach a parked stream', async () => {
    const { app, call } = t.build({ cacheMs: 50 });
    const ids = await lineOf(call, 'b', 5);
    const pulled = (await call('POST', '/v1/items/b/pull', { max: 2 }, SERVICE)).body.tickets;
    await retryAll(call, pulled);
    await sleep(100);
    const before = (await call('GET', `/v1/tickets/${ids[4]}`, undefined, null)).body;
    expect(before.position).toBe(5); // 2 returned + places 1..3
    const s = followTicket(app, ids[4]);
    expect(await s.next()).toMatchObject({ position: 5 });
    await sleep(1600);
    await call('POST', '/v1/items/b/pull', { max: 2 }, SERVICE); // the two returned ones
    await sleep(100);
    expect((await call('GET', `/v1/tickets/${ids[4]}`, undefined, null)).body.position).toBe(3);
    const next = await s.next(4000);
    expect(next).toMatchObject({ position: 3 });
  }, 30_000);

  it('a place that rises (tickets ahead returned to the head) is told as a poll shows it', async () => {
    const { app, call } = t.build({ cacheMs: 50 });
    const ids = await lineOf(call, 'c', 3);
    const pulled = (await call('POST', '/v1/items/c/pull', { max: 2 }, SERVICE)).body.tickets;
    expect(pulled).toHaveLength(2);
    await sleep(100); // past the item view's cacheMs
    const s = followTicket(app, ids[2]);
    expect(await s.next()).toMatchObject({ position: 1 });
    await retryAll(call, pulled);
    await sleep(100);
    expect((await call('GET', `/v1/tickets/${ids[2]}`, undefined, null)).body.position).toBe(3);
    // By its next visit (pollAfterMs, 1 s, as a poll would see it): unsent, the stream showed
    // place 1 until the next drop or its 10 s heartbeat.
    expect(await s.next(2500)).toMatchObject({ position: 3 });
  }, 30_000);
});
