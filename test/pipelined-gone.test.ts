import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';
import { rawTicketStream } from './support/ticket-stream.js';

/**
 * Answers queued behind another on a pipelined connection (HTTP/1.1 lets a client send requests
 * without waiting for answers): Node tells only the answer the socket is writing that the socket
 * closed, so an answer queued behind it whose client left was kept for good, with what it held.
 */
const { newPrefix } = testRedis();
const db = await testDb();
const { daemon, call, define } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url });

/** Waits until the stream has its first event (200) or an error answer; returns the status line's code. */
async function opened(s: ReturnType<typeof rawTicketStream>): Promise<number> {
  await expect.poll(() => /event: ticket|\r\n\r\n\{/.test(s.text()), { timeout: 10_000 }).toBe(true);
  return Number(/^HTTP\/1\.1 (\d+)/.exec(s.text())![1]);
}
const rawStream = (ticketId: string) => rawTicketStream(daemon.url, ticketId);

describe('a stream queued behind another answer on a pipelined connection', () => {
  it('makes room when its client leaves (Node tells only the answer being written that its socket closed)', async () => {
    await define('pipe', { handler: 'external', gate: { mode: 'closed' } });
    const [a, b] = await Promise.all(['pa', 'pb'].map(async (u) => (await call('POST', '/v1/items/pipe/tickets', { userId: u }, SVC)).body.ticketId as string));
    const { port } = new URL(daemon.url);
    for (let i = 0; i < 4; i++) {
      // a's stream, then b's behind it on the same connection: b's waits for a's to end, which it never does.
      const sock = connect(Number(port), '127.0.0.1');
      let got = '';
      sock.on('data', (d) => (got += d));
      sock.on('error', () => {});
      sock.write(`GET /v1/tickets/${a}/events HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/tickets/${b}/events HTTP/1.1\r\nHost: x\r\n\r\n`);
      await expect.poll(() => got, { timeout: 10_000 }).toContain('event: ticket');
      const closed = new Promise((r) => sock.once('close', r));
      sock.destroy();
      await closed;
    }
    // Before: b's four places stayed taken for good (429 for as long as the daemon ran).
    await expect.poll(async () => opened(rawStream(b)), { timeout: 10_000 }).toBe(200);
    await expect.poll(async () => opened(rawStream(a)), { timeout: 10_000 }).toBe(200);
  });
});


describe('many requests pipelined on one connection', () => {
  it('are answered in order with no leak warning (a listener per request warned from the tenth on)', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    try {
      const { port } = new URL(daemon.url);
      const sock = connect(Number(port), '127.0.0.1');
      let got = '';
      sock.on('data', (d) => (got += d));
      sock.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(30));
      await expect.poll(() => (got.match(/HTTP\/1\.1 200 /g) ?? []).length, { timeout: 10_000 }).toBe(30);
      const closed = new Promise((r) => sock.once('close', r));
      sock.destroy();
      await closed;
      // (Node emits the warning on the next tick.)
      await new Promise((r) => setImmediate(r));
      expect(warnings.filter((w) => w.startsWith('MaxListenersExceededWarning'))).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  });
});

describe('a client that closes its side once it has sent its request', () => {
  it('is answered: its join is told its ticket (Node dropped the answer while the join was made)', async () => {
    await define('half', { handler: 'external', gate: { mode: 'closed' } });
    const { port } = new URL(daemon.url);
    const body = JSON.stringify({ userId: 'half-u' });
    const sock = connect(Number(port), '127.0.0.1');
    let got = '';
    sock.on('data', (d) => (got += d));
    sock.on('error', () => {});
    const closed = new Promise((r) => sock.once('close', r));
    sock.end(`POST /v1/items/half/tickets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${SVC}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    await closed;
    expect(got).toMatch(/^HTTP\/1\.1 202 /);
    const ticketId = JSON.parse(got.slice(got.indexOf('\r\n\r\n') + 4)).ticketId;
    // The same user again: the ticket the first join made, told to the client that asked.
    const again = await call('POST', '/v1/items/half/tickets', { userId: 'half-u' }, SVC);
    expect(again.body.ticketId).toBe(ticketId);
  });
});

describe('a client that pipelines polls and reads none of the answers', () => {
  it('is cut; one that pipelines 200 and reads them gets every answer', { timeout: 60_000 }, async () => {
    // Node parses on while each pipelined answer waits, whole, for the one before it to be
    // written: 100 connections of 5,000 polls took a daemon past 3.5 GB in 30 s, then out of
    // memory (a review).
    await define('unread', { handler: 'external', gate: { mode: 'closed' } });
    const ticket = (await call('POST', '/v1/items/unread/tickets', { userId: 'ur' }, SVC)).body.ticketId as string;
    const poll = `GET /v1/tickets/${ticket} HTTP/1.1\r\nHost: x\r\n\r\n`;
    const { port } = new URL(daemon.url);

    const reader = connect(Number(port), '127.0.0.1');
    let got = '';
    reader.on('data', (d) => (got += d));
    reader.write(poll.repeat(200));
    await expect.poll(() => (got.match(/HTTP\/1\.1 200 /g) ?? []).length, { timeout: 30_000 }).toBe(200);
    reader.destroy();

    const silent = connect(Number(port), '127.0.0.1');
    silent.pause();
    let closed = false;
    silent.on('error', () => {});
    silent.on('close', () => (closed = true));
    try {
      silent.write(poll.repeat(50_000));
      // (Its end is seen when it writes: a paused socket reads no close; a write after it is reset.)
      await expect.poll(() => (silent.destroyed || silent.write(poll), closed), { timeout: 30_000, interval: 200 }).toBe(true);
    } finally {
      silent.destroy();
    }
  });
});

describe('connections that send too slowly', () => {
  it('are closed once their headers have taken 10 s: one that sends nothing, one that sends a byte a second', { timeout: 60_000 }, async () => {
    // Node's own timeouts (60 s for the headers, looked at every 30 s) let each hold a file
    // descriptor for ~87 s (a review): a few hundred a second filled the descriptor limit.
    const { port } = new URL(daemon.url);
    const opened = Date.now();
    const silent = connect(Number(port), '127.0.0.1');
    const trickle = connect(Number(port), '127.0.0.1');
    const closedAt = (s: ReturnType<typeof connect>) => new Promise<number>((r) => s.on('error', () => {}).once('close', () => r(Date.now() - opened)));
    const ends = Promise.all([closedAt(silent), closedAt(trickle)]);
    const bytes = 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa';
    let i = 0;
    const drip = setInterval(() => trickle.writable && trickle.write(bytes[i++ % bytes.length]), 1000);
    try {
      const [a, b] = await ends;
      expect(a).toBeLessThan(30_000);
      expect(b).toBeLessThan(30_000);
    } finally {
      clearInterval(drip);
      silent.destroy();
      trickle.destroy();
    }
  });
});
