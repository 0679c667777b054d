import { OpenAPIHono } from '@hono/zod-openapi';
import { FloodgateError } from '../../kernel/errors.js';
import { bearer, keyMatches } from '../auth.js';
import type { ApiContext } from '../context.js';

export interface OpsDeps {
  /** Which backing stores answer right now; each check bounded by its own timeout (see `probe`). */
  ready(): Promise<{ redis: boolean; postgres: boolean }>;
  metricsKey?: string;
  /** Refreshes per-item gauges before a scrape. */
  beforeScrape(): Promise<void>;
}

/** /readyz answers within this, whatever hangs: a probe still running then counts as failed. */
export const READY_TIMEOUT_MS = 900;
const notReady = { redis: false, postgres: false };

/** True if `check` succeeds within `ms`; a check that hangs or throws is false. */
export async function probe(check: () => Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([check().then(() => true, () => false), late]);
  } finally {
    clearTimeout(timer);
  }
}

export function opsRoutes(ctx: ApiContext, deps: OpsDeps) {
  const app = new OpenAPIHono();
  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', async (c) => {
    let r = notReady;
    await probe(async () => (r = await deps.ready()), READY_TIMEOUT_MS);
    const ok = r.redis && r.postgres;
    const failed = (['redis', 'postgres'] as const).filter((k) => !r[k]);
    if (!ok) c.header('Retry-After', '2');
    return c.json(
      {
        status: ok ? 'ready' : 'unavailable',
        checks: { redis: r.redis ? 'ok' : 'fail', postgres: r.postgres ? 'ok' : 'fail' },
        ...(ok ? {} : { error: { code: 'unavailable', message: `Not answering: ${failed.join(', ')}.` } }),
      },
      ok ? 200 : 503,
    );
  });
  app.get('/metrics', async (c) => {
    if (deps.metricsKey && !keyMatches(bearer(c.req.header('authorization')), deps.metricsKey))
      throw new FloodgateError('unauthorized', 'The metrics key is required.');
    await deps.beforeScrape().catch((err) => ctx.log.warn({ err: String(err) }, 'metrics refresh failed'));
    return c.body(await ctx.metrics.registry.metrics(), 200, { 'Content-Type': ctx.metrics.registry.contentType });
  });
  return app;
}
