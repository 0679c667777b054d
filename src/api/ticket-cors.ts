import type { MiddlewareHandler } from 'hono';

export type CorsOrigins = string[] | '*';

/**
 * CORS for the ticket endpoints (`GET`/`HEAD`/`DELETE /v1/tickets/{ticketId}`), so a shop's own
 * waiting page can poll and cancel from the browser. No cookies or keys are involved (the ticket
 * id is the credential), so any origin is safe by default; `origins` may narrow it to a list.
 * The headers are added after the handler ran: hono's cors() touches the response before the
 * handler and cost a poll about a third of its in-process throughput.
 *
 *   app.use('/v1/tickets/:ticketId', ticketCors(['https://shop.example']));
 */
export function ticketCors(origins: CorsOrigins = '*'): MiddlewareHandler {
  const any = origins === '*';
  const listed = new Set(any ? [] : origins);
  const allowed = (origin: string | undefined) => (any ? '*' : origin !== undefined && listed.has(origin) ? origin : null);
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
    if (allow) c.res.headers.set('Access-Control-Allow-Origin', allow);
    if (!any) c.res.headers.append('Vary', 'Origin');
  };
}
