import { createHmac, createPublicKey, generateKeyPairSync, sign as edSign, verify } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';
import { revokedTokensKey } from '../src/redis/keys.js';
import { JWKS_MAX_AGE_S, SIGNING_DELAY_MS } from '../src/tokens/key-ring.js';

const db = await testDb();
const t = testRedis();
const prefix = t.newPrefix();
// SVC may use every item; `app-key` (named app) only tok-in-* items.
const APP = 'app-key';
const env = { FLOODGATE_PUBLIC_URL: 'https://queue.example', FLOODGATE_SERVICE_KEYS: `${SVC},app:${APP}`, FLOODGATE_KEY_SCOPES: 'app:tok-in-*' };
const a = await inProcessDaemon({ prefix, databaseUrl: db.url, env });
const b = await inProcessDaemon({ prefix, databaseUrl: db.url, env });

const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
const part = (token: string, i: number) => JSON.parse(Buffer.from(token.split('.')[i], 'base64url').toString());

/** Verifies a compact JWS against a JWK set with node:crypto alone, as a downstream would. */
function verifyOffline(token: string, jwks: { keys: Record<string, string>[] }) {
  const [h, p, s] = token.split('.');
  const header = part(token, 0);
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  if (header.alg !== 'EdDSA' || !jwk) return null;
  const ok = verify(null, Buffer.from(`${h}.${p}`), createPublicKey({ key: jwk as never, format: 'jwk' }), Buffer.from(s, 'base64url'));
  return ok ? JSON.parse(Buffer.from(p, 'base64url').toString()) : null;
}

