import type { Clock } from '../kernel/clock.js';
import type { Logger } from '../kernel/logger.js';
import type { Line } from '../queue/line.js';
import type { ItemSnapshot } from '../queue/snapshot.js';
import type { AdmittedTicket } from '../queue/types.js';
import type { JobQueues } from '../service/jobs.js';
import type { HandlerRegistry } from '../service/registry.js';
import { deadlineOf } from '../service/handler.js';

export interface DispatcherOptions {
  /** Longest pause between rounds when a round admitted nothing (ms); wake() cuts it short. */
  idleMs: number;
  /** Most tickets admitted per item per round. */
  batch: number;
  /** Lease held between admission and the job being queued; a crash in between re-offers the ticket. */
  dispatchLeaseMs: number;
  /** In-flight cap of an `auto` gate until its controller publishes a limit (a slow start). */
  autoCap: number;
}

/**
 * The scheduler's outflow: in rounds, for every item served in-process, admit from the head of the
 * line as far as its gate allows and hand the tickets to the handler's job queue. Every daemon runs
 * one; they share each item's gate through the atomic admit script. Once a job is queued, the
 * ticket's lease is extended to cover the job's whole life, so the lease sweeper leaves it alone
 * and BullMQ's own stall recovery re-runs it if a worker dies.
 *
 * Idle, it sleeps up to `idleMs`; a join or a settled ticket in this process wakes it at once
 * (polling every 10 ms instead cost a quarter of the daemon's HTTP throughput on two cores).
 * Joins through other daemons are admitted by their own dispatchers.
 */
/** How long a held view that says the gate is closed is believed without reading the item again. */
export const CLOSED_RECHECK_MS = 1000;
/**
 * An item whose last admit emptied its line is asked again once DRAINED_JOINS joins came for it
 * through this daemon, or after this many rounds' time (a round's duration, averaged over the
 * rounds that made an admit call), never later than DRAINED_GAP_MAX_MS: calm, a round takes a few
 * ms and so does the wait; in a sale spread over many items, where the daemon's thread is the bound
 * and a round takes ~80 ms, each item's trickle of joins is admitted in batches instead of one or
 * two a round (200 items: 2,400 admit calls a second for ~3,000 tickets, each with its view read,
 * lease extension and settle call; see docs/design-notes.md), while a line a flood refills is
 * asked again as soon as it holds a batch worth the call.
 */
export const DRAINED_GAP_ROUNDS = 10;
export const DRAINED_GAP_MAX_MS = 1000;
export const DRAINED_JOINS = 16;

/** The lines whose last admit emptied them, and how long each waits before it is asked again. */
export function drainedLines(clock: Clock) {
  const at = new Map<string, { t: number; joins: number }>();
  /** A round's duration (ms), averaged over the rounds that made an admit call. */
  let roundMs = 0;
  const gapMs = () => Math.min(DRAINED_GAP_MAX_MS, DRAINED_GAP_ROUNDS * roundMs);
  const self = {
    /** The earliest a deferred line is due this round (the idle wait ends then). */
    dueAt: Infinity,
    /** Lines deferred this round. */
    deferred: 0,
    gapMs,
    emptied(itemId: string) {
      at.set(itemId, { t: clock.now(), joins: 0 });
    },
    /** A join for the item came through this daemon. */
    joined(itemId: string) {
      const e = at.get(itemId);
      if (e) e.joins++;
    },
    /** Whether to leave the line alone this round; a line past its gap is forgotten (asked as any other). */
    defer(itemId: string): boolean {
      const e = at.get(itemId);
      if (e === undefined) return false;
      if (e.joins < DRAINED_JOINS && clock.now() - e.t < gapMs()) {
        self.dueAt = Math.min(self.dueAt, e.t + gapMs());
        self.deferred++;
        return true;
      }
      at.delete(itemId);
      return false;
    },
    roundTook(ms: number) {
      roundMs = 0.8 * roundMs + 0.2 * ms;
    },
    newRound() {
      self.dueAt = Infinity;
      self.deferred = 0;
    },
    /** Forgets lines emptied longer ago than the longest gap (items that left the active set). */
    prune() {
      for (const [id, e] of at) if (clock.now() - e.t >= DRAINED_GAP_MAX_MS) at.delete(id);
    },
  };
  return self;
}

