import { count, mean, merge, quantile, type Histogram } from './latency-histogram.js';

/** Answers in `h` faster than `ms` (by bucket: a bucket is 10% wide). */
function countBelow(h: Histogram, ms: number): number {
  let n = 0;
  for (const [b, c] of h) if (Math.pow(1.1, b + 0.5) <= ms) n += c;
  return n;
}

/**
 * The adaptive gate's control law ("gate v3", see docs/design-notes.md): a concurrency limit L
 * driven by the queue at the downstream in calls (Vegas) against a probed baseline (Envoy), stepped
 * at most once per round trip, cut on drops at most once per round trip and then grown back gently
 * near the limit that dropped (AIMD, BBRv2's inflight_hi) and by one call at a time under a limit
 * of 6 with a queue in sight (Vegas's +1), never grown while the line is
 * app-limited, with jittered probes that halve L to re-measure the baseline. A queue sets L to
 * answers/s × baseline + the band's middle (BBR's bandwidth × min RTT), not a fraction of L.
 * A queue is read two ways: from the p50 of the answers (Vegas), and from the answer rate by
 * Little's law (BBR's delivery rate): after a step down of the downstream the p50 of the answers
 * stays at the baseline for a round trip while the calls admitted since wait unseen, but the answers
 * per second drop at once; a window that falls under half the last window's rate with the gate full
 * closes early. Startup grows L by one per answer while the limit is used (TCP slow start's ACK
 * clock, stepping every tick; not on a tick whose answers already queue, HyStart), never past
 * twice what the answers per second keep busy at the baseline, plus two (BBR's startup cwnd gain;
 * not on a heavy-tailed service, whose median baseline understates that), and judges
 * whether to go on over a round trip of gathered answers (at once on answers at twice the baseline);
 * a probe that would cut the baseline by over a quarter needs max(20, 2 × pin) answers (a heavy
 * tail's first few are the short ones), and a probe from a limit of 3 up pins at least 2 (at 1,
 * too few answers came before its timeout to move a stale baseline). A probe that lowers the
 * baseline refits the limit to what the answers per second need at it; cuts count the calls in the
 * pipe to and from the downstream; a cut that leaves the latency where it was re-probes instead of
 * cutting on (a slower service, not a queue); the probe that ends startup halves a small pin on
 * latency; a window with no answer at all while the gate is full (calls hung, or held by retries'
 * backoffs) makes room beside them, once, no further than what the answers lately carried. Pure:
 * the controller feeds it windows of samples; tests feed it a simulated downstream
 * (bench/lib/gate-sim.ts; `npm run bench -- gate-sim` judges a change over 32 seeds a member).
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
  /** Growth per round trip with a little queue: queueFactor × √L calls. */
  queueFactor: number;
  /** The queue band (calls at the downstream, Vegas): low = 0.5 + queueLow × L, high = 1 + queueHigh × L. */
  queueLow: number;
  queueHigh: number;
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
  tolerance: 1.25,
  smoothing: 0.5,
  queueFactor: 1,
  queueLow: 0.1,
  queueHigh: 0.3,
  probeEveryMs: 20_000,
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
  probe: { startedAt: number; savedLimit: number; hist: [number, number][]; pin?: number; perS?: number | null; since?: number; halvings?: number; stageMean?: number; cold?: boolean; used?: boolean } | null;
  probes: number;
  /** When L was last cut for drops: drops from calls already under way then are not a new signal. */
  lastCutAt: number;
  /** The limit at which the downstream last dropped calls: L grows back to it additively. */
  dropLimit?: number | null;
  /** Startup (BBR's, TCP's slow start): double per round trip until latency or drops say stop. */
  startup?: boolean;
  /** Answers per second, max-filtered (for probes). */
  perS?: number | null;
  /** Startup: answers per second at the last doubling, and how many doublings so far. */
  startX?: number | null;
  doublings?: number;
  /** Startup: the answers (latencies, and how many) gathered since `startAt`, judged once they span a round trip. */
  startHist?: [number, number][];
  startAnswers?: number;
  startAt?: number;
  /** The p50 of the last window that was well under the baseline (one more moves it down). */
  lowP50?: number | null;
  /** Spread of latencies, ln(p84 / p50), smoothed: sets how many samples a window needs. */
  spread?: number;
  /** Round trips in a row that found room (growth doubles with each). */
  growRounds?: number;
  /** Answers per second of the last window (unfiltered): what a window that falls far short of it reads as a step down. */
  lastPerS?: number | null;
  /** Time a call holds its slot outside the downstream (dispatch, settle), by Little's law on calm windows. */
  pipeMs?: number;
  /** The in-flight and latency ratio (p50 / baseline) of the window that began a run of cuts for a queue. */
  cutFrom?: { inflight: number; ratio: number } | null;
  /** Startup saw a heavy-tailed service (ln(p50 / p16) ≥ 0.35): its median says too little of the calls in service to cap startup on. */
  heavyTail?: boolean;
  /** Mean ÷ median latency of calm windows: what turns a median baseline into Little's law's mean time in service. */
  meanRatio?: number;
  /**
   * Calls that hang hold their slots until the caller's timeout (times-out's step down: 4 calls
   * past its backlog of 2K held a limit of 3 for 2 s on an idle downstream; shed-503's retries
   * hold theirs through their backoff). After a window with no answer and no drop at all and the
   * gate full, the limit was raised by the calls then in flight, up to what the answers lately
   * carried (`stuckAdd`, see stuckRoom), once until answers come again (`stuck`); half of it is
   * taken back when they end as drops, and it is forgotten after 5 s.
   */
  stuck?: boolean;
  stuckAdd?: number;
  stuckAt?: number;
  /** A probe ended with no answer while its pin was full: since when nothing answered. */
  quietSince?: number | null;
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
  /**
   * Fewest tickets in flight seen during the window (at its open and at each tick; absent: taken
   * as inflightMax). At 0 the line ran dry: the answer rate is not read as what the downstream carries.
   */
  inflightMin?: number;
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
    // The first probe comes when startup ends (see step), or after the usual interval.
    nextProbeAt: now + p.probeEveryMs,
    probe: null,
    probes: 0,
    lastCutAt: -Infinity,
    dropLimit: null,
    startup: true,
    perS: null,
    startX: null,
    doublings: 0,
  };
}

