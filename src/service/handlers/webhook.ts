import { createHmac, randomBytes } from 'node:crypto';
import { z } from 'zod';
import { redactUrl } from '../../kernel/redact-url.js';
import { ticketRef } from '../../kernel/ticket-ref.js';
import { DropError, type HandlerContext, type HandlerSpec } from '../handler.js';
import { ANSWER_READ_MS, AnswerTooLarge, parseAnswer, readBounded, storable } from './webhook-answer.js';

const headerName = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** What fetch accepts as a header value; anything else would throw with the value in the message. */
const headerValue = /^[\t\x20-\x7e\x80-\xff]*$/;
const REDACTED = '[redacted]';
/** Headers fetch refuses, or takes over from the body (content-length: a mismatch hangs the call): an item given one could call nobody. */
const framingHeaders = new Set(['transfer-encoding', 'content-length', 'connection', 'keep-alive', 'upgrade', 'expect']);
/** Headers every call sets itself (or fetch does: Host): an item's own would be replaced without a word. */
const ownHeaders = new Set(['host', 'content-type', 'idempotency-key', 'floodgate-signature']);

/**
 * The Fetch standard's "bad ports" (fetch.spec.whatwg.org, port blocking): Node's fetch refuses to
 * call them ("bad port", with no code). An item whose URL named one was taken (`201`), and every
 * call of it failed after its attempts, `connection_error`, while the service never heard a thing
 * (a service on :6000 or :10080 lost a whole sale).
 */
const blockedPorts = new Set([
  1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101, 102, 103, 104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139,
  143, 161, 179, 389, 427, 465, 512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636, 989, 990, 993, 995, 1719, 1720, 1723, 2049, 3659,
  4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667, 6668, 6669, 6679, 6697, 10080,
]);

/** Whether fetch refuses the URL's port (false for what is no URL: z.url refuses that). */
function blockedPort(url: string): boolean {
  return URL.canParse(url) && blockedPorts.has(Number(new URL(url).port || 0));
}

/**
 * Whether the URL names a user or password: fetch refuses such a URL, and the item view would show
 * the password. False for what is no URL at all (z.url refuses that, and the refinement still runs).
 */
function hasUserinfo(url: string): boolean {
  if (!URL.canParse(url)) return false;
  const u = new URL(url);
  return u.username !== '' || u.password !== '';
}

/**
 * The reason for a call that got no answer (or lost it midway), by the error's code. A reason is
 * a code because the holder of the ticket reads it and Postgres keeps it, while the error's text
 * names hosts and ports.
 */
const noAnswerReasons = new Map([
  ['ECONNREFUSED', 'connection_refused'],
  ['ECONNRESET', 'connection_reset'],
  ['EPIPE', 'connection_reset'],
  ['UND_ERR_SOCKET', 'connection_reset'], // the other side closed the connection
  ['ENOTFOUND', 'dns_failure'],
  ['EAI_AGAIN', 'dns_failure'],
  ['ETIMEDOUT', 'timeout'],
  ['UND_ERR_CONNECT_TIMEOUT', 'timeout'],
  ['UND_ERR_HEADERS_TIMEOUT', 'timeout'],
  ['UND_ERR_BODY_TIMEOUT', 'timeout'],
]);

/** Calls that never reached the downstream: nothing can have been done with them. */
const notSent = new Set(['connection_refused', 'dns_failure']);

/** A new item's signing secret: 32 random bytes, base64url (43 characters). */
const newSecret = () => randomBytes(32).toString('base64url');

/** `t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`: Stripe's scheme, so its verifiers fit. */
export function signature(secret: string, body: string, unixSec: number): string {
  return `t=${unixSec},v1=${createHmac('sha256', secret).update(`${unixSec}.${body}`).digest('hex')}`;
}

/**
 * webhook: POSTs `{ticketRef, itemId, userId, payload}` to the business's own service, signed
 * (`Floodgate-Signature`) with the item's secret, with the ticket ref as `Idempotency-Key` so it
 * can de-duplicate a retried call. The ticket id itself never leaves: it is the user's bearer
 * capability. Redirects are not followed (a redirect would carry the item's headers elsewhere).
 *
 * 2xx → succeeded (the JSON body is the result); 409/422 → rejected, but a 409 to a retried call
 * is a drop (its key's first call is still being processed); 429 or a 5xx (`http_503`), a
 * timeout (`timeout`) or no answer (`connection_refused`, `connection_reset`, `dns_failure`,
 * `connection_error`) → a drop (retried with backoff, then failed); an answer fetch cannot read
 * (`bad_answer`: headers over 16 KiB, too many content codings) fails at once; a 429 or 503 with a
 * `Retry-After` the ticket's next call waits out (retryAfterMs). Faults that fail
 * the ticket at once (retrying the same request cannot help): a 3xx (`http_302`), another 4xx
 * (`http_400`). A 2xx/409/422 body that cannot be kept (over 64 KiB, cut short, NUL, a lone
 * surrogate, nested deeper than request bodies may be) leaves the outcome without a result.
 *
 * A call whose outcome stays unknown (no answer but a refused connection or an unknown host; a
 * 409 to a retry; a 5xx but 503) is kept per item and user (service/unsure-calls.ts) until a call
 * under its key is answered: the user's next ticket sends that call again — its key and its body,
 * not the new ticket's — so a user whose ticket ended `failed` after a timeout, and who joins
 * again, gets the order the first call made instead of a second one.
 */
