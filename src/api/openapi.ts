import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import { z } from 'zod';
import { configSchemaName, type HandlerRegistry } from '../service/registry.js';
import { ErrorBody } from './schemas.js';

/** Seconds to wait before asking again, on the answers that say "not now" (docs/api.md, Errors). */
export const retryAfterHeader = {
  'Retry-After': { description: 'Whole seconds to wait before trying again.', schema: { type: 'integer' as const, minimum: 1 } },
};

/** A JSON body of `schema`, for a route's request or responses. */
export const json = <T extends z.ZodType>(schema: T, description: string) => ({ content: { 'application/json': { schema } }, description });

const err = (description: string) => json(ErrorBody, description);

/** Every error answer of the API (see docs/api.md, Errors); each route lists those it can give. */
const errorDocs = {
  400: err('invalid_request: malformed JSON, wrong types or out-of-range values; details.issues names each field'),
  401: err('unauthorized: no bearer key, or an unknown one'),
  403: err('forbidden: the key lacks the role, or the item is outside its scope (FLOODGATE_KEY_SCOPES); blocked: the user is blocked for this item'),
  404: err('item_not_found / ticket_not_found / not_found'),
  409: err('conflict / lease_lost / not_cancellable / reservation_expired'),
  410: err('sold_out / closed'),
  413: err('payload_too_large: the body is over the limit (default 16 KiB; payload over 8 KiB)'),
  415: err('unsupported_media_type: a body sent without Content-Type: application/json'),
  425: err('not_open: before opensAt; details.opensAt and the server time details.now, and for an item with a pre-queue details.joinsFrom, when its joins are taken (opensAt − fromMs)'),
  429: { ...err('queue_full / rate_limited'), headers: retryAfterHeader },
  503: { ...err('unavailable: Redis or Postgres is unreachable'), headers: retryAfterHeader },
} as const;

type ErrorStatus = keyof typeof errorDocs;

/** The documented error responses for `statuses`, e.g. `...errors(400, 401, 404)`. */
export function errors<S extends ErrorStatus>(...statuses: S[]): Pick<typeof errorDocs, S> {
  return Object.fromEntries(statuses.map((s) => [s, errorDocs[s]])) as Pick<typeof errorDocs, S>;
}

const configExamples: Record<string, unknown> = {
  seckill: { stock: 1000, shards: 1 },
  coupon: { total: 5000, perUser: 1, shards: 1 },
  webhook: { url: 'https://shop.internal/orders', timeoutMs: 5000, headers: { 'x-shop-key': '…' } },
  external: {},
};

const componentName = configSchemaName;

/**
 * The document's `HandlerConfig`: one schema per handler the daemon knows, generated from the
 * same zod schema that checks an item's config, so a deployment's own handlers appear too.
 * Which one applies is chosen by the item's `handler` field.
 */
export function handlerConfigSchemas(handlers: HandlerRegistry): Record<string, Record<string, unknown>> {
  const out: Record<string, Record<string, unknown>> = {};
  const names = handlers.names();
  for (const name of names) {
    let schema: Record<string, unknown>;
    try {
      const { $schema: _drop, ...rest } = z.toJSONSchema(handlers.get(name)!.config, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
      schema = rest;
    } catch {
      schema = { type: 'object' }; // a deployment's schema that JSON Schema cannot express
    }
    out[componentName(name)] = { title: name, description: `config of a "${name}" item`, ...schema, ...(configExamples[name] ? { examples: [configExamples[name]] } : {}) };
  }
  out.HandlerConfig = {
    description: `The handler's settings; which schema applies is chosen by the item's handler: ${names.map((n) => `${n} → ${componentName(n)}`).join(', ')}.`,
    oneOf: names.map((n) => ({ $ref: `#/components/schemas/${componentName(n)}` })),
  };
  return out;
}

const info = {
  title: 'Floodgate API',
  version: '1',
  description:
    'Per-item lines for flash sales. Keys: `Authorization: Bearer <key>`, a service key (joins, pulls, outcomes, item status) or an operator key (everything); the ticket endpoints need only the ticket id. Request bodies are JSON (`Content-Type: application/json`). Every error is `{"error": {"code", "message", "details"?}}` and is never cached.',
};

/** `GET /openapi.json`: the document, built on first ask (routes and handlers are fixed by then). */
export function serveOpenApi(app: OpenAPIHono, handlers: HandlerRegistry) {
  app.openAPIRegistry.registerComponent('securitySchemes', 'bearer', { type: 'http', scheme: 'bearer' });
  app.openAPIRegistry.registerPath(
    createRoute({
      method: 'get', path: '/openapi.json', tags: ['operations'], summary: 'This OpenAPI 3.1 document',
      responses: { 200: { content: { 'application/json': { schema: z.record(z.string(), z.unknown()) } }, description: 'The document' } },
    }),
  );
  let doc: ReturnType<typeof app.getOpenAPI31Document> | undefined;
  app.get('/openapi.json', (c) => {
    if (!doc) {
      const generated = app.getOpenAPI31Document({ openapi: '3.1.0', info });
      doc = { ...generated, components: { ...generated.components, schemas: { ...generated.components?.schemas, ...handlerConfigSchemas(handlers) } } };
    }
    c.header('Cache-Control', 'public, max-age=300');
    return c.json(doc);
  });
}
