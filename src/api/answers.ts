/**
 * Whole answers for the routes a flood hits (join, poll): the status and every header in a plain
 * object, so @hono/node-server writes them as they are. A header added to a response afterwards
 * (`c.res.headers.set`, as the app's `Cache-Control` default and the tickets' CORS did) makes it
 * build a WHATWG `Headers` and a full `Response` first, ~5–10% of a poll's CPU (docs/benchmarks.md,
 * 2 Dec). Middleware that adds headers after the handler leaves a whole answer alone: it already
 * carries them.
 */
const whole = new WeakSet<Response>();

/** A JSON answer with exactly these headers (Content-Type and `Cache-Control: no-store` included). */
export function wholeJson(body: unknown, status: number, headers: Readonly<Record<string, string>> = NO_STORE_JSON): Response {
  const res = new Response(JSON.stringify(body), { status, headers: headers as Record<string, string> });
  whole.add(res);
  return res;
}

/** Whether a response is a whole answer (its headers are final). */
export const isWhole = (res: Response) => whole.has(res);

export const NO_STORE_JSON: Readonly<Record<string, string>> = Object.freeze({ 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
