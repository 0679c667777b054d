import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';
import { rawTicketStream } from './support/ticket-stream.js';

/**
 * Event streams are bounded: unbounded, one ticket id opened ~20,000 streams from one client and the
 * daemon, out of file descriptors, answered nobody. A ticket has at most four open at once (`429
 * rate_limited`), the process FLOODGATE_MAX_STREAMS (`503 unavailable`); either way the client polls.
 */
const { newPrefix } = testRedis();
const db = await testDb();
const { daemon, call, define } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url, env: { FLOODGATE_MAX_STREAMS: '6' } });

const rawStream = (ticketId: string) => rawTicketStream(daemon.url, ticketId);

/** Waits until the stream has its first event (200) or an error answer; returns the status line's code. */
async function opened(s: ReturnType<typeof rawTicketStream>): Promise<number> {
  await expect.poll(() => /event: ticket|\r\n\r\n\{/.test(s.text()), { timeout: 10_000 }).toBe(true);
  return Number(/^HTTP\/1\.1 (\d+)/.exec(s.text())![1]);
}

describe('event streams', () => {
  it('are at most four per ticket and FLOODGATE_MAX_STREAMS in all; a closed one makes room', async () => {
    await define('lim', { handler: 'external', gate: { mode: 'closed' } });
    const [a, b, c] = await Promise.all(['ua', 'ub', 'uc'].map(async (u) => (await call('POST', '/v1/items/lim/tickets', { userId: u }, SVC)).body.ticketId as string));
    const onA = [0, 1, 2, 3].map(() => rawStream(a));
    for (const s of onA) expect(await opened(s)).toBe(200);
    const fifth = rawStream(a);
    expect(await opened(fifth)).toBe(429);
    expect(fifth.text()).toMatch(/\r\nretry-after: \d+/i);
    expect(fifth.text()).toContain('"code":"rate_limited"');
    // Polls are unaffected.
    expect((await call('GET', `/v1/tickets/${a}`, undefined, null)).body.state).toBe('waiting');

    // One of the four leaves: a new one is let in.
    onA[0].sock.destroy();
    await expect.poll(async () => opened(rawStream(a)), { timeout: 10_000 }).toBe(200);

    // Four on a, two on b: six in all, the process's limit.
    const onB = [rawStream(b), rawStream(b)];
    for (const s of onB) expect(await opened(s)).toBe(200);
    const onC = rawStream(c);
    expect(await opened(onC)).toBe(503);
    expect(onC.text()).toContain('"code":"unavailable"');
    onB[0].sock.destroy();
    await expect.poll(async () => opened(rawStream(c)), { timeout: 10_000 }).toBe(200);
  });
});

describe('a stream whose client left while its ticket was read', () => {
  it('takes no place: four such on a ticket leave its streams open to others', async () => {
    const { serve } = await import('@hono/node-server');
    const { ticketEventRoutes } = await import('../src/api/routes/ticket-events.js');
    const view = { ticketId: 'abc', state: 'waiting' };
    // The ticket's read is held until the test lets it go (a slow Redis, a reconnect's hold).
    let reading: { asked: () => void; release: () => void } | null = null;
    const ctx = {
      admitHold: () => null,
      reconnects: () => 0,
      queue: {
        tickets: {
          seen: () => {},
          status: () =>
            new Promise((resolve) => {
              if (!reading) return resolve(view);
              reading.asked();
              reading.release = () => resolve(view);
            }),
        },
      },
    };
    const app = ticketEventRoutes(ctx as never, { watch: () => () => {}, size: () => 0 } as never, { max: 100 });
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' });
    await new Promise((r) => server.once('listening', r));
    const closedOnServer: Promise<void>[] = [];
    server.on('connection', (s) => closedOnServer.push(new Promise((r) => s.once('close', () => r()))));
    const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    try {
      for (let i = 0; i < 4; i++) {
        let asked = () => {};
        const wasAsked = new Promise<void>((r) => (asked = r));
        reading = { asked, release: () => {} };
        const s = rawTicketStream(base, 'abc');
        await wasAsked;
        s.sock.destroy();
        await closedOnServer[closedOnServer.length - 1];
        reading.release();
        await s.closed;
      }
      reading = null;
      const after = rawTicketStream(base, 'abc');
      expect(await opened(after)).toBe(200); // before: 500 here (rate_limited, no error handler): the four slots were never given back
      after.sock.destroy();
    } finally {
      (server as unknown as { closeAllConnections(): void }).closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});
