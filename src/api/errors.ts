import type { Context, HonoRequest, MiddlewareHandler } from 'hono';
import { NO_STORE_JSON, wholeJson } from './answers.js';
import { HTTPException } from 'hono/http-exception';
import type { ZodError } from 'zod';
import { FloodgateError } from '../kernel/errors.js';
import type { Logger } from '../kernel/logger.js';
import { isPgBusyCode, isPgLostCode } from '../kernel/pg-lost.js';

/**
 * The contract's error body, never a stack trace, as a whole answer (answers.ts: a refusal under a
 * flood is as hot as a join). `headers` are the answer's own: JSON and no-store by default (an
 * answer about this moment — full, not open, unavailable — must not be replayed by a cache), the
 * tickets' CORS on their paths; Retry-After and `extra` (Allow) are added.
 */
export function errorResponse(err: FloodgateError, headers: Readonly<Record<string, string>> = NO_STORE_JSON, extra?: Record<string, string>): Response {
  const a = errorAnswer(err, headers, extra);
  return wholeJson(a.body, a.status, a.headers);
}

/** errorResponse's parts, for a path that writes to Node's response itself (hot-join.ts). */
export function errorAnswer(err: FloodgateError, headers: Readonly<Record<string, string>> = NO_STORE_JSON, extra?: Record<string, string>) {
  const body: { error: { code: string; message: string; details?: Record<string, unknown> } } = { error: { code: err.code, message: err.message } };
  if (err.details) body.error.details = err.details;
  const all = err.retryAfterSec !== undefined || extra ? { ...headers, ...extra } : headers;
  if (err.retryAfterSec !== undefined) (all as Record<string, string>)['Retry-After'] = String(err.retryAfterSec);
  return { status: err.status, body, headers: all };
}

export function validationIssue(path: string, message: string): FloodgateError {
  return new FloodgateError('invalid_request', 'The request is not valid.', { issues: [{ path, message }] });
}

export const JSON_TYPE = /^application\/([\w.-]+\+)?json\s*(;|$)/i;

export const unsupportedMediaType = () =>
  new FloodgateError('unsupported_media_type', 'The request body must be JSON, sent with Content-Type: application/json.');

const malformedJson = () => new FloodgateError('invalid_request', 'Malformed JSON in request body');
const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A JSON body's bytes as a value: UTF-8, a leading byte-order mark dropped (as the Fetch body's
 * text() does). Bytes that are not UTF-8 are malformed JSON (400), as JSON itself says (RFC 8259,
 * 8.1): decoding them with U+FFFD in their place made `"dup\xff"` and `"dup\xfe"` one user.
 */
export function parseJsonBytes(bytes: Uint8Array): unknown {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw malformedJson();
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw malformedJson();
  }
  // (Looked for only when the text could hold one: the name itself, or an escape that spells it.)
  if (text.includes('__proto__') || text.includes('\\u')) {
    const at = protoKeyPath(value);
    if (at !== null) throw validationIssue(at, 'a key named __proto__ is not accepted: it cannot be kept as a key (the body would lose it silently)');
  }
  return value;
}

/**
 * Where the first object key named `__proto__` is (a dotted path), or null. JSON.parse keeps such
 * a key as the object's own, but the schemas' records rebuild objects by assignment, where it sets
 * the prototype instead: `{"payload":{"__proto__":{"a":1},"b":2}}` reached the worker as `{"b":2}`.
 */
function protoKeyPath(value: unknown): string | null {
  const stack: { v: unknown; path: string }[] = [{ v: value, path: '' }];
  while (stack.length) {
    const { v, path } = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (!Array.isArray(v) && Object.hasOwn(v, '__proto__')) return path ? `${path}.__proto__` : '__proto__';
    for (const [k, x] of Object.entries(v)) stack.push({ v: x, path: path ? `${path}.${k}` : k });
  }
  return null;
}

