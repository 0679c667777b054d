import { afterAll, describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { proxyFor } from './support/proxy.js';
import { testRedis } from './support/redis.js';

/**
 * A revoke answered 503 while Postgres is away revoked nothing (docs/api.md): a caller that acts on
 * it (asks again, or decides not to) must not find the token revoked later behind its back. It was
 * kept for the token loop, which wrote it to Postgres two seconds after Postgres came back.
 */
const { newPrefix } = testRedis();
const db = await testDb();
const { proxy, url } = await proxyFor(db.url);
const { call } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: url });
afterAll(() => proxy.close());
const introspect = (token: string) => call('POST', '/v1/tokens/introspect', { token }, SVC).then((r) => r.body.active);

describe('token revocation while Postgres is away', () => {
  it('answers 503 and revokes nothing, then or later; a token of a key it cannot look for is 503 too', { timeout: 60_000 }, async () => {
    expect((await call('PUT', '/v1/items/rv', { handler: 'external', tokenTtlMs: 60_000 })).status).toBe(201);
    const t = (await call('POST', '/v1/items/rv/tickets', { userId: 'u1' }, SVC)).body.ticketId as string;
    expect((await call('POST', '/v1/items/rv/pull', { max: 1 }, SVC)).body.tickets).toHaveLength(1);
    const token = (await waitFor(() => call('GET', `/v1/tickets/${t}`, undefined, null), (r) => typeof r.body.admissionToken === 'string', 5000)).body.admissionToken as string;
    await proxy.cut();
    try {
      const r = await waitFor(() => call('POST', '/v1/tokens/revoke', { token }, SVC), (x) => x.status !== 200, 20_000);
      expect(r.status).toBe(503);
    } finally {
      await proxy.restore();
    }
    // A token of a key this daemon has not loaded (rotated in on another daemon meanwhile): the
    // key cannot be looked for, so the answer is 503, not `active: false` for what may be valid.
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const unknownKid = `${b64({ alg: 'EdDSA', kid: 'not-loaded-here', typ: 'JWT' })}.${b64({ sub: 'u1', aud: 'rv', jti: 'x', exp: 9_999_999_999 })}.${'A'.repeat(86)}`;
    await proxy.cut();
    try {
      const r = await waitFor(() => call('POST', '/v1/tokens/introspect', { token: unknownKid }, SVC), (x) => x.status !== 200, 20_000);
      expect(r.status).toBe(503);
    } finally {
      await proxy.restore();
    }
    // Past two rounds of the token loop (every 2 s), which wrote such a revoke once Postgres was back.
    await waitFor(() => call('GET', '/readyz', undefined, null), (x) => x.status === 200, 20_000);
    await new Promise((r) => setTimeout(r, 4500));
    expect(await introspect(token)).toBe(true);
    // And a revoke now holds.
    expect((await call('POST', '/v1/tokens/revoke', { token }, SVC)).body.revoked).toBe(true);
    expect(await introspect(token)).toBe(false);
  });
});
