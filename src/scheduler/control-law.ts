import { count, merge, quantile, type Histogram } from './latency-histogram.js';

/**
 * The adaptive gate's control law ("gate v3", see docs/design-notes.md): a concurrency limit L
 * driven by the latency gradient against a probed baseline, stepped at most once per round trip,
 * cut on drops at most once per round trip and then grown back gently near the limit that dropped,
 * never grown while the line is app-limited, with jittered probes that halve L to re-measure the
 * baseline. Pure: the controller feeds it windows of samples; tests feed it a simulated downstream.
 */
export interface ControlParams {
  minLimit: number;
  maxLimit: number;
  /** Evaluate a window once it holds this many samples and spans a round trip (or after maxWindowMs with any). */
  minSamples: number;
  maxWindowMs: number;
  /** Drops above this share of a window cut L by dropFactor. */
  dropThreshold: number;
  dropFactor: number;
  /** Latency above baseline × tolerance reads as queueing (before the √L queue allowance). */
  tolerance: number;
  /** Share of the way to the gradient's new limit taken per step (1 = all of it). */
  smoothing: number;
  /** Queue allowed beyond the gradient: queueFactor × √L calls. */
  queueFactor: number;
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
  dropFactor: 0.85,
  tolerance: 1.1,
  smoothing: 0.5,
  queueFactor: 0.5,
  probeEveryMs: 10_000,
  probeJitter: 0.15,
  probeFraction: 0.5,
  probeSamples: 30,
  probeTimeoutMs: 3000,
  pacingHeadroom: 1.5,
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
  /**
   * A probe pins in-flight to `pin` (a share of savedLimit) and re-measures the baseline from calls
   * started after `startedAt`. `perS`: the throughput before it, so a probe whose latency is what
   * Little's law gives for a still saturated downstream (pin / perS) halves the pin and goes on.
   * `since`: when the probe began (startedAt moves with each halving; the timeout counts from here).
   */
  probe: { startedAt: number; savedLimit: number; hist: [number, number][]; pin?: number; perS?: number | null; since?: number } | null;
  probes: number;
  /** When L was last cut for drops: drops from calls already under way then are not a new signal. */
  lastCutAt: number;
  /** The limit at which the downstream last dropped calls: L grows back to it additively. */
  dropLimit?: number | null;
  /** Windows in a row whose p50 was well under the baseline (a baseline from slow first answers). */
  lowInRow?: number;
  /** Startup (BBR's, TCP's slow start): double per round trip until latency or drops say stop. */
  startup?: boolean;
  /** Throughput of the last window (calls/s), for the next probe. */
  perS?: number | null;
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
  /** How long the window was open (ms): with n, the throughput a probe compares against. */
  ms?: number;
}

export function initialState(now: number, startLimit: number, p: ControlParams = defaultParams): ControlState {
  return {
    limit: clamp(startLimit, p.minLimit, p.maxLimit),
    baseMs: null,
    p50Ms: null,
    p99Ms: null,
    decreasesInRow: 0,
    // Probe at the first answers: they may come from an opening burst that queued at the
    // downstream, and a baseline taken from them would hold that queue for good.
    nextProbeAt: now,
    probe: null,
    probes: 0,
    lastCutAt: -Infinity,
    dropLimit: null,
    lowInRow: 0,
    startup: true,
    perS: null,
  };
}

const clamp = (x: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, x));

/** How long a probe may last: enough round trips to drain and measure, never past the timeout. */
export const probeTimeout = (s: ControlState, p: ControlParams = defaultParams) => Math.min(p.probeTimeoutMs, Math.max(500, 6 * (s.baseMs ?? p.probeTimeoutMs)));

const pinOf = (probe: NonNullable<ControlState['probe']>, p: ControlParams) => probe.pin ?? Math.max(1, Math.floor(probe.savedLimit * p.probeFraction));

