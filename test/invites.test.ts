import { createHash } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { startRetention } from '../src/catalog/retention.js';
import { createInviteUseRows } from '../src/db/invite-uses.js';
import { createLogger } from '../src/kernel/logger.js';
import { itemKeys } from '../src/redis/keys.js';
import { SERVICE, testApp } from './support/app.js';
import { drainLedger } from './support/ledger.js';
import { keysMatching, unlinkPrefix } from './support/redis.js';

const t = await testApp();

/** The brute force the page's worker does, in the test (small difficulties only). */
const solves = (challenge: string, nonce: string, difficulty: number) =>
  BigInt('0x' + createHash('sha256').update(challenge + nonce).digest('hex')) >> BigInt(256 - difficulty) === 0n;
function solve(challenge: string, difficulty: number) {
  for (let n = 0; ; n++) if (solves(challenge, n.toString(36), difficulty)) return n.toString(36);
}

describe('invites and proof of work', () => {
  it('joins with an invite once; a replay answers the same ticket with 200', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/i1', { handler: 'external' });
    const inv = await call('POST', '/v1/items/i1/invites', { userId: 'u-1', ttlMs: 60_000 }, SERVICE);
    expect(inv.status).toBe(201);
    expect(inv.body.url).toBe(`/join/i1?invite=${inv.body.invite}`);
    const first = await call('POST', '/v1/join', { invite: inv.body.invite }, null);
    expect(first.status).toBe(202);
    expect(first.body).toMatchObject({ userId: 'u-1', state: 'waiting', position: 1 });
    await call('DELETE', `/v1/tickets/${first.body.ticketId}`, undefined, null);
    const again = await call('POST', '/v1/join', { invite: inv.body.invite }, null);
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ ticketId: first.body.ticketId, state: 'cancelled' });
  });

  it("counts an invite's join against its issuing key's quota, as the key's own joins", async () => {
    // A clock that stands still: the quota's windows are fixed (a minute each here), and joins that
    // straddled a minute's turn on the real clock were counted in two windows (a clean-clone run).
    const { call, metrics } = t.build({ clock: t.manualClock() });
    const item = t.uniqueItem();
    await call('PUT', `/v1/items/${item}`, { handler: 'external', quotas: { perKey: { limit: 2, windowMs: 60_000 } } });
    const viaInvite: number[] = [];
    for (let i = 0; i < 4; i++) {
      const inv = await call('POST', `/v1/items/${item}/invites`, { userId: `v${i}` }, SERVICE);
      viaInvite.push((await call('POST', '/v1/join', { invite: inv.body.invite }, null)).status);
    }
    expect(viaInvite).toEqual([202, 202, 429, 429]); // before: every one taken
    // Counted as a join's are (an invite's were not: the metric had no line for the item).
    expect(await metrics.registry.getSingleMetricAsString('floodgate_quota_refusals_total')).toMatch(new RegExp(`item="${item}",quota="perKey"} 2`));
    expect(await metrics.registry.getSingleMetricAsString('floodgate_joins_total')).toMatch(new RegExp(`item="${item}",result="created"} 2`));
    expect((await call('POST', `/v1/items/${item}/tickets`, { userId: 'direct' }, SERVICE)).status).toBe(429);
    expect((await call('POST', `/v1/items/${item}/tickets`, { userId: 'other-key' }, 'svc-key-2')).status).toBe(202);
  });

  it('answers 200 without Location to an invite of a user who holds a ticket already, as a join does', async () => {
    const { call } = t.build();
    const item = t.uniqueItem();
    await call('PUT', `/v1/items/${item}`, { handler: 'external' });
    const held = await call('POST', `/v1/items/${item}/tickets`, { userId: 'u-held' }, SERVICE);
    expect(held.status).toBe(202);
    const inv = (await call('POST', `/v1/items/${item}/invites`, { userId: 'u-held' }, SERVICE)).body.invite;
    const res = await call('POST', '/v1/join', { invite: inv }, null);
    expect(res.status).toBe(200);
    expect(res.body.ticketId).toBe(held.body.ticketId);
    expect(res.headers.get('location')).toBeNull();
    // A new ticket still comes with its Location.
    const fresh = await call('POST', '/v1/join', { invite: (await call('POST', `/v1/items/${item}/invites`, { userId: 'u-new' }, SERVICE)).body.invite }, null);
    expect(fresh.status).toBe(202);
    expect(fresh.headers.get('location')).toBe(`/v1/tickets/${fresh.body.ticketId}`);
  });

  it("refuses an invite whose item claim is not an item id before asking Redis about it", async () => {
    const { call, queue } = t.build();
    const item = t.uniqueItem();
    await call('PUT', `/v1/items/${item}`, { handler: 'external' });
    const inv = (await call('POST', `/v1/items/${item}/invites`, { userId: 'u' }, SERVICE)).body.invite as string;
    const [body, sig] = inv.split('.');
    const claims = JSON.parse(Buffer.from(body, 'base64url').toString());
    const lookups = vi.spyOn(queue.items, 'item');
    try {
      for (const i of ['', '{x}', 'a b', '-x', 'x'.repeat(129), `${item}*`, 'é']) {
        const forged = `${Buffer.from(JSON.stringify({ ...claims, i })).toString('base64url')}.${sig}`;
        const r = await call('POST', '/v1/join', { invite: forged }, null);
        expect(r.status, i).toBe(403);
        expect(r.body.error).toMatchObject({ code: 'forbidden', details: { reason: 'invite_invalid' } });
      }
      expect(lookups).not.toHaveBeenCalled();
    } finally {
      lookups.mockRestore();
    }
    expect((await call('POST', '/v1/join', { invite: inv }, null)).status).toBe(202);
  });

  it('refuses forged, expired and malformed invites with 4xx, never 500', async () => {
    const clock = t.manualClock(Date.now());
    const { call } = t.build({ clock });
    await call('PUT', '/v1/items/i2', { handler: 'external' });
    const inv = (await call('POST', '/v1/items/i2/invites', { userId: 'u', ttlMs: 1000 }, SERVICE)).body.invite as string;
    const [body, sig] = inv.split('.');
    const other = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(body, 'base64url').toString()), u: 'someone-else' })).toString('base64url');
    // A signature with its first character changed (never the same: replacing the last two with
    // 'AA' forged nothing when the MAC happened to end so, 1 run in 256).
    const forged = `${sig[0] === 'A' ? 'B' : 'A'}${sig.slice(1)}`;
    // And the invite itself spelt otherwise (characters the decoder skips, padding): one spelling
    // is the invite (`…!!` was taken as it, `…==` too; a review).
    for (const bad of [`${other}.${sig}`, `${body}.${forged}`, `${inv}!!`, `${inv}==`, `${inv}.`, 'x', '.', 'e30.AAAA', `${Buffer.from('[]').toString('base64url')}.x`, '\u00e9'.repeat(10)]) {
      const r = await call('POST', '/v1/join', { invite: bad }, null);
      expect(r.status, bad).toBe(403);
      expect(r.body.error).toMatchObject({ code: 'forbidden', details: { reason: 'invite_invalid' } });
    }
    for (const body of [{}, { invite: 5 }, { invite: 'a'.repeat(3000) }, 'not json']) expect((await call('POST', '/v1/join', body, null)).status).toBe(400);
    clock.advance(1100);
    const expired = await call('POST', '/v1/join', { invite: inv }, null);
    expect(expired.status).toBe(403);
    expect(expired.body.error.details.reason).toBe('invite_expired');
    expect((await call('POST', '/v1/items/nope/invites', { userId: 'u' }, SERVICE)).status).toBe(404);
    expect((await call('POST', '/v1/items/i2/invites', { userId: 'u' }, null)).status).toBe(401);
    expect((await call('GET', '/v1/items/nope/challenge', undefined, null)).status).toBe(404);
    for (const waitingRoom of [{ title: 'x', returnUrl: 'javascript:alert(1)' }, { title: '' }, { title: 'x', extra: 1 }])
      expect((await call('PUT', '/v1/items/i3', { handler: 'external', waitingRoom })).status).toBe(400);
    expect((await call('PUT', '/v1/items/i3', { handler: 'external', pow: { difficulty: 0 } })).status).toBe(400);
  });

  it('asks for proof of work where the item sets it: none, wrong, reused or foreign are 403 pow_required', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/p1', { handler: 'external', pow: { difficulty: 8 } });
    await call('PUT', '/v1/items/p2', { handler: 'external', pow: { difficulty: 8 } });
    const invite = async (u: string) => (await call('POST', '/v1/items/p1/invites', { userId: u }, SERVICE)).body.invite as string;
    const ch = (await call('GET', '/v1/items/p1/challenge', undefined, null)).body;
    expect(ch.difficulty).toBe(8);
    const none = await call('POST', '/v1/join', { invite: await invite('a') }, null);
    expect(none.status).toBe(403);
    expect(none.body.error.code).toBe('pow_required');
    const wrong = Array.from({ length: 50 }, (_, i) => `w${i}`).find((n) => !solves(ch.challenge, n, 8))!;
    const bad = await call('POST', '/v1/join', { invite: await invite('a'), pow: { challenge: ch.challenge, nonce: wrong } }, null);
    expect(bad.body.error.code).toBe('pow_required');
    const foreign = (await call('GET', '/v1/items/p2/challenge', undefined, null)).body.challenge;
    expect((await call('POST', '/v1/join', { invite: await invite('a'), pow: { challenge: foreign, nonce: solve(foreign, 8) } }, null)).body.error.code).toBe('pow_required');
    const good = { challenge: ch.challenge, nonce: solve(ch.challenge, 8) };
    const ok = await call('POST', '/v1/join', { invite: await invite('a'), pow: good }, null);
    expect(ok.status).toBe(202);
    const reused = await call('POST', '/v1/join', { invite: await invite('b'), pow: good }, null);
    expect(reused.body.error.code).toBe('pow_required');
  });

  it('lets an invite retry its own solved challenge after a refused join, and no other invite use it', async () => {
    const clock = t.manualClock(Date.now());
    const { call } = t.build({ clock });
    await call('PUT', '/v1/items/p3', { handler: 'external', pow: { difficulty: 8 }, opensAt: new Date(clock.now() + 5000).toISOString() });
    const invite = async (u: string) => (await call('POST', '/v1/items/p3/invites', { userId: u, ttlMs: 60_000 }, SERVICE)).body.invite as string;
    const ch = (await call('GET', '/v1/items/p3/challenge', undefined, null)).body.challenge as string;
    const pow = { challenge: ch, nonce: solve(ch, 8) };
    const mine = await invite('early');
    // The join takes the challenge and is then refused: the sale is not open yet.
    expect((await call('POST', '/v1/join', { invite: mine, pow }, null)).status).toBe(425);
    expect((await call('POST', '/v1/join', { invite: await invite('thief'), pow }, null)).body.error.code).toBe('pow_required');
    clock.advance(6000);
    const retried = await call('POST', '/v1/join', { invite: mine, pow }, null);
    expect(retried.status).toBe(202);
    expect(retried.body.userId).toBe('early');
  });
});

