import { describe, expect, it } from 'vitest';
import { itemKeys } from '../src/redis/keys.js';
import { createLedgerFeed } from '../src/service/outcome-ledger-feed.js';
import { SERVICE, testApp } from './support/app.js';

const t = await testApp();

describe("the outcome ledger's feed (outcome-ledger-feed.ts)", () => {
  it("asks a stream only for new entries while it owes none, its own again after a failed round, and a dead daemon's every 5 s", async () => {
    const { call, queue, prefix } = t.build();
    const itemId = t.uniqueItem();
    expect((await call('PUT', `/v1/items/${itemId}`, { handler: 'external' })).status).toBe(201);
    const end = async (n: number) => {
      for (let i = 0; i < n; i++) await call('POST', `/v1/items/${itemId}/tickets`, { userId: `u${Math.random()}` }, SERVICE);
      for (const g of await queue.admissions.admit(itemId, n, 30_000)) await queue.admissions.settle(g.ticketId, { leaseId: g.leaseId, status: 'succeeded', result: { ok: 1 } });
    };
    const snap = async () => (await queue.items.item(itemId, { fresh: true }))!.snap;
    const done = itemKeys(prefix, itemId).done;

    // A connection of its own whose stream commands are counted.
    const conn = t.redis.duplicate();
    const sent: string[] = [];
    const send = conn.sendCommand.bind(conn);
    conn.sendCommand = ((command: { name: string; args: unknown[] }, ...rest: unknown[]) => {
      if (command.name.startsWith('x')) sent.push(command.name === 'xreadgroup' ? `xreadgroup ${String(command.args.at(-1))}` : command.name);
      return send(command as never, ...(rest as []));
    }) as typeof conn.sendCommand;
    let now = 1_000_000;
    const feed = createLedgerFeed(conn, prefix, 'feed-a', () => now);
    try {
      await end(3);
      // First round: a dead daemon's entries are asked for once, then new ones.
      let r = await feed.read(await snap(), 100);
      expect(r.ids).toHaveLength(3);
      expect(sent.filter((c) => c !== 'xgroup')).toEqual(['xautoclaim', 'xreadgroup >']);
      // Not acknowledged (a round whose rows did not commit): the next round reads its own first.
      sent.length = 0;
      r = await feed.read(await snap(), 100);
      expect(r.ids).toHaveLength(3);
      expect(sent).toEqual(['xreadgroup 0', 'xreadgroup >']);
      await feed.ack((await snap()).def, r.ids);
      // Owing nothing: new entries only, one call a round.
      sent.length = 0;
      await end(2);
      r = await feed.read(await snap(), 100);
      expect(r.ids).toHaveLength(2);
      await feed.ack((await snap()).def, r.ids);
      expect(await feed.read(await snap(), 100)).toMatchObject({ ids: [] });
      expect(sent.filter((c) => c.startsWith('xreadgroup') || c === 'xautoclaim')).toEqual(['xreadgroup >', 'xreadgroup >']);

      // A dead daemon's entries (handed to it 60 s ago, never acknowledged) are claimed at the next
      // ask, 5 s after the last one, not at every round.
      await end(2);
      const other = createLedgerFeed(t.redis, prefix, 'dead-daemon');
      const lost = await other.read(await snap(), 100);
      expect(lost.ids).toHaveLength(2);
      await t.redis.xclaim(done, 'ledger', 'dead-daemon', 0, ...lost.ids, 'IDLE', 60_000);
      sent.length = 0;
      now += 4_000;
      expect(await feed.read(await snap(), 100)).toMatchObject({ ids: [] });
      expect(sent).toEqual(['xreadgroup >']);
      now += 1_000;
      r = await feed.read(await snap(), 100);
      expect(r.ids).toEqual(lost.ids);
      expect(r.tickets).toHaveLength(2);
      await feed.ack((await snap()).def, r.ids);
      expect(await t.redis.xlen(done)).toBe(0);
      const pending = (await t.redis.xpending(done, 'ledger')) as [number, ...unknown[]];
      expect(pending[0]).toBe(0);
    } finally {
      conn.disconnect();
    }
  });
  it("leaves alone the state of the tickets that took its entries' seqs after a Redis loss between the read and the ack", async () => {
    const { call, queue, prefix } = t.build();
    const itemId = t.uniqueItem();
    expect((await call('PUT', `/v1/items/${itemId}`, { handler: 'external' })).status).toBe(201);
    await call('POST', `/v1/items/${itemId}/tickets`, { userId: 'old' }, SERVICE);
    for (const g of await queue.admissions.admit(itemId, 1, 30_000)) await queue.admissions.settle(g.ticketId, { leaseId: g.leaseId, status: 'succeeded' });
    const snap = async () => (await queue.items.item(itemId, { fresh: true }))!.snap;
    const feed = createLedgerFeed(t.redis, prefix, 'feed-loss');
    const r = await feed.read(await snap(), 100);
    expect(r.seqsOf).toEqual([[1]]);
    // The rows commit slowly; meanwhile Redis loses the item, it is made again, and a new user's
    // join takes seq 1 with a payload.
    const k = itemKeys(prefix, itemId);
    await t.redis.unlink(...(await t.redis.keys(`${k.base}*`)));
    expect((await call('PUT', `/v1/items/${itemId}`, { handler: 'external' })).status).toBe(201);
    expect((await call('POST', `/v1/items/${itemId}/tickets`, { userId: 'new', payload: { addressId: 7 } }, SERVICE)).status).toBe(202);
    await feed.ack(r.snap!.def, r.ids, r.seqsOf);
    expect(await t.redis.hget(k.payloads, '1')).toBe('{"addressId":7}');
    const [pulled] = await queue.admissions.admit(itemId, 1, 30_000);
    expect(pulled).toMatchObject({ userId: 'new', payload: { addressId: 7 } });
  });
});
