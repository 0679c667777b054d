import type postgres from 'postgres';
import { defineStock, recountStock } from './sales.js';

/** The catalog's view of Postgres stock rows: each item's total, and what was sold of it. */
export function createStockRows(sql: postgres.Sql) {
  return {
    define: (itemId: string, total: number) => defineStock(sql, itemId, total),
    recount: (table: 'orders' | 'coupon_claims', itemId: string) => recountStock(sql, table, itemId),
  };
}
