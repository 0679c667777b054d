import { OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import { fail } from '../../kernel/errors.js';
import { sampleOf } from '../../scheduler/series-recorder.js';
import type { AuthEnv } from '../auth.js';
import type { ApiContext } from '../context.js';
import { errors, json } from '../openapi.js';
import { ItemId } from '../schemas.js';

const security = [{ bearer: [] }];
const params = z.object({ itemId: ItemId });

const num = z.number().nullable();
/**
 * A whole number in a query, as decimal digits only: z.coerce took whatever Number() takes, so
 * `0x3e8`, ` 1000` and `0b1111101000` were all 1000 (a review's fuzzing).
 */
const digits = (min: number, max: number, byDefault: number) =>
  z
    .string()
    .regex(/^\d{1,9}$/, 'decimal digits')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max))
    .default(byDefault)
    // (As the document showed it before: the pipe alone is shown as a string with a pattern.)
    .openapi({ type: 'integer', minimum: min, maximum: max, default: byDefault });
const Point = z.object({
  t: z.number().int().openapi({ description: 'start of the second, ms since the epoch' }),
  waiting: z.number(),
  admitted: z.number().openapi({ description: 'per second' }),
  succeeded: z.number(),
  rejected: z.number(),
  failed: z.number(),
  rate: num.openapi({ description: "the gate's effective rate" }),
  maxInFlight: num.openapi({ description: "the gate's effective in-flight limit" }),
  ctlRate: num.openapi({ description: "the adaptive controller's pace (its shadow opinion in manual mode)" }),
  ctlLimit: num.openapi({ description: "the adaptive controller's in-flight limit" }),
  p50Ms: num,
  p99Ms: num,
});
const Series = z.object({ stepMs: z.literal(1000), points: z.array(Point) }).openapi('Series');
const AuditEntry = z
  .object({ at: z.string(), actor: z.string(), keyId: z.string().nullable(), from: z.record(z.string(), z.unknown()).nullable(), to: z.record(z.string(), z.unknown()), reason: z.string() })
  .openapi('AuditEntry');

/** What the operator console draws: an item's per-second series and its gate audit log (API.md, Operator console). */
export function consoleDataRoutes(ctx: ApiContext) {
  const app = new OpenAPIHono<AuthEnv>({ defaultHook: ctx.defaultHook });
  const operator = ctx.auth('operator');

  app.openapi(
    createRoute({
      method: 'get', path: '/v1/items/{itemId}/series', tags: ['console'], security, middleware: [operator] as const,
      summary: 'Per-second points of the last windowMs (kept ~16 minutes in Redis, the same on every daemon)',
      request: { params, query: z.object({ windowMs: digits(1000, 960_000, 900_000) }) },
      responses: { 200: json(Series, 'Oldest first'), ...errors(400, 401, 403, 404, 503) },
    }),
    async (c) => {
      const { itemId } = c.req.valid('param');
      const { windowMs } = c.req.valid('query');
      const item = (await ctx.queue.items.item(itemId)) ?? fail('item_not_found', 'No such item.');
      // The daemon's time (Redis's), which the recorder stamps its seconds with: the machine's
      // clock, behind Redis's, left out the latest points (all of them, 2 minutes behind).
      const to = Math.floor(ctx.clock.now() / 1000);
      const from = to - Math.ceil(windowMs / 1000) + 1;
      const points = await ctx.series.range(itemId, from, to);
      // An idle item records no points (cost follows work: a line behind a closed gate is not
      // visited): nothing of it changes while it is idle, and no daemon runs but changes nothing.
      // Its series ends with a point for now, from its view (and begins with one at the window's
      // start if the window has none): a gate closed on five waiting users drew a blank chart, as
      // if nobody waited (a review: 272 s with no point).
      const last = points.at(-1);
      if ((!last || last.t < (to - 2) * 1000) && !(await ctx.queue.items.activeItemIds()).includes(itemId)) {
        // (Read afresh: the view this daemon holds may be FLOODGATE_CACHE_MS old, and the item's own
        // view, asked at the same time, then disagreed with the chart: 0 waiting just after two joins.)
        const fresh = (await ctx.queue.items.item(itemId, { fresh: true })) ?? item;
        const { at: _at, admissions: _admissions, ...now } = sampleOf(fresh, ctx.catalog.gateOf(fresh).effective);
        const still = { ...now, admitted: 0, succeeded: 0, rejected: 0, failed: 0 };
        // (One point a second: a window of one second has its start at now.)
        if (!last && from < to) points.push({ t: from * 1000, ...still });
        points.push({ t: to * 1000, ...still });
      }
      return c.json({ stepMs: 1000 as const, points }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get', path: '/v1/items/{itemId}/audit', tags: ['console'], security, middleware: [operator] as const,
      summary: "The item's gate changes, newest first",
      request: { params, query: z.object({ limit: digits(1, 1000, 100) }) },
      responses: { 200: json(z.object({ entries: z.array(AuditEntry) }), 'Newest first'), ...errors(400, 401, 403, 404, 503) },
    }),
    async (c) => c.json({ entries: await ctx.catalog.audit(c.req.valid('param').itemId, c.req.valid('query').limit) }, 200),
  );
  return app;
}
