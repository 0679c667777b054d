/** The flash-sale scenario's markdown: targets, loads, timelines, checks, method and notes. */
import type { BenchContext } from '../../lib/harness.js';
import { NOISY_CORES } from '../../lib/harness.js';
import type { LoadResult } from '../../lib/load-spec.js';
import { checkTable, cpuCell, mdSection, mdTable, statusCell } from '../../lib/report.js';
import { fmtInt, fmtMs, fmtRatio, fmtS } from '../../lib/stats.js';
import { WORKER_START_MS } from '../../lib/flash-load.js';
import type { AcceptedOut } from './accepted.js';
import type { DrainOut } from './drain.js';
import type { SaleOut } from './sale.js';
import { CONNECTIONS, POLL_CONNECTIONS, POLL_SAMPLE, SEED, SEED_CONCURRENCY, STOCK, SYNC_ATTEMPTS, SYNC_CONNECTIONS, TARGET_ORDERS_PER_S, TARGET_RATIO, USERS } from './settings.js';
import type { SyncOut } from './sync.js';

export interface FlashSaleRun {
  ctx: BenchContext;
  sales: SaleOut[];
  accepted: AcceptedOut | null;
  drain: DrainOut | null;
  sync: SyncOut;
  notes: string[];
  warns: { total: number; top: [string, number][] };
  problems: string[];
}

