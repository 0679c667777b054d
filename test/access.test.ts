import { describe, expect, it } from 'vitest';
import { anonymousKeyName } from '../src/access/keys.js';
import { writeOutcomes } from '../src/db/outcomes.js';
import { createLedgerFeed } from '../src/service/outcome-ledger-feed.js';
import { SERVICE, testApp } from './support/app.js';
import { unlinkPrefix } from './support/redis.js';

const t = await testApp();
type Call = ReturnType<typeof t.build>['call'];
const join = (call: Call, item: string, userId: string, key = SERVICE) => call('POST', `/v1/items/${item}/tickets`, { userId }, key);

describe('named keys and scopes', () => {
  it('records the key name on the ticket: shown to operators, not to anonymous readers, and in ticket_outcomes', async () => {
    const { call, queue, prefix } = t.build();
    const item = t.uniqueItem();
    await call('PUT', `/v1/items/${item}`, { handler: 'external' });
    const named = (await join(call, item, 'u1', 'app-key')).body;
    const bare = (await join(call, item, 'u2')).body;
    expect(named.source).toBeUndefined();
    expect((await call('GET', `/v1/tickets/${named.ticketId}`, undefined, null)).body.source).toBeUndefined();
    expect((await call('GET', `/v1/tickets/${named.ticketId}`)).body.source).toBe('app');
    expect((await call('GET', `/v1/tickets/${bare.ticketId}`)).body.source).toBe(anonymousKeyName(SERVICE));
    // The ledger copies it: cancel, then drain the done stream the way the daemon does.
    await call('DELETE', `/v1/tickets/${named.ticketId}`, undefined, null);
    const { tickets } = await createLedgerFeed(t.redis, prefix, 'test').read((await queue.items.item(item, { fresh: true }))!.snap, 100);
    await writeOutcomes(t.db.sql, tickets);
    const rows = await t.db.sql`select source, status from ticket_outcomes where item_id = ${item}`;
    expect(rows).toEqual([{ source: 'app', status: 'cancelled' }]);
  });

  it('refuses to start on a scope naming no service key (a typo left the key it meant unscoped: every item open to it)', () => {
    expect(() => t.build({ scopes: 'ap:sku-*' })).toThrow(/names "ap", which no service key/);
    expect(() => t.build({ scopes: 'app:sku-*' })).not.toThrow();
  });

  it('answers 403 forbidden on join, pull, outcome and item status for an item outside the key scope', async () => {
    const { call } = t.build({ scopes: 'app:sku-*;promo-*' });
    const inside = `sku-${t.uniqueItem()}`;
    const outside = `other-${t.uniqueItem()}`;
    for (const id of [inside, outside]) await call('PUT', `/v1/items/${id}`, { handler: 'external' });
    expect((await join(call, inside, 'u1', 'app-key')).status).toBe(202);
    const denied = await join(call, outside, 'u1', 'app-key');
    expect(denied.status).toBe(403);
    expect(denied.body.error.code).toBe('forbidden');
    expect((await call('POST', `/v1/items/${outside}/pull`, { max: 1 }, 'app-key')).status).toBe(403);
    // Before the body is read, as a join: a key outside its scope learns nothing, not even that its body was bad.
    expect((await call('POST', `/v1/items/${outside}/pull`, { max: 'x' }, 'app-key')).status).toBe(403);
    // The item's status too, and an unknown item outside the scope is the same 403 (not 404).
    expect((await call('GET', `/v1/items/${inside}/status`, undefined, 'app-key')).status).toBe(200);
    const status = await call('GET', `/v1/items/${outside}/status`, undefined, 'app-key');
    expect(status.status).toBe(403);
    expect(status.body.error.code).toBe('forbidden');
    expect((await call('GET', `/v1/items/other-nothing-here/status`, undefined, 'app-key')).status).toBe(403);
    expect((await call('GET', `/v1/items/${outside}/status`, undefined, 'shop-key')).status).toBe(200);
    // Another key (unscoped) joins and pulls; the scoped key may not write the outcome.
    const tk = (await join(call, outside, 'u2', 'shop-key')).body;
    const [pulled] = (await call('POST', `/v1/items/${outside}/pull`, { max: 1 }, 'shop-key')).body.tickets;
    expect(pulled.ticketId).toBe(tk.ticketId);
    const outcome = await call('POST', `/v1/tickets/${tk.ticketId}/outcome`, { leaseId: pulled.leaseId, status: 'succeeded' }, 'app-key');
    expect(outcome.status).toBe(403);
    // Before the body is validated, as join and pull (these read 400 for a bad body).
    expect((await call('POST', `/v1/tickets/${tk.ticketId}/outcome`, {}, 'app-key')).status).toBe(403);
    expect((await call('POST', `/v1/items/${outside}/invites`, {}, 'app-key')).status).toBe(403);
    expect((await call('POST', `/v1/items/${inside}/invites`, {}, 'app-key')).status).toBe(400);
    expect((await call('POST', `/v1/tickets/${tk.ticketId}/outcome`, { leaseId: pulled.leaseId, status: 'succeeded' }, 'shop-key')).status).toBe(200);
  });
});

