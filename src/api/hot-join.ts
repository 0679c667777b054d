import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Histogram } from 'prom-client';
import type { ApiContext } from './context.js';
import { JSON_TYPE, parseJsonBytes } from './errors.js';
import { joinAnswer } from './join.js';

const PREFIX = '/v1/items/';
/** The join path with an item id as ITEM_ID spells it, unescaped; anything else (`%`, a query, a slash more) is left to the router. */
const PATH = /^\/v1\/items\/([A-Za-z0-9][A-Za-z0-9._:-]{0,127})\/tickets$/;
const ROUTE = '/v1/items/:itemId/tickets';

export interface HotJoinDeps {
  ctx: ApiContext;
  /** The app's body limit (FLOODGATE_BODY_LIMIT_BYTES): a larger declared body is the app's to refuse. */
  bodyLimitBytes: number;
  /** What the app answers for an error thrown on `path` (its onError: the contract's body, counted). */
  refuse(err: unknown, path: string): { status: number; body: unknown; headers: Readonly<Record<string, string>> };
  duration: Histogram<'method' | 'route' | 'status'>;
}

/**
 * The flood's join, answered beneath Hono: `POST /v1/items/{itemId}/tickets` with a JSON body of a
 * declared length within the limit and a key that may act as a service is served here, through
 * the route's own checks and answer (join.ts: scope, the cached refusals, the body's schema, the
 * join); every error goes through the app's error answer. The router, the middleware chain and
 * the WHATWG Request/Response pair are work a join does not need (what leaving them bought, as
 * measured: docs/design-notes.md, the front door).
 *
 * Everything else goes on to the app unchanged, where the route answers it: no key or an unknown
 * one (401), another content type (415), no Content-Length (a chunked body), a body over the limit
 * (413), a repeated Authorization or Content-Type, an escaped or odd path, any other method.
 * Returns whether it took the request. (A Host header of another shape than name[:port] is not
 * brought here, daemon.ts: @hono/node-server reads it, or answers 400, before the app runs.)
 * A middleware added to the app later does not run for the requests taken here.
 */
export function hotJoin(deps: HotJoinDeps) {
  const { ctx } = deps;
  const labels = new Map<number, { method: string; route: string; status: string }>();
  const labelsOf = (status: number) => {
    let l = labels.get(status);
    if (!l) labels.set(status, (l = Object.freeze({ method: 'POST', route: ROUTE, status: String(status) })));
    return l;
  };

  async function answer(req: IncomingMessage, res: ServerResponse, path: string, itemId: string, actor: NonNullable<ReturnType<ApiContext['auth']['serviceActor']>>, start: number) {
    let status: number;
    try {
      // The route's order: the key's scope, then the refusals the cache knows, then the body.
      ctx.auth.requireScope(actor, itemId);
      await ctx.queue.tickets.precheckJoin(itemId);
      // As the app's routes read it (errors.ts): UTF-8 or 400, a leading byte-order mark dropped.
      const body = parseJsonBytes(await readBody(req));
      const a = await joinAnswer(ctx, itemId, body, actor);
      status = a.status;
      send(res, status, a.headers, JSON.stringify(a.view));
    } catch (err) {
      if (err instanceof BodyLost) return; // the client went away mid-body: nobody to answer
      const r = deps.refuse(err, path);
      status = r.status;
      send(res, status, r.headers, JSON.stringify(r.body));
    }
    deps.duration.observe(labelsOf(status), (performance.now() - start) / 1000);
  }

  return (req: IncomingMessage, res: ServerResponse): boolean => {
    const url = req.url;
    if (req.method !== 'POST' || url === undefined || !url.startsWith(PREFIX)) return false;
    const m = PATH.exec(url);
    if (!m) return false;
    const h = req.headers;
    // Node keeps the first of repeated Authorization and Content-Type headers, Hono joins them
    // (`a, b`: no bearer key, no JSON type): such a request is the route's to refuse.
    if (repeats(req.rawHeaders)) return false;
    const declared = h['content-length'];
    if (declared === undefined || h['transfer-encoding'] !== undefined || !(Number(declared) <= deps.bodyLimitBytes)) return false;
    // A coded body (gzip…) is the route's to refuse (415).
    if (h['content-encoding'] !== undefined) return false;
    const type = h['content-type'];
    if (type === undefined || !JSON_TYPE.test(type)) return false;
    const actor = ctx.auth.serviceActor(h.authorization);
    if (!actor) return false;
    answer(req, res, url, m[1], actor, performance.now()).catch((err: unknown) => {
      ctx.log.error({ err: String(err) }, 'hot join failed to answer');
      res.destroy();
    });
    return true;
  };
}

class BodyLost extends Error {}

/** Whether Authorization or Content-Type comes more than once. */
function repeats(raw: string[]): boolean {
  let auth = 0;
  let type = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    if (name.length === 13 && name.toLowerCase() === 'authorization') auth++;
    else if (name.length === 12 && name.toLowerCase() === 'content-type') type++;
  }
  return auth > 1 || type > 1;
}

/**
 * The request's body as bytes (its length was declared and is within the limit), decoded by the
 * caller: read as UTF-8 text here, bytes that are not UTF-8 became U+FFFD and joined as another user.
 */
function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    // Gone while the item was looked up: its 'close' has been and gone.
    if (req.destroyed) return reject(new BodyLost());
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.once('end', () => resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)));
    req.once('error', () => reject(new BodyLost()));
    req.once('close', () => {
      if (!req.complete) reject(new BodyLost());
    });
  });
}

function send(res: ServerResponse, status: number, headers: Readonly<Record<string, string>>, body: string) {
  res.writeHead(status, { ...headers, 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

export type HotJoin = ReturnType<typeof hotJoin>;
