import { OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import type { ServerResponse } from 'node:http';
import type { TicketWatch } from '../../queue/ticket-watch.js';
import type { TicketView } from '../../queue/types.js';
import type { ApiContext } from '../context.js';
import { errors } from '../openapi.js';
import { TicketId } from '../schemas.js';

const encoder = new TextEncoder();
const eventText = (v: TicketView) => `event: ticket\ndata: ${JSON.stringify(v)}\n\n`;
const event = (v: TicketView) => encoder.encode(eventText(v));
const HEARTBEAT_TEXT = ': keep-alive\n\n';
const HEARTBEAT = encoder.encode(HEARTBEAT_TEXT);
// Browsers reconnect after this long when a stream drops; the first event is always the current view.
const PREAMBLE_TEXT = 'retry: 2000\n\n';
const PREAMBLE = encoder.encode(PREAMBLE_TEXT);
const SSE_HEADERS = { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-store', 'X-Accel-Buffering': 'no' };
/** @hono/node-server leaves a response with this header to the handler, which wrote it itself. */
const ALREADY_SENT = 'x-hono-already-sent';
/**
 * The platform's Response: @hono/node-server swaps in a lighter global Response whose instances it
 * writes out itself, ignoring ALREADY_SENT; its prototype is the original.
 */
const NativeResponse: typeof Response = Object.getPrototypeOf(Response) !== Function.prototype ? Object.getPrototypeOf(Response) : Response;
const terminal = (v: TicketView) => v.state !== 'waiting' && v.state !== 'admitted';
/** Streams closed per event-loop turn after a pass that told many their last event. */
const CLOSE_SLICE = 1000;

/**
 * `GET /v1/tickets/{ticketId}/events`: Server-Sent Events of the ticket view (API.md, Watching a
 * ticket). The id is checked and the view read before the stream starts, so an unknown id is a
 * plain `404 ticket_not_found`. Then the shared ticket watch (queue/ticket-watch.ts) feeds it;
 * the stream closes after the terminal view, and a client that leaves unsubscribes.
 * `Last-Event-ID` is ignored: the first event is always the current view.
 *
 * On @hono/node-server the stream is written straight to the Node response: a web ReadableStream
 * piped per stream cost about a third more memory per open stream and spread a sell-out's 19,800
 * last events over seconds (docs/benchmarks.md). Elsewhere (app.request in tests) it is a
 * ReadableStream. The direct write starts on the next turn, once the middleware after the handler
 * (CORS) has put its headers on the response, which are then sent with the stream's.
 */
export function ticketEventRoutes(ctx: ApiContext, watch: TicketWatch) {
  const app = new OpenAPIHono({ defaultHook: ctx.defaultHook });
  /**
   * Streams told their last event, to be closed on a later turn of the event loop. A sell-out tells
   * thousands of streams in one pass; closing each at once queued the closes' own work (finish
   * events, shutdowns, the peers' closes coming back) ahead of everything else, and a watcher whose
   * last view needed a Redis read waited a second behind it. Closed in slices, with I/O between.
   */
  const closing: ServerResponse[] = [];
  const closeSlice = () => {
    for (const res of closing.splice(0, CLOSE_SLICE)) res.end();
    if (closing.length) setImmediate(closeSlice);
  };
  const closeSoon = (res: ServerResponse) => {
    if (closing.push(res) === 1) setImmediate(closeSlice);
  };
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
    const first = await ctx.queue.tickets.status(ticketId);
    const outgoing = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing;
    if (outgoing) {
      const res = new NativeResponse(null, { headers: { ...SSE_HEADERS, [ALREADY_SENT]: 'true' } });
      setImmediate(() => {
        if (outgoing.destroyed) return;
        // No chunked framing: the stream's body ends when the connection closes (HTTP/1.1 allows a
        // close-delimited body; Node then sends `Connection: close`). An event is then one plain
        // write, not a writev of size line, event and trailer, which at a sell-out is most of the
        // daemon's cost per stream.
        outgoing.useChunkedEncodingByDefault = false;
        outgoing.writeHead(200, Object.fromEntries([...res.headers].filter(([k]) => k !== ALREADY_SENT)));
        outgoing.write(PREAMBLE_TEXT + eventText(first));
        if (terminal(first)) return void outgoing.end();
        const unsubscribe = watch.watch(ticketId, first, {
          view: (v) => outgoing.write(eventText(v)),
          heartbeat: () => outgoing.write(HEARTBEAT_TEXT),
          end: () => outgoing.end(),
          last: (v) => {
            outgoing.write(eventText(v));
            closeSoon(outgoing);
          },
        });
        outgoing.on('close', unsubscribe);
      });
      return res;
    }
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
    return new Response(body, { status: 200, headers: SSE_HEADERS });
  });
  return app;
}
