import { z } from 'zod';
import { DropError, type HandlerSpec } from '../handler.js';

const headerName = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * webhook: POSTs `{ticketId, itemId, userId, payload}` to the business's own service, with the
 * ticket id as `Idempotency-Key` so it can de-duplicate a retried call.
 * 2xx → succeeded (the JSON body is the result); 409/422 → rejected; 429, 503, other 5xx, a
 * timeout or a refused connection → a drop (retried with backoff, then failed); other 4xx → a
 * fault (the request itself is wrong; retrying will not help, so it fails at once).
 */
export const webhook: HandlerSpec = {
  name: 'webhook',
  config: z
    .object({
      url: z.url({ protocol: /^https?$/ }),
      timeoutMs: z.number().int().min(1).max(600_000).default(5000),
      headers: z.record(z.string().regex(headerName).max(256), z.string().max(4096)).default({}),
    })
    .strict(),
  rejoin: () => 'any',
  external: false,
  deadlineMs: (c) => Number(c.timeoutMs ?? 5000),
  async handle(t, ctx) {
    const c = t.config as { url: string; headers: Record<string, string> };
    let res: Response;
    try {
      res = await fetch(c.url, {
        method: 'POST',
        headers: { ...c.headers, 'content-type': 'application/json', 'idempotency-key': t.ticketId },
        body: JSON.stringify({ ticketId: t.ticketId, itemId: t.itemId, userId: t.userId, payload: t.payload }),
        signal: ctx.signal,
      });
    } catch (err) {
      throw new DropError(ctx.signal.aborted ? 'timeout' : `connection: ${(err as Error).cause ?? (err as Error).message}`);
    }
    const text = await res.text().catch(() => '');
    let body: unknown = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = text.slice(0, 1000);
    }
    if (res.ok) return { status: 'succeeded', result: body };
    if (res.status === 409 || res.status === 422) return { status: 'rejected', reason: `http_${res.status}`, result: body };
    if (res.status === 429 || res.status >= 500) throw new DropError(`http_${res.status}`);
    throw new WebhookRefused(`http_${res.status}`);
  },
};

/** A 4xx other than 409/422/429: retrying the same request cannot succeed. */
export class WebhookRefused extends Error {
  readonly permanent = true;
}
