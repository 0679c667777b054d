/**
 * The `queue` scenario set: join, poll and reject-when-full against the daemon, each as a ratio to
 * a bare Hono app measured in the same run; then poll latency at depth (1k vs 1M waiting) and
 * Redis memory per waiting ticket.
 */
import { putItem, join, SERVICE_KEY, waitingCount } from '../lib/api.js';
import { measure, NOISY_CORES, startBareHono, startDaemon, type BenchContext, type Measured } from '../lib/harness.js';
import { memoryUsage, usedMemory } from '../lib/infra.js';
import { runLoad } from '../lib/load.js';
import type { LoadResult, LoadSpec } from '../lib/load-spec.js';
import { mdTable } from '../lib/report.js';
import { fmtInt, fmtMs, fmtRatio, fmtS } from '../lib/stats.js';
import type { ScenarioOutput } from './index.js';

const CONNECTIONS = 100;
const DEPTH_CONNECTIONS = 10;
const SMALL = 1_000;
const BIG = Number(process.env.BENCH_DEPTH ?? 1_000_000);
const SAMPLE = 1_000;
/** Seconds the big fill may take (BENCH_FILL_MAX; 0 = until BENCH_DEPTH is reached; unset = what the budget leaves). */
const FILL_MAX_ENV = process.env.BENCH_FILL_MAX;
const auth = { authorization: `Bearer ${SERVICE_KEY}` };

interface Row {
  name: string;
  r: Measured;
  expect: string;
  ratio?: { value: number; of: string; target: string; met: boolean };
}

const unexpected = (r: LoadResult, expect: string) =>
  Object.entries(r.status).reduce((n, [code, c]) => (code === expect ? n : n + c), 0) + r.errors + r.timeouts;

