import { describe, expect, it } from 'vitest';
import { SERVICE, testApp } from './support/app.js';

/**
 * An endpoint that takes no body refuses one instead of ignoring it (a contract review): `PUT
 * …/blocks/alice` with {"blocked":false} blocked alice, and a close, a cancel and a key rotation
 * went ahead under a body of any type. Nothing changes on a refusal. An empty body, `{}` or `null`
 * (what some clients send with every call) is no body.
 */
const t = await testApp();

describe('a body sent to an endpoint that takes none', () => {
  it('is 400 and changes nothing; an empty body, {} or null is taken as none', async () => {
    const { call, uniqueItem } = { ...t.build(), uniqueItem: t.uniqueItem };
    const item = uniqueItem();
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'external', gate: { mode: 'closed' } })).status).toBe(201);

    const block = await call('PUT', `/v1/items/${item}/blocks/alice`, { blocked: false });
    expect(block.status).toBe(400);
    expect(block.body.error.code).toBe('invalid_request');
    // Not blocked: alice joins.
    expect((await call('POST', `/v1/items/${item}/tickets`, { userId: 'alice' }, SERVICE)).status).toBe(202);

    expect((await call('DELETE', `/v1/items/${item}`, 'please do not', undefined, { 'content-type': 'text/plain' })).status).toBe(400);
    expect((await call('GET', `/v1/items/${item}`)).body.state).not.toBe('closed');
    expect((await call('POST', '/v1/token-keys/rotate', '{not json')).status).toBe(400);

    for (const none of [undefined, '', '{}', ' null ']) expect((await call('PUT', `/v1/blocks/bob-${String(none).trim()}`, none)).status, JSON.stringify(none)).toBe(200);
    expect((await call('DELETE', `/v1/items/${item}`, '{}')).status).toBe(200);
  });
});
