import type { Clock } from './clock.js';
import type { Logger } from './logger.js';

/** Redis's TIME: seconds and microseconds (redis/client.ts serverTime). */
type ServerTime = () => Promise<[number, number]>;

/** How far this machine's clock may be from Redis's before the daemon takes Redis's. */
export const STEP_MS = 100;
const EVERY_MS = 10_000;
/** How often a steady base clock's drift from the wall clock is looked at (a step, a resume). */
const WATCH_MS = 1_000;
/**
 * Where the daemons tell each other that they are slewing (a key in Redis): `{ lag, at }`, their
 * time less Redis's (ms) at Redis time `at`. A daemon that starts meanwhile joins the slew instead
 * of taking Redis's time at once: it would otherwise disagree with the others by what is left of
 * it — up to the whole change, for 20 times as long — and its sweep take their leases for expired.
 */
export interface SlewBoard {
  read(): Promise<string | null>;
  write(value: string, ttlMs: number): Promise<unknown>;
}
const BOARD_TTL_MS = 3 * EVERY_MS;
const MAX_BOARD_LAG_MS = 10 * 60_000;
/** What is left of a lag of `lag` ms after `elapsed` ms of slewing. */
const lagLeft = (lag: number, elapsed: number) => Math.sign(lag) * Math.max(0, Math.abs(lag) - Math.max(0, elapsed) * SLEW);

/** A TIME whose round trip took longer than this says too little about the offset. */
const MAX_RTT_MS = 50;
/**
 * How fast a change of Redis's own clock is followed once the daemon runs: 50 ms a second. Every
 * daemon had taken a step of Redis's clock (its machine's NTP, a failover to a server whose clock
 * differs) within 10 s, each at its own moment: +120 s ended every lease at once (an outside
 * worker's 60 s lease was `lease_lost` 15 s in, running jobs' tickets swept and run again while
 * their first run went on). Slewed, a lease ends at most 5% early or late meanwhile.
 */
const SLEW = 0.05;

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
 *
 * Only the first offset taken and one after such a change of the base are steps: later, a change
 * of the offset is Redis's clock moving (or the base drifting slowly), and is slewed at SLEW; a step
 * of the base during a slew moves offset and target together. Slewing daemons say how far they are
 * on a board in Redis (SlewBoard), and a daemon started meanwhile joins them.
 */
export function redisTimeClock(base: Clock & { drift?(): number }) {
  let offset = 0;
  /** The offset being slewed to, from base time `slewFrom` (null: none). */
  let target: number | null = null;
  let slewFrom = 0;
  let taken = false;
  let timer: NodeJS.Timeout | null = null;
  let watch: NodeJS.Timeout | null = null;
  /** The offset now: a slew moves it toward its target by SLEW of the base time gone by (so time never runs backwards). */
  function current(t: number): number {
    if (target === null) return offset;
    const most = (t - slewFrom) * SLEW;
    slewFrom = t;
    if (Math.abs(target - offset) <= most) {
      offset = target;
      target = null;
    } else offset += Math.sign(target - offset) * most;
    return offset;
  }
  const clock: Clock = {
    now: () => {
      const t = base.now();
      return t + Math.round(current(t));
    },
  };

  /** Round trips too long to trust since the last offset taken: after three, the shortest of them is taken. */
  let slow: { rttMs: number; seen: number }[] = [];

  /** Whether an offset was taken (or confirmed). `step`: taken at once (the first measure, or one after the base changed). */
  async function measure(time: ServerTime, log: Logger, step: boolean): Promise<boolean> {
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
    const now = current(base.now());
    // (A base that cannot tell its own steps, the wall clock, is stepped as before.)
    if (target !== null && (step || !base.drift)) {
      // The base stepped during a slew (a resume): offset and target move by that step, and what is
      // left of the slew stays (taken whole, this daemon's time went back by the rest of the slew
      // and disagreed with the others, still slewing, by as much: a review).
      const shift = seen - target;
      if (Math.abs(shift) >= STEP_MS) {
        log.warn({ offsetMs: seen, wasMs: Math.round(target) }, "this machine's clock is not Redis's: the daemon keeps Redis's time");
        offset += shift;
        target += shift;
      }
    } else if (step || !taken || !base.drift) {
      if (Math.abs(seen - now) >= STEP_MS) {
        log.warn({ offsetMs: seen, wasMs: Math.round(now) }, "this machine's clock is not Redis's: the daemon keeps Redis's time");
        offset = seen;
      }
    } else if (Math.abs(seen - (target ?? now)) >= STEP_MS) {
      log.warn({ offsetMs: seen, wasMs: Math.round(now), overS: Math.round(Math.abs(seen - now) / SLEW / 1000) }, "redis's clock moved: the daemon follows it slowly (leases keep their length)");
      target = seen;
      slewFrom = base.now();
    }
    taken = true;
    return true;
  }

  return {
    clock,
    /**
     * Measures now (up to three tries; a failure leaves the offset as it is), then every 10 s until
     * stop(). `time`: one server's TIME, the same server every time.
     */
    async start(time: ServerTime, log: Logger, board?: SlewBoard) {
      let refused: unknown = null;
      // While slewing, say so on the board (best effort) for daemons that start meanwhile.
      const publish = () => {
        if (!board || target === null) return;
        const t = base.now();
        void board.write(JSON.stringify({ lag: Math.round(current(t) - target), at: Math.round(t + target) }), BOARD_TTL_MS).catch(() => {});
      };
      const tick = (step = false) =>
        measure(time, log, step).then(
          (ok) => (publish(), ok),
          (err: unknown) => {
            refused = err;
            return false;
          },
        );
      for (let i = 0; i < 3 && !(await tick()); i++);
      if (taken && board) {
        const said = parseBoard(await board.read().catch(() => null));
        const t = base.now();
        // (At most 10 minutes: a value no slew of the others could still be at is not taken whole.)
        const lag = said ? Math.max(-MAX_BOARD_LAG_MS, Math.min(MAX_BOARD_LAG_MS, lagLeft(said.lag, t + offset - said.at))) : 0;
        if (Math.abs(lag) >= STEP_MS) {
          log.warn({ lagMs: lag }, "the other daemons are following a change of redis's clock: this one joins them");
          target = offset;
          offset += lag;
          slewFrom = t;
        }
      }
      // (Redis's TIME refused to the daemon's user, say: it ran on its machine's clock without a word.)
      if (!taken && refused) log.warn({ err: String((refused as Error)?.message ?? refused) }, "redis's TIME could not be read: the daemon keeps its machine's clock until it can (daemons on machines whose clocks disagree then disagree on leases)");
      timer = setInterval(() => void tick(), EVERY_MS);
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
          void tick(true)
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

function parseBoard(raw: string | null): { lag: number; at: number } | null {
  if (!raw) return null;
  try {
    const v = JSON.parse(raw) as { lag?: unknown; at?: unknown };
    return typeof v.lag === 'number' && typeof v.at === 'number' && Number.isFinite(v.lag) && Number.isFinite(v.at) ? { lag: v.lag, at: v.at } : null;
  } catch {
    return null;
  }
}
