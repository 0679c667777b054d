import { describe, expect, it } from 'vitest';
import { subLineOf } from '../src/queue/split-line.js';
import { SERVICE, testApp } from './support/app.js';

/**
 * A split item's handler cannot change under a ticket that joined, and was handed out, on another
 * sub-line than the first while the change was on its way (define-5.lua sees only sub-line 0's
 * counts): that ticket, out under the old handler, would run again under the new one.
 */
const t = await testApp();

describe("a split item's handler change", () => {
  /** A PUT of `change` on a split external item while a user joins on sub-line 1 and a worker pulls the ticket. */
  async function racedChange(change: Record<string, unknown>) {
    const { call, store } = t.build();
    const item = t.uniqueItem();
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'external', lines: 2 })).status).toBe(201);
    const user = Array.from({ length: 50 }, (_, i) => `hc-${i}`).find((u) => subLineOf(u, 2) === 1)!;
    // While the change writes its row to Postgres, a user joins on sub-line 1 and a worker pulls the ticket.
    const upsert = store.upsert.bind(store);
    let pulled: string[] = [];
    store.upsert = async (...args: Parameters<typeof store.upsert>) => {
      store.upsert = upsert;
      expect((await call('POST', `/v1/items/${item}/tickets`, { userId: user }, SERVICE)).status).toBe(202);
      pulled = (await call('POST', `/v1/items/${item}/pull`, { max: 5 }, SERVICE)).body.tickets.map((x: { userId: string }) => x.userId);
      return upsert(...args);
    };
    const answer = await call('PUT', `/v1/items/${item}`, { handler: 'webhook', config: { url: 'http://127.0.0.1:2/x' }, lines: 2, ...change });
    expect(pulled).toEqual([user]);
    expect([answer.status, answer.body.error?.code]).toEqual([409, 'conflict']);
    expect((await call('GET', `/v1/items/${item}`)).body.handler).toBe('external');
    return { call, item };
  }

  it('is refused (409) when a ticket joined and was pulled on another sub-line after the first check', async () => {
    await racedChange({});
  });

  it('refused so, leaves no audit entry of the gate it would have set', async () => {
    const { call, item } = await racedChange({ gate: { mode: 'manual', rate: 7 } });
    expect((await call('GET', `/v1/items/${item}`)).body.gate).not.toMatchObject({ rate: 7 });
    const audit = await call('GET', `/v1/items/${item}/audit`);
    expect(audit.status).toBe(200);
    // (Before: an `operator_change` entry to rate 7, for a change that did not happen.)
    expect(audit.body.entries.filter((e: { to?: { rate?: number } }) => e.to?.rate === 7)).toEqual([]);
    expect(audit.body.entries).toHaveLength(1); // its creation
  });
});
