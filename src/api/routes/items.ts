import { OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import type { AuthEnv } from '../auth.js';
import type { ApiContext } from '../context.js';
import { errors, json } from '../openapi.js';
import { GatePatch, GateView, gateChange, ItemId, ItemInput, ItemStatus, ItemView } from '../schemas.js';
import { noBody } from '../no-body.js';

const params = z.object({ itemId: ItemId });
const security = [{ bearer: [] }];

export function itemRoutes(ctx: ApiContext) {
  const app = new OpenAPIHono<AuthEnv>({ defaultHook: ctx.defaultHook });
  const operator = ctx.auth('operator');
  const service = ctx.auth('service');

  app.openapi(
    createRoute({
      method: 'put', path: '/v1/items/{itemId}', tags: ['items'], security, middleware: [operator] as const,
      summary: 'Create or replace an item',
      request: { params, body: { ...json(ItemInput, 'The item'), required: true } },
      responses: { 200: json(ItemView, 'Replaced'), 201: json(ItemView, 'Created'), ...errors(400, 401, 403, 409, 413, 415, 503) },
    }),
    async (c) => {
      const input = c.req.valid('json');
      const { created, item } = await ctx.catalog.put(c.req.valid('param').itemId, { ...input, gate: input.gate && gateChange(input.gate) }, c.get('actor'));
      return c.json(item, created ? 201 : 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get', path: '/v1/items/{itemId}', tags: ['items'], security, middleware: [operator] as const,
      summary: 'Item view', request: { params }, responses: { 200: json(ItemView, 'The item'), ...errors(400, 401, 403, 404, 503) },
    }),
    async (c) => c.json(await ctx.catalog.get(c.req.valid('param').itemId), 200),
  );

  app.openapi(
    createRoute({
      method: 'get', path: '/v1/items', tags: ['items'], security, middleware: [operator] as const,
      summary: 'All items', responses: { 200: json(z.object({ items: z.array(ItemView) }), 'Items'), ...errors(401, 403, 503) },
    }),
    async (c) => c.json({ items: await ctx.catalog.list() }, 200),
  );

  app.openapi(
    createRoute({
      method: 'delete', path: '/v1/items/{itemId}', tags: ['items'], security, middleware: [operator, noBody] as const,
      summary: 'Close the item: new joins get 410 closed, waiting tickets end cancelled',
      request: { params }, responses: { 200: json(ItemView, 'The closed item'), ...errors(400, 401, 403, 404, 503) },
    }),
    async (c) => c.json(await ctx.catalog.close(c.req.valid('param').itemId), 200),
  );

  app.openapi(
    createRoute({
      method: 'get', path: '/v1/items/{itemId}/webhook-secret', tags: ['items'], security, middleware: [operator] as const,
      summary: "The webhook item's signing secret (Floodgate-Signature); 409 for other handlers",
      request: { params }, responses: { 200: json(z.object({ secret: z.string() }), 'The secret'), ...errors(400, 401, 403, 404, 409, 503) },
    }),
    async (c) => c.json({ secret: await ctx.catalog.webhookSecret(c.req.valid('param').itemId) }, 200),
  );

  app.openapi(
    createRoute({
      method: 'patch', path: '/v1/items/{itemId}/gate', tags: ['gate'], security, middleware: [operator] as const,
      summary: "Change the item's gate (applies on every daemon within a second; audited)",
      request: { params, body: { ...json(GatePatch, 'Fields to change'), required: true } },
      responses: { 200: json(GateView, 'The gate'), ...errors(400, 401, 403, 404, 413, 415, 503) },
    }),
    async (c) => c.json(await ctx.catalog.patchGate(c.req.valid('param').itemId, gateChange(c.req.valid('json')), c.get('actor')), 200),
  );

  app.openapi(
    createRoute({
      method: 'get', path: '/v1/items/{itemId}/status', tags: ['items'], security, middleware: [service] as const,
      summary: "The item's public state, for a shop's own pages (service or operator key)",
      request: { params }, responses: { 200: json(ItemStatus, 'The state'), ...errors(400, 401, 403, 404, 503) },
    }),
    async (c) => {
      // A key outside its scope learns nothing about the item, not even whether it exists.
      ctx.auth.requireScope(c.get('actor'), c.req.valid('param').itemId);
      // Picked field by field: config, counts and gate internals stay with the operators.
      const { itemId, state, opensAt, closesAt, remaining, counts } = await ctx.catalog.get(c.req.valid('param').itemId);
      return c.json({ itemId, state, opensAt, closesAt, remaining, waiting: counts.waiting }, 200);
    },
  );

  return app;
}