export const webhook: HandlerSpec = {
  name: 'webhook',
  config: z
    .object({
      url: z
        .url({ protocol: /^https?$/ })
        .refine((url) => !hasUserinfo(url), 'no user or password in the URL: send credentials as headers'),
      timeoutMs: z.number().int().min(1).max(600_000).default(5000),
      headers: z
        .record(
          z
            .string()
            .regex(headerName)
            .max(256)
            .refine((name) => !framingHeaders.has(name.toLowerCase()), 'a header the HTTP client sets itself (the body\'s length and framing, the connection): every call would fail'),
          z.string().regex(headerValue, 'no control characters but tab').max(4096),
        )
        // Names are case-insensitive on the wire: `X-Key` and `x-key` went out as one header `a, b`.
        .refine((h) => new Set(Object.keys(h).map((k) => k.toLowerCase())).size === Object.keys(h).length, 'a header name given twice (names are case-insensitive)')
        .default({}),
      secret: z.string().min(32).max(256).regex(/^[\x21-\x7e]+$/, 'printable ASCII, no spaces').optional(),
    })
    .strict(),
  // Refused for new definitions only: a stored item with such a header still runs (the header
  // replaced), and one with such a port fails its calls at once (blocked_port) instead of being
  // left out of a restore.
  newConfigIssues: (c) => [
    ...(blockedPort(c.url as string) ? [{ path: ['url'], message: "a port HTTP clients refuse to call (the Fetch standard's bad ports, such as 6000 or 10080): every call would fail" }] : []),
    // Port 0 names no port: taken (201), every call failed connection_refused.
    ...(URL.canParse(c.url as string) && new URL(c.url as string).port === '0' ? [{ path: ['url'], message: 'port 0 names no port: every call would fail' }] : []),
    ...Object.keys((c.headers as Record<string, string>) ?? {})
      .filter((name) => ownHeaders.has(name.toLowerCase()))
      .map((name) => ({ path: ['headers', name], message: 'a header every call sets itself (Host, Content-Type, Idempotency-Key, Floodgate-Signature): yours would be replaced' })),
  ],
  rejoin: () => 'any',
  external: false,
  deadlineMs: (c) => Number(c.timeoutMs ?? 5000),
  // A replacement that names no secret keeps the item's, so downstreams need not re-learn it.
  fillIn: (input, previous) => (input.secret === undefined ? { ...input, secret: previous?.secret ?? newSecret() } : input),
  // A URL with credentials is refused now, but an item may have been defined with one before.
  redact: ({ secret: _secret, ...c }) => ({
    ...c,
    url: withoutUserinfo(c.url as string),
    headers: Object.fromEntries(Object.keys((c.headers as Record<string, string>) ?? {}).map((k) => [k, REDACTED])),
  }),
  async handle(t, ctx) {
    const c = t.config as { url: string; headers: Record<string, string>; secret?: string };
    // A call of this user's whose outcome is unknown (an earlier ticket's, ended `failed` after a
    // timeout) is repeated as it went out, under its key: a new key would make a second order.
    const ref = ticketRef(t.ticketId);
    const unsure = await ctx.unsure.take(t.userId, ref);
    const key = unsure?.key ?? ref;
    const body = unsure?.body ?? JSON.stringify({ ticketRef: ref, itemId: t.itemId, userId: t.userId, payload: t.payload });
    const headers = new Headers(c.headers);
    headers.set('content-type', 'application/json');
    headers.set('idempotency-key', key);
    // Only items defined before secrets existed lack one; they are signed once replaced (PUT).
    if (c.secret) headers.set('floodgate-signature', signature(c.secret, body, Math.floor(ctx.now() / 1000)));
    // Answered under the ticket's own key: its unsure call, if it kept one, is settled — once the
    // answer's outcome is the ticket's (ctx.afterSettle), not when its settle is refused. (One it
    // took over stays for its own runs again: service/unsure-calls.ts.) Best effort: the answer stands.
    const answered = () => {
      if (key !== ref) return;
      const settleCall = () => ctx.unsure.answered(t.userId, ref).catch((err) => ctx.log.warn({ err: String(err) }, 'unsure webhook call not settled'));
      if (ctx.afterSettle) ctx.afterSettle(settleCall);
      else return settleCall();
    };
    // Not kept (Redis unreachable): the drop is still the drop; a later attempt keeps it.
    const keep = () => ctx.unsure.keep(t.userId, { key, body }, ref).catch((err) => ctx.log.warn({ err: String(err) }, 'unsure webhook call not kept'));
    // An item defined with such a port before it was refused: nothing can reach it, nothing was sent.
    if (blockedPort(c.url)) throw new WebhookRefused('blocked_port');
    // The key may have gone out before under an outcome nobody learned: an earlier attempt of this
    // run (it kept its call if it might have reached the service), or the run before a lease ran
    // out (its daemon died, perhaps mid-call: nothing kept). Kept now for the latter, before the
    // call: only an answer that says what the service did (2xx, 409, 422) settles it. A run again
    // that met only 503s or a refused connection left nothing kept, and the user's next ticket
    // called under a new key: a second order (6 of 40 users in a review's kill).
    const wentBefore = t.attempt > 1 || t.admittedBefore || unsure !== null;
    if (t.admittedBefore && !unsure) await keep();
    // A repetition of another ticket's call that reached the downstream (it heard it: any answer
    // but 429/503, or none after it was sent) ends that call's taking over (service/unsure-calls.ts).
    const reached = () => (unsure && key !== ref ? ctx.unsure.reached(t.userId, ref).catch((err) => ctx.log.warn({ err: String(err) }, 'unsure webhook call not marked reached')) : undefined);
    let res: Response;
    // The call's own signal: the job's deadline (ctx.signal) bounds it until the answer's status
    // has come, and the body then has ANSWER_READ_MS of its own. Bound by the deadline, a 2xx whose
    // body Node read a moment late (a busy loop) was cut at the deadline, and its user told
    // `succeeded` without the order id the body carried (a review: 135 of a few thousand under load).
    const call = new AbortController();
    const cut = () => call.abort();
    if (ctx.signal.aborted) cut();
    else ctx.signal.addEventListener('abort', cut, { once: true });
    try {
      res = await fetch(c.url, { method: 'POST', headers, body, redirect: 'manual', signal: call.signal });
    } catch (err) {
      // An answer came and could not be read (its headers over Node's 16 KiB, more than five
      // content codings): the service heard the call and did what it does, so it stays kept; it is
      // not down (read as no answer, its item was paused and each key called ~27 times, a review),
      // and the same call would get the same answer: the ticket fails at once, and the log says why.
      const unreadable = unreadableAnswer(err);
      if (unreadable && !ctx.signal.aborted) {
        await Promise.all([keep(), reached()]);
        ctx.log.warn({ why: unreadable }, 'webhook answer could not be read; the ticket fails as bad_answer (fix the service\'s answer)');
        throw new WebhookRefused('bad_answer');
      }
      const drop = noAnswer(err, ctx);
      if (!notSent.has(drop.reason)) await Promise.all([keep(), reached()]);
      throw drop;
    } finally {
      ctx.signal.removeEventListener('abort', cut);
    }
    if (res.status !== 429 && res.status !== 503) await reached();
    // A 409 to a call under a key that went out before (a retry: the first call timed out or lost
    // its answer) is the Idempotency-Key's "a request with this key is still being processed"
    // (IETF httpapi-idempotency-key-header; Stripe), not a business "no": the first call may
    // still make the order. Taken as `rejected`, its user was told no and, joining again under a
    // new key, bought twice. It is called again under the same key, which then answers what the
    // first call did. A ticket admitted again after its lease ran out starts at attempt 1, and its
    // daemon may have died mid-call, leaving no unsure call kept: `admittedBefore` says so (a
    // reviewer's runs: 5–25 users a kill told `rejected`, then a second order on their next ticket).
    if (res.status === 409 && wentBefore) {
      await res.body?.cancel().catch(() => {});
      await keep();
      throw new DropError('http_409', retryAfterMs(res.headers), 'ticket');
    }
    const stored = res.ok || res.status === 409 || res.status === 422;
    if (!stored) {
      await res.body?.cancel().catch(() => {});
      if (res.status === 429 || res.status === 503) throw new DropError(`http_${res.status}`, retryAfterMs(res.headers));
      if (res.status >= 500) {
        // A 500, 502 or 504 may come after the work was done (a gateway that gave up waiting).
        await keep();
        throw new DropError(`http_${res.status}`);
      }
      // A refusal of this call says nothing of one under its key before (a firewall's 403 to a
      // burst of retries, a 404 or a redirect mid-deploy): that one's call stays kept. Settled, the
      // user's next ticket called under a new key after a first call that had made the order.
      if (!wentBefore) await answered();
      throw new WebhookRefused(`http_${res.status}`);
    }
    await answered();
    // The status says what the downstream did, whatever its body: a body too large to keep, or
    // cut short (ANSWER_READ_MS after the status, a reset), leaves the outcome without a result. Failing it told a
    // user whose order was made that it failed, and a new ticket of theirs called again under a
    // new key.
    // An answer that cannot be kept (NUL, a lone surrogate, nested deeper than 32) is stored the
    // same way.
    const bound = setTimeout(cut, ANSWER_READ_MS);
    const text = await readAnswer(res, ctx).finally(() => clearTimeout(bound));
    const result = text === null ? null : parseAnswer(text);
    const kept = text !== null && storable(result);
    if (!kept) ctx.log.warn({ status: res.status, why: text === null ? 'too large or cut short' : 'NUL, lone surrogate or too deep' }, 'webhook answer not kept; outcome stored without it');
    if (res.ok) return kept ? { status: 'succeeded', result } : { status: 'succeeded' };
    return kept ? { status: 'rejected', reason: `http_${res.status}`, result } : { status: 'rejected', reason: `http_${res.status}` };
  },
};