describe('blocks', () => {
  it("refuses a blocked user's join with 403 blocked, per item and everywhere, until the block is lifted", async () => {
    const { call } = t.build();
    const [a, b] = [t.uniqueItem(), t.uniqueItem()];
    for (const id of [a, b]) await call('PUT', `/v1/items/${id}`, { handler: 'external' });
    expect((await call('PUT', `/v1/items/${a}/blocks/u1`)).status).toBe(200);
    const refused = await join(call, a, 'u1');
    expect(refused.status).toBe(403);
    expect(refused.body.error.code).toBe('blocked');
    expect((await join(call, b, 'u1')).status).toBe(202);
    expect((await call('PUT', `/v1/items/${a}/blocks/u1`, undefined, SERVICE)).status).toBe(403);
    expect((await call('PUT', `/v1/items/nope-${a}/blocks/u1`)).status).toBe(404);
    await call('DELETE', `/v1/items/${a}/blocks/u1`);
    expect((await join(call, a, 'u1')).status).toBe(202);

    await call('PUT', '/v1/blocks/u2');
    const c = t.uniqueItem();
    await call('PUT', `/v1/items/${c}`, { handler: 'external' }); // defined after the block: copies it
    for (const id of [a, b, c]) expect((await join(call, id, 'u2')).body.error?.code, id).toBe('blocked');
    await call('DELETE', '/v1/blocks/u2');
    for (const id of [a, b, c]) expect((await join(call, id, 'u2')).status, id).toBe(202);
  });

  it('keeps blocks through a Redis loss: the restored items refuse the blocked users, and a lifted block stays lifted', async () => {
    const { call, catalog, prefix } = t.build();
    const [a, b] = [t.uniqueItem(), t.uniqueItem()];
    for (const id of [a, b]) await call('PUT', `/v1/items/${id}`, { handler: 'external' });
    const [here, everywhere, lifted] = [`bot-${a}`, `bot-all-${a}`, `ok-${a}`];
    await call('PUT', `/v1/items/${a}/blocks/${here}`);
    await call('PUT', `/v1/blocks/${everywhere}`);
    await call('PUT', `/v1/items/${b}/blocks/${lifted}`);
    await call('DELETE', `/v1/items/${b}/blocks/${lifted}`);
    // Redis's data gone (a flush, a restart without its AOF); the daemon restores from Postgres.
    await unlinkPrefix(t.redis, prefix);
    // (The file's database holds its other tests' items too: all come back under this prefix.)
    expect(await catalog.restore()).toBeGreaterThanOrEqual(2);
    const codes = async (userId: string) => Promise.all([a, b].map(async (id) => (await join(call, id, userId)).body.error?.code ?? 'joined'));
    expect(await codes(here)).toEqual(['blocked', 'joined']);
    expect(await codes(everywhere)).toEqual(['blocked', 'blocked']);
    expect(await codes(lifted)).toEqual(['joined', 'joined']);
    // Lifted after the loss, a block stays lifted through the next one.
    await call('DELETE', `/v1/blocks/${everywhere}`);
    await unlinkPrefix(t.redis, prefix);
    await catalog.restore();
    expect(await codes(everywhere)).toEqual(['joined', 'joined']);
  });

  it("ends a blocked user's waiting ticket rejected/blocked instead of admitting it", async () => {
    const { call } = t.build();
    const item = t.uniqueItem();
    await call('PUT', `/v1/items/${item}`, { handler: 'external' });
    const first = (await join(call, item, 'bad')).body;
    const second = (await join(call, item, 'good')).body;
    await call('PUT', `/v1/blocks/bad`);
    const pulled = (await call('POST', `/v1/items/${item}/pull`, { max: 5 }, SERVICE)).body.tickets;
    expect(pulled.map((p: { userId: string }) => p.userId)).toEqual(['good']);
    expect(pulled[0].ticketId).toBe(second.ticketId);
    const ended = (await call('GET', `/v1/tickets/${first.ticketId}`, undefined, null)).body;
    expect(ended).toMatchObject({ state: 'rejected', outcome: { status: 'rejected', reason: 'blocked' } });
    await call('DELETE', '/v1/blocks/bad');
  });
});

