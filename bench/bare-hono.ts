/**
 * The baseline: a bare Hono app on @hono/node-server, run as its own process like the daemon.
 * Same route shapes as the daemon's join and poll, a small JSON body parsed, small JSON answered.
 * BARE_BODY_LIMIT=1 adds hono's bodyLimit middleware on /v1/* as the daemon has (the `overhead`
 * scenario measures what that costs).
 */
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';

const app = new Hono();
let seq = 0;

if (process.env.BARE_BODY_LIMIT === '1') app.use('/v1/*', bodyLimit({ maxSize: 16 * 1024 }));

app.get('/healthz', (c) => c.json({ status: 'ok' }));

app.post('/v1/items/:itemId/tickets', async (c) => {
  const body = (await c.req.json()) as { userId?: unknown };
  if (typeof body.userId !== 'string') return c.json({ error: { code: 'invalid_request', message: 'userId' } }, 400);
  seq++;
  return c.json({ ticketId: `t${seq}`, itemId: c.req.param('itemId'), userId: body.userId, state: 'waiting', position: seq, pollAfterMs: 1000 }, 202);
});

app.get('/v1/tickets/:ticketId', (c) =>
  c.json({ ticketId: c.req.param('ticketId'), state: 'waiting', position: 17, etaMs: 4200, pollAfterMs: 1000 }),
);

serve({ fetch: app.fetch, port: Number(process.env.PORT ?? 8090), hostname: '127.0.0.1' });

// Exit on SIGTERM as the daemon does, so that `node --cpu-prof` writes its profile (the `flame` scenario).
process.once('SIGTERM', () => process.exit(0));
