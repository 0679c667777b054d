/**
 * The `flash-sale` scenario: one daemon, one seckill item with BENCH_STOCK units (default 10,000),
 * and BENCH_USERS distinct users (default 100,000) who each join twice as fast as autocannon can
 * send (the second join must answer 200 with the same ticket, or 410 once the stock is gone), while
 * a second load polls tickets. Orders/s, time to sell out, join and poll latency, and the checks
 * that nothing was oversold or sold twice; then, in the same run, the synchronous design (64
 * Postgres connections, one `UPDATE … n > 0` + `INSERT` transaction per buyer) as the baseline.
 *
 * Knobs (env): BENCH_STOCK, BENCH_USERS, BENCH_SYNC_ATTEMPTS (default 3 × stock),
 * BENCH_POLL_CONNECTIONS (default 10), BENCH_FLASH_WARMUP (units of a warm-up sale on another item,
 * sold to twice as many new users before the measured sale so that the daemon's code is compiled
 * and its pools are open, as in a daemon that has been running, by the generator process that then
 * sends the first pass; default 5,000; 0 = none, and a fresh generator), BENCH_FLASH_MANUAL (in-flight cap of a second sale with a
 * `manual` gate, run after the `auto` one; 0 = skip; default 0), BENCH_FLASH_DRAIN=0 (skip the drain
 * diagnostic: the same stock sold from a line filled behind a closed gate, with no joins arriving).
 * BENCH_FLASH_RESERVE=<share> (e.g. 0.2) runs the reservations variant instead (bench/lib/flash-reserve.ts):
 * a share of the buyers never pay, their reservations expire and their units go to the next in line.
 */
