/**
 * The flash sale with reservations (`BENCH_FLASH_RESERVE=<share that never pays>`, e.g. 0.2): a
 * seckill item with `config.reserveMs` (BENCH_FLASH_RESERVE_MS, default 2000), BENCH_STOCK units
 * (default 2,000 here) and BENCH_USERS buyers (default 10,000) who join once each (100 at a time).
 * A shop confirms the reservations of the buyers who pay (found in Postgres every 100 ms,
 * confirmed over HTTP 50 at a time) and ignores the others, whose reservations expire and whose
 * units go to the next in line. Measured: reservations/s and confirms/s, the sale's length, and
 * for each unit released by expiry, the time from its release (settled_at) to the next
 * reservation made after it (created_at), and from its deadline to its release.
 */
import postgres from 'postgres';
import { call, OPERATOR_KEY, SERVICE_KEY } from '../../lib/api.js';
import type { BenchContext, Server } from '../../lib/harness.js';
import { mdTable } from '../../lib/report.js';
import { fmtInt, fmtMs, fmtS, percentile } from '../../lib/stats.js';
import { setTimeout as sleep } from 'node:timers/promises';

/** A stable 1-in-N choice per user: whether this buyer never pays. */
const neverPays = (userId: string, share: number) => {
  let h = 2166136261;
  for (const c of userId) h = Math.imul(h ^ c.charCodeAt(0), 16777619);
  return (h >>> 0) / 2 ** 32 < share;
};

