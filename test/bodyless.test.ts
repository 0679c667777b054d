import { describe, expect, it } from 'vitest';
import { OPERATOR, SERVICE, testApp } from './support/app.js';

/**
 * An endpoint that takes no body refuses one instead of ignoring it (a contract review): `PUT
 * …/blocks/alice` with {"blocked":false} blocked alice, and a close, a cancel and a key rotation
 * went ahead under a body of any type. Nothing changes on a refusal; the key is checked first. An
 * empty body, an empty object or `null` (what some clients send with every call) is no body.
 */
const t = await testApp();

describe('a body sent to an endpoint that takes none', () => {
  it('is 400 and changes nothing; an empty body, {} or null is taken as none', async () => {
    const { call } = t.build();
    const item = t.uniqueItem();
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'external', gate: { mode: 'closed' } })).status).toBe(201);

    const block = await call('PUT', `/v1/items/${item}/blocks/alice`, { blocked: false });
    expect(block.status).toBe(400);
    expect(block.body.error.code).toBe('invalid_request');
    // Not blocked: alice joins.
    expect((await call('POST', `/v1/items/${item}/tickets`, { userId: 'alice' }, SERVICE)).status).toBe(202);

    expect((await call('DELETE', `/v1/items/${item}`, 'please do not', undefined, { 'content-type': 'text/plain' })).status).toBe(400);
    expect((await call('GET', `/v1/items/${item}`)).body.state).not.toBe('closed');
    expect((await call('POST', '/v1/token-keys/rotate', '{not json')).status).toBe(400);
    // The key first: no key is 401, a service key on an operator's endpoint 403, body or not.
    expect((await call('PUT', `/v1/blocks/carol`, { blocked: false }, null)).status).toBe(401);
    expect((await call('PUT', `/v1/blocks/carol`, { blocked: false }, SERVICE)).status).toBe(403);

    // Bounded as any body is (DELETE was not: a 300 MiB body was read whole, ~1 GB, before its 400).
    expect((await call('DELETE', `/v1/items/${item}`, 'x'.repeat(64 * 1024), undefined, { 'content-type': 'text/plain' })).status).toBe(413);
    for (const none of [undefined, '', '{}', '{ }', ' null ', '\ufeff{}']) expect((await call('PUT', `/v1/blocks/bob`, none)).status, JSON.stringify(none)).toBe(200);
    expect((await call('DELETE', `/v1/items/${item}`, '{}')).status).toBe(200);
  });

  it('is refused by every endpoint the OpenAPI document lists without a request body', async () => {
    const { app } = t.build();
    const doc = (await (await app.request('/openapi.json')).json()) as { paths: Record<string, Record<string, { requestBody?: unknown }>> };
    const bodyless = Object.entries(doc.paths).flatMap(([path, ops]) =>
      Object.entries(ops)
        .filter(([method, op]) => ['post', 'put', 'patch', 'delete'].includes(method) && !op.requestBody)
        .map(([method]) => [method.toUpperCase(), path.replace(/\{(\w+)\}/g, (_, p: string) => (p === 'ticketId' ? 'bm90.1.AAAAAAAAAAAAAAAAAAAAAA' : `x-${p}`))] as const),
    );
    expect(bodyless.length).toBeGreaterThanOrEqual(8);
    for (const [method, path] of bodyless) {
      const statuses: number[] = [];
      for (const key of [OPERATOR, SERVICE]) {
        const res = await app.request(path, { method, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: '{"x":1}' });
        // Refused for its body, or for its key (the other role's endpoints): never done.
        expect([400, 403], `${method} ${path}`).toContain(res.status);
        if (res.status === 400) expect(((await res.json()) as { error: { message: string } }).error.message, `${method} ${path}`).toMatch(/takes no body/);
        statuses.push(res.status);
      }
      expect(statuses, `${method} ${path}`).toContain(400);
    }
  });
});