/** The request body as JSON, by parseJsonBytes: what c.req.json() reads on every route (app.ts). */
export async function strictJson(req: HonoRequest): Promise<unknown> {
  return parseJsonBytes(new Uint8Array(await req.arrayBuffer()));
}

/**
 * The request's JSON body, as the zod-openapi validator reads it: a body of another type, or one
 * sent without a type, is 415 (reading it as "no fields" answered a misleading "userId: expected
 * string"); malformed JSON (or bytes that are not UTF-8) is 400; no body at all is `{}`, so the
 * schema names what is missing.
 */
export async function jsonBody(c: Context): Promise<unknown> {
  const type = c.req.header('content-type');
  if (type === undefined) {
    // Rare (clients that send a body send its type), so reading the body to see is cheap enough.
    if ((await c.req.arrayBuffer()).byteLength > 0) throw unsupportedMediaType();
    return {};
  }
  if (!JSON_TYPE.test(type)) throw unsupportedMediaType();
  return strictJson(c.req);
}

/**
 * For a route whose body may be left out (`required: false`: a pull): an empty body sent with a
 * JSON type reads as no body (`{}`, the defaults), as one sent with no type does. The validator
 * read it as JSON, and an empty text is no JSON: `Content-Type: application/json` with nothing
 * after it was 400 "Malformed JSON" (clients send the type on every request). So does the body
 * `null`, as on the routes that take no body (no-body.ts). Anything else, a malformed body too, is
 * read as JSON as before.
 */
export const emptyJsonIsNoBody: MiddlewareHandler = async (c, next) => {
  const json = c.req.json.bind(c.req);
  c.req.json = (async () => ((await c.req.arrayBuffer()).byteLength === 0 ? {} : ((await json()) ?? {}))) as typeof c.req.json;
  await next();
};

export function validationError(error: ZodError): FloodgateError {
  // A field's own check and the whole body's hostile-bytes walk may name the same problem.
  const seen = new Set<string>();
  const issues = error.issues
    .map((i) => ({ path: i.path.join('.'), message: i.message }))
    .filter((i) => {
      const key = JSON.stringify(i);
      return !seen.has(key) && !!seen.add(key);
    });
  return new FloodgateError('invalid_request', 'The request is not valid.', { issues });
}

/**
 * ioredis's words for a connection that is down, refusing commands (no offline queue) or too slow;
 * on a cluster also a failover under way (CLUSTERDOWN, TRYAGAIN, a slot moving, the redirections
 * running out, the slot map not refreshed, a node dropped): a join during a failover answered 500.
 * And Redis refusing writes for a while: at its maxmemory (OOM), unable to persist (MISCONF), busy
 * with a script (BUSY), short of replicas (NOREPLICAS) — a join at maxmemory answered 500. (A
 * script run for many items reports an item's error as `<script>: <error>`, so Redis's codes are
 * matched there too: joins that came together while Redis was a replica answered 500 (READONLY).)
 * And a slot moving to another master (resharding), two refusals of a command that was not run:
 * NOSCRIPT (ioredis counts a script as loaded on a connection once it has written its EVAL there,
 * as its Script.js reads, and an EVAL the slot's target refused, TRYAGAIN, loaded nothing: the
 * EVALSHA after it is refused, and ioredis's one resend may be too),
 * and ioredis's auto-pipeline refusing a batch whose keys' slots were grouped under the slot map
 * before the move (nothing of it sent); both answered 500 in test/cluster-reshard.test.ts.
 * And an auto-pipeline that answered no reply for a command (redis/ioredis#1931, mended at install
 * to fail that command: scripts/patch-ioredis.mjs): a join through a slot's move answered 500 (a
 * clean-clone run of cluster-reshard beside the heaviest files). The command may have run; what
 * the contract lets a client send again (a join, a poll, an outcome) is safe to send again.
 */
