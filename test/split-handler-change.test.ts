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
  it('is refused (409) when a ticket joined and was pulled on another sub-line after the first check', async () => {
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
    const change = await call('PUT', `/v1/items/${item}`, { handler: 'webhook', config: { url: 'http://127.0.0.1:2/x' }, lines: 2 });
    expect(pulled).toEqual([user]);
    expect([change.status, change.body.error?.code]).toEqual([409, 'conflict']);
    expect((await call('GET', `/v1/items/${item}`)).body.handler).toBe('external');
  });
});