/** What the gate enforces now: an integer in-flight limit and an admission pace (per second). */
export function enforced(s: ControlState, p: ControlParams = defaultParams): { limit: number; rate: number | null } {
  const limit = s.probe ? pinOf(s.probe, p) : Math.max(p.minLimit, Math.floor(s.limit));
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

/**
 * Whether to step on a window: enough samples over at least a round trip (a step sooner acts on
 * answers to calls admitted before the last step, and overshoots), a full window with some, any
 * probe sample while probing, a probe past its timeout, or a stall.
 */
export function ready(s: ControlState, w: SampleWindow, openedAt: number, now: number, p: ControlParams = defaultParams): boolean {
  const age = now - openedAt;
  if (s.probe) return count(w.probeHist) > 0 || now - (s.probe.since ?? s.probe.startedAt) >= probeTimeout(s, p) || age >= p.maxWindowMs;
  const rtt = Math.min(p.maxWindowMs, s.p50Ms ?? 0);
  return (w.n >= p.minSamples && age >= rtt) || (age >= p.maxWindowMs && w.n > 0) || stalled(s, w, openedAt, now, p);
}

function stepProbe(s: ControlState, w: SampleWindow, now: number, p: ControlParams, dropping: boolean, rng: () => number): ControlState {
  // The best throughput seen before and during the probe: at a pin the downstream is still
  // saturated at, it keeps delivering that much.
  const probe = { ...s.probe!, perS: Math.max(s.probe!.perS ?? 0, s.perS ?? 0) || null };
  const hist = new Map(probe.hist);
  merge(hist, w.probeHist);
  const savedLimit = dropping ? Math.max(p.minLimit, probe.savedLimit * p.dropFactor) : probe.savedLimit;
  const measured = quantile(hist, 0.5);
  const elapsed = now - probe.startedAt;
  const expired = now - (probe.since ?? probe.startedAt) >= probeTimeout(s, p);
  const pin = pinOf(probe, p);
  // Pinning costs throughput: end as soon as the sample says enough (two rounds of the pinned
  // calls, a round trip to drain the queue first), and never later than the timeout, answers or not.
  const n = count(hist);
  // Only finished calls are counted: early on they are the short ones, so wait three of their p50s.
  const enough = measured !== null && elapsed >= 3 * measured && n >= Math.min(p.probeSamples, Math.max(10, 2 * pin));
  if (!enough && !expired) return { ...s, probe: { ...probe, savedLimit, hist: [...hist] } };
  // Still saturated at the pin: it delivers what it did unpinned (by Little's law, latency ≈
  // pin / best throughput), so a queue remains and the baseline is not in sight; halve the pin
  // and measure again (a downstream with fewer workers than the pin).
  if (enough && pin > 1 && probe.perS && measured! <= 1.25 * (pin / probe.perS) * 1000 && !expired)
    return { ...s, probe: { ...probe, savedLimit, hist: [], startedAt: now, since: probe.since ?? probe.startedAt, pin: Math.max(1, Math.floor(pin / 2)) } };
  return {
    ...s,
    baseMs: measured ?? s.baseMs,
    limit: savedLimit,
    probe: null,
    decreasesInRow: 0,
    lowInRow: 0,
    nextProbeAt: now + Math.max(p.probeEveryMs, 30 * (measured ?? s.baseMs ?? 0)) * (1 + p.probeJitter * rng()),
  };
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
  // Throughput, max-filtered with a slow decay (BBR's bottleneck bandwidth): a window after a
  // cold start or a probe says little about what the downstream can do.
  if (w.ms && w.n > 0) next.perS = Math.max(((w.n - w.drops) / w.ms) * 1000, 0.95 * (s.perS ?? 0));

  if (s.probe) return stepProbe(next, w, now, p, dropping, rng);

  if (dropping) {
    next.startup = false;
    // One cut per round trip, as TCP does: the calls that time out next were admitted before it.
    if (now - s.lastCutAt >= Math.max(500, s.p99Ms ?? 0)) {
      next.dropLimit = s.limit;
      next.limit = s.limit * p.dropFactor;
      next.lastCutAt = now;
    }
    next.decreasesInRow = 0;
  } else if (answered > 0 && p50 !== null) {
    next.baseMs = nextBase(s, next, p50, p);
    const r = p50 / next.baseMs;
    // Down to a quarter per step: after a step down of the downstream the latency says by how much
    // (Little's law: L × base / p50 is what it now carries), and halving per round trip flooded it
    // for several of its now longer round trips.
    const g = clamp(p.tolerance / r, 0.25, 2);
    // √L of queue allowed (Envoy, Gradient2): a small limit needs a relatively deeper queue to keep
    // its few workers busy across the gaps between one call and the next.
    let target = s.limit * g + p.queueFactor * Math.sqrt(s.limit * g);
    if (s.baseMs === null) target = s.limit; // the first answers: nothing to compare with yet
    else if (s.startup && r < p.tolerance) target = Math.max(target, 2 * s.limit);
    else next.startup = false;
    // Near the limit that last dropped calls, grow by one per round trip (AIMD, BBRv2's inflight_hi).
    const ceiling = s.dropLimit ?? Infinity;
    if (target > s.limit && s.limit >= 0.9 * ceiling) target = Math.min(target, s.limit + 1);
    if (target > ceiling && s.limit < 0.9 * ceiling) target = ceiling;
    // Smoothed (Gradient2): a full step on one noisy window's p50 is what made the limit swing.
    // Not in startup, not on a decrease of half or more (a step down of the downstream), and not
    // with latency under the baseline (room for certain: a step up).
    let limit = next.startup || g <= 0.5 || r < 1 ? target : s.limit + p.smoothing * (target - s.limit);
    // App-limited: with the line or the callers not filling the limit, latency says nothing about room.
    if (limit > s.limit && w.inflightMax < 0.8 * Math.floor(s.limit)) limit = s.limit;
    if (limit > ceiling) next.dropLimit = null; // passed it without drops: the downstream grew
    next.decreasesInRow = limit < s.limit * 0.98 ? s.decreasesInRow + 1 : 0;
    next.limit = limit;
  }
  next.limit = clamp(next.limit, p.minLimit, p.maxLimit);

  // A run of loss-free decreases means the baseline may be stale (requests got dearer): re-probe.
  if (now >= s.nextProbeAt || next.decreasesInRow >= 5 || stall) {
    next.probe = { startedAt: now, savedLimit: next.limit, hist: [], perS: next.perS ?? null };
    next.probes = s.probes + 1;
    next.decreasesInRow = 0;
  }
  return next;
}

/**
 * The baseline moves on probes; between them it follows the p50 down only on firm evidence: at
 * once when the p50 is under half of it (it came from a cold start's slow answers), or after three
 * windows in a row under it by the tolerance. Following every window's p50 down, as a running
 * minimum does, drifts under the true latency on noisy downstreams (Vegas's failure), and the
 * gradient then starves the downstream.
 */
function nextBase(s: ControlState, next: ControlState, p50: number, p: ControlParams): number {
  if (s.baseMs === null) return p50;
  if (p50 < 0.5 * s.baseMs) {
    next.lowInRow = 0;
    return p50;
  }
  if (p50 * p.tolerance < s.baseMs) {
    next.lowInRow = (s.lowInRow ?? 0) + 1;
    if (next.lowInRow >= 3) {
      next.lowInRow = 0;
      return p50 * p.tolerance;
    }
  } else next.lowInRow = 0;
  return s.baseMs;
}