import { ticketRef } from '../../src/kernel/ticket-ref.js';
import postgres from 'postgres';
import { call, OPERATOR_KEY, SERVICE_KEY } from '../lib/api.js';
import { startLoad, WORKER_START_MS, type RunningLoad } from '../lib/flash-load.js';
import { NOISY_CORES, startDaemon, type BenchContext, type Server } from '../lib/harness.js';
import { runLoad, runLoads } from '../lib/load.js';
import type { LoadResult, LoadSpec, Sample } from '../lib/load-spec.js';
import { mdTable } from '../lib/report.js';
import { fmtInt, fmtMs, fmtRatio, fmtS, percentile } from '../lib/stats.js';
import { existsSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { ScenarioOutput } from './index.js';
import { runReservedSale } from '../lib/flash-reserve.js';

const STOCK = Number(process.env.BENCH_STOCK ?? 10_000);
const USERS = Number(process.env.BENCH_USERS ?? 100_000);
const SYNC_ATTEMPTS = Number(process.env.BENCH_SYNC_ATTEMPTS ?? 3 * STOCK);
const POLL_CONNECTIONS = Number(process.env.BENCH_POLL_CONNECTIONS ?? 10);
const MANUAL_CAP = Number(process.env.BENCH_FLASH_MANUAL ?? 0);
const DRAIN = process.env.BENCH_FLASH_DRAIN !== '0';
/** Units of the warm-up sale on another item before the measured one (0 = none). */
const WARMUP = Number(process.env.BENCH_FLASH_WARMUP ?? 5_000);
const CONNECTIONS = 100;
const SYNC_CONNECTIONS = 64;
/** Users joined (twice) by the orchestrator itself, so that polling can start with the sale. */
const SEED = Math.max(1, Math.min(500, Math.floor(USERS / 20)));
const SEED_CONCURRENCY = 20;
/** Ticket ids polled after the sell-out: the seed's plus about this many sampled from the first pass. */
const POLL_SAMPLE = 1_000;
const WATCH_MS = 200;
const SELL_OUT_WAIT_S = 60;
const SETTLE_WAIT_S = 30;
/** How long the outcome ledger (ticket_outcomes, written in the background) may lag behind the item view. */
const LEDGER_WAIT_S = 10;
/** If it still lags, it is checked again before the daemon stops, up to this long after that first wait. */
const LEDGER_RECHECK_S = 45;
const TARGET_ORDERS_PER_S = 3_000;
const TARGET_RATIO = 3.5;
const auth = { authorization: `Bearer ${SERVICE_KEY}` };

type Gate = { mode: 'auto' } | { mode: 'manual'; maxInFlight: number };
type Counts = Record<string, number>;
interface ItemView {
  state: string;
  counts: Counts;
  remaining: number | null;
  gate: { mode: string; effective: { rate: number | null; maxInFlight: number | null }; controller: Record<string, unknown> | null };
}
interface Check {
  name: string;
  value: string;
  expected: string;
  ok: boolean;
}

const statusCell = (s: Record<string, number>) => Object.entries(s).map(([c, n]) => `${c}: ${fmtInt(n)}`).join(', ') || 'none';
const sumStatus = (...xs: (Record<string, number> | undefined)[]) => {
  const out: Record<string, number> = {};
  for (const s of xs) for (const [k, v] of Object.entries(s ?? {})) out[k] = (out[k] ?? 0) + v;
  return out;
};
const cpuCell = (r: LoadResult | null | undefined) => (r ? ['server', 'redis', 'loadgen', 'other'].map((k) => (r.cpu[k] ?? NaN).toFixed(2)).join(' / ') : '');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


async function itemView(base: string, itemId: string): Promise<ItemView> {
  const r = await call(base, 'GET', `/v1/items/${itemId}`, OPERATOR_KEY);
  if (r.status !== 200) throw new Error(`GET item ${itemId}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body as unknown as ItemView;
}

/** fn(0 … n-1), at most `conc` at a time, results in order. */
async function pool<T>(n: number, conc: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out = new Array<T>(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(conc, n) }, async () => {
      while (next < n) {
        const i = next++;
        out[i] = await fn(i);
      }
    }),
  );
  return out;
}

/** `k` items spread evenly over `xs`. */
function spread<T>(xs: T[], k: number): T[] {
  if (xs.length <= k) return xs;
  return Array.from({ length: k }, (_, i) => xs[Math.round((i * (xs.length - 1)) / (k - 1))]);
}

async function readLat(file: string): Promise<Float64Array> {
  try {
    const buf = await readFile(file);
    return new Float64Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  } catch {
    return new Float64Array(0);
  }
}

function mergedP99(...lats: Float64Array[]): number {
  const all = new Float64Array(lats.reduce((n, l) => n + l.length, 0));
  let off = 0;
  for (const l of lats) {
    all.set(l, off);
    off += l.length;
  }
  return percentile(all.sort(), 0.99);
}

interface SaleOut {
  label: string;
  itemId: string;
  ordersPerS: number;
  /** Orders made after the flood's first join ÷ (that join → the last order): the target's measure. */
  floodOrdersPerS: number;
  floodOrders: number;
  floodS: number;
  sellOutS: number;
  orders: number;
  firstOrder: Date | null;
  lastOrder: Date | null;
  t0: Date;
  soldOutSeenS: number | null;
  settleS: number | null;
  join1: LoadResult;
  join2: LoadResult;
  poll1: LoadResult | null;
  poll2: LoadResult | null;
  joinP99: number;
  pollP99: number;
  joinsPerS: number;
  joinWallS: number;
  seedStatus1: Record<string, number>;
  seedStatus2: Record<string, number>;
  status410: number;
  gateSeen: string;
  ledger: { complete: boolean; terminal: number; checkedAt: number };
  /** Succeeded tickets over time (item view), about one point per second until the sell-out. */
  timeline: string[];
  /** Orders per half second after the flood's first request (created_at). */
  floodSteps: string[];
  view: ItemView;
  checks: Check[];
  notes: string[];
}

async function runSale(ctx: BenchContext, daemon: Server, itemId: string, gate: Gate, redisPid: number | undefined, warm = false): Promise<SaleOut> {
  const url = daemon.url;
  const label = gate.mode === 'auto' ? 'auto gate' : `manual gate, maxInFlight ${gate.maxInFlight}`;
  const notes: string[] = [];
  const put = await call(url, 'PUT', `/v1/items/${itemId}`, OPERATOR_KEY, { handler: 'seckill', config: { stock: STOCK }, gate });
  if (put.status !== 201 && put.status !== 200) throw new Error(`PUT item ${itemId}: ${put.status} ${JSON.stringify(put.body)}`);
  const joinPath = `/v1/items/${itemId}/tickets`;
  const watchPids = { server: daemon.child.proc.pid, redis: redisPid };
  const lat = (name: string) => path.join(ctx.tmpDir, `flash-${itemId}-${name}.lat`);
  const rest = USERS - SEED;
  const joinSpec = (sampleEvery?: number): LoadSpec => ({
    url,
    connections: CONNECTIONS,
    headers: auth,
    amount: rest,
    gen: { kind: 'join', path: joinPath, userPrefix: 'u-b-', ...(sampleEvery ? { sampleEvery } : {}) },
    watchPids,
  });
  const pollSpec = (ids: string[], name: string): LoadSpec => ({
    url,
    connections: POLL_CONNECTIONS,
    headers: auth,
    duration: 3600,
    gen: { kind: 'poll', ticketIds: ids },
    latencyFile: lat(name),
    watchPids,
  });

  // One generator sends the warm-up sale's joins and then, on the go file, this sale's first pass.
  const sampleEvery = Math.max(1, Math.floor(Math.min(rest, STOCK * 2) / POLL_SAMPLE));
  const pass1Spec: LoadSpec = { ...joinSpec(sampleEvery), latencyFile: lat('join1') };
  let generator: Promise<LoadResult[]> | null = null;
  let warmer: ReturnType<typeof warmUp> | null = null;
  if (warm) {
    warmer = warmUp(ctx, daemon);
    await warmer.define();
    const from = Date.now();
    generator = runLoads(ctx.tmpDir, [warmer.spec, { ...pass1Spec, startWhenFileExists: warmer.goFile }]);
    await warmer.settled(from, generator);
  }

  // The sale starts with the seed users' joins (by the orchestrator, so their tickets can be polled at once).
  ctx.log(`sale "${itemId}" (${label}): ${fmtInt(STOCK)} units, ${fmtInt(USERS)} users × 2 joins`);
  const t0 = new Date();
  const seed1 = await pool(SEED, SEED_CONCURRENCY, (i) => call(url, 'POST', joinPath, SERVICE_KEY, { userId: `u-a-${i}` }));
  const seedIds = seed1.map((r) => r.body.ticketId as string | undefined).filter((x): x is string => typeof x === 'string');

  let soldOutAt: number | null = null;
  let poll1: RunningLoad | null = seedIds.length ? startLoad(ctx.tmpDir, pollSpec(seedIds, 'poll1')) : null;
  // The poll generator's start-up (a second of one core) is over before the join flood begins.
  if (poll1) await sleep(WORKER_START_MS);
  let poll1Stopped: Promise<LoadResult | null> | null = null;
  let lastOpen: ItemView | null = null;
  let maxCap = 0;
  let watchErr = 0;
  const timeline: { s: number; succeeded: number; waiting: number; admitted: number; cap: number | null }[] = [];
  const watch = setInterval(() => {
    const at = Date.now();
    itemView(url, itemId).then(
      (v) => {
        timeline.push({ s: (at - t0.getTime()) / 1000, succeeded: v.counts.succeeded ?? 0, waiting: v.counts.waiting ?? 0, admitted: v.counts.admitted ?? 0, cap: v.gate.effective.maxInFlight });
        if (v.state !== 'sold_out') {
          lastOpen = v;
          maxCap = Math.max(maxCap, v.gate.effective.maxInFlight ?? 0);
          return;
        }
        if (soldOutAt !== null) return;
        soldOutAt = Date.now();
        ctx.log(`  sold out after ${fmtS(soldOutAt - t0.getTime())} (seen by the item view)`);
        if (poll1) poll1Stopped = poll1.stop();
      },
      () => watchErr++,
    );
  }, WATCH_MS);

  try {
    // Pass 1: every user once.
    let join1: LoadResult;
    if (generator && warmer) {
      writeFileSync(warmer.goFile, '');
      const [warmLoad, pass1] = await generator;
      join1 = pass1;
      notes.push(warmer.note(warmLoad));
    } else join1 = await runLoad(ctx.tmpDir, pass1Spec);
    ctx.log(`  pass 1 (new users): ${fmtInt(join1.rps)} joins/s, p99 ${fmtMs(join1.p99)} ms, ${JSON.stringify(join1.status)}, ${join1.errors} errors, ${join1.timeouts} timeouts`);

    // Pass 2: every user again; the seed users by the orchestrator, to compare the tickets.
    const seed2 = await pool(SEED, SEED_CONCURRENCY, (i) => call(url, 'POST', joinPath, SERVICE_KEY, { userId: `u-a-${i}` }));
    let poll2: RunningLoad | null = null;
    if (soldOutAt !== null) {
      const ids = [...seedIds, ...spread((join1.samples as Sample[]).sort((a, b) => a.position - b.position), POLL_SAMPLE).map((s) => s.ticketId)];
      poll2 = startLoad(ctx.tmpDir, pollSpec(ids, 'poll2'));
      await sleep(WORKER_START_MS);
    }
    const join2 = await runLoad(ctx.tmpDir, { ...joinSpec(), latencyFile: lat('join2') });
    const joinWallS = (Date.now() - t0.getTime()) / 1000;
    ctx.log(`  pass 2 (the same users again): ${fmtInt(join2.rps)} joins/s, p99 ${fmtMs(join2.p99)} ms, ${JSON.stringify(join2.status)}, ${join2.errors} errors, ${join2.timeouts} timeouts`);
    const poll2R = poll2 ? await poll2.stop() : null;

    // Wait for the sell-out (poll 1 stops with it), then for the line to drain.
    const waitUntil = Date.now() + SELL_OUT_WAIT_S * 1000;
    while (soldOutAt === null && Date.now() < waitUntil) await sleep(WATCH_MS);
    if (soldOutAt === null) {
      notes.push(`${label}: the item did not reach \`sold_out\` within ${SELL_OUT_WAIT_S} s after the last join.`);
      if (poll1) poll1Stopped = poll1.stop();
    }
    const poll1R = poll1Stopped ? await poll1Stopped : null;
    let view = await itemView(url, itemId);
    const settleFrom = Date.now();
    let settleS: number | null = null;
    while (Date.now() - settleFrom < SETTLE_WAIT_S * 1000) {
      view = await itemView(url, itemId);
      if ((view.counts.waiting ?? 0) === 0 && (view.counts.admitted ?? 0) === 0) {
        settleS = (Date.now() - t0.getTime()) / 1000;
        break;
      }
      await sleep(250);
    }
    clearInterval(watch);
    if (settleS === null) notes.push(`${label}: ${SETTLE_WAIT_S} s after the last join the item still shows ${fmtInt(view.counts.waiting ?? 0)} waiting and ${fmtInt(view.counts.admitted ?? 0)} admitted tickets (${JSON.stringify(view.counts)}).`);

    // What Postgres says.
    const sql = postgres(ctx.databaseUrl, { max: 2, onnotice: () => {} });
    try {
      const terminal = ['succeeded', 'rejected', 'failed', 'cancelled', 'expired'].reduce((n, k) => n + (view.counts[k] ?? 0), 0);
      let ledgerRows = 0;
      const ledgerFrom = Date.now();
      while (Date.now() - ledgerFrom < LEDGER_WAIT_S * 1000) {
        [{ n: ledgerRows }] = await sql<{ n: number }[]>`select count(*)::int as n from ticket_outcomes where item_id = ${itemId}`;
        if (ledgerRows >= terminal) break;
        await sleep(250);
      }
      const ledgerAtS = (Date.now() - t0.getTime()) / 1000;
      const ledgerCheckedAt = Date.now();
      const floodStart = new Date(join1.startedAtMs);
      const [o] = await sql<{ n: number; users: number; first: Date | null; last: Date | null; flood: number }[]>`
        select count(*)::int as n, count(distinct user_id)::int as users, min(created_at) as first, max(created_at) as last,
          (count(*) filter (where created_at >= ${floodStart}))::int as flood
        from orders where item_id = ${itemId}`;
      const [{ n: twice }] = await sql<{ n: number }[]>`
        select count(*)::int as n from (select user_id from orders where item_id = ${itemId} group by user_id having count(*) > 1) x`;
      const [stock] = await sql<{ total: number; sold: number }[]>`select total, sold from item_stock where item_id = ${itemId}`;
      const ledger = Object.fromEntries(
        (await sql<{ status: string; n: number }[]>`select status, count(*)::int as n from ticket_outcomes where item_id = ${itemId} group by status`).map((r) => [r.status, r.n]),
      );
      const [{ n: orphanOrders }] = await sql<{ n: number }[]>`
        select count(*)::int as n from orders o left join ticket_outcomes t on t.ticket_id = o.ticket_id
        where o.item_id = ${itemId} and t.status is distinct from 'succeeded'`;

      // The seed users' tickets: the second join must name the same ticket; a success must name its order row.
      const seedViews = await pool(seedIds.length, SEED_CONCURRENCY, (i) => call(url, 'GET', `/v1/tickets/${seedIds[i]}`, null));
      const seedOrders = new Map<string, string>();
      seedViews.forEach((v, i) => {
        const orderId = (v.body.outcome as { result?: { orderId?: unknown } } | undefined)?.result?.orderId;
        if (v.body.state === 'succeeded' && orderId !== undefined) seedOrders.set(ticketRef(seedIds[i]), String(orderId)); // Postgres holds ticket refs
      });
      const rows = seedOrders.size
        ? await sql<{ id: string; ticket_id: string }[]>`select order_id::text as id, ticket_id from orders where ticket_id = any(${[...seedOrders.keys()]})`
        : [];
      const orderMismatch = [...seedOrders].filter(([t, id]) => !rows.some((r) => r.ticket_id === t && r.id === id)).length;
      let sameTicket = 0;
      let otherTicket = 0;
      let seedBadState = 0;
      seed2.forEach((r, i) => {
        const first = seed1[i].body.ticketId;
        if (r.status === 200 || r.status === 202) {
          if (r.body.ticketId === first && r.status === 200) sameTicket++;
          else otherTicket++;
        } else if (r.status === 410) {
          // Only right if the first ticket did not succeed (rejected sold_out) or never existed.
          const fv = seedViews[seedIds.indexOf(first as string)];
          if (fv && fv.body.state === 'succeeded') seedBadState++;
        } else seedBadState++;
      });

      const seedStatus1 = sumStatus(...seed1.map((r) => ({ [String(r.status)]: 1 })));
      const seedStatus2 = sumStatus(...seed2.map((r) => ({ [String(r.status)]: 1 })));
      const pass1 = sumStatus(seedStatus1, join1.status);
      const pass2 = sumStatus(seedStatus2, join2.status);
      const accepted = (pass1['202'] ?? 0) + (pass2['202'] ?? 0);
      const ticketsAtServer = Object.values(view.counts).reduce((a, b) => a + b, 0);
      const ordersPerS = o.first && o.last && o.last > o.first ? o.n / ((o.last.getTime() - o.first.getTime()) / 1000) : NaN;
      const floodS = o.last ? (o.last.getTime() - floodStart.getTime()) / 1000 : NaN;
      const floodOrdersPerS = floodS > 0 ? o.flood / floodS : NaN;
      const sellOutS = o.last ? (o.last.getTime() - t0.getTime()) / 1000 : NaN;
      const unexpectedJoin = Object.entries(sumStatus(pass1, pass2)).filter(([c]) => !['200', '202', '410'].includes(c));
      const unexpectedPoll = Object.entries(sumStatus(poll1R?.status, poll2R?.status)).filter(([c]) => c !== '200');
      const fiveXX = Object.entries(sumStatus(pass1, pass2, poll1R?.status, poll2R?.status)).reduce((n, [c, k]) => (c.startsWith('5') ? n + k : n), 0);
      const connErrors = join1.errors + join2.errors + join1.timeouts + join2.timeouts + (poll1R ? poll1R.errors + poll1R.timeouts : 0) + (poll2R ? poll2R.errors + poll2R.timeouts : 0);
      const status410 = (pass1['410'] ?? 0) + (pass2['410'] ?? 0);

      const checks: Check[] = [
        { name: 'oversell: orders − stock', value: `${fmtInt(o.n)} − ${fmtInt(STOCK)} = ${fmtInt(o.n - STOCK)}`, expected: '0', ok: o.n === STOCK },
        { name: 'item_stock (total, sold)', value: stock ? `${fmtInt(stock.total)}, ${fmtInt(stock.sold)}` : 'no row', expected: `${fmtInt(STOCK)}, ${fmtInt(STOCK)}`, ok: !!stock && Number(stock.sold) === STOCK && Number(stock.total) === STOCK },
        { name: 'distinct users in orders = orders', value: `${fmtInt(o.users)} = ${fmtInt(o.n)}`, expected: 'equal', ok: o.users === o.n },
        { name: 'users with two orders', value: fmtInt(twice), expected: '0', ok: twice === 0 },
        { name: 'item view: succeeded = orders', value: `${fmtInt(view.counts.succeeded ?? 0)} = ${fmtInt(o.n)}`, expected: 'equal', ok: (view.counts.succeeded ?? 0) === o.n },
        { name: 'item view after the sale', value: `state ${view.state}, remaining ${view.remaining}, ${JSON.stringify(view.counts)}`, expected: 'sold_out, 0, nothing admitted', ok: view.state === 'sold_out' && view.remaining === 0 && (view.counts.admitted ?? 0) === 0 },
        { name: 'every accepted ticket counted (Σ counts = 202 answers)', value: `${fmtInt(ticketsAtServer)} = ${fmtInt(accepted)}`, expected: 'equal', ok: ticketsAtServer === accepted },
        { name: `tickets still waiting / admitted ${settleS === null ? `${SETTLE_WAIT_S} s after the last join` : `after the joins (checked ${settleS.toFixed(1)} s after the first join)`}`, value: `${fmtInt(view.counts.waiting ?? 0)} / ${fmtInt(view.counts.admitted ?? 0)}`, expected: '0 / 0', ok: (view.counts.waiting ?? 0) === 0 && (view.counts.admitted ?? 0) === 0 },
        { name: 'tickets failed', value: fmtInt(view.counts.failed ?? 0), expected: '0', ok: (view.counts.failed ?? 0) === 0 },
        { name: `outcome ledger (ticket_outcomes) rows by status, ${ledgerAtS.toFixed(1)} s after the first join`, value: `${JSON.stringify(ledger)} = ${fmtInt(ledgerRows)}`, expected: `${fmtInt(terminal)} rows (terminal tickets), succeeded = orders`, ok: ledgerRows === terminal && (ledger.succeeded ?? 0) === o.n },
        { name: 'orders without a succeeded outcome row (same moment)', value: fmtInt(orphanOrders), expected: '0', ok: orphanOrders === 0 },
        { name: 'pass 2 (duplicates): new tickets (202)', value: fmtInt(pass2['202'] ?? 0), expected: '0', ok: (pass2['202'] ?? 0) === 0 },
        { name: 'pass 2: 200 answers ≥ buyers (every buyer gets its ticket back)', value: `${fmtInt(pass2['200'] ?? 0)} vs ${fmtInt(o.n)} orders`, expected: '≥', ok: (pass2['200'] ?? 0) >= o.n },
        { name: `seed users (${fmtInt(SEED)}): second join = 200 with the same ticket`, value: `${fmtInt(sameTicket)} same, ${fmtInt(otherTicket)} other, ${fmtInt(seedStatus2['410'] ?? 0)} × 410, ${fmtInt(seedBadState)} inconsistent`, expected: 'no other, no inconsistent', ok: otherTicket === 0 && seedBadState === 0 },
        { name: 'seed tickets: outcome.result.orderId = the order row of that ticket', value: `${fmtInt(seedOrders.size - orderMismatch)} of ${fmtInt(seedOrders.size)} succeeded`, expected: 'all', ok: orderMismatch === 0 && seedOrders.size > 0 },
        { name: '410 sold_out answers (pass 1 + pass 2)', value: `${fmtInt(pass1['410'] ?? 0)} + ${fmtInt(pass2['410'] ?? 0)} = ${fmtInt(status410)}`, expected: 'counted', ok: true },
        { name: 'join answers other than 200/202/410', value: unexpectedJoin.length ? statusCell(Object.fromEntries(unexpectedJoin)) : '0', expected: '0', ok: unexpectedJoin.length === 0 },
        { name: 'poll answers other than 200', value: unexpectedPoll.length ? statusCell(Object.fromEntries(unexpectedPoll)) : '0', expected: '0', ok: unexpectedPoll.length === 0 },
        { name: '5xx answers; connection errors + timeouts', value: `${fmtInt(fiveXX)}; ${fmtInt(connErrors)}`, expected: '0; 0', ok: fiveXX === 0 && connErrors === 0 },
      ];
      const lats = await Promise.all(['join1', 'join2', 'poll1', 'poll2'].map((n) => readLat(lat(n))));
      const joinWallCheck = join1.durationS + join2.durationS;
      const viewAtOpen = lastOpen as ItemView | null;
      const ctl = viewAtOpen?.gate.controller;
      const gateSeen =
        gate.mode === 'auto'
          ? `largest in-flight cap seen while open: ${maxCap || 'n/a'}; last view before the sell-out: effective ${JSON.stringify(viewAtOpen?.gate.effective ?? null)}${ctl ? `, controller limit ${ctl.limit}, base ${ctl.baseMs} ms, p50 ${ctl.p50Ms} ms, p99 ${ctl.p99Ms} ms` : ''}`
          : `manual, maxInFlight ${gate.maxInFlight}${ctl ? `; the controller (in shadow) said limit ${ctl.limit}, p50 ${ctl.p50Ms} ms, p99 ${ctl.p99Ms} ms` : ''}`;
      // Orders over time as the item view counted them: one point per second until the sell-out.
      const points: string[] = [];
      let prev = { s: 0, succeeded: 0 };
      for (const p of timeline) {
        if (p.s - prev.s < 1 && p !== timeline.at(-1)) continue;
        if (prev.succeeded >= STOCK) break;
        points.push(`${p.s.toFixed(1)} s: ${fmtInt(p.succeeded)} (+${fmtInt((p.succeeded - prev.succeeded) / (p.s - prev.s))}/s, ${fmtInt(p.waiting)} waiting, ${fmtInt(p.admitted)} admitted, cap ${p.cap ?? '–'})`);
        prev = p;
      }
      // Per half second from the join load's first request: orders (created_at) and tickets that
      // joined (the ledger's joined_at), until the last order.
      const halves = await sql<{ h: number; orders: number; joins: number }[]>`
        with o as (select floor(extract(epoch from (created_at - ${floodStart}::timestamptz)) * 2)::int as h, count(*)::int as n
                   from orders where item_id = ${itemId} and created_at >= ${floodStart} group by 1),
             j as (select floor(extract(epoch from (joined_at - ${floodStart}::timestamptz)) * 2)::int as h, count(*)::int as n
                   from ticket_outcomes where item_id = ${itemId} and joined_at >= ${floodStart} group by 1)
        select o.h, o.n as orders, coalesce(j.n, 0) as joins from o left join j using (h) order by o.h`;
      const floodSteps = halves.map((x) => `${(x.h / 2).toFixed(1)}–${(x.h / 2 + 0.5).toFixed(1)} s: ${fmtInt(x.orders * 2)} orders/s, ${fmtInt(x.joins * 2)} new tickets/s`);
      if (watchErr) notes.push(`${label}: ${watchErr} item-view polls by the orchestrator failed.`);
      ctx.log(`  ${fmtInt(o.n)} orders; ${fmtInt(floodOrdersPerS)} orders/s during the flood, ${fmtInt(ordersPerS)} first → last order; sold out ${sellOutS.toFixed(2)} s after the first join; ${checks.filter((c) => !c.ok).length} check(s) failed`);
      return {
        label,
        itemId,
        ordersPerS,
        floodOrdersPerS,
        floodOrders: o.flood,
        floodS,
        sellOutS,
        orders: o.n,
        firstOrder: o.first,
        lastOrder: o.last,
        t0,
        soldOutSeenS: soldOutAt === null ? null : (soldOutAt - t0.getTime()) / 1000,
        settleS,
        join1,
        join2,
        poll1: poll1R,
        poll2: poll2R,
        joinP99: mergedP99(lats[0], lats[1]),
        pollP99: mergedP99(lats[2], lats[3]),
        joinsPerS: (join1.requests + join2.requests) / joinWallCheck,
        joinWallS,
        seedStatus1,
        seedStatus2,
        status410,
        gateSeen,
        ledger: { complete: ledgerRows === terminal && (ledger.succeeded ?? 0) === o.n, terminal, checkedAt: ledgerCheckedAt },
        timeline: points,
        floodSteps,
        view,
        checks,
        notes,
      };
    } finally {
      await sql.end({ timeout: 5 });
    }
  } finally {
    clearInterval(watch);
    if (poll1 && !poll1Stopped) await poll1.stop().catch(() => null);
  }
}

