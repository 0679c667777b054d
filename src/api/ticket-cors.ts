import type { MiddlewareHandler } from 'hono';
import { isWhole, NO_STORE_JSON } from './answers.js';

export type CorsOrigins = string[] | '*';

/** The CORS headers of a ticket answer to a request from `origin`: who may read it, and Vary when that depends on the origin. */
function corsFor(origins: CorsOrigins): (origin: string | undefined) => Readonly<Record<string, string>> {
  if (origins === '*') {
    const any = Object.freeze({ 'Access-Control-Allow-Origin': '*' });
    return () => any;
  }
  const listed = new Set(origins);
  const refused = Object.freeze({ Vary: 'Origin' });
  return (origin) => (origin !== undefined && listed.has(origin) ? { 'Access-Control-Allow-Origin': origin, Vary: 'Origin' } : refused);
}

/** Every header of a ticket's JSON answer for a request from `origin`: type, no-store, CORS. */
export function ticketAnswerHeaders(origins: CorsOrigins = '*'): (origin: string | undefined) => Readonly<Record<string, string>> {
  const cors = corsFor(origins);
  if (origins === '*') {
    const all = Object.freeze({ ...NO_STORE_JSON, ...cors(undefined) });
    return () => all;
  }
  return (origin) => ({ ...NO_STORE_JSON, ...cors(origin) });
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
  const cors = corsFor(origins);
  return async (c, next) => {
    const headers = cors(c.req.header('origin'));
    if (c.req.method === 'OPTIONS') {
      const preflight: Record<string, string> = { ...headers };
      if (headers['Access-Control-Allow-Origin']) {
        preflight['Access-Control-Allow-Methods'] = 'GET, HEAD, DELETE';
        preflight['Access-Control-Max-Age'] = '600';
        const asked = c.req.header('access-control-request-headers');
        if (asked) preflight['Access-Control-Allow-Headers'] = asked;
      }
      return c.body(null, 204, preflight);
    }
    await next();
    if (isWhole(c.res)) return;
    for (const [name, value] of Object.entries(headers)) {
      if (name === 'Vary') c.res.headers.append(name, value);
      else c.res.headers.set(name, value);
    }
  };
}
