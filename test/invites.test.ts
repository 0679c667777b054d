import { createHash } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { SERVICE, testApp } from './support/app.js';

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
    for (const bad of [`${other}.${sig}`, `${body}.${forged}`, 'x', '.', 'e30.AAAA', `${Buffer.from('[]').toString('base64url')}.x`, '\u00e9'.repeat(10)]) {
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
