import { describe, expect, it } from 'vitest';
import { anonymousKeyName } from '../src/access/keys.js';
import { ticketRef } from '../src/kernel/ticket-ref.js';
import { subLineOf } from '../src/queue/split-line.js';
import { itemKeys, subLineTag } from '../src/redis/keys.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { joinAll, userIds } from './support/joins.js';
import { testRedis } from './support/redis.js';

/**
 * The outcome ledger of items split into sub-lines, through one daemon: every ended ticket gets
 * one `ticket_outcomes` row under the id its user got, its state then leaves Redis, and its poll
 * answers the same terminal view from Postgres once the x hash's TTL (1 s here) ran.
 */
const { redis, newPrefix } = testRedis();
const db = await testDb();
const prefix = newPrefix();
const { call } = await inProcessDaemon({ prefix, databaseUrl: db.url, env: { FLOODGATE_TICKET_STATE_TTL_MS: '1000' } });

type View = { ticketId: string; userId: string; state: string; outcome?: { status: string; reason?: string; result?: unknown } };
const poll = (id: string): Promise<View> => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body);
const terminal = (v: View) => !['waiting', 'admitted'].includes(v.state);
const subKeys = (itemId: string, lines: number) => Array.from({ length: lines }, (_, k) => itemKeys(prefix, subLineTag(itemId, k)));

/** Joins `users` (each with a payload) and returns their ticket ids. */
async function joinUsers(itemId: string, users: string[]) {
  const joined = await joinAll((userId) => call('POST', `/v1/items/${itemId}/tickets`, { userId, payload: { address: `${userId} ${'x'.repeat(100)}` } }, SVC), users);
  return joined.map((j) => j.body.ticketId as string);
}

/**
 * Every ticket ends, and then: one row each under its ticket's ref with the view's user, status,
 * reason, result and the name of the key that joined it; every sub-line's stream acknowledged, its payloads and x hashes gone; the
 * same views from Postgres. Returns the terminal views.
 */
async function expectLedgered(itemId: string, lines: number, ids: string[]) {
  const views = await waitFor(() => Promise.all(ids.map(poll)), (vs) => vs.every(terminal), 60_000);
  expect(views.filter((v) => !terminal(v))).toEqual([]);
  const rows = await waitFor(() => db.sql`select ticket_id, user_id, status, reason, result, source from ticket_outcomes where item_id = ${itemId}`, (r) => r.length >= ids.length, 30_000);
  expect(rows.length).toBe(ids.length);
  expect(await db.sql`select 1 from ticket_outcomes_dead where item_id = ${itemId}`).toEqual([]);
  const byRef = new Map(rows.map((r) => [r.ticket_id as string, r]));
  for (const v of views) {
    expect(byRef.get(ticketRef(v.ticketId)), v.ticketId).toMatchObject({ user_id: v.userId, status: v.state, reason: v.outcome?.reason ?? null, result: v.outcome?.result ?? null, source: anonymousKeyName(SVC) });
  }
  const keys = subKeys(itemId, lines);
  const left = () => Promise.all(keys.map(async (k) => [await redis.xlen(k.done), await redis.hlen(k.payloads), (await redis.keys(`${k.base}x:*`)).length]));
  expect(await waitFor(left, (l) => l.flat().every((n) => n === 0), 20_000)).toEqual(keys.map(() => [0, 0, 0]));
  expect(await Promise.all(ids.map(poll))).toEqual(views);
  return views;
}