export function startDispatcher(
  deps: {
    queue: Pick<Line, 'items' | 'admissions' | 'definitions'>;
    handlers: HandlerRegistry;
    jobs: JobQueues;
    clock: Clock;
    log: Logger;
    /** Told of every admission this dispatcher makes (for the admissions counter). */
    onAdmitted?: (itemId: string, n: number) => void;
    /** The in-flight cap of a self-limited handler now, from its own (Postgres pressure, pg-pressure.ts). */
    selfLimitedCap?: (handlerCap: number) => number;
    /** Told after each round: admit calls made, tickets admitted, items deferred (their lines had just emptied). */
    onRound?: (r: { admitCalls: number; admitted: number; deferred: number }) => void;
    /** Whether the store `handler` sells through is being tried again (db/health.ts trying): its items admit though they read away. */
    storeTrying?: (handler: string) => boolean;
    /** How many tickets an item whose own downstream does not answer may admit now to try it (service/downstream-health.ts probe; 0: none). */
    probe?: (itemId: string) => number;
    /** What a round waits for before it admits, when there is one (daemon.ts: the check of operators' writes after a Redis reconnect). */
    hold?: () => Promise<unknown> | null;
  },
  opts: DispatcherOptions,
) {
  const { queue, handlers, jobs, clock, log } = deps;
  /** Items met whose handler this daemon does not have (warned about once each). */
  const unhandled = new Set<string>();
  let stopped = false;
  let ids: string[] = [];
  let idsAt = -Infinity;
  const busy = new Set<string>();
  /** Items a join was just seen for: tried even while the cached view still says the line is empty. */
  const hinted = new Set<string>();
  let failing = false;
  let wakeUp: (() => void) | null = null;
  /** A wake that came while no one was waiting (during a round or the 5 ms pause). */
  let pending = false;
  const drained = drainedLines(clock);
  /**
   * The earliest time, this round, at which an item whose pace alone held its waiting tickets lets
   * the next one in (admit-12.lua's code 2): the idle wait ends then. It waited the whole idle wait
   * (up to 100 ms) instead, and a pace with a burst of one ticket (under 20/s) lost the time between
   * each admission's due time and the next visit: 7/s delivered 4.1-6.7/s, 15/s 7.4-13.3/s. Only
   * an item with tickets waiting and an open gate makes an admit call, so an empty or closed line
   * still costs nothing here.
   */
  let pacedDueAt = Infinity;
  let admitCalls = 0;
  /**
   * Items woken while the active set was being read: the read's answer replaces `ids`, and a wake
   * added to the list it replaced was lost with it (until the next wake). The line's own entry in
   * the set usually brought it back within a second, but not when that entry was missing — a Redis
   * loss another process restored, the daemon's copy of what it had written being stale — and then
   * a burst of joins that all came during the read waited a minute (test/dispatcher.test.ts).
   */
  let wokenDuringRead: Set<string> | null = null;

  /** What a round admitted for one item, to be queued with the round's other tickets of its handler. */
  type Admitted = { handler: string; itemId: string; tickets: AdmittedTicket[]; deadlineMs: number; version: number };

  /** The item stays active, or leaves the active set (woken later if its window or draw comes by the clock). */
  function keepAsNeeded(snap: ItemSnapshot) {
    if (snap.counts.waiting > 0 || snap.counts.admitted > 0 || snap.inDoubt > 0) queue.items.keepAsNeeded(snap);
  }

  /** The sale window has ended and the line is not cut yet. */
  const windowEnded = (snap: ItemSnapshot) => snap.def.closesAt !== null && clock.now() >= snap.def.closesAt && !snap.closed;

  async function roundFor(itemId: string): Promise<Admitted | null> {
    // Its line was empty a moment ago: let joins gather (a join's hint waits in `hinted`).
    if (drained.defer(itemId)) return null;
    // A line behind a closed gate admits nobody: its held view decides for up to a second (a gate
    // change made here drops the view at once; another daemon's is seen within that second), so
    // such a line costs neither a view read every round nor an admit call that can only refuse
    // (1,000 of them, one ticket waiting in each, kept 0.85 cores and 60,000 Redis commands/s busy).
    const held = queue.items.peek(itemId);
    // (Not once the window has ended: the cut below must come, and other readers of the view —
    // the series recorder, joins — keep it under a second old, so the recheck never came.)
    if (held && held.snap.gate.mode === 'closed' && clock.now() - held.snap.loadedAt < CLOSED_RECHECK_MS && !windowEnded(held.snap)) {
      keepAsNeeded(held.snap);
      return null;
    }
    const item = await queue.items.item(itemId);
    const spec = item && handlers.get(item.snap.def.handler);
    if (!item) return null;
    // A line with work in it keeps its item among the active ones (items.activeItemIds); one that
    // waits behind a closed gate with nothing out leaves them (items.loopNeed).
    keepAsNeeded(item.snap);
    // The window ended: waiting tickets end `closed` (for external items too, which nobody may pull).
    // Read afresh first: from a view an operator's later closesAt had not reached yet (its PUT
    // through another daemon, within the cache's time), the cut closed an item whose sale had ten
    // minutes left, and told every waiting user `closed`.
    if (windowEnded(item.snap)) {
      const fresh = await queue.items.item(itemId, { fresh: true });
      if (fresh && windowEnded(fresh.snap)) queue.definitions.endWindow(itemId);
      return null;
    }
    if (!spec && !unhandled.has(itemId)) {
      unhandled.add(itemId);
      log.warn({ itemId, handler: item.snap.def.handler }, 'item not admitted: this daemon has no such handler (FLOODGATE_HANDLERS_MODULE?); its tickets wait, and read paused');
    }
    if (!spec?.handle || spec.external || item.snap.gate.mode === 'closed') return null;
    // Before its opening (moved later with tickets waiting) the line admits nobody: no admit call
    // each round (it kept the item active for as long as seven days, ten calls a second on every
    // daemon); the wake keepAsNeeded asked for (opensAt) brings it back.
    if (item.snap.def.opensAt !== null && clock.now() < item.snap.def.opensAt) return null;
    // While the store its handler sells through is unreachable (Postgres, for seckill and coupon:
    // LineDeps.storeAway), the item admits nobody: tickets wait in line (and keep their places, and
    // read `paused`) instead of failing; admissions resume when it answers again.
    // (But for the try of sales Postgres health makes after a refusal for want of a resource: views
    // and readiness still say it refuses until the try has gone a second unrefused.)
    const away = item.storeAway() && !deps.storeTrying?.(item.snap.def.handler);
    if (away && spec.stockTable) return null;
    if (item.snap.counts.waiting === 0 && !busy.has(itemId) && !hinted.delete(itemId)) return null;
    // (An item whose own downstream does not answer: a ticket or a few now and then, to try it.)
    const probe = away ? (deps.probe?.(itemId) ?? 0) : 0;
    if (away && !probe) return null;
    const cap = spec.selfLimited ? (deps.selfLimitedCap?.(spec.selfLimited.maxInFlight) ?? spec.selfLimited.maxInFlight) : opts.autoCap;
    admitCalls++;
    const { tickets: got, drained: emptied, pacedForMs, stale } = await queue.admissions.admitRound(itemId, away ? probe : opts.batch, opts.dispatchLeaseMs, cap, item.snap.version);
    if (stale) {
      // Redefined since this view was read (another daemon's PUT): nothing was admitted, and the
      // next round reads the item afresh. Run under this view, the tickets went to the old handler
      // (coupon claims on a seckill item, which then sold 120 of 100) or its old config.
      queue.items.invalidate(itemId);
      hinted.add(itemId);
      pending = true;
      return null;
    }
    if (emptied) drained.emptied(itemId);
    if (pacedForMs != null) pacedDueAt = Math.min(pacedDueAt, clock.now() + pacedForMs);
    if (!got.length) {
      busy.delete(itemId);
      return null;
    }
    busy.add(itemId);
    deps.onAdmitted?.(itemId, got.length);
    return { handler: spec.name, itemId, tickets: got, deadlineMs: deadlineOf(spec, item.snap.def.config), version: item.snap.version };
  }

  /**
   * Queues a round's admissions: one job per handler for all its items (up to the batch), then
   * each item's leases extended to cover the job's life. A job per item made a sale spread over
   * many items queue many small jobs a round (service/jobs.ts says what that cost).
   */
  async function dispatchRound(admitted: Admitted[]): Promise<number> {
    const byHandler = new Map<string, Admitted[]>();
    for (const a of admitted) {
      const list = byHandler.get(a.handler);
      if (list) list.push(a);
      else byHandler.set(a.handler, [a]);
    }
    await Promise.all([...byHandler].map(([handler, list]) => jobs.dispatch(handler, list)));
    await Promise.all(admitted.map((a) => queue.admissions.extendLeases(a.itemId, a.tickets.map((t) => ({ seq: t.seq, leaseId: t.leaseId })), clock.now() + jobs.leaseMs(a.deadlineMs))));
    return admitted.reduce((n, a) => n + a.tickets.length, 0);
  }

  const done = (async () => {
    while (!stopped) {
      let admitted = 0;
      try {
        const held = deps.hold?.();
        if (held) await held;
        if (clock.now() - idsAt > 1000) {
          // The active items (items.activeItemIds): a daemon's start and a Redis reconnect make every
          // item active (items.activateAll), so a line whose item fell out of the set is found again.
          wokenDuringRead = new Set();
          try {
            ids = await queue.items.activeItemIds();
          } finally {
            const woken = [...wokenDuringRead].filter((id) => !ids.includes(id));
            if (woken.length) ids = [...ids, ...woken];
            wokenDuringRead = null;
          }
          idsAt = clock.now();
          drained.prune();
        }
        const startedAt = clock.now();
        admitCalls = 0;
        pacedDueAt = Infinity;
        drained.newRound();
        // One item's failure (its admit call timed out, say) must not hold the others' tickets:
        // what was admitted is queued, then the failure is reported.
        const rounds = await Promise.allSettled(ids.map(roundFor));
        admitted = await dispatchRound(rounds.flatMap((r) => (r.status === 'fulfilled' && r.value ? [r.value] : [])));
        if (admitCalls) drained.roundTook(clock.now() - startedAt);
        deps.onRound?.({ admitCalls, admitted, deferred: drained.deferred });
        const failed = rounds.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failed) throw failed.reason;
        if (failing) log.info('dispatcher recovered');
        failing = false;
      } catch (err) {
        if (!failing) log.warn({ err: String(err) }, 'dispatch round failed');
        failing = true;
      }
      if (admitted) await new Promise((r) => setImmediate(r));
      else {
        // At most one empty round per 5 ms: under a flood of joins with the gate full, every join
        // would otherwise buy an admit call that admits nothing.
        await new Promise((r) => setTimeout(r, 5));
        if (!pending)
          await new Promise<void>((r) => {
          const timer = setTimeout(() => {
            wakeUp = null;
            r();
          }, failing ? 500 : Math.max(1, Math.min(opts.idleMs, drained.dueAt - clock.now(), pacedDueAt - clock.now())));
          wakeUp = () => {
            clearTimeout(timer);
            wakeUp = null;
            r();
          };
        });
        pending = false;
      }
    }
  })();

  return {
    /** Something may be admissible now (a join for `itemId`, or a settled ticket freed a slot). */
    wake(itemId?: string) {
      if (itemId) {
        hinted.add(itemId);
        drained.joined(itemId);
        // A new item is dispatched from its first join, not from the next refresh of the item list.
        if (!ids.includes(itemId)) ids = [...ids, itemId];
        wokenDuringRead?.add(itemId);
      }
      pending = true;
      wakeUp?.();
    },
    async stop() {
      stopped = true;
      wakeUp?.();
      await done;
    },
  };
}
