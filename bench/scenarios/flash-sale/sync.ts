import postgres from 'postgres';
import type { BenchContext } from '../../lib/harness.js';
import { fmtInt } from '../../lib/stats.js';
import { STOCK, SYNC_ATTEMPTS, SYNC_CONNECTIONS } from './settings.js';

export interface SyncOut {
  orders: number;
  ordersPerS: number;
  wallOrdersPerS: number;
  sellOutS: number;
  attempts: number;
  errors: number;
  distinctUsers: number;
  stockLeft: number;
  clientCores: number;
  firstError: string | null;
}

/** The synchronous design: each buyer one transaction on a pool of 64 connections, no queue. */
export async function runSync(ctx: BenchContext): Promise<SyncOut> {
  const sql = postgres(ctx.databaseUrl, { max: SYNC_CONNECTIONS, onnotice: () => {} });
  const item = 'sync';
  try {
    await sql`create table flash_sync_stock (item text primary key, n integer not null check (n >= 0))`;
    await sql`create table flash_sync_orders (order_id bigserial primary key, item text not null, user_id text not null,
      created_at timestamptz not null default now(), unique (item, user_id))`;
    await sql`insert into flash_sync_stock (item, n) values (${item}, ${STOCK})`;
    // Open all connections before the clock starts.
    await Promise.all(Array.from({ length: SYNC_CONNECTIONS }, () => sql`select pg_sleep(0.05)`));
    ctx.log(`synchronous baseline: ${fmtInt(SYNC_ATTEMPTS)} buyers for ${fmtInt(STOCK)} units on ${SYNC_CONNECTIONS} connections`);
    let next = 0;
    let errors = 0;
    let firstError: string | null = null;
    const cpu0 = process.cpuUsage();
    const t0 = Date.now();
    let lastSold = t0;
    await Promise.all(
      Array.from({ length: SYNC_CONNECTIONS }, async () => {
        while (next < SYNC_ATTEMPTS) {
          const i = next++;
          try {
            const sold = await sql.begin(async (tx) => {
              const r = await tx`update flash_sync_stock set n = n - 1 where item = ${item} and n > 0`;
              if (r.count === 0) return false;
              await tx`insert into flash_sync_orders (item, user_id) values (${item}, ${`s-${i}`})`;
              return true;
            });
            if (sold) lastSold = Date.now();
          } catch (e) {
            errors++;
            firstError ??= String(e);
          }
        }
      }),
    );
    const cpu = process.cpuUsage(cpu0);
    const wallS = (Date.now() - t0) / 1000;
    const [o] = await sql<{ n: number; users: number; first: Date | null; last: Date | null }[]>`
      select count(*)::int as n, count(distinct user_id)::int as users, min(created_at) as first, max(created_at) as last from flash_sync_orders where item = ${item}`;
    const [{ n: left }] = await sql<{ n: number }[]>`select n from flash_sync_stock where item = ${item}`;
    const ordersPerS = o.first && o.last && o.last > o.first ? o.n / ((o.last.getTime() - o.first.getTime()) / 1000) : NaN;
    const out: SyncOut = {
      orders: o.n,
      ordersPerS,
      wallOrdersPerS: o.n / ((lastSold - t0) / 1000),
      sellOutS: (lastSold - t0) / 1000,
      attempts: SYNC_ATTEMPTS,
      errors,
      distinctUsers: o.users,
      stockLeft: left,
      clientCores: (cpu.user + cpu.system) / 1e6 / wallS,
      firstError,
    };
    ctx.log(`  ${fmtInt(o.n)} orders at ${fmtInt(ordersPerS)} orders/s (by created_at; ${fmtInt(out.wallOrdersPerS)} by the client's clock), sold out after ${out.sellOutS.toFixed(2)} s, ${errors} errors`);
    return out;
  } finally {
    await sql.end({ timeout: 5 });
  }
}