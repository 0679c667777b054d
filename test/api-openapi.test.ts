import SwaggerParser from '@apidevtools/swagger-parser';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { OPERATOR, SERVICE, testApp } from './support/app.js';

const t = await testApp();

type Doc = { paths: Record<string, Record<string, any>>; components: { schemas: Record<string, any> } };

/** Validates a real answer against the schema the document gives for that path, method and status. */
function checker(doc: Doc) {
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats.default(ajv);
  return (path: string, method: string, res: { status: number; body: unknown; headers: Headers }) => {
    const response = doc.paths[path]?.[method]?.responses?.[res.status];
    expect(response, `${method} ${path} documents ${res.status}`).toBeTruthy();
    for (const name of Object.keys(response.headers ?? {})) expect(res.headers.get(name), `${method} ${path} ${res.status} sends ${name}`).not.toBeNull();
    const schema = response.content['application/json'].schema;
    // Refs point at #/components: compile with the components at the root.
    const validate = ajv.compile({ ...schema, components: doc.components });
    expect(validate(res.body), `${method} ${path} ${res.status}: ${ajv.errorsText(validate.errors)}`).toBe(true);
  };
}

describe('the OpenAPI document', () => {
  it('is a valid OpenAPI 3.1 document of every endpoint, operations included', async () => {
    const { call } = t.build();
    const doc = (await call('GET', '/openapi.json', undefined, null)).body;
    await expect(SwaggerParser.validate(structuredClone(doc))).resolves.toBeTruthy();
    expect(doc.openapi).toBe('3.1.0');
    for (const p of ['/healthz', '/readyz', '/metrics', '/openapi.json', '/docs', '/v1/items/{itemId}/status']) expect(doc.paths[p], p).toBeTruthy();
  });

  it('shows the bounds of what is checked in two steps (a query number read as digits, a returnUrl checked before it is parsed)', async () => {
    const { call } = t.build();
    const doc: Doc = (await call('GET', '/openapi.json', undefined, null)).body;
    const param = (path: string, name: string) => doc.paths[path].get.parameters.find((p: { name: string }) => p.name === name).schema;
    expect(param('/v1/items/{itemId}/series', 'windowMs')).toMatchObject({ type: 'integer', minimum: 1000, maximum: 960000, default: 900000 });
    expect(param('/v1/items/{itemId}/audit', 'limit')).toMatchObject({ type: 'integer', minimum: 1, maximum: 1000, default: 100 });
    expect(JSON.stringify(doc.components.schemas.WaitingRoom.properties.returnUrl)).toContain('"format":"uri"');
  });

  it('documents headers, per-handler config, results, and no 401/403 where no key is asked', async () => {
    const { call } = t.build();
    const doc: Doc = (await call('GET', '/openapi.json', undefined, null)).body;
    const join = doc.paths['/v1/items/{itemId}/tickets'].post.responses;
    expect(join[202].headers.Location).toBeTruthy();
    expect(join[429].headers['Retry-After']).toBeTruthy();
    expect(join[415]).toBeTruthy();
    for (const [p, m] of [['/v1/tickets/{ticketId}', 'get'], ['/v1/tickets/{ticketId}', 'delete'], ['/healthz', 'get'], ['/readyz', 'get']])
      expect(Object.keys(doc.paths[p][m].responses), `${m} ${p}`).not.toContain('401'), expect(Object.keys(doc.paths[p][m].responses)).not.toContain('403');
    const s = doc.components.schemas;
    expect(s.HandlerConfig.oneOf.map((r: { $ref: string }) => r.$ref.split('/').pop())).toEqual(['SeckillConfig', 'CouponConfig', 'WebhookConfig', 'ExternalConfig']);
    expect(Object.keys(s.SeckillConfig.properties)).toEqual(['stock', 'shards', 'reserveMs']);
    expect(s.SeckillConfig.required).toEqual(['stock']);
    expect(Object.keys(s.CouponConfig.properties)).toEqual(['total', 'perUser', 'shards']);
    expect(Object.keys(s.WebhookConfig.properties)).toEqual(['url', 'timeoutMs', 'headers', 'secret']);
    expect(s.ExternalConfig.properties ?? {}).toEqual({});
    expect(s.Ticket.properties.outcome.properties.result.description).toMatch(/orderId/);
  });

  it('describes the answers the API really gives (join, poll, 400, 404, 409, item status)', async () => {
    const { call } = t.build();
    const doc: Doc = (await call('GET', '/openapi.json', undefined, null)).body;
    const check = checker(doc);
    const put = await call('PUT', '/v1/items/o1', { handler: 'seckill', config: { stock: 3 } });
    check('/v1/items/{itemId}', 'put', put);
    const join = await call('POST', '/v1/items/o1/tickets', { userId: 'u1', payload: { a: 1 } }, SERVICE);
    expect(join.status).toBe(202);
    check('/v1/items/{itemId}/tickets', 'post', join);
    check('/v1/items/{itemId}/tickets', 'post', await call('POST', '/v1/items/o1/tickets', { userId: 'u1' }, SERVICE));
    check('/v1/tickets/{ticketId}', 'get', await call('GET', `/v1/tickets/${join.body.ticketId}`, undefined, null));
    const bad = await call('POST', '/v1/items/o1/tickets', { userId: 7 }, SERVICE);
    expect(bad.status).toBe(400);
    check('/v1/items/{itemId}/tickets', 'post', bad);
    check('/v1/tickets/{ticketId}', 'get', await call('GET', '/v1/tickets/nope', undefined, null));
    const cancelled = await call('DELETE', `/v1/tickets/${join.body.ticketId}`, undefined, null);
    check('/v1/tickets/{ticketId}', 'delete', cancelled);
    check('/v1/tickets/{ticketId}', 'get', await call('GET', `/v1/tickets/${join.body.ticketId}`, undefined, null)); // terminal, with outcome
    const again = await call('DELETE', `/v1/tickets/${join.body.ticketId}`, undefined, null);
    expect(again.status).toBe(200); // a repeated cancel reads the cancelled ticket
    check('/v1/tickets/{ticketId}', 'delete', again);
    check('/v1/items/{itemId}', 'get', await call('GET', '/v1/items/o1'));
    check('/v1/items/{itemId}/status', 'get', await call('GET', '/v1/items/o1/status', undefined, SERVICE));
    check('/healthz', 'get', await call('GET', '/healthz', undefined, null));
    check('/readyz', 'get', await call('GET', '/readyz', undefined, null));
    const full = await call('PUT', '/v1/items/o2', { handler: 'external', capacity: 1 });
    check('/v1/items/{itemId}', 'put', full);
    await call('POST', '/v1/items/o2/tickets', { userId: 'u1' }, SERVICE);
    const refused = await call('POST', '/v1/items/o2/tickets', { userId: 'u2' }, SERVICE);
    expect(refused.status).toBe(429);
    check('/v1/items/{itemId}/tickets', 'post', refused);
    const pulled = await call('POST', '/v1/items/o2/pull', { max: 1 }, SERVICE);
    check('/v1/items/{itemId}/pull', 'post', pulled);
    const [p] = pulled.body.tickets;
    const admitted = await call('DELETE', `/v1/tickets/${p.ticketId}`, undefined, null);
    expect(admitted.status).toBe(409);
    check('/v1/tickets/{ticketId}', 'delete', admitted);
    check('/v1/tickets/{ticketId}/outcome', 'post', await call('POST', `/v1/tickets/${p.ticketId}/outcome`, { leaseId: p.leaseId, status: 'succeeded', result: { ref: 'A1' } }, SERVICE));
    check('/v1/items/{itemId}', 'put', await call('PUT', '/v1/items/o3', { handler: 'webhook', config: { url: 'https://shop.example/x', headers: { 'x-k': 'v' } } }, OPERATOR));
  });

  it('rejects configs in the document as the handlers do', async () => {
    const { call } = t.build();
    const doc: Doc = (await call('GET', '/openapi.json', undefined, null)).body;
    const ajv = new Ajv2020({ strict: false });
    addFormats.default(ajv);
    const valid = ajv.compile({ $ref: '#/components/schemas/HandlerConfig', components: doc.components });
    expect(valid({ stock: 10 })).toBe(true);
    expect(valid({ total: 10, perUser: 2 })).toBe(true);
    expect(valid({ url: 'https://x.example/h', timeoutMs: 2000 })).toBe(true);
    expect(valid({})).toBe(true);
    expect(valid({ stock: -1 })).toBe(false);
    expect(valid({ stock: 1, perUser: 1 })).toBe(false);
  });
});

