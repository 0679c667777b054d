import { count, merge, quantile, type Histogram } from './latency-histogram.js';

/**
 * The adaptive gate's control law ("gate v2" of the design, see docs/design-notes.md): a concurrency limit L driven by the
 * latency gradient against a baseline, cut multiplicatively on drops, never grown while the line
 * is app-limited, with periodic jittered probes that pin L low to re-measure the baseline.
 * Pure: the controller feeds it windows of samples; tests feed it a simulated downstream.
 */
export interface ControlParams {
  minLimit: number;
  maxLimit: number;
  /** Evaluate a window once it holds this many samples (or after maxWindowMs with any). */
  minSamples: number;
  maxWindowMs: number;
  /** Drops above this share of a window cut L by dropFactor. */
  dropThreshold: number;
  dropFactor: number;
  /** Latency above baseline × tolerance reads as queueing. */
  tolerance: number;
  probeEveryMs: number;
  probeJitter: number;
  probeFraction: number;
  probeSamples: number;
  probeTimeoutMs: number;
  /** Admission pace = L / p50 × headroom, never below minRate (per s). */
  pacingHeadroom: number;
  minRate: number;
  /** No call ended for max(stallMs, 2 × p99) while tickets waited and the gate had room: a stall. */
  stallMs: number;
}

export const defaultParams: ControlParams = {
  minLimit: 1,
  maxLimit: 10_000,
  minSamples: 20,
  maxWindowMs: 1000,
  dropThreshold: 0.01,
  dropFactor: 0.7,
  tolerance: 1.1,
  probeEveryMs: 10_000,
  probeJitter: 0.15,
  probeFraction: 0.25,
  probeSamples: 40,
  probeTimeoutMs: 3000,
  pacingHeadroom: 1.25,
  minRate: 1,
  stallMs: 2000,
};

export interface ControlState {
  limit: number;
  baseMs: number | null;
  /** p50 of the last window with answers (ms), for pacing and display. */
  p50Ms: number | null;
  p99Ms: number | null;
  decreasesInRow: number;
  nextProbeAt: number;
  probe: { startedAt: number; savedLimit: number; hist: [number, number][] } | null;
  probes: number;
  /** When L was last cut for drops: drops from calls already under way then are not a new signal. */
  lastCutAt: number;
}

/** A closed window of samples, summed over every daemon. */
export interface SampleWindow {
  /** Calls that ended (answered or dropped). */
  n: number;
  drops: number;
  /** Latency of answered calls. */
  hist: Histogram;
  /** Latency of answered calls that started after the current probe began. */
  probeHist: Histogram;
  /** Most tickets in flight seen during the window. */
  inflightMax: number;
  /** Tickets waiting in the line when the window closed. */
  waiting: number;
}

export function initialState(now: number, startLimit: number, p: ControlParams = defaultParams): ControlState {
  return {
    limit: clamp(startLimit, p.minLimit, p.maxLimit),
    baseMs: null,
    p50Ms: null,
    p99Ms: null,
    decreasesInRow: 0,
    // Probe soon: a fresh controller has no baseline yet.
    nextProbeAt: now,
    probe: null,
    probes: 0,
    lastCutAt: -Infinity,
  };
}

const clamp = (x: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, x));

/** What the gate enforces now: an integer in-flight limit and an admission pace (per second). */
export function enforced(s: ControlState, p: ControlParams = defaultParams): { limit: number; rate: number | null } {
  const limit = s.probe ? Math.max(2, Math.floor(s.probe.savedLimit * p.probeFraction)) : Math.max(p.minLimit, Math.floor(s.limit));
  // The floor keeps a pace from a stale, huge p50 from rounding to no admissions at all.
  const rate = s.p50Ms ? Math.max(p.minRate, (Math.max(limit, 1) / (s.p50Ms / 1000)) * p.pacingHeadroom) : null;
  return { limit, rate };
}

/**
 * Nothing ended for a while, tickets wait and the gate had room: the gate, not the downstream,
 * holds the line back (a pace from a cold start's slow answers, say). Samples cannot correct it,
 * since none arrive: the law must step on time.
 */
