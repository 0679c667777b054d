import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import { call, defineItem, itemView, OPERATOR_KEY } from '../../lib/api.js';
import type { BenchContext, Server } from '../../lib/harness.js';
import { runLoad } from '../../lib/load.js';
import { statusCell, type Check } from '../../lib/report.js';
import { fmtInt } from '../../lib/stats.js';
import { auth, CONNECTIONS, SELL_OUT_WAIT_S, STOCK, WATCH_MS } from './settings.js';

export interface DrainOut {
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
export async function runDrain(ctx: BenchContext, daemon: Server, itemId: string): Promise<DrainOut> {
  const url = daemon.url;
  const n = Math.ceil(STOCK * 1.2);
  await defineItem(url, itemId, { handler: 'seckill', config: { stock: STOCK }, gate: { mode: 'closed' } });
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