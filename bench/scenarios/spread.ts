/**
 * The `spread` scenario: does a flash sale cost more when its stock is spread over many items? The
 * same sale — BENCH_STOCK units (default 10,000), BENCH_USERS users (default 100,000) who each join
 * twice, user n always on item n mod K — run with its stock as K seckill items of stock/K each, for
 * each K of BENCH_SPREAD_ITEMS (default 1,10,50,200), each K on a fresh daemon with its own
 * database and Redis prefix, after a warm-up sale on that daemon. Orders/s (first join → last
 * order) and accepted joins/s per K, and each K's orders/s as a ratio to K = 1 (issue #13: ≥ 0.8 at
 * 200 items). Checks: every unit sold once, nobody holds two orders, no item oversold.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import { defineItem, itemView, pool, SERVICE_KEY } from '../lib/api.js';
import { startDaemon, type BenchContext, type ScenarioOutput, type Server } from '../lib/harness.js';
import { createScratchDb, dropScratchDb } from '../lib/infra.js';
import { runLoads } from '../lib/load.js';
import type { LoadSpec } from '../lib/load-spec.js';
import { checkTable, cpuCell, mdTable, type Check } from '../lib/report.js';
import { fmtInt } from '../lib/stats.js';

const STOCK = Number(process.env.BENCH_STOCK ?? 10_000);
const USERS = Number(process.env.BENCH_USERS ?? 100_000);
const SPREADS = (process.env.BENCH_SPREAD_ITEMS ?? '1,10,50,200').split(',').map(Number);
/** Rounds of every K in turn (1, 10, …, 200, 1, 10, …): one item's figure alone varied by ±20% over a day's runs. */
const ROUNDS = Math.max(1, Number(process.env.BENCH_SPREAD_ROUNDS ?? 1));
const WARM_STOCK = 2_000;
const WARM_JOINS = 6_000;
const CONNECTIONS = 100;
const SETTLE_S = 60;
const auth = { authorization: `Bearer ${SERVICE_KEY}` };

interface SpreadResult {
  k: number;
  orders: number;
  ordersPerS: number;
  acceptedPerS: number;
  joinsPerS: number;
  sellS: number;
  /** Cores during pass 1: the daemon, Redis, the load generator, the rest (Postgres, mostly). */
  cpu: Record<string, number>;
  /** Orders per second since the first join (`s: n`), and items by the second their last order came. */
  timeline: string;
  lastOrders: string;
  /** When the first ticket was admitted and sold, and admission → sale for the orders. */
  lag: string;
  /** How the tickets ended (the outcome ledger, a few seconds after the lines drained). */
  ends: string;
  checks: Check[];
}

/** A daemon of its own (database, Redis prefix) for one K, removed afterwards. */
async function withDaemon<T>(ctx: BenchContext, k: number, round: number, f: (d: Server, db: string) => Promise<T>): Promise<T> {
  const dbName = `${ctx.prefix.replace(/\W/g, '_')}spread${k}r${round}`;
  const db = await createScratchDb(dbName);
  const daemon = await startDaemon(ctx, { DATABASE_URL: db, FLOODGATE_REDIS_PREFIX: `${ctx.prefix}k${k}r${round}:` });
  try {
    return await f(daemon, db);
  } finally {
    await daemon.child.stop();
    await dropScratchDb(dbName).catch(() => {});
  }
}

/** Waits until every listed item has no ticket waiting or admitted (or SETTLE_S passed). */
async function settled(url: string, items: string[]): Promise<boolean> {
  const until = Date.now() + SETTLE_S * 1000;
  for (let open = items; open.length && Date.now() < until; await sleep(250)) {
    const views = await pool(open.length, 16, (i) => itemView(url, open[i]));
    open = open.filter((_, i) => (views[i].counts.waiting ?? 0) + (views[i].counts.admitted ?? 0) > 0);
    if (!open.length) return true;
  }
  return false;
}