const redisDown =
  /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|Connection is closed|MaxRetriesPerRequest|max retries per request|ENOTFOUND|EHOSTUNREACH|Stream isn't writeable|Command timed out|(?:^|: )(?:LOADING |READONLY |MASTERDOWN |CLUSTERDOWN|TRYAGAIN|MOVED |ASK |NOSCRIPT )|All keys in the pipeline should belong to the same slots allocation group|Too many Cluster redirections|Failed to refresh slots cache|Cluster isn't ready|Cluster is disconnect|Node is disconnected|None of startup nodes is available|the pipeline answered no reply for this command/i;

/** Redis's own codes for a write it refuses for a while (case as Redis sends them, not any text saying "busy"). */
const redisRefusing = /(?:^|: )(?:OOM|MISCONF|BUSY|NOREPLICAS) /;

/** The error and its `.cause`s (drizzle wraps the driver's error in DrizzleQueryError). */
function causes(err: unknown): unknown[] {
  const out: unknown[] = [];
  for (let e = err; e !== undefined && e !== null && out.length < 6 && !out.includes(e); e = (e as { cause?: unknown }).cause) out.push(e);
  return out;
}

/** A drizzle error's message carries the query's parameters (an item's config, with its headers). */
const carriesParams = (e: unknown) => typeof e === 'object' && e !== null && 'params' in e;

function isOutage(e: unknown): boolean {
  const code = (e as { code?: unknown })?.code;
  if (isPgLostCode(code) || isPgBusyCode(code)) return true;
  const message = e instanceof Error ? e.message : String(e);
  return !carriesParams(e) && (redisDown.test(message) || redisRefusing.test(message));
}

/**
 * What may be logged of an error: names, codes and where it was thrown. Never a drizzle message
 * (query parameters), nor a Postgres message or detail (they quote values), nor request data.
 */
export function describeError(err: unknown): Record<string, unknown>[] {
  return causes(err).map((e) => {
    if (!(e instanceof Error)) return { value: typeof e };
    const o = e as Error & Record<string, unknown>;
    const out: Record<string, unknown> = { name: o.name };
    for (const k of ['code', 'severity', 'routine', 'constraint_name', 'table_name', 'column_name'] as const) if (o[k] !== undefined) out[k] = o[k];
    const quotesValues = carriesParams(o) || typeof o.severity === 'string';
    if (!quotesValues) out.message = o.message;
    out.at = o.stack?.split('\n').filter((l) => /^\s+at /.test(l)).slice(0, 6).map((l) => l.trim());
    return out;
  });
}

/**
 * Every request fails alike during an outage: log the first, then one line per interval with a
 * count. Counted per logger (one per daemon), so two daemons in one process each say it once.
 */
const OUTAGE_LOG_EVERY_MS = 5000;
const outageLogs = new WeakMap<Logger, { at: number; unlogged: number }>();
function logOutage(log: Logger, err: unknown) {
  const now = performance.now(); // (a step of the wall clock back silenced these for its length)
  const seen = outageLogs.get(log);
  if (seen && now - seen.at < OUTAGE_LOG_EVERY_MS) return void seen.unlogged++;
  log.warn({ err: describeError(err), alsoFailedSinceLast: seen?.unlogged ?? 0 }, 'dependency unavailable');
  outageLogs.set(log, { at: now, unlogged: 0 });
}

/** Maps anything thrown to the contract: known errors as they are, outages to 503, the rest 500. */
export function toFloodgateError(err: unknown, log: Logger): FloodgateError {
  if (err instanceof FloodgateError) return err;
  if (err instanceof HTTPException) {
    if (err.status === 413) return new FloodgateError('payload_too_large', 'The request body is too large.');
    if (err.status === 415) return unsupportedMediaType();
    if (err.status === 400) return new FloodgateError('invalid_request', err.message || 'The request is not valid.');
    return new FloodgateError(err.status === 404 ? 'not_found' : 'invalid_request', err.message);
  }
  if (causes(err).some(isOutage)) {
    logOutage(log, err);
    return new FloodgateError('unavailable', 'A backing store is unreachable; try again shortly.', undefined, 2);
  }
  log.error({ err: describeError(err) }, 'unexpected error');
  return new FloodgateError('internal', 'Internal error.');
}