describe('the outcome ledger of a split item', () => {
  it('writes one row per ended ticket of a lines: 4 seckill sale (succeeded, cancelled, sold_out cut), frees its state, and answers polls from Postgres', { timeout: 120_000 }, async () => {
    const stock = 15;
    expect((await call('PUT', '/v1/items/sl4', { handler: 'seckill', config: { stock }, lines: 4, gate: { mode: 'closed' } })).status).toBe(201);
    const ids = await joinUsers('sl4', userIds(0, 60, 'a'));
    expect(new Set(ids).size).toBe(60);
    // The key that joined the ticket, on its sub-line: shown to operators (and copied to the rows below).
    expect((await call('GET', `/v1/tickets/${ids[0]}`)).body.source).toBe(anonymousKeyName(SVC));
    for (const id of ids.slice(0, 6)) expect((await call('DELETE', `/v1/tickets/${id}`, undefined, null)).body.state).toBe('cancelled');
    expect((await call('PATCH', '/v1/items/sl4/gate', { mode: 'manual', maxInFlight: 8 })).status).toBe(200);
    const views = await expectLedgered('sl4', 4, ids);
    const states = views.map((v) => `${v.state}/${v.outcome?.reason ?? ''}`);
    expect(states.filter((s) => s === 'succeeded/').length).toBe(stock);
    expect(states.filter((s) => s.startsWith('cancelled')).length).toBe(6);
    expect(states.filter((s) => s === 'rejected/sold_out').length).toBe(60 - 6 - stock);
  });

  it('writes the rows of a lines: 8 external item: settled succeeded and rejected, cancelled, and the close that ends the rest', { timeout: 120_000 }, async () => {
    expect((await call('PUT', '/v1/items/sl8', { handler: 'external', lines: 8, gate: { mode: 'manual', maxInFlight: 10 } })).status).toBe(201);
    const ids = await joinUsers('sl8', userIds(0, 40, 'b'));
    const pulled = await waitFor(() => call('POST', '/v1/items/sl8/pull', { max: 10 }, SVC), (r) => r.status === 200);
    const got = pulled.body.tickets as { ticketId: string; leaseId: string }[];
    expect(got.length).toBe(10);
    for (const [i, t] of got.entries()) {
      const outcome = i % 2 ? { status: 'rejected', reason: 'no_match' } : { status: 'succeeded', result: { n: i } };
      expect((await call('POST', `/v1/tickets/${t.ticketId}/outcome`, { leaseId: t.leaseId, ...outcome }, SVC)).status).toBe(200);
    }
    const waiting = ids.filter((id) => !got.some((t) => t.ticketId === id));
    for (const id of waiting.slice(0, 5)) expect((await call('DELETE', `/v1/tickets/${id}`, undefined, null)).body.state).toBe('cancelled');
    expect((await call('DELETE', '/v1/items/sl8')).status).toBe(200);
    const views = await expectLedgered('sl8', 8, ids);
    const count = (s: string) => views.filter((v) => `${v.state}/${v.outcome?.reason ?? ''}` === s).length;
    expect([count('succeeded/'), count('rejected/no_match'), count('cancelled/item_closed')]).toEqual([5, 5, 40 - 10 - 5]);
    expect(views.filter((v) => v.state === 'succeeded').map((v) => v.outcome?.result)).toEqual([0, 2, 4, 6, 8].map((n) => ({ n })));
  });

  it("ends a blocked user's waiting ticket rejected/blocked instead of admitting it, on any sub-line, with its row", { timeout: 120_000 }, async () => {
    expect((await call('PUT', '/v1/items/blk4', { handler: 'external', lines: 4, gate: { mode: 'manual', maxInFlight: 50 } })).status).toBe(201);
    // One blocked user on sub-line 0 (the item's own keys), one on another sub-line.
    const candidates = userIds(0, 100, 'k');
    const onZero = candidates.find((u) => subLineOf(u, 4) === 0)!;
    const elsewhere = candidates.find((u) => subLineOf(u, 4) === 3)!;
    const users = [onZero, elsewhere, ...userIds(0, 10, 'ok')];
    const ids = await joinUsers('blk4', users);
    expect((await call('PUT', `/v1/items/blk4/blocks/${onZero}`)).status).toBe(200);
    expect((await call('PUT', `/v1/blocks/${elsewhere}`)).status).toBe(200);
    try {
      const pulled: { ticketId: string; leaseId: string }[] = [];
      await waitFor(
        async () => pulled.push(...((await call('POST', '/v1/items/blk4/pull', { max: 50 }, SVC)).body.tickets ?? [])),
        () => pulled.length >= 10,
      );
      expect(pulled.map((t) => t.ticketId).sort()).toEqual(ids.slice(2).sort());
      for (const id of ids.slice(0, 2)) expect(await poll(id)).toMatchObject({ state: 'rejected', outcome: { status: 'rejected', reason: 'blocked' } });
      for (const t of pulled) expect((await call('POST', `/v1/tickets/${t.ticketId}/outcome`, { leaseId: t.leaseId, status: 'succeeded' }, SVC)).status).toBe(200);
      const views = await expectLedgered('blk4', 4, ids);
      expect(views.map((v) => v.state)).toEqual(['rejected', 'rejected', ...ids.slice(2).map(() => 'succeeded')]);
    } finally {
      await call('DELETE', `/v1/blocks/${elsewhere}`);
    }
  });
});
