import { describe, expect, it } from 'vitest';
import { defaultParams, enforced, idle, initialState, probeTimeout, ready, stalled, step, type ControlState, type SampleWindow } from '../src/scheduler/control-law.js';
import { bucketOf, type Histogram } from '../src/scheduler/latency-histogram.js';
import { meetsTargets, simulateMember } from '../bench/lib/gate-sim.js';
import { FAMILY } from '../bench/lib/gate-family.js';

const hist = (ms: number, n: number): Histogram => new Map([[bucketOf(ms), n]]);
const win = (over: Partial<SampleWindow>): SampleWindow => ({ n: 0, drops: 0, hist: new Map(), probeHist: new Map(), inflightMax: 0, waiting: 100, ...over });
const steady = (limit: number) => ({ ...initialState(0, limit), nextProbeAt: Infinity, baseMs: 50, p50Ms: 50, startup: false });

// Every member of the downstream family (bench/lib/gate-family.ts: 5–500 ms, 1–64 workers,
// thrashing, heavy tails, shedding, timeouts, drift, a moving latency floor), each stepping C → C/4
// → C after a cold start, on a virtual clock: the whole family runs in about a second.
// Targets per phase: delivered ≥ 0.85 of capacity, flooded ≤ 5% of the time, recovery ≤ 2 s
// (≤ 5 round trips from the cold start of the 500 ms member).
// KNOWN_GAPS: members the law does not yet hold the targets on (issue #14 stays open for them);
// `it.fails` turns red the day one of them passes, so the list cannot go stale.
// (The ratchet below counts the whole family: two seeds of a member say little.)
const PASSING = new Set(['shed-503']);
const KNOWN_GAPS = new Set(FAMILY.map((d) => d.name).filter((n) => !PASSING.has(n)));

describe('the control law against the downstream family (virtual clock)', () => {
  for (const d of FAMILY) {
    const check = KNOWN_GAPS.has(d.name) ? it.fails : it;
    check(`holds the targets on ${d.name} (${d.about})`, () => {
      for (const seed of [d.seed, d.seed + 100]) {
        const { phases } = simulateMember(d, { seed });
        phases.forEach((ph, i) => {
          const what = `${d.name}, seed ${seed}, phase ${i + 1}`;
          expect(ph.delivered, what).toBeGreaterThanOrEqual(0.85);
          expect(ph.flooded, what).toBeLessThanOrEqual(0.05);
          expect(ph.recoveryMs, what).not.toBeNull();
          expect(ph.recoveryMs!, what).toBeLessThanOrEqual(i === 0 ? Math.max(2000, 5 * d.serviceMs) : 2000);
        });
      }
    });
  }

  it('meets the targets on at least as many of the family\'s rows over eight seeds as it did (a ratchet), and delivers as much on average', () => {
    // A change to the law trades rows between members and seeds (the runs are chaotic: two seeds
    // a member say little), so the count over eight seeds, 216 rows, is what a change must not
    // lower. Gate v3 as of 3 Dec met 75 (mean delivered 0.819); 4 Dec: 86 (0.828) — both with the
    // handler's overhead in the simulation (without it: 73 and 92); 5 Dec, startup capped at twice
    // what the answers carry: 91 (0.8255; 86 and 0.8258 the day before, same seeds). Later on 5
    // Dec, the calls in service counted at the mean time, not the median, and a heavy tail's spread
    // read in startup: 86 (0.8426) — rows within these seeds' noise (over 64 seeds 700 against 699,
    // over 24 seeds 270 against 273), delivered up on every seed count (heavy-tail 0.51 → 0.67 over 64).
    // Later still, room beside hung calls (times-out's and shed-503's step downs): 90 (0.8481).
    // 7 Dec, growth of one call at a time under a limit of 6 with a queue in sight: 97 (0.8509).
    // 7 Dec, afternoon, a heavy tail's calls in service at its mean from startup's exit, and its
    // thin windows' cuts smoothed: 100 (0.8530).
    let met = 0;
    let delivered = 0;
    let rows = 0;
    for (const d of FAMILY)
      for (let k = 0; k < 8; k++)
        simulateMember(d, { seed: d.seed + 100 * k }).phases.forEach((ph, i) => {
          rows++;
          delivered += Math.min(1, ph.delivered);
          if (meetsTargets(d, ph, i)) met++;
        });
    expect(rows).toBe(216);
    expect(met).toBeGreaterThanOrEqual(100);
    expect(delivered / rows).toBeGreaterThanOrEqual(0.8525);
  });

  it('never stalls: every member delivers in every phase, and a probe never outlives its timeout', () => {
    for (const d of FAMILY) {
      const { phases, trace } = simulateMember(d, { trace: true });
      for (const ph of phases) expect(ph.delivered, d.name).toBeGreaterThan(0.1);
      let probingSince: number | null = null;
      for (const x of trace) {
        if (x.probing) probingSince ??= x.t;
        else probingSince = null;
        if (probingSince !== null) expect(x.t - probingSince, `${d.name} at ${x.t} ms`).toBeLessThanOrEqual(defaultParams.probeTimeoutMs + 200);
      }
    }
  });

  it('does better than a fixed limit tuned for the first phase, which floods the downstream after its step down', () => {
    const d = FAMILY.find((m) => m.name === 'thrash')!;
    const fixed = simulateMember(d, { fixedLimit: d.workers + 4 }).phases;
    const auto = simulateMember(d).phases;
    expect(fixed[1].flooded).toBeGreaterThan(0.5);
    expect(auto[1].flooded).toBeLessThan(fixed[1].flooded);
  });
});

