import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { inProcessDaemon, OP, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

/**
 * What Node's HTTP parser refuses before any handler sees it (api/client-errors.ts): answered with
 * the contract's JSON error, not Node's bare status line, and the daemon goes on serving.
 */
const { newPrefix } = testRedis();
const db = await testDb();
const { daemon } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url });

/** One raw exchange: every byte until the server closes (or 5 s). */
function raw(request: string) {
  const url = new URL(daemon.url);
  const sock = net.connect(Number(url.port), url.hostname);
  sock.write(request.replaceAll('HOST', url.host));
  let text = '';
  sock.setEncoding('utf8');
  sock.on('data', (s: string) => (text += s));
  return new Promise<string>((resolve) => {
    const timer = setTimeout(() => (sock.destroy(), resolve(text)), 5000);
    sock.on('close', () => (clearTimeout(timer), resolve(text)));
    sock.on('error', () => {});
  });
}

const parts = (text: string) => {
  const [head, body] = text.split('\r\n\r\n');
  return { status: head!.split(' ')[1], head: head!, body: JSON.parse(body!) as { error: { code: string; message: string } } };
};

describe('requests the HTTP parser refuses', () => {
  it.each([
    ['an unknown method', 'FOO /v1/items HTTP/1.1\r\nHost: HOST\r\n\r\n'],
    ['a header line with no colon', 'GET /healthz HTTP/1.1\r\nHost: HOST\r\nBad Header\r\n\r\n'],
    ['a malformed request line', 'GET\r\n\r\n'],
    // Node answered these itself with a bare status line, or (CONNECT) closed the socket unanswered;
    // @hono/node-server answered what it cannot make a URL of with an empty 400.
    ['an HTTP/1.1 request without Host', 'GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n'],
    ['CONNECT', 'CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: HOST\r\n\r\n'],
    ['a backslash in the path', 'GET /v1\\items HTTP/1.1\r\nHost: HOST\r\nConnection: close\r\n\r\n'],
    ['a Host that is no host', 'GET /healthz HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n'],
  ])('%s: 400 with the JSON error, then the connection closes', async (_, request) => {
    const got = parts(await raw(request));
    // (Before: Node's bare "HTTP/1.1 400 Bad Request" with no body.)
    expect(got.status).toBe('400');
    expect(got.head).toMatch(/content-type: application\/json/i);
    expect(got.body.error.code).toBe('invalid_request');
  });

  it.each([
    ['GET /healthz', 'GET /healthz HTTP/1.1\r\nHost: HOST\r\n\r\n'],
    ['GET /v1/items (read from Redis)', `GET /v1/items HTTP/1.1\r\nHost: HOST\r\nAuthorization: Bearer ${OP}\r\n\r\n`],
    ['PUT /v1/items/pipelined (a body)', `PUT /v1/items/pipelined HTTP/1.1\r\nHost: HOST\r\nAuthorization: Bearer ${OP}\r\nContent-Type: application/json\r\nContent-Length: 22\r\n\r\n{"handler":"external"}`],
  ])('a request pipelined before garbage (%s) is answered first, then the 400', async (_, request) => {
    const text = await raw(`${request}GARBAGE\r\n\r\n`);
    // (Before: the 400 alone, which the client took for its request's answer.)
    expect(text).toMatch(/^HTTP\/1\.1 20[01] /);
    const refusal = text.indexOf('HTTP/1.1 400 Bad Request');
    expect(refusal).toBeGreaterThan(0);
    expect(parts(text.slice(refusal)).body.error.code).toBe('invalid_request');
  });

  it('a whole request pipelined before one whose body is bad is answered first, then the 400 (the bad one gets none)', async () => {
    const bad = `POST /v1/items/pipelined/tickets HTTP/1.1\r\nHost: HOST\r\nAuthorization: Bearer ${SVC}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n`;
    const text = await raw(`GET /v1/items HTTP/1.1\r\nHost: HOST\r\nAuthorization: Bearer ${OP}\r\n\r\n${bad}`);
    // (Before: the 400 alone: a request with an unfinished body among those owed sent it at once.)
    expect(text.startsWith('HTTP/1.1 200 ')).toBe(true);
    expect(text.match(/HTTP\/1\.1 /g)).toHaveLength(2);
    expect(parts(text.slice(text.indexOf('HTTP/1.1 400 Bad Request'))).body.error.code).toBe('invalid_request');
  });

  it('headers past the limit: 431 with the JSON error; the daemon then answers as before', async () => {
    const got = parts(await raw(`GET /healthz HTTP/1.1\r\nHost: HOST\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`));
    expect(got.status).toBe('431');
    expect(got.body.error.code).toBe('invalid_request');
    expect((await fetch(`${daemon.url}/healthz`)).status).toBe(200);
  });
  it('a HEAD request whose oversized headers come in two writes gets no body either', async () => {
    const url = new URL(daemon.url);
    const sock = net.connect(Number(url.port), url.hostname);
    let text = '';
    sock.setEncoding('utf8');
    sock.on('data', (s: string) => (text += s));
    sock.on('error', () => {});
    sock.write(`HEAD /healthz HTTP/1.1\r\nHost: ${url.host}\r\n`);
    await new Promise((r) => setTimeout(r, 100));
    sock.write(`X-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    await new Promise<void>((resolve) => sock.on('close', () => resolve()));
    const [head, body] = text.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 431 /);
    expect(body).toBe(''); // before: the JSON body (the error's packet was the second write)
  });

  it('a HEAD request the parser refuses gets the status and headers, no body', async () => {
    for (const request of [`HEAD /healthz HTTP/1.1\r\nHost: HOST\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 'HEAD /v1/items/a b HTTP/1.1\r\nHost: HOST\r\n\r\n']) {
      const text = await raw(request);
      const [head, body] = text.split('\r\n\r\n');
      expect(head).toMatch(/^HTTP\/1\.1 4(00|31) /);
      expect(body).toBe(''); // before: the JSON body, which broke the client's framing
    }
  });

  it("an Expect other than 100-continue: 417 with the JSON error", async () => {
    const got = parts(await raw('GET /healthz HTTP/1.1\r\nHost: HOST\r\nExpect: bogus\r\nConnection: close\r\n\r\n'));
    expect(got.status).toBe('417');
    expect(got.body.error.code).toBe('invalid_request');
  });

  it('a client that hangs up in the middle of its body is not counted as a Redis or Postgres outage', async () => {
    const rejected = async (code: string) => {
      const text = await (await fetch(`${daemon.url}/metrics`)).text();
      return text.split('\n').filter((l) => l.startsWith('floodgate_rejections_total') && l.includes(`code="${code}"`)).reduce((n, l) => n + Number(l.split(' ').at(-1)), 0);
    };
    const [unavailable, invalid] = [await rejected('unavailable'), await rejected('invalid_request')];
    const url = new URL(daemon.url);
    for (const [method, path] of [['PUT', '/v1/items/cut-body'], ['PATCH', '/v1/items/cut-body/gate']]) {
      const sock = net.connect(Number(url.port), url.hostname);
      sock.on('error', () => {});
      await new Promise((r) => sock.once('connect', r));
      sock.write(`${method} ${path} HTTP/1.1\r\nHost: ${url.host}\r\nAuthorization: Bearer ${OP}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"han`);
      // (Time for the route to start reading the body; too little and nothing is counted, which fails below.)
      await new Promise((r) => setTimeout(r, 200));
      sock.destroy();
    }
    // Both are counted, as the client's cut-short bodies (they were 503 unavailable: "dependency unavailable").
    expect(await waitFor(() => rejected('invalid_request'), (n) => n >= invalid + 2, 5000)).toBe(invalid + 2);
    expect(await rejected('unavailable')).toBe(unavailable);
  });
});
