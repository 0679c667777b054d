import type { MiddlewareHandler } from 'hono';
import { isWhole, NO_STORE_JSON } from './answers.js';

export type CorsOrigins = string[] | '*';

/** The origin to allow for a request from `origin` ('*' for any), or null. */
function allowedOrigin(origins: CorsOrigins) {
  if (origins === '*') return () => '*';
  const listed = new Set(origins);
  return (origin: string | undefined) => (origin !== undefined && listed.has(origin) ? origin : null);
}

/** Every header of a ticket's JSON answer for a request from `origin`: type, no-store, CORS. */
export function ticketAnswerHeaders(origins: CorsOrigins = '*'): (origin: string | undefined) => Readonly<Record<string, string>> {
  if (origins === '*') {
    const all = Object.freeze({ ...NO_STORE_JSON, 'Access-Control-Allow-Origin': '*' });
    return () => all;
  }
  const allowed = allowedOrigin(origins);
  const refused = Object.freeze({ ...NO_STORE_JSON, Vary: 'Origin' });
  return (origin) => {
    const allow = allowed(origin);
    return allow ? { ...NO_STORE_JSON, 'Access-Control-Allow-Origin': allow, Vary: 'Origin' } : refused;
  };
}

/**
 * CORS for the ticket endpoints (`GET`/`HEAD`/`DELETE /v1/tickets/{ticketId}`), so a shop's own
 * waiting page can poll and cancel from the browser. No cookies or keys are involved (the ticket
 * id is the credential), so any origin is safe by default; `origins` may narrow it to a list.
 * The headers are added after the handler ran: hono's cors() touches the response before the
 * handler and cost a poll about a third of its in-process throughput. The poll itself answers
 * whole (answers.ts) with `ticketAnswerHeaders`, and is left alone here.
 *
 *   app.use('/v1/tickets/:ticketId', ticketCors(['https://shop.example']));
 */
export function ticketCors(origins: CorsOrigins = '*'): MiddlewareHandler {
  const any = origins === '*';
  const allowed = allowedOrigin(origins);
  return async (c, next) => {
    const allow = allowed(c.req.header('origin'));
    if (c.req.method === 'OPTIONS') {
      const headers: Record<string, string> = {};
      if (allow) {
        headers['Access-Control-Allow-Origin'] = allow;
        headers['Access-Control-Allow-Methods'] = 'GET, HEAD, DELETE';
        headers['Access-Control-Max-Age'] = '600';
        const asked = c.req.header('access-control-request-headers');
        if (asked) headers['Access-Control-Allow-Headers'] = asked;
      }
      if (!any) headers.Vary = 'Origin';
      return c.body(null, 204, headers);
    }
    await next();
    if (isWhole(c.res)) return;
    if (allow) c.res.headers.set('Access-Control-Allow-Origin', allow);
    if (!any) c.res.headers.append('Vary', 'Origin');
  };
}
