import { bucketOf, type Histogram } from '../../src/scheduler/latency-histogram.js';
import { defaultParams, enforced, initialState, ready, step, type ControlParams, type ControlState } from '../../src/scheduler/control-law.js';

/** A seeded PRNG (mulberry32), so simulations are deterministic. */
export function rng(seed: number) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Phase {
  durationMs: number;
  /** Servers of the downstream; capacity = workers / serviceMs per ms. */
  workers: number;
  serviceMs: number;
}

/**
 * A downstream with K workers and a FIFO backlog, on a 1 ms virtual clock. Service time grows
 * with its own backlog (thrashing), and past `bound` queued requests it answers 503 at once.
 * Flooded = more requests waiting for a worker than there are workers.
 * The gate in front of it follows the control law (or a fixed limit), with an endless line.
 */
export function simulate(
  phases: Phase[],
  opts: {
    fixedLimit?: number;
    params?: ControlParams;
    seed?: number;
    bound?: number;
    timeoutMs?: number;
    /** A faulty gate that admits nothing while paced below this (per s), as the GCRA's rounding once did. */
    deadBelowRate?: number;
  } = {},
) {
  const p = opts.params ?? defaultParams;
  const random = rng(opts.seed ?? 1);
  const bound = opts.bound ?? 200;
  const timeoutMs = opts.timeoutMs ?? 2000;
  let state: ControlState = initialState(0, 10, p);
  const busy: { start: number; end: number }[] = []; // in service
  const backlog: number[] = []; // start times of queued requests
  let inflight = 0;
  let tokens = 0;
  let win = { n: 0, drops: 0, hist: new Map() as Histogram, probeHist: new Map() as Histogram, inflightMax: 0, waiting: Infinity, openedAt: 0 };
  const perPhase: { delivered: number; capacity: number; floodedMs: number; ms: number; limitTrace: number[] }[] = [];
  let t = 0;
  for (const ph of phases) {
    const stats = { delivered: 0, capacity: (ph.workers / ph.serviceMs) * 1000, floodedMs: 0, ms: ph.durationMs, limitTrace: [] as number[] };
    for (let i = 0; i < ph.durationMs; i++, t++) {
      const { limit: enforcedLimit, rate } = enforced(state, p);
      const limit = opts.fixedLimit ?? enforcedLimit;
      tokens = rate && opts.fixedLimit === undefined ? Math.min(tokens + rate / 1000, Math.max(1, rate * 0.1)) : Infinity;
      if (rate !== null && opts.fixedLimit === undefined && rate < (opts.deadBelowRate ?? 0)) tokens = 0;
      while (inflight < limit && tokens >= 1) {
        inflight++;
        tokens--;
        if (backlog.length >= bound) {
          inflight--;
          record(t, 0, true);
        } else backlog.push(t);
      }
      // Downstream: start queued work on free workers; dearer when the backlog is long.
      while (busy.length < ph.workers && backlog.length) {
        const start = backlog.shift()!;
        const cost = ph.serviceMs * (1 + backlog.length / (ph.workers * 4)) * (0.8 + 0.4 * random());
        busy.push({ start, end: t + cost });
      }
      for (let j = busy.length - 1; j >= 0; j--) {
        if (busy[j].end <= t) {
          const { start } = busy[j];
          busy.splice(j, 1);
          inflight--;
          const latency = t - start;
          const drop = latency > timeoutMs;
          if (!drop) stats.delivered++;
          record(start, latency, drop);
        }
      }
      if (backlog.length > ph.workers) stats.floodedMs++;
      win.inflightMax = Math.max(win.inflightMax, inflight);
      if (i % 100 === 0) {
        if (opts.fixedLimit === undefined && ready(state, win, win.openedAt, t, p)) {
          state = step(state, win, t, p, random);
          win = { n: 0, drops: 0, hist: new Map(), probeHist: new Map(), inflightMax: inflight, waiting: Infinity, openedAt: t };
        }
        stats.limitTrace.push(enforced(state, p).limit);
      }
    }
    perPhase.push(stats);
  }
  return { perPhase, state };

  function record(start: number, latency: number, drop: boolean) {
    win.n++;
    if (drop) return void win.drops++;
    const b = bucketOf(latency);
    win.hist.set(b, (win.hist.get(b) ?? 0) + 1);
    if (state.probe && start >= state.probe.startedAt) win.probeHist.set(b, (win.probeHist.get(b) ?? 0) + 1);
  }
}
