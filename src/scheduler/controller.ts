import { CLOSED_RECHECK_MS } from './dispatcher.js';
import type { Clock } from '../kernel/clock.js';
import type { Logger } from '../kernel/logger.js';
import type { GateStore } from './gate-store.js';
import type { Line } from '../queue/line.js';
import type { HandlerRegistry } from '../service/registry.js';
import { defaultParams, enforced, idle, initialState, ready, step, type ControlState, type SampleWindow } from './control-law.js';

export interface ControllerEvents {
  /** A change of the enforced limit by 2× or more (audited, at most every 10 s per item). */
  largeChange(itemId: string, before: { limit: number; rate: number | null }, after: { limit: number; rate: number | null }): void;
  leaderChange(itemId: string): void;
  published(itemId: string, s: ControlState, view: { limit: number; rate: number | null; inflight: number }): void;
  /** A tick (or a prune) in which this daemon did not drive the item's gate: not its leader, gate closed, nothing to drive. What it published of the item is not its to show any more. */
  resting?(itemId: string): void;
}

interface Local {
  leading: boolean;
  /** The life of the item this entry is of (snapshot.ts `incarnation`: its secret and define-5.lua's `born`). */
  incarnation: string;
  /** When this daemon last ticked the item as its leader (-Infinity: never), and last saw it at all. */
  ledAt: number;
  seenAt: number;
  state: ControlState | null;
  prev: Record<string, string> | null;
  window: SampleWindow & { openedAt: number; inflightMin: number };
  audited: { limit: number; rate: number | null; at: number } | null;
}

const emptyWindow = (now: number, inflight: number) => ({ n: 0, drops: 0, hist: new Map(), probeHist: new Map(), inflightMax: inflight, inflightMin: inflight, waiting: 0, openedAt: now });

/** Counters only grow; a drop means they were reset (a Redis loss): treat what is there as new. */
function delta(cur: Record<string, string>, prev: Record<string, string> | null, prefix: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const [k, v] of Object.entries(cur)) {
    if (k[0] !== prefix) continue;
    const d = Number(v) - Number(prev?.[k] ?? 0);
    if (d > 0) out.set(Number(k.slice(1)), d);
  }
  return out;
}

/**
 * The adaptive gate's control loop. Every daemon runs it; for each item served in-process one
 * daemon holds the item's leader lease and steps the control law every tick over the samples all
 * daemons reported, publishing the limit and pace that every daemon's admissions obey. The law's
 * state is published too, so a new leader (failover within the lease time) resumes it.
 * In `manual` mode it runs in shadow: published for operators to compare, not obeyed.
 */
