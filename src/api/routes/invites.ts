import { OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import { FloodgateError, fail } from '../../kernel/errors.js';
import type { AuthEnv } from '../auth.js';
import type { ApiContext } from '../context.js';
import { nonce, peek, sign, solves, verify, type ChallengeClaims, type InviteClaims } from '../invites.js';
import { countedJoin } from '../join.js';
import { errors, json } from '../openapi.js';
import { refineJson } from '../json-guard.js';
import { ITEM_ID, ItemId, TicketView, UserId } from '../schemas.js';
import type { TicketView as TicketViewT } from '../../queue/types.js';

const security = [{ bearer: [] }];
const CHALLENGE_MS = 120_000;

const InviteInput = z.object({ userId: UserId, ttlMs: z.number().int().min(1000).max(7 * 24 * 3600 * 1000).default(300_000) }).strict().superRefine(refineJson).openapi('InviteInput');
const Invite = z.object({ url: z.string(), invite: z.string(), expiresAt: z.string() }).openapi('Invite');
const Challenge = z.object({ challenge: z.string(), difficulty: z.number().int(), expiresAt: z.string() }).openapi('Challenge');
const JoinWithInvite = z
  .object({ invite: z.string().min(1).max(2048), pow: z.object({ challenge: z.string().min(1).max(2048), nonce: z.string().min(1).max(128) }).strict().optional() })
  .strict()
  .superRefine(refineJson)
  .openapi('JoinWithInvite');

const refused = (reason: 'invite_invalid' | 'invite_expired') =>
  new FloodgateError('forbidden', reason === 'invite_expired' ? 'The invite has expired.' : 'The invite is not valid.', { reason });

/**
 * Invites (API.md, Invites): a service issues a signed, single-use invite naming a user and an
 * item; the invite page (/join/{itemId}) joins with it, after a proof of work where the item asks
 * for one. A second use of an invite answers the ticket the first use made (200), whatever the
 * ticket's state; a forged or expired invite is `403 forbidden` (details.reason), a missing or wrong
 * solution `403 pow_required`. The use is kept in Postgres (access/invite-uses.ts), so neither a
 * Redis loss nor an item removed by retention and made again lets an invite join twice.
 */
export function inviteRoutes(ctx: ApiContext) {
  const app = new OpenAPIHono<AuthEnv>({ defaultHook: ctx.defaultHook });
  const { queue } = ctx;
  const now = () => ctx.clock.now();
  /**
   * The item, if the item set has it: these doors are open to anyone, and an id made up per
   * request cost a snapshot script each (the set's copy is checked against its version: a GET).
   */
  const known = async (itemId: string) => ((await queue.items.isKnown(itemId)) ? queue.items.item(itemId) : null);
  const itemOf = async (itemId: string) => (await known(itemId)) ?? fail('item_not_found', 'No such item.');
  /** A ticket as a join answers it: admitted and succeeded ones with their admissionToken (API.md, Admission tokens). */
  const present = (view: TicketViewT) => (ctx.tokens ? ctx.tokens.withToken(view) : view);

  app.openapi(
    createRoute({
      method: 'post', path: '/v1/items/{itemId}/invites', tags: ['invites'], security, middleware: [ctx.auth('service'), ctx.auth.scoped()] as const,
      summary: 'Issue a signed single-use invite for a user (the join page URL)',
      request: { params: z.object({ itemId: ItemId }), body: { ...json(InviteInput, 'Who, for how long'), required: true } },
      responses: { 201: json(Invite, 'The invite'), ...errors(400, 401, 403, 404, 413, 415, 503) },
    }),
    async (c) => {
      // (An invite is a join by another door: a key scoped to other items may not issue one — it
      // did, and anyone holding it joined — checked before anything else: ctx.auth.scoped.)
      const { itemId } = c.req.valid('param');
      const { userId, ttlMs } = c.req.valid('json');
      const item = await itemOf(itemId);
      const e = now() + ttlMs;
      const invite = sign(item.snap.secret, 'invite', { i: itemId, u: userId, e, n: nonce(), k: c.get('actor').name } satisfies InviteClaims);
      return c.json({ url: `/join/${encodeURIComponent(itemId)}?invite=${invite}`, invite, expiresAt: new Date(e).toISOString() }, 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'get', path: '/v1/items/{itemId}/challenge', tags: ['invites'],
      summary: "A proof-of-work challenge (single use, 2 minutes); difficulty 0 where the item asks for none",
      request: { params: z.object({ itemId: ItemId }) },
      responses: { 200: json(Challenge, 'The challenge'), ...errors(400, 404, 503) },
    }),
    async (c) => {
      const { itemId } = c.req.valid('param');
      const item = await itemOf(itemId);
      const d = item.snap.def.pow?.difficulty ?? 0;
      const e = now() + CHALLENGE_MS;
      return c.json({ challenge: sign(item.snap.secret, 'challenge', { i: itemId, e, n: nonce(), d } satisfies ChallengeClaims), difficulty: d, expiresAt: new Date(e).toISOString() }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post', path: '/v1/join', tags: ['invites'],
      summary: 'Join the line with an invite (and a proof of work where the item asks for one)',
      request: { body: { ...json(JoinWithInvite, 'The invite and the solution'), required: true } },
      responses: { 200: json(TicketView, "The invite's ticket (a repeated use)"), 202: json(TicketView, 'A new ticket'), ...errors(400, 403, 404, 410, 413, 415, 425, 429, 503) },
    }),
    async (c) => {
      const body = c.req.valid('json');
      const claims = peek<InviteClaims>(body.invite);
      // The item id is read from the unverified claims: one ITEM_ID refuses (a `{…}` hash tag, a
      // key pattern) never reaches Redis.
      const valid = claims && typeof claims.i === 'string' && ITEM_ID.test(claims.i) && typeof claims.u === 'string' && typeof claims.n === 'string' && Number.isFinite(claims.e);
      const item = valid ? await known(claims!.i) : null;
      if (!valid || !item || !verify(item.snap.secret, 'invite', body.invite)) throw refused('invite_invalid');
      const { i: itemId, u: userId, e, n, k } = claims!;
      // Before the check of an earlier use: a use held here (a reconnect's hold) that checked first
      // could join after another use's ticket was made and left, and make a second.
      const held = ctx.admitHold();
      if (held) await held;
      // The ticket of an earlier use, whatever became of it; one Redis lost (a flush, retention's
      // removal of the ended item) is answered from Postgres as its own URL answers it (200 with its
      // end, else 404): the invite never makes another.
      const used = await ctx.inviteUses.ticketOf(body.invite, itemId, n, e, now());
      if (used) return c.json((await present(await queue.tickets.status(used))) as z.infer<typeof TicketView>, 200);
      if (e <= now()) throw refused('invite_expired');
      const difficulty = item.snap.def.pow?.difficulty ?? 0;
      if (difficulty > 0) {
        const pow = body.pow ?? fail('pow_required', `This item asks for a proof of work of ${difficulty} bits (GET /v1/items/${itemId}/challenge).`);
        const ch = peek<ChallengeClaims>(pow.challenge);
        const ok = ch && ch.i === itemId && ch.d >= difficulty && ch.e > now() && verify(item.snap.secret, 'challenge', pow.challenge) && solves(pow.challenge, pow.nonce, difficulty);
        if (!ok) fail('pow_required', 'The proof of work is missing, wrong or expired.');
        if (!(await ctx.inviteUses.takeChallenge(itemId, ch!.n, n, CHALLENGE_MS))) fail('pow_required', 'That challenge was used by another invite; ask for a new one.');
      }
      // As a join by the key that issued the invite: its perKey quota (or the default one) counts,
      // and the ticket records it (an invite let a key past its quota: six joins for a limit of two).
      const { created, ticket } = await countedJoin(ctx, itemId, userId, null, typeof k === 'string' ? k : undefined);
      // Kept (Postgres, then Redis) before the ticket is answered: a repeat after any loss finds it.
      const ticketId = await ctx.inviteUses.claim(body.invite, itemId, n, ticket.ticketId, e, now());
      if (ticketId !== ticket.ticketId) {
        // Another use of the invite claimed it first (both passed the check above at once; the
        // first one's ticket was left since, so this join made a second). That ticket is nobody's
        // to follow — it is not the invite's — so it leaves the line rather than wait and be sold.
        if (created) await queue.tickets.cancel(ticket.ticketId).catch((err) => ctx.log.warn({ itemId, err: String(err) }, 'a second ticket of one invite not cancelled; it may be admitted'));
        return c.json((await present(await queue.tickets.status(ticketId))) as z.infer<typeof TicketView>, 200);
      }
      // As a join answers (join.ts): Location on a new ticket only; the one the user held may carry its token by now.
      if (!created) return c.json((await present(ticket)) as z.infer<typeof TicketView>, 200);
      c.header('Location', `/v1/tickets/${ticket.ticketId}`);
      return c.json(ticket as z.infer<typeof TicketView>, 202);
    },
  );
  return app;
}
