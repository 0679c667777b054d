import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';
import { rawTicketStream } from './support/ticket-stream.js';

const { newPrefix } = testRedis();
const db = await testDb();
const { daemon, call, define } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url });

const rawStream = (ticketId: string) => rawTicketStream(daemon.url, ticketId);

const events = (body: string) =>
  body
    .split('\n\n')
    .filter((b) => b.startsWith('event: ticket\n'))
    .map((b) => JSON.parse(b.split('\n')[1].slice('data: '.length)));

describe('ticket events on the wire', () => {
  it('sends plain event text (no chunk framing), then the terminal view, then closes the connection', async () => {
    await define('wire', { handler: 'external', gate: { mode: 'closed' } });
    const ids: string[] = [];
    for (const u of ['a', 'b', 'c']) ids.push((await call('POST', '/v1/items/wire/tickets', { userId: u }, SVC)).body.ticketId);
    const streams = ids.map(rawStream);
    await expect.poll(() => streams.every((s) => events(s.text()).length === 1), { timeout: 10_000 }).toBe(true);

    expect((await call('DELETE', '/v1/items/wire')).status).toBe(200);
    await Promise.all(streams.map((s) => s.closed));
    expect(streams.map((s) => s.error())).toEqual(streams.map(() => null));
    for (const [i, s] of streams.entries()) {
      const raw = s.text();
      const head = raw.slice(0, raw.indexOf('\r\n\r\n'));
      const body = raw.slice(head.length + 4);
      expect(head).toMatch(/^HTTP\/1\.1 200 /);
      expect(head).toMatch(/\r\ncontent-type: text\/event-stream/i);
      expect(head).toMatch(/\r\nconnection: close/i);
      expect(head).not.toMatch(/transfer-encoding/i);
      // The body is the event text itself, event after event, as the server closes it.
      expect(body.startsWith('retry: 2000\n\nevent: ticket\ndata: {')).toBe(true);
      expect(body.endsWith('}\n\n')).toBe(true);
      const views = events(body);
      expect(views.map((v) => v.state)).toEqual(['waiting', 'cancelled']);
      expect(views.every((v) => v.ticketId === ids[i])).toBe(true);
    }
  });
});
