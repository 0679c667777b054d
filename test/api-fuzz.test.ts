import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { errorCatalogue } from '../src/kernel/errors.js';
import { OPERATOR, SERVICE, testApp } from './support/app.js';

const t = await testApp();

describe('random input at every endpoint', () => {
  it('never gets a 5xx: only 2xx, or 4xx with a catalogued error code', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/fz', { handler: 'external' });
    const real = (await call('POST', '/v1/items/fz/tickets', { userId: 'u' }, SERVICE)).body.ticketId as string;

    const endpoints: [string, (id: string) => string][] = [
      ['PUT', (id) => `/v1/items/${id}`],
      ['GET', (id) => `/v1/items/${id}`],
      ['DELETE', (id) => `/v1/items/${id}x`],
      ['PATCH', (id) => `/v1/items/${id}/gate`],
      ['POST', (id) => `/v1/items/${id}/tickets`],
      ['POST', (id) => `/v1/items/${id}/pull`],
      ['GET', (id) => `/v1/tickets/${id}`],
      ['DELETE', (id) => `/v1/tickets/${id}`],
      ['POST', (id) => `/v1/tickets/${id}/outcome`],
      ['GET', () => '/v1/items'],
    ];
    const body = fc.oneof(
      fc.jsonValue(),
      fc.string(),
      fc.record({ userId: fc.string(), payload: fc.jsonValue() }, { requiredKeys: [] }),
      fc.record({ handler: fc.constantFrom('seckill', 'coupon', 'webhook', 'external', 'x'), config: fc.jsonValue(), capacity: fc.jsonValue(), opensAt: fc.string(), gate: fc.jsonValue() }, { requiredKeys: [] }),
      fc.record({ mode: fc.string(), rate: fc.jsonValue(), maxInFlight: fc.jsonValue() }, { requiredKeys: [] }),
      fc.record({ max: fc.jsonValue(), leaseMs: fc.jsonValue(), leaseId: fc.string(), status: fc.constantFrom('succeeded', 'rejected', 'failed', 'x'), retry: fc.jsonValue() }, { requiredKeys: [] }),
    );
    const id = fc.oneof(fc.constant('fz'), fc.constant(real), fc.string({ maxLength: 200 }).map(encodeURIComponent), fc.constant(real.slice(0, -1) + 'Q'));
    const key = fc.constantFrom(OPERATOR, SERVICE, 'nope', null);
    const contentType = fc.constantFrom('application/json', 'text/plain', 'application/json; charset=utf-8', 'application/x-www-form-urlencoded');

    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: endpoints.length - 1 }), id, body, key, contentType, async (e, itemOrTicket, b, k, ct) => {
        const [method, path] = endpoints[e];
        if (path(itemOrTicket) === '/v1/items/fz' && method === 'PUT') return; // keep the fixture item
        const res = await call(method, path(itemOrTicket), method === 'GET' || method === 'DELETE' ? undefined : b === undefined ? 'null' : JSON.stringify(b), k, { 'content-type': ct });
        expect(res.status, `${method} ${path(itemOrTicket)} ${JSON.stringify(b)?.slice(0, 80)}`).toBeLessThan(500);
        if (res.status >= 400) expect(Object.keys(errorCatalogue)).toContain(res.body?.error?.code);
      }),
      { numRuns: 400 },
    );
  });

  it('never gets a 5xx on any route the OpenAPI document lists (path parameters, bodies and keys at random)', async () => {
    const { call } = t.build();
    await call('PUT', '/v1/items/fy', { handler: 'seckill', config: { stock: 5 } });
    const real = (await call('POST', '/v1/items/fy/tickets', { userId: 'u' }, SERVICE)).body.ticketId as string;
    const doc = (await call('GET', '/openapi.json', undefined, null)).body as { paths: Record<string, Record<string, unknown>> };
    // Every route but the ticket's event stream, which stays open while the ticket lives (its own tests).
    const routes = Object.entries(doc.paths).flatMap(([p, ops]) => (p.endsWith('/events') ? [] : Object.keys(ops).map((m) => [m.toUpperCase(), p] as const)));
    expect(routes.length).toBeGreaterThan(25);
    const segment = fc.oneof(fc.constant('fy'), fc.constant(real), fc.string({ maxLength: 60 }).map(encodeURIComponent), fc.constant('x'.repeat(300)));
    const fields = fc.constantFrom('userId', 'payload', 'handler', 'config', 'gate', 'mode', 'rate', 'maxInFlight', 'itemId', 'ticketId', 'leaseId', 'status', 'result', 'reason', 'max', 'leaseMs', 'name', 'scopes', 'key', 'token', 'invite', 'solution', 'count', 'seed', 'opensAt', 'closesAt', 'until', 'stock', 'quotas');
    const body = fc.oneof(fc.jsonValue(), fc.string(), fc.dictionary(fields, fc.jsonValue()));
    const key = fc.constantFrom(OPERATOR, SERVICE, 'nope', null);
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: routes.length - 1 }), segment, segment, body, key, async (r, first, second, b, k) => {
        const [method, template] = routes[r];
        let n = 0;
        const path = template.replace(/\{[^}]+\}/g, () => (n++ === 0 ? first : second));
        if (path === '/v1/items/fy' && (method === 'PUT' || method === 'DELETE')) return; // keep the fixture item
        const res = await call(method, path, method === 'GET' || method === 'DELETE' ? undefined : JSON.stringify(b), k, { 'content-type': 'application/json' });
        expect(res.status, `${method} ${path} ${JSON.stringify(b)?.slice(0, 80)}`).not.toBeGreaterThanOrEqual(500);
        if (res.status >= 400) expect(Object.keys(errorCatalogue)).toContain(res.body?.error?.code);
      }),
      { numRuns: 1000 },
    );
  });
});
