import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { SERVICE, testApp } from './support/app.js';
import { inProcessDaemon, SVC } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

/**
 * `HEAD /v1/tickets/{id}/events` answers as a GET's headers with no body (HEAD comes with GET on
 * every path: allowed-methods.ts), and leaves no stream open: hono answers HEAD by running the GET
 * handler and dropping its body, so the handler set a watcher up for a stream nobody reads (on the
 * wire it wrote the stream to the socket itself, and the answer carried its internal
 * `x-hono-already-sent: true`).
 */
const t = await testApp();
const { newPrefix } = testRedis();
const db = await testDb();
const { daemon, call: callDaemon, define } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url });

const openStreams = async () => {
  const text = await (await fetch(`${daemon.url}/metrics`)).text();
  return Number(/^floodgate_ticket_streams_open (\S+)$/m.exec(text)?.[1]);
};

/** One raw HTTP exchange: every byte until the server closes or `ms` pass. */
function raw(request: string, ms: number) {
  const url = new URL(daemon.url);
  const sock = net.connect(Number(url.port), url.hostname);
  sock.write(request.replace(/HOST/, url.host));
  let text = '';
  sock.setEncoding('utf8');
  sock.on('data', (s: string) => (text += s));
  return new Promise<string>((resolve) => {
    const timer = setTimeout(() => (sock.destroy(), resolve(text)), ms);
    sock.on('close', () => (clearTimeout(timer), resolve(text)));
    sock.on('error', () => {});
  });
}

describe('HEAD of a ticket’s events', () => {
  it('answers the stream’s headers, no body and no internal header, and leaves no stream open (on the wire)', async () => {
    await define('head', { handler: 'external', gate: { mode: 'closed' } });
    const ticketId = (await callDaemon('POST', '/v1/items/head/tickets', { userId: 'u1' }, SVC)).body.ticketId as string;
    const res = await fetch(`${daemon.url}/v1/tickets/${ticketId}/events`, { method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.headers.get('x-hono-already-sent')).toBeNull();
    expect(await res.text()).toBe('');
    // A keep-alive HEAD then a GET on the same connection: the HEAD's answer has ended (no bytes
    // of a stream after it), and the GET after it is answered.
    const text = await raw(`HEAD /v1/tickets/${ticketId}/events HTTP/1.1\r\nHost: HOST\r\n\r\nGET /healthz HTTP/1.1\r\nHost: HOST\r\nConnection: close\r\n\r\n`, 3000);
    const answers = text.split(/(?=HTTP\/1\.1 )/);
    expect(answers.length, text).toBe(2);
    expect(answers[0]).toMatch(/^HTTP\/1\.1 200 /);
    expect(answers[0]).not.toMatch(/x-hono-already-sent/i);
    expect(answers[0].endsWith('\r\n\r\n'), answers[0]).toBe(true);
    expect(answers[1]).toMatch(/^HTTP\/1\.1 200 /);
    await new Promise((r) => setTimeout(r, 100));
    expect(await openStreams()).toBe(0);
    // An unknown ticket is a 404, as a GET's.
    // (The first character of its MAC changed: the last one carries bits base64url leaves unused,
    // so another last character can decode to the same id, which is the real ticket.)
    const segments = ticketId.split('.');
    const mac = segments.pop()!;
    const forged = [...segments, (mac[0] === 'A' ? 'B' : 'A') + mac.slice(1)].join('.');
    expect((await fetch(`${daemon.url}/v1/tickets/${forged}/events`, { method: 'HEAD' })).status).toBe(404);
  });

  it('sets no watcher up through app.request either', async () => {
    const { app, call, metrics } = t.build();
    await call('PUT', '/v1/items/a', { handler: 'external', gate: { mode: 'closed' } });
    const ticketId = (await call('POST', '/v1/items/a/tickets', { userId: 'u1' }, SERVICE)).body.ticketId as string;
    const res = await app.request(`/v1/tickets/${ticketId}/events`, { method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    expect(res.headers.get('x-hono-already-sent')).toBeNull();
    expect(await res.text()).toBe('');
    expect(metrics.sources.openStreams()).toBe(0);
  });
});