export function flashSaleMarkdown({ ctx, sales, accepted, drain, sync, notes, warns, problems }: FlashSaleRun): string {
  const main = sales[0];
  const rows: (string | number)[][] = [];
  const met = (ok: boolean) => (ok ? 'yes' : '**no**');
  for (const s of sales) {
    const ratio = s.floodOrdersPerS / sync.ordersPerS;
    rows.push(
      [
        `Floodgate (${s.label}): orders/s during the flood (orders created after the join load's first request ÷ that request → last order's created_at)`,
        `${fmtInt(s.floodOrdersPerS)} (${fmtInt(s.floodOrders)} in ${fmtS(s.floodS * 1000)})`,
        `≥ ${fmtInt(TARGET_ORDERS_PER_S)}`,
        met(s.floodOrdersPerS >= TARGET_ORDERS_PER_S),
      ],
      [
        `Floodgate (${s.label}): orders/s over the whole sale, the orchestrator's ${fmtInt(SEED)} seed joins (20 at a time) and the pause for the poll generator's start-up included (orders ÷ first → last order's created_at)`,
        `${fmtInt(s.ordersPerS)} (${fmtInt(s.orders)} in ${s.firstOrder && s.lastOrder ? fmtS(s.lastOrder.getTime() - s.firstOrder.getTime()) : 'n/a'})`,
        '',
        '',
      ],
      [`Floodgate (${s.label}) ÷ synchronous orders/s`, fmtRatio(ratio), `≥ ${TARGET_RATIO}`, met(ratio >= TARGET_RATIO)],
      [`time to sell out (first join → last order)`, `${s.sellOutS.toFixed(2)} s`, '', ''],
      [
        `daemon CPU per order: its CPU from the first join until the item view showed it sold out with its line drained ÷ orders (every join refused and every poll served meanwhile included)`,
        s.saleCpuS === null ? 'n/a (no such view)' : `${fmtInt((s.saleCpuS / s.orders) * 1e6)} µs (${s.saleCpuS.toFixed(2)} CPU-s over ${s.saleCpuWallS.toFixed(1)} s)`,
        '≤ 150 µs (issue #13: per accepted join + its order)',
        s.saleCpuS === null ? '' : met((s.saleCpuS / s.orders) * 1e6 <= 150),
      ],
      [`joins/s, pass 1 (new users) · pass 2 (same users again) · both`, `${fmtInt(s.join1.rps)} · ${fmtInt(s.join2.rps)} · ${fmtInt(s.joinsPerS)}`, '', ''],
      [`join latency p50 / p99, pass 1 · pass 2 · both (p99)`, `${fmtMs(s.join1.p50)} / ${fmtMs(s.join1.p99)} · ${fmtMs(s.join2.p50)} / ${fmtMs(s.join2.p99)} · ${fmtMs(s.joinP99)} ms`, '', ''],
      [
        `poll latency p50 / p99 (${POLL_CONNECTIONS} connections): during the sale · after the sell-out, during pass 2 · both (p99)`,
        `${s.poll1 ? `${fmtMs(s.poll1.p50)} / ${fmtMs(s.poll1.p99)} (${fmtInt(s.poll1.requests)} polls, ${fmtInt(s.poll1.rps)}/s)` : 'n/a'} · ${s.poll2 ? `${fmtMs(s.poll2.p50)} / ${fmtMs(s.poll2.p99)} (${fmtInt(s.poll2.requests)} polls, ${fmtInt(s.poll2.rps)}/s)` : 'n/a'} · ${fmtMs(s.pollP99)} ms`,
        '',
        '',
      ],
      [`410 sold_out answers to joins`, fmtInt(s.status410), '', ''],
      [`gate`, s.gateSeen, '', ''],
    );
  }
  if (accepted) {
    const us = (accepted.cpuS / Math.max(1, accepted.orders)) * 1e6;
    rows.push([
      `daemon CPU per accepted join + its order: ${fmtInt(STOCK)} new users join once each (${CONNECTIONS} connections, as fast as they go) for ${fmtInt(STOCK)} units, every join accepted and sold; the daemon's CPU from the first join until a view showed the item sold out and drained ÷ orders`,
      `${fmtInt(us)} µs (${accepted.cpuS.toFixed(2)} CPU-s over ${accepted.wallS.toFixed(1)} s; ${fmtInt(accepted.ordersPerS)} orders/s)`,
      '≤ 150 µs (issue #13)',
      met(us <= 150),
    ]);
  }
  if (drain)
    rows.push([
      `diagnostic — drain: ${fmtInt(STOCK)} units sold from a line of ${fmtInt(drain.tickets)} filled behind a closed gate, gate then set to auto, no joins arriving: orders/s (same measure)`,
      `${fmtInt(drain.ordersPerS)} (last order ${drain.openToLastS.toFixed(2)} s after the gate opened; ${fmtRatio(drain.ordersPerS / sync.ordersPerS)} × synchronous)`,
      '',
      '',
    ]);
  rows.push(
    [`synchronous design: orders/s (same measure)`, `${fmtInt(sync.ordersPerS)} (${fmtInt(sync.orders)} orders; ${fmtInt(sync.wallOrdersPerS)}/s by the client's clock, sold out after ${sync.sellOutS.toFixed(2)} s)`, '', ''],
  );
  const loadTable = mdTable(
    ['load', 'requests', 'req/s', 'p50 ms', 'p99 ms', 'max ms', 'answers', 'errors / timeouts', 'CPU cores: server / redis / autocannon / other'],
    sales.flatMap((s) =>
      (
        [
          [`${s.label}: pass 1 joins (${CONNECTIONS} conn.)`, s.join1],
          [`${s.label}: pass 2 joins (${CONNECTIONS} conn.)`, s.join2],
          [`${s.label}: polls during the sale (${POLL_CONNECTIONS} conn.)`, s.poll1],
          [`${s.label}: polls during pass 2 (${POLL_CONNECTIONS} conn.)`, s.poll2],
        ] as [string, LoadResult | null][]
      )
        .filter(([, r]) => r)
        .map(([n, r]) => [n, fmtInt(r!.requests), fmtInt(r!.rps), fmtMs(r!.p50), fmtMs(r!.p99), fmtMs(r!.max), statusCell(r!.status), `${r!.errors} / ${r!.timeouts}`, cpuCell(r)]),
    ),
  );
  const checkTables = sales.map((s) => [`**Checks — ${s.label}**`, '', checkTable(s.checks), ''].join('\n'));
  const syncOk = sync.orders === STOCK && sync.stockLeft === 0 && sync.distinctUsers === sync.orders && sync.errors === 0;
  const syncCheck = `- synchronous design: ${fmtInt(sync.orders)} orders for ${fmtInt(STOCK)} units, ${fmtInt(sync.distinctUsers)} distinct users, stock left ${sync.stockLeft}, ${sync.errors} failed transactions${sync.firstError ? ` (first: \`${sync.firstError.slice(0, 200)}\`)` : ''} — ${syncOk ? 'ok' : '**NOT OK**'}.`;

  for (const s of sales) {
    notes.push(...s.notes);
    const failed = s.checks.filter((c) => !c.ok);
    if (failed.length) notes.push(`${s.label}: ${failed.length} check(s) failed: ${failed.map((c) => `${c.name} (${c.value})`).join('; ')}.`);
    if (s.floodOrdersPerS < TARGET_ORDERS_PER_S) notes.push(`Target missed (${s.label}): ${fmtInt(s.floodOrdersPerS)} orders/s during the flood, target ≥ ${fmtInt(TARGET_ORDERS_PER_S)}.`);
    const ratio = s.floodOrdersPerS / sync.ordersPerS;
    if (ratio < TARGET_RATIO) notes.push(`Target missed (${s.label}): ${fmtRatio(ratio)} × the synchronous design, target ≥ ${TARGET_RATIO}.`);
    const noisy = [s.join1, s.join2].filter((r) => r.cpu.other >= NOISY_CORES + (s.poll1 || s.poll2 ? 0.5 : 0));
    if (noisy.length) notes.push(`${s.label}: "other" CPU (Postgres, the concurrent poll load, anything outside the bench) reached ${noisy.map((r) => r.cpu.other.toFixed(2)).join(' / ')} cores during the join passes on this ${ctx.machine.nproc}-core machine.`);
  }
  if (accepted) {
    const failed = accepted.checks.filter((c) => !c.ok);
    if (failed.length) notes.push(`accepted-joins-only sale: ${failed.length} check(s) failed: ${failed.map((c) => `${c.name} (${c.value})`).join('; ')}.`);
  }
  if (drain) {
    const failed = drain.checks.filter((c) => !c.ok);
    if (failed.length) notes.push(`drain diagnostic: ${failed.length} check(s) failed: ${failed.map((c) => `${c.name} (${c.value})`).join('; ')}.`);
  }
  if (warns.total) notes.push(`The daemon logged ${fmtInt(warns.total)} warning line(s) (pino level 40): ${warns.top.map(([m, n]) => `${n} × \`${m}\``).join('; ')}.`);
  if (problems.length) notes.push(`The daemon logged ${problems.length} error line(s); first: \`${problems[0].slice(0, 400)}\``);
  if (USERS !== 100_000 || STOCK !== 10_000) notes.push(`Not the full-size sale: ${fmtInt(STOCK)} units, ${fmtInt(USERS)} users (the issue's sale is 10,000 units, 100,000 users × 2 joins).`);

  const method = [
    `One daemon (dist/floodgate.mjs, built from src/ as \`npm start\` does, with its in-process dispatcher and BullMQ workers, LOG_LEVEL=warn) on loopback, Redis and Postgres local; item \`${main.itemId}\` = \`{"handler":"seckill","config":{"stock":${STOCK}}}\`${sales.length > 1 ? `, then \`${sales[1].itemId}\` with the manual gate` : ''}.`,
    `${fmtInt(USERS)} distinct users join twice. Pass 1: the first ${fmtInt(SEED)} users by the orchestrator (fetch, ${SEED_CONCURRENCY} at a time), then ${fmtInt(USERS - SEED)} by autocannon (${CONNECTIONS} connections, pipelining 1, \`amount\`, as fast as it goes); pass 2: the same users in the same order again (the seed users by the orchestrator, which compares their tickets). Each autocannon load is a fresh child process (≈ 1 s to start, not counted in its req/s).`,
    `Polls: a second autocannon child (${POLL_CONNECTIONS} connections) GETs random tickets: from ${fmtS(WORKER_START_MS)} before pass 1 (its own start-up is over before the join flood starts) until the item view reads \`sold_out\` (the seed users' tickets), and during pass 2 (the seed's plus ~${fmtInt(POLL_SAMPLE)} tickets sampled from pass 1's 202 answers, spread by position).`,
    `Orders/s = order rows ÷ (max − min \`orders.created_at\`); \`created_at\` is \`now()\`, the start of the transaction that wrote the row (the daemon writes orders in batches, one transaction per batch). Time to sell out = first join (orchestrator clock) → last order's \`created_at\`.`,
    `Synchronous baseline, after the daemon has stopped: ${SYNC_CONNECTIONS} postgres.js connections in the orchestrator process (opened before the clock starts), ${fmtInt(SYNC_ATTEMPTS)} buyers as fast as they go, each one transaction \`UPDATE flash_sync_stock SET n = n - 1 WHERE item = $1 AND n > 0\` then, if a row changed, \`INSERT INTO flash_sync_orders\` (scratch tables; UNIQUE(item, user_id)). No HTTP in front of it, which flatters the baseline. Orders/s measured the same way (created_at = transaction start). Client CPU: ${sync.clientCores.toFixed(2)} cores.`,
    `CPU cores are from /proc over each load: server = the daemon, autocannon = that load's own generator; other = everything else, including Postgres and the other (concurrent) autocannon.`,
  ];
  const markdown = [
    '### Flash sale',
    '',
    mdTable(['measurement', 'value', 'target', 'met'], rows),
    '',
    '### Loads',
    '',
    loadTable,
    '',
    '### Orders over time (item view: succeeded, rate since the previous point, line, in flight, gate cap)',
    '',
    ...sales.map((s) => `- ${s.label} (seconds from the first join): ${s.timeline.join(' · ')}`),
    ...sales.map((s) => `- ${s.label}, per half second after the join load's first request: orders (created_at) and new tickets (the ledger's joined_at): ${s.floodSteps.join(' · ')}`),
    ...(drain ? [`- drain (seconds from the gate opening): ${drain.timeline.join(' · ')}`] : []),
    '',
    '### Checks',
    '',
    ...checkTables,
    ...(accepted ? ['**Checks — accepted joins only**', '', checkTable(accepted.checks), ''] : []),
    ...(drain ? ['**Checks — drain diagnostic**', '', checkTable(drain.checks), ''] : []),
    syncCheck,
    '',
    ...mdSection('Method', method),
    ...mdSection('Notes', notes, 'Every target met; every check passed.'),
  ].join('\n');
  return markdown;
}

