/** The chaos scenario's markdown: one row per fault, PASS/FAIL, then each fault's details and the method. */
import { mdSection, mdTable } from '../../lib/report.js';
import type { FaultRow } from './checks.js';
import { BUYERS, EVERYSEC_WINDOW_MS, RATE, UNITS } from './faults.js';

const n = (v: number | null) => (v === null ? '–' : String(v));
const s = (v: number | null) => (v === null ? 'never' : v.toFixed(1));

function recoverCell(r: FaultRow): string {
  if (!r.recover) return '–';
  const { joinS, saleS, pauseS, soldOutBeforeEnd } = r.recover;
  if (r.fault.kind === 'webhook') return s(joinS);
  // Both must be back: the later of the two; only joins when the stock was gone before the fault ended.
  if (soldOutBeforeEnd) return `${s(joinS)} (join ${s(joinS)}; stock sold out before the fault ended)`;
  const worst = joinS === null || saleS === null ? null : Math.max(joinS, saleS);
  return `${s(worst)} (join ${s(joinS)}, sale ${s(saleS)}; longest pause in sales ${s(pauseS)})`;
}

export function chaosMarkdown(rows: FaultRow[], notes: string[]): string {
  const table = mdTable(
    ['fault', 'item', 'units lost', 'false sold-outs', 'double orders', 'tickets vanished (+ in Redis window)', '5xx (not 503)', '503s', 'recover s', 'fault checks', 'result'],
    rows.map((r) => [
      r.fault.key,
      `${r.fault.kind}${r.fault.units ? ` ${r.fault.units}` : ''}, ${r.fault.buyers} buyers`,
      n(r.unitsLost),
      n(r.falseSoldOuts),
      n(r.doubleOrders),
      `${r.vanished}${r.fault.key.startsWith('redis') ? ` (+ ${r.vanishedInWindow})` : ''}`,
      r.errors5xx,
      r.answered503,
      recoverCell(r),
      r.extra.map((c) => `${c.name}: ${c.value}${c.ok ? '' : ' ✗'}`).join('; ') || '–',
      r.pass ? 'PASS' : '**FAIL**',
    ]),
  );
  const details = rows.flatMap((r) => [`- **${r.fault.key}** (item \`${r.itemId}\`) — ${r.fault.title}`, ...r.detail.map((d) => `  - ${d}`)]);
  const method = [
    `One daemon (dist/floodgate.mjs, built from src/ as \`npm start\` does, LOG_LEVEL=warn) with a redis-server of the scenario's own (\`--appendonly yes --appendfsync everysec\`, a temp dir, a free port) and the run's scratch database, each reached through a TCP proxy (test/support/proxy.ts) on a thread of its own (bench/lib/proxy-thread.ts: on the load generator's event loop, the retry storm of a Redis fault held the proxy up to 3.5 s). Each fault runs on a fresh item, one after the other.`,
    `Sale: ${UNITS} units (seckill; a coupon item with perUser 1 for the read-only fault), ${BUYERS} distinct buyers joining at ${RATE}/s from the orchestrator (fetch); a buyer answered 503, another 5xx or nothing (refused, reset, 10 s timeout) tries again up to 5 more times, 0.5 s apart. Faults start once 20% of the buyers have joined.`,
    `Quiet = the item view shows nothing waiting or admitted (twice in a row, 60 s at most after the last buyer's answer); then every accepted ticket is read once.`,
    `Units lost = total − (Postgres \`item_stock.sold\` + the item's Redis stock counter), floored at 0 (a counter ahead of Postgres is shown in the details, not counted). False sold-outs = users told \`sold_out\` (410 on join, or \`rejected\`/\`sold_out\`) when Postgres still had units once quiet. Double orders = users with 2+ rows. Vanished = accepted tickets (200/202 with an id) that read neither terminal nor waiting once quiet (404, admitted, or no answer); for Redis faults those answering 404 in the documented window are counted apart, in parentheses: answered at most ${EVERYSEC_WINDOW_MS / 1000} s before a SIGKILL with AOF everysec (or sent before it and answered later), or, for the rollback, answered after the DUMP began and sent before the RESTORE ended.`,
    `Fault checks: ticket ids answered to two users; succeeded tickets whose \`orderId\`/\`claimId\` names another user's row (or none); valid tickets ended \`failed\` (seckill and coupon cannot fail but for the fault: the buyer lost their place); hostile joins not answered 400; requests reaching the webhook's redirect target; the daemon exiting during the sale (a dead daemon is started again before the quiet wait, as a supervisor would, so its tickets can be read).`,
    `5xx and 503s count every answer the bench got from the daemon (join attempts and final reads). Recover = from the fault's end to the first 2xx join sent after it and to the first order/claim committed after it (\`created_at\`), the later of the two (joins only when every unit was sold before the fault ended); and the longest pause between two orders/claims from the fault's start (with the start as the first), which is what a fault that lasts a moment (a silence) costs.`,
    `PASS = units lost, false sold-outs, double orders, vanished (outside the window) and 5xx other than 503 all 0, and the fault's own checks hold.`,
  ];
  return ['### Chaos', '', table, '', '### Details', '', ...details, '', ...mdSection('Method', method), ...mdSection('Notes', notes)].join('\n').trimEnd();
}
