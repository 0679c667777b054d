import { describe, expect, it } from 'vitest';
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
});
