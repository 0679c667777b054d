/**
 * The `queue` scenario set: join, poll and reject-when-full against the daemon, each as a ratio to
 * a bare Hono app measured alongside it; then poll latency at depth (1k vs 1M waiting) and Redis
 * memory per waiting ticket.
 */
import { join, putItem, SERVICE_KEY, waitingCount } from '../lib/api.js';
import { against, measurePair, NOISY_CORES, pairRatio, startBareHono, startDaemon, type BenchContext, type Measured } from '../lib/harness.js';
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
/** Alternating slices per load (bare vs daemon, 1k vs big line); ratios are the median over rounds. */
const PAIR_ROUNDS = 5;
const DEPTH_ROUNDS = 5;
/** Seconds the big fill may take (BENCH_FILL_MAX; 0 = until BENCH_DEPTH is reached; unset = what the budget leaves). */
const FILL_MAX_ENV = process.env.BENCH_FILL_MAX;
const PROGRESS_MS = 20_000;
/** Rough cost of starting one load-generator process (tsx), for the time budget. */
const LOAD_START_S = 1;
const auth = { authorization: `Bearer ${SERVICE_KEY}` };

interface Row {
  name: string;
  r: Measured;
  expect: string;
  ratio?: { value: number; of: string; target: string; met: boolean };
}

const unexpected = (r: LoadResult, expect: string) =>
  Object.entries(r.status).reduce((n, [code, c]) => (code === expect ? n : n + c), 0) + r.errors + r.timeouts;
const cpuCell = (r: LoadResult) => ['server', 'redis', 'loadgen', 'other'].map((k) => (r.cpu[k] ?? NaN).toFixed(2)).join(' / ');
const statusCell = (s: Record<string, number>) => Object.entries(s).map(([c, n]) => `${c}: ${fmtInt(n)}`).join(', ') || 'none';
const total = (s: Record<string, number>) => Object.values(s).reduce((a, b) => a + b, 0);

