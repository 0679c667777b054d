import { createServer } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { OPERATOR, SERVICE, testApp } from './support/app.js';
import { inProcessDaemon, SVC } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

/**
 * The join and the poll answer whole (src/api/answers.ts): their headers are written as one plain
 * object, past the middleware that adds headers to other answers. Over real HTTP (the path
 * @hono/node-server takes, which app.request does not), they must carry exactly what the others
 * would: JSON, no-store, Location on a new ticket, and the tickets' CORS.
 */
const { newPrefix } = testRedis();
const db = await testDb();
const open = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url });
const t = await testApp();
const listed = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url, env: { FLOODGATE_CORS_ORIGINS: 'https://shop.example' } });

async function raw(base: string, method: string, path: string, opts: { body?: unknown; key?: string; origin?: string } = {}) {
  const headers: Record<string, string> = {};
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  if (opts.key) headers.authorization = `Bearer ${opts.key}`;
  if (opts.origin) headers.origin = opts.origin;
  const res = await fetch(base + path, { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

/** The id (or a path ending in one) with its MAC's last bytes changed: 'AA' unless it ends so already (1 run in 256: its last character carries 2 bits). */
const forged = (id: string) => id.slice(0, -2) + (id.endsWith('AA') ? 'BB' : 'AA');

describe('the whole answers of join and poll, on the wire', () => {
  it('join with a coded body (Content-Encoding: gzip) over the wire: 415, as the route answers, never read as plain JSON', async () => {
    await open.define('coded', { handler: 'external', gate: { mode: 'closed' } });
    const res = await fetch(`${open.daemon.url}/v1/items/coded/tickets`, { method: 'POST', headers: { authorization: `Bearer ${SVC}`, 'content-type': 'application/json', 'content-encoding': 'gzip' }, body: '{"userId":"gz"}' });
    expect([res.status, (await res.json()).error?.code]).toEqual([415, 'unsupported_media_type']);
  });

  it('join: 202 with Location and no-store, then 200 for the same user; poll: JSON, no-store, CORS for any origin', async () => {
    await open.define('hot', { handler: 'external', gate: { mode: 'closed' } });
    const first = await raw(open.daemon.url, 'POST', '/v1/items/hot/tickets', { body: { userId: 'u1' }, key: SVC });
    expect(first.status).toBe(202);
    expect(first.headers.get('location')).toBe(`/v1/tickets/${first.body.ticketId}`);
    expect(first.headers.get('cache-control')).toBe('no-store');
    expect(first.headers.get('content-type')).toMatch(/^application\/json/);
    const again = await raw(open.daemon.url, 'POST', '/v1/items/hot/tickets', { body: { userId: 'u1' }, key: SVC });
    expect(again.status).toBe(200);
    expect(again.body.ticketId).toBe(first.body.ticketId);
    expect(again.headers.get('location')).toBeNull();
    expect(again.headers.get('cache-control')).toBe('no-store');

    const poll = await raw(open.daemon.url, 'GET', `/v1/tickets/${first.body.ticketId}`, { origin: 'https://anywhere.example' });
    expect(poll.status).toBe(200);
    expect(poll.body).toMatchObject({ ticketId: first.body.ticketId, state: 'waiting', position: 1 });
    expect(poll.headers.get('content-type')).toMatch(/^application\/json/);
    expect(poll.headers.get('cache-control')).toBe('no-store');
    expect(poll.headers.get('access-control-allow-origin')).toBe('*');
    expect(poll.headers.get('vary')).toBeNull();
    // An error on the same path goes through the middleware: the same two headers.
    const missing = await raw(open.daemon.url, 'GET', `/v1/tickets/${forged(first.body.ticketId)}`, { origin: 'https://anywhere.example' });
    expect(missing.status).toBe(404);
    expect(missing.headers.get('cache-control')).toBe('no-store');
    expect(missing.headers.get('access-control-allow-origin')).toBe('*');
  });

  it('poll with a list of origins: the listed one is allowed (Vary: Origin), another is not', async () => {
    await listed.define('hot', { handler: 'external', gate: { mode: 'closed' } });
    const t = await raw(listed.daemon.url, 'POST', '/v1/items/hot/tickets', { body: { userId: 'u1' }, key: SVC });
    const shop = await raw(listed.daemon.url, 'GET', `/v1/tickets/${t.body.ticketId}`, { origin: 'https://shop.example' });
    expect(shop.headers.get('access-control-allow-origin')).toBe('https://shop.example');
    expect(shop.headers.get('vary')).toBe('Origin');
    expect(shop.headers.get('cache-control')).toBe('no-store');
    const other = await raw(listed.daemon.url, 'GET', `/v1/tickets/${t.body.ticketId}`, { origin: 'https://evil.example' });
    expect(other.status).toBe(200);
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
    expect(other.headers.get('vary')).toBe('Origin');
  });

  it('a poll the cached view can answer is taken beneath the app, with the route\'s body and headers; everything else reaches the route', async () => {
    // The app as the daemon wires it, on a clock that moves only when told: whether the item's
    // cached view is fresh (FLOODGATE_CACHE_MS) is this test's to say, not the machine's speed.
    const clock = t.manualClock();
    const { app, call, metrics } = t.build({ clock, cacheMs: 1000 });
    await call('PUT', '/v1/items/beneath', { handler: 'external', gate: { mode: 'closed' } });
    const joined = await call('POST', '/v1/items/beneath/tickets', { userId: 'u1' }, SERVICE);
    const path = `/v1/tickets/${joined.body.ticketId}`;
    // The view read before the join does not hold the ticket: once it is old, a poll through the
    // route reads it again, and the cache can place the ticket from then on.
    clock.advance(1001);
    expect((await call('GET', path, undefined, null)).status).toBe(200);
    // Which requests the hot path takes, asked on a server of its own: taken → its answer; not → 599.
    const took: boolean[] = [];
    const server = createServer((req, res) => {
      took.push(app.hot(req, res));
      if (!took.at(-1)) res.writeHead(599).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const count = async () => (await metrics.httpDuration.get()).values.find((v) => v.metricName?.endsWith('_count') && v.labels.route === '/v1/tickets/:ticketId' && v.labels.status === '200')?.value ?? 0;
    try {
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const ask = (method: string, p: string, headers: Record<string, string> = {}, body?: string) => fetch(base + p, { method, headers, body }).then(async (r) => ({ status: r.status, headers: r.headers, text: await r.text() }));
      const before = await count();
      const hot = await ask('GET', path, { origin: 'https://anywhere.example' });
      expect(hot.status).toBe(200);
      // The route's answer to the same poll (app.request goes through Hono, never the hot path).
      const routed = await app.request(path, { headers: { origin: 'https://anywhere.example' } });
      expect(JSON.parse(hot.text)).toEqual(await routed.json());
      for (const h of ['content-type', 'cache-control', 'access-control-allow-origin', 'vary']) expect(hot.headers.get(h), h).toBe(routed.headers.get(h));
      expect(hot.headers.get('content-length')).toBe(String(Buffer.byteLength(hot.text)));
      expect((await ask('GET', path, { authorization: `Bearer ${SERVICE}` })).status).toBe(200); // a service key is no operator
      expect(took).toEqual([true, true]);
      // Both counted in the request histogram with the route's labels (+1 for the routed poll).
      expect(await count()).toBe(before + 3);

      // Left to the route: an operator's poll (it shows `source`), HEAD, a query, a body, a forged
      // or unknown id, other paths and methods, and a view grown old.
      took.length = 0;
      await ask('GET', path, { authorization: `Bearer ${OPERATOR}` });
      await ask('HEAD', path);
      await ask('GET', `${path}?x=1`);
      await ask('DELETE', path);
      await ask('GET', forged(path));
      await ask('GET', '/v1/tickets/not-a-ticket');
      await ask('GET', `${path}/events`);
      await ask('GET', `/v1/tickets/${encodeURIComponent(joined.body.ticketId)}%2F`);
      await ask('POST', path, { 'content-type': 'application/json' }, '{}');
      clock.advance(1001);
      await ask('GET', path);
      expect(took).toEqual(Array(10).fill(false));
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
    expect((await call('GET', path, undefined, OPERATOR)).body.source).toBeDefined();
  });
  it("a join is taken beneath the app where it can be, and answers exactly what the route answers to the same request", async () => {
    // Twin items: `h-…` asked through the hot path (a server of its own), `r-…` through the route (app.request).
    const { app, call, metrics } = t.build({ scopes: 'app:tw-*' });
    const later = new Date(Date.now() + 3_600_000).toISOString();
    const items: Record<string, unknown> = {
      open: { handler: 'external', gate: { mode: 'closed' } },
      full: { handler: 'external', gate: { mode: 'closed' }, capacity: 1 },
      soon: { handler: 'external', opensAt: later },
      shut: { handler: 'external', gate: { mode: 'closed' } },
    };
    for (const twin of ['h', 'r']) {
      for (const [name, body] of Object.entries(items)) expect((await call('PUT', `/v1/items/${twin}-${name}`, body)).status).toBeLessThan(300);
      expect((await call('POST', `/v1/items/${twin}-full/tickets`, { userId: 'holder' }, SERVICE)).status).toBe(202);
      expect((await call('DELETE', `/v1/items/${twin}-shut`)).status).toBe(200);
    }
    const took: boolean[] = [];
    const server = createServer((req, res) => {
      took.push(app.hot(req, res));
      if (!took.at(-1)) res.writeHead(599).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const json = { 'content-type': 'application/json' };
    const svc = { ...json, authorization: `Bearer ${SERVICE}` };
    const bigPayload = JSON.stringify({ userId: 'u-big', payload: { blob: 'x'.repeat(9000) } });
    const deep = JSON.stringify({ userId: 'u-deep', payload: JSON.parse('{"a":'.repeat(40) + '1' + '}'.repeat(40)) });
    // [item, headers, body]: every one taken by the hot path (a key, JSON, a declared length within the limit).
    const cases: [string, Record<string, string>, string][] = [
      ['open', svc, '{"userId":"u1"}'],
      ['open', svc, '{"userId":"u1"}'], // the same user: 200 with the ticket held
      ['open', svc, '\uFEFF{"userId":"u-bom"}'],
      ['open', { ...svc, 'content-type': 'application/json; charset=utf-8' }, '{"userId":"u-charset","payload":{"addressId":7}}'],
      ['open', { ...json, authorization: `Bearer ${OPERATOR}` }, '{"userId":"u-op"}'],
      ['open', svc, '{"userId":'],
      ['open', svc, ''],
      ['open', svc, '[]'],
      ['open', svc, 'null'],
      ['open', svc, '{"userId":42}'],
      ['open', svc, '{"userId":"u\\u0000nul"}'],
      ['open', svc, '{"userId":"u-x","extra":1}'],
      ['open', svc, '{"userId":"u-lone\\ud800"}'],
      ['open', svc, bigPayload],
      ['open', svc, deep],
      ['open', { ...json, authorization: 'Bearer app-key' }, '{"userId":"u-scope"}'],
      ['full', svc, '{"userId":"u-late"}'],
      ['full', svc, '{"userId":"holder"}'],
      ['soon', svc, '{"userId":"u-early"}'],
      ['soon', svc, 'not even json'],
      ['shut', svc, '{"userId":"u-shut"}'],
      ['none', svc, '{"userId":"u-nobody"}'],
    ];
    const shape = (twin: string, item: string, status: number, headers: Headers, text: string) => {
      const body = JSON.parse(text);
      const normal = JSON.stringify(body, (k, v) => (['ticketId', 'createdAt', 'updatedAt', 'now'].includes(k) ? '*' : v)).replaceAll(`${twin}-${item}`, 'ITEM');
      const location = headers.get('location');
      return {
        status,
        body: JSON.parse(normal),
        type: headers.get('content-type'),
        cache: headers.get('cache-control'),
        location: location && body.ticketId ? location.replace(body.ticketId, '*') : location,
        retryAfter: headers.get('retry-after'),
      };
    };
    const rejections = async () => (await metrics.rejections.get()).values.reduce((n, v) => n + v.value, 0);
    try {
      for (const [item, headers, body] of cases) {
        const path = `/v1/items/h-${item}/tickets`;
        const before = await rejections();
        const hot = await fetch(base + path, { method: 'POST', headers, body });
        const hotText = await hot.text();
        expect(hot.headers.get('content-length'), body).toBe(String(Buffer.byteLength(hotText)));
        const counted = (await rejections()) - before;
        const routed = await app.request(`/v1/items/r-${item}/tickets`, { method: 'POST', headers, body });
        const hotShape = shape('h', item, hot.status, hot.headers, hotText);
        expect(hotShape, `${item} ${body.slice(0, 60)}`).toEqual(shape('r', item, routed.status, routed.headers, await routed.text()));
        expect(counted, 'a refusal is counted as the app counts it').toBe(hot.status >= 400 ? 1 : 0);
      }
      expect(took).toEqual(Array(cases.length).fill(true));

      // Left to the app: no key, an unknown key, another type, no declared length (chunked), a
      // body over the limit, an escaped or odd path, a query, another method.
      took.length = 0;
      const chunked = new ReadableStream({ start: (c) => (c.enqueue(new TextEncoder().encode('{"userId":"u-chunk"}')), c.close()) });
      const left = [
        fetch(`${base}/v1/items/h-open/tickets`, { method: 'POST', headers: json, body: '{"userId":"u-a"}' }),
        fetch(`${base}/v1/items/h-open/tickets`, { method: 'POST', headers: { ...json, authorization: 'Bearer nope' }, body: '{"userId":"u-a"}' }),
        fetch(`${base}/v1/items/h-open/tickets`, { method: 'POST', headers: { ...svc, 'content-type': 'text/plain' }, body: '{"userId":"u-a"}' }),
        fetch(`${base}/v1/items/h-open/tickets`, { method: 'POST', headers: svc, body: chunked, duplex: 'half' } as RequestInit),
        fetch(`${base}/v1/items/h-open/tickets`, { method: 'POST', headers: svc, body: JSON.stringify({ userId: 'u-huge', payload: { blob: 'x'.repeat(70_000) } }) }),
        fetch(`${base}/v1/items/h%2Dopen/tickets`, { method: 'POST', headers: svc, body: '{"userId":"u-a"}' }),
        fetch(`${base}/v1/items/h-open/tickets?x=1`, { method: 'POST', headers: svc, body: '{"userId":"u-a"}' }),
        fetch(`${base}/v1/items/h-open/tickets/`, { method: 'POST', headers: svc, body: '{"userId":"u-a"}' }),
        fetch(`${base}/v1/items/h-open/tickets`, { method: 'PUT', headers: svc, body: '{"userId":"u-a"}' }),
      ];
      for (const r of await Promise.all(left)) expect(r.status).toBe(599);
      // Repeated Authorization or Content-Type (Node keeps the first, Hono joins them): the route's.
      const port = (server.address() as AddressInfo).port;
      const rawPost = (extra: string) =>
        new Promise<string>((resolve, reject) => {
          const body = '{"userId":"u-rep"}';
          const sock = connect(port, '127.0.0.1', () =>
            sock.write(`POST /v1/items/h-open/tickets HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: ${body.length}\r\n${extra}\r\n${body}`),
          );
          let got = '';
          sock.setEncoding('utf8').on('data', (c: string) => (got += c)).on('end', () => resolve(got.split(' ')[1])).on('error', reject);
        });
      expect(await rawPost(`Authorization: Bearer ${SERVICE}\r\nAuthorization: Bearer ${SERVICE}\r\nContent-Type: application/json\r\n`)).toBe('599');
      expect(await rawPost(`Authorization: Bearer ${SERVICE}\r\nContent-Type: application/json\r\ncontent-type: text/plain\r\n`)).toBe('599');
      expect(await rawPost(`Authorization: Bearer ${SERVICE}\r\nContent-Type: application/json\r\n`)).toBe('202');
      expect(took).toEqual([...Array(left.length + 2).fill(false), true]);
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
