import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { webhook } from '../src/service/handlers/webhook.js';
import { whenDone } from './support/cleanup.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { recordingDownstream } from './support/downstream.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

/**
 * A deployment's handler whose result is an array nested `payload.depth` levels round
 * `{ user, attempt }`: no downstream answer gets past the webhook's depth bound any more, yet what
 * settles and signs a ticket must hold against any handler's result. Plain JavaScript, written to
 * a temporary directory: the daemon imports it by path, and it needs nothing but itself.
 */
const handlerDir = mkdtempSync(path.join(tmpdir(), 'floodgate-nested-'));
const handlersModule = path.join(handlerDir, 'nested-handler.mjs');
writeFileSync(
  handlersModule,
  `export const handlers = [{
  name: 'nested',
  config: { safeParse: (config) => ({ success: true, data: config }) },
  rejoin: () => 'any',
  external: false,
  async handle(t) {
    let result = { user: t.userId, attempt: t.attempt };
    for (let i = 0; i < (t.payload?.depth ?? 0); i++) result = [result];
    return { status: 'succeeded', result };
  },
}];
`,
);
whenDone(() => rmSync(handlerDir, { recursive: true, force: true }));

const logLines: string[] = [];
const { newPrefix } = testRedis();
const db = await testDb();
const { call } = await inProcessDaemon({
  prefix: newPrefix(),
  databaseUrl: db.url,
  env: { FLOODGATE_JOB_ATTEMPTS: '2', FLOODGATE_JOB_BACKOFF_MS: '50', FLOODGATE_HANDLERS_MODULE: handlersModule },
  log: pino({ level: 'debug' }, { write: (line: string) => void logLines.push(line) }),
});

/** A downstream on loopback that answers by user; counts the calls per user. */
async function downstream(answer: (userId: string, res: ServerResponse) => void) {
  const calls = new Map<string, number>();
  const { url } = await recordingDownstream((req, res) => {
    const { userId } = JSON.parse(req.body);
    calls.set(userId, (calls.get(userId) ?? 0) + 1);
    answer(userId, res);
  });
  return { calls, url };
}

const poll = (id: string) => call('GET', `/v1/tickets/${id}`, undefined, null);

/** The ticket once it has ended (a poll that fails is returned as it is, for the test to see). */
const settled = (id: string, timeoutMs?: number) =>
  waitFor(
    () => poll(id),
    (r) => r.status !== 200 || !['waiting', 'admitted'].includes(r.body.state),
    timeoutMs,
  );

async function join(itemId: string, userId: string, payload?: Record<string, unknown>) {
  const j = await call('POST', `/v1/items/${itemId}/tickets`, payload ? { userId, payload } : { userId }, SVC);
  expect(j.status).toBe(202);
  return j.body.ticketId as string;
}

const nested = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);
const claimsOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());

