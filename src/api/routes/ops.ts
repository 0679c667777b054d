import { OpenAPIHono } from '@hono/zod-openapi';
import { FloodgateError } from '../../kernel/errors.js';
import { bearer, keyMatches } from '../auth.js';
import type { ApiContext } from '../context.js';

export interface OpsDeps {
  /** Which backing stores answer right now. */
  ready(): Promise<{ redis: boolean; postgres: boolean }>;
  metricsKey?: string;
  /** Refreshes per-item gauges before a scrape. */
  beforeScrape(): Promise<void>;
}

export function opsRoutes(ctx: ApiContext, deps: OpsDeps) {
  const app = new OpenAPIHono();
  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', async (c) => {
    const r = await deps.ready();
    const ok = r.redis && r.postgres;
    return c.json({ status: ok ? 'ready' : 'unavailable', checks: { redis: r.redis ? 'ok' : 'fail', postgres: r.postgres ? 'ok' : 'fail' } }, ok ? 200 : 503);
  });
  app.get('/metrics', async (c) => {
    if (deps.metricsKey && !keyMatches(bearer(c.req.header('authorization')), deps.metricsKey))
      throw new FloodgateError('unauthorized', 'The metrics key is required.');
    await deps.beforeScrape().catch((err) => ctx.log.warn({ err: String(err) }, 'metrics refresh failed'));
    return c.body(await ctx.metrics.registry.metrics(), 200, { 'Content-Type': ctx.metrics.registry.contentType });
  });
  return app;
}
