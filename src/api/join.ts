import type { Actor } from '../catalog/catalog.js';
import { fail } from '../kernel/errors.js';
import type { TicketView } from '../queue/types.js';
import { NO_STORE_JSON } from './answers.js';
import type { ApiContext } from './context.js';
import { validationError, validationIssue } from './errors.js';
import { ITEM_ID, JoinInput } from './schemas.js';

const MAX_PAYLOAD = 8 * 1024;

export interface JoinAnswer {
  status: 200 | 202;
  view: TicketView;
  headers: Readonly<Record<string, string>>;
}

/**
 * `POST /v1/items/{itemId}/tickets` once the key, its scope and the cached refusals (not open) have
 * passed: the body checked against JoinInput, the join, and its answer (202 with Location for a new
 * ticket, 200 with the ticket the user already holds). The route and the hot path (hot-join.ts)
 * both answer through this, so they cannot drift apart.
 */
export async function joinAnswer(ctx: ApiContext, itemId: string, body: unknown, actor: Actor): Promise<JoinAnswer> {
  if (!ITEM_ID.test(itemId)) throw validationIssue('itemId', 'not a valid item id');
  const parsed = JoinInput.safeParse(body);
  if (!parsed.success) throw validationError(parsed.error);
  const { userId, payload } = parsed.data;
  if (payload && Buffer.byteLength(JSON.stringify(payload)) > MAX_PAYLOAD) fail('payload_too_large', 'payload is over 8 KiB.');
  // Right after a Redis reconnect, not before the operators' writes are compared (a close a
  // rollback took refuses this join again): daemon.ts fence, usually milliseconds.
  const held = ctx.admitHold();
  if (held) await held;
  const { created, ticket } = await countedJoin(ctx, itemId, userId, payload ?? null, actor.name);
  if (created) return { status: 202, view: ticket, headers: { ...NO_STORE_JSON, Location: `/v1/tickets/${ticket.ticketId}` } };
  // The ticket the user holds may carry its admission token by now.
  return { status: 200, view: ctx.tokens ? await ctx.tokens.withToken(ticket) : ticket, headers: NO_STORE_JSON };
}

/**
 * A join through the line, counted as the metrics say (`floodgate_joins_total`, and a quota's
 * refusal in `floodgate_quota_refusals_total`): a join's route and an invite's both join here (an
 * invite's 429 went uncounted).
 */
export async function countedJoin(ctx: ApiContext, itemId: string, userId: string, payload: Record<string, unknown> | null, source: string | undefined) {
  const joined = await ctx.queue.tickets.join(itemId, userId, payload, source).catch((err) => {
    if (err?.code === 'rate_limited') ctx.metrics.quotaRefusals.inc({ item: itemId, quota: String(err.details?.quota) });
    throw err;
  });
  ctx.metrics.joins.inc({ item: itemId, result: joined.created ? 'created' : 'existing' });
  return joined;
}