/** An admitted ticket of a fresh external item, and the view the holder reads. */
async function admitted(itemId: string, userId = 'u1', extra: Record<string, unknown> = {}) {
  await a.call('PUT', `/v1/items/${itemId}`, { handler: 'external', ...extra });
  const joined = (await a.call('POST', `/v1/items/${itemId}/tickets`, { userId }, SVC)).body;
  const [pulled] = (await a.call('POST', `/v1/items/${itemId}/pull`, { max: 1 }, SVC)).body.tickets;
  // A poll may read the item's counters up to FLOODGATE_CACHE_MS old (250 ms): it reads admitted soon after.
  const view = (await waitFor(() => a.call('GET', `/v1/tickets/${joined.ticketId}`, undefined, null), (r) => r.body.state === 'admitted', 5000)).body;
  return { ticketId: joined.ticketId as string, leaseId: pulled.leaseId as string, view };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const introspect = (d: typeof a, token: unknown) => d.call('POST', '/v1/tokens/introspect', { token }, SVC);

describe('admission tokens', () => {
  it('gives admitted and succeeded tickets an EdDSA token that verifies against the JWKS with node:crypto alone', async () => {
    const { ticketId, leaseId, view } = await admitted('tok-a', 'u1', { tokenTtlMs: 60_000 });
    expect(view.state).toBe('admitted');
    const token = view.admissionToken as string;
    const jwks = (await b.call('GET', '/.well-known/jwks.json', undefined, null)).body;
    const claims = verifyOffline(token, jwks);
    expect(claims).toMatchObject({ iss: 'https://queue.example', sub: 'u1', aud: 'tok-a' });
    // A whole tokenTtlMs from the admission (exp is in whole seconds, rounded up).
    const lives = claims.exp * 1000 - Date.parse(view.admittedAt);
    expect(lives).toBeGreaterThanOrEqual(60_000);
    expect(lives).toBeLessThan(61_000);
    expect(claims.jti).not.toBe(ticketId);
    expect(ticketId).not.toContain(claims.jti);
    // The same token from either daemon (deterministic claims and signature), cached per ticket.
    expect((await b.call('GET', `/v1/tickets/${ticketId}`, undefined, null)).body.admissionToken).toBe(token);
    const done = await a.call('POST', `/v1/tickets/${ticketId}/outcome`, { leaseId, status: 'succeeded', result: { orderId: 'A1' } }, SVC);
    expect(done.body.state).toBe('succeeded');
    const after = verifyOffline(done.body.admissionToken, jwks);
    expect(after).toMatchObject({ sub: 'u1', aud: 'tok-a', jti: claims.jti, result: { orderId: 'A1' } });
    expect(await introspect(b, done.body.admissionToken)).toMatchObject({ status: 200, body: { active: true, sub: 'u1', aud: 'tok-a', jti: claims.jti } });
    // Waiting tickets carry none.
    const waiting = (await a.call('POST', '/v1/items/tok-a/tickets', { userId: 'u2' }, SVC)).body;
    expect(waiting.admissionToken).toBeUndefined();
  });

  it('makes a revoked token inactive on the other daemon within a second', async () => {
    const { view } = await admitted('tok-b');
    const token = view.admissionToken;
    expect((await introspect(b, token)).body.active).toBe(true);
    expect((await a.call('POST', '/v1/tokens/revoke', { token }, SVC)).status).toBe(200);
    const until = Date.now() + 1000;
    let active = true;
    while (active && Date.now() < until) active = (await introspect(b, token)).body.active;
    expect(active).toBe(false);
  });

  it('keeps a revocation through a Redis loss, on the daemons running and on one started after it', async () => {
    const { view } = await admitted('tok-lost');
    const token = view.admissionToken;
    expect((await a.call('POST', '/v1/tokens/revoke', { token }, SVC)).status).toBe(200);
    // Redis's data gone (a flush, a restart without its AOF), as far as the revocations go.
    await t.redis.del(revokedTokensKey(prefix));
    expect((await introspect(a, token)).body.active).toBe(false);
    // The other daemon reads Postgres's revocations every 2 s; it answered from Redis's set before the loss.
    expect((await waitFor(() => introspect(b, token), (r) => r.body.active === false, 10_000)).body.active).toBe(false);
    const c = await inProcessDaemon({ prefix, databaseUrl: db.url, env });
    expect((await introspect(c, token)).body.active).toBe(false);
    // Gone with the token's expiry: Postgres keeps no row past it.
    const [{ n }] = await db.sql`select count(*)::int as n from revoked_tokens where expires_at < now()`;
    expect(n).toBe(0);
  });

  it('keeps a revoked admission revoked on a later admission of its ticket, however long after the revoked token expired', async () => {
    // tokenTtlMs 1 s: the revocation was kept until 3 s after the revoke, and dropped from every
    // daemon's copy, Redis and Postgres by the next trim (2 s).
    const { ticketId, leaseId, view } = await admitted('tok-rev-again', 'u1', { tokenTtlMs: 1000 });
    const first = view.admissionToken as string;
    expect((await a.call('POST', '/v1/tokens/revoke', { token: first }, SVC)).body.revoked).toBe(true);
    expect((await a.call('POST', `/v1/tickets/${ticketId}/outcome`, { leaseId, status: 'failed', reason: 'busy', retry: true }, SVC)).status).toBe(200);
    await sleep(5500);
    const [again] = (await a.call('POST', '/v1/items/tok-rev-again/pull', { max: 1 }, SVC)).body.tickets;
    expect(again.ticketId).toBe(ticketId);
    const later = (await waitFor(() => b.call('GET', `/v1/tickets/${ticketId}`, undefined, null), (r) => r.body.state === 'admitted', 5000)).body.admissionToken as string;
    expect(part(later, 1).jti).toBe(part(first, 1).jti);
    expect((await introspect(b, later)).body.active).toBe(false); // before: true
    expect((await introspect(a, later)).body.active).toBe(false);
  });

  it("keeps a revoked admission revoked on every token its ticket carries later, past the revoked token's expiry", async () => {
    // tokenTtlMs 3 s; the ticket succeeds 4.5 s after its admission, so its succeeded token (same
    // jti, later iat) lives at least 4 s past the admitted one's expiry.
    const { ticketId, leaseId, view } = await admitted('tok-rev-later', 'u1', { tokenTtlMs: 3000 });
    const first = view.admissionToken as string;
    expect((await a.call('POST', '/v1/tokens/revoke', { token: first }, SVC)).body.revoked).toBe(true);
    await sleep(4500);
    const done = await a.call('POST', `/v1/tickets/${ticketId}/outcome`, { leaseId, status: 'succeeded' }, SVC);
    const later = done.body.admissionToken as string;
    expect(part(later, 1).jti).toBe(part(first, 1).jti);
    expect(part(later, 1).exp).toBeGreaterThanOrEqual(part(first, 1).exp + 4);
    expect((await b.call('GET', `/v1/tickets/${ticketId}`, undefined, null)).body.admissionToken).toBe(later);
    expect((await introspect(b, later)).body.active).toBe(false);
    expect((await introspect(a, later)).body.active).toBe(false);
    // Past the first token's expiry and every daemon's trim of expired revocations (every 2 s).
    await sleep(part(first, 1).exp * 1000 + 2600 - Date.now());
    expect(part(later, 1).exp * 1000).toBeGreaterThan(Date.now() + 500);
    expect((await introspect(b, later)).body.active).toBe(false);
    expect((await introspect(a, later)).body.active).toBe(false);
  });

  // (A ttl of 10 s: with 5 s, the revoke, the outcome and the check had ~1 s after the 3.5 s sleep.)
  it('keeps both revocations of one ticket through a Redis loss, on a daemon started after the first token expired', { timeout: 60_000 }, async () => {
    const { ticketId, leaseId, view } = await admitted('tok-rev-both', 'u1', { tokenTtlMs: 10_000 });
    const first = view.admissionToken as string;
    expect((await a.call('POST', '/v1/tokens/revoke', { token: first }, SVC)).body.revoked).toBe(true);
    await sleep(3500);
    const later = (await a.call('POST', `/v1/tickets/${ticketId}/outcome`, { leaseId, status: 'succeeded' }, SVC)).body.admissionToken as string;
    expect(part(later, 1).exp).toBeGreaterThanOrEqual(part(first, 1).exp + 3);
    // The shop revokes the token it holds now as well, before the first one expired.
    expect(Date.now()).toBeLessThan(part(first, 1).exp * 1000);
    expect((await b.call('POST', '/v1/tokens/revoke', { token: later }, SVC)).body.revoked).toBe(true);
    await t.redis.del(revokedTokensKey(prefix));
    await sleep(part(first, 1).exp * 1000 + 2200 - Date.now());
    expect(part(later, 1).exp * 1000).toBeGreaterThan(Date.now() + 300);
    const c = await inProcessDaemon({ prefix, databaseUrl: db.url, env });
    expect((await introspect(c, later)).body.active).toBe(false);
    expect((await introspect(a, later)).body.active).toBe(false);
  });

  it('publishes a rotated-in key at once and keeps signing with the old one until every JWKS fetched before has expired', async () => {
    const { view } = await admitted('tok-c');
    const old = view.admissionToken;
    const jwksRes = await fetch(new URL('/.well-known/jwks.json', a.daemon.url));
    expect(jwksRes.headers.get('cache-control')).toBe(`public, max-age=${JWKS_MAX_AGE_S}`);
    const before = await jwksRes.json();
    const rotated = await a.call('POST', '/v1/token-keys/rotate', undefined, undefined);
    expect(rotated.status).toBe(200);
    // It signs once the JWKS a shop may hold (max-age) and every daemon's reload have passed.
    expect(Date.parse(rotated.body.signsFrom) - Date.now()).toBeGreaterThan(JWKS_MAX_AGE_S * 1000);
    expect(Date.parse(rotated.body.signsFrom) - Date.now()).toBeLessThanOrEqual(SIGNING_DELAY_MS);
    expect((await b.call('POST', '/v1/token-keys/rotate', undefined, SVC)).status).toBe(403);
    // Listed at once by the daemon that made it; by every daemon within a reload.
    const kids = async (d: typeof a) => (await d.call('GET', '/.well-known/jwks.json', undefined, null)).body.keys.map((k: { kid: string }) => k.kid);
    expect(await kids(a)).toEqual(expect.arrayContaining([rotated.body.kid, part(old, 0).kid]));
    expect(await waitFor(() => kids(b), (k) => k.includes(rotated.body.kid), 10_000)).toEqual(expect.arrayContaining([rotated.body.kid, part(old, 0).kid]));
    expect((await introspect(b, old)).body.active).toBe(true);
    // Tokens issued in the next seconds, on either daemon, still carry the old kid: a JWKS fetched before the rotation verifies them.
    const fresh = await admitted('tok-d');
    const seenByB = (await waitFor(() => b.call('GET', `/v1/tickets/${fresh.ticketId}`, undefined, null), (r) => r.body.state === 'admitted', 5000)).body;
    for (const token of [fresh.view.admissionToken, seenByB.admissionToken]) {
      expect(part(token, 0).kid).toBe(part(old, 0).kid);
      expect(verifyOffline(token, before)).toMatchObject({ aud: 'tok-d' });
      expect((await introspect(b, token)).body.active).toBe(true);
    }
  });

  it('answers inactive, never 500, for malformed, unsigned, HS256-with-the-public-key, expired, oversized and unknown-kid tokens', async () => {
    const { view } = await admitted('tok-e', 'u1', { tokenTtlMs: 1000 });
    const token = view.admissionToken as string;
    expect(token, JSON.stringify(view)).toBeTypeOf('string');
    const header = part(token, 0);
    const claims = part(token, 1);
    const jwks = (await a.call('GET', '/.well-known/jwks.json', undefined, null)).body;
    const pub = jwks.keys.find((k: { kid: string }) => k.kid === header.kid);
    const hs = (key: string, h: object, c: object) => {
      const input = `${b64(h)}.${b64(c)}`;
      return `${input}.${createHmac('sha256', key).update(input).digest('base64url')}`;
    };
    const stranger = generateKeyPairSync('ed25519').privateKey;
    const foreignInput = `${b64({ ...header, kid: 'nope' })}.${b64(claims)}`;
    const foreign = `${foreignInput}.${edSign(null, Buffer.from(foreignInput), stranger).toString('base64url')}`;
    const forgedInput = `${b64(header)}.${b64({ ...claims, sub: 'someone-else' })}`;
    const cases: unknown[] = [
      '', 'x', 'a.b.c', '...', token.slice(0, -3) + (token.endsWith('AAA') ? 'BBA' : 'AAA'), `${b64({ alg: 'none' })}.${b64(claims)}.`,
      hs(pub.x, { alg: 'HS256', kid: header.kid }, claims), hs(JSON.stringify(pub), { alg: 'HS256', kid: header.kid }, claims),
      foreign, `${forgedInput}.${token.split('.')[2]}`, `${token}${'A'.repeat(10_000)}`, `${b64({ alg: 'EdDSA' })}.${b64(claims)}.AA`,
      // The token itself spelt otherwise (before: active): padding after its signature, its last character's spare bits changed.
      `${token}==`, respelt(token),
    ];
    expect(respelt(token)).not.toBe(token);
    for (const c of cases) {
      const r = await introspect(a, c);
      expect(r, String(c).slice(0, 40)).toMatchObject({ status: 200, body: { active: false } });
    }
    expect((await introspect(a, 42)).status).toBe(400);
    // NUL and lone surrogates are 400 naming the field, as in every other body.
    for (const bad of ['a\u0000', `${token}\u0000`, '\ud800', `x\udc00`]) {
      for (const path of ['/v1/tokens/introspect', '/v1/tokens/revoke']) {
        const r = await a.call('POST', path, { token: bad }, SVC);
        expect(r.status, `${path} ${JSON.stringify(bad)}`).toBe(400);
        expect(r.body.error.code).toBe('invalid_request');
        expect(r.body.error.details.issues.map((i: { path: string }) => i.path)).toContain('token');
      }
    }
    expect((await introspect(a, 'A'.repeat(20_000))).status).toBe(413); // over the body limit
    // Expired: a second after issue (iat is the admission time; 1 s lifetime).
    const until = Date.now() + 5000;
    let active = true;
    while (active && Date.now() < until) {
      active = (await introspect(a, token)).body.active;
      if (active) await new Promise((r) => setTimeout(r, 200));
    }
    expect(active).toBe(false);
  });

  it('gives a ticket answered by POST /v1/join its admissionToken once admitted, as a join does', async () => {
    await a.call('PUT', '/v1/items/tok-inv', { handler: 'external' });
    const invite = async (userId: string) => (await a.call('POST', '/v1/items/tok-inv/invites', { userId }, SVC)).body.invite as string;
    const inv = await invite('u-inv');
    const first = await a.call('POST', '/v1/join', { invite: inv }, null);
    expect(first.status).toBe(202);
    expect(first.body.admissionToken).toBeUndefined();
    const [pulled] = (await a.call('POST', '/v1/items/tok-inv/pull', { max: 1 }, SVC)).body.tickets;
    expect(pulled.ticketId).toBe(first.body.ticketId);
    const polled = (await waitFor(() => a.call('GET', `/v1/tickets/${first.body.ticketId}`, undefined, null), (r) => r.body.state === 'admitted', 5000)).body;
    // The invite used again: the ticket it made, admitted, with the token a poll shows.
    const again = await b.call('POST', '/v1/join', { invite: inv }, null);
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ ticketId: first.body.ticketId, state: 'admitted', admissionToken: polled.admissionToken });
    // Another invite for the same user: the ticket the user holds, with its token.
    const other = await a.call('POST', '/v1/join', { invite: await invite('u-inv') }, null);
    expect(other.status).toBe(200);
    expect(other.body).toMatchObject({ ticketId: first.body.ticketId, state: 'admitted', admissionToken: polled.admissionToken });
    // Succeeded: still carried.
    await a.call('POST', `/v1/tickets/${first.body.ticketId}/outcome`, { leaseId: pulled.leaseId, status: 'succeeded' }, SVC);
    const done = await a.call('POST', '/v1/join', { invite: inv }, null);
    expect(done.body).toMatchObject({ state: 'succeeded', admissionToken: expect.any(String) });
    expect((await introspect(b, done.body.admissionToken)).body).toMatchObject({ active: true, aud: 'tok-inv', sub: 'u-inv' });
  });

  it("confines a scoped key's introspection and revocation to its items: another item's token is 403 whatever its state, and stays active", async () => {
    const inside = (await admitted('tok-in-1')).view.admissionToken as string;
    const outside = (await admitted('tok-out-1')).view.admissionToken as string;
    const call = (path: string, token: string, key = APP) => a.call('POST', path, { token }, key);
    const forged = (t: string) => t.slice(0, -3) + (t.endsWith('AAA') ? 'BBA' : 'AAA');
    expect(await call('/v1/tokens/introspect', inside)).toMatchObject({ status: 200, body: { active: true, aud: 'tok-in-1' } });
    expect(await call('/v1/tokens/introspect', forged(inside))).toMatchObject({ status: 200, body: { active: false } });
    expect(await call('/v1/tokens/introspect', 'garbage')).toMatchObject({ status: 200, body: { active: false } });
    // Another item's token: the same 403 valid, forged, revoked or expired, so the key learns nothing of it.
    for (const path of ['/v1/tokens/introspect', '/v1/tokens/revoke']) {
      const r = await call(path, outside);
      expect(r.status, path).toBe(403);
      expect(r.body.error.code).toBe('forbidden');
      expect((await call(path, forged(outside))).status, path).toBe(403);
    }
    expect((await introspect(b, outside)).body.active).toBe(true); // not revoked by the refused call
    // (Made just before it is revoked: a 1 s token made at the start had expired on a busy machine
    // before the calls above were done, and was no longer revocable.)
    const expiring = (await admitted('tok-out-2', 'u1', { tokenTtlMs: 2000 })).view.admissionToken as string;
    expect((await a.call('POST', '/v1/tokens/revoke', { token: expiring }, SVC)).body.revoked).toBe(true);
    expect((await call('/v1/tokens/introspect', expiring)).status).toBe(403);
    const until = Date.now() + 5000;
    while ((await introspect(a, expiring)).body.active !== false && Date.now() < until) await new Promise((r) => setTimeout(r, 200));
    const exp = (JSON.parse(Buffer.from(expiring.split('.')[1]!, 'base64url').toString()) as { exp: number }).exp * 1000;
    await new Promise((r) => setTimeout(r, Math.max(0, exp - Date.now()) + 1100)); // past its exp too
    expect((await call('/v1/tokens/introspect', expiring)).status).toBe(403);
    // Its own item's token: revoked, then inactive.
    expect(await call('/v1/tokens/revoke', inside)).toMatchObject({ status: 200, body: { revoked: true } });
    expect((await call('/v1/tokens/introspect', inside)).body.active).toBe(false);
  });
});

/** The same bytes, another spelling: the signature's last character with its unused low bits changed (an Ed25519 signature is 64 bytes: 86 characters, 4 bits to spare). */
function respelt(token: string): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const last = alphabet.indexOf(token.at(-1)!);
  return token.slice(0, -1) + alphabet[last ^ 1];
}