describe('webhook answers and failures a ticket holder must not suffer from', () => {
  it('keeps a 2xx answer nested deeper than request bodies may be as succeeded without its body; its poll answers 200 and the downstream is called once', async () => {
    const depths: Record<string, number> = { 'd-3000': 3000, 'd-10000': 10_000, 'd-33': 33, 'd-32': 32 };
    const down = await downstream((userId, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(userId in depths ? nested(depths[userId]) : '{"orderId":"N1"}');
    });
    await call('PUT', '/v1/items/nest', { handler: 'webhook', config: { url: down.url } });
    const users = [...Object.keys(depths), 'fine'];
    const ids = await Promise.all(users.map((u) => join('nest', u)));
    const polls = await Promise.all(ids.map((id) => settled(id, 10_000)));
    expect(polls.map((p) => [p.status, p.body.state, p.body.outcome?.reason ?? null, p.body.outcome?.result === undefined])).toEqual([
      [200, 'succeeded', null, true],
      [200, 'succeeded', null, true],
      [200, 'succeeded', null, true],
      [200, 'succeeded', null, false],
      [200, 'succeeded', null, false],
    ]);
    expect(polls[4].body.outcome.result).toEqual({ orderId: 'N1' });
    expect(users.map((u) => down.calls.get(u))).toEqual(users.map(() => 1));
  });

  it('keeps a 64-bit order id in an answer as the digits the downstream sent, to the user and in Postgres', async () => {
    const down = await downstream((userId, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      // A key given twice, as JSON.parse takes it (the last wins): the order id was lost with the
      // whole result (lossless-json refuses such a document; a review).
      if (userId === 'twice') return void res.end('{"orderId":12345678901234567891,"note":"x","note":"y \\" 99999999999999999999"}');
      res.end('{"orderId":1234567890123456789,"max":9007199254740991,"price":19.99,"big":1e400,"ids":[-9223372036854775808]}');
    });
    await call('PUT', '/v1/items/big-ids', { handler: 'webhook', config: { url: down.url } });
    const [id, twice] = [await join('big-ids', 'snow'), await join('big-ids', 'twice')];
    const result = { orderId: '1234567890123456789', max: 9007199254740991, price: 19.99, big: '1e400', ids: ['-9223372036854775808'] };
    // (JSON.parse made it 1234567890123456800: another order's number; 1e400 became null.)
    expect((await settled(id)).body).toMatchObject({ state: 'succeeded', outcome: { result } });
    const rows = await waitFor(() => db.sql`select result from ticket_outcomes where user_id = 'snow'`, (r) => r.length === 1);
    expect(rows[0].result).toEqual(result);
    const second = { orderId: '12345678901234567891', note: 'y \" 99999999999999999999' };
    expect((await settled(twice)).body).toMatchObject({ state: 'succeeded', outcome: { result: second } });
    const [row] = await waitFor(() => db.sql`select result from ticket_outcomes where user_id = 'twice'`, (r) => r.length === 1);
    expect(row.result).toEqual(second);
  });

  it('fails a ticket whose answer came and cannot be read (bad_answer) at once, called once, without taking the service as down', async () => {
    // Headers over Node's 16 KiB, or more than five content codings: fetch refuses the answer
    // whole. Read as no answer (connection_error), every such user was told `failed` after
    // retries, the item read paused, and each key was called ~27 times (a review).
    const down = await downstream((userId, res) => {
      if (userId.startsWith('head')) res.writeHead(201, { 'content-type': 'application/json', 'content-security-policy': 'a'.repeat(20_000) });
      else res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': Array(20).fill('gzip').join(', ') });
      res.end('{}');
    });
    await call('PUT', '/v1/items/unreadable', { handler: 'webhook', config: { url: down.url } });
    const users = ['head1', 'head2', 'head3', 'enc1', 'enc2', 'enc3'];
    const ids = [];
    for (const u of users) ids.push(await join('unreadable', u));
    const views = await Promise.all(ids.map((id) => settled(id)));
    for (const v of views) expect(v.body).toMatchObject({ state: 'failed', outcome: { reason: 'bad_answer' } });
    expect(users.map((u) => down.calls.get(u))).toEqual(users.map(() => 1));
    const item = await call('GET', '/v1/items/unreadable');
    expect(item.body.state).not.toBe('paused');
    expect(logLines.some((l) => l.includes('webhook answer could not be read') && l.includes('headers over 16 KiB'))).toBe(true);
  });

  it('cuts a 2xx text answer at 1000 characters without splitting a surrogate pair', async () => {
    const down = await downstream((userId, res) => {
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
      res.end('x'.repeat(userId === 'split' ? 999 : 998) + '😀 order placed');
    });
    await call('PUT', '/v1/items/cut', { handler: 'webhook', config: { url: down.url } });
    const [split, whole] = await Promise.all([settled(await join('cut', 'split')), settled(await join('cut', 'whole'))]);
    expect(split.body).toMatchObject({ state: 'succeeded', outcome: { result: 'x'.repeat(999) } });
    expect(whole.body).toMatchObject({ state: 'succeeded', outcome: { result: 'x'.repeat(998) + '😀' } });
  });

  it('gives a call that got no answer a fixed reason code, and refuses or hides a URL with credentials', async () => {
    // A port nobody listens on any more: refused.
    const gone = createServer();
    await new Promise<void>((r) => gone.listen(0, '127.0.0.1', r));
    const port = (gone.address() as AddressInfo).port;
    await new Promise((r) => gone.close(r));
    await call('PUT', '/v1/items/refused', { handler: 'webhook', config: { url: `http://127.0.0.1:${port}/orders` } });
    // A downstream that hangs up without answering: reset.
    const rude = createServer((req) => req.socket.destroy());
    await new Promise<void>((r) => rude.listen(0, '127.0.0.1', r));
    whenDone(() => new Promise((r) => rude.close(r)));
    await call('PUT', '/v1/items/reset', { handler: 'webhook', config: { url: `http://127.0.0.1:${(rude.address() as AddressInfo).port}/orders` } });
    const [refused, reset] = await Promise.all([settled(await join('refused', 'u1')), settled(await join('reset', 'u1'))]);
    expect(refused.body).toMatchObject({ state: 'failed', outcome: { reason: 'connection_refused' } });
    expect(reset.body).toMatchObject({ state: 'failed', outcome: { reason: 'connection_reset' } });

    for (const url of ['http://shop:hunter2-s3cret@127.0.0.1:2/orders', 'http://shop@127.0.0.1:2/orders']) {
      const put = await call('PUT', '/v1/items/creds', { handler: 'webhook', config: { url } });
      expect(put.status, url).toBe(400);
      expect(put.body.error.code).toBe('invalid_request');
      expect(put.body.error.details.issues.map((i: { path: string }) => i.path)).toEqual(['config.url']);
    }
    expect((await call('GET', '/v1/items/creds')).status).toBe(404);
    // An item defined before such URLs were refused still shows none of it.
    const shown = webhook.redact!({ url: 'http://shop:hunter2-s3cret@127.0.0.1:2/orders', timeoutMs: 5000, headers: {}, secret: 's'.repeat(32) });
    expect(shown.url).toBe('http://127.0.0.1:2/orders');
    expect(webhook.redact!({ url: 'https://shop.internal/orders', headers: {} }).url).toBe('https://shop.internal/orders');
    expect(logLines.join('')).not.toContain('hunter2');
  });

  it('keeps the outcome of a ticket whose result cannot be serialised, without the result, and settles the rest of its batch', async () => {
    // Both in one job: admitted in one round once the gate opens, settled together.
    await call('PUT', '/v1/items/batch', { handler: 'nested', gate: { mode: 'closed' } });
    const deep = await join('batch', 'deep', { depth: 20_000 });
    const plain = await join('batch', 'plain', { depth: 0 });
    expect((await call('PATCH', '/v1/items/batch/gate', { mode: 'manual', maxInFlight: 10 })).status).toBe(200);
    const [d, p] = await Promise.all([settled(deep, 10_000), settled(plain, 10_000)]);
    // The handler said succeeded (its effect happened): told so, its result left out.
    expect(d.body).toMatchObject({ state: 'succeeded', outcome: { status: 'succeeded' } });
    expect(d.body.outcome.result).toBeUndefined();
    // Settled on its first run: the neighbour's result did not throw the batch back.
    expect(p.body).toMatchObject({ state: 'succeeded', outcome: { result: { user: 'plain', attempt: 1 } } });
  });

  it('signs the token of a ticket whose result is too deep for the claims without it, and its poll answers 200', async () => {
    await call('PUT', '/v1/items/sign', { handler: 'nested' });
    const id = await join('sign', 'u1', { depth: 3000 });
    const p = await settled(id, 10_000);
    expect(p.status).toBe(200);
    expect(p.body.state).toBe('succeeded');
    let result = p.body.outcome.result;
    for (let i = 0; i < 3000; i++) result = result[0];
    expect(result).toEqual({ user: 'u1', attempt: 1 });
    const claims = claimsOf(p.body.admissionToken);
    expect(claims).toMatchObject({ sub: 'u1', aud: 'sign' });
    expect(claims.result).toBeUndefined();
    expect((await call('POST', '/v1/tokens/introspect', { token: p.body.admissionToken }, SVC)).body).toMatchObject({ active: true, sub: 'u1' });
  });

  it('gives a ticket admitted again, after its lease ran out, the token of its new admission', async () => {
    await call('PUT', '/v1/items/again', { handler: 'external' });
    const id = await join('again', 'u1');
    const admitted = async (after?: string) =>
      (await waitFor(() => poll(id), (r) => r.body.state === 'admitted' && r.body.admittedAt !== after && !!r.body.admissionToken, 10_000)).body;
    expect((await call('POST', '/v1/items/again/pull', { max: 1, leaseMs: 1000 }, SVC)).body.tickets).toHaveLength(1);
    const first = await admitted();
    // The lease runs out unanswered: the ticket goes back to the head, and is pulled again.
    expect((await waitFor(() => poll(id), (r) => r.body.state === 'waiting', 10_000)).body.state).toBe('waiting');
    expect((await call('POST', '/v1/items/again/pull', { max: 1 }, SVC)).body.tickets).toHaveLength(1);
    const second = await admitted(first.admittedAt);
    expect(second.admittedAt).not.toBe(first.admittedAt);
    const claims = claimsOf(second.admissionToken);
    expect(second.admissionToken).not.toBe(first.admissionToken);
    expect(claims.iat).toBe(Math.floor(Date.parse(second.admittedAt) / 1000));
    const introspected = await call('POST', '/v1/tokens/introspect', { token: second.admissionToken }, SVC);
    expect(introspected.body).toMatchObject({ active: true, sub: 'u1', iat: claims.iat });
  });
});