export async function runReservedSale(ctx: BenchContext, daemon: Server, share: number): Promise<string> {
  const stock = Number(process.env.BENCH_STOCK ?? 2_000);
  const users = Number(process.env.BENCH_USERS ?? 10_000);
  const reserveMs = Number(process.env.BENCH_FLASH_RESERVE_MS ?? 2_000);
  const itemId = 'flash-reserve';
  const url = daemon.url;
  const sql = postgres(ctx.databaseUrl, { max: 2, onnotice: () => {} });
  try {
    const put = await call(url, 'PUT', `/v1/items/${itemId}`, OPERATOR_KEY, { handler: 'seckill', config: { stock, reserveMs }, gate: { mode: 'auto' } });
    if (put.status !== 201) throw new Error(`PUT ${itemId}: ${put.status} ${JSON.stringify(put.body)}`);
    const t0 = Date.now();
    let next = 0;
    const joinStatus: Record<string, number> = {};
    const joining = Promise.all(
      Array.from({ length: 100 }, async () => {
        while (next < users) {
          const r = await call(url, 'POST', `/v1/items/${itemId}/tickets`, SERVICE_KEY, { userId: `rb-${next++}` });
          joinStatus[r.status] = (joinStatus[r.status] ?? 0) + 1;
        }
      }),
    );

    // The shop: confirms the payers' reservations as they appear.
    const handled = new Set<string>();
    let confirms = 0;
    let confirmErrors = 0;
    let lastConfirm = 0;
    const deadline = t0 + Math.max(120_000, ctx.budgetS * 500);
    for (;;) {
      const [st] = await sql`select total, sold, reserved from item_stock where item_id = ${itemId}`;
      const [{ confirmed }] = await sql`select count(*)::int as confirmed from orders where item_id = ${itemId} and status = 'confirmed'`;
      if (confirmed >= stock || Date.now() > deadline) break;
      const fresh = await sql`select order_id, user_id from orders where item_id = ${itemId} and status = 'reserved'`;
      const todo = fresh.filter((o) => !handled.has(String(o.order_id)));
      for (const o of todo) handled.add(String(o.order_id));
      const pay = todo.filter((o) => !neverPays(o.user_id, share));
      let i = 0;
      await Promise.all(
        Array.from({ length: Math.min(50, pay.length) }, async () => {
          while (i < pay.length) {
            const o = pay[i++];
            const r = await call(url, 'POST', `/v1/orders/${o.order_id}/confirm`, SERVICE_KEY);
            if (r.status === 200) confirms++;
            else confirmErrors++;
          }
        }),
      );
      if (pay.length) lastConfirm = Date.now();
      if (!todo.length) await sleep(100);
      void st;
    }
    await joining;
    const wallS = (lastConfirm - t0) / 1000;

    const [o] = await sql`
      select count(*)::int as orders, count(*) filter (where status = 'confirmed')::int as confirmed,
             count(*) filter (where status = 'released')::int as released, min(created_at) as first, max(created_at) as last
      from orders where item_id = ${itemId}`;
    const gaps = await sql`
      select extract(epoch from (n.created_at - r.settled_at)) * 1000 as to_next, extract(epoch from (r.settled_at - r.reserved_until)) * 1000 as late
      from orders r cross join lateral (
        select x.created_at from orders x where x.item_id = r.item_id and x.created_at >= r.settled_at order by x.created_at limit 1
      ) n
      where r.item_id = ${itemId} and r.status = 'released'`;
    const toNext = Float64Array.from(gaps.map((g) => Number(g.to_next))).sort();
    const late = Float64Array.from(gaps.map((g) => Number(g.late))).sort();
    const [s] = await sql`select total, sold, reserved from item_stock where item_id = ${itemId}`;
    const [dups] = await sql`select count(*)::int as n from (select user_id from orders where item_id = ${itemId} and status <> 'released' group by user_id having count(*) > 1) d`;
    const view = await call(url, 'GET', `/v1/items/${itemId}`, OPERATOR_KEY);
    const spanS = (new Date(o.last).getTime() - new Date(o.first).getTime()) / 1000;
    ctx.log(`reserved sale: ${o.orders} reservations, ${o.confirmed} confirmed, ${o.released} released in ${wallS.toFixed(1)} s`);

    const rows = [
      ['reservations made (orders rows) · per second (first → last reservation)', `${fmtInt(o.orders)} · ${fmtInt(o.orders / Math.max(spanS, 0.001))}/s over ${spanS.toFixed(1)} s`],
      ['confirmed · released (by expiry; buyers who never pay)', `${fmtInt(o.confirmed)} · ${fmtInt(o.released)}`],
      ['confirms answered 200 · errors', `${fmtInt(confirms)} · ${fmtInt(confirmErrors)}`],
      ['sale length: first join → last confirm', fmtS(wallS * 1000)],
      ['release → next reservation: p50 / p99 / max (ms)', toNext.length ? `${fmtMs(percentile(toNext, 0.5))} / ${fmtMs(percentile(toNext, 0.99))} / ${fmtMs(toNext[toNext.length - 1])} (${toNext.length} releases)` : 'n/a'],
      ['deadline → release (the sweep): p50 / p99 / max (ms)', late.length ? `${fmtMs(percentile(late, 0.5))} / ${fmtMs(percentile(late, 0.99))} / ${fmtMs(late[late.length - 1])}` : 'n/a'],
      ['joins answered', Object.entries(joinStatus).map(([k, v]) => `${k}: ${fmtInt(v)}`).join(', ')],
    ];
    const checks = [
      ['every unit confirmed', `${o.confirmed}`, `${stock}`, o.confirmed === stock],
      ['item_stock sold / reserved', `${s.sold} / ${s.reserved}`, `${stock} / 0`, s.sold === stock && s.reserved === 0],
      ['users with two live orders', `${dups.n}`, '0', dups.n === 0],
      ['item state', String(view.body.state), 'sold_out', view.body.state === 'sold_out'],
    ];
    return [
      `### Reservations: ${fmtInt(stock)} units, ${fmtInt(users)} buyers, ${Math.round(share * 100)}% never pay, reserveMs ${fmtInt(reserveMs)}`,
      '',
      mdTable(['measure', 'value'], rows),
      '',
      mdTable(['check', 'value', 'expected', 'ok'], checks.map(([a, b, c, ok]) => [a, b, c, ok ? 'yes' : '**NO**'] as string[])),
      '',
    ].join('\n');
  } finally {
    await sql.end({ timeout: 5 });
  }
}
