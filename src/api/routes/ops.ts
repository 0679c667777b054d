import { OpenAPIHono, createRoute, z } from '@hono/zod-openapi';
import { GAUGES_READ, itemGaugesText, type ItemGaugeView } from '../../kernel/item-gauges.js';
import { FloodgateError } from '../../kernel/errors.js';
import { acceptsGzip, gzipJoiner } from '../../kernel/gzip-join.js';
import { bearer, keyMatches } from '../auth.js';
import type { ApiContext } from '../context.js';
import { errors, json } from '../openapi.js';
import { Health, Readiness } from '../schemas.js';

const tags = ['operations'];

/** Documented here, served as plain routes: they take no input to validate. */
function documentOps(app: OpenAPIHono) {
  const r = app.openAPIRegistry;
  r.registerPath(createRoute({ method: 'get', path: '/healthz', tags, summary: 'Liveness: 200 while the process runs', responses: { 200: json(Health, 'Alive') } }));
  r.registerPath(
    createRoute({
      method: 'get', path: '/readyz', tags, summary: 'Readiness: 200 when Redis and Postgres take writes',
      responses: { 200: json(Readiness, 'Ready'), 503: json(Readiness, 'Not ready: which store failed') },
    }),
  );
  r.registerPath(
    createRoute({
      method: 'get', path: '/metrics', tags, summary: 'Prometheus text exposition',
      description: 'Open to anyone, unless FLOODGATE_METRICS_KEY is set: then that bearer key is required.',
      security: [{}, { bearer: [] }],
      responses: { 200: { content: { 'text/plain': { schema: z.string() } }, description: 'Metrics (text format 0.0.4); gzip-encoded when Accept-Encoding allows it' }, ...errors(401) },
    }),
  );
}

export interface OpsDeps {
  /** Which backing stores answer right now; each check bounded by its own timeout (see `probe`). */
  /** `why`: what is wrong beyond not answering (a Redis set to evict keys takes writes, and still fails). */
  ready(): Promise<{ redis: boolean; postgres: boolean; why?: string; stopping?: boolean }>;
  metricsKey?: string;
  /** The items' views as the daemon holds them, for the per-item gauges of a scrape. */
  itemViews(): Promise<ItemGaugeView[]>;
  /** With several processes on one port: their metrics aggregated (cluster-metrics.ts), instead of this process's own. */
  scrape?: () => Promise<string>;
}

/** /readyz answers within this, whatever hangs: a probe still running then counts as failed. */
export const READY_TIMEOUT_MS = 900;
const notReady: Awaited<ReturnType<OpsDeps['ready']>> = { redis: false, postgres: false };

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
  documentOps(app);
  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', async (c) => {
    let r = notReady;
    await probe(async () => (r = await deps.ready()), READY_TIMEOUT_MS);
    const ok = r.redis && r.postgres && !r.stopping;
    const failed = (['redis', 'postgres'] as const).filter((k) => !r[k]);
    if (!ok) c.header('Retry-After', '2');
    // (Stopping: the stores' checks are still what they answered.)
    const why = r.stopping ? 'This daemon is stopping (a graceful stop under way): send to another.' : (r.why ?? `Not answering: ${failed.join(', ')}.`);
    return c.json(
      {
        status: ok ? 'ready' : 'unavailable',
        checks: { redis: r.redis ? 'ok' : 'fail', postgres: r.postgres ? 'ok' : 'fail' },
        ...(ok ? {} : { error: { code: 'unavailable', message: why } }),
      },
      ok ? 200 : 503,
    );
  });
  /** This scrape's word on its item gauges (kernel/item-gauges.ts GAUGES_READ). */
  const itemGaugesReadText = (read: number) => `# HELP ${GAUGES_READ.name} ${GAUGES_READ.help}\n# TYPE ${GAUGES_READ.name} gauge\n${GAUGES_READ.name} ${read}\n`;
  const gzip = gzipJoiner();
  let lastViews: Awaited<ReturnType<typeof deps.itemViews>> = [];
  app.get('/metrics', async (c) => {
    if (deps.metricsKey && !keyMatches(bearer(c.req.header('authorization')), deps.metricsKey))
      throw new FloodgateError('unauthorized', 'The metrics key is required.');
    // The item views first (their read says whether the gauges below are now's): Redis unreachable,
    // the last ones read are served, and floodgate_item_gauges_read says 0 — the gauges went missing
    // from a 200 answer, which a dashboard showed as no data rather than as an outage.
    let read = 1;
    const views = await deps.itemViews().then(
      (v) => (lastViews = v),
      (err) => ((read = 0), ctx.log.warn({ err: String(err) }, 'item views for metrics failed; the last ones read are served'), lastViews),
    );
    const own = (await (deps.scrape ? deps.scrape() : ctx.metrics.registry.metrics())) + itemGaugesReadText(read);
    // The item gauges first: with many idle items they are most of the body and the same text
    // scrape after scrape, so their compressed form is kept (gzip-join.ts). Prometheus always asks
    // for gzip; 10,000 idle items are then ~0.2 MB on the wire instead of 3.7 MB.
    const items = itemGaugesText(views);
    const headers = { 'Content-Type': ctx.metrics.registry.contentType, Vary: 'Accept-Encoding' };
    if (!acceptsGzip(c.req.header('accept-encoding'))) return c.body(items + own, 200, headers);
    return c.body(await gzip(items, own), 200, { ...headers, 'Content-Encoding': 'gzip' });
  });
  return app;
}
