import type { Clock } from './clock.js';
import type { Logger } from './logger.js';

/** Redis's TIME: seconds and microseconds (redis/client.ts serverTime). */
type ServerTime = () => Promise<[number, number]>;

/** How far this machine's clock may be from Redis's before the daemon takes Redis's. */
export const STEP_MS = 100;
const EVERY_MS = 10_000;
/** How often a steady base clock's drift from the wall clock is looked at (a step, a resume). */
const WATCH_MS = 1_000;
/** A TIME whose round trip took longer than this says too little about the offset. */
const MAX_RTT_MS = 50;

/**
 * The daemon's clock, kept on Redis's time. Every timestamp the line compares across daemons is
 * taken from the daemon's own clock — a lease's expiry, a ticket's join and admission times, an
 * item's activity window — so daemons whose clocks disagree disagree about those: with one
 * machine's clock two minutes ahead, its lease sweep put a ticket another daemon had handed to an
 * outside worker under a 60 s lease back in the line within 2 s (the worker's outcome would then
 * be refused, `lease_lost`), and its joins were stamped two minutes after the others'
 * (test/clock-skew.test.ts). The offset to Redis's TIME (from the middle of a round trip under
 * 50 ms) is measured at start and every 10 s and taken when it differs from the one in use by
 * STEP_MS or more, so machines in sync keep their own clock untouched and a skewed one moves to
 * Redis's time in one step (logged), as an NTP step would. A round trip over 50 ms is not trusted
 * alone: after three such, the shortest of them is taken.
 *
 * On a steady base (kernel/clock.ts steadyClock: the daemon's default) a step of this machine's
 * wall clock never reaches the daemon: with the wall clock as base, a step of 30 s (NTP, a VM
 * resumed, `date -s`) was trusted until the next measure, up to 10 s: its sweep took other
 * daemons' live leases for expired (their tickets were called twice) and its admissions wrote
 * leases already run out on theirs. The base's drift from the wall clock is looked at every
 * second, and a change in it of STEP_MS or more is measured against Redis at once: a suspended
 * machine, whose monotonic clock did not run, comes back to Redis's time within about a second.
 */
export function redisTimeClock(base: Clock & { drift?(): number }) {
  let offset = 0;
  let timer: NodeJS.Timeout | null = null;
  let watch: NodeJS.Timeout | null = null;
  const clock: Clock = { now: () => base.now() + offset };

  /** Round trips too long to trust since the last offset taken: after three, the shortest of them is taken. */
  let slow: { rttMs: number; seen: number }[] = [];

  /** Whether an offset was taken (or confirmed). */
  async function measure(time: ServerTime, log: Logger): Promise<boolean> {
    const t0 = base.now();
    const [s, us] = await time();
    const t1 = base.now();
    let seen = Math.round(s * 1000 + us / 1000 - (t0 + t1) / 2);
    if (t1 - t0 > MAX_RTT_MS) {
      slow.push({ rttMs: t1 - t0, seen });
      if (slow.length < 3) return false;
      // A Redis far away (or a busy loop) answers slowly every time: the best of three, within half its round trip.
      const best = slow.reduce((a, b) => (b.rttMs < a.rttMs ? b : a));
      seen = best.seen;
    }
    slow = [];
    if (Math.abs(seen - offset) >= STEP_MS) {
      log.warn({ offsetMs: seen, wasMs: offset }, "this machine's clock is not Redis's: the daemon keeps Redis's time");
      offset = seen;
    }
    return true;
  }

  return {
    clock,
    /**
     * Measures now (up to three tries; a failure leaves the offset as it is), then every 10 s until
     * stop(). `time`: one server's TIME, the same server every time.
     */
    async start(time: ServerTime, log: Logger) {
      const tick = () => measure(time, log).catch(() => false);
      for (let i = 0; i < 3 && !(await tick()); i++);
      timer = setInterval(tick, EVERY_MS);
      timer.unref();
      const drift = base.drift?.bind(base);
      if (drift) {
        let seen = drift();
        let asking = false;
        watch = setInterval(() => {
          const d = drift();
          if (asking || Math.abs(d - seen) < STEP_MS) return;
          // Taken as seen once a measure answered: one that failed or came too slowly (a reconnect
          // after the resume) is asked again at the next look, not left to the 10 s measure.
          asking = true;
          void tick()
            .then((ok) => void (ok && (seen = d)))
            .finally(() => (asking = false));
        }, WATCH_MS);
        watch.unref();
      }
    },
    stop() {
      if (timer) clearInterval(timer);
      if (watch) clearInterval(watch);
      timer = watch = null;
    },
  };
}