interface DrainOut {
  tickets: number;
  orders: number;
  ordersPerS: number;
  openToLastS: number;
  timeline: string[];
  checks: Check[];
}

/**
 * Diagnostic: how fast the daemon sells when nothing else is asked of it. The line is filled with
 * 1.2 × stock users behind a closed gate, then the gate is set to `auto` and the stock sold.
 */
async function runDrain(ctx: BenchContext, daemon: Server, itemId: string): Promise<DrainOut> {
  const url = daemon.url;
  const n = Math.ceil(STOCK * 1.2);
  const put = await call(url, 'PUT', `/v1/items/${itemId}`, OPERATOR_KEY, { handler: 'seckill', config: { stock: STOCK }, gate: { mode: 'closed' } });
  if (put.status !== 201 && put.status !== 200) throw new Error(`PUT item ${itemId}: ${put.status} ${JSON.stringify(put.body)}`);
  ctx.log(`drain "${itemId}": ${fmtInt(n)} users join behind a closed gate, then the gate opens (auto)`);
  const fill = await runLoad(ctx.tmpDir, { url, connections: CONNECTIONS, headers: auth, amount: n, gen: { kind: 'join', path: `/v1/items/${itemId}/tickets`, userPrefix: 'd-' } });
  const tickets = fill.status['202'] ?? 0;
  const open = new Date();
  const patch = await call(url, 'PATCH', `/v1/items/${itemId}/gate`, OPERATOR_KEY, { mode: 'auto' });
  if (patch.status !== 200) throw new Error(`PATCH gate ${itemId}: ${patch.status} ${JSON.stringify(patch.body)}`);
  const timeline: string[] = [];
  let prev = { s: 0, succeeded: 0 };
  let view = await itemView(url, itemId);
  let nextPoint = 1;
  while (Date.now() - open.getTime() < SELL_OUT_WAIT_S * 1000) {
    view = await itemView(url, itemId);
    const t = (Date.now() - open.getTime()) / 1000;
    const succeeded = view.counts.succeeded ?? 0;
    const done = view.state === 'sold_out' && (view.counts.waiting ?? 0) === 0 && (view.counts.admitted ?? 0) === 0;
    if (t >= nextPoint || done) {
      timeline.push(`${t.toFixed(1)} s: ${fmtInt(succeeded)} (+${fmtInt((succeeded - prev.succeeded) / (t - prev.s))}/s, ${fmtInt(view.counts.admitted ?? 0)} admitted, cap ${view.gate.effective.maxInFlight ?? '–'})`);
      prev = { s: t, succeeded };
      nextPoint = Math.floor(t) + 1;
    }
    if (done) break;
    await sleep(WATCH_MS);
  }
  const sql = postgres(ctx.databaseUrl, { max: 1, onnotice: () => {} });
  try {
    const [o] = await sql<{ n: number; users: number; first: Date | null; last: Date | null }[]>`
      select count(*)::int as n, count(distinct user_id)::int as users, min(created_at) as first, max(created_at) as last from orders where item_id = ${itemId}`;
    const [stock] = await sql<{ total: number; sold: number }[]>`select total, sold from item_stock where item_id = ${itemId}`;
    const ordersPerS = o.first && o.last && o.last > o.first ? o.n / ((o.last.getTime() - o.first.getTime()) / 1000) : NaN;
    const openToLastS = o.last ? (o.last.getTime() - open.getTime()) / 1000 : NaN;
    ctx.log(`  ${fmtInt(o.n)} orders at ${fmtInt(ordersPerS)} orders/s; last order ${openToLastS.toFixed(2)} s after the gate opened`);
    const checks: Check[] = [
      { name: 'drain: tickets in the line before the gate opened', value: `${fmtInt(tickets)} (${statusCell(fill.status)})`, expected: fmtInt(n), ok: tickets === n },
      { name: 'drain: orders − stock; item_stock.sold; distinct users', value: `${fmtInt(o.n - STOCK)}; ${stock ? fmtInt(stock.sold) : 'no row'}; ${fmtInt(o.users)}`, expected: `0; ${fmtInt(STOCK)}; ${fmtInt(STOCK)}`, ok: o.n === STOCK && !!stock && Number(stock.sold) === STOCK && o.users === o.n },
      { name: 'drain: item view at the end', value: `state ${view.state}, ${JSON.stringify(view.counts)}`, expected: `sold_out, ${fmtInt(STOCK)} succeeded, ${fmtInt(n - STOCK)} rejected`, ok: view.state === 'sold_out' && (view.counts.succeeded ?? 0) === STOCK && (view.counts.rejected ?? 0) === tickets - STOCK },
    ];
    return { tickets, orders: o.n, ordersPerS, openToLastS, timeline, checks };
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** The daemon's warning lines (level 40), counted by message. */
async function daemonWarnings(file: string): Promise<{ total: number; top: [string, number][] }> {
  const by = new Map<string, number>();
  let total = 0;
  const text = await readFile(file, 'utf8').catch(() => '');
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const j = JSON.parse(line) as { level?: number; msg?: string; err?: unknown };
      if (j.level !== 40) continue;
      total++;
      const key = `${j.msg ?? ''}${j.err ? `: ${String(typeof j.err === 'string' ? j.err : JSON.stringify(j.err)).slice(0, 160)}` : ''}`;
      by.set(key, (by.get(key) ?? 0) + 1);
    } catch {
      /* not JSON */
    }
  }
  return { total, top: [...by].sort((a, b) => b[1] - a[1]).slice(0, 5) };
}