export function startController(
  deps: { store: GateStore; queue: Pick<Line, 'items'>; handlers: HandlerRegistry; clock: Clock; log: Logger; events: ControllerEvents },
  opts: { tickMs: number; leaseMs: number; me: string; startLimit: number },
) {
  const { store, queue, clock, log } = deps;
  const locals = new Map<string, Local>();
  let ids: string[] = [];
  let idsAt = -Infinity;

  /** One item's tick; whether this daemon drove its gate (led it and published). */
  async function tickItem(itemId: string): Promise<boolean> {
    // An item this law does not drive costs no view read per tick: a self-limited handler's (its
    // handler changes only by a redefinition, which this daemon's views follow), or one behind a
    // closed gate, as its held view says for up to a second (dispatcher.ts).
    const held = queue.items.peek(itemId);
    if (held) {
      const heldSpec = deps.handlers.get(held.snap.def.handler);
      if (!heldSpec?.handle || heldSpec.selfLimited) return false;
      if (held.snap.gate.mode === 'closed' && clock.now() - held.snap.loadedAt < CLOSED_RECHECK_MS) return false;
    }
    const item = await queue.items.item(itemId);
    const spec = item && deps.handlers.get(item.snap.def.handler);
    if (!item || !spec?.handle || spec.selfLimited || item.snap.gate.mode === 'closed') return false;
    let local = locals.get(itemId);
    const seen = clock.now();
    // What this daemon holds of an item it has not ticked as leader for longer than the lease, or
    // of an earlier life of the item (removed by retention and defined again), is not the item's
    // state now: the lease ran out in between, and another daemon may have led and published since
    // (or the item is a new one). `leading` went false only when a renewal failed, not when the
    // ticks stopped (gate closed, item inactive, item removed), so such a daemon taking the lease
    // again skipped the reload and published its old limit, baseline and a window spanning the gap.
    // The entry goes, and the daemon starts as a new leader would: from what is published.
    if (local && (local.incarnation !== item.snap.incarnation || (local.leading && seen - local.ledAt > opts.leaseMs))) {
      locals.delete(itemId);
      local = undefined;
    }
    if (!local) locals.set(itemId, (local = { leading: false, incarnation: item.snap.incarnation, ledAt: -Infinity, seenAt: seen, state: null, prev: null, window: emptyWindow(seen, 0), audited: null }));
    local.seenAt = seen;
    if (!(await store.lead(itemId, opts.me, opts.leaseMs))) {
      local.leading = false;
      return false;
    }
    const now = clock.now();
    local.ledAt = now;
    const inflight = await store.readInFlight(itemId, item.snap.def.lines);
    const gate = await store.readGate(itemId);
    if (!local.leading) {
      deps.events.leaderChange(itemId);
      log.info({ itemId, me: opts.me }, 'gate leadership taken');
      local.leading = true;
      local.prev = null;
      local.state = gate.aState ? (JSON.parse(gate.aState) as ControlState) : null;
      local.window = emptyWindow(now, inflight);
    }
    const probes = local.state?.probes ?? 0;
    if (gate.aReset) {
      // A switch to auto: never resume a stale estimate; start from what is in flight and probe.
      // The probe count carries on (the probes metric counts by it).
      // The window goes too: its samples were taken under the operator's pace, and the first step
      // read that pace as what the downstream carries (startup ended at a limit of 2 on a
      // downstream of 8 workers, and admissions crawled for seconds).
      local.state = null;
      local.window = emptyWindow(now, inflight);
      await store.publishAsLeader(itemId, opts.me, { aReset: '' });
    }
    local.state ??= { ...initialState(now, Math.max(opts.startLimit, inflight)), probes };
    const counters = await store.readSamples(itemId);
    if (local.prev) {
      const w = local.window;
      w.n += Math.max(0, Number(counters.n ?? 0) - Number(local.prev.n ?? 0));
      w.drops += Math.max(0, Number(counters.d ?? 0) - Number(local.prev.d ?? 0));
      for (const [b, c] of delta(counters, local.prev, 'h')) w.hist.set(b, (w.hist.get(b) ?? 0) + c);
      for (const [b, c] of delta(counters, local.prev, 'p')) w.probeHist.set(b, (w.probeHist.get(b) ?? 0) + c);
    }
    local.prev = counters;
    local.window.inflightMax = Math.max(local.window.inflightMax, inflight);
    local.window.inflightMin = Math.min(local.window.inflightMin, inflight);
    // In manual mode the operator's gate holds the line on purpose: no stalls in shadow.
    local.window.waiting = item.snap.gate.mode === 'auto' ? item.snap.counts.waiting : 0;
    // Nothing offered to the downstream (no answer, nothing in flight, nothing waiting): the window
    // starts again, so that its length is time the downstream had work (see `idle`).
    if (idle(local.window, inflight)) local.window = emptyWindow(now, 0);

    const params = { ...defaultParams, maxLimit: item.snap.gate.maxInFlight ?? defaultParams.maxLimit };
    const w = local.window;
    // While probing, every tick with answers is a step: the probe's own end rule decides, and
    // waiting for a full window kept the limit pinned for a second at low rates. A stall is a
    // step too: with no answers coming, waiting for samples would wait forever.
    if (ready(local.state, w, w.openedAt, now, params)) {
      local.state = step(local.state, { ...w, ms: now - w.openedAt }, now, params);
      local.window = emptyWindow(now, inflight);
    }
    const e = enforced(local.state, params);
    const s = local.state;
    // Only while still the leader: a tick that stalled past the lease wrote its stale limit over
    // the new leader's (one tick, but an over-admission on a flooded downstream).
    const wrote = await store.publishAsLeader(itemId, opts.me, {
      aLimit: e.limit,
      aRate: e.rate === null ? '' : e.rate.toFixed(3),
      aProbeStart: s.probe ? s.probe.startedAt : '',
      aBase: s.baseMs === null ? '' : s.baseMs.toFixed(2),
      aP50: s.p50Ms === null ? '' : s.p50Ms.toFixed(2),
      aP99: s.p99Ms === null ? '' : s.p99Ms.toFixed(2),
      aLeader: opts.me,
      aState: JSON.stringify(s),
    });
    if (!wrote) {
      // The lease went to another daemon meanwhile: it leads from what it read, not from this.
      local.leading = false;
      return false;
    }
    deps.events.published(itemId, s, { ...e, inflight });
    const a = local.audited;
    // Audited only as the gate it is (auto): in manual mode the estimate runs in shadow, and an
    // audit row said the gate moved while the operator's 3/s held (a review's run).
    if (!a || item.snap.gate.mode !== 'auto') local.audited = { ...e, at: now };
    else if ((e.limit >= 2 * a.limit || 2 * e.limit <= a.limit) && now - a.at >= 10_000) {
      deps.events.largeChange(itemId, { limit: a.limit, rate: a.rate }, e);
      local.audited = { ...e, at: now };
    }
    return true;
  }

  /**
   * Drops the entries of items not ticked for longer than the lease (closed, inactive, removed):
   * each would start afresh at its next tick anyway, and kept, the map grew by every item this
   * daemon ever saw. A lease not renewed for that long has run out, so none is left to hand over.
   */
  function prune(now: number) {
    for (const [itemId, l] of locals)
      if (now - l.seenAt > opts.leaseMs) {
        locals.delete(itemId);
        deps.events.resting?.(itemId);
      }
  }

  let stopped = false;
  let failing = false;
  const done = (async () => {
    while (!stopped) {
      try {
        if (clock.now() - idsAt > 1000) {
          ids = await queue.items.activeItemIds();
          idsAt = clock.now();
          prune(idsAt);
        }
        await Promise.all(ids.map(async (itemId) => (await tickItem(itemId)) || deps.events.resting?.(itemId)));
        failing = false;
      } catch (err) {
        if (!failing) log.warn({ err: String(err) }, 'controller tick failed');
        failing = true;
      }
      await new Promise((r) => setTimeout(r, opts.tickMs));
    }
  })();
  return {
    /** How many items this daemon keeps state of (led or seen within about the lease). */
    tracked: () => locals.size,
    /**
     * Ends the loop, then hands over the leases it holds: a graceful stop (a deploy) that left them
     * to run out kept each item it led without a controller for up to `leaseMs`, the other daemons
     * refused by lead-1.lua until then. A lease renewed for 1 ms is one that has ended (lead-1.lua
     * renews only this daemon's own, so none is taken from another); the next daemon takes it at
     * its next tick and resumes the published state. A failed hand-over leaves the lease to run out.
     */
    async stop() {
      stopped = true;
      await done;
      const led = [...locals].filter(([, l]) => l.leading).map(([itemId]) => itemId);
      await Promise.all(led.map((itemId) => store.lead(itemId, opts.me, 1).catch(() => false)));
      if (led.length) log.info({ items: led.length }, 'gate leadership handed over');
    },
  };
}
