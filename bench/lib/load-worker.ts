/**
 * autocannon in its own process (so the load generator does not share an event loop with the
 * orchestrator): `node --import tsx bench/lib/load-worker.ts <phases.json> <out.json>`.
 * phases.json is a list of loads run one after the other; out.json the list of their results.
 * SIGTERM/SIGINT stop the current load and skip the rest (its result is still written).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import autocannon, { type Instance, type Request } from 'autocannon';
import { cpuSnap, cpuUse } from './cpu.js';
import type { LoadResult, LoadSpec, Sample } from './load-spec.js';
import { percentile } from './stats.js';

function requestsFor(gen: LoadSpec['gen'], samples: Sample[]): Request[] {
  switch (gen.kind) {
    case 'static':
      return [{ method: gen.method, path: gen.path, body: gen.body }];
    case 'join': {
      let n = 0;
      const every = gen.sampleEvery;
      const paths = gen.paths?.length ? gen.paths : null;
      const userRe = new RegExp(`"userId":"${gen.userPrefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(\\d+)"`);
      return [
        {
          method: 'POST',
          path: gen.path,
          setupRequest: (req) => {
            const i = n++;
            return { ...req, ...(paths ? { path: paths[i % paths.length] } : {}), body: `{"userId":"${gen.userPrefix}${i}"}` };
          },
          // The user's number is read back from the answer, so this holds with pipelining too.
          onResponse: every
            ? (status, body) => {
                if (status !== 202) return;
                const m = userRe.exec(body);
                if (!m || Number(m[1]) % every !== 0) return;
                const t = JSON.parse(body) as { ticketId: string; position: number };
                samples.push({ n: Number(m[1]), ticketId: t.ticketId, position: t.position });
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

let current: Instance | null = null;
let stopped = false;
const stop = () => {
  stopped = true;
  current?.stop();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);

function runOne(spec: LoadSpec): Promise<LoadResult> {
  const samples: Sample[] = [];
  let lat = new Float64Array(1 << 16);
  let count = 0;
  const pids = { ...spec.watchPids, loadgen: process.pid };
  const cpuBefore = cpuSnap(pids);
  return new Promise((resolve, reject) => {
    current = autocannon(
      {
        url: spec.url,
        connections: spec.connections,
        pipelining: spec.pipelining ?? 1,
        ...(spec.amount !== undefined ? { amount: spec.amount } : { duration: spec.duration ?? 10 }),
        timeout: 10,
        headers: { 'content-type': 'application/json', ...spec.headers },
        requests: requestsFor(spec.gen, samples),
      },
      (err, result) => {
        current = null;
        if (err) return reject(err);
        const cpu = cpuUse(cpuBefore, cpuSnap(pids));
        const sorted = lat.subarray(0, count).sort();
        const status: Record<string, number> = {};
        for (const [code, { count: c }] of Object.entries(result.statusCodeStats)) status[code] = c;
        const requests = Object.values(status).reduce((a, b) => a + b, 0);
        if (spec.latencyFile) writeFileSync(spec.latencyFile, new Uint8Array(sorted.buffer, sorted.byteOffset, sorted.byteLength));
        resolve({
          requests,
          startedAtMs: result.start.getTime(),
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
          cpu,
        });
      },
    );
    current.on('response', (_client: unknown, _status: number, _bytes: number, ms: number) => {
      if (count === lat.length) {
        const bigger = new Float64Array(lat.length * 2);
        bigger.set(lat);
        lat = bigger;
      }
      lat[count++] = ms;
    });
    if (stopped) current.stop();
  });
}

const [specPath, outPath] = process.argv.slice(2);
const phases = JSON.parse(readFileSync(specPath, 'utf8')) as LoadSpec[];
const results: LoadResult[] = [];
try {
  for (const spec of phases) {
    while (spec.startWhenFileExists && !existsSync(spec.startWhenFileExists) && !stopped) await new Promise((r) => setTimeout(r, 2));
    if (stopped) break;
    results.push(await runOne(spec));
    if (spec.doneFile) writeFileSync(spec.doneFile, '');
  }
  writeFileSync(outPath, JSON.stringify(results));
  process.exit(0);
} catch (err) {
  console.error(String(err));
  process.exit(1);
}