async function saleOver(ctx: BenchContext, k: number, round: number): Promise<SpreadResult> {
  return withDaemon(ctx, k, round, async (daemon, db) => {
    const url = daemon.url;
    const spec = (paths: string[], userPrefix: string, amount: number): LoadSpec => ({
      url,
      connections: CONNECTIONS,
      headers: auth,
      amount,
      gen: { kind: 'join', path: paths[0], paths, userPrefix },
      watchPids: { server: daemon.child.proc.pid },
    });
    // Warm-up: V8 compiles the hot paths, the pools open (as in a daemon that has been running).
    await defineItem(url, 'warm', { handler: 'seckill', config: { stock: WARM_STOCK }, gate: { mode: 'auto' } });
    await runLoads(ctx.tmpDir, [spec(['/v1/items/warm/tickets'], 'w-', WARM_JOINS)]);
    await settled(url, ['warm']);

    const items = Array.from({ length: k }, (_, i) => `sale-${i}`);
    const per = Math.floor(STOCK / k);
    await pool(k, 16, (i) => defineItem(url, items[i], { handler: 'seckill', config: { stock: per }, gate: { mode: 'auto' } }));
    const paths = items.map((id) => `/v1/items/${id}/tickets`);
    const [pass1, pass2] = await runLoads(ctx.tmpDir, [spec(paths, 'u-', USERS), spec(paths, 'u-', USERS)]);
    const done = await settled(url, items);
    const sql = postgres(db, { max: 1, onnotice: () => {} });
    try {
      const [o] = await sql<{ n: number; users: number; last: Date | null }[]>`
        select count(*)::int as n, count(distinct user_id)::int as users, max(created_at) as last from orders where item_id like 'sale-%'`;
      const over = await sql<{ item_id: string; n: number }[]>`
        select item_id, count(*)::int as n from orders where item_id like 'sale-%' group by item_id having count(*) > ${per}`;
      const sellS = o.last ? (o.last.getTime() - pass1.startedAtMs) / 1000 : NaN;
      await sleep(3000); // the outcome ledger writes in the background
      const [lag] = await sql<{ first_adm: number | null; first_end: number | null; p50: number | null; p99: number | null }[]>`
        select extract(epoch from min(admitted_at))::float8 * 1000 - ${pass1.startedAtMs} as first_adm,
          extract(epoch from min(finished_at))::float8 * 1000 - ${pass1.startedAtMs} as first_end,
          percentile_cont(0.5) within group (order by extract(epoch from finished_at - admitted_at) * 1000) as p50,
          percentile_cont(0.99) within group (order by extract(epoch from finished_at - admitted_at) * 1000) as p99
        from ticket_outcomes where item_id like 'sale-%' and status = 'succeeded'`;
      const ends = await sql<{ status: string; reason: string | null; admitted: boolean; n: number }[]>`
        select status, reason, admitted_at is not null as admitted, count(*)::int as n from ticket_outcomes where item_id like 'sale-%' group by 1, 2, 3 order by 4 desc`;
      const perSecond = await sql<{ s: number; n: number }[]>`
        select floor(extract(epoch from created_at) - ${pass1.startedAtMs / 1000})::int as s, count(*)::int as n
        from orders where item_id like 'sale-%' group by 1 order by 1`;
      const soldOut = await sql<{ s: number; n: number }[]>`
        select floor(extract(epoch from last) - ${pass1.startedAtMs / 1000})::int as s, count(*)::int as n
        from (select max(created_at) as last from orders where item_id like 'sale-%' group by item_id) x group by 1 order by 1`;
      const accepted = pass1.status['202'] ?? 0;
      const r: SpreadResult = {
        k,
        orders: o.n,
        ordersPerS: o.n / sellS,
        acceptedPerS: accepted / pass1.durationS,
        joinsPerS: (pass1.requests + pass2.requests) / (pass1.durationS + pass2.durationS),
        sellS,
        cpu: pass1.cpu,
        timeline: perSecond.map((x) => `${x.s}: ${x.n}`).join(', '),
        lastOrders: soldOut.map((x) => `${x.s}: ${x.n}`).join(', '),
        lag: lag.first_adm === null ? '' : `first admitted ${(lag.first_adm / 1000).toFixed(2)} s, first sold ${(lag.first_end! / 1000).toFixed(2)} s after the first join; admitted → sold p50 ${lag.p50!.toFixed(0)} ms, p99 ${lag.p99!.toFixed(0)} ms`,
        ends: ends.map((e) => `${e.status}${e.reason ? ` (${e.reason})` : ''}${e.admitted ? ', admitted' : ''}: ${fmtInt(e.n)}`).join('; '),
        checks: [
          { name: `${k} item(s): units sold`, value: fmtInt(o.n), expected: fmtInt(per * k), ok: o.n === per * k },
          { name: `${k} item(s): buyers with more than one order`, value: fmtInt(o.n - o.users), expected: '0', ok: o.n === o.users },
          { name: `${k} item(s): items oversold`, value: fmtInt(over.length), expected: '0', ok: over.length === 0 },
          { name: `${k} item(s): every line drained within ${SETTLE_S} s`, value: done ? 'yes' : 'no', expected: 'yes', ok: done },
        ],
      };
      ctx.log(`${k} item(s) of ${fmtInt(per)}: ${fmtInt(o.n)} orders in ${sellS.toFixed(2)} s = ${fmtInt(r.ordersPerS)} orders/s; accepted joins ${fmtInt(r.acceptedPerS)}/s; pass 1 ${JSON.stringify(pass1.status)}, pass 2 ${JSON.stringify(pass2.status)}`);
      return r;
    } finally {
      await sql.end({ timeout: 5 });
    }
  });
}

