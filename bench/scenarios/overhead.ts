/**
 * The `overhead` scenario: what one piece of the daemon's HTTP stack costs on its own. A bare Hono
 * app with and without hono's bodyLimit middleware (the daemon mounts it on /v1/*): on
 * @hono/node-server, reading `c.req.raw` makes the adapter build a full web Request (undici,
 * ReadableStream, AbortSignal) for every request, GETs included.
 */
import { SERVICE_KEY } from '../lib/api.js';
import { against, measurePair, NOISY_CORES, pairRatio, startBareHono, type BenchContext } from '../lib/harness.js';
import type { LoadSpec } from '../lib/load-spec.js';
import { mdTable } from '../lib/report.js';
import { fmtInt, fmtMs, fmtRatio } from '../lib/stats.js';
import type { ScenarioOutput } from '../lib/harness.js';

const ROUNDS = 5;
const requests: [string, LoadSpec['gen']][] = [
  ['POST (join shape)', { kind: 'static', method: 'POST', path: '/v1/items/bare/tickets', body: '{"userId":"u-123"}' }],
  ['GET (poll shape)', { kind: 'static', method: 'GET', path: '/v1/tickets/t1' }],
];

export async function overheadScenario(ctx: BenchContext): Promise<ScenarioOutput> {
  const plain = await startBareHono(ctx);
  const limited = await startBareHono(ctx, { BARE_BODY_LIMIT: '1' });
  const rows: (string | number)[][] = [];
  const notes: string[] = [];
  for (const [req, gen] of requests) {
    const spec = { connections: 100, headers: { authorization: `Bearer ${SERVICE_KEY}` }, gen };
    const [a, b] = await measurePair(ctx, against(plain, spec), against(limited, spec), ROUNDS);
    const q = pairRatio(a, b, (r) => r.rps);
    ctx.log(`  ${req}: bare ${fmtInt(a.rps)} req/s, with bodyLimit ${fmtInt(b.rps)} req/s (${fmtRatio(q.median)}×)`);
    for (const [app, r] of [['bare Hono', a], ['bare Hono + bodyLimit on /v1/*', b]] as const) {
      rows.push([app, req, fmtInt(r.rps), fmtMs(r.p50), fmtMs(r.p99), Object.entries(r.status).map(([c, n]) => `${c}: ${fmtInt(n)}`).join(', '), r === b ? `${fmtRatio(q.median)} (rounds ${fmtRatio(q.min)}–${fmtRatio(q.max)})` : '', ['server', 'redis', 'loadgen', 'other'].map((k) => (r.cpu[k] ?? NaN).toFixed(2)).join(' / ')]);
      if (r.cpu.other >= NOISY_CORES) notes.push(`${app}, ${req}: processes outside the bench used ${r.cpu.other.toFixed(2)} cores during the run; less reliable.`);
    }
  }
  await Promise.all([plain.child.stop(), limited.child.stop()]);
  const table = mdTable(['app', 'request', 'req/s', 'p50 ms', 'p99 ms', 'responses', 'ratio to bare Hono', 'CPU cores: server / redis / autocannon / other'], rows);
  const markdown = [
    '### HTTP stack overhead',
    '',
    table,
    '',
    '### Method',
    '',
    `- Two bench/bare-hono.ts processes, one with BARE_BODY_LIMIT=1; each pair of rows alternates from one autocannon process (${ctx.warmupS} s warm-up each, then ${ROUNDS} rounds of ${Math.max(1, Math.round(ctx.durationS / ROUNDS))} s each); the ratio is the median over rounds. 100 connections, pipelining 1.`,
    ...(notes.length ? ['', '### Notes', '', ...notes.map((n) => `- ${n}`)] : []),
  ].join('\n');
  return { markdown };
}