export async function queueScenario(ctx: BenchContext): Promise<ScenarioOutput> {
  const rows: Row[] = [];
  const notes: string[] = [];
  const checks: string[] = [];
  const add = (row: Row) => {
    rows.push(row);
    const ra = row.ratio ? `  ${fmtRatio(row.ratio.value)} ${row.ratio.of} (target ${row.ratio.target}${row.ratio.met ? '' : ', MISSED'})` : '';
    ctx.log(`  ${row.name}: ${fmtInt(row.r.rps)} req/s, p50 ${fmtMs(row.r.p50)} ms, p99 ${fmtMs(row.r.p99)} ms, ${JSON.stringify(row.r.status)}, CPU ${cpuCell(row.r)}${ra}`);
  };
  const load = (gen: LoadSpec['gen'], warm?: LoadSpec['gen'], url = daemonUrl, connections = CONNECTIONS) =>
    measure(ctx, { url, connections, headers: auth, gen }, warm);
  let daemonUrl = '';

  // Before the big fill, a disturbed run may be repeated while the run is young enough.
  ctx.retryUntilS = ctx.budgetS * 0.4;

  // 1. Baselines, with the daemon not running yet so the bare server has the machine to itself.
  ctx.log('baseline: bare Hono on @hono/node-server');
  const hono = await startBareHono(ctx);
  const barePost = await load({ kind: 'static', method: 'POST', path: '/v1/items/bare/tickets', body: '{"userId":"u-123"}' }, undefined, hono.url);
  add({ name: 'bare Hono POST (baseline)', r: barePost, expect: '202' });
  const bareGet = await load({ kind: 'static', method: 'GET', path: '/v1/tickets/t1' }, undefined, hono.url);
  add({ name: 'bare Hono GET (baseline)', r: bareGet, expect: '200' });
  await hono.child.stop();

  // 2. The daemon.
  const daemon = await startDaemon(ctx);
  daemonUrl = daemon.url;
  ctx.log(`daemon ready in ${fmtS(daemon.startMs)}`);
  const vsPost = (r: LoadResult, target: number) => ({ value: r.rps / barePost.rps, of: 'req/s ÷ bare POST', target: `≥ ${target}`, met: r.rps / barePost.rps >= target });

  // join: a new user every request.
  await putItem(daemonUrl, 'join', 10_000_000);
  const joinR = await load({ kind: 'join', path: '/v1/items/join/tickets', userPrefix: 'j-' }, { kind: 'join', path: '/v1/items/join/tickets', userPrefix: 'jw-' });
  add({ name: 'join (new user each request)', r: joinR, expect: '202', ratio: vsPost(joinR, 0.8) });
  checks.push(`join: ${fmtInt(await waitingCount(daemonUrl, 'join'))} tickets waiting at the server after warm-up + run; the load generators counted ${fmtInt(joinR.status['202'] ?? 0)} 202s in the measured run (in-flight requests at a run's end are not counted by autocannon).`);

  // poll: 1,000 tickets, GET a random one each request.
  await putItem(daemonUrl, 'poll', 10_000_000);
  const pollIds = await fill(ctx, daemonUrl, 'poll', SMALL, 'p-', 1);
  const pollR = await load({ kind: 'poll', ticketIds: pollIds });
  add({ name: `poll (random of ${fmtInt(SMALL)} tickets)`, r: pollR, expect: '200', ratio: { value: pollR.rps / bareGet.rps, of: 'req/s ÷ bare GET', target: '≥ 0.8', met: pollR.rps / bareGet.rps >= 0.8 } });

  // reject when full: capacity 1, already holding one ticket.
  await putItem(daemonUrl, 'full', 1);
  const first = await join(daemonUrl, 'full', 'f-first');
  if (first.status !== 202) throw new Error(`first join of the capacity-1 item: ${first.status} ${JSON.stringify(first.body)}`);
  const rejectR = await load({ kind: 'join', path: '/v1/items/full/tickets', userPrefix: 'f-' }, { kind: 'join', path: '/v1/items/full/tickets', userPrefix: 'fw-' });
  add({ name: 'reject when full (429 expected)', r: rejectR, expect: '429', ratio: vsPost(rejectR, 0.9) });
  checks.push(`reject: ${fmtInt(rejectR.status['429'] ?? 0)} of ${fmtInt(rejectR.requests)} answers were 429; the item still has ${fmtInt(await waitingCount(daemonUrl, 'full'))} waiting ticket(s) (expected 1).`);

  // Depth: 1k and 1M waiting tickets, polled at a fixed number of connections.
  ctx.log(`depth: filling ${fmtInt(SMALL)} and ${fmtInt(BIG)} waiting tickets`);
  await putItem(daemonUrl, 'depth-1k', 10_000_000);
  const smallIds = await fill(ctx, daemonUrl, 'depth-1k', SMALL, 'd-', 1);
  await putItem(daemonUrl, 'depth-big', 10_000_000);
  // What the budget leaves after the two depth polls (warm-up + run each) and the memory reading.
  const afterFillS = 2 * (ctx.warmupS + ctx.durationS + 1.5) + 5;
  const FILL_MAX_S = FILL_MAX_ENV !== undefined ? Number(FILL_MAX_ENV) : Math.max(30, Math.floor(ctx.budgetS - ctx.elapsedS() - afterFillS));
  ctx.log(`  big fill: up to ${fmtInt(BIG)} joins${FILL_MAX_S ? `, for at most ${FILL_MAX_S} s` : ''}`);
  const memBefore = await usedMemory(ctx.redis);
  const t0 = Date.now();
  const progress = setInterval(() => {
    waitingCount(daemonUrl, 'depth-big').then((n) => ctx.log(`  … ${fmtInt(n)} waiting after ${fmtS(Date.now() - t0)}`), () => {});
  }, 20_000);
  const fillR = await runLoad(
    ctx.tmpDir,
    { url: daemonUrl, connections: CONNECTIONS, amount: BIG, headers: auth, gen: { kind: 'join', path: '/v1/items/depth-big/tickets', userPrefix: 'b-', sampleEvery: Math.max(1, Math.floor(BIG / (SAMPLE * 10))) } },
    { maxS: FILL_MAX_S || undefined },
  ).finally(() => clearInterval(progress));
  const fillMs = Date.now() - t0;
  const memAfter = await usedMemory(ctx.redis);
  const bigWaiting = await waitingCount(daemonUrl, 'depth-big');
  const bigIds = spread(fillR.samples.sort((a, b) => a.position - b.position), SAMPLE).map((s) => s.ticketId);
  const depthLabel = bigWaiting === BIG ? fmtInt(BIG) : `${fmtInt(bigWaiting)} (of ${fmtInt(BIG)} asked)`;
  ctx.log(`  filled ${fmtInt(bigWaiting)} in ${fmtS(fillMs)} (${fmtInt(bigWaiting / (fillMs / 1000))} joins/s, ${JSON.stringify(fillR.status)}), ${bigIds.length} ids sampled`);
  const usage = await memoryUsage(ctx.redis, `${ctx.prefix}{depth-big}:`);
  checks.push(`fill: ${fmtInt(bigWaiting)} waiting at the server (asked for ${fmtInt(BIG)}${FILL_MAX_S ? `, fill capped at ${FILL_MAX_S} s` : ''}); the load generator saw ${JSON.stringify(fillR.status)}, ${fillR.errors} errors, ${fillR.timeouts} timeouts; ${bigIds.length} ticket ids sampled for polling, positions ${fmtInt(fillR.samples[0]?.position ?? 0)} … ${fmtInt(fillR.samples.at(-1)?.position ?? 0)}.`);

  ctx.retryUntilS = ctx.budgetS;
  const depthSmall = await load({ kind: 'poll', ticketIds: smallIds }, undefined, daemonUrl, DEPTH_CONNECTIONS);
  add({ name: `poll at depth ${fmtInt(SMALL)} (${DEPTH_CONNECTIONS} connections)`, r: depthSmall, expect: '200' });
  const depthBig = await load({ kind: 'poll', ticketIds: bigIds }, undefined, daemonUrl, DEPTH_CONNECTIONS);
  const p50Ratio = depthBig.p50 / depthSmall.p50;
  add({ name: `poll at depth ${depthLabel} (${DEPTH_CONNECTIONS} connections)`, r: depthBig, expect: '200', ratio: { value: p50Ratio, of: `p50 ÷ p50 at ${fmtInt(SMALL)}`, target: '≤ 1.2', met: p50Ratio <= 1.2 } });

  const perInfo = (memAfter - memBefore) / bigWaiting;
  const perUsage = usage.bytes / bigWaiting;
  ctx.log(`  redis: used_memory +${fmtInt(memAfter - memBefore)} B = ${perInfo.toFixed(1)} B/ticket; MEMORY USAGE over ${fmtInt(usage.keys)} keys = ${fmtInt(usage.bytes)} B = ${perUsage.toFixed(1)} B/ticket`);

  // Report.
  const table = mdTable(
    ['measurement', 'req/s', 'p50 ms', 'p99 ms', 'responses', 'unexpected', 'ratio', 'target', 'met', 'CPU cores: server / redis / autocannon / other'],
    rows.map((row) => [
      row.name,
      fmtInt(row.r.rps),
      fmtMs(row.r.p50),
      fmtMs(row.r.p99),
      Object.entries(row.r.status).map(([c, n]) => `${c}: ${fmtInt(n)}`).join(', ') || 'none',
      fmtInt(unexpected(row.r, row.expect)),
      row.ratio ? `${fmtRatio(row.ratio.value)} (${row.ratio.of})` : '',
      row.ratio?.target ?? '',
      row.ratio ? (row.ratio.met ? 'yes' : '**no**') : '',
      cpuCell(row.r),
    ]),
  );
  const depthTable = mdTable(
    ['measurement', 'value', 'target', 'met'],
    [
      [`fill the big line to ${depthLabel} waiting tickets (autocannon, ${CONNECTIONS} connections, new user per request)`, `${fmtS(fillMs)}, ${fmtInt(bigWaiting / (fillMs / 1000))} joins/s`, FILL_MAX_S ? `cap ${FILL_MAX_S} s` : '', ''],
      [`poll p50 at ${depthLabel} ÷ p50 at ${fmtInt(SMALL)}`, `${fmtMs(depthBig.p50)} ms ÷ ${fmtMs(depthSmall.p50)} ms = ${fmtRatio(p50Ratio)}`, '≤ 1.2', p50Ratio <= 1.2 ? 'yes' : '**no**'],
      ['Redis bytes per waiting ticket (INFO used_memory, after − before the fill)', `${perInfo.toFixed(1)} (${fmtInt(memAfter - memBefore)} B)`, '≤ 150', perInfo <= 150 ? 'yes' : '**no**'],
      [`Redis bytes per waiting ticket (Σ MEMORY USAGE SAMPLES 0 over the item's ${fmtInt(usage.keys)} keys)`, `${perUsage.toFixed(1)} (${fmtInt(usage.bytes)} B)`, '≤ 150', perUsage <= 150 ? 'yes' : '**no**'],
    ],
  );

  for (const row of rows) {
    if (row.ratio && !row.ratio.met) notes.push(`Target missed: ${row.name} — ${fmtRatio(row.ratio.value)} (${row.ratio.of}), target ${row.ratio.target}.`);
    if (row.r.rerun) notes.push(`${row.name}: ${row.r.rerun}.`);
    const u = unexpected(row.r, row.expect);
    if (u) notes.push(`${row.name}: ${fmtInt(u)} responses other than ${row.expect} (${JSON.stringify(row.r.status)}, ${row.r.errors} connection errors, ${row.r.timeouts} timeouts).`);
  }
  const noisy = rows.filter((row) => (row.r.cpu.other ?? 0) >= NOISY_CORES);
  if (noisy.length)
    notes.push(`Processes outside the bench used CPU during: ${noisy.map((row) => `${row.name} (${row.r.cpu.other.toFixed(2)} cores)`).join('; ')}. On this ${ctx.machine.nproc}-core machine that takes cycles from the server, Redis or autocannon, so those rows are less reliable.`);
  if (perInfo > 150) notes.push(`Target missed: ${perInfo.toFixed(1)} bytes per waiting ticket by INFO used_memory (target ≤ 150).`);
  if (perUsage > 150) notes.push(`Target missed: ${perUsage.toFixed(1)} bytes per waiting ticket by MEMORY USAGE (target ≤ 150).`);
  if (bigWaiting < BIG)
    notes.push(`The big line reached ${fmtInt(bigWaiting)} waiting tickets, not ${fmtInt(BIG)}: at the daemon's join rate (${fmtInt(bigWaiting / (fillMs / 1000))}/s) a full fill would take ~${fmtS((BIG / bigWaiting) * fillMs)}, past this run's ${FILL_MAX_S} s cap (BENCH_FILL_MAX=0 fills it completely). Depth and memory figures are for ${fmtInt(bigWaiting)} tickets.`);
  else if (bigWaiting > BIG) notes.push(`The big line holds ${fmtInt(bigWaiting)} tickets, more than the ${fmtInt(BIG)} asked.`);
  const problems = daemon.child.problems;
  if (problems.length) notes.push(`The daemon logged ${problems.length} error line(s); first: \`${problems[0].slice(0, 400)}\``);
  await daemon.child.stop();

  const method = [
    `Each load ran ${ctx.durationS} s after a ${ctx.warmupS} s warm-up of the same kind (not counted); autocannon 8 in a child process, pipelining 1.`,
    `Latencies are per response, all status codes, sub-millisecond resolution. Under a saturating closed-loop load p50 ≈ connections ÷ req/s, so latency and throughput move together.`,
    `Depth polls pick a random id among ${fmtInt(SAMPLE)} sampled evenly across the line (evenly by position over the sampled joins of the fill), and among all ${fmtInt(SMALL)} for the small line. Items use handler \`external\` and gate \`closed\`, so nothing is admitted during the run.`,
  ];
  const markdown = [
    '### Throughput and latency',
    '',
    table,
    '',
    '### Depth and memory',
    '',
    depthTable,
    '',
    '### Method',
    '',
    ...method.map((m) => `- ${m}`),
    '',
    '### Checks at the server',
    '',
    ...checks.map((c) => `- ${c}`),
    '',
    '### Notes',
    '',
    ...(notes.length ? notes.map((n) => `- ${n}`) : ['- Every target met; no unexpected statuses.']),
  ].join('\n');
  return { markdown };
}

/** Joins `n` new users (autocannon, `amount`) and returns every ticket id, in line order. */
async function fill(ctx: BenchContext, url: string, itemId: string, n: number, userPrefix: string, sampleEvery: number): Promise<string[]> {
  const r = await runLoad(ctx.tmpDir, { url, connections: 10, amount: n, headers: auth, gen: { kind: 'join', path: `/v1/items/${itemId}/tickets`, userPrefix, sampleEvery } });
  const ids = r.samples.sort((a, b) => a.position - b.position).map((s) => s.ticketId);
  if (ids.length < n / sampleEvery) throw new Error(`filling ${itemId}: only ${ids.length} tickets, statuses ${JSON.stringify(r.status)}`);
  return ids;
}

const cpuCell = (r: LoadResult) => ['server', 'redis', 'loadgen', 'other'].map((k) => (r.cpu[k] ?? NaN).toFixed(2)).join(' / ');

/** `k` items spread evenly over `xs` (first, …, last). */
function spread<T>(xs: T[], k: number): T[] {
  if (xs.length <= k) return xs;
  return Array.from({ length: k }, (_, i) => xs[Math.round((i * (xs.length - 1)) / (k - 1))]);
}
