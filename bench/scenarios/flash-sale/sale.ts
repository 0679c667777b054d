/** One measured sale: its load (sale-load.ts), then the facts, the figures and the checks read from it. */
import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import type { BenchContext, Server } from '../../lib/harness.js';
import type { Check } from '../../lib/report.js';
import { fmtInt } from '../../lib/stats.js';
import { analyseSale, type SaleAnalysis } from './sale-analysis.js';
import { saleChecks } from './sale-checks.js';
import { readSaleFacts } from './sale-facts.js';
import { runSaleLoad, type SaleLoad } from './sale-load.js';
import { LEDGER_RECHECK_S, type Gate } from './settings.js';

export type SaleOut = SaleLoad &
  SaleAnalysis & {
    orders: number;
    floodOrders: number;
    firstOrder: Date | null;
    lastOrder: Date | null;
    ledger: { complete: boolean; terminal: number; checkedAt: number };
    checks: Check[];
  };

export async function runSale(ctx: BenchContext, daemon: Server, itemId: string, gate: Gate, redisPid: number | undefined, warm = false): Promise<SaleOut> {
  const load = await runSaleLoad(ctx, daemon, itemId, gate, redisPid, warm);
  const sql = postgres(ctx.databaseUrl, { max: 2, onnotice: () => {} });
  try {
    const facts = await readSaleFacts(sql, load);
    const a = await analyseSale(load, facts);
    const checks = saleChecks(load, facts, a);
    const o = facts.orders;
    ctx.log(`  ${fmtInt(o.n)} orders; ${fmtInt(a.floodOrdersPerS)} orders/s during the flood, ${fmtInt(a.ordersPerS)} first → last order; sold out ${a.sellOutS.toFixed(2)} s after the first join; ${checks.filter((c) => !c.ok).length} check(s) failed`);
    return {
      ...load,
      ...a,
      orders: o.n,
      floodOrders: o.flood,
      firstOrder: o.first,
      lastOrder: o.last,
      ledger: { complete: facts.ledgerRows === facts.terminal && (facts.ledgerByStatus.succeeded ?? 0) === o.n, terminal: facts.terminal, checkedAt: facts.ledgerCheckedAt },
      checks,
    };
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** A sale whose outcome ledger lagged, checked again (up to LEDGER_RECHECK_S more) while the daemon still runs; adds a check. */
export async function recheckLedger(ctx: BenchContext, s: SaleOut): Promise<void> {
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
