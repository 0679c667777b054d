import type { RedisLike } from '../redis/client.js';
import type { Clock } from '../kernel/clock.js';
import { itemKeys } from '../redis/keys.js';
import { createScriptRunner, scripts } from '../redis/scripts.js';

/**
 * What a daemon saw of an item in one second. Counters are cumulative (as Redis holds them), so
 * whichever daemon's point wins a second, differences between points are per-second rates.
 */
export interface SeriesSample {
  /**
   * When the counters were read (ms): the rates are taken over the time between two points' reads,
   * which a busy daemon's loop may make 0.5-1.5 s apart for two points a second apart (a 10/s gate
   * was drawn at 13 and then 7). Points written before it was kept have none.
   */
  at?: number;
  waiting: number;
  admissions: number;
  succeeded: number;
  rejected: number;
  failed: number;
  /** The gate's effective rate and in-flight cap, and the controller's own (shadow) opinion. */
  rate: number | null;
  maxInFlight: number | null;
  ctlRate: number | null;
  ctlLimit: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
}

export interface SeriesPoint extends Omit<SeriesSample, 'admissions'> {
  /** Start of the second (ms). */
  t: number;
  /** Per second over the step before this point. */
  admitted: number;
}

/** Kept a little over the 15 minutes the console shows. */
export const SERIES_KEEP_SEC = 16 * 60;

export function createSeriesStore(redis: RedisLike, prefix: string, clock: Clock) {
  const runner = createScriptRunner(redis, prefix);
  return {
    /** Offers the point of `second` (unix seconds); the first daemon's point for a second stays. Returns whether this one did. */
    add: async (itemId: string, second: number, s: SeriesSample) =>
      (await runner.run(scripts.seriesAdd, itemId, clock.now(), { second, point: JSON.stringify(s), keep: SERIES_KEEP_SEC })) === 1,

    /** Points of the seconds in [fromSec, toSec], counters turned into per-second rates. */
    async range(itemId: string, fromSec: number, toSec: number): Promise<SeriesPoint[]> {
      // One second more, for the first point's differences.
      const raw = await redis.zrangebyscore(itemKeys(prefix, itemId).series, fromSec - 1, toSec);
      const rows = raw.map((m) => {
        const bar = m.indexOf('|');
        return { sec: Number(m.slice(0, bar)), s: JSON.parse(m.slice(bar + 1)) as SeriesSample };
      });
      const out: SeriesPoint[] = [];
      for (let i = 1; i < rows.length; i++) {
        const { sec, s } = rows[i];
        // Over the time between this read and the latest earlier one at least 250 ms before it
        // (two reads closer than that — a view offered for two seconds, a late loop's point just
        // after another — drew a 10/s gate at 1/s), else over the seconds the points stand for.
        let j = i - 1;
        while (j > 0 && s.at != null && rows[j].s.at != null && s.at - rows[j].s.at! < 250) j--;
        const timed = s.at != null && rows[j].s.at != null && s.at - rows[j].s.at! >= 250;
        const p = timed ? rows[j] : rows[i - 1];
        const dt = timed ? (s.at! - p.s.at!) / 1000 : sec - p.sec;
        // A counter that went down was reset (the item re-created): no rate for that step.
        const per = (a: number, b: number) => (a >= b ? Math.round(((a - b) / dt) * 100) / 100 : 0);
        const { admissions, at: _at, ...rest } = s;
        out.push({ t: sec * 1000, ...rest, admitted: per(admissions, p.s.admissions), succeeded: per(s.succeeded, p.s.succeeded), rejected: per(s.rejected, p.s.rejected), failed: per(s.failed, p.s.failed) });
      }
      return out;
    },
  };
}

export type SeriesStore = ReturnType<typeof createSeriesStore>;
