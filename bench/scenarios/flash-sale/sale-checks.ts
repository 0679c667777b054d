/** The checks of one sale: nothing oversold or sold twice, every ticket accounted for and ended, the ledger complete, no unexpected answer. */
import { statusCell, type Check } from '../../lib/report.js';
import { fmtInt } from '../../lib/stats.js';
import type { SaleAnalysis } from './sale-analysis.js';
import type { SaleFacts } from './sale-facts.js';
import type { SaleLoad } from './sale-load.js';
import { SEED, SETTLE_WAIT_S, STOCK } from './settings.js';

export function saleChecks(load: SaleLoad, facts: SaleFacts, a: SaleAnalysis): Check[] {
  const o = facts.orders;
  return [
    { name: 'oversell: orders − stock', value: `${fmtInt(o.n)} − ${fmtInt(STOCK)} = ${fmtInt(o.n - STOCK)}`, expected: '0', ok: o.n === STOCK },
    { name: 'item_stock (total, sold)', value: facts.stock ? `${fmtInt(facts.stock.total)}, ${fmtInt(facts.stock.sold)}` : 'no row', expected: `${fmtInt(STOCK)}, ${fmtInt(STOCK)}`, ok: !!facts.stock && Number(facts.stock.sold) === STOCK && Number(facts.stock.total) === STOCK },
    { name: 'distinct users in orders = orders', value: `${fmtInt(o.users)} = ${fmtInt(o.n)}`, expected: 'equal', ok: o.users === o.n },
    { name: 'users with two orders', value: fmtInt(facts.usersWithTwoOrders), expected: '0', ok: facts.usersWithTwoOrders === 0 },
    { name: 'item view: succeeded = orders', value: `${fmtInt(load.view.counts.succeeded ?? 0)} = ${fmtInt(o.n)}`, expected: 'equal', ok: (load.view.counts.succeeded ?? 0) === o.n },
    { name: 'item view after the sale', value: `state ${load.view.state}, remaining ${load.view.remaining}, ${JSON.stringify(load.view.counts)}`, expected: 'sold_out, 0, nothing admitted', ok: load.view.state === 'sold_out' && load.view.remaining === 0 && (load.view.counts.admitted ?? 0) === 0 },
    { name: 'every accepted ticket counted (Σ counts = 202 answers)', value: `${fmtInt(a.ticketsAtServer)} = ${fmtInt(a.accepted)}`, expected: 'equal', ok: a.ticketsAtServer === a.accepted },
    { name: `tickets still waiting / admitted ${load.settleS === null ? `${SETTLE_WAIT_S} s after the last join` : `after the joins (checked ${load.settleS.toFixed(1)} s after the first join)`}`, value: `${fmtInt(load.view.counts.waiting ?? 0)} / ${fmtInt(load.view.counts.admitted ?? 0)}`, expected: '0 / 0', ok: (load.view.counts.waiting ?? 0) === 0 && (load.view.counts.admitted ?? 0) === 0 },
    { name: 'tickets failed', value: fmtInt(load.view.counts.failed ?? 0), expected: '0', ok: (load.view.counts.failed ?? 0) === 0 },
    { name: `outcome ledger (ticket_outcomes) rows by status, ${facts.ledgerAtS.toFixed(1)} s after the first join`, value: `${JSON.stringify(facts.ledgerByStatus)} = ${fmtInt(facts.ledgerRows)}`, expected: `${fmtInt(facts.terminal)} rows (terminal tickets), succeeded = orders`, ok: facts.ledgerRows === facts.terminal && (facts.ledgerByStatus.succeeded ?? 0) === o.n },
    { name: 'orders without a succeeded outcome row (same moment)', value: fmtInt(facts.orphanOrders), expected: '0', ok: facts.orphanOrders === 0 },
    { name: 'pass 2 (duplicates): new tickets (202)', value: fmtInt(a.pass2['202'] ?? 0), expected: '0', ok: (a.pass2['202'] ?? 0) === 0 },
    { name: 'pass 2: 200 answers ≥ buyers (every buyer gets its ticket back)', value: `${fmtInt(a.pass2['200'] ?? 0)} vs ${fmtInt(o.n)} orders`, expected: '≥', ok: (a.pass2['200'] ?? 0) >= o.n },
    { name: `seed users (${fmtInt(SEED)}): second join = 200 with the same ticket`, value: `${fmtInt(a.sameTicket)} same, ${fmtInt(a.otherTicket)} other, ${fmtInt(a.seedStatus2['410'] ?? 0)} × 410, ${fmtInt(a.seedBadState)} inconsistent`, expected: 'no other, no inconsistent', ok: a.otherTicket === 0 && a.seedBadState === 0 },
    { name: 'seed tickets: outcome.result.orderId = the order row of that ticket', value: `${fmtInt(facts.seedOrders.size - a.orderMismatch)} of ${fmtInt(facts.seedOrders.size)} succeeded`, expected: 'all', ok: a.orderMismatch === 0 && facts.seedOrders.size > 0 },
    { name: '410 sold_out answers (pass 1 + pass 2)', value: `${fmtInt(a.pass1['410'] ?? 0)} + ${fmtInt(a.pass2['410'] ?? 0)} = ${fmtInt(a.status410)}`, expected: 'counted', ok: true },
    { name: 'join answers other than 200/202/410', value: a.unexpectedJoin.length ? statusCell(Object.fromEntries(a.unexpectedJoin)) : '0', expected: '0', ok: a.unexpectedJoin.length === 0 },
    { name: 'poll answers other than 200', value: a.unexpectedPoll.length ? statusCell(Object.fromEntries(a.unexpectedPoll)) : '0', expected: '0', ok: a.unexpectedPoll.length === 0 },
    { name: '5xx answers; connection errors + timeouts', value: `${fmtInt(a.fiveXX)}; ${fmtInt(a.connErrors)}`, expected: '0; 0', ok: a.fiveXX === 0 && a.connErrors === 0 },
  ];
}
