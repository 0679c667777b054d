import type postgres from 'postgres';
import { defineStock, recountStock } from './sales.js';

/** The catalog's view of Postgres stock rows: each item's total, and what was sold of it. */
export function createStockRows(sql: postgres.Sql) {
  return {
    define: (itemId: string, total: number) => defineStock(sql, itemId, total),
    recount: (table: 'orders' | 'coupon_claims', itemId: string) => recountStock(sql, table, itemId),
    /** Orders of the item reserved and not yet confirmed or released. */
    async reservedOrders(itemId: string): Promise<number> {
      // A released one whose unit is not back in Redis yet counts too: its return (the releasing
      // daemon's next step, or any daemon's sweep) put the unit on the item under its new handler,
      // whose stock counter that created — an external item then admitted one ticket ever.
      const [row] = await sql`select count(*)::int as n from orders where item_id = ${itemId} and (status = 'reserved' or (status = 'released' and returned_at is null))`;
      return Number(row.n);
    },
    /** Units left (total − sold) of each item that has a stock row, in one read (no lock: the stock keeper's check before a reconcile). */
    async left(itemIds: string[]): Promise<Map<string, number>> {
      const rows = await sql<{ item_id: string; left: string }[]>`select item_id, total - sold as left from item_stock where item_id = any(${itemIds}::text[])`;
      return new Map(rows.map((r) => [r.item_id, Number(r.left)]));
    },
  };
}
