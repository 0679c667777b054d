import { OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import type { ServerResponse } from 'node:http';
import type { TicketWatch } from '../../queue/ticket-watch.js';
import type { TicketView } from '../../queue/types.js';
import type { ApiContext } from '../context.js';
import { fail } from '../../kernel/errors.js';
import { errors } from '../openapi.js';
import { TicketId } from '../schemas.js';
import { statusUnheld } from './tickets.js';

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
/** Streams one ticket may have open at once in a process: a user's tabs, not a flood on one id. */
export const STREAMS_PER_TICKET = 4;
/**
 * Bytes a stream may have waiting for its client before it is closed: a client that does not read
 * kept every event buffered, and its connection, for as long as the ticket lived.
 */
const STREAM_BACKLOG = 256 * 1024;

/**
 * `GET /v1/tickets/{ticketId}/events`: Server-Sent Events of the ticket view (API.md, Watching a
 * ticket). The id is checked and the view read before the stream starts, so an unknown id is a
 * plain `404 ticket_not_found`. Then the shared ticket watch (queue/ticket-watch.ts) feeds it;
 * the stream closes after the terminal view, and a client that leaves unsubscribes.
 * `Last-Event-ID` is ignored: the first event is always the current view. `HEAD` answers the
 * stream's headers with no body and sets no watcher up.
 *
 * On @hono/node-server the stream is written straight to the Node response: a web ReadableStream
 * piped per stream cost about a third more memory per open stream and spread a sell-out's 19,800
 * last events over seconds (docs/benchmarks.md). Elsewhere (app.request in tests) it is a
 * ReadableStream. The direct write starts on the next turn, once the middleware after the handler
 * (CORS) has put its headers on the response, which are then sent with the stream's.
 */
export function ticketEventRoutes(ctx: ApiContext, watch: TicketWatch, limits: { max: number }) {
  const app = new OpenAPIHono({ defaultHook: ctx.defaultHook });
  /**
   * Open streams, per ticket and in all. Unbounded, one ticket's id opened ~20,000 streams from one
   * client: the daemon ran out of file descriptors and answered nobody (joins, polls, /readyz),
   * and each stream of an admitted ticket cost a Redis read every tick. Past the ticket's share the
   * answer is `429 rate_limited`, past the process's `503`: the waiting page polls instead.
   */
  const perTicket = new Map<string, number>();
  let open = 0;
  const opened = (ticketId: string) => {
    if ((perTicket.get(ticketId) ?? 0) >= STREAMS_PER_TICKET) fail('rate_limited', `This ticket has ${STREAMS_PER_TICKET} event streams open already; poll it instead.`, { streams: STREAMS_PER_TICKET }, 10);
    if (open >= limits.max) fail('unavailable', 'Too many event streams are open; poll the ticket instead.', undefined, 5);
    perTicket.set(ticketId, (perTicket.get(ticketId) ?? 0) + 1);
    open++;
    let closed = false;
    return () => {
      if (closed) return;
      closed = true;
      open--;
      const n = (perTicket.get(ticketId) ?? 1) - 1;
      if (n > 0) perTicket.set(ticketId, n);
      else perTicket.delete(ticketId);
    };
  };
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
  /**
   * The view as a poll shows it: an admitted or succeeded ticket with its admission token. The
   * stream's views carried none, so the waiting page that follows the stream sent an admitted user
   * on to the shop's returnUrl without `?admission=`, and the shop's checkout could not tell them
   * from anyone. A token that cannot be signed now leaves the view as it is rather than the stream.
   */
  const tokened = async (v: TicketView): Promise<TicketView> => (ctx.tokens && (v.state === 'admitted' || v.state === 'succeeded') ? ctx.tokens.withToken(v).catch(() => v) : v);
  /**
   * Writes a stream's events in the order the watch tells them: a view that needs its token signed
   * first holds back what comes after it (a heartbeat, the next view, the end). Views without one
   * (waiting, ended without a sale: a sell-out's thousands of last views) are written at once when
   * nothing is held back, as before.
   */
  const inOrder = () => {
    let held: Promise<void> | null = null;
    // `v` null: a heartbeat or the end, whose `write` takes no view.
    return (v: TicketView | null, write: (v: TicketView) => void) => {
      const signed = v !== null && ctx.tokens !== undefined && (v.state === 'admitted' || v.state === 'succeeded');
      if (!held && !signed) return void write(v as TicketView);
      const after: Promise<void> = (held ?? Promise.resolve())
        .then(async () => write((v === null ? v : await tokened(v)) as TicketView))
        .catch(() => {})
        .then(() => {
          if (held === after) held = null;
        });
      held = after;
    };
  };
  app.openAPIRegistry.registerPath(
    createRoute({
      method: 'get', path: '/v1/tickets/{ticketId}/events', tags: ['tickets'],
      summary: 'Follow the ticket as Server-Sent Events (event `ticket`, data = the ticket view)',
      request: { params: z.object({ ticketId: TicketId }) },
      responses: { 200: { description: 'text/event-stream: the view at once, then on changes; closed after the terminal view', content: { 'text/event-stream': { schema: z.string() } } }, ...errors(404, 429, 503) },
    }),
  );
  app.get('/v1/tickets/:ticketId/events', async (c) => {
    const ticketId = c.req.param('ticketId');
    // An open stream is its holder's sign of life, as polls are (abandonAfterMs): the waiting page
    // follows the stream, and a user who kept it open longer than that was expired as "abandoned"
    // when their ticket reached the head. Told at each event and heartbeat (10 s of silence at most).
    const alive = () => ctx.queue.tickets.seen(ticketId);
    // HEAD (hono answers it with this handler, then drops the body): the stream's headers, once the
    // id is known to be a ticket (a 404 as a GET's), and nothing more. The stream set up for it
    // was never read: through app.request its watcher stayed subscribed, and on the wire it was
    // written to the socket while the answer carried the internal ALREADY_SENT header.
    if (c.req.method === 'HEAD') {
      await statusUnheld(ctx, ticketId);
      return new Response(null, { status: 200, headers: SSE_HEADERS });
    }
    // (As a poll: after a reconnect's hold, and again if one came while it read.)
    const first = await tokened(await statusUnheld(ctx, ticketId));
    const outgoing = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing;
    // A client gone while the view was read (its close already fired) takes no stream's place:
    // counted, it was never released, and four such on a ticket refused its streams for good.
    const release = terminal(first) || outgoing?.destroyed ? () => {} : opened(ticketId);
    if (outgoing) {
      outgoing.on('close', release);
      // A client that closes its side has left (an EventSource never does): the daemon answers
      // half-closed connections (daemon.ts, halfOpen), and a stream would learn it only at its
      // next write, up to a heartbeat later, holding its place on the ticket until then.
      const socket = outgoing.req?.socket;
      socket?.once('end', () => socket.destroy());
      const res = new NativeResponse(null, { headers: { ...SSE_HEADERS, [ALREADY_SENT]: 'true' } });
      setImmediate(() => {
        if (outgoing.destroyed) return release();
        // No chunked framing: the stream's body ends when the connection closes (HTTP/1.1 allows a
        // close-delimited body; Node then sends `Connection: close`). An event is then one plain
        // write, not a writev of size line, event and trailer, which at a sell-out is most of the
        // daemon's cost per stream.
        outgoing.useChunkedEncodingByDefault = false;
        outgoing.writeHead(200, Object.fromEntries([...res.headers].filter(([k]) => k !== ALREADY_SENT)));
        outgoing.write(PREAMBLE_TEXT + eventText(first));
        if (terminal(first)) return void outgoing.end();
        const send = inOrder();
        // A view held back for its token may come after the client left; a client that reads
        // nothing is let go once its backlog passes STREAM_BACKLOG.
        const write = (text: string) => {
          if (outgoing.destroyed) return;
          if (outgoing.writableLength > STREAM_BACKLOG) return void outgoing.destroy();
          outgoing.write(text);
        };
        const unsubscribe = watch.watch(ticketId, first, {
          view: (v) => (alive(), send(v, (w) => write(eventText(w)))),
          heartbeat: () => (alive(), send(null, () => write(HEARTBEAT_TEXT))),
          end: () => send(null, () => outgoing.end()),
          last: (v) =>
            send(v, (w) => {
              write(eventText(w));
              closeSoon(outgoing);
            }),
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
        const send = inOrder();
        unsubscribe = watch.watch(ticketId, first, {
          view: (v) => (alive(), send(v, (w) => controller.enqueue(event(w)))),
          heartbeat: () => (alive(), send(null, () => controller.enqueue(HEARTBEAT))),
          end: () => send(null, () => (release(), controller.close())),
        });
      },
      cancel: () => (unsubscribe(), release()),
    });
    return new Response(body, { status: 200, headers: SSE_HEADERS });
  });
  return app;
}
