import { OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import type { MiddlewareHandler } from 'hono';
import { fail } from '../../kernel/errors.js';
import { HeldEndsUnread } from '../../queue/admissions.js';
import { parseTicketId, verifySeq } from '../../queue/ticket-id.js';
import type { TicketView as TicketViewT } from '../../queue/types.js';
import type { AuthEnv } from '../auth.js';
import type { ApiContext } from '../context.js';
import { errors, json } from '../openapi.js';
import { emptyJsonIsNoBody, jsonBody } from '../errors.js';
import { noBody } from '../no-body.js';
import { joinAnswer } from '../join.js';
import { wholeJson } from '../answers.js';
import { ITEM_ID, ItemId, JoinInput, OutcomeInput, PullInput, PulledTicket, TicketId, TicketView } from '../schemas.js';

const security = [{ bearer: [] }];
/** How long a pull on a split item waits for another admission of it to free the item's lock (a round is a few round trips). */
const PULL_LOCK_WAIT_MS = 1000;

/**
 * A ticket's view, read after a Redis reconnect's hold (not before the operators' writes are
 * compared: a ticket a lost close had ended reads `waiting` until then; daemon.ts fence, usually
 * milliseconds), and read again if a reconnect came while it read (a hold raised since: what it
 * read may be the rolled-back data, before the check put the operators' writes back). A poll's
 * and an event stream's first view.
 */
export async function statusUnheld(ctx: ApiContext, ticketId: string): Promise<TicketViewT> {
  for (let seen = ctx.reconnects(); ; ) {
    const held = ctx.admitHold();
    if (held) await held;
    const view = await ctx.queue.tickets.status(ticketId);
    if (ctx.reconnects() === seen) return view;
    seen = ctx.reconnects();
  }
}

export function ticketRoutes(ctx: ApiContext) {
  const app = new OpenAPIHono<AuthEnv>({ defaultHook: ctx.defaultHook });
  const service = ctx.auth('service');
  const { queue, metrics } = ctx;
  /** Operator-only and token fields of a ticket view: `source` for operator keys, the admission token where due. */
  const present = async (view: TicketViewT, operator = false): Promise<TicketViewT> => {
    const out = ctx.tokens ? await ctx.tokens.withToken(view) : view;
    if (!operator) return out;
    const source = await queue.tickets.sourceOf(view.ticketId);
    return source === null ? out : { ...out, source };
  };
  // Before precheck: a key outside its scope learns nothing about the item, not even "not open".
  const scoped = ctx.auth.scoped();
  // The ticket's item, as its id names it, before the body is validated: a key outside its scope
  // read 400 for a bad body here and 403 on the join and pull routes.
  const ticketScoped = ctx.auth.scoped((p) => queue.tickets.itemIdOf(p('ticketId') ?? ''));
  // Before the body is read or validated: when the line is full (or not open), a flood of joins
  // is refused at the cost of an auth check and a cache lookup.
  const precheck: MiddlewareHandler = async (c, next) => {
    const itemId = c.req.param('itemId');
    if (itemId && ITEM_ID.test(itemId)) await queue.tickets.precheckJoin(itemId);
    await next();
  };

  // The two routes a flood hits (join, poll) are documented in the OpenAPI registry and validated
  // with the same zod schemas, but mounted as plain routes: the generic zod-openapi validator
  // middleware cost about a quarter of a poll's throughput in the benchmark.
  app.openAPIRegistry.registerPath(
    createRoute({
      method: 'post', path: '/v1/items/{itemId}/tickets', tags: ['tickets'], security,
      summary: 'Join the line (idempotent per item and user)',
      request: { params: z.object({ itemId: ItemId }), body: { ...json(JoinInput, 'Who joins'), required: true } },
      responses: {
        200: json(TicketView, 'The ticket the user already holds'),
        202: { ...json(TicketView, 'A new ticket, waiting'), headers: { Location: { description: "The new ticket's URL, /v1/tickets/{ticketId}", schema: { type: 'string' } } } },
        ...errors(400, 401, 403, 404, 410, 413, 415, 425, 429, 503),
      },
    }),
  );
  app.post('/v1/items/:itemId/tickets', service, scoped, precheck, async (c) => {
    const a = await joinAnswer(ctx, c.req.param('itemId'), await jsonBody(c), c.get('actor'));
    return wholeJson(a.view, a.status, a.headers);
  });

  app.openAPIRegistry.registerPath(
    createRoute({
      method: 'get', path: '/v1/tickets/{ticketId}', tags: ['tickets'],
      summary: 'Where am I? (anyone holding the ticket id)',
      request: { params: z.object({ ticketId: TicketId }) },
      responses: { 200: json(TicketView, 'The ticket'), ...errors(404, 503) },
    }),
  );
  app.get('/v1/tickets/:ticketId', async (c) => {
    const view = await statusUnheld(ctx, c.req.param('ticketId'));
    // A waiting ticket (no token yet) polled without an operator key (the flood) costs nothing more.
    const operator = ctx.auth.isOperator(c.req.header('authorization'));
    const shown = view.state === 'waiting' && !operator ? view : await present(view, operator);
    return wholeJson(shown, 200, ctx.ticketHeaders(c.req.header('origin')));
  });

  app.openapi(
    createRoute({
      method: 'delete', path: '/v1/tickets/{ticketId}', tags: ['tickets'], middleware: [noBody] as const,
      summary: 'Leave the line', request: { params: z.object({ ticketId: TicketId }) },
      responses: { 200: json(TicketView, 'The cancelled ticket'), ...errors(400, 404, 409, 413, 503) },
    }),
    async (c) => {
      // After a Redis reconnect, not before the operators' writes are compared (daemon.ts fence), as
      // a poll, a join and a pull wait: a cancel in between acted on the ticket as a Redis rolled
      // back past an operator's close had it (`waiting`), before the check put the close back.
      const held = ctx.admitHold();
      if (held) await held;
      return c.json((await queue.tickets.cancel(c.req.valid('param').ticketId)) as z.infer<typeof TicketView>, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post', path: '/v1/items/{itemId}/pull', tags: ['external workers'], security, middleware: [service, scoped, emptyJsonIsNoBody] as const,
      summary: 'Take tickets from the head of the line under a lease (external items)',
      request: { params: z.object({ itemId: ItemId }), body: { ...json(PullInput, 'How many, for how long'), required: false } },
      responses: { 200: json(z.object({ tickets: z.array(PulledTicket) }), 'Tickets (possibly none)'), ...errors(400, 401, 403, 404, 409, 413, 415, 503) },
    }),
    async (c) => {
      const { itemId } = c.req.valid('param');
      const { max, leaseMs } = PullInput.parse((c.req.valid('json') as unknown) ?? {});
      ctx.auth.requireScope(c.get('actor'), itemId);
      let version = await requireExternal(ctx, itemId);
      // After a Redis reconnect, not before the operators' writes are compared (a close the
      // rollback took must not hand out the tickets it ended): daemon.ts fence.
      const held = ctx.admitHold();
      if (held) await held;
      // Under the definition this view holds: from a view older than an operator's redefinition
      // (another daemon's PUT, within the cache's time), a worker was handed tickets of an item
      // made seckill, and told them succeeded with no order. Read afresh and asked once more.
      // (A split item's lock held by another pull is waited for, up to PULL_LOCK_WAIT_MS: queue/admissions.ts.)
      let round = await queue.admissions.admitRound(itemId, max, leaseMs, undefined, version, { lockWaitMs: PULL_LOCK_WAIT_MS });
      if (round.stale) {
        version = await requireExternal(ctx, itemId, 'item_not_found', true);
        round = await queue.admissions.admitRound(itemId, max, leaseMs, undefined, version, { lockWaitMs: PULL_LOCK_WAIT_MS });
      }
      const admitted = round.tickets;
      if (admitted.length) metrics.admissions.inc({ item: itemId }, admitted.length);
      // Not one whose end the outcome ledger holds (a Redis rollback took it back): ended again with it.
      const got = await queue.admissions.dropHeldEnds(itemId, admitted).catch(async (err: unknown) => {
        // Unchecked after a rollback: back at the head for the next pull to check again, forced (the
        // daemon's return, not a worker's word that a run had no effect): unforced, a ticket whose
        // earlier run's effect is unknown (its lease ran out) became one its user may cancel and a
        // close ends at once, while that run may have acted (a review).
        if (err instanceof HeldEndsUnread) await queue.admissions.settleMany(itemId, admitted.map((t) => ({ seq: t.seq, leaseId: t.leaseId, record: t.record, status: 'failed' as const, reason: 'ledger_unread', retry: true, force: true }))).catch(() => {});
        throw err;
      });
      const tickets = got.map(({ ticketId, userId, payload, position, leaseId, leaseExpiresAt }) => ({ ticketId, userId, payload, position, leaseId, leaseExpiresAt }));
      return c.json({ tickets }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post', path: '/v1/tickets/{ticketId}/outcome', tags: ['external workers'], security, middleware: [service, ticketScoped] as const,
      summary: 'Write the business outcome of a pulled ticket',
      request: { params: z.object({ ticketId: TicketId }), body: { ...json(OutcomeInput, 'The outcome'), required: true } },
      responses: { 200: json(TicketView, 'The ticket'), ...errors(400, 401, 403, 404, 409, 413, 415, 503) },
    }),
    async (c) => {
      const { ticketId } = c.req.valid('param');
      const body = c.req.valid('json');
      const itemId = queue.tickets.itemIdOf(ticketId) ?? fail('ticket_not_found', 'No such ticket.');
      ctx.auth.requireScope(c.get('actor'), itemId);
      await requireExternal(ctx, itemId, 'ticket_not_found', false, ticketId);
      const { view, repeat } = await queue.admissions.settle(ticketId, {
        leaseId: body.leaseId,
        status: body.status,
        result: body.result,
        reason: 'reason' in body ? body.reason : undefined,
        retry: 'retry' in body ? body.retry : undefined,
      });
      // A repeat (a worker's retry of a write-back it heard no answer to) is answered as the first was, and counted once.
      if (!repeat) metrics.settles.inc({ item: itemId, status: 'retry' in body && body.retry ? 'retry' : body.status });
      return c.json((await present(view)) as z.infer<typeof TicketView>, 200);
    },
  );

  return app;
}

/**
 * The item's view, if it is served by an outside worker; `fresh`: read now, not from the cache. Its
 * definition version. `ticketId`: an outcome's ticket, which must be one the item issued before
 * the item's handler is named: a forged id (any item id base64url-encoded) was answered `409`
 * naming a seckill item's handler — any service key learnt which items exist and how they are
 * served (a review). (An external item's settle checks the id fully.)
 */
async function requireExternal(ctx: ApiContext, itemId: string, missing: 'item_not_found' | 'ticket_not_found' = 'item_not_found', fresh = false, ticketId?: string): Promise<number> {
  const item = (await ctx.queue.items.item(itemId, { fresh })) ?? fail(missing, missing === 'item_not_found' ? 'No such item.' : 'No such ticket.');
  if (!ctx.handlers.get(item!.snap.def.handler)?.external) {
    const parsed = ticketId === undefined ? null : parseTicketId(ticketId);
    if (ticketId !== undefined && !(parsed && verifySeq(parsed, item!.snap.secret))) fail('ticket_not_found', 'No such ticket.');
    fail('conflict', `Item ${itemId} is served by its "${item!.snap.def.handler}" handler; pull and outcome are for external items.`);
  }
  return item!.snap.version;
}
