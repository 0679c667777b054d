/**
 * What Postgres and the daemon say once a sale's load is over: the orders, the stock row, the
 * outcome ledger (given up to LEDGER_WAIT_S to catch up with the item view), the seed users'
 * tickets and the order rows they name, and orders and joins per half second of the flood.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type postgres from 'postgres';
import { ticketRef } from '../../../src/kernel/ticket-ref.js';
import { call, pool, terminalCount } from '../../lib/api.js';
import { LEDGER_WAIT_S, SEED_CONCURRENCY } from './settings.js';
import type { SaleLoad } from './sale-load.js';

export interface SaleFacts {
  orders: { n: number; users: number; first: Date | null; last: Date | null; flood: number };
  /** When the join load sent its first request: the flood's start. */
  floodStart: Date;
  usersWithTwoOrders: number;
  stock: { total: number; sold: number } | undefined;
  terminal: number;
  ledgerRows: number;
  ledgerByStatus: Record<string, number>;
  ledgerAtS: number;
  ledgerCheckedAt: number;
  orphanOrders: number;
  seedViews: Awaited<ReturnType<typeof call>>[];
  /** Seed tickets that succeeded (as Postgres refs) → the orderId their outcome names. */
  seedOrders: Map<string, string>;
  seedOrderRows: { id: string; ticket_id: string }[];
  halves: { h: number; orders: number; joins: number }[];
}

export async function readSaleFacts(sql: postgres.Sql, load: SaleLoad): Promise<SaleFacts> {
  const { itemId, view, t0, seedIds, url } = load;
  const terminal = terminalCount(view.counts);
  let ledgerRows = 0;
  const ledgerFrom = Date.now();
  while (Date.now() - ledgerFrom < LEDGER_WAIT_S * 1000) {
    [{ n: ledgerRows }] = await sql<{ n: number }[]>`select count(*)::int as n from ticket_outcomes where item_id = ${itemId}`;
    if (ledgerRows >= terminal) break;
    await sleep(250);
  }
  const ledgerAtS = (Date.now() - t0.getTime()) / 1000;
  const ledgerCheckedAt = Date.now();
  const floodStart = new Date(load.join1.startedAtMs);
  const [orders] = await sql<SaleFacts['orders'][]>`
    select count(*)::int as n, count(distinct user_id)::int as users, min(created_at) as first, max(created_at) as last,
      (count(*) filter (where created_at >= ${floodStart}))::int as flood
    from orders where item_id = ${itemId}`;
  const [{ n: usersWithTwoOrders }] = await sql<{ n: number }[]>`
    select count(*)::int as n from (select user_id from orders where item_id = ${itemId} group by user_id having count(*) > 1) x`;
  const [stock] = await sql<{ total: number; sold: number }[]>`select total, sold from item_stock where item_id = ${itemId}`;
  const ledgerByStatus = Object.fromEntries(
    (await sql<{ status: string; n: number }[]>`select status, count(*)::int as n from ticket_outcomes where item_id = ${itemId} group by status`).map((r) => [r.status, r.n]),
  );
  const [{ n: orphanOrders }] = await sql<{ n: number }[]>`
    select count(*)::int as n from orders o left join ticket_outcomes t on t.ticket_id = o.ticket_id
    where o.item_id = ${itemId} and t.status is distinct from 'succeeded'`;

  // The seed users' tickets: a success must name its order row.
  const seedViews = await pool(seedIds.length, SEED_CONCURRENCY, (i) => call(url, 'GET', `/v1/tickets/${seedIds[i]}`, null));
  const seedOrders = new Map<string, string>();
  seedViews.forEach((v, i) => {
    const orderId = (v.body.outcome as { result?: { orderId?: unknown } } | undefined)?.result?.orderId;
    if (v.body.state === 'succeeded' && orderId !== undefined) seedOrders.set(ticketRef(seedIds[i]), String(orderId)); // Postgres holds ticket refs
  });
  const seedOrderRows = seedOrders.size
    ? await sql<{ id: string; ticket_id: string }[]>`select order_id::text as id, ticket_id from orders where ticket_id = any(${[...seedOrders.keys()]})`
    : [];
  // Per half second from the join load's first request: orders (created_at) and tickets that
  // joined (the ledger's joined_at), until the last order.
  const halves = await sql<{ h: number; orders: number; joins: number }[]>`
    with o as (select floor(extract(epoch from (created_at - ${floodStart}::timestamptz)) * 2)::int as h, count(*)::int as n
               from orders where item_id = ${itemId} and created_at >= ${floodStart} group by 1),
         j as (select floor(extract(epoch from (joined_at - ${floodStart}::timestamptz)) * 2)::int as h, count(*)::int as n
               from ticket_outcomes where item_id = ${itemId} and joined_at >= ${floodStart} group by 1)
    select o.h, o.n as orders, coalesce(j.n, 0) as joins from o left join j using (h) order by o.h`;
  return { orders, floodStart, usersWithTwoOrders, stock, terminal, ledgerRows, ledgerByStatus, ledgerAtS, ledgerCheckedAt, orphanOrders, seedViews, seedOrders, seedOrderRows, halves: [...halves] };
}