describe('quotas', () => {
  it('counts every attempt per user, refused and repeated ones too: 429 rate_limited with Retry-After and details.quota, but a holder is given their ticket', async () => {
    const clock = t.manualClock(Date.UTC(2026, 11, 2, 0, 0, 0));
    const { call, metrics } = t.build({ clock });
    const item = t.uniqueItem();
    await call('PUT', `/v1/items/${item}`, { handler: 'external', quotas: { perUser: { limit: 3, windowMs: 60_000 } } });
    expect((await call('GET', `/v1/items/${item}`)).body.quotas).toEqual({ perUser: { limit: 3, windowMs: 60_000 } });
    const answers = [];
    for (let i = 0; i < 4; i++) answers.push(await join(call, item, 'u1'));
    // The fourth is over the quota, but its user holds a ticket: a repeat (a lost answer, say) is
    // given it, as joins are idempotent (it was 429, the ticket's id out of reach for the window).
    expect(answers.map((a) => a.status)).toEqual([202, 200, 200, 200]);
    expect(new Set(answers.map((a) => a.body.ticketId)).size).toBe(1);
    // A join that would make a ticket is refused: the user cancelled theirs (external: may rejoin).
    expect((await call('DELETE', `/v1/tickets/${answers[0].body.ticketId}`, undefined, null)).status).toBe(200);
    clock.advance(15_000);
    const limited = await join(call, item, 'u1');
    expect(limited.status).toBe(429);
    expect(limited.body.error).toMatchObject({ code: 'rate_limited', details: { quota: 'perUser', retryAfterMs: 45_000, retryAfterSec: 45 } });
    expect(limited.headers.get('retry-after')).toBe('45');
    expect((await join(call, item, 'u2')).status).toBe(202); // another user has a quota of its own
    clock.advance(45_000);
    expect((await join(call, item, 'u1')).status).toBe(202);
    expect(await metrics.registry.getSingleMetricAsString('floodgate_quota_refusals_total')).toMatch(new RegExp(`item="${item}",quota="perUser"} 1`));
  });

  it('holds a per-key quota across two daemons on one prefix, and a default key quota where an item sets none', async () => {
    const clock = t.manualClock(Date.UTC(2026, 11, 2, 0, 0, 0));
    const one = t.build({ clock, defaultKeyQuota: 4 });
    const two = t.build({ clock, prefix: one.prefix, defaultKeyQuota: 4 });
    const item = t.uniqueItem();
    await one.call('PUT', `/v1/items/${item}`, { handler: 'external', quotas: { perKey: { limit: 10, windowMs: 1000 } } });
    const res = await Promise.all(Array.from({ length: 16 }, (_, i) => join(i % 2 ? one.call : two.call, item, `u${i}`)));
    expect(res.filter((r) => r.status === 202)).toHaveLength(10);
    const refused = res.filter((r) => r.status === 429);
    expect(refused).toHaveLength(6);
    expect(refused[0].body.error.details.quota).toBe('perKey');
    expect(refused[0].headers.get('retry-after')).toBe('1');
    expect((await join(one.call, item, 'other', 'app-key')).status).toBe(202); // each key its own count

    const plain = t.uniqueItem();
    await one.call('PUT', `/v1/items/${plain}`, { handler: 'external' });
    const codes = await Promise.all(Array.from({ length: 6 }, (_, i) => join(i % 2 ? one.call : two.call, plain, `p${i}`)));
    expect(codes.filter((r) => r.status === 202)).toHaveLength(4);

    // A split item (lines > 1) too: its joins counted no quota, and eight in a second all went in.
    const split = t.uniqueItem();
    await one.call('PUT', `/v1/items/${split}`, { handler: 'external', lines: 2 });
    const splitCodes = await Promise.all(Array.from({ length: 8 }, (_, i) => join(i % 2 ? one.call : two.call, split, `s${i}`)));
    expect(splitCodes.filter((r) => r.status === 202)).toHaveLength(4);
    const over = splitCodes.find((r) => r.status === 429)!;
    expect([over.body.error.code, over.body.error.details.quota, over.headers.get('retry-after')]).toEqual(['rate_limited', 'perKey', '1']);
    clock.advance(1000);
    expect((await join(one.call, split, 's-next')).status).toBe(202);
  });
});
