/**
 * The `flash-sale` scenario's settings. The scenario: one daemon, one seckill item with BENCH_STOCK units (default 10,000),
 * and BENCH_USERS distinct users (default 100,000) who each join twice as fast as autocannon can
 * send (the second join must answer 200 with the same ticket, or 410 once the stock is gone), while
 * a second load polls tickets. Orders/s, time to sell out, join and poll latency, and the checks
 * that nothing was oversold or sold twice; then, in the same run, the synchronous design (64
 * Postgres connections, one `UPDATE … n > 0` + `INSERT` transaction per buyer) as the baseline.
 *
 * Knobs (env): BENCH_STOCK, BENCH_USERS, BENCH_SYNC_ATTEMPTS (default 3 × stock),
 * BENCH_POLL_CONNECTIONS (default 10), BENCH_FLASH_WARMUP (units of a warm-up sale on another item,
 * sold to twice as many new users before the measured sale so that the daemon's code is compiled
 * and its pools are open, as in a daemon that has been running, by the generator process that then
 * sends the first pass; default 5,000; 0 = none, and a fresh generator), BENCH_FLASH_MANUAL (in-flight cap of a second sale with a
 * `manual` gate, run after the `auto` one; 0 = skip; default 0), BENCH_FLASH_DRAIN=0 (skip the drain
 * diagnostic: the same stock sold from a line filled behind a closed gate, with no joins arriving),
 * BENCH_FLASH_ACCEPTED=0 (skip the accepted-joins-only sale: stock users join once each, every join
 * accepted and sold, for the daemon's CPU per accepted join + its order).
 * BENCH_FLASH_RESERVE=<share> (e.g. 0.2) runs the reservations variant instead (reserve.ts):
 * a share of the buyers never pay, their reservations expire and their units go to the next in line.
 */
import { SERVICE_KEY } from '../../lib/api.js';

export const STOCK = Number(process.env.BENCH_STOCK ?? 10_000);
export const USERS = Number(process.env.BENCH_USERS ?? 100_000);
export const SYNC_ATTEMPTS = Number(process.env.BENCH_SYNC_ATTEMPTS ?? 3 * STOCK);
export const POLL_CONNECTIONS = Number(process.env.BENCH_POLL_CONNECTIONS ?? 10);
export const MANUAL_CAP = Number(process.env.BENCH_FLASH_MANUAL ?? 0);
export const DRAIN = process.env.BENCH_FLASH_DRAIN !== '0';
/** The accepted-joins-only sale (accepted.ts): stock users join once each; the daemon's CPU per accepted join + its order. */
export const ACCEPTED = process.env.BENCH_FLASH_ACCEPTED !== '0';
/** Units of the warm-up sale on another item before the measured one (0 = none). */
export const WARMUP = Number(process.env.BENCH_FLASH_WARMUP ?? 5_000);
export const CONNECTIONS = 100;
export const SYNC_CONNECTIONS = 64;
/** Users joined (twice) by the orchestrator itself, so that polling can start with the sale. */
export const SEED = Math.max(1, Math.min(500, Math.floor(USERS / 20)));
export const SEED_CONCURRENCY = 20;
/** Ticket ids polled after the sell-out: the seed's plus about this many sampled from the first pass. */
export const POLL_SAMPLE = 1_000;
export const WATCH_MS = 200;
export const SELL_OUT_WAIT_S = 60;
export const SETTLE_WAIT_S = 30;
/** How long the outcome ledger (ticket_outcomes, written in the background) may lag behind the item view. */
export const LEDGER_WAIT_S = 10;
/** If it still lags, it is checked again before the daemon stops, up to this long after that first wait. */
export const LEDGER_RECHECK_S = 45;
export const TARGET_ORDERS_PER_S = 3_000;
export const TARGET_RATIO = 3.5;
export const auth = { authorization: `Bearer ${SERVICE_KEY}` };

export type Gate = { mode: 'auto' } | { mode: 'manual'; maxInFlight: number };