describe('/docs', () => {
  it('serves Swagger UI from the daemon itself, under a strict CSP, with its assets', async () => {
    const { app } = t.build();
    const page = await app.request('/docs');
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    const csp = page.headers.get('content-security-policy')!;
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toMatch(/unsafe-eval|https?:/);
    const html = await page.text();
    expect(html).not.toMatch(/<script>|https?:\/\//); // no inline script, nothing from elsewhere
    const assets = [...html.matchAll(/(?:src|href)="(\/docs\/assets\/[^"]+)"/g)].map((m) => m[1]);
    expect(assets.map((a) => a.split('/').pop()).sort()).toEqual(['favicon-32x32.png', 'start.js', 'swagger-ui-bundle.js', 'swagger-ui.css']);
    const types: Record<string, RegExp> = { css: /^text\/css/, js: /^text\/javascript/, png: /^image\/png/ };
    for (const a of assets) {
      const res = await app.request(a, { headers: { 'accept-encoding': 'gzip' } });
      expect(res.status, a).toBe(200);
      expect(res.headers.get('content-type')).toMatch(types[a.split('.').pop()!]);
      expect(res.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
      const bytes = Buffer.from(await res.arrayBuffer());
      const body = res.headers.get('content-encoding') === 'gzip' ? gunzipSync(bytes) : bytes;
      expect(body.length, a).toBeGreaterThan(100);
    }
    const start = (await (await app.request(assets.find((a) => a.endsWith('start.js'))!)).text());
    expect(start).toContain("url: '/openapi.json'");
    expect((await app.request('/docs/assets/0000/swagger-ui.css')).status).toBe(404);
    expect((await app.request(assets[0].replace(/[^/]+$/, 'package.json'))).status).toBe(404);
  });
});
