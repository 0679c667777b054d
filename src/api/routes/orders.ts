import { OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import type { Reservations } from '../../service/reservations.js';
import type { AuthEnv } from '../auth.js';
import type { ApiContext } from '../context.js';
import { errors, json } from '../openapi.js';
import { OrderId, OrderSettled } from '../schemas.js';
import { noBody } from '../no-body.js';

const security = [{ bearer: [] }];
const params = z.object({ orderId: OrderId });

/**
 * Reservations (seckill with `config.reserveMs`): the shop confirms a paid order or releases an
 * unpaid one. Both are idempotent; a confirm after `reservedUntil` is 409 reservation_expired.
 */
export function orderRoutes(ctx: ApiContext, reservations: Reservations) {
  const app = new OpenAPIHono<AuthEnv>({ defaultHook: ctx.defaultHook });
  const service = ctx.auth('service');

  const actions = [
    { path: 'confirm', summary: 'Confirm a reserved order (paid); idempotent', done: 'The order is confirmed', run: reservations.confirm },
    { path: 'release', summary: 'Release a reserved order (not paid): its unit goes to the next in line; idempotent', done: 'The order is released', run: reservations.release },
  ] as const;
  for (const a of actions)
    app.openapi(
      createRoute({
        method: 'post', path: `/v1/orders/{orderId}/${a.path}`, tags: ['orders'], security, middleware: [service, noBody] as const,
        summary: a.summary,
        request: { params },
        responses: { 200: json(OrderSettled, a.done), ...errors(400, 401, 403, 404, 409, 503) },
      }),
      // A key scoped to some items may settle only their orders (403 otherwise, as for joins).
      async (c) => c.json(await a.run(c.req.valid('param').orderId, (itemId) => ctx.auth.requireScope(c.get('actor'), itemId)), 200),
    );
  return app;
}
