import { OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import type { TicketWatch } from '../../queue/ticket-watch.js';
import type { TicketView } from '../../queue/types.js';
import type { ApiContext } from '../context.js';
import { errors } from '../openapi.js';
import { TicketId } from '../schemas.js';

const encoder = new TextEncoder();
const event = (v: TicketView) => encoder.encode(`event: ticket\ndata: ${JSON.stringify(v)}\n\n`);
const HEARTBEAT = encoder.encode(': keep-alive\n\n');
// Browsers reconnect after this long when a stream drops; the first event is always the current view.
const PREAMBLE = encoder.encode('retry: 2000\n\n');
const terminal = (v: TicketView) => v.state !== 'waiting' && v.state !== 'admitted';

/**
 * `GET /v1/tickets/{ticketId}/events`: Server-Sent Events of the ticket view (API.md, Watching a
 * ticket). The id is checked and the view read before the stream starts, so an unknown id is a
 * plain `404 ticket_not_found`. Then the shared ticket watch (queue/ticket-watch.ts) feeds it;
 * the stream closes after the terminal view, and a client that leaves unsubscribes.
 * `Last-Event-ID` is ignored: the first event is always the current view.
 */
export function ticketEventRoutes(ctx: ApiContext, watch: TicketWatch) {
  const app = new OpenAPIHono({ defaultHook: ctx.defaultHook });
  app.openAPIRegistry.registerPath(
    createRoute({
      method: 'get', path: '/v1/tickets/{ticketId}/events', tags: ['tickets'],
      summary: 'Follow the ticket as Server-Sent Events (event `ticket`, data = the ticket view)',
      request: { params: z.object({ ticketId: TicketId }) },
      responses: { 200: { description: 'text/event-stream: the view at once, then on changes; closed after the terminal view', content: { 'text/event-stream': { schema: z.string() } } }, ...errors(404, 503) },
    }),
  );
  app.get('/v1/tickets/:ticketId/events', async (c) => {
    const ticketId = c.req.param('ticketId');
    const first = await ctx.queue.status(ticketId);
    let unsubscribe = () => {};
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(PREAMBLE);
        controller.enqueue(event(first));
        if (terminal(first)) return controller.close();
        unsubscribe = watch.watch(ticketId, first, {
          view: (v) => controller.enqueue(event(v)),
          heartbeat: () => controller.enqueue(HEARTBEAT),
          end: () => controller.close(),
        });
      },
      cancel: () => unsubscribe(),
    });
    return new Response(body, {
      status: 200,
      headers: { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-store', 'X-Accel-Buffering': 'no' },
    });
  });
  return app;
}
