import type { Clock } from '../kernel/clock.js';

/**
 * Postgres pressure as the gate's signal for the handlers that sell through Postgres (seckill,
 * coupon). Their downstream is Floodgate's own batched writer (two transactions at once, up to 500
 * rows each), which the latency controller misreads (see docs/design-notes.md); they are admitted
 * up to a fixed in-flight cap (1000). A slow Postgres then left that many tickets admitted for as
 * long as the writer took to reach them, past their handler's deadline. Here the cap follows what
 * Postgres carries, by Little's law, once sells turn slow (their median over half the target):
 *
 *   cap = clamp(best sells/s of the last `memoryMs` × `targetMs`, `minCap`, the handler's cap)
 *
 * where a sell's time runs from its request to its answer (the wait for a batch and for a pooled
 * connection included). While Postgres answers fast nothing changes; when it slows, admissions
 * slow with it and tickets wait in line, in order, instead of waiting admitted. Two guards against
 * a batched writer's spiral (it carries less when fewer tickets are in flight, so a cap set from
 * the rate at a cut cap cuts again): the rate is a max over a long memory (BBR's bandwidth
 * filter), and the cap never goes under one full batch (`minCap`), which keeps at least half the
 * writer's throughput. Pure: `nextCap`; the stateful part takes its time from a clock.
 */
export interface PgPressureOptions {
  /** How long an admitted ticket should wait for its sale, at most (ms). */
  targetMs: number;
  minCap: number;
  /** The sells/s maximum is over windows of this age. */
  memoryMs: number;
  /** Shortest window a rate is measured over (ms); it also spans two sells. */
  windowMs: number;
}

/** Half the seckill/coupon deadline (10 s) as the target; one batch of the writer as the floor. */
export const defaultPressure: PgPressureOptions = { targetMs: 5000, minCap: 500, memoryMs: 30_000, windowMs: 1000 };

export function nextCap(bestPerS: number | null, handlerCap: number, o: PgPressureOptions = defaultPressure): number {
  if (bestPerS === null) return handlerCap;
  return Math.round(Math.min(handlerCap, Math.max(o.minCap, (bestPerS * o.targetMs) / 1000)));
}

export interface PgPressure {
  /** One sell answered (or failed) after `ms`. */
  record(ms: number): void;
  /** The in-flight cap for a handler whose own cap is `handlerCap`. */
  cap(handlerCap: number): number;
  /** What operators see: the best sells/s remembered and the last window's median sell time (both null with no sell in memory). */
  view(): { perS: number | null; p50Ms: number | null };
}

export function createPgPressure(clock: Clock, o: PgPressureOptions = defaultPressure): PgPressure {
  let windowStart = clock.now();
  let times: number[] = [];
  /** Sells/s of each closed window with sells, and when it closed. */
  const rates: { at: number; perS: number }[] = [];
  let p50Ms: number | null = null;
  /** When a sell was last recorded. */
  let lastAt = -Infinity;

  function roll() {
    const now = clock.now();
    // A window spans two sells at least: the writer answers a whole batch at once, and a window
    // shorter than a sell measures the burst, not the rate.
    if (now - windowStart < Math.max(o.windowMs, 2 * (p50Ms ?? 0))) return;
    if (times.length) {
      rates.push({ at: now, perS: (times.length / (now - windowStart)) * 1000 });
      times.sort((a, b) => a - b);
      p50Ms = times[Math.floor(times.length / 2)];
    }
    while (rates.length && now - rates[0].at > o.memoryMs) rates.shift();
    times = [];
    windowStart = now;
  }
  // Pressure shows in the sells' time; until one takes longer than the target, nothing is capped.
  const slow = () => p50Ms !== null && p50Ms > o.targetMs / 2;
  const best = () => (rates.length ? Math.max(...rates.map((r) => r.perS)) : null);

  return {
    record(ms) {
      roll();
      times.push(ms);
      lastAt = clock.now();
    },
    cap(handlerCap) {
      roll();
      return slow() ? nextCap(best(), handlerCap, o) : handlerCap;
    },
    view: () => {
      // No sell answered within the memory (a sale over, Postgres away): nothing measured of late.
      if (clock.now() - lastAt > o.memoryMs) return { perS: null, p50Ms: null };
      roll();
      return { perS: best(), p50Ms };
    },
  };
}
