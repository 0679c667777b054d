import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Histogram } from 'prom-client';
import type { Tickets } from '../queue/tickets.js';
import type { Auth } from './auth.js';

const PREFIX = '/v1/tickets/';
/** What a ticket id is made of (base64url halves and dots); anything else (`/`, `?`, `%`…) is left to the router. */
const ID = /^[A-Za-z0-9._-]{1,256}$/;
const LABELS = Object.freeze({ method: 'GET', route: '/v1/tickets/:ticketId', status: '200' });

/**
 * The flood's poll, answered beneath Hono: `GET /v1/tickets/{ticketId}` for a waiting ticket that
 * the cached item view can place (tickets.statusNow) is written straight to Node's response —
 * the same body and headers as the route's (type, no-store, the tickets' CORS for the origin),
 * counted in the same request histogram. Under a flood of polls that is most requests, and the
 * router, the middleware chain and the WHATWG Request/Response pair cost about as much CPU as
 * the answer itself (docs/design-notes.md, the front door).
 *
 * Everything else goes on to the app unchanged, and the route asks tickets.status, which tries the
 * same statusNow first: an unknown or forged id, a ticket that is not waiting or not in a fresh
 * view, an operator's poll (the route adds `source`), a poll while the daemon holds answers after a
 * Redis reconnect, HEAD, a query string, a request with a body
 * (the body limit is the app's), any other path or method. Returns whether it answered.
 */
export function hotPoll(deps: {
  tickets: Tickets;
  auth: Auth;
  headers(origin: string | undefined): Readonly<Record<string, string>>;
  duration: Histogram<'method' | 'route' | 'status'>;
  /** While it answers a promise (after a Redis reconnect: api/context.ts admitHold), polls go to the route, which waits for it. */
  held(): unknown;
}) {
  return (req: IncomingMessage, res: ServerResponse): boolean => {
    const url = req.url;
    if (req.method !== 'GET' || url === undefined || !url.startsWith(PREFIX)) return false;
    const ticketId = url.slice(PREFIX.length);
    if (!ID.test(ticketId)) return false;
    const h = req.headers;
    if (h['content-length'] !== undefined || h['transfer-encoding'] !== undefined) return false;
    if (h.authorization !== undefined && deps.auth.isOperator(h.authorization)) return false;
    if (deps.held()) return false;
    const start = performance.now();
    const view = deps.tickets.statusNow(ticketId);
    if (!view) return false;
    const body = JSON.stringify(view);
    res.writeHead(200, { ...deps.headers(h.origin), 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
    deps.duration.observe(LABELS, (performance.now() - start) / 1000);
    return true;
  };
}

export type HotPoll = ReturnType<typeof hotPoll>;
