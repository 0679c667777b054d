import net from 'node:net';
import postgres from 'postgres';
import { describe, expect, it } from 'vitest';
import { testDb } from './support/db.js';

/**
 * postgres.js 3.4.9: a socket's error fails the connection's queries, but the pool keeps the
 * connection in its busy list until the socket's `close`, a moment later. A query handed to it in
 * between was queued behind the failed one, written to the destroyed socket, and never failed —
 * the close fails nothing when it came with an error — so it waited forever, and the slot never
 * took work again. A review saw a sale stuck for good this way after a Postgres stall just past
 * FLOODGATE_PG_TIMEOUT_MS (the silence watch destroys the socket with an error, and the sell
 * batch's retry landed in the window): 60–88 tickets `admitted` for minutes, their units held.
 * scripts/patch-postgres.mjs (run on install) makes the close fail whatever the connection holds.
 */
const db = await testDb();
const target = new URL(db.url);

describe("postgres.js's connection between its socket's error and close", () => {
  it.each(['nextTick', 'setImmediate'])('fails a query handed to it in that window (issued at %s after the error), and serves the next', async (when) => {
    let socket: net.Socket | null = null;
    // The socket the connection runs on, kept here to be destroyed as the daemon's silence watch
    // does (postgres.js's `socket` option: a connected socket; not in its types).
    const ownSocket = async () => {
      const s = new net.Socket();
      await new Promise<void>((r) => s.connect(Number(target.port || 5432), target.hostname, r));
      socket = s;
      return s;
    };
    const sql = postgres(db.url, { max: 1, onnotice: () => {}, ...({ socket: ownSocket } as object) });
    try {
      await sql`select 1`;
      const busy = sql`select pg_sleep(0.3)`.then(
        () => 'answered',
        (e: { message?: string }) => e.message,
      );
      // (Sent: the connection is in the pool's busy list.)
      await new Promise((r) => setTimeout(r, 50));
      let next!: Promise<unknown>;
      const issue = () => (next = sql`select 2 as x`.then((r) => r[0].x, (e: { code?: string }) => e.code));
      socket!.once('error', () => (when === 'nextTick' ? process.nextTick(issue) : setImmediate(issue)));
      socket!.destroy(new Error('silent for too long'));
      expect(await busy).toBe('silent for too long');
      await new Promise((r) => setTimeout(r, 10));
      const bound = async (p: Promise<unknown>) => {
        let timer: NodeJS.Timeout | undefined;
        try {
          return await Promise.race([p, new Promise((r) => (timer = setTimeout(() => r('still waiting after 5 s'), 5000)))]);
        } finally {
          clearTimeout(timer);
        }
      };
      // Before the patch: still waiting (for good).
      expect(await bound(next)).toMatch(/^CONNECTION_(CLOSED|DESTROYED)$|^2$/);
      expect(await bound(sql`select 3 as x`.then((r) => r[0].x))).toBe(3);
    } finally {
      await sql.end({ timeout: 1 });
    }
  });
});
