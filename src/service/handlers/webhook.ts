import { createHmac, randomBytes } from 'node:crypto';
import { z } from 'zod';
import { ticketRef } from '../../kernel/ticket-ref.js';
import { DropError, type HandlerSpec } from '../handler.js';
import { AnswerTooLarge, parseAnswer, readBounded, storable } from './webhook-answer.js';

const headerName = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** What fetch accepts as a header value; anything else would throw with the value in the message. */
const headerValue = /^[\t\x20-\x7e\x80-\xff]*$/;
const REDACTED = '[redacted]';

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
 * 2xx → succeeded (the JSON body is the result); 409/422 → rejected; 429, 503, other 5xx, a
 * timeout or a refused connection → a drop (retried with backoff, then failed). Faults that fail
 * the ticket at once (retrying the same request cannot help): a 3xx (`http_302`), another 4xx
 * (`http_400`), a body to store over 64 KiB (`response_too_large`) or one Postgres cannot store
 * (`invalid_response`: NUL or a lone surrogate).
 */
export const webhook: HandlerSpec = {
  name: 'webhook',
  config: z
    .object({
      url: z.url({ protocol: /^https?$/ }),
      timeoutMs: z.number().int().min(1).max(600_000).default(5000),
      headers: z.record(z.string().regex(headerName).max(256), z.string().regex(headerValue, 'no control characters but tab').max(4096)).default({}),
      secret: z.string().min(32).max(256).regex(/^[\x21-\x7e]+$/, 'printable ASCII, no spaces').optional(),
    })
    .strict(),
  rejoin: () => 'any',
  external: false,
  deadlineMs: (c) => Number(c.timeoutMs ?? 5000),
  // A replacement that names no secret keeps the item's, so downstreams need not re-learn it.
  fillIn: (input, previous) => (input.secret === undefined ? { ...input, secret: previous?.secret ?? newSecret() } : input),
  redact: ({ secret: _secret, ...c }) => ({
    ...c,
    headers: Object.fromEntries(Object.keys((c.headers as Record<string, string>) ?? {}).map((k) => [k, REDACTED])),
  }),
  async handle(t, ctx) {
    const c = t.config as { url: string; headers: Record<string, string>; secret?: string };
    const ref = ticketRef(t.ticketId);
    const body = JSON.stringify({ ticketRef: ref, itemId: t.itemId, userId: t.userId, payload: t.payload });
    const headers = new Headers(c.headers);
    headers.set('content-type', 'application/json');
    headers.set('idempotency-key', ref);
    // Only items defined before secrets existed lack one; they are signed once replaced (PUT).
    if (c.secret) headers.set('floodgate-signature', signature(c.secret, body, Math.floor(Date.now() / 1000)));
    let res: Response;
    try {
      res = await fetch(c.url, { method: 'POST', headers, body, redirect: 'manual', signal: ctx.signal });
    } catch (err) {
      throw new DropError(ctx.signal.aborted ? 'timeout' : `connection: ${(err as Error).cause ?? (err as Error).message}`);
    }
    const stored = res.ok || res.status === 409 || res.status === 422;
    if (!stored) {
      await res.body?.cancel().catch(() => {});
      if (res.status === 429 || res.status >= 500) throw new DropError(`http_${res.status}`);
      throw new WebhookRefused(`http_${res.status}`);
    }
    const result = parseAnswer(await readAnswer(res, ctx.signal));
    if (!storable(result)) throw new WebhookRefused('invalid_response');
    if (res.ok) return { status: 'succeeded', result };
    return { status: 'rejected', reason: `http_${res.status}`, result };
  },
};

async function readAnswer(res: Response, signal: AbortSignal): Promise<string> {
  try {
    return await readBounded(res);
  } catch (err) {
    if (err instanceof AnswerTooLarge) throw new WebhookRefused('response_too_large');
    throw new DropError(signal.aborted ? 'timeout' : `connection: ${(err as Error).cause ?? (err as Error).message}`);
  }
}

/** A 3xx, a 4xx other than 409/422/429, or an answer that cannot be stored: retrying cannot help. */
export class WebhookRefused extends Error {
  readonly permanent = true;
}