interface SyncOut {
  orders: number;
  ordersPerS: number;
  wallOrdersPerS: number;
  sellOutS: number;
  attempts: number;
  errors: number;
  distinctUsers: number;
  stockLeft: number;
  clientCores: number;
  firstError: string | null;
}

/** The synchronous design: each buyer one transaction on a pool of 64 connections, no queue. */
async function runSync(ctx: BenchContext): Promise<SyncOut> {
  const sql = postgres(ctx.databaseUrl, { max: SYNC_CONNECTIONS, onnotice: () => {} });
  const item = 'sync';
  try {
    await sql`create table flash_sync_stock (item text primary key, n integer not null check (n >= 0))`;
    await sql`create table flash_sync_orders (order_id bigserial primary key, item text not null, user_id text not null,
      created_at timestamptz not null default now(), unique (item, user_id))`;
    await sql`insert into flash_sync_stock (item, n) values (${item}, ${STOCK})`;
    // Open all connections before the clock starts.
    await Promise.all(Array.from({ length: SYNC_CONNECTIONS }, () => sql`select pg_sleep(0.05)`));
    ctx.log(`synchronous baseline: ${fmtInt(SYNC_ATTEMPTS)} buyers for ${fmtInt(STOCK)} units on ${SYNC_CONNECTIONS} connections`);
    let next = 0;
    let errors = 0;
    let firstError: string | null = null;
    const cpu0 = process.cpuUsage();
    const t0 = Date.now();
    let lastSold = t0;
    await Promise.all(
      Array.from({ length: SYNC_CONNECTIONS }, async () => {
        while (next < SYNC_ATTEMPTS) {
          const i = next++;
          try {
            const sold = await sql.begin(async (tx) => {
              const r = await tx`update flash_sync_stock set n = n - 1 where item = ${item} and n > 0`;
              if (r.count === 0) return false;
              await tx`insert into flash_sync_orders (item, user_id) values (${item}, ${`s-${i}`})`;
              return true;
            });
            if (sold) lastSold = Date.now();
          } catch (e) {
            errors++;
            firstError ??= String(e);
          }
        }
      }),
    );
    const cpu = process.cpuUsage(cpu0);
    const wallS = (Date.now() - t0) / 1000;
    const [o] = await sql<{ n: number; users: number; first: Date | null; last: Date | null }[]>`
      select count(*)::int as n, count(distinct user_id)::int as users, min(created_at) as first, max(created_at) as last from flash_sync_orders where item = ${item}`;
    const [{ n: left }] = await sql<{ n: number }[]>`select n from flash_sync_stock where item = ${item}`;
    const ordersPerS = o.first && o.last && o.last > o.first ? o.n / ((o.last.getTime() - o.first.getTime()) / 1000) : NaN;
    const out: SyncOut = {
      orders: o.n,
      ordersPerS,
      wallOrdersPerS: o.n / ((lastSold - t0) / 1000),
      sellOutS: (lastSold - t0) / 1000,
      attempts: SYNC_ATTEMPTS,
      errors,
      distinctUsers: o.users,
      stockLeft: left,
      clientCores: (cpu.user + cpu.system) / 1e6 / wallS,
      firstError,
    };
    ctx.log(`  ${fmtInt(o.n)} orders at ${fmtInt(ordersPerS)} orders/s (by created_at; ${fmtInt(out.wallOrdersPerS)} by the client's clock), sold out after ${out.sellOutS.toFixed(2)} s, ${errors} errors`);
    return out;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/**
 * A smaller sale on an item of its own, not measured: V8 compiles the daemon's hot paths and its
 * pools open. Its join load runs in the same generator process as the measured sale's first pass,
 * which waits for a go file: the generator's own JIT warm-up (its first second ran at about half
 * the rate of the next ones) is not counted against the daemon either.
 */
function warmUp(ctx: BenchContext, daemon: Server) {
  const itemId = 'flash-warmup';
  const doneFile = path.join(ctx.tmpDir, 'warmup.done');
  const goFile = path.join(ctx.tmpDir, 'sale.go');
  const spec: LoadSpec = {
    url: daemon.url,
    connections: CONNECTIONS,
    headers: auth,
    amount: 2 * WARMUP,
    gen: { kind: 'join', path: `/v1/items/${itemId}/tickets`, userPrefix: 'w-' },
    doneFile,
  };
  return {
    spec,
    goFile,
    async define() {
      const put = await call(daemon.url, 'PUT', `/v1/items/${itemId}`, OPERATOR_KEY, { handler: 'seckill', config: { stock: WARMUP }, gate: { mode: 'auto' } });
      if (put.status !== 201 && put.status !== 200) throw new Error(`PUT item ${itemId}: ${put.status} ${JSON.stringify(put.body)}`);
    },
    /** Waits for the warm-up load, then for its sale to end and its outcome ledger to be written. */
    async settled(from: number, generator: Promise<unknown>): Promise<void> {
      let failed: unknown = null;
      generator.catch((err) => (failed = err));
      while (!existsSync(doneFile)) {
        if (failed) throw failed;
        if (Date.now() - from > SELL_OUT_WAIT_S * 1000) throw new Error('the warm-up load did not finish');
        await sleep(50);
      }
      let view = await itemView(daemon.url, itemId);
      while (Date.now() - from < SELL_OUT_WAIT_S * 1000 && ((view.counts.admitted ?? 0) > 0 || (view.counts.waiting ?? 0) > 0)) {
        await sleep(250);
        view = await itemView(daemon.url, itemId);
      }
      const terminal = ['succeeded', 'rejected', 'failed', 'cancelled', 'expired'].reduce((n, k) => n + (view.counts[k] ?? 0), 0);
      const sql = postgres(ctx.databaseUrl, { max: 1, onnotice: () => {} });
      try {
        for (let rows = 0; Date.now() - from < (SELL_OUT_WAIT_S + LEDGER_RECHECK_S) * 1000; await sleep(250)) {
          [{ n: rows }] = await sql<{ n: number }[]>`select count(*)::int as n from ticket_outcomes where item_id = ${itemId}`;
          if (rows >= terminal) break;
        }
      } finally {
        await sql.end({ timeout: 5 });
      }
      ctx.log(`warm-up sale on "${itemId}": ${fmtInt(view.counts.succeeded ?? 0)} orders, over in ${fmtS(Date.now() - from)}`);
    },
    note: (load: LoadResult) =>
      `Warm-up before the measured sale (not counted): a ${fmtInt(WARMUP)}-unit seckill sale on item \`${itemId}\`, ${fmtInt(2 * WARMUP)} new users joining at ${fmtInt(load.rps)}/s, sent by the generator process that then sends the measured sale's first pass.`,
  };
}

export async function flashSaleScenario(ctx: BenchContext): Promise<ScenarioOutput> {
  const redisPid = Number(/^process_id:(\d+)/m.exec(await ctx.redis.info('server'))?.[1]) || undefined;
  const daemon = await startDaemon(ctx);
  ctx.log(`daemon ready in ${fmtS(daemon.startMs)}`);
  const reserveShare = Number(process.env.BENCH_FLASH_RESERVE ?? 0);
  if (reserveShare > 0) {
    try {
      return { markdown: await runReservedSale(ctx, daemon, reserveShare) };
    } finally {
      await daemon.child.stop();
    }
  }
  const sales: SaleOut[] = [];
  const notes: string[] = [];
  sales.push(await runSale(ctx, daemon, 'flash-auto', { mode: 'auto' }, redisPid, WARMUP > 0));
  if (MANUAL_CAP > 0) {
    if (ctx.elapsedS() + 1.2 * sales[0].joinWallS + 30 < ctx.budgetS) sales.push(await runSale(ctx, daemon, 'flash-manual', { mode: 'manual', maxInFlight: MANUAL_CAP }, redisPid));
    else notes.push(`The second sale (manual gate, maxInFlight ${MANUAL_CAP}) was skipped: it would not fit the run's time budget (${ctx.budgetS} s).`);
  }
  let drain: DrainOut | null = null;
  if (DRAIN) {
    if (ctx.elapsedS() + 60 < ctx.budgetS) drain = await runDrain(ctx, daemon, 'flash-drain');
    else notes.push(`The drain diagnostic was skipped: it would not fit the run's time budget (${ctx.budgetS} s).`);
  }
  // The outcome ledger again for the sales where it lagged, while the daemon still runs.
  for (const s of sales.filter((x) => !x.ledger.complete)) {
    const sql = postgres(ctx.databaseUrl, { max: 1, onnotice: () => {} });
    try {
      let rows = 0;
      let succ = 0;
      do {
        [{ n: rows, s: succ }] = await sql<{ n: number; s: number }[]>`
          select count(*)::int as n, (count(*) filter (where status = 'succeeded'))::int as s from ticket_outcomes where item_id = ${s.itemId}`;
        if (rows >= s.ledger.terminal) break;
        await sleep(500);
      } while (Date.now() - s.ledger.checkedAt < LEDGER_RECHECK_S * 1000);
      const at = (Date.now() - s.t0.getTime()) / 1000;
      const ok = rows === s.ledger.terminal && succ === s.orders;
      s.checks.push({ name: `outcome ledger again, ${at.toFixed(1)} s after the first join (before the daemon stops)`, value: `${fmtInt(rows)} rows, ${fmtInt(succ)} succeeded`, expected: `${fmtInt(s.ledger.terminal)} rows, ${fmtInt(s.orders)} succeeded`, ok });
      ctx.log(`  ${s.label}: outcome ledger ${fmtInt(rows)} of ${fmtInt(s.ledger.terminal)} rows at ${at.toFixed(1)} s`);
    } finally {
      await sql.end({ timeout: 5 });
    }
  }
  const problems = daemon.child.problems;
  await daemon.child.stop();
  const warns = await daemonWarnings(path.join(ctx.tmpDir, 'daemon.log'));
  const sync = await runSync(ctx);

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
  const checkTables = sales.map((s) => [`**Checks — ${s.label}**`, '', mdTable(['check', 'value', 'expected', 'ok'], s.checks.map((c) => [c.name, c.value, c.expected, c.ok ? 'yes' : '**NO**'])), ''].join('\n'));
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
  if (drain) {
    const failed = drain.checks.filter((c) => !c.ok);
    if (failed.length) notes.push(`drain diagnostic: ${failed.length} check(s) failed: ${failed.map((c) => `${c.name} (${c.value})`).join('; ')}.`);
  }
  if (warns.total) notes.push(`The daemon logged ${fmtInt(warns.total)} warning line(s) (pino level 40): ${warns.top.map(([m, n]) => `${n} × \`${m}\``).join('; ')}.`);
  if (problems.length) notes.push(`The daemon logged ${problems.length} error line(s); first: \`${problems[0].slice(0, 400)}\``);
  if (USERS !== 100_000 || STOCK !== 10_000) notes.push(`Not the full-size sale: ${fmtInt(STOCK)} units, ${fmtInt(USERS)} users (the issue's sale is 10,000 units, 100,000 users × 2 joins).`);

  const method = [
    `One daemon (src/main.ts with its in-process dispatcher and BullMQ workers, LOG_LEVEL=warn) on loopback, Redis and Postgres local; item \`${main.itemId}\` = \`{"handler":"seckill","config":{"stock":${STOCK}}}\`${sales.length > 1 ? `, then \`${sales[1].itemId}\` with the manual gate` : ''}.`,
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
    ...(drain ? ['**Checks — drain diagnostic**', '', mdTable(['check', 'value', 'expected', 'ok'], drain.checks.map((c) => [c.name, c.value, c.expected, c.ok ? 'yes' : '**NO**'])), ''] : []),
    syncCheck,
    '',
    '### Method',
    '',
    ...method.map((m) => `- ${m}`),
    '',
    '### Notes',
    '',
    ...(notes.length ? notes.map((n) => `- ${n}`) : ['- Every target met; every check passed.']),
  ].join('\n');
  return { markdown };
}