export async function queueScenario(ctx: BenchContext): Promise<ScenarioOutput> {
  const rows: Row[] = [];
  const notes: string[] = [];
  const checks: string[] = [];
  const add = (row: Row) => {
    rows.push(row);
    const ra = row.ratio ? `  → ${fmtRatio(row.ratio.value)} ${row.ratio.of} (target ${row.ratio.target}${row.ratio.met ? '' : ', MISSED'})` : '';
    ctx.log(`  ${row.name}: ${fmtInt(row.r.rps)} req/s, p50 ${fmtMs(row.r.p50)} ms, p99 ${fmtMs(row.r.p99)} ms, ${JSON.stringify(row.r.status)}, CPU ${cpuCell(row.r)}${ra}`);
  };
  /** The per-round median of b ÷ a (f = req/s unless given), checked against the target. */
  const ratioRow = (a: Measured, b: Measured, of: string, target: number, atLeast = true, f = (r: LoadResult) => r.rps) => {
    const q = pairRatio(a, b, f);
    return {
      value: q.median,
      of: `${of}; median of ${q.n} rounds, range ${fmtRatio(q.min)}–${fmtRatio(q.max)}`,
      target: `${atLeast ? '≥' : '≤'} ${target}`,
      met: atLeast ? q.median >= target : q.median <= target,
    };
  };

  // Both servers stay up; each daemon load alternates with its bare-Hono twin (the idle one costs ~nothing).
  const hono = await startBareHono(ctx);
  const daemon = await startDaemon(ctx);
  const url = daemon.url;
  ctx.log(`bare Hono ready in ${fmtS(hono.startMs)}, daemon in ${fmtS(daemon.startMs)}`);
  const load = (server: typeof hono, gen: LoadSpec['gen'], connections = CONNECTIONS) => against(server, { connections, headers: auth, gen });
  const barePost = load(hono, { kind: 'static', method: 'POST', path: '/v1/items/bare/tickets', body: '{"userId":"u-123"}' });
  const bareGet = load(hono, { kind: 'static', method: 'GET', path: '/v1/tickets/t1' });

  // join: a new user every request.
  await putItem(url, 'join', 10_000_000);
  const [bpJoin, joinR] = await measurePair(ctx, barePost, load(daemon, { kind: 'join', path: '/v1/items/join/tickets', userPrefix: 'j' }), PAIR_ROUNDS);
  add({ name: 'bare Hono POST (alongside join)', r: bpJoin, expect: '202' });
  add({ name: 'join (new user each request)', r: joinR, expect: '202', ratio: ratioRow(bpJoin, joinR, 'req/s ÷ bare POST', 0.8) });
  checks.push(`join: ${fmtInt(await waitingCount(url, 'join'))} tickets waiting at the server; autocannon counted ${fmtInt(joinR.allStatus['202'] ?? 0)} 202s over the ${joinR.loads} loads on that item (warm-up included; requests in flight when a load stops, up to ${CONNECTIONS} per load, are not counted).`);

  // poll: 1,000 tickets, GET a random one each request.
  await putItem(url, 'poll', 10_000_000);
  const pollIds = await fill(ctx, daemon, 'poll', SMALL, 'p-');
  const [bgPoll, pollR] = await measurePair(ctx, bareGet, load(daemon, { kind: 'poll', ticketIds: pollIds }), PAIR_ROUNDS);
  add({ name: 'bare Hono GET (alongside poll)', r: bgPoll, expect: '200' });
  add({ name: `poll (random of ${fmtInt(SMALL)} tickets)`, r: pollR, expect: '200', ratio: ratioRow(bgPoll, pollR, 'req/s ÷ bare GET', 0.8) });

  // reject when full: capacity 1, already holding one ticket.
  await putItem(url, 'full', 1);
  const first = await join(url, 'full', 'f-first');
  if (first.status !== 202) throw new Error(`first join of the capacity-1 item: ${first.status} ${JSON.stringify(first.body)}`);
  const [bpReject, rejectR] = await measurePair(ctx, barePost, load(daemon, { kind: 'join', path: '/v1/items/full/tickets', userPrefix: 'f' }), PAIR_ROUNDS);
  add({ name: 'bare Hono POST (alongside reject)', r: bpReject, expect: '202' });
  add({ name: 'reject when full (429 expected)', r: rejectR, expect: '429', ratio: ratioRow(bpReject, rejectR, 'req/s ÷ bare POST', 0.9) });
  checks.push(`reject: ${fmtInt(rejectR.allStatus['429'] ?? 0)} of ${fmtInt(total(rejectR.allStatus))} answers over ${rejectR.loads} loads were 429; the item holds ${fmtInt(await waitingCount(url, 'full'))} waiting ticket(s) (expected 1).`);
  await hono.child.stop();

  // Depth: 1k and (up to) 1M waiting tickets, polled alternately at a fixed number of connections.
  ctx.log(`depth: filling ${fmtInt(SMALL)} and up to ${fmtInt(BIG)} waiting tickets`);
  await putItem(url, 'depth-1k', 10_000_000);
  const smallIds = await fill(ctx, daemon, 'depth-1k', SMALL, 'd-');
  await putItem(url, 'depth-big', 10_000_000);
  const afterFillS = 2 * (ctx.warmupS + ctx.durationS) + LOAD_START_S + 5;
  const fillMaxS = FILL_MAX_ENV !== undefined ? Number(FILL_MAX_ENV) : Math.max(30, Math.floor(ctx.budgetS - ctx.elapsedS() - afterFillS));
  ctx.log(`  big fill: up to ${fmtInt(BIG)} joins${fillMaxS ? `, for at most ${fillMaxS} s (the run's time budget)` : ''}`);
  const memBefore = await usedMemory(ctx.redis);
  const t0 = Date.now();
  const marks: { ms: number; n: number }[] = [{ ms: 0, n: 0 }];
  const progress = setInterval(() => {
    waitingCount(url, 'depth-big').then(
      (n) => {
        marks.push({ ms: Date.now() - t0, n });
        ctx.log(`  … ${fmtInt(n)} waiting after ${fmtS(Date.now() - t0)}`);
      },
      () => {},
    );
  }, PROGRESS_MS);
  const sampleEvery = Math.max(1, Math.floor(BIG / (SAMPLE * 10)));
  const fillR = await runLoad(
    ctx.tmpDir,
    { ...load(daemon, { kind: 'join', path: '/v1/items/depth-big/tickets', userPrefix: 'b', sampleEvery })('0'), amount: BIG },
    { maxS: fillMaxS || undefined },
  ).finally(() => clearInterval(progress));
  const fillMs = Date.now() - t0;
  const memAfter = await usedMemory(ctx.redis);
  const bigWaiting = await waitingCount(url, 'depth-big');
  const joinsPerS = bigWaiting / (fillMs / 1000);
  marks.push({ ms: fillMs, n: bigWaiting });
  const fillRates = marks.slice(1).map((m, i) => `${fmtInt(marks[i].n)}+: ${fmtInt(((m.n - marks[i].n) * 1000) / (m.ms - marks[i].ms))}`);
  const bigIds = spread(fillR.samples.sort((a, b) => a.position - b.position), SAMPLE).map((s) => s.ticketId);
  const depthLabel = bigWaiting === BIG ? fmtInt(BIG) : `${fmtInt(bigWaiting)} (of ${fmtInt(BIG)} asked)`;
  ctx.log(`  filled ${fmtInt(bigWaiting)} in ${fmtS(fillMs)} (${fmtInt(joinsPerS)} joins/s, ${JSON.stringify(fillR.status)}), ${bigIds.length} ids sampled`);
  const usage = await memoryUsage(ctx.redis, `${ctx.prefix}{depth-big}:`);
  checks.push(
    `fill: ${fmtInt(bigWaiting)} waiting at the server (asked for ${fmtInt(BIG)}${fillMaxS ? `, fill capped at ${fillMaxS} s` : ''}); autocannon saw ${statusCell(fillR.status)}, ${fillR.errors} errors, ${fillR.timeouts} timeouts; ${bigIds.length} ticket ids sampled for polling, positions ${fmtInt(bigIds.length ? fillR.samples[0].position : 0)} … ${fmtInt(fillR.samples.at(-1)?.position ?? 0)}.`,
  );

  const [depthSmall, depthBig] = await measurePair(
    ctx,
    load(daemon, { kind: 'poll', ticketIds: smallIds }, DEPTH_CONNECTIONS),
    load(daemon, { kind: 'poll', ticketIds: bigIds }, DEPTH_CONNECTIONS),
    DEPTH_ROUNDS,
  );
  const depthRatio = ratioRow(depthSmall, depthBig, `p50 ÷ p50 at ${fmtInt(SMALL)}`, 1.2, false, (r) => r.p50);
  const p50Ratio = depthRatio.value;
  add({ name: `poll at depth ${fmtInt(SMALL)} (${DEPTH_CONNECTIONS} connections)`, r: depthSmall, expect: '200' });
  add({ name: `poll at depth ${depthLabel} (${DEPTH_CONNECTIONS} connections)`, r: depthBig, expect: '200', ratio: depthRatio });

  const perInfo = (memAfter - memBefore) / bigWaiting;
  const perUsage = usage.bytes / bigWaiting;
  ctx.log(`  redis: used_memory +${fmtInt(memAfter - memBefore)} B = ${perInfo.toFixed(1)} B/ticket; MEMORY USAGE over ${fmtInt(usage.keys)} keys = ${fmtInt(usage.bytes)} B = ${perUsage.toFixed(1)} B/ticket`);
  const problems = daemon.child.problems;
  await daemon.child.stop();

  // Report.
  const table = mdTable(
    ['measurement', 'req/s', 'p50 ms', 'p99 ms', 'responses', 'unexpected', 'ratio', 'target', 'met', 'CPU cores: server / redis / autocannon / other'],
    rows.map((row) => [
      row.name,
      fmtInt(row.r.rps),
      fmtMs(row.r.p50),
      fmtMs(row.r.p99),
      statusCell(row.r.status),
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
      [`fill the big line to ${depthLabel} waiting tickets (autocannon, ${CONNECTIONS} connections, a new user per request)`, `${fmtS(fillMs)}, ${fmtInt(joinsPerS)} joins/s`, fillMaxS ? `cap ${fillMaxS} s` : '', ''],
      [`join rate during the fill, per ~${PROGRESS_MS / 1000} s (line length at the start of the slice: joins/s)`, fillRates.join(' · '), '', ''],
      [`poll p50 at ${depthLabel} ÷ p50 at ${fmtInt(SMALL)}`, `${fmtRatio(p50Ratio)} (${depthRatio.of}; over all responses ${fmtMs(depthBig.p50)} ms ÷ ${fmtMs(depthSmall.p50)} ms)`, '≤ 1.2', p50Ratio <= 1.2 ? 'yes' : '**no**'],
      ['Redis bytes per waiting ticket (INFO used_memory, after − before the fill)', `${perInfo.toFixed(1)} (${fmtInt(memAfter - memBefore)} B)`, '≤ 150', perInfo <= 150 ? 'yes' : '**no**'],
      [`Redis bytes per waiting ticket (Σ MEMORY USAGE SAMPLES 0 over the item's ${fmtInt(usage.keys)} keys)`, `${perUsage.toFixed(1)} (${fmtInt(usage.bytes)} B)`, '≤ 150', perUsage <= 150 ? 'yes' : '**no**'],
    ],
  );

  for (const row of rows) {
    if (row.ratio && !row.ratio.met) notes.push(`Target missed: ${row.name} — ${fmtRatio(row.ratio.value)} (${row.ratio.of}), target ${row.ratio.target}.`);
    const u = unexpected(row.r, row.expect);
    if (u) notes.push(`${row.name}: ${fmtInt(u)} responses other than ${row.expect} (${statusCell(row.r.status)}; ${row.r.errors} connection errors, ${row.r.timeouts} timeouts).`);
  }
  if (perInfo > 150) notes.push(`Target missed: ${perInfo.toFixed(1)} bytes per waiting ticket by INFO used_memory (target ≤ 150).`);
  if (perUsage > 150) notes.push(`Target missed: ${perUsage.toFixed(1)} bytes per waiting ticket by MEMORY USAGE (target ≤ 150).`);
  if (bigWaiting < BIG)
    notes.push(`The big line reached ${fmtInt(bigWaiting)} waiting tickets, not ${fmtInt(BIG)}: the fill stopped at this run's time budget (${fillMaxS} s). \`BENCH_FILL_MAX=0 npm run bench\` fills it completely: ~${fmtS((BIG / bigWaiting) * fillMs)} at this run's average join rate, longer if the rate keeps falling as the line grows (see the fill row). Depth and memory figures are for ${fmtInt(bigWaiting)} tickets.`);
  else if (bigWaiting > BIG) notes.push(`The big line holds ${fmtInt(bigWaiting)} tickets, more than the ${fmtInt(BIG)} asked.`);
  const noisy = rows.filter((row) => row.r.cpu.other >= NOISY_CORES);
  if (noisy.length)
    notes.push(`Processes outside the bench used CPU during: ${noisy.map((row) => `${row.name} (${row.r.cpu.other.toFixed(2)} cores)`).join('; ')}. On this ${ctx.machine.nproc}-core machine that takes cycles from the server, Redis or autocannon; alternating slices and per-round medians damp its effect on the ratios, but the absolute numbers of those rows are less reliable.`);
  if (problems.length) notes.push(`The daemon logged ${problems.length} error line(s); first: \`${problems[0].slice(0, 400)}\``);

  const slice = Math.max(1, Math.round(ctx.durationS / PAIR_ROUNDS));
  const method = [
    `Bare Hono (bench/bare-hono.ts) and the daemon run as separate processes, both up during the throughput rows (the idle one costs next to nothing). Each comparison runs its two loads in alternating slices from one autocannon process: a ${ctx.warmupS} s warm-up of each, then ${PAIR_ROUNDS} rounds of ${slice} s bare + ${slice} s daemon (for depth: ${DEPTH_ROUNDS} rounds of ${Math.max(1, Math.round(ctx.durationS / DEPTH_ROUNDS))} s at 1k + the same at the big line). A ratio is the median over rounds of the two slices' ratio, so a burst of outside load skews one round, not the result; the range shows the spread.`,
    `autocannon 8 in a child process, pipelining 1, ${CONNECTIONS} connections unless said. Joins use a new userId per request. Req/s in the table is over all slices of a load; latencies are per response (all statuses, sub-millisecond resolution) over all slices. Under a saturating closed-loop load p50 ≈ connections ÷ req/s, so latency and throughput move together.`,
    `Big-line polls pick a random id among ${fmtInt(SAMPLE)} spread evenly by position over the whole line (from the fill's answers); small-line polls among all ${fmtInt(SMALL)}.`,
    'Items use handler `external` and gate `closed`, so nothing is admitted during the run. CPU cores are from /proc over each load (server = the process under load; other = everything outside the bench, e.g. other work on a shared machine).',
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
async function fill(ctx: BenchContext, daemon: Parameters<typeof against>[0], itemId: string, n: number, userPrefix: string): Promise<string[]> {
  const spec = against(daemon, { connections: 10, headers: auth, gen: { kind: 'join', path: `/v1/items/${itemId}/tickets`, userPrefix, sampleEvery: 1 } })('');
  const r = await runLoad(ctx.tmpDir, { ...spec, amount: n });
  const ids = r.samples.sort((a, b) => a.position - b.position).map((s) => s.ticketId);
  if (ids.length < n) throw new Error(`filling ${itemId}: only ${ids.length} tickets, statuses ${JSON.stringify(r.status)}`);
  return ids;
}

/** `k` items spread evenly over `xs` (first, …, last). */
function spread<T>(xs: T[], k: number): T[] {
  if (xs.length <= k) return xs;
  return Array.from({ length: k }, (_, i) => xs[Math.round((i * (xs.length - 1)) / (k - 1))]);
}
