import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import { describe, expect, it } from 'vitest';
import { OPERATOR, SERVICE, testApp } from './support/app.js';

const t = await testApp();
type Call = ReturnType<typeof t.build>['call'];
const join = (call: Call, item: string, body: unknown) => call('POST', `/v1/items/${item}/tickets`, body, SERVICE);
const issuePaths = (res: { body: any }) => (res.body.error.details.issues as { path: string }[]).map((i) => i.path);
/** `depth` objects nested `{"a":{"a":…leaf}}`, as JSON text (JSON.stringify itself overflows at 5,000). */
const nested = (depth: number, leaf: string) => `${'{"a":'.repeat(depth)}${leaf}${'}'.repeat(depth)}`;
/** `depth` arrays nested: two bytes a level, so 5,000 levels fit the 16 KiB body limit. */
const nestedArrays = (depth: number, leaf: string) => `${'['.repeat(depth)}${leaf}${']'.repeat(depth)}`;

async function externalItem(call: Call) {
  const item = t.uniqueItem();
  expect((await call('PUT', `/v1/items/${item}`, { handler: 'external' })).status).toBe(201);
  return item;
}

describe('hostile bytes stop at the door', () => {
  it.each([
    ['NUL in userId', { userId: 'u\u0000' }, 'userId'],
    ['a lone surrogate in userId', { userId: 'u\ud800' }, 'userId'],
    ['a lone low surrogate in userId', { userId: '\udc00u' }, 'userId'],
    ['NUL deep in the payload', { userId: 'u1', payload: { a: [1, { b: 'x\u0000y' }] } }, 'payload.a.1.b'],
    ['a lone surrogate deep in the payload', { userId: 'u1', payload: { a: { b: ['ok', '\ud83d'] } } }, 'payload.a.b.1'],
    ['NUL in a payload key', { userId: 'u1', payload: { a: { 'k\u0000': 1 } } }, 'payload.a.k\ufffd'],
    // Parsed, it is already another number: the order or user it named would be someone else's.
    ['an integer past 2^53 in the payload (a 64-bit id)', { userId: 'u1', payload: { orderRef: 12345678901234567890 } }, 'payload.orderRef'],
    ['−(2^53) in the payload', { userId: 'u1', payload: { a: [-(2 ** 53)] } }, 'payload.a.0'],
  ])('answers 400 naming the field for %s, and the user never gets a ticket', async (_, body, path) => {
    const { call, prefix } = t.build();
    const item = await externalItem(call);
    const res = await join(call, item, body);
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('invalid_request');
    expect(issuePaths(res)).toContain(path);
    expect(await t.redis.keys(`${prefix}*users*`)).toEqual([]);
  });

  it('keeps numbers JSON carries exactly: ±(2^53 − 1), fractions, large ids sent as strings', async () => {
    const { call } = t.build();
    const item = await externalItem(call);
    const payload = { max: 2 ** 53 - 1, min: -(2 ** 53 - 1), price: 19.99, tiny: 1e-300, orderRef: '12345678901234567890' };
    const res = await join(call, item, { userId: 'u-num', payload });
    expect(res.status).toBe(202);
    const pulled = await call('POST', `/v1/items/${item}/pull`, { max: 1 }, SERVICE);
    expect(pulled.body.tickets[0].payload).toEqual(payload);
  });

  it('keeps a well-formed surrogate pair (an emoji) in ids and payloads', async () => {
    const { call } = t.build();
    const item = await externalItem(call);
    const res = await join(call, item, { userId: 'u-\ud83d\ude00', payload: { note: '\ud83d\ude00' } });
    expect(res.status).toBe(202);
    expect(res.body.userId).toBe('u-😀');
  });

  it('joins é typed two ways as one user, and shows the NFC form', async () => {
    const { call } = t.build();
    const item = await externalItem(call);
    const composed = await join(call, item, { userId: 'jos\u00e9' });
    const decomposed = await join(call, item, { userId: 'jose\u0301' });
    expect(composed.status).toBe(202);
    expect(decomposed.status).toBe(200);
    expect(decomposed.body.ticketId).toBe(composed.body.ticketId);
    expect(decomposed.body.userId).toBe('jos\u00e9');
    const first = await join(call, item, { userId: 'ane\u0301' });
    expect(first.body.userId).toBe('an\u00e9');
    expect((await call('GET', `/v1/tickets/${first.body.ticketId}`, undefined, null)).body.userId).toBe('an\u00e9');
  });

  it('counts a user id in code points after NFC: 128 decomposed é are 128, not 256', async () => {
    const { call } = t.build();
    const item = await externalItem(call);
    expect((await join(call, item, { userId: 'e\u0301'.repeat(128) })).status).toBe(202);
    const long = await join(call, item, { userId: 'x'.repeat(129) });
    expect(long.status).toBe(400);
    expect(issuePaths(long)).toContain('userId');
  });

  it('answers 400, not 500, to a payload nested 5,000 deep, and to 33 levels; 32 levels pass', async () => {
    const { call } = t.build();
    const item = await externalItem(call);
    const deep = await join(call, item, `{"userId":"deep","payload":{"a":${nestedArrays(5000, '1')}}}`);
    expect(deep.status).toBe(400);
    expect(deep.body.error.code).toBe('invalid_request');
    expect(deep.body.error.details.issues[0].message).toMatch(/nested deeper than 32/);
    // The body is level 1, the payload (the first of the nested objects) level 2.
    expect((await join(call, item, `{"userId":"ok","payload":${nested(31, '1')}}`)).status).toBe(202);
    expect((await join(call, item, `{"userId":"over","payload":${nested(32, '1')}}`)).status).toBe(400);
    const item2 = await call('PUT', `/v1/items/${t.uniqueItem()}`, `{"handler":"external","config":{"a":${nestedArrays(5000, '1')}}}`);
    expect(item2.status).toBe(400);
  });

  it('answers 400 naming the field for NUL or lone surrogates in an outcome result, reason or leaseId', async () => {
    const { call } = t.build();
    const item = await externalItem(call);
    for (let i = 0; i < 4; i++) await join(call, item, { userId: `w${i}` });
    const pulled = (await call('POST', `/v1/items/${item}/pull`, { max: 4 }, SERVICE)).body.tickets as { ticketId: string; leaseId: string }[];
    expect(pulled.length).toBe(4);
    const outcome = (i: number, body: Record<string, unknown> | string) =>
      call('POST', `/v1/tickets/${pulled[i].ticketId}/outcome`, typeof body === 'string' ? body : { leaseId: pulled[i].leaseId, ...body }, SERVICE);
    const deepResult = `{"leaseId":${JSON.stringify(pulled[0].leaseId)},"status":"succeeded","result":${nestedArrays(5000, '"x"')}}`;
    const cases: [Record<string, unknown> | string, string][] = [
      [{ status: 'succeeded', result: { order: { id: 'A\u0000' } } }, 'result.order.id'],
      [{ status: 'succeeded', result: ['ok', '\udfff'] }, 'result.1'],
      [{ status: 'rejected', reason: 'no\u0000' }, 'reason'],
      [{ status: 'failed', reason: 'bad\ud800' }, 'reason'],
      [{ status: 'succeeded', leaseId: 'x\u0000' }, 'leaseId'],
      [deepResult, `result${'.0'.repeat(31)}`],
    ];
    for (const [body, path] of cases) {
      const res = await outcome(0, body);
      expect(res.status, JSON.stringify(path)).toBe(400);
      expect(issuePaths(res)).toContain(path);
    }
    // None of them reached the ticket: it is still admitted, and a clean outcome settles it.
    expect((await call('GET', `/v1/tickets/${pulled[0].ticketId}`, undefined, null)).body.state).toBe('admitted');
    expect((await outcome(0, { status: 'succeeded', result: { ok: true } })).status).toBe(200);
  });

  it('answers 400 naming the field for NUL in an item config header', async () => {
    const { call } = t.build();
    const res = await call('PUT', `/v1/items/${t.uniqueItem()}`, {
      handler: 'webhook',
      config: { url: 'http://127.0.0.1:2/x', headers: { 'x-key': 'se\u0000cret' } },
    });
    expect(res.status).toBe(400);
    expect(issuePaths(res)).toContain('config.headers.x-key');
  });

  it('answers 400 to JSON whose bytes are not UTF-8, on the hot join and the route alike: "dup\\xff" and "dup\\xfe" were one user', async () => {
    const { app, call, prefix } = t.build();
    const item = await externalItem(call);
    // The daemon's server: the hot join first (a declared length), the app for the rest (chunked).
    const listener = getRequestListener(app.fetch);
    const took: boolean[] = [];
    const server = createServer((req, res) => {
      took.push(app.hot(req, res));
      if (!took.at(-1)) void listener(req, res);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/items/${item}/tickets`;
    const headers = { 'content-type': 'application/json', authorization: `Bearer ${SERVICE}` };
    const bytes = (...parts: (string | number[])[]) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.from(p))));
    const ask = async (body: Buffer, chunked: boolean) => {
      const sent = chunked ? new ReadableStream({ start: (c) => (c.enqueue(new Uint8Array(body)), c.close()) }) : new Uint8Array(body);
      const res = await fetch(url, { method: 'POST', headers, body: sent, duplex: 'half' } as RequestInit);
      return { status: res.status, body: await res.json() };
    };
    try {
      const bad = [
        bytes('{"userId":"dup', [0xff], '"}'),
        bytes('{"userId":"dup', [0xfe], '"}'),
        bytes('{"userId":"dup', [0xc0, 0xaf], '"}'), // an overlong "/"
        bytes('{"userId":"dup', [0xed, 0xa0, 0x80], '"}'), // a surrogate, encoded
        bytes('{"userId":"dup', [0xe2, 0x82], '"}'), // a sequence cut short
        bytes('{"userId":"u1","payload":{"k', [0x80], '":1}}'), // in a key, deep
        bytes([0xef, 0xbb, 0xbf, 0xff], '{"userId":"u1"}'),
      ];
      for (const body of bad) {
        const hot = await ask(body, false);
        const routed = await ask(body, true);
        expect(hot.status, body.toString('hex')).toBe(400);
        expect(hot.body.error).toEqual({ code: 'invalid_request', message: 'Malformed JSON in request body' });
        expect(routed, body.toString('hex')).toEqual(hot);
        // And through app.request (the route, as the other tests call it).
        const req = await app.request(`/v1/items/${item}/tickets`, { method: 'POST', headers, body: new Uint8Array(body) });
        expect({ status: req.status, body: await req.json() }).toEqual(hot);
      }
      expect(took).toEqual(bad.flatMap(() => [true, false]));
      expect(await t.redis.keys(`${prefix}*users*`)).toEqual([]);
      // Well-formed UTF-8 (and a leading byte-order mark) still joins, on both paths.
      expect((await ask(bytes([0xef, 0xbb, 0xbf], '{"userId":"dup\u00ff"}'), false)).status).toBe(202);
      const same = await ask(bytes('{"userId":"dup', [0xc3, 0xbf], '"}'), true);
      expect(same.status).toBe(200);
      expect(same.body.userId).toBe('dup\u00ff');
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('answers 400 naming the key to an object key __proto__, spelt plainly or escaped: a payload or config lost it silently', async () => {
    const { call, prefix } = t.build();
    const item = await externalItem(call);
    for (const [body, path] of [
      ['{"userId":"p1","payload":{"__proto__":{"a":1},"b":2}}', 'payload.__proto__'],
      ['{"userId":"p2","payload":{"b":[{"\\u005f_proto__":1}]}}', 'payload.b.0.__proto__'],
      ['{"__proto__":{"userId":"p3"},"userId":"p3"}', '__proto__'],
    ] as const) {
      const res = await join(call, item, body);
      // (Before: 202, and the pull handed the worker {"b":2}.)
      expect([res.status, issuePaths(res)], body).toEqual([400, [path]]);
    }
    expect(await t.redis.keys(`${prefix}*users*`)).toEqual([]);
    const put = await call('PUT', `/v1/items/${t.uniqueItem()}`, '{"handler":"external","config":{"__proto__":{"x":1}}}');
    expect([put.status, issuePaths(put)]).toEqual([400, ['config.__proto__']]);
    // A key that merely mentions it, and escapes that spell something else, are kept.
    expect((await join(call, item, '{"userId":"p4","payload":{"my__proto__":1,"e":"\\u00e9"}}')).status).toBe(202);
  });

  it("answers 400 to a body that is not UTF-8 on every other route that reads JSON (the validator's c.req.json())", async () => {
    const { app, call } = t.build();
    const item = await externalItem(call);
    const send = (method: string, path: string, key: string, body: Buffer) =>
      app.request(path, { method, headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` }, body: new Uint8Array(body) });
    // '#' → a lone 0xff byte (latin1 writes U+00FF as that one byte): not UTF-8 anywhere.
    const bad = (json: string) => Buffer.from(json.replace('#', '\u00ff'), 'latin1');
    const cases: [string, string, string, Buffer][] = [
      ['PUT', `/v1/items/${t.uniqueItem()}`, OPERATOR, bad('{"handler":"extern#al"}')],
      ['PATCH', `/v1/items/${item}/gate`, OPERATOR, bad('{"mode":"manual","x#":1}')],
      ['POST', `/v1/items/${item}/invites`, SERVICE, bad('{"userId":"dup#"}')],
      ['POST', '/v1/join', SERVICE, bad('{"invite":"#"}')],
      ['POST', `/v1/items/${item}/pull`, SERVICE, bad('{"max":1,"#":2}')],
    ];
    for (const [method, path, key, body] of cases) {
      expect(body.includes(0xff)).toBe(true);
      const res = await send(method, path, key, body);
      expect(res.status, `${method} ${path}`).toBe(400);
      expect(await res.json()).toEqual({ error: { code: 'invalid_request', message: 'Malformed JSON in request body' } });
    }
    expect((await call('GET', `/v1/items/${item}`)).body.gate.mode).toBe('auto');
  });

  it('answers 400 to a path whose percent-escapes are not UTF-8 (a ticket id: 404, as any id the daemon did not issue), and blocks or unblocks nobody: Hono kept such a user id as its raw text', async () => {
    const { app, call } = t.build();
    const item = await externalItem(call);
    for (const bad of ['%ED%A0%80', '%E9', '%zz', 'a%']) {
      for (const [method, path, param] of [
        ['PUT', `/v1/blocks/${bad}`, 'userId'],
        ['DELETE', `/v1/blocks/${bad}`, 'userId'],
        ['PUT', `/v1/items/${item}/blocks/${bad}`, 'userId'],
        ['GET', `/v1/items/${bad}`, 'itemId'],
      ]) {
        const res = await app.request(path, { method, headers: { authorization: `Bearer ${OPERATOR}` } });
        expect(res.status, `${method} ${path}`).toBe(400);
        // Naming the parameter, as the contract names a bad identifier (it named none).
        expect((await res.json()).error, `${method} ${path}`).toMatchObject({ code: 'invalid_request', details: { issues: [{ path: param }] } });
      }
      for (const [method, path] of [
        ['GET', `/v1/tickets/${bad}`],
        ['DELETE', `/v1/tickets/${bad}`],
        ['GET', `/v1/tickets/${bad}/events`],
      ]) {
        const res = await app.request(path, { method });
        expect([res.status, (await res.json()).error.code], `${method} ${path}`).toEqual([404, 'ticket_not_found']);
      }
    }
    // Escapes that decode stay as they were: a user id with a space, and an é.
    expect((await call('PUT', '/v1/blocks/a%20b%C3%A9')).body).toMatchObject({ userId: 'a bé', blocked: true });
    const rows = await t.db.sql`select scope, user_id from user_blocks where strpos(user_id, '%') > 0`;
    expect(rows).toEqual([]);
  });

  it('refuses a waiting room returnUrl holding a control character (C0, DEL or C1), and documents 403 where joins, pulls and outcomes answer it', async () => {
    const { call } = t.build();
    // Tab, LF and CR too, which the URL parser drops (before: 201, and another URL stored than the one sent).
    for (const [i, url] of ['https://shop.example/\u0001x', 'https://shop.example/a\u001bb', 'https://shop.example/\u007f', 'https://shop.example/\u0085', 'https://ev\til.example/pa\nth\r'].entries()) {
      const r = await call('PUT', `/v1/items/wr-${i}`, { handler: 'external', waitingRoom: { title: 't', returnUrl: url } });
      expect(r.status, JSON.stringify(url)).toBe(400);
    }
    expect((await call('PUT', '/v1/items/wr-ok', { handler: 'external', waitingRoom: { title: 't', returnUrl: 'https://shop.example/checkout?a=1' } })).status).toBe(201);
    const doc = (await call('GET', '/openapi.json', undefined, null)).body;
    for (const [path, method] of [['/v1/items/{itemId}/tickets', 'post'], ['/v1/items/{itemId}/pull', 'post'], ['/v1/tickets/{ticketId}/outcome', 'post']]) expect(Object.keys(doc.paths[path][method].responses), path).toContain('403');
  });

  it('refuses a coded body (415), webhook header names given twice in another case (400), and takes 128 code points of a user id as given, whatever NFC makes of them', async () => {
    const { call, app } = t.build();
    const item = await externalItem(call);
    for (const via of ['hot', 'route']) {
      // (The hot join takes a request with a declared length; the route a chunked one.)
      const headers: Record<string, string> = { authorization: `Bearer ${SERVICE}`, 'content-type': 'application/json', 'content-encoding': 'gzip' };
      const res = await app.request(`/v1/items/${item}/tickets`, { method: 'POST', headers, body: via === 'hot' ? '{"userId":"gz"}' : new Blob(['{"userId":"gz"}']).stream(), ...(via === 'route' ? { duplex: 'half' } : {}) } as RequestInit);
      expect([res.status, (await res.json()).error?.code], via).toEqual([415, 'unsupported_media_type']);
    }
    const dup = await call('PUT', '/v1/items/wh-dup', { handler: 'webhook', config: { url: 'https://shop.example/h', headers: { 'X-Key': 'a', 'x-key': 'b' } } });
    expect([dup.status, dup.body.error?.code]).toEqual([400, 'invalid_request']);
    const userId = '\u0958'.repeat(100); // 100 code points; 200 in NFC
    const j = await call('POST', `/v1/items/${item}/tickets`, { userId }, SERVICE);
    expect(j.status).toBe(202);
    expect((await call('POST', `/v1/items/${item}/tickets`, { userId: 'x'.repeat(129) }, SERVICE)).status).toBe(400);
  });

  it('documents user ids as 1-128 characters in the OpenAPI document', async () => {
    const { call } = t.build();
    const doc = (await call('GET', '/openapi.json', undefined, null)).body;
    for (const name of ['JoinInput', 'Ticket']) expect(doc.components.schemas[name].properties.userId).toMatchObject({ minLength: 1, maxLength: 128 });
  });
});
