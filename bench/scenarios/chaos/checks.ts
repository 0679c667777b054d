/**
 * What one fault cost, from the buyers' answers, Postgres (direct) and the item's Redis stock
 * counter, read once the sale is quiet. Loss columns must be 0 on a correct daemon.
 */
import type { ExtraCheck, Fault, FaultWindow } from './faults.js';
import type { Buyer } from './sale.js';
import type { Env } from './setup.js';

export interface FaultRow {
  fault: Fault;
  itemId: string;
  /** null where the item has no units (webhook). */
  unitsLost: number | null;
  falseSoldOuts: number | null;
  doubleOrders: number | null;
  vanished: number;
  /** Tickets answering 404 that fall in the fault's documented Redis-durability window (not counted as a loss). */
  vanishedInWindow: number;
  errors5xx: number;
  answered503: number;
  /**
   * Seconds from the fault's end to the first successful join sent after it and the first sale
   * after it, and the longest pause between two sales from the fault's start (a fault that lasts
   * a moment, like a silence, shows in the pause: the first sale after it may be a call already made).
   */
  recover: { joinS: number | null; saleS: number | null; pauseS: number | null; soldOutBeforeEnd: boolean } | null;
  extra: ExtraCheck[];
  detail: string[];
  pass: boolean;
}

const TERMINAL = new Set(['succeeded', 'rejected', 'failed', 'cancelled', 'expired']);

export interface Observed {
  fault: Fault;
  itemId: string;
  buyers: Buyer[];
  window: FaultWindow;
  joinsOk: number[];
  readAnswers: number[];
  quiet: { reached: boolean; afterS: number; counts: Record<string, number> | null };
  extra: ExtraCheck[];
}