export async function spreadScenario(ctx: BenchContext): Promise<ScenarioOutput> {
  const runs: SpreadResult[] = [];
  for (let round = 0; round < ROUNDS; round++) for (const k of SPREADS) runs.push(await saleOver(ctx, k, round));
  // Per K, the round with the median orders/s (the table's figures), and every round's orders/s.
  const byK = SPREADS.map((k) => runs.filter((r) => r.k === k).sort((a, b) => a.ordersPerS - b.ordersPerS));
  const results = byK.map((rs) => rs[Math.floor((rs.length - 1) / 2)]);
  const roundsOf = (k: number) => byK[SPREADS.indexOf(k)].map((r) => fmtInt(r.ordersPerS)).join(', ');
  const one = results.find((r) => r.k === 1);
  const rows = results.map((r) => [
    String(r.k),
    fmtInt(Math.floor(STOCK / r.k)),
    fmtInt(r.orders),
    r.sellS.toFixed(2),
    ROUNDS > 1 ? `${fmtInt(r.ordersPerS)} (${roundsOf(r.k)})` : fmtInt(r.ordersPerS),
    one ? (r.ordersPerS / one.ordersPerS).toFixed(2) : '',
    fmtInt(r.acceptedPerS),
    fmtInt(r.joinsPerS),
    cpuCell(r),
  ]);
  const last = results.at(-1);
  const markdown = [
    `### One flash sale, its stock spread over 1 to ${Math.max(...SPREADS)} items`,
    '',
    mdTable(['items', 'units each', 'orders', 'first join → last order (s)', ROUNDS > 1 ? `orders/s: median (each of ${ROUNDS} rounds)` : 'orders/s', '÷ 1 item', 'new tickets/s (202s, pass 1)', 'joins/s (both passes)', 'cores in pass 1: daemon / Redis / load generator / other'], rows),
    '',
    one && last && last.k !== 1 ? `Orders/s with ${last.k} items ÷ with 1 item${ROUNDS > 1 ? ' (medians)' : ''}: **${(last.ordersPerS / one.ordersPerS).toFixed(2)}** (target ≥ 0.8).` : '',
    '',
    'Orders per second since the first join (second: orders), and items by the second their last order was made:',
    '',
    mdTable(['items', 'orders per second', 'items whose last order came in that second', 'admission → sale', 'how the tickets ended'], results.map((r) => [String(r.k), r.timeline, r.lastOrders, r.lag, r.ends])),
    '',
    checkTable(runs.flatMap((r) => r.checks)),
    '',
    '### Method',
    '',
    `- ${fmtInt(STOCK)} units, ${fmtInt(USERS)} users who each join twice (pass 2 answers 200 with the ticket held, or 410 once sold out), ${CONNECTIONS} connections, user n always on item n mod K; seckill items with the auto gate (self-limited by Postgres pressure). Each K on a fresh daemon (dist/floodgate.mjs) with its own database and Redis prefix, after a warm-up sale (${fmtInt(WARM_STOCK)} units, ${fmtInt(WARM_JOINS)} joins) on that daemon; ${ROUNDS} round(s) of every K in turn (BENCH_SPREAD_ROUNDS), the tables showing each K's median round. Orders/s: the orders in Postgres over the time from the first join of pass 1 to the last order.`,
  ].join('\n');
  return { markdown };
}
