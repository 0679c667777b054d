import type postgres from 'postgres';
import type { Logger } from '../kernel/logger.js';

/**
 * Whether Postgres answers, as the sale path sees it. A sale that finds Postgres unreachable (or
 * refusing writes: a read-only session, as after a failover to a standby) marks it down; from then
 * on a probe (is a session writable, bounded by `probeTimeoutMs`) runs every `probeMs` until one
 * says yes, and the `up` listeners run (the dispatcher resumes admissions for the
 * handlers that sell through Postgres, stock counters are reconciled). While it is down, tickets
 * of those handlers wait in line instead of failing. A probe may take seconds: a Postgres that
 * answers slowly is up (slow sells are the pressure signal's business, scheduler/pg-pressure.ts);
 * with a 1 s bound, one behind a 0.7 s link never came back, and its sale stayed paused.
 */
/**
 * Whether a session of this pool may write. Not `select 1`: a read-only Postgres answers that,
 * and a sale paused for it resumed only to be refused again (readiness asks this too).
 */
export async function writable(sql: postgres.Sql): Promise<boolean> {
  const [r] = await sql<{ ro: string }[]>`select current_setting('transaction_read_only') as ro`;
  return r?.ro === 'off';
}

/**
 * SQLSTATE class 53, insufficient resources: a disk full (53100), out of memory (53200), too many
 * connections (53300), a configuration limit (53400). Postgres answers, and says yes to the
 * probe's question (its sessions are not read-only), yet refuses the sale's writes.
 */
const RESOURCES: Record<string, string> = { '53000': 'insufficient resources', '53100': 'disk full', '53200': 'out of memory', '53300': 'too many connections', '53400': 'a configuration limit reached' };
const isResource = (reason: string) => /^53[0-9A-Z]{3}$/.test(reason);

/** After a resource refusal, the first try of sales again waits this long, doubling with each refusal that follows a try within RETRY_RESET_MS, up to RETRY_MAX_MS. */
const RETRY_MAX_MS = 8000;
const RETRY_RESET_MS = 30_000;
/** How long a try of sales after a resource refusal must go unrefused to count as Postgres taking writes again. */
const TRY_SETTLE_MS = 1000;

export interface PgHealth {
  readonly up: boolean;
  /**
   * While Postgres refuses the sale's writes for want of a resource (class 53: a full disk…), or did
   * within the last tries: what it lacks, for readiness and the item views; else null.
   */
  refusing(now: number): string | null;
  /** Sales are being tried again after a resource refusal (up since it): admissions go ahead, though views and readiness still say `refusing`. */
  trying(): boolean;
  /** `busy`: Postgres gave a call up for now (a lock or statement timeout, a deadlock), not lost. */
  markDown(reason: string, busy?: boolean): void;
  /** `busy`: every call that marked it down since it was last up was a busy one (nothing was lost). */
  onUp(listener: (busy: boolean) => void): void;
  /** A session answered read-only outside the probe (readiness): see whether the pool's sessions are stale. */
  readOnlySeen(): Promise<void>;
  /** `p`, counted as a sale's call under way until it settles (stalledMs). */
  track<T>(p: Promise<T>): Promise<T>;
  /**
   * How long sale calls have been under way with none settling (ms; 0 with none under way). A
   * Postgres that falls silent (no answer, no reset: a partition) fails no call until the driver's
   * timeout (15 s by default), and meanwhile it read as up: waiting users were told an ETA that
   * counted down to nothing and the item `open` (a review: 5,473 polls in one stall). Progress,
   * not the oldest call's age: calls queue behind a running batch, and on a slow Postgres that
   * still sells (~300 orders/s) the oldest waited over 3 s while batches settled every second or
   * two (the sale flipped between open and paused). And not the sale calls alone: once none has
   * settled for 2 s, a `select 1` is sent, and its answer counts as progress — a call waiting on a
   * row lock, or one batch slower than 5 s, is not a silent Postgres (one stuck seckill call paused
   * coupon items whose claims answered in 4 ms, and the pause held itself: nothing was admitted
   * that could settle). Reading it sends that query when due.
   */
  stalledMs(now: number): number; // `now`: performance.now() (a step of the wall clock is no stall, nor hides one)
  /**
   * How long the oldest sale call under way has waited (ms; 0 with none). Every way a call can wait
   * on Postgres ends with its socket (the silence watch, FLOODGATE_PG_TIMEOUT_MS); one older than
   * `stuckAfterMs` waits on something else (the driver, a handler's own code) and may never end:
   * its tickets stay admitted with their units held. The stall check cannot see it (a `select 1`
   * answers, and counts as progress), so this says it: a gauge, and an error logged once per call.
   */
  oldestMs(now: number): number;
  stop(): void;
}