export function stalled(s: ControlState, w: SampleWindow, openedAt: number, now: number, p: ControlParams = defaultParams): boolean {
  return w.n === 0 && w.waiting > 0 && w.inflightMax < enforced(s, p).limit && now - openedAt >= Math.max(p.stallMs, 2 * (s.p99Ms ?? 0));
}

/** Whether to step on a window: enough samples, a full window with some, any probe sample while probing, or a stall. */
export function ready(s: ControlState, w: SampleWindow, openedAt: number, now: number, p: ControlParams = defaultParams): boolean {
  return w.n >= p.minSamples || (now - openedAt >= p.maxWindowMs && w.n > 0) || (s.probe !== null && count(w.probeHist) > 0) || stalled(s, w, openedAt, now, p);
}

export function step(s: ControlState, w: SampleWindow, now: number, p: ControlParams = defaultParams, rng: () => number = Math.random): ControlState {
  const next: ControlState = { ...s };
  const answered = count(w.hist);
  const p50 = quantile(w.hist, 0.5);
  // The latest window's p50, unsmoothed: pacing on a lagging average held admissions far below
  // capacity for a second after a step down (latency had already fallen, the average had not).
  if (p50 !== null) next.p50Ms = p50;
  const p99 = quantile(w.hist, 0.99);
  if (p99 !== null) next.p99Ms = p99;
  const dropping = w.n > 0 && w.drops / w.n > p.dropThreshold;
  // An empty window is a stall (see `stalled`): forget the pace that held admissions back and
  // re-measure the baseline now, with the limit alone gating.
  const stall = w.n === 0;
  if (stall) next.p50Ms = null;

  if (s.probe) {
    const hist = new Map(s.probe.hist);
    merge(hist, w.probeHist);
    const savedLimit = dropping ? Math.max(p.minLimit, s.probe.savedLimit * p.dropFactor) : s.probe.savedLimit;
    const measured = quantile(hist, 0.5);
    const elapsed = now - s.probe.startedAt;
    // Pinning costs throughput: end as soon as the sample says enough (a few round trips of ≥10 calls).
    const enough = count(hist) >= p.probeSamples || (count(hist) >= 10 && measured !== null && elapsed >= 3 * measured);
    if (enough || elapsed >= p.probeTimeoutMs) {
      if (measured !== null) next.baseMs = measured;
      next.limit = savedLimit;
      next.probe = null;
      next.decreasesInRow = 0;
      next.nextProbeAt = now + p.probeEveryMs * (1 + p.probeJitter * rng());
    } else {
      next.probe = { ...s.probe, savedLimit, hist: [...hist] };
    }
    return next;
  }

  if (dropping) {
    // One cut per round trip, as TCP does: the calls that time out next were admitted before it.
    if (now - s.lastCutAt >= Math.max(500, s.p99Ms ?? 0)) {
      next.limit = s.limit * p.dropFactor;
      next.lastCutAt = now;
    }
    next.decreasesInRow = 0;
  } else if (answered > 0 && p50 !== null) {
    next.baseMs = s.baseMs === null ? p50 : Math.min(s.baseMs, p50);
    const g = clamp((next.baseMs * p.tolerance) / p50, 0.5, 2);
    let limit = s.limit * g + Math.sqrt(s.limit * g);
    // App-limited: with the line or the callers not filling the limit, latency says nothing about room.
    if (limit > s.limit && w.inflightMax < 0.8 * Math.floor(s.limit)) limit = s.limit;
    next.decreasesInRow = limit < s.limit ? s.decreasesInRow + 1 : 0;
    next.limit = limit;
  }
  next.limit = clamp(next.limit, p.minLimit, p.maxLimit);

  // A run of loss-free decreases means the baseline may be stale (requests got dearer): re-probe.
  if (now >= s.nextProbeAt || next.decreasesInRow >= 5 || stall) {
    next.probe = { startedAt: now, savedLimit: next.limit, hist: [] };
    next.probes = s.probes + 1;
  }
  return next;
}
