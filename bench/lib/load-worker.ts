/**
 * One autocannon run in its own process (so the load generator does not share an event loop with
 * the orchestrator): `node --import tsx bench/lib/load-worker.ts <spec.json> <out.json>`.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import autocannon, { type Request } from 'autocannon';
import type { LoadResult, LoadSpec, Sample } from './load-spec.js';
import { percentile } from './stats.js';

const [specPath, outPath] = process.argv.slice(2);
const spec = JSON.parse(readFileSync(specPath, 'utf8')) as LoadSpec;
const samples: Sample[] = [];

function requestsFor(gen: LoadSpec['gen']): Request[] {
  switch (gen.kind) {
    case 'static':
      return [{ method: gen.method, path: gen.path, body: gen.body }];
    case 'join': {
      let n = 0;
      const every = gen.sampleEvery;
      return [
        {
          method: 'POST',
          path: gen.path,
          // Pipelining is 1, so a connection's context belongs to the request in flight on it.
          setupRequest: (req, ctx) => {
            const i = n++;
            ctx.n = i;
            return { ...req, body: `{"userId":"${gen.userPrefix}${i}"}` };
          },
          onResponse: every
            ? (status, body, ctx) => {
                const i = ctx.n as number;
                if (status !== 202 || i % every !== 0) return;
                const t = JSON.parse(body) as { ticketId: string; position: number; userId: string };
                if (t.userId === `${gen.userPrefix}${i}`) samples.push({ n: i, ticketId: t.ticketId, position: t.position });
              }
            : undefined,
        },
      ];
    }
    case 'poll': {
      const ids = gen.ticketIds;
      return [{ method: 'GET', setupRequest: (req) => ({ ...req, path: `/v1/tickets/${ids[(Math.random() * ids.length) | 0]}` }) }];
    }
  }
}

let lat = new Float64Array(1 << 16);
let count = 0;

const instance = autocannon(
  {
    url: spec.url,
    connections: spec.connections,
    pipelining: spec.pipelining ?? 1,
    duration: spec.duration,
    amount: spec.amount,
    timeout: 10,
    headers: { 'content-type': 'application/json', ...spec.headers },
    requests: requestsFor(spec.gen),
  },
  (err, result) => {
    if (err) {
      console.error(String(err));
      process.exit(1);
    }
    const sorted = lat.subarray(0, count).sort();
    const status: Record<string, number> = {};
    for (const [code, { count: c }] of Object.entries(result.statusCodeStats)) status[code] = c;
    const requests = Object.values(status).reduce((a, b) => a + b, 0);
    const out: LoadResult = {
      requests,
      durationS: result.duration,
      rps: requests / result.duration,
      p50: percentile(sorted, 0.5),
      p90: percentile(sorted, 0.9),
      p99: percentile(sorted, 0.99),
      max: count ? sorted[count - 1] : 0,
      status,
      non2xx: result.non2xx,
      errors: result.errors,
      timeouts: result.timeouts,
      samples,
    };
    writeFileSync(outPath, JSON.stringify(out));
    process.exit(0);
  },
);

instance.on('response', (_client: unknown, _status: number, _bytes: number, ms: number) => {
  if (count === lat.length) {
    const bigger = new Float64Array(lat.length * 2);
    bigger.set(lat);
    lat = bigger;
  }
  lat[count++] = ms;
});

process.once('SIGTERM', () => instance.stop());
process.once('SIGINT', () => instance.stop());
