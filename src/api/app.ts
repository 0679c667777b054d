import { OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type { Catalog } from '../catalog/catalog.js';
import { FloodgateError } from '../kernel/errors.js';
import type { Logger } from '../kernel/logger.js';
import type { Metrics } from '../kernel/metrics.js';
import type { Line } from '../queue/line.js';
import type { HandlerRegistry } from '../service/registry.js';
import { allowedMethods } from './allowed-methods.js';
import { isWhole, wholeJson } from './answers.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { hotPoll } from './hot-poll.js';
import { hotJoin } from './hot-join.js';
import { createAuth, type KeySets } from './auth.js';
import { limitBody } from './body-limit.js';
import type { ApiContext } from './context.js';
import { docsRoutes } from './docs-page.js';
import { errorAnswer, errorResponse, JSON_TYPE, strictJson, toFloodgateError, validationError, validationIssue } from './errors.js';
import { serveOpenApi } from './openapi.js';
import { ticketAnswerHeaders, ticketCors, type CorsOrigins } from './ticket-cors.js';
import { itemRoutes } from './routes/items.js';
import { opsRoutes, type OpsDeps } from './routes/ops.js';
import { ticketRoutes } from './routes/tickets.js';
import { orderRoutes } from './routes/orders.js';
import type { Reservations } from '../service/reservations.js';
import { accessRoutes } from './routes/access.js';
import { createBlocks } from '../access/blocks.js';
import type { KeyScopes } from '../access/keys.js';
import type { Tokens } from '../tokens/tokens.js';
import type { SeriesStore } from '../scheduler/series-store.js';
import type { InviteUses } from '../access/invite-uses.js';
import { ticketEventRoutes } from './routes/ticket-events.js';
import { createTicketWatch } from '../queue/ticket-watch.js';
import { systemClock, type Clock } from '../kernel/clock.js';
import { pageRoutes } from './routes/pages.js';
import { consoleDataRoutes } from './routes/console-data.js';
import { inviteRoutes } from './routes/invites.js';
import { buildWebAssets, type WebAssets } from './web-assets.js';

export interface AppDeps extends OpsDeps {
  queue: Line;
  catalog: Catalog;
  handlers: HandlerRegistry;
  metrics: Metrics;
  log: Logger;
  keys: KeySets;
  bodyLimitBytes: number;
  /** Confirm and release of reserved orders (POST /v1/orders/{orderId}/confirm|release); the daemon always gives it. */
  reservations?: Reservations;
  /**
   * Origins whose pages may read and cancel tickets from the browser (CORS on
   * `/v1/tickets/{ticketId}`): `'*'` (the default) or a list. The ticket id is the only
   * credential there, so any origin is safe unless a deployment wants to narrow it.
   */
  corsOrigins?: CorsOrigins;
  /** Most event streams open at once in this process (FLOODGATE_MAX_STREAMS). */
  maxStreams?: number;
  /** Which items each service key may use (FLOODGATE_KEY_SCOPES). */
  scopes?: KeyScopes;
  /** Admission tokens (signing keys in Postgres); without them tickets carry none. */
  tokens?: Tokens;
  /** The routes' clock (default the system's): the queue's own, so tests can drive both. */
  clock?: Clock;
  /** The ticket watch's clock (default the system's; the daemon gives it its Redis-time clock). */
  watchClock?: Clock;
  /** The console's per-second points (scheduler/series-store.ts). */
  series: SeriesStore;
  /** Single use of invites and proof-of-work challenges (access/invite-uses.ts). */
  inviteUses: InviteUses;
  /** How often the event streams' shared watch looks at the items (default 250 ms). */
  watchTickMs?: number;
  /** What a pull, a join or a poll waits for before it runs, when there is one (the daemon's check of operators' writes after a Redis reconnect). */
  admitHold?: () => Promise<unknown> | null;
  /** How many of those holds were raised so far (redis/reconnect-fence.ts raised): a poll whose read a raise came during reads again after it. */
  reconnects?: () => number;
}

/** The paths ticketCors serves: a ticket and its events. */
const TICKET_PATH = /^\/v1\/tickets\/[^/]+(\/events)?$/;

/**
 * The item a request path names (`/v1/items/{itemId}…`, or the item inside `/v1/tickets/{ticketId}`),
 * if this daemon holds a view of it; '' otherwise. Unknown ids stay out of metric labels, so a
 * flood of made-up ids cannot grow the label set without bound.
 */
function knownItemOf(queue: Line, path: string): string {
  const m = /^\/v1\/(items|tickets)\/([^/]+)/.exec(path);
  if (!m) return '';
  let id: string | null;
  try {
    id = decodeURIComponent(m[2]);
  } catch {
    return '';
  }
  if (m[1] === 'tickets') id = queue.tickets.itemIdOf(id);
  return id !== null && queue.items.peek(id) ? id : '';
}

/**
 * The HTTP API of docs/api.md. Every failure leaves as the contract's JSON error: validation through
 * the route schemas (400 with details.issues), malformed JSON (400), bodies over the limit (413),
 * bodies that are not JSON (415), a wrong method on a known path (405 with Allow), outages (503),
 * and anything unforeseen as a 500 without a stack. Answers are `no-store` unless a route says
 * otherwise (the document and /docs are cacheable).
 */
/** A body a route's JSON read refused for what it holds, by its request: the error answered instead of the validator's. */
const bodyRefusals = new WeakMap<Request, FloodgateError>();

export function createApp(deps: AppDeps) {
  const ctx: ApiContext = {
    queue: deps.queue,
    catalog: deps.catalog,
    handlers: deps.handlers,
    metrics: deps.metrics,
    log: deps.log,
    auth: createAuth({ ...deps.keys, scopes: deps.scopes ?? deps.keys.scopes }),
    blocks: createBlocks(deps.queue, (itemId, userId, on) => deps.catalog.keepBlock(itemId, userId, on), (scope, write) => deps.catalog.guard(scope, write)),
    series: deps.series,
    inviteUses: deps.inviteUses,
    tokens: deps.tokens,
    clock: deps.clock ?? systemClock,
    admitHold: deps.admitHold ?? (() => null),
    reconnects: deps.reconnects ?? (() => 0),
    ticketHeaders: ticketAnswerHeaders(deps.corsOrigins),
    defaultHook: (result) => {
      if (!result.success) throw validationError(result.error);
    },
  };
  const app = new OpenAPIHono({ defaultHook: ctx.defaultHook });

  app.use('*', async (c, next) => {
    const start = performance.now();
    await next();
    // Answers are about this moment (a position, a count, an error) unless a route says otherwise.
    if (!isWhole(c.res) && !c.res.headers.has('Cache-Control')) c.res.headers.set('Cache-Control', 'no-store');
    const route = c.req.routePath || 'unmatched';
    deps.metrics.httpDuration.observe({ method: c.req.method, route, status: String(c.res.status) }, (performance.now() - start) / 1000);
  });
  // A path whose percent-escapes do not decode to UTF-8 (`%ED%A0%80`, a lone surrogate; `%E9`;
  // `%zz`) is 400, as such bytes in a body are: Hono keeps a parameter it cannot decode as its raw
  // text, so `PUT /v1/blocks/%ED%A0%80` blocked a user named "%ED%A0%80" (and a DELETE unblocked one).
  // (The pages answer such a path with their own HTML 404.)
  app.use('/v1/*', async (c, next) => {
    if (c.req.url.includes('%')) {
      try {
        decodeURIComponent(new URL(c.req.url).pathname);
      } catch {
        // A ticket's id is one the daemon issued or none (the contract: any other id, whatever its
        // shape, is 404 ticket_not_found); elsewhere the path itself is bad.
        const pathname = new URL(c.req.url).pathname;
        if (pathname.startsWith('/v1/tickets/')) throw new FloodgateError('ticket_not_found', 'No such ticket.');
        // Naming the parameter, as a bad identifier in a body is named (`userId`, `itemId`…).
        const param = badParam(app, pathname);
        throw param ? validationIssue(param, 'A percent-escape that is not UTF-8.') : new FloodgateError('invalid_request', 'The path holds a percent-escape that is not UTF-8.');
      }
    }
    await next();
  });
  // A body in a content coding the daemon does not decode (gzip…) is not read as plain JSON: 415.
  app.use('/v1/*', async (c, next) => {
    const coding = c.req.header('content-encoding');
    const body = c.req.method !== 'GET' && c.req.method !== 'HEAD';
    if (body && coding !== undefined && coding.trim().toLowerCase() !== 'identity') throw new FloodgateError('unsupported_media_type', `A body in content coding "${coding.slice(0, 40)}" is not taken: send it as it is (identity).`);
    await next();
  });
  app.use('/v1/*', limitBody(deps.bodyLimitBytes));
  // Every route's JSON body (the zod-openapi validator reads c.req.json()) is decoded as the hot
  // join decodes it: bytes that are not UTF-8 are 400, never U+FFFD. Read when a route asks, not here.
  // The validator answers any failure of that read as "Malformed JSON"; a body refused for what
  // it holds (a key __proto__: errors.ts) is answered with its own issue (onError below).
  app.use('*', async (c, next) => {
    // One rule for what is JSON, the join's (errors.ts JSON_TYPE, RFC 9110's media types): the
    // validator's gate refused `application/json;`, `application/json ; charset=utf-8` and
    // `application/vnd.v1+json` (415) on every route but the join, which took them (a review).
    const type = c.req.header('content-type');
    if (type !== undefined && type !== 'application/json' && JSON_TYPE.test(type)) {
      const header = c.req.header.bind(c.req) as (name?: string) => unknown;
      c.req.header = ((name?: string) => (name?.toLowerCase() === 'content-type' ? 'application/json' : header(name))) as typeof c.req.header;
    }
    c.req.json = (() =>
      strictJson(c.req).catch((err: unknown) => {
        if (err instanceof FloodgateError && err.details) bodyRefusals.set(c.req.raw, err);
        throw err;
      })) as typeof c.req.json;
    await next();
  });
  // A waiting page on the shop's own origin polls and cancels its ticket; no cookies are involved.
  app.use('/v1/tickets/:ticketId', ticketCors(deps.corsOrigins));
  app.use('/v1/tickets/:ticketId/events', ticketCors(deps.corsOrigins));

  app.route('/', itemRoutes(ctx));
  app.route('/', ticketRoutes(ctx));
  if (deps.reservations) app.route('/', orderRoutes(ctx, deps.reservations));
  app.route('/', accessRoutes(ctx));
  app.route('/', consoleDataRoutes(ctx));
  app.route('/', inviteRoutes(ctx));
  const watch = createTicketWatch({
    queue: deps.queue,
    clock: deps.watchClock ?? systemClock,
    tickMs: deps.watchTickMs ?? 250,
    heartbeatMs: 10_000,
    onError: (err) => deps.log.warn({ err: String(err) }, 'ticket watch read failed'),
    onPass: (ms) => deps.metrics.watchPass.observe(ms / 1000),
  });
  deps.metrics.sources.openStreams = () => watch.size();
  app.route('/', ticketEventRoutes(ctx, watch, { max: deps.maxStreams ?? 10_000 }));
  app.route('/', opsRoutes(ctx, deps));
  app.route('/', docsRoutes());
  let assets: Promise<WebAssets> | null = null;
  app.route('/', pageRoutes(ctx, () => (assets ??= buildWebAssets().catch((err) => ((assets = null), Promise.reject(err))))));

  serveOpenApi(app, deps.handlers);

  const allowed = allowedMethods(app.routes);
  // An error on a ticket's path carries the tickets' CORS, as its other answers do (ticketCors leaves whole answers alone).
  const errorHeaders = (c: Context) => (TICKET_PATH.test(c.req.path) ? ctx.ticketHeaders(c.req.header('origin')) : undefined);
  app.notFound((c) => {
    const allow = allowed(c.req.path);
    // Counted as every other refusal (floodgate_rejections_total said nothing of these).
    const err = allow.length ? new FloodgateError('method_not_allowed', `${c.req.method} is not allowed here; allowed: ${allow.join(', ')}.`, { allow }) : new FloodgateError('not_found', 'No such endpoint.');
    deps.metrics.rejections.inc({ code: err.code, item: '' });
    return errorResponse(err, errorHeaders(c), allow.length ? { Allow: allow.join(', ') } : undefined);
  });
  /** The answer to an error thrown on `path`, counted by its code and item. */
  const refuse = (err: unknown, path: string, headers?: Readonly<Record<string, string>>) => {
    const fe = toFloodgateError(err, deps.log);
    deps.metrics.rejections.inc({ code: fe.code, item: knownItemOf(deps.queue, path) });
    return errorAnswer(fe, headers);
  };
  app.onError((err, c) => {
    // The client went away before its body was read to the end (a hang-up mid-body, a trickle Node
    // gave up on): the read's error carries ECONNRESET, which read as a Redis or Postgres outage
    // (a 503 counted, "dependency unavailable" logged) though no store was asked. Nobody hears the answer.
    const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
    if (incoming && !incoming.complete && (incoming.destroyed || incoming.errored)) err = new FloodgateError('invalid_request', 'The request body was cut short.');
    const a = refuse(bodyRefusals.get(c.req.raw) ?? err, c.req.path, errorHeaders(c));
    return wholeJson(a.body, a.status, a.headers);
  });
  // The server asks them before the app (daemon.ts); app.request() in tests goes to the routes.
  const poll = hotPoll({ tickets: deps.queue.tickets, auth: ctx.auth, headers: ctx.ticketHeaders, duration: deps.metrics.httpDuration, held: ctx.admitHold });
  const join = hotJoin({ ctx, bodyLimitBytes: deps.bodyLimitBytes, refuse, duration: deps.metrics.httpDuration });
  const hot = (req: IncomingMessage, res: ServerResponse) => poll(req, res) || join(req, res);
  return Object.assign(app, { hot });
}

/** The name of the path parameter whose percent-escapes do not decode (by the contract's route patterns), if a route has one there. */
function badParam(app: OpenAPIHono, pathname: string): string | null {
  const segs = pathname.split('/');
  const bad = segs.findIndex((seg) => {
    try {
      decodeURIComponent(seg);
      return false;
    } catch {
      return true;
    }
  });
  for (const d of app.openAPIRegistry.definitions) {
    if (d.type !== 'route') continue;
    const pattern = d.route.path.split('/');
    if (pattern.length !== segs.length || !/^\{\w+\}$/.test(pattern[bad] ?? '')) continue;
    if (pattern.every((p, i) => i === bad || p === segs[i] || /^\{\w+\}$/.test(p))) return pattern[bad].slice(1, -1);
  }
  return null;
}