/** The three forms of an HTTP date (RFC 9110 §5.6.7): IMF-fixdate, RFC 850's, asctime's (which names no zone: GMT). */
const imfDate = /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/;
const rfc850Date = /^[A-Z][a-z]{5,8}, \d{2}-[A-Z][a-z]{2}-\d{2} \d{2}:\d{2}:\d{2} GMT$/;
const asctimeDate = /^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2} \d{4}$/;

/**
 * How long a 429/503 asked us to wait (ms), from `Retry-After`: delay-seconds or an HTTP date; none
 * for anything else (a negative or fractional number, words, a date not ahead). A date is read
 * against the answer's own `Date` when it has one, so a downstream whose clock is off from ours
 * still gets the wait it meant. Date.parse alone will not do: it takes "-1" or "1.5" as dates.
 * Uncapped here; the runner caps it (MAX_RETRY_AFTER_MS).
 */
export function retryAfterMs(headers: Headers, now = Date.now()): number | undefined {
  const value = headers.get('retry-after')?.trim();
  if (!value) return undefined;
  if (/^\d+$/.test(value)) {
    const ms = Number(value) * 1000;
    return ms > 0 ? ms : undefined;
  }
  const at = httpDate(value);
  if (at === undefined) return undefined;
  const ms = at - (httpDate(headers.get('date')?.trim() ?? '') ?? now);
  return ms > 0 ? ms : undefined;
}

