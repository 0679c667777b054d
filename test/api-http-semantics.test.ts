import { describe, expect, it } from 'vitest';
import { OPERATOR, SERVICE, testApp } from './support/app.js';

const t = await testApp();

describe('media types and methods', () => {
  it('answers 415 unsupported_media_type to a JSON endpoint sent another type, or none', async () => {
    const { app, call } = t.build();
    await call('PUT', '/v1/items/m1', { handler: 'external' });
    const body = JSON.stringify({ userId: 'u1' });
    const asText = await call('POST', '/v1/items/m1/tickets', body, SERVICE, { 'content-type': 'text/plain' });
    expect(asText.status).toBe(415);
    expect(asText.body.error.code).toBe('unsupported_media_type');
    expect(asText.body.error.message).toMatch(/application\/json/);
    expect(asText.headers.get('cache-control')).toBe('no-store');
    // No Content-Type at all (a Uint8Array body gets none from Request).
    const untyped = await app.request('/v1/items/m1/tickets', { method: 'POST', headers: { authorization: `Bearer ${SERVICE}` }, body: new TextEncoder().encode(body) });
    expect(untyped.status).toBe(415);
    expect((await untyped.json()).error.code).toBe('unsupported_media_type');
    // The zod-openapi routes say the same.
    const put = await call('PUT', '/v1/items/m2', JSON.stringify({ handler: 'external' }), OPERATOR, { 'content-type': 'application/x-www-form-urlencoded' });
    expect(put.status).toBe(415);
    expect(put.body.error.code).toBe('unsupported_media_type');
    const gate = await call('PATCH', '/v1/items/m1/gate', JSON.stringify({ mode: 'closed' }), OPERATOR, { 'content-type': 'text/plain' });
    expect(gate.body.error.code).toBe('unsupported_media_type');
    // JSON with parameters is JSON; an empty join is still a 400 naming the field.
    expect((await call('POST', '/v1/items/m1/tickets', body, SERVICE, { 'content-type': 'application/json; charset=utf-8' })).status).toBe(202);
    const empty = await app.request('/v1/items/m1/tickets', { method: 'POST', headers: { authorization: `Bearer ${SERVICE}` } });
    expect(empty.status).toBe(400);
  });

  it.each(['application/json;', 'application/json ; charset=utf-8', 'application/vnd.v1+json', 'Application/JSON'])('takes a body typed %s on every JSON route alike (one rule: the join took these, the others 415)', async (type) => {
    const { call } = t.build();
    const typed = (method: string, path: string, body: unknown, key: string) => call(method, path, JSON.stringify(body), key, { 'content-type': type });
    expect((await typed('PUT', '/v1/items/m3', { handler: 'external' }, OPERATOR)).status).toBe(201);
    expect((await typed('PATCH', '/v1/items/m3/gate', { mode: 'closed' }, OPERATOR)).status).toBe(200);
    expect((await typed('POST', '/v1/items/m3/tickets', { userId: 'u1' }, SERVICE)).status).toBe(202);
    expect((await typed('POST', '/v1/items/m3/pull', { max: 1 }, SERVICE)).status).toBe(200);
    // And what is not JSON is 415 on them all.
    for (const [method, path, key] of [['PUT', '/v1/items/m3', OPERATOR], ['PATCH', '/v1/items/m3/gate', OPERATOR], ['POST', '/v1/items/m3/tickets', SERVICE], ['POST', '/v1/items/m3/pull', SERVICE]] as const)
      expect((await call(method, path, '{}', key, { 'content-type': 'application/jsonx' })).status, `${method} ${path}`).toBe(415);
  });

  it('answers 405 method_not_allowed with Allow for a wrong method on a known path', async () => {
    const { call } = t.build();
    const patch = await call('PATCH', '/v1/tickets/whatever', {}, null);
    expect(patch.status).toBe(405);
    expect(patch.body.error.code).toBe('method_not_allowed');
    expect(patch.headers.get('allow')).toBe('GET, HEAD, DELETE');
    const post = await call('POST', '/v1/items/x1', { handler: 'external' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')?.split(', ').sort()).toEqual(['DELETE', 'GET', 'HEAD', 'PUT']);
    expect((await call('GET', '/v1/items/x1/tickets', undefined, SERVICE)).headers.get('allow')).toBe('POST');
    // Unknown paths stay 404, and a known path with an unknown id is the resource's own 404.
    expect((await call('GET', '/v1/nothing')).body.error.code).toBe('not_found');
    expect((await call('GET', '/v1/tickets/nope', undefined, null)).body.error.code).toBe('ticket_not_found');
  });
});

describe('CORS and caching', () => {
  it('lets any origin read and cancel a ticket by default, preflight included', async () => {
    const { app, call } = t.build();
    await call('PUT', '/v1/items/c1', { handler: 'external' });
    const id = (await call('POST', '/v1/items/c1/tickets', { userId: 'u1' }, SERVICE)).body.ticketId as string;
    const pre = await app.request(`/v1/tickets/${id}`, {
      method: 'OPTIONS',
      headers: { origin: 'https://shop.example', 'access-control-request-method': 'DELETE' },
    });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe('*');
    expect(pre.headers.get('access-control-allow-methods')).toContain('DELETE');
    const get = await call('GET', `/v1/tickets/${id}`, undefined, null, { origin: 'https://shop.example' });
    expect(get.status).toBe(200);
    expect(get.headers.get('access-control-allow-origin')).toBe('*');
    const missing = await call('GET', '/v1/tickets/nope', undefined, null, { origin: 'https://shop.example' });
    expect(missing.headers.get('access-control-allow-origin')).toBe('*'); // the page can read the 404 too
    const del = await call('DELETE', `/v1/tickets/${id}`, undefined, null, { origin: 'https://shop.example' });
    expect(del.headers.get('access-control-allow-origin')).toBe('*');
    // Keyed endpoints are not opened to browsers.
    const join = await call('POST', '/v1/items/c1/tickets', { userId: 'u2' }, SERVICE, { origin: 'https://shop.example' });
    expect(join.headers.get('access-control-allow-origin')).toBeNull();
    const outcome = await app.request(`/v1/tickets/${id}/outcome`, { method: 'OPTIONS', headers: { origin: 'https://shop.example', 'access-control-request-method': 'POST' } });
    expect(outcome.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('answers only the configured origins when corsOrigins is a list', async () => {
    const { call } = t.build({ corsOrigins: ['https://shop.example'] });
    await call('PUT', '/v1/items/c2', { handler: 'external' });
    const id = (await call('POST', '/v1/items/c2/tickets', { userId: 'u1' }, SERVICE)).body.ticketId as string;
    const ok = await call('GET', `/v1/tickets/${id}`, undefined, null, { origin: 'https://shop.example' });
    expect(ok.headers.get('access-control-allow-origin')).toBe('https://shop.example');
    expect(ok.headers.get('vary')).toMatch(/origin/i);
    const other = await call('GET', `/v1/tickets/${id}`, undefined, null, { origin: 'https://evil.example' });
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('marks ticket views and errors no-store, and the reference cacheable', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/c3', { handler: 'external' });
    const join = await call('POST', '/v1/items/c3/tickets', { userId: 'u1' }, SERVICE);
    expect(join.headers.get('cache-control')).toBe('no-store');
    expect((await call('GET', `/v1/tickets/${join.body.ticketId}`, undefined, null)).headers.get('cache-control')).toBe('no-store');
    expect((await call('GET', '/v1/tickets/nope', undefined, null)).headers.get('cache-control')).toBe('no-store');
    expect((await call('GET', '/v1/items/c3', undefined, 'wrong')).headers.get('cache-control')).toBe('no-store');
    expect((await call('GET', '/openapi.json', undefined, null)).headers.get('cache-control')).toBe('public, max-age=300');
    expect((await call('GET', '/docs', undefined, null)).headers.get('cache-control')).toBe('public, max-age=300');
  });
});

describe('item status (service)', () => {
  it("shows a service key the item's public state and nothing more", async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/s1', { handler: 'seckill', config: { stock: 7 }, closesAt: '2099-01-01T00:00:00Z', gate: { mode: 'closed' } });
    await call('POST', '/v1/items/s1/tickets', { userId: 'u1' }, SERVICE);
    await call('POST', '/v1/items/s1/tickets', { userId: 'u2' }, SERVICE);
    const res = await call('GET', '/v1/items/s1/status', undefined, SERVICE);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ itemId: 's1', state: 'paused', opensAt: null, closesAt: '2099-01-01T00:00:00.000Z', remaining: 7, waiting: 2 });
    expect((await call('GET', '/v1/items/s1/status', undefined, OPERATOR)).status).toBe(200);
    expect((await call('GET', '/v1/items/s1/status', undefined, null)).status).toBe(401);
    expect((await call('GET', '/v1/items/nope/status', undefined, SERVICE)).body.error.code).toBe('item_not_found');
    expect((await call('GET', '/v1/items/-bad/status', undefined, SERVICE)).status).toBe(400);
  });
});