const clamp = (x: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, x));

/**
 * How long a probe may last: enough round trips to drain and measure, never past the timeout; a
 * probe that halved its pin gets that time again for each halving, up to the timeout (a one-worker
 * downstream probed from a limit of 4 needs two halvings, and a probe that expired at the second
 * took the latency of a queue of one for the baseline: 49 ms for a 25 ms service, and the limit
 * it then held kept two calls waiting).
 */
export const probeTimeout = (s: ControlState, p: ControlParams = defaultParams) =>
  Math.min(p.probeTimeoutMs, Math.max(1000, 10 * (s.baseMs ?? p.probeTimeoutMs)) * (1 + (s.probe?.halvings ?? 0)));

const pinOf = (probe: NonNullable<ControlState['probe']>, p: ControlParams) => probe.pin ?? Math.max(probe.savedLimit >= 3 ? 2 : 1, Math.floor(probe.savedLimit * p.probeFraction));

/** What the gate enforces now: an integer in-flight limit and an admission pace (per second). */
export function enforced(s: ControlState, p: ControlParams = defaultParams): { limit: number; rate: number | null } {
  const limit = s.probe ? pinOf(s.probe, p) : Math.max(p.minLimit, Math.floor(s.limit));
  // Paced on the baseline, not the last p50: after a step down the p50 of the flooded calls paced
  // admissions at a seventh of what the cut limit allowed, with the workers idle, for a second.
  // The limit, not the pace, is what holds the downstream back; the pace only spreads a raise.
  // The floor keeps a pace from a stale, huge latency from rounding to no admissions at all.
  const ms = s.p50Ms === null ? null : Math.min(s.p50Ms, s.baseMs ?? Infinity);
  const rate = ms ? Math.max(p.minRate, (Math.max(limit, 1) / (ms / 1000)) * p.pacingHeadroom) : null;
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
 * A window with no call ended, none in flight and no ticket waiting: the downstream is offered no
 * work, and the controller opens the window afresh. Kept open through a lull in demand, its length
 * was taken as the time the first answers of the next rush came in: the answer rate read as a
 * fraction of what the downstream carried, and the limit was cut to it.
 */
export function idle(w: SampleWindow, inflight: number): boolean {
  return w.n === 0 && inflight === 0 && w.waiting === 0;
}

/**
 * Whether to step on a window: enough samples over two round trips (a step sooner acts mostly on
 * answers to calls admitted before the last step, and overshoots: the limit swung ±20–30% with a
 * ~1 s period when it stepped every 100 ms), a round trip when the answers are alarmingly slow,
 * a full window with some, any probe sample while probing, a probe past its timeout, or a stall.
 */
export function ready(s: ControlState, w: SampleWindow, openedAt: number, now: number, p: ControlParams = defaultParams): boolean {
  const age = now - openedAt;
  // Startup grows per answer: any answers will do, every tick.
  if (s.startup && s.baseMs !== null && w.n > 0 && !s.probe) return true;
  if (s.probe) return count(w.probeHist) > 0 || now - (s.probe.since ?? s.probe.startedAt) >= probeTimeout(s, p) || age >= p.maxWindowMs;
  // The round trip of calls admitted now: the last p50, but no more than twice the baseline (after a
  // cut, the p50 of the flooded calls made the next window, and the regrowth, wait a second).
  const rtt = Math.min(p.maxWindowMs, s.p50Ms ?? 0, 2 * (s.baseMs ?? Infinity));
  // A few answers at twice the baseline are enough to act on: after a step down of the downstream
  // its answers slow to a trickle, and waiting for a full window let the queue grow for a second.
  const need = samplesNeeded(s, p);
  const alarm = s.baseMs !== null && w.n >= Math.max(5, need / 4) && (quantile(w.hist, 0.5) ?? 0) > 2 * s.baseMs;
  // Answers stopped coming at the rate they did while the gate stays full: the downstream lost
  // capacity, and the calls admitted since wait in its queue, where no latency sample sees them.
  const starved = age >= Math.max(100, rtt) && isStarved(s, { ...w, ms: age });
  // No answer at all with the gate full, for five baselines or where answers were due: hung calls.
  if (isStuck(s, w, openedAt, now, p)) return true;
  return ((w.n >= need && age >= Math.min(2 * rtt, p.maxWindowMs)) || (alarm && age >= rtt) || starved) || (age >= p.maxWindowMs && w.n > 0) || stalled(s, w, openedAt, now, p);
}

/**
 * No answer while the gate is full, once per run of such windows (see ControlState.stuck): the
 * room to make beside the calls out, up to what the downstream delivered lately (the max-filtered
 * answer rate carried at the baseline): never past that, so a downstream that hangs every call
 * does not draw ever more of them.
 */
function stuckRoom(s: ControlState, w: SampleWindow, p: ControlParams): number {
  if (s.startup || s.stuck || s.baseMs === null || w.n !== 0 || w.inflightMax < enforced(s, p).limit) return 0;
  const carried = s.perS ? carry(s.perS, s.baseMs, p, s) : 0;
  // More calls out than the downstream carried at its best lately are a queue draining, not hung
  // calls (slow-64w's step down: 76 out against ~63, answers slower than a window).
  if (w.inflightMax > carried) return 0;
  return Math.min(w.inflightMax, Math.max(0, carried - s.limit));
}
/**
 * Hung calls: room to make, and no answer (nor drop) for five baselines (half a second at least; a
 * queue on live workers answers within that), or for two where the last window's rate promised 6
 * or more (not less: a window shorter than the service time says nothing; slow-64w's step down
 * went quiet for 200 ms of its 500 ms calls, and room made there fed the flood).
 */
function isStuck(s: ControlState, w: SampleWindow, openedAt: number, now: number, p: ControlParams): boolean {
  const quiet = now - Math.min(openedAt, s.quietSince ?? Infinity);
  if (stuckRoom(s, w, p) < 1 || quiet < 2 * s.baseMs!) return false;
  return quiet >= Math.max(500, 5 * s.baseMs!) || isStarved(s, { ...w, ms: now - openedAt });
}

/** Under half the answers the last window's rate promised (out of at least 6) with the gate full: close the window early. */
function isStarved(s: ControlState, w: SampleWindow): boolean {
  const expected = ((s.lastPerS ?? 0) * (w.ms ?? 0)) / 1000;
  return !s.startup && !s.probe && s.baseMs !== null && expected >= Math.max(6, samplesNeeded(s) / 8) && w.n < 0.5 * expected && w.inflightMax >= Math.floor(s.limit);
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
  // Only finished calls are counted: early on they are the short ones (a heavy tail's median
  // read a third of the true one), so wait three of their p84s, and the samples the spread asks for.
  const p84 = quantile(hist, 0.84);
  // A baseline cut by over a quarter on a few answers is most likely the short ones of a heavy
  // tail (a probe of 15 answers read 36 ms for a 60 ms median, and the limit then starved the
  // downstream to a tenth): such a cut needs the full probeSamples.
  const deep = measured !== null && s.baseMs !== null && measured < 0.75 * s.baseMs;
  const enough = measured !== null && elapsed >= 3 * p84! && n >= Math.max(Math.min(p.probeSamples, deep ? Math.max(20, 2 * pin) : Math.max(10, 2 * pin)), samplesNeeded(s, p) / 2);
  if (!enough && !expired) return { ...s, probe: { ...probe, savedLimit, hist: [...hist] } };
  // A probe none of whose own calls answered while its pin was full (answers of calls from before
  // it may have come): the calls out may be hung (see ControlState.stuck); the window after it
  // counts its quiet from the probe's start.
  const quietSince = n === 0 && w.inflightMax >= pin ? (s.quietSince ?? probe.since ?? probe.startedAt) : null;
  // Still saturated at the pin: it delivers what it did unpinned (by Little's law, mean latency
  // ≈ pin / best throughput; the mean, not the p50, which a heavy tail puts far under it), so a queue remains and the baseline is not in sight; halve the pin
  // and measure again (a downstream with fewer workers than the pin).
  // The probe that ends startup, at a pin of 4 or less, halves anyway and compares latencies: the
  // answer rate it would compare with is the opening burst's few answers per tick, too noisy to
  // tell (a flushed burst read 60/s on a 40/s one-worker downstream, and its probe took the
  // latency of a queue of one, 47 ms for 25, for the baseline; the real daemon then held two calls
  // waiting on one worker 75% of the time). Halved calls that answer in under 0.75 of the time they
  // did were queued (on one worker a halving takes latency to ~0.5, on enough workers to ~1.0):
  // go on halving. Answers as slow as before: no queue, the baseline is in sight.
  const m = mean(hist)!;
  const queued = probe.stageMean != null ? m <= 0.75 * probe.stageMean : !!probe.cold && pin <= 4;
  if (enough && pin > 1 && !expired && ((probe.perS && m <= 1.25 * (pin / probe.perS) * 1000) || queued))
    return { ...s, probe: { ...probe, savedLimit, hist: [], startedAt: now, since: probe.since ?? probe.startedAt, pin: Math.max(1, Math.floor(pin / 2)), halvings: (probe.halvings ?? 0) + 1, stageMean: m } };
  // A probe that timed out with a handful of answers has only the short ones: it may raise the
  // baseline, not lower it (a heavy tail's 60 ms median, probed for a second, read 39 ms on 21
  // answers, and the queue that error invented held the limit at a sixth of the workers).
  const baseMs = measured !== null && (enough || s.baseMs === null || (n >= 10 && measured >= s.baseMs)) ? measured : s.baseMs;
  // A baseline that fell (a cold start's, a cache that warmed) made the saved limit too: the calls
  // that keep the downstream busy at the throughput seen are fewer by as much. Only when the limit
  // was in use before the probe: a short line's answer rate is its demand, not what the downstream
  // carries, and a limit refitted to it would have to grow back when the rush comes.
  const refit = baseMs !== null && (s.baseMs === null || baseMs < s.baseMs) && probe.perS && probe.used !== false ? Math.min(savedLimit, Math.max(p.minLimit, carry(probe.perS, baseMs, p, s))) : savedLimit;
  return {
    ...s,
    baseMs,
    limit: refit,
    probe: null,
    quietSince,
    decreasesInRow: 0,
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
  // Answers per second in this window, and max-filtered with a slow decay (BBR's bottleneck
  // bandwidth): a window after a cold start or a probe says little about what the downstream can do.
  const p84 = quantile(w.hist, 0.84);
  // Not in startup: a cold start's answers mix 10× slow calls with the rest, a spread no service has.
  if (!s.startup && answered >= p.minSamples && p50 && p84 && (s.baseMs === null || p50 < 1.5 * s.baseMs)) next.spread = 0.7 * (s.spread ?? Math.log(p84 / p50)) + 0.3 * Math.log(p84 / p50);
  const perS = w.ms && w.n > 0 ? ((w.n - w.drops) / w.ms) * 1000 : null;
  if (perS !== null) next.perS = Math.max(perS, 0.95 * (s.perS ?? 0));
  // The last window's rate, unfiltered: what the next window is expected to deliver (see isStarved).
  if (perS !== null) next.lastPerS = perS;

  if (w.n > 0) {
    next.stuck = false;
    next.quietSince = null;
  }
  if (s.probe) return stepProbe(next, w, now, p, dropping, rng);
  // Room made for hung calls that never ended as drops is forgotten after 5 s (the caller's
  // timeout, 2 s in the bench, has long passed: they answered late).
  if (s.stuckAdd && now - (s.stuckAt ?? now) > 5000) next.stuckAdd = 0;
  if (isStuck(s, w, now - (w.ms ?? 0), now, p)) {
    // Hung calls (see ControlState.stuck): room beside them, not a stall's probe (it would pin
    // under them and admit nothing either).
    const room = stuckRoom(s, w, p);
    next.limit = Math.min(p.maxLimit, s.limit + room);
    next.stuck = true;
    next.stuckAdd = (next.stuckAdd ?? 0) + room;
    next.stuckAt = now;
    next.quietSince = null;
    return next;
  }

  let probeNow = false;
  if (dropping) {
    probeNow = !!s.startup;
    next.startup = false;
    if (s.stuckAdd) {
      // The hung calls the limit made room for ended (the caller's timeout): take back half the
      // room (all of it starved the step down again, 357 / 348 / 348 rows; none flooded it).
      next.limit = Math.max(p.minLimit, s.limit - 0.5 * s.stuckAdd);
      next.stuckAdd = 0;
      next.lastCutAt = now;
    } else if (now - s.lastCutAt >= Math.max(200, s.p50Ms ?? 0)) {
      // One cut per round trip, as TCP does: the calls that time out next were admitted before it.
      next.dropLimit = s.limit;
      // No further than what the answers it still gives can carry (below), when that is lower.
      const inflight = Math.min(Math.floor(s.limit), w.inflightMax);
      const saturated = p50 !== null && s.baseMs !== null && inflight * (1 - s.baseMs / p50) > marks((inflight * s.baseMs) / p50, p).high;
      const carried = saturated && perS !== null ? carry(perS, s.baseMs!, p, s) : Infinity;
      next.limit = Math.min(s.limit * p.dropFactor, Math.max(carried, s.limit * 0.25));
      next.lastCutAt = now;
    }
    next.decreasesInRow = 0;
  } else if (answered > 0 && p50 !== null) {
    const first = s.baseMs === null;
    next.baseMs = nextBase(s, next, p50, answered >= samplesNeeded(s, p));
    const r = p50 / next.baseMs;
    const filled = w.inflightMax >= 0.8 * Math.floor(s.limit);
    let limit = s.limit;
    if (s.startup) {
      // Startup (TCP slow start, BBR's startup): each answer while the limit was used lets L grow
      // by one (doubling per round trip, clocked by the answers, not by windows: a window of a
      // slow downstream is a second, and doubling once per window of two round trips cost a 500 ms
      // member seconds). The window steps every tick for that; whether to go on is judged on the
      // answers gathered over a round trip (and the samples a p50 needs): while latency stays at
      // the baseline and answers grow with the limit. A queue or a plateau ends it at what the
      // downstream carried, and a probe follows: the first answers, which set the baseline, may
      // have queued already (an opening burst on a small downstream), and only a probe that pins
      // in-flight under the workers' count can tell.
      if (first) {
        next.startX = perS;
        next.startHist = [];
        next.startAt = now;
      } else {
        // A tick whose answers already queue (HyStart's delay check) adds nothing.
        const queuing = answered >= 5 && r >= p.tolerance;
        if (filled && !queuing) limit = s.limit + Math.min(answered, s.limit);
        const acc = new Map(s.startHist ?? []);
        merge(acc, w.hist);
        const accN = count(acc);
        const accAge = now - (s.startAt ?? now);
        // BBR's startup cwnd gain: in flight no more than twice what the answers per second keep
        // busy at the baseline, and two (the answers lag the limit by a round trip, and doubling per
        // round trip fits under 2×). Growing per answer alone overshot the plateau by the round
        // trip the answers take to tell of it: times-out went 10 → 20 → 32 on 10 workers in two
        // ticks whose answers still read the baseline, and calls hung behind a backlog past 2K.
        // Not for a heavy-tailed service: the answer rate × a median baseline is 0.6 of its calls in
        // service at σ = 1, less with startup's short-biased baseline, and the cap held it near L = 10.
        // The spread is read below the median (ln(p50 / p16)): a cold start's 10× answers sit above it.
        const p16 = quantile(acc, 0.16);
        const lowSpread = p16 ? Math.log(Math.max(1, quantile(acc, 0.5)! / p16)) : 0;
        if (lowSpread >= 0.35 && accN >= 10) next.heavyTail = true;
        // The spread below the median is the service's own (the cold start's slow calls sit above
        // it): with it, startup judges on the answers a heavy tail's median needs and so does the
        // probe that ends it (one ended on 14 answers of a σ = 1 service read 42 ms for a 61 ms
        // median, and the limit then cut itself down to 2 for 24 workers on a queue that was not there).
        if (accN >= 10 && next.spread === undefined && lowSpread >= 0.35) next.spread = lowSpread;
        if (lowSpread < 0.35 && !next.heavyTail && next.perS) limit = Math.min(limit, Math.max(s.limit, (2 * next.perS * next.baseMs) / 1000 + 2));
        const rtt = Math.min(p.maxWindowMs, s.p50Ms ?? 0, 2 * (s.baseMs ?? Infinity));
        next.startHist = [...acc];
        next.startAnswers = (s.startAnswers ?? 0) + (w.n - w.drops);
        // Answers at twice the baseline (as `ready`'s alarm): judge now, on what was gathered.
        const alarm = answered >= Math.max(10, samplesNeeded(s, p) / 4) && p50 > 2 * next.baseMs;
        if ((accN >= samplesNeeded(s, p) && accAge >= rtt) || accAge >= p.maxWindowMs || alarm) {
          const accP50 = quantile(acc, 0.5)!;
          const accPerS = (next.startAnswers / Math.max(accAge, 1)) * 1000;
          next.baseMs = Math.min(s.baseMs!, accP50);
          next.p50Ms = accP50;
          const growing = s.startX == null || accPerS >= 1.25 * s.startX;
          next.startHist = [];
          next.startAnswers = 0;
          next.startAt = now;
          if (accP50 / next.baseMs < p.tolerance && growing) {
            next.startX = accPerS;
            next.doublings = (s.doublings ?? 0) + 1;
          } else {
            next.startup = false;
            // A heavy tail's calls in service are counted at its mean from here on, not at the median:
            // calm windows learn mean ÷ median only later, and until then this exit (and the probe's
            // refit after it) carried 195 answers/s at the 62 ms median as 12 calls where Little's law
            // gives ~20, and heavy-tail regrew from 14 on 24 workers for seconds. For a lognormal the
            // ratio is e^(σ²/2), σ from startup's spread below the median (the cold calls sit above it):
            // ~1.65 at σ = 1. Its phase 1 mean delivered 0.57–0.62 → 0.60–0.70 (four seed sets, 256 seeds).
            if (next.heavyTail && next.spread !== undefined && next.meanRatio === undefined) next.meanRatio = clamp(Math.exp((next.spread * next.spread) / 2), 1, 3);
            limit = Math.min(s.limit, carry(Math.max(accPerS, s.startX ?? 0), next.baseMs, p, next));
            probeNow = true;
          }
        }
      }
    } else {
      // Vegas: the calls queued at the downstream, L × (1 − base / p50), held between a low and a
      // high mark that grow with L. Counted in calls, a band stays meaningful at a limit of 2
      // (where a ratio of latencies is mostly noise) as well as at 200.
      const inflight = Math.min(Math.floor(s.limit), w.inflightMax);
      const serving = (inflight * next.baseMs) / p50;
      const queue = inflight - serving;
      const { low, high } = marks(serving, p);
      // Little's law on the whole window: in-flight = answers/s × (time outside the downstream +
      // mean latency). Calls stuck in the downstream's queue have no latency sample yet, so after
      // a step down the p50 looks fine for a round trip while the answers per second collapse:
      // the in-flight they do not account for is a queue too (BBR reads the delivery rate, not the RTT).
      // The answer rate says what the downstream carries only on a window that always had calls
      // out: one in which the line ran dry (a lull in demand, its drain, the rush after it) has
      // answers from part of it, and read against its most in flight the rate said a queue hid
      // most of them (a limit of 54 on 40 workers cut to 6 after a pause of half a second, to 1
      // after 30 s). Such a window is judged on its latency alone. (Not "held near its most":
      // that caught every window after a probe or a large raise too, and lost 8 of 363 gate-sim rows.)
      const rate = (w.inflightMin ?? inflight) > 0 ? perS : null;
      const meanMs = mean(w.hist)!;
      const pipe = s.pipeMs ?? 0;
      const hidden = rate !== null ? inflight - (rate * (meanMs + pipe)) / 1000 : 0;
      if (rate !== null && queue < high && filled && answered >= p.minSamples) next.pipeMs = 0.8 * pipe + 0.2 * Math.max(0, (inflight * 1000) / rate - meanMs);
      if (queue >= low || hidden > high) next.growRounds = 0;
      // Mean ÷ median of the service's answers, read on calm windows (no queue: a queue's waits
      // lift the median more than the mean), with enough answers for the median (see carry).
      if (queue < low && hidden <= high && answered >= samplesNeeded(s, p)) next.meanRatio = clamp(0.8 * (s.meanRatio ?? meanMs / p50) + 0.2 * (meanMs / p50), 1, 3);
      if (hidden > Math.max(high, 0.4 * inflight) && rate !== null) {
        limit = Math.min(s.limit, carry(rate, next.baseMs, p, s));
      } else if (queue > high && s.cutFrom && inflight <= 0.6 * s.cutFrom.inflight && r >= 0.8 * s.cutFrom.ratio) {
        // Cut to well under the in-flight that first read a queue, and the latency has not come
        // down: it is not a queue the gate holds, the service itself got slower (a cache flushed).
        // Cutting more starves the downstream (Vegas's stale baseline); re-measure the baseline.
        probeNow = true;
      } else if (queue > high) {
        next.cutFrom = s.cutFrom ?? { inflight, ratio: r };
        // Saturated: this window's answers per second are what the downstream carries now, and
        // Little's law gives the in-flight that keeps it busy with the band's middle as queue
        // (BBR's bandwidth × min RTT). An absolute estimate, not a fraction of the old limit: it
        // does not cut twice for one step down of the downstream.
        // (Without a window length, Little's law on the window itself: the calls in service.)
        limit = Math.min(s.limit, rate !== null ? carry(rate, next.baseMs, p, s) : serving + (low + high) / 2);
        // Smoothed (Gradient2) while the excess is small: one noisy window's p50 made the limit swing.
        // Smoothed too, whatever the excess, on a window that closed (on its alarm, its 1 s cap) with
        // under half the answers a wide spread asks for (over the usual 20: a heavy tail's ~150):
        // its p50 is noise (one standard error ±23% on 30 answers at σ = 1), and the full cut on one took heavy-tail
        // from 9 to 3 calls on its six workers. Its step down's median delivered 0.83 → 0.84–0.88 on
        // the three seed sets. With the mean ratio at startup's exit (above), rows of 864: 388 → 394,
        // 376 → 376, 366 → 374, and 1861 → 1883 on k = 96 … 255 (docs/design-notes.md, 7 Dec, afternoon).
        const need = samplesNeeded(s, p);
        const thin = need > p.minSamples && answered < 0.5 * need;
        if (queue < 2 * high || thin) limit = s.limit + p.smoothing * (limit - s.limit);
      } else if (queue < low && filled && (w.ms ?? Infinity) >= Math.min(2 * p50, 4 * next.baseMs, p.maxWindowMs)) {
        // (A window of two round trips at least: in a shorter one, most answers are of calls
        // admitted before the last raise, and read as room that is no longer there.)
        // Room: grow by √L (Envoy, Gradient2), twice as much each round trip that still finds
        // room (BBRv2's probing of inflight_hi), up to half again (not doubling: a doubling that
        // found the top overshot by up to 2×, 114 on 64 workers, and the cut that followed, at the
        // thrashed rate, landed under them): a step up of the downstream is found in a few round
        // trips, while noise that reads as room once adds only √L.
        const rounds = s.growRounds ?? 0;
        limit = s.limit + Math.min(0.5 * s.limit, Math.max(1, p.queueFactor * Math.sqrt(s.limit)) * 2 ** rounds);
        // Under a limit of 6 (where √L is over 40% of L), with a queue already in sight (over 0.3 of
        // the low mark), one call per step (Vegas's own +1): √L is +2 at a limit of 4, and on two
        // workers (fast-2w, whose right limit is exactly 4: 5 floods) it took a queue just under the
        // low mark to a flood; the limit swung 4 ↔ 7 and flooded a median 17–20% of its phases at C
        // (now 6–9%). A step up of the downstream reads no queue and still grows by √L. Rows of 864:
        // 363 → 388 (k = 0 … 31), 346 → 376 (32 … 63), 357 → 366 (64 … 95); see docs/design-notes.md, 7 Dec.
        if (s.limit < 6 && queue > 0.3 * low) limit = Math.min(limit, s.limit + 1);
        // Accelerate only on a window that used the whole limit: room at part of it proves nothing.
        next.growRounds = w.inflightMax >= Math.floor(s.limit) ? rounds + 1 : rounds;
        // Near the limit that last dropped calls, grow by one per round trip (AIMD, BBRv2's inflight_hi).
        const ceiling = s.dropLimit ?? Infinity;
        if (s.limit >= 0.9 * ceiling) limit = Math.min(limit, s.limit + 1);
        else if (limit > ceiling) limit = ceiling;
        if (limit > ceiling) next.dropLimit = null; // passed it without drops: the downstream grew
      }
    }
    next.decreasesInRow = limit < s.limit * 0.98 ? s.decreasesInRow + 1 : 0;
    if (next.decreasesInRow === 0 && !probeNow) next.cutFrom = null;
    next.limit = limit;
  }
  next.limit = clamp(next.limit, p.minLimit, p.maxLimit);

  // A run of loss-free decreases means the baseline may be stale (requests got dearer): re-probe.
  if (now >= s.nextProbeAt || next.decreasesInRow >= 5 || stall || probeNow) {
    next.probe = { startedAt: now, savedLimit: next.limit, hist: [], perS: next.perS ?? null, used: w.inflightMax >= 0.8 * Math.floor(s.limit), ...(s.startup ? { cold: true } : {}) };
    next.cutFrom = null;
    next.probes = s.probes + 1;
    next.decreasesInRow = 0;
  }
  return next;
}

/**
 * The queue (calls) the gate keeps at the downstream, for `serving` calls in service: grow under
 * `low`, shrink over `high`. Relative to the calls served, not the limit: a one-worker downstream
 * is flooded by a queue of two, whatever the pipeline in front of it holds.
 */
export function marks(serving: number, p: ControlParams = defaultParams): { low: number; high: number } {
  return { low: 0.5 + p.queueLow * serving, high: 1 + p.queueHigh * serving };
}

/** The in-flight that keeps a downstream answering `perS` calls/s busy, with the middle of the band as queue. */
function carry(perS: number, baseMs: number, p: ControlParams, s: Pick<ControlState, 'pipeMs' | 'meanRatio'>): number {
  // Little's law counts the calls in service at their mean time, not their median: on a heavy tail
  // (lognormal σ = 1) the mean is 1.65 × the median, and a limit carried on the median held a
  // quarter of the workers idle after every cut (heavy-tail: 19 for 24 workers).
  const bdp = (perS * baseMs * (s.meanRatio ?? 1)) / 1000;
  const { low, high } = marks(bdp, p);
  // The calls on their way to and back from the downstream hold slots too (Little's law on the pipe).
  return bdp + (perS * (s.pipeMs ?? 0)) / 1000 + (low + high) / 2;
}

/**
 * The baseline moves on probes. In startup it also follows the p50 down (the first answers may be
 * a cold start's, 10× slow). After it, it follows the p50 down only on firm evidence: two windows
 * in a row, each with the samples its spread asks for, under it by a fifth (a downstream that got
 * faster, a cache warming, a worker sped up). Following each window's p50 down, as a running
 * minimum does, drifts under the true latency on a noisy downstream (Vegas's failure: a window of
 * a heavy-tailed service answers at half its median), and the limit then starves the downstream.
 */
function nextBase(s: ControlState, next: ControlState, p50: number, full: boolean): number {
  if (s.baseMs === null) return p50;
  // (On a few answers at least: startup steps every tick, and the least of many small windows' p50s is noise.)
  if (s.startup) return s.baseMs;
  const low = full && p50 < s.baseMs / 1.2;
  next.lowP50 = low ? Math.max(p50, s.lowP50 ?? 0) : null;
  if (low && s.lowP50) {
    next.lowP50 = null;
    return Math.max(p50, s.lowP50);
  }
  return s.baseMs;
}

/**
 * Samples a window needs for its p50 to be within ~10% (one standard error): (1.25 σ / 0.1)² for
 * a lognormal spread σ, estimated as ln(p84 / p50) of the last windows. A heavy tail (σ = 1)
 * needs ~150, a steady service the usual 20 (fewer at a limit under 4); a decision on fewer reads noise as queueing.
 */
export function samplesNeeded(s: ControlState, p: ControlParams = defaultParams): number {
  const sigma = s.spread ?? 0;
  // At a small limit the usual 20 answers are many round trips (a second at a limit of 2 after a
  // cut), and the queue band, counted in calls, is wide against the p50's noise: 5 answers per
  // call in flight (at least 12) will do, unless the spread asks for more.
  const floor = Math.min(p.minSamples, Math.max(12, 5 * s.limit));
  return Math.round(clamp((12.5 * sigma) ** 2, floor, 400));
}