describe('the control law, step by step', () => {
  it('cuts the limit on drops, once per round trip, then grows back by one per round trip near the limit that dropped', () => {
    const f = defaultParams.dropFactor;
    const s = steady(100);
    const a = step(s, win({ n: 100, drops: 5, hist: hist(50, 95), inflightMax: 100 }), 1000);
    expect(a.limit).toBeCloseTo(100 * f);
    const b = step(a, win({ n: 100, drops: 5, hist: hist(50, 95), inflightMax: 100 }), 1100);
    expect(b.limit).toBeCloseTo(100 * f); // the same burst of timeouts: no second cut yet
    const c = step(b, win({ n: 100, drops: 5, hist: hist(50, 95), inflightMax: 100 }), 1700);
    expect(c.limit).toBeCloseTo(100 * f * f);
    const d = step({ ...a, limit: 95 }, win({ n: 100, hist: hist(40, 100), inflightMax: 95 }), 2000);
    expect(d.limit).toBeCloseTo(96);
  });

  it('grows while latency stays near the baseline and the limit is used, and not when app-limited', () => {
    const s = steady(16);
    const grown = step(s, win({ n: 40, hist: hist(50, 40), inflightMax: 16 }), 1000);
    expect(grown.limit).toBeGreaterThan(16);
    const idle = step(s, win({ n: 40, hist: hist(50, 40), inflightMax: 3 }), 1000);
    expect(idle.limit).toBe(16);
  });

  it('shrinks when latency rises above the baseline', () => {
    const s = steady(40);
    const next = step(s, win({ n: 40, hist: hist(150, 40), inflightMax: 40 }), 1000);
    expect(next.limit).toBeLessThan(30);
  });

  it('probes by pinning to a quarter of the limit, then replaces the baseline (up as well as down)', () => {
    const s = { ...steady(40), nextProbeAt: 1000 };
    const probing = step(s, win({ n: 40, hist: hist(50, 40), inflightMax: 40 }), 1000);
    expect(probing.probe).not.toBeNull();
    expect(enforced(probing).limit).toBe(Math.floor(probing.probe!.savedLimit * defaultParams.probeFraction));
    const done = step(probing, win({ n: 45, hist: hist(80, 45), probeHist: hist(80, 45), inflightMax: 10 }), 1400);
    expect(done.probe).toBeNull();
    expect(done.baseMs).toBeGreaterThan(70);
    expect(done.limit).toBeCloseTo(probing.probe!.savedLimit);
    expect(done.nextProbeAt).toBeGreaterThanOrEqual(1400 + defaultParams.probeEveryMs);
  });

  it('steps on time when nothing ends while tickets wait and the gate has room: drops the pace and re-probes', () => {
    const s = { ...steady(2), p50Ms: 684, p99Ms: 900 };
    const quiet = win({ inflightMax: 0, waiting: 382 });
    expect(stalled(s, quiet, 0, 1500)).toBe(false); // not yet: max(2 s, 2 × p99)
    expect(ready(s, quiet, 0, 2000)).toBe(true);
    expect(stalled(s, { ...quiet, waiting: 0 }, 0, 5000)).toBe(false); // nothing to admit
    expect(stalled(s, { ...quiet, inflightMax: 2 }, 0, 5000)).toBe(false); // full: the downstream is slow, not the gate
    const next = step(s, quiet, 2000);
    expect(next.probe).not.toBeNull();
    expect(next.probes).toBe(s.probes + 1);
    expect(enforced(next).rate).toBeNull(); // the limit alone gates until answers come
  });

  it('ends a probe at its timeout even when no answer came', () => {
    const s = { ...steady(40), probe: { startedAt: 1000, savedLimit: 40, hist: [] } };
    const quiet = win({ inflightMax: 20 });
    expect(ready(s, quiet, 1000, 1000 + probeTimeout(s) - 1)).toBe(false);
    expect(ready(s, quiet, 1000, 1000 + probeTimeout(s))).toBe(true);
    const next = step(s, quiet, 1000 + probeTimeout(s));
    expect(next.probe).toBeNull();
    expect(next.limit).toBe(40);
  });

  it('halves the pin of a probe while the downstream still delivers as much as unpinned (a queue remains)', () => {
    // 20 workers of 1 s behind a stale 2 s baseline. Unpinned it delivered 20 calls/s; pinned at
    // 20, answers take 1 s: still 20 calls/s, so the probe cannot tell the queue from the work.
    const p = { ...defaultParams, probeTimeoutMs: 20_000 };
    const s = { ...steady(40), baseMs: 2000, probe: { startedAt: 0, savedLimit: 40, hist: [], perS: 20 } };
    const next = step(s, win({ n: 30, hist: hist(1000, 30), probeHist: hist(1000, 30), inflightMax: 20 }), 3500, p);
    expect(next.probe?.pin).toBe(10);
    // Pinned at 10, answers still take 1 s: 10 calls/s, less than it delivered: no queue left.
    const done = step(next, win({ n: 20, hist: hist(1000, 20), probeHist: hist(1000, 20), inflightMax: 10 }), 7500, p);
    expect(done.probe).toBeNull();
    expect(done.baseMs).toBeGreaterThan(900);
    expect(done.baseMs).toBeLessThan(1100);
    // The limit of 40 was set against the stale 2 s baseline and held a queue of 20: it goes to what
    // 20 calls/s need at 1 s (20 in service and the band's middle), not back to 40.
    expect(done.limit).toBeGreaterThan(22);
    expect(done.limit).toBeLessThan(28);
  });

  it('the probe that ends startup halves a small pin and keeps halving while the latency falls: a one-worker downstream behind an opening burst', () => {
    // One worker of 25 ms. Pinned at 2, answers take 50 ms (a queue of one); the answer rate it
    // would compare with (100/s, a burst of the opening) says "not saturated" and the probe ended
    // there with a 50 ms baseline. Halved to 1, answers take 25 ms: that was a queue.
    const s = { ...steady(4), baseMs: 250, probe: { startedAt: 0, savedLimit: 4, hist: [] as [number, number][], perS: 100, pin: 2, cold: true } };
    const halved = step(s, win({ n: 20, hist: hist(50, 20), probeHist: hist(50, 20), inflightMax: 2, ms: 500 }), 500);
    expect(halved.probe?.pin).toBe(1);
    const done = step(halved, win({ n: 20, hist: hist(25, 20), probeHist: hist(25, 20), inflightMax: 1, ms: 600 }), 1100);
    expect(done.probe).toBeNull();
    expect(done.baseMs).toBeLessThan(30);
    // A probe in steady state at the same pin ends on the answer rate, as before (no extra halving).
    const steadyProbe = step({ ...s, probe: { ...s.probe, cold: undefined } }, win({ n: 20, hist: hist(50, 20), probeHist: hist(50, 20), inflightMax: 2, ms: 500 }), 500);
    expect(steadyProbe.probe).toBeNull();
  });

  it('gives a probe that halved its pin its timeout again for each halving, never past the cap', () => {
    const base = { ...steady(8), baseMs: 20 };
    const once = { ...base, probe: { startedAt: 1500, since: 0, savedLimit: 8, hist: [] as [number, number][], pin: 2, halvings: 1 } };
    const quiet = win({ inflightMax: 2 });
    expect(probeTimeout(base)).toBe(1000);
    expect(probeTimeout(once)).toBe(2000);
    expect(ready(once, quiet, 1500, 1999)).toBe(false);
    expect(ready(once, quiet, 1500, 2000)).toBe(true);
    expect(probeTimeout({ ...once, probe: { ...once.probe, halvings: 5 } })).toBe(defaultParams.probeTimeoutMs);
  });

  it('refits the limit when a probe finds a lower baseline: the calls the throughput seen needs at it', () => {
    // A limit of 40 from a cold start's 200 ms baseline; the downstream answered 100 calls/s. The
    // probe (pinned at 3) reads 50 ms: 100/s at 50 ms keep 5 calls busy, not 40.
    const s = { ...steady(40), baseMs: 200, probe: { startedAt: 0, savedLimit: 40, hist: [] as [number, number][], perS: 100, pin: 3 } };
    const done = step(s, win({ n: 30, hist: hist(50, 30), probeHist: hist(50, 30), inflightMax: 3, ms: 1000 }), 1000);
    expect(done.probe).toBeNull();
    expect(done.baseMs).toBeLessThan(60);
    expect(done.limit).toBeGreaterThan(5);
    expect(done.limit).toBeLessThan(9);
  });

  it('does not refit a limit the line did not use before the probe: a short line\'s answer rate is its demand, not the capacity', () => {
    // The probe starts from a window that used 3 of 40: the answers/s it saw were what 3 callers asked.
    const s = { ...steady(40), baseMs: 200, nextProbeAt: 1000 };
    const probing = step(s, win({ n: 15, hist: hist(200, 15), inflightMax: 3, ms: 1000 }), 1000);
    expect(probing.probe?.used).toBe(false);
    const done = step({ ...probing, probe: { ...probing.probe!, pin: 1 } }, win({ n: 30, hist: hist(50, 30), probeHist: hist(50, 30), inflightMax: 1, ms: 1000 }), 2000);
    expect(done.probe).toBeNull();
    expect(done.baseMs).toBeLessThan(60);
    expect(done.limit).toBe(40);
  });

  it('keeps a baseline a timed-out probe would lower on a handful of answers (the short ones), and takes one it raises', () => {
    const s = { ...steady(40), baseMs: 60, probe: { startedAt: 0, savedLimit: 40, hist: [] as [number, number][], perS: 100 } };
    const t = probeTimeout(s);
    const short = step(s, win({ n: 12, hist: hist(39, 12), probeHist: hist(39, 12), inflightMax: 20, ms: t }), t);
    expect(short.probe).toBeNull();
    expect(short.baseMs).toBe(60);
    const long = step(s, win({ n: 12, hist: hist(80, 12), probeHist: hist(80, 12), inflightMax: 20, ms: t }), t);
    expect(long.baseMs).toBeGreaterThan(75);
  });

  it('counts the calls on their way to and from the downstream when it cuts to what the answers carry', () => {
    // 5 ms calls with 4 ms of dispatch and settle around each (the pipe, learned on calm windows):
    // 500 answers/s keep 2.5 calls in service and 2 in the pipe.
    const s = { ...steady(10), baseMs: 5, p50Ms: 5, pipeMs: 4 };
    const next = step(s, win({ n: 100, hist: hist(20, 100), inflightMax: 10, ms: 200 }), 1000);
    const withoutPipe = step({ ...s, pipeMs: 0 }, win({ n: 100, hist: hist(20, 100), inflightMax: 10, ms: 200 }), 1000);
    expect(next.limit - withoutPipe.limit).toBeCloseTo(2, 1);
  });

  it('counts the calls in service at their mean time, read on calm windows, when it cuts to what the answers carry: a heavy tail keeps its workers busy', () => {
    // A calm window of a heavy-tailed service: median 60 ms, a third of its answers at 200 ms
    // (mean ≈ 107 ms), at half the limit's queue band: mean ÷ median ≈ 1.8 is learned.
    const heavy: Histogram = new Map([[bucketOf(60), 100], [bucketOf(200), 50]]);
    const s = { ...steady(40), baseMs: 60, p50Ms: 60, spread: 0 };
    const calm = step(s, win({ n: 150, hist: heavy, inflightMax: 20, ms: 1000 }), 1000);
    expect(calm.meanRatio).toBeGreaterThan(1.6);
    // Then a queue: 40 in flight answered at 120 ms, 250/s. Little's law on the mean (250/s ×
    // ~107 ms ≈ 27 calls in service) cuts to ~30; on the median (250/s × 60 ms = 15) it cut to ~19.
    const queued = win({ n: 50, hist: hist(120, 50), inflightMax: 40, ms: 200 });
    const cut = step({ ...calm, probe: null, limit: 40 }, queued, 1300);
    const onMedian = step({ ...calm, probe: null, limit: 40, meanRatio: 1 }, queued, 1300);
    expect(cut.limit).toBeGreaterThan(onMedian.limit + 8);
    expect(cut.limit).toBeLessThan(40);
  });

  it('does not read a handful of missing answers of a noisy service as the downstream losing capacity', () => {
    // A spread of σ = 0.9 needs ~127 answers for its median; 3 answers where 10 were expected
    // say nothing yet. A steady service's 3 of 10 still close the window early.
    const s = { ...steady(10), lastPerS: 50, spread: 0.9 };
    expect(ready(s, win({ n: 3, hist: hist(50, 3), inflightMax: 10 }), 1000, 1200)).toBe(false);
    expect(ready({ ...s, spread: 0.1 }, win({ n: 3, hist: hist(50, 3), inflightMax: 10 }), 1000, 1200)).toBe(true);
  });

  it('re-measures the baseline instead of cutting again when a cut to well under the in-flight that read a queue leaves the latency where it was', () => {
    // Latency doubled (a cache flush, not a queue): 40 in flight answered at 100 ms, 400/s, so
    // Little's law finds no hidden calls, and the queue reading cuts L to ~25. At 24 in flight the
    // answers still take 100 ms: cutting on would starve the downstream; probe instead.
    const s = steady(40);
    const cut = step(s, win({ n: 80, hist: hist(100, 80), inflightMax: 40, ms: 200 }), 1000);
    expect(cut.limit).toBeLessThan(30);
    expect(cut.probe).toBeNull();
    const again = step(cut, win({ n: 48, hist: hist(100, 48), inflightMax: 24, ms: 200 }), 1300);
    expect(again.probe).not.toBeNull();
    expect(again.probe!.savedLimit).toBeCloseTo(cut.limit);
  });

  it('climbs from a cold start whose first answers were 10x slow: doubling per round trip while answers grow with the limit', () => {
    // 64 workers of 500 ms behind a limit of 10 whose first answers took 5 s.
    let s = { ...initialState(0, 10), nextProbeAt: Infinity };
    s = step(s, win({ n: 10, hist: hist(5000, 10), inflightMax: 10, ms: 5000 }), 5000);
    expect(s.limit).toBe(10);
    let t = 5000;
    for (let i = 0; i < 3; i++) {
      const n = Math.floor(s.limit); // a round trip of 500 ms at the limit answers L calls
      s = step(s, win({ n, hist: hist(500, n), inflightMax: n, ms: 500 }), (t += 500));
    }
    expect(s.baseMs).toBeLessThan(600);
    expect(s.limit).toBeGreaterThanOrEqual(64);
    expect(s.startup).toBe(true);
  });

  it('caps startup at twice what the answers carry at the baseline, plus two (BBR\'s startup gain), but not on a heavy tail', () => {
    // 10 workers of 80 ms. Startup at L = 20 gets 12 answers a tick at the baseline (the calls of a
    // round trip ago): one per answer would make 32; 120 answers/s keep 9.6 busy, so 21.2.
    const s = { ...initialState(0, 20), nextProbeAt: Infinity, baseMs: 80, p50Ms: 80, startX: 100, startHist: [] as [number, number][], startAnswers: 0, startAt: 1000 };
    const capped = step(s, win({ n: 12, hist: hist(80, 12), inflightMax: 20, ms: 100 }), 1100);
    expect(capped.startup).toBe(true);
    expect(capped.limit).toBeCloseTo(2 * 120 * 0.08 + 2, 1);
    // The same answers spread like a heavy tail (p16 a third of the p50): a median says too little of
    // the calls in service to cap on, and growth goes on per answer.
    const spread: Histogram = new Map([[bucketOf(20), 4], [bucketOf(60), 4], [bucketOf(180), 4]]);
    const heavy = step(s, win({ n: 12, hist: spread, inflightMax: 20, ms: 100 }), 1100);
    expect(heavy.heavyTail).toBe(true);
    expect(heavy.limit).toBe(32);
  });

  it('makes room beside calls that hang (no answer at all with the gate full), once, no further than the answers lately carried, and takes half of it back when they time out', () => {
    // A limit of 3 after a step down, 4 calls hung past the downstream's backlog: nothing answers
    // and nothing is admitted. Lately 100 answers/s at 50 ms: room up to ~7 calls.
    const s = { ...steady(3), perS: 100, lastPerS: 10 };
    const quiet = win({ inflightMax: 4 });
    expect(ready(s, quiet, 1000, 1400)).toBe(false); // a queue on live workers would have answered by 500 ms
    expect(ready(s, quiet, 1000, 1500)).toBe(true);
    // Sooner where the last window's rate promised 6 answers or more (the starved window's rule).
    const promised = step({ ...s, lastPerS: 40 }, { ...quiet, ms: 200 }, 1200);
    expect(promised.limit).toBeGreaterThan(5);
    expect(promised.probe).toBeNull();
    const room = step(s, { ...quiet, ms: 500 }, 1500);
    expect(room.limit).toBeGreaterThan(5);
    expect(room.limit).toBeLessThan(9);
    expect(room.probe).toBeNull(); // not a stall's probe: it would pin under the hung calls
    expect(step(room, win({ inflightMax: 8, ms: 1500 }), 3000).limit).toBeLessThanOrEqual(room.limit); // once, until answers come
    // They end as drops (the caller's timeout): half the room goes, no drop cut on top.
    const back = step(room, win({ n: 6, drops: 4, hist: hist(50, 2), inflightMax: 8, ms: 200 }), 3500);
    expect(back.limit).toBeCloseTo(room.limit - (room.limit - 3) / 2);
    // A downstream that hung every call lately delivered nothing: no room.
    const dead = step({ ...s, perS: 0 }, { ...quiet, ms: 2000 }, 3000);
    expect(dead.limit).toBeLessThanOrEqual(3);
    expect(dead.stuck).toBeFalsy();
  });

  it('does not read a window that began with nothing in flight (a lull in demand) as a hidden queue: the limit holds after pauses of 0.3 s, 2 s and 30 s', () => {
    // Converged on 40 workers of ~50 ms at L = 54 (800 answers/s). The first answers of the rush
    // after a pause, in a window that was open through it: read against 54 in flight, their rate
    // over the pause said a queue hid almost all of them, and L went to 8.75 / 1.95 / 1.00.
    const s: ControlState = { ...steady(54), p99Ms: 60, probes: 1, perS: 800, lastPerS: 800 };
    for (const ms of [300, 2000, 30_000]) {
      const w = win({ n: 40, hist: hist(50, 40), inflightMax: 54, inflightMin: 0, waiting: 1000, ms });
      expect(step(s, w, 100_000, defaultParams, () => 0.5).limit, `${ms} ms`).toBeGreaterThanOrEqual(0.7 * 54);
    }
    // A window whose calls stayed out is read as before: its answers short of the rate is a queue.
    const full = win({ n: 40, hist: hist(50, 40), inflightMax: 54, inflightMin: 54, waiting: 1000, ms: 300 });
    expect(step(s, full, 100_000, defaultParams, () => 0.5).limit).toBeLessThan(0.5 * 54);
    // Nothing answered, nothing in flight, nothing waiting: the controller opens the window afresh.
    expect(idle(win({ waiting: 0 }), 0)).toBe(true);
    expect(idle(win({ waiting: 3 }), 0)).toBe(false); // a stall, which `stalled` must see
    expect(idle(win({ waiting: 0 }), 2)).toBe(false);
    expect(idle(win({ n: 1, waiting: 0 }), 0)).toBe(false);
  });

  it('keeps the limit it converged on through a pause in demand of 0.3 s, 2 s or 30 s (windows kept as the controller keeps them)', () => {
    // The controller's loop (controller.ts): 100 ms ticks, in-flight read at each, the window opened
    // afresh while idle, stepped when ready. Downstream: 40 workers, 45–55 ms a call; a rush of
    // 20 s, no tickets for the pause, then a full line again. The rush starts 20 ms into a tick.
    const lull = (pauseS: number) => {
      const p = defaultParams;
      let now = 1_000_000;
      let s = initialState(now, 10, p);
      let seed = 7;
      const rand = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
      const open = (t: number, inflight: number) => ({ ...win({ inflightMax: inflight, waiting: 0 }), inflightMin: inflight, openedAt: t });
      let calls: { start: number; end: number }[] = [];
      const busy: number[] = Array(40).fill(0);
      let w = open(now, 0);
      const from = 20_000;
      const to = from + pauseS * 1000;
      let converged = 0;
      let least = Infinity;
      for (let t = 0; t < to + 10_000; t += 10) {
        now += 10;
        const demand = t < from || t >= to + 20;
        for (const c of calls.filter((c) => c.end <= now)) {
          w.n++;
          w.hist.set(bucketOf(c.end - c.start), (w.hist.get(bucketOf(c.end - c.start)) ?? 0) + 1);
          if (s.probe && c.start >= s.probe.startedAt) w.probeHist.set(bucketOf(c.end - c.start), (w.probeHist.get(bucketOf(c.end - c.start)) ?? 0) + 1);
        }
        calls = calls.filter((c) => c.end > now);
        while (demand && calls.length < enforced(s, p).limit) {
          busy.sort((a, b) => a - b);
          busy[0] = Math.max(now, busy[0]) + 45 + 10 * rand();
          calls.push({ start: now, end: busy[0] });
        }
        if ((t + 10) % 100) continue;
        w.inflightMax = Math.max(w.inflightMax, calls.length);
        w.inflightMin = Math.min(w.inflightMin, calls.length);
        w.waiting = t + 10 < from || t + 10 >= to ? 1000 : 0;
        if (idle(w, calls.length)) w = open(now, 0);
        if (t + 10 === from) converged = s.limit;
        if (ready(s, w, w.openedAt, now, p)) {
          s = step(s, { ...w, ms: now - w.openedAt }, now, p, rand);
          w = open(now, calls.length);
        }
        if (t >= from && !s.probe) least = Math.min(least, s.limit);
      }
      return { converged, least };
    };
    for (const pauseS of [0.3, 2, 30]) {
      const { converged, least } = lull(pauseS);
      expect(converged, `${pauseS} s`).toBeGreaterThan(45);
      expect(least, `${pauseS} s`).toBeGreaterThanOrEqual(0.7 * converged);
    }
  });

  it('never paces below 1/s, however slow the last answers were', () => {
    expect(enforced({ ...steady(1), baseMs: 60_000, p50Ms: 60_000 }).rate).toBe(defaultParams.minRate);
  });

  it('paces admissions at L / p50 with headroom', () => {
    const { limit, rate } = enforced(steady(20));
    expect(limit).toBe(20);
    expect(rate).toBeCloseTo((20 / 0.05) * defaultParams.pacingHeadroom);
  });
});
