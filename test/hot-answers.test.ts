import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { inProcessDaemon, OP, SVC, waitFor } from './support/daemon-inproc.js';
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
const listed = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url, env: { FLOODGATE_CORS_ORIGINS: 'https://shop.example' } });

async function raw(base: string, method: string, path: string, opts: { body?: unknown; key?: string; origin?: string } = {}) {
  const headers: Record<string, string> = {};
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  if (opts.key) headers.authorization = `Bearer ${opts.key}`;
  if (opts.origin) headers.origin = opts.origin;
  const res = await fetch(base + path, { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

describe('the whole answers of join and poll, on the wire', () => {
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
    const missing = await raw(open.daemon.url, 'GET', `/v1/tickets/${first.body.ticketId.slice(0, -2)}AA`, { origin: 'https://anywhere.example' });
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
    await open.define('beneath', { handler: 'external', gate: { mode: 'closed' } });
    const t = await raw(open.daemon.url, 'POST', '/v1/items/beneath/tickets', { body: { userId: 'u1' }, key: SVC });
    const path = `/v1/tickets/${t.body.ticketId}`;
    // Which requests the hot path takes, asked on a server of its own: taken → its answer; not → 599.
    const took: boolean[] = [];
    const server = createServer((req, res) => {
      took.push(open.daemon.app.hot(req, res));
      if (!took.at(-1)) res.writeHead(599).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const ask = (method: string, p: string, headers: Record<string, string> = {}, body?: string) => fetch(base + p, { method, headers, body }).then(async (r) => ({ status: r.status, headers: r.headers, text: await r.text() }));
      // Just after the join the item's cached view may predate the ticket: the route answers until
      // the view is read again (any poll through the daemon does that once it is FLOODGATE_CACHE_MS old).
      await waitFor(async () => (await raw(open.daemon.url, 'GET', path), (await ask('GET', path)).status), (s) => s === 200, 10_000);
      took.length = 0;
      const hot = await ask('GET', path, { origin: 'https://anywhere.example' });
      expect(hot.status).toBe(200);
      // The route's answer to the same poll (app.request goes through Hono, never the hot path).
      const routed = await open.daemon.app.request(path, { headers: { origin: 'https://anywhere.example' } });
      expect(JSON.parse(hot.text)).toEqual(await routed.json());
      for (const h of ['content-type', 'cache-control', 'access-control-allow-origin', 'vary']) expect(hot.headers.get(h), h).toBe(routed.headers.get(h));
      expect(hot.headers.get('content-length')).toBe(String(Buffer.byteLength(hot.text)));
      expect((await ask('GET', path, { authorization: `Bearer ${SVC}` })).status).toBe(200); // a service key is no operator
      expect(took).toEqual([true, true]);

      // Left to the route: an operator's poll (it shows `source`), HEAD, a query, a body, a forged
      // or unknown id, other paths and methods.
      took.length = 0;
      await ask('GET', path, { authorization: `Bearer ${OP}` });
      await ask('HEAD', path);
      await ask('GET', `${path}?x=1`);
      await ask('DELETE', path);
      await ask('GET', `${path.slice(0, -2)}AA`);
      await ask('GET', '/v1/tickets/not-a-ticket');
      await ask('GET', `${path}/events`);
      await ask('GET', `/v1/tickets/${encodeURIComponent(t.body.ticketId)}%2F`);
      await ask('POST', path, { 'content-type': 'application/json' }, '{}');
      expect(took).toEqual(Array(9).fill(false));
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
    // Through the daemon's own port: the operator's poll reached the route (source), and the polls
    // answered beneath the app are in the request histogram with the route's labels.
    const asOperator = await raw(open.daemon.url, 'GET', path, { key: OP });
    expect(asOperator.body.source).toBeDefined();
    const count = async () => {
      const m = await (await fetch(`${open.daemon.url}/metrics`, { headers: { authorization: `Bearer ${OP}` } })).text();
      return Number(/floodgate_http_request_duration_seconds_count\{method="GET",route="\/v1\/tickets\/:ticketId",status="200"\} (\d+)/.exec(m)?.[1] ?? 0);
    };
    const before = await count();
    for (let i = 0; i < 3; i++) expect((await raw(open.daemon.url, 'GET', path)).status).toBe(200);
    expect(await count()).toBe(before + 3);
  });
});