/** A sale call waiting this long past the silence watch's time is taken as stuck (2 × FLOODGATE_PG_TIMEOUT_MS by default). */
export const stuckAfterMsOf = (pgTimeoutMs: number) => 2 * pgTimeoutMs;

export function createPgHealth(
  sql: postgres.Sql,
  log: Logger,
  opts: { probeMs: number; probeTimeoutMs: number; stuckAfterMs?: number } = { probeMs: 250, probeTimeoutMs: 5000 },
  endStaleReadOnly?: () => Promise<number>,
): PgHealth {
  let up = true;
  let onlyBusy = true;
  let stopped = false;
  let probing: Promise<void> | null = null;
  let lastStaleCheck = -Infinity;

  /**
   * A session of the pool answered read-only: a new session may say otherwise (the read-only
   * default was reset since this pool's sessions started), and then they go. At most once a second.
   */
  async function readOnlySeen() {
    if (!endStaleReadOnly || performance.now() - lastStaleCheck < 1000) return;
    lastStaleCheck = performance.now();
    const ended = await endStaleReadOnly().catch(() => 0);
    if (ended) log.warn({ ended }, 'postgres takes writes again; sessions that started read-only ended');
  }
  const listeners: ((busy: boolean) => void)[] = [];
  /** Sale calls under way, oldest first (a Set keeps the order they were added in), each told of once if stuck. */
  const calls = new Set<{ at: number; told: boolean }>();
  /** Since when none has settled (the last settle, or the first call after none was under way). */
  let progressAt = 0;
  let asking = false;
  const stuckAfterMs = opts.stuckAfterMs ?? stuckAfterMsOf(15_000);
  /** Looks for stuck calls while any is under way (started by the first, stopped at a tick with none). */
  let stuckWatch: NodeJS.Timeout | null = null;
  const unwatch = () => {
    if (stuckWatch) clearInterval(stuckWatch);
    stuckWatch = null;
  };
  function watchStuck() {
    // (Stopped at a tick with none under way rather than as the last ends: a sale's calls end
    // together by the batch, hundreds of times a second.)
    if (calls.size === 0) return unwatch();
    const now = performance.now();
    let fresh = 0;
    let oldest = 0;
    for (const c of calls) {
      if (now - c.at <= stuckAfterMs) break;
      oldest ||= now - c.at;
      if (c.told) continue;
      c.told = true;
      fresh++;
    }
    if (fresh)
      log.error(
        { stuck: fresh, oldestMs: Math.round(oldest), underWay: calls.size, afterMs: stuckAfterMs },
        "sale calls to Postgres have waited past the silence watch's time with no answer; their tickets stay admitted until they end (floodgate_postgres_oldest_call_seconds)",
      );
  }

  /** The last resource refusal (its reason and when, performance.now()), the wait before the next try of sales, and refusals since the pause was logged. */
  let refused: { reason: string; at: number } | null = null;
  /** When a sale's call last settled without an error (performance.now()). */
  let workedAt = -Infinity;
  let retryMs = 0;
  let upAt = -Infinity;
  let quietDowns = 0;

  async function probeUntilUp() {
    // A resource refusal: Postgres answers and the probe would say yes at once, and the sale was
    // refused again 250 ms later, four times a second for as long as the disk was full, each time
    // logged as a pause and a resume (a review: 83 pairs in 22 s; /readyz said ready throughout).
    // The tries of sales back off instead.
    if (retryMs > opts.probeMs) await new Promise((r) => setTimeout(r, retryMs - opts.probeMs));
    while (!stopped) {
      await new Promise((r) => setTimeout(r, opts.probeMs));
      const ok = await Promise.race([
        writable(sql).catch(() => null),
        new Promise<null>((r) => setTimeout(() => r(null), opts.probeTimeoutMs).unref()),
      ]);
      if (ok) break;
      if (ok === false) await readOnlySeen();
    }
    if (stopped) return;
    up = true;
    upAt = performance.now();
    if (!refused) log.warn('postgres reachable again; sales resume');
    else (quietDowns % 4 === 0 ? log.warn.bind(log) : log.debug.bind(log))({ lacking: RESOURCES[refused.reason] ?? refused.reason, waitedMs: Math.max(retryMs, opts.probeMs) }, 'sales are tried again after a refusal for want of a resource');
    for (const l of listeners) l(onlyBusy);
  }

  return {
    get up() {
      return up;
    },
    markDown(reason, busy = false) {
      if (!up) onlyBusy &&= busy;
      if (!up || stopped) return;
      up = false;
      onlyBusy = busy;
      const now = performance.now();
      if (isResource(reason)) {
        // Refused again soon after a try: the next try waits twice as long.
        const again = refused !== null && now - upAt < RETRY_RESET_MS;
        retryMs = again ? Math.min(RETRY_MAX_MS, Math.max(opts.probeMs, retryMs) * 2) : opts.probeMs;
        quietDowns = again ? quietDowns + 1 : 0;
        refused = { reason, at: now };
        // Said at the first refusal of a run, then every fourth try (~30 s apart once at 8 s).
        const fields = { reason, lacking: RESOURCES[reason] ?? 'a resource', ...(again && { tries: quietDowns }) };
        const message = 'postgres refuses writes for want of a resource; admissions of postgres-backed handlers pause';
        if (quietDowns % 4 === 0) log.warn(fields, message);
        else log.debug(fields, message);
      } else {
        refused = null;
        retryMs = 0;
        quietDowns = 0;
        log.warn({ reason }, 'postgres unreachable or busy; admissions of postgres-backed handlers pause');
      }
      probing = probeUntilUp().finally(() => (probing = null));
    },
    refusing(now) {
      if (!refused) return null;
      // Between tries, and through a try until a sale's call has worked or TRY_SETTLE_MS have
      // passed unrefused. (Read only: the refusal stays for the backoff, which a getter that
      // cleared it reset to 250 ms whenever a try took over a second to be refused; a review.)
      if (up && upAt > refused.at && (workedAt > upAt || now - upAt > TRY_SETTLE_MS)) return null;
      return `postgres refuses the sale's writes: ${RESOURCES[refused.reason] ?? 'a resource lacking'} (SQLSTATE ${refused.reason})`;
    },
    trying: () => up && refused !== null && upAt > refused.at && !(workedAt > upAt),
    onUp: (l) => void listeners.push(l),
    readOnlySeen,
    track(p) {
      const call = { at: performance.now(), told: false };
      if (calls.size === 0) progressAt = call.at;
      calls.add(call);
      if (!stopped) stuckWatch ??= setInterval(watchStuck, Math.min(5000, Math.max(50, stuckAfterMs / 4))).unref();
      return p.then(
        (v) => {
          workedAt = performance.now();
          return v;
        },
        (err: unknown) => Promise.reject(err),
      ).finally(() => {
        progressAt = performance.now();
        calls.delete(call);
      });
    },
    oldestMs(now) {
      for (const c of calls) return Math.max(0, now - c.at);
      return 0;
    },
    stalledMs(now) {
      if (calls.size === 0) return 0;
      if (now - progressAt > 2000 && !asking && !stopped) {
        asking = true;
        void sql`select 1`
          .then(() => void (progressAt = Math.max(progressAt, performance.now())))
          .catch(() => {})
          .finally(() => (asking = false));
      }
      return Math.max(0, now - progressAt);
    },
    stop() {
      stopped = true;
      unwatch();
      void probing;
    },
  };
}