function httpDate(value: string): number | undefined {
  if (!imfDate.test(value) && !rfc850Date.test(value) && !asctimeDate.test(value)) return undefined;
  const at = Date.parse(asctimeDate.test(value) ? `${value} GMT` : value);
  return Number.isFinite(at) ? at : undefined;
}

/** The answer's body, or null when it is over ANSWER_LIMIT or could not be read to its end. */
async function readAnswer(res: Response, ctx: HandlerContext): Promise<string | null> {
  try {
    return await readBounded(res);
  } catch (err) {
    if (!(err instanceof AnswerTooLarge)) ctx.log.debug({ reason: noAnswer(err, ctx).reason }, 'webhook answer cut short');
    return null;
  }
}

/** The drop for a call cut short; what the error said goes to the debug log only, its URL redacted. */
function noAnswer(err: unknown, ctx: HandlerContext): DropError {
  if (ctx.signal.aborted) return new DropError('timeout');
  // fetch wraps what went wrong (an Error with a `code`) as its `cause`.
  const cause = ((err as Error).cause ?? err) as { code?: unknown; message?: unknown };
  const code = typeof cause.code === 'string' ? cause.code : undefined;
  ctx.log.debug({ code, err: redactUrl(String(cause.message)) }, 'webhook call got no answer');
  return new DropError(noAnswerReasons.get(code ?? '') ?? 'connection_error');
}

/** Why an answer that came could not be read by fetch, or null when the call got none. */
function unreadableAnswer(err: unknown): string | null {
  const cause = ((err as Error)?.cause ?? err) as { code?: unknown; message?: unknown };
  if (cause?.code === 'UND_ERR_HEADERS_OVERFLOW') return 'headers over 16 KiB';
  if (typeof cause?.message === 'string' && /too many content-encodings/.test(cause.message)) return 'more than five content codings';
  return null;
}

/** The URL without user and password (the URL as given when it has neither). */
function withoutUserinfo(url: string): string {
  if (!hasUserinfo(url)) return url;
  const u = new URL(url);
  u.username = '';
  u.password = '';
  return u.href;
}

/** A 3xx, or a 4xx other than 409/422/429: retrying cannot help. */
export class WebhookRefused extends Error {
  readonly permanent = true;
}
