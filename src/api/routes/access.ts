import { OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import { fail } from '../../kernel/errors.js';
import type { Actor } from '../../catalog/catalog.js';
import type { AuthEnv } from '../auth.js';
import type { ApiContext } from '../context.js';
import { errors, json } from '../openapi.js';
import { refineJson } from '../json-guard.js';
import { ItemId, UserId } from '../schemas.js';
import { noBody } from '../no-body.js';
import { JWKS_MAX_AGE_S, SIGNING_DELAY_MS } from '../../tokens/key-ring.js';

const security = [{ bearer: [] }];
// Held to the door's rule for strings (json-guard.ts) as every other body is: NUL or a lone surrogate is 400.
const Token = z.object({ token: z.string().max(16_384) }).strict().superRefine(refineJson).openapi('TokenInput');
const Introspection = z
  .object({
    active: z.boolean(),
    sub: z.string().optional(),
    aud: z.string().optional(),
    jti: z.string().optional(),
    exp: z.number().int().optional(),
    iat: z.number().int().optional(),
    iss: z.string().optional(),
    token_type: z.string().optional(),
    result: z.unknown().optional(),
  })
  .openapi('Introspection');
const Blocked = z.object({ userId: z.string(), itemId: z.string().nullable(), blocked: z.boolean() }).openapi('Block');

/** Blocks (operator) and admission tokens: JWKS (anyone), rotate (operator), introspect and revoke (service). */
export function accessRoutes(ctx: ApiContext) {
  const app = new OpenAPIHono<AuthEnv>({ defaultHook: ctx.defaultHook });
  const operator = ctx.auth('operator');
  const service = ctx.auth('service');
  const tokens = () => ctx.tokens ?? fail('not_found', 'Admission tokens are not enabled on this daemon.');
  /**
   * A scoped key may introspect and revoke only tokens of its items: a token whose `aud` is
   * another item is 403 forbidden, whatever the token's state (valid, expired, revoked, forged),
   * so the key learns nothing of it; the `aud` is read before the token is verified.
   */
  const ofScope = (actor: Actor, token: string) => {
    const itemId = tokens().audienceOf(token);
    if (itemId !== null) ctx.auth.requireScope(actor, itemId);
    return token;
  };

  for (const method of ['put', 'delete'] as const) {
    const on = method === 'put';
    app.openapi(
      createRoute({
        method, path: '/v1/items/{itemId}/blocks/{userId}', tags: ['access'], security, middleware: [operator, noBody] as const,
        summary: on ? 'Block a user for this item (joins: 403 blocked; a waiting ticket ends rejected/blocked)' : "Lift a user's block for this item",
        request: { params: z.object({ itemId: ItemId, userId: UserId.openapi({ param: { name: 'userId', in: 'path' } }) }) },
        responses: { 200: json(Blocked, 'The block'), ...errors(400, 401, 403, 404, 503) },
      }),
      async (c) => {
        const { itemId, userId } = c.req.valid('param');
        await ctx.blocks.item(itemId, userId, on);
        return c.json({ userId, itemId, blocked: on }, 200);
      },
    );
    app.openapi(
      createRoute({
        method, path: '/v1/blocks/{userId}', tags: ['access'], security, middleware: [operator, noBody] as const,
        summary: on ? 'Block a user for every item' : 'Lift a block for every item',
        request: { params: z.object({ userId: UserId.openapi({ param: { name: 'userId', in: 'path' } }) }) },
        responses: { 200: json(Blocked, 'The block'), ...errors(400, 401, 403, 503) },
      }),
      async (c) => {
        const { userId } = c.req.valid('param');
        await ctx.blocks.everywhere(userId, on);
        return c.json({ userId, itemId: null, blocked: on }, 200);
      },
    );
  }

  app.openapi(
    createRoute({
      method: 'get', path: '/.well-known/jwks.json', tags: ['tokens'],
      summary: 'Public keys of admission tokens (a rotated-out key stays until its tokens expired)',
      responses: { 200: json(z.object({ keys: z.array(z.record(z.string(), z.unknown())) }), 'JWK set'), ...errors(404) },
    }),
    async (c) => {
      // A rotated-in key is listed this long (and a reload) before it signs (tokens/key-ring.ts).
      // Less from a daemon that has not read the keys lately (Postgres away): another daemon may
      // have rotated a key in that this one does not list.
      const maxAge = tokens().jwksMaxAgeS();
      c.header('Cache-Control', maxAge > 0 ? `public, max-age=${maxAge}` : 'no-store');
      return c.json(tokens().jwks(), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post', path: '/v1/token-keys/rotate', tags: ['tokens'], security, middleware: [operator, noBody] as const,
      summary: `Make a new signing key: listed in the JWKS at once (every daemon's within ~2 s), it signs from signsFrom, ${SIGNING_DELAY_MS / 1000} s later (the JWKS's max-age and reload slack), the old key until then`,
      responses: { 200: json(z.object({ kid: z.string(), signsFrom: z.string() }), 'The new key and when every daemon starts signing with it'), ...errors(400, 401, 403, 404, 413, 503) },
    }),
    async (c) => {
      const { kid, signsFrom } = await tokens().rotate();
      return c.json({ kid, signsFrom: signsFrom.toISOString() }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post', path: '/v1/tokens/introspect', tags: ['tokens'], security, middleware: [service] as const,
      summary: 'Is this admission token active? (RFC 7662 shape)',
      request: { body: { ...json(Token, 'The token'), required: true } },
      responses: { 200: json(Introspection, 'active: false for a bad signature, an expired or a revoked token'), ...errors(400, 401, 403, 404, 413, 415, 503) },
    }),
    async (c) => c.json((await tokens().introspect(ofScope(c.get('actor'), c.req.valid('json').token))) as z.infer<typeof Introspection>, 200),
  );

  app.openapi(
    createRoute({
      method: 'post', path: '/v1/tokens/revoke', tags: ['tokens'], security, middleware: [service] as const,
      summary: 'Revoke an admission token on every daemon (a token that is not valid is inactive already)',
      request: { body: { ...json(Token, 'The token'), required: true } },
      responses: { 200: json(z.object({ revoked: z.boolean() }), 'revoked: whether it was a valid token of ours'), ...errors(400, 401, 403, 404, 413, 415, 503) },
    }),
    async (c) => c.json({ revoked: await tokens().revoke(ofScope(c.get('actor'), c.req.valid('json').token)) }, 200),
  );

  return app;
}