export async function checkFault(env: Env, o: Observed): Promise<FaultRow> {
  const { fault, itemId, buyers, window: w } = o;
  const detail: string[] = [...w.notes];
  const extra: ExtraCheck[] = [...o.extra];
  const valid = buyers.filter((b) => !b.hostile);

  // Answers: every join attempt and every final read.
  const all = [...buyers.flatMap((b) => b.answers), ...o.readAnswers];
  const errors5xx = all.filter((s) => s >= 500 && s !== 503).length;
  const answered503 = all.filter((s) => s === 503).length;
  const noAnswer = all.filter((s) => s === 0).length;
  const joinStatus: Record<string, number> = {};
  for (const b of valid) {
    const k = b.code ? `${b.status} ${b.code}` : String(b.status);
    joinStatus[k] = (joinStatus[k] ?? 0) + 1;
  }
  detail.push(`final join answers (valid buyers): ${fmtCounts(joinStatus)}; requests without an answer (refused, reset, 10 s timeout): ${noAnswer}`);

  // Tickets: accepted ones that read neither terminal nor waiting once the sale is quiet.
  const accepted = buyers.filter((b) => b.ticketId);
  const isGone = (b: Buyer) => !b.final || b.final.status !== 200 || !(TERMINAL.has(b.final.state ?? '') || b.final.state === 'waiting');
  const gone = accepted.filter(isGone);
  const inLossWindow = (b: Buyer) => !!w.lossWindow && b.acceptedAt! >= w.lossWindow.from && b.sentAt! <= w.lossWindow.to;
  // Only a ticket whose record is gone (404) can be the window's loss; one stuck `admitted` still exists.
  const inWindow = gone.filter((b) => b.final?.status === 404 && inLossWindow(b));
  const states: Record<string, number> = {};
  for (const b of accepted) {
    const k = b.final?.status === 200 ? `${b.final.state}${b.final.reason ? ` (${b.final.reason})` : ''}` : String(b.final?.status ?? 'unread');
    states[k] = (states[k] ?? 0) + 1;
  }
  detail.push(`accepted tickets: ${accepted.length}; read when quiet: ${fmtCounts(states)}`);
  if (w.lossWindow) detail.push(`Redis-durability window (${w.lossWindow.why}): ${accepted.filter(inLossWindow).length} tickets accepted in it, ${inWindow.length} of them gone`);
  detail.push(o.quiet.reached ? `quiet (nothing waiting or admitted) ${o.quiet.afterS.toFixed(1)} s after the last buyer's answer` : `**not quiet** ${o.quiet.afterS.toFixed(0)} s after the last buyer's answer: ${JSON.stringify(o.quiet.counts)}`);

  // Ids issued twice: one ticket id answered to two users.
  const holders = new Map<string, Set<string>>();
  for (const b of accepted) holders.set(b.ticketId!, (holders.get(b.ticketId!) ?? new Set()).add(b.userId));
  const idsTwice = [...holders.values()].filter((u) => u.size > 1).length;
  if (fault.kind !== 'webhook' || idsTwice) extra.push({ name: 'ticket ids issued to 2+ users', value: idsTwice, ok: idsTwice === 0 });

  if (fault.hostileEvery) {
    const hostile = buyers.filter((b) => b.hostile);
    const not400 = hostile.filter((b) => b.status !== 400).length;
    extra.push({ name: `hostile joins (of ${hostile.length}) not answered 400`, value: not400, ok: not400 === 0 });
  }
  if (fault.kind !== 'webhook') {
    // A buyer told `failed` lost their place while the fault lasted (an outage should be a pause):
    // for seckill and coupon nothing but the fault can fail a valid ticket.
    const failed = valid.filter((b) => b.final?.state === 'failed').length;
    extra.push({ name: 'valid tickets failed', value: failed, ok: failed === 0 });
  }

  let unitsLost: number | null = null;
  let falseSoldOuts: number | null = null;
  let doubleOrders: number | null = null;
  let saleAfter: Date | null = null;
  let pauseS: number | null = null;
  let soldOutBeforeEnd = false;
  if (fault.kind !== 'webhook') {
    const table = fault.kind === 'seckill' ? 'orders' : 'coupon_claims';
    const idCol = fault.kind === 'seckill' ? 'order_id' : 'claim_id';
    const [stock] = await env.sql<{ total: number; sold: number }[]>`select total, sold from item_stock where item_id = ${itemId}`;
    const [rows] = await env.sql<{ n: number; doubled: number }[]>`
      select count(*)::int as n, (select count(*)::int from (select user_id from ${env.sql(table)} where item_id = ${itemId} group by user_id having count(*) > 1) x) as doubled
      from ${env.sql(table)} where item_id = ${itemId}`;
    const counter = await stockCounter(env, itemId);
    const total = Number(stock?.total ?? fault.units);
    const sold = Number(stock?.sold ?? 0);
    unitsLost = Math.max(0, total - sold - counter);
    const ahead = sold + counter - total;
    const left = total - sold;
    const toldSoldOut = valid.filter((b) => b.code === 'sold_out' || (b.final?.state === 'rejected' && b.final.reason === 'sold_out')).length;
    falseSoldOuts = left > 0 ? toldSoldOut : 0;
    doubleOrders = rows.doubled;
    detail.push(`Postgres: ${sold} of ${total} sold (${rows.n} rows); Redis stock counter ${counter}${ahead > 0 ? ` (${ahead} more than Postgres has left: a stale counter, not a loss)` : ''}; users told sold_out: ${toldSoldOut}`);

    // No user is told succeeded with another user's order (or with no order at all).
    const ok = valid.filter((b) => b.final?.state === 'succeeded');
    const ids = ok.map((b) => String(b.final?.result?.[fault.kind === 'seckill' ? 'orderId' : 'claimId'] ?? ''));
    const owners = new Map(
      (await env.sql<{ id: string; user_id: string }[]>`select ${env.sql(idCol)}::text as id, user_id from ${env.sql(table)} where item_id = ${itemId} and ${env.sql(idCol)}::text = any(${ids})`).map((r) => [r.id, r.user_id]),
    );
    const foreign = ok.filter((b, i) => owners.get(ids[i]) !== b.userId).length;
    extra.push({ name: 'succeeded with another\'s or no order', value: foreign, ok: foreign === 0 });

    if (w.startMs && w.endMs) {
      const [r] = await env.sql<{ at: Date | null; before: number; during: number }[]>`
        select min(created_at) filter (where created_at >= ${new Date(w.endMs)}) as at,
          (count(*) filter (where created_at < ${new Date(w.startMs)}))::int as before,
          (count(*) filter (where created_at >= ${new Date(w.startMs)} and created_at < ${new Date(w.endMs)}))::int as during
        from ${env.sql(table)} where item_id = ${itemId}`;
      saleAfter = r?.at ?? null;
      soldOutBeforeEnd = (r?.before ?? 0) + (r?.during ?? 0) >= total;
      const times = (await env.sql<{ at: Date }[]>`select created_at as at from ${env.sql(table)} where item_id = ${itemId} and created_at >= ${new Date(w.startMs)} order by created_at`).map((x) => x.at.getTime());
      pauseS = times.length ? times.reduce((worst, t, i) => Math.max(worst, t - (i ? times[i - 1] : w.startMs!)), 0) / 1000 : null;
      detail.push(`rows committed before the fault: ${r?.before ?? 0}, during it: ${r?.during ?? 0} (transaction start times)`);
    }
  }

  let recover: FaultRow['recover'] = null;
  if (w.endMs) {
    // A join sent after the fault's end: one in flight when it began may be answered just after.
    const join = buyers.filter((b) => b.acceptedAt && b.sentAt! >= w.endMs!).map((b) => b.acceptedAt!).sort((a, b) => a - b)[0];
    recover = { joinS: join ? (join - w.endMs) / 1000 : null, saleS: saleAfter ? (saleAfter.getTime() - w.endMs) / 1000 : null, pauseS, soldOutBeforeEnd };
  }

  const vanished = gone.length - inWindow.length;
  const pass = (unitsLost ?? 0) === 0 && (falseSoldOuts ?? 0) === 0 && (doubleOrders ?? 0) === 0 && vanished === 0 && errors5xx === 0 && extra.every((c) => c.ok);
  return { fault, itemId, unitsLost, falseSoldOuts, doubleOrders, vanished, vanishedInWindow: inWindow.length, errors5xx, answered503, recover, extra, detail, pass };
}

/** The item's Redis stock counter: the sum of its shards. */
async function stockCounter(env: Env, itemId: string): Promise<number> {
  const h = await env.rc.hgetall(`${env.ctx.prefix}{${itemId}}:stock`);
  return Object.entries(h).reduce((n, [k, v]) => n + (k.startsWith('s') ? Number(v) : 0), 0);
}

const fmtCounts = (c: Record<string, number>) =>
  Object.entries(c)
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${k}: ${n}`)
    .join(', ') || 'none';
