import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { inProcessDaemon, OP, SVC, waitFor } from './support/daemon-inproc.js';
import { http } from './support/http.js';
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

describe('what a review fuzzed past the door', () => {
  it.each([
    ['a block of an item named %2e%2e (it was the global block of u1)', `PUT /v1/items/%2e%2e/blocks/u1 HTTP/1.1\r\nHost: HOST\r\nAuthorization: Bearer ${OP}\r\nConnection: close\r\n\r\n`],
    ["a ticket's cancel under %2E. (it closed the item)", `DELETE /v1/tickets/%2E./items/dots HTTP/1.1\r\nHost: HOST\r\nAuthorization: Bearer ${OP}\r\nConnection: close\r\n\r\n`],
    ['a join under a typed ..', `POST /v1/tickets/../items/dots/tickets HTTP/1.1\r\nHost: HOST\r\nAuthorization: Bearer ${SVC}\r\nContent-Type: application/json\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{"userId":"u2"}`],
    ['a lone %2e segment', `GET /v1/items/dots/%2e HTTP/1.1\r\nHost: HOST\r\nAuthorization: Bearer ${OP}\r\nConnection: close\r\n\r\n`],
    ['a .. before a #', `GET /v1/items/dots/x/..# HTTP/1.1\r\nHost: HOST\r\nAuthorization: Bearer ${OP}\r\nConnection: close\r\n\r\n`],
  ])('a path with a dot segment, as typed or encoded: 400, and nothing done (%s)', async (_, request) => {
    const got = parts(await raw(request));
    expect(got.status).toBe('400');
    expect(got.body.error.code).toBe('invalid_request');
  });

  it('the dot segments refused did nothing: no global block, the item open and empty; a dot in a name is not one', async () => {
    expect((await http(daemon.url, 'PUT', '/v1/items/dots', { handler: 'external' }, OP)).status).toBeLessThan(300);
    for (const request of [`PUT /v1/items/%2e%2e/blocks/u1 HTTP/1.1\r\nHost: HOST\r\nAuthorization: Bearer ${OP}\r\nConnection: close\r\n\r\n`, `DELETE /v1/tickets/%2E./items/dots HTTP/1.1\r\nHost: HOST\r\nAuthorization: Bearer ${OP}\r\nConnection: close\r\n\r\n`]) await raw(request);
    expect((await http(daemon.url, 'POST', '/v1/items/dots/tickets', { userId: 'u1' }, SVC)).status).toBe(202);
    expect((await http(daemon.url, 'GET', '/v1/items/dots', undefined, OP)).body.state).toBe('open');
    // A name with dots in it is no dot segment.
    expect((await http(daemon.url, 'PUT', '/v1/items/v1..2', { handler: 'external' }, OP)).status).toBe(201);
    // Nor may a user be named so: no path could block them.
    expect((await http(daemon.url, 'POST', '/v1/items/dots/tickets', { userId: '..' }, SVC)).status).toBe(400);
  });

  it('a Host that is no host: 400 on the join too (its fast path served it), and the connection closes after', async () => {
    const join = `POST /v1/items/dots/tickets HTTP/1.1\r\nHost: a b/c\r\nAuthorization: Bearer ${SVC}\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{"userId":"u3"}`;
    // Pipelined behind it: not answered (before: served on the same connection).
    const text = await raw(`${join}GET /healthz HTTP/1.1\r\nHost: HOST\r\n\r\n`);
    expect(text.match(/HTTP\/1\.1 /g)).toHaveLength(1);
    expect(parts(text).status).toBe('400');
    // A port past 65535 (a review: it passed the first look at the Host, and the join was served).
    const overPort = parts(await raw(join.replace('Host: a b/c', 'Host: example.com:99999').replace('u3', 'u4')));
    expect(overPort.status).toBe('400');
    expect((await http(daemon.url, 'GET', '/v1/items/dots', undefined, OP)).body.counts.waiting).toBe(1); // u1's alone
  });
});
