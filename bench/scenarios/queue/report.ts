/** The `queue` scenario's markdown: the throughput table, depth and memory, method, checks and notes. */
import { NOISY_CORES, type BenchContext } from '../../lib/harness.js';
import { cpuCell, mdSection, mdTable, statusCell } from '../../lib/report.js';
import { fmtInt, fmtMs, fmtRatio, fmtS } from '../../lib/stats.js';
import type { Depth } from './depth.js';
import { BIG, CONNECTIONS, DEPTH_CONNECTIONS, DEPTH_ROUNDS, PAIR_ROUNDS, PROGRESS_MS, SAMPLE, SMALL, unexpected, type Row } from './settings.js';

export function queueMarkdown(ctx: BenchContext, rows: Row[], d: Depth, checks: string[], notes: string[], problems: string[]): string {
  const { depthSmall, depthBig, depthRatio, p50Ratio, fillMs, fillMaxS, joinsPerS, fillRates, depthLabel, bigWaiting, memBefore, memAfter, usage, perInfo, perUsage } = d;
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
    ...mdSection('Method', method),
    ...mdSection('Checks at the server', checks),
    ...mdSection('Notes', notes, 'Every target met; no unexpected statuses.'),
  ].join('\n');
  return markdown;
}