const HOUR = 3600_000;
const DAY = 24 * HOUR;

describe('invites stay single-use when Redis loses their use', () => {
  it('answers concurrent first uses of one invite with one ticket, recorded once', async () => {
    const { call } = t.build();
    const item = t.uniqueItem();
    await call('PUT', `/v1/items/${item}`, { handler: 'external' });
    const inv = (await call('POST', `/v1/items/${item}/invites`, { userId: 'u-twice' }, SERVICE)).body.invite as string;
    const res = await Promise.all(Array.from({ length: 4 }, () => call('POST', '/v1/join', { invite: inv }, null)));
    expect(new Set(res.map((r) => r.body.ticketId)).size).toBe(1);
    expect(res.filter((r) => r.status === 202).length).toBeLessThanOrEqual(1);
    expect(await t.db.sql`select 1 from invite_uses where item_id = ${item}`).toHaveLength(1);
  });

  it("leaves no second ticket in line when a use that was held up joins after the first use's ticket was left", async () => {
    let release = () => {};
    const held = new Promise<void>((r) => (release = r));
    const slow = t.build({ admitHold: () => held }); // a use held up (a reconnect's hold, a slow proof of work)
    const fast = t.build({ prefix: slow.prefix });
    const item = t.uniqueItem();
    await fast.call('PUT', `/v1/items/${item}`, { handler: 'external' });
    const inv = (await fast.call('POST', `/v1/items/${item}/invites`, { userId: 'u-race' }, SERVICE)).body.invite as string;
    const late = slow.call('POST', '/v1/join', { invite: inv }, null);
    const first = await fast.call('POST', '/v1/join', { invite: inv }, null);
    expect(first.status).toBe(202);
    expect((await fast.call('DELETE', `/v1/tickets/${first.body.ticketId}`, undefined, null)).body.state).toBe('cancelled');
    release();
    const second = await late;
    expect([second.status, second.body.ticketId, second.body.state]).toEqual([200, first.body.ticketId, 'cancelled']);
    // Before: the held use's join made a ticket nobody held the id of, waiting, to be sold to u-race.
    expect((await fast.call('GET', `/v1/items/${item}`)).body.counts).toMatchObject({ waiting: 0, admitted: 0 });
  });

  /** The outcome ledger's rounds (the daemon runs them every 250 ms): ended tickets into ticket_outcomes. */
  const drainBuilt = (built: ReturnType<typeof t.build>) =>
    drainLedger({ queue: built.queue, redis: t.redis, prefix: built.prefix, sql: t.db.sql, metrics: built.metrics, consumer: 'invites-test' });

  it('answers the first ticket, never a new one, after retention removed the ended item and it was made again', async () => {
    const clock = t.manualClock(Date.now());
    const built = t.build({ clock });
    const { call, queue, store } = built;
    const item = t.uniqueItem();
    await call('PUT', `/v1/items/${item}`, { handler: 'external' });
    // An invite of 7 days, used on day 1.
    const inv = (await call('POST', `/v1/items/${item}/invites`, { userId: 'u-week', ttlMs: 7 * DAY }, SERVICE)).body.invite as string;
    const first = await call('POST', '/v1/join', { invite: inv }, null);
    expect(first.status).toBe(202);
    // The sale ends (its waiting ticket with it) and the ledger keeps the ticket's end.
    expect((await call('DELETE', `/v1/items/${item}`)).status).toBe(200);
    const ended = (await call('GET', `/v1/tickets/${first.body.ticketId}`, undefined, null)).body;
    expect(ended.state).not.toBe('waiting');
    await drainBuilt(built);
    await t.redis.del(itemKeys(built.prefix, item).done); // (acknowledged: retention waits for none left)
    // Day 2: retention removes the ended item's keys, the invite's use with them.
    clock.advance(DAY + HOUR);
    const retention = startRetention({ queue, store, clock, log: createLogger('silent') }, { everyMs: 3_600_000, retentionMs: DAY });
    try {
      await retention.round();
    } finally {
      await retention.stop();
    }
    expect(await keysMatching(t.redis, `${built.prefix}{${item}}:*`)).toEqual([]);
    // Day 3: the operator makes the item again; it keeps its secret, so the invite still verifies.
    clock.advance(DAY);
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'external' })).status).toBe(201);
    const again = await call('POST', '/v1/join', { invite: inv }, null);
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ ticketId: first.body.ticketId, userId: 'u-week', state: ended.state, outcome: ended.outcome });
    expect(again.headers.get('location')).toBeNull();
    expect((await call('GET', `/v1/items/${item}`)).body.counts.waiting).toBe(0);
    // Answered from Redis's copy from then on, still the same ticket.
    expect((await call('POST', '/v1/join', { invite: inv }, null)).body.ticketId).toBe(first.body.ticketId);
  });

  it('answers the same ticket id after Redis lost its data and the item was restored, never 202', async () => {
    const built = t.build();
    const { call, catalog } = built;
    const item = t.uniqueItem();
    await call('PUT', `/v1/items/${item}`, { handler: 'external', gate: { mode: 'closed' } });
    const invite = async (u: string) => (await call('POST', `/v1/items/${item}/invites`, { userId: u, ttlMs: DAY }, SERVICE)).body.invite as string;
    const left = await invite('u-left');
    const waits = await invite('u-waits');
    const a = await call('POST', '/v1/join', { invite: left }, null);
    const b = await call('POST', '/v1/join', { invite: waits }, null);
    expect([a.status, b.status]).toEqual([202, 202]);
    // u-left leaves the line; the ledger keeps that end. u-waits is still waiting at the loss.
    expect((await call('DELETE', `/v1/tickets/${a.body.ticketId}`, undefined, null)).status).toBe(200);
    await drainBuilt(built);
    // Redis loses everything of this daemon's; the daemon's loss check puts the item back from Postgres.
    await unlinkPrefix(t.redis, built.prefix);
    expect(await catalog.restoreIfLost()).toBeGreaterThan(0);
    expect((await call('GET', `/v1/items/${item}`)).status).toBe(200);

    const againA = await call('POST', '/v1/join', { invite: left }, null);
    expect(againA.status).toBe(200);
    expect(againA.body).toMatchObject({ ticketId: a.body.ticketId, userId: 'u-left', state: 'cancelled' });
    // The waiting ticket's state went with Redis and Postgres holds none of it: its invite answers
    // as the ticket's own URL does (404), and makes no other ticket.
    expect((await call('GET', `/v1/tickets/${b.body.ticketId}`, undefined, null)).status).toBe(404);
    const againB = await call('POST', '/v1/join', { invite: waits }, null);
    expect(againB.status).toBe(404);
    expect(againB.body.error.code).toBe('ticket_not_found');
    expect((await call('GET', `/v1/items/${item}`)).body.counts.waiting).toBe(0);
    // Postgres keeps the use, but never the ticket id itself (a bearer capability: sealed by the invite).
    const kept = await t.db.sql`select ticket_sealed from invite_uses where item_id = ${item}`;
    expect(kept).toHaveLength(2);
    for (const r of kept) for (const id of [a.body.ticketId, b.body.ticketId]) expect(JSON.stringify(r)).not.toContain(id);
    // The use is back in Redis: a repeat costs no query.
    expect(await t.redis.get(itemKeys(built.prefix, item).invite(JSON.parse(Buffer.from(left.split('.')[0], 'base64url').toString()).n))).toBe(a.body.ticketId);
  });

  it("deletes an expired invite's use in retention's round, and the invite is refused expired", async () => {
    const clock = t.manualClock(Date.now());
    const built = t.build({ clock });
    const { call, queue, store } = built;
    const item = t.uniqueItem();
    await call('PUT', `/v1/items/${item}`, { handler: 'external' });
    const inv = (await call('POST', `/v1/items/${item}/invites`, { userId: 'u-brief', ttlMs: 5000 }, SERVICE)).body.invite as string;
    expect((await call('POST', '/v1/join', { invite: inv }, null)).status).toBe(202);
    const rows = () => t.db.sql`select 1 from invite_uses where item_id = ${item}`;
    expect(await rows()).toHaveLength(1);
    const rows0 = createInviteUseRows(t.db.sql);
    const retention = startRetention({ queue, store, clock, log: createLogger('silent'), purgeInviteUses: (now) => rows0.purge(now) }, { everyMs: 3_600_000, retentionMs: DAY });
    try {
      await retention.round();
      expect(await rows()).toHaveLength(1);
      clock.advance(5000 + 60_000);
      await retention.round();
      expect(await rows()).toHaveLength(0);
    } finally {
      await retention.stop();
    }
    await unlinkPrefix(t.redis, built.prefix);
    const late = await call('POST', '/v1/join', { invite: inv }, null);
    expect(late.status).toBe(403);
  });
});
