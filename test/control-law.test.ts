import { describe, expect, it } from 'vitest';
import { defaultParams, enforced, initialState, ready, stalled, step, type SampleWindow } from '../src/scheduler/control-law.js';
import { bucketOf, type Histogram } from '../src/scheduler/latency-histogram.js';
import { simulate } from './support/sim.js';

const hist = (ms: number, n: number): Histogram => new Map([[bucketOf(ms), n]]);
const win = (over: Partial<SampleWindow>): SampleWindow => ({ n: 0, drops: 0, hist: new Map(), probeHist: new Map(), inflightMax: 0, waiting: 100, ...over });
const steady = (limit: number) => ({ ...initialState(0, limit), nextProbeAt: Infinity, baseMs: 50, p50Ms: 50 });

describe('the control law against a simulated downstream (virtual clock)', () => {
  const phases = [
    { durationMs: 20_000, workers: 20, serviceMs: 50 }, // C = 400/s
    { durationMs: 20_000, workers: 10, serviceMs: 50 }, // C/2
    { durationMs: 20_000, workers: 40, serviceMs: 50 }, // 2C
    { durationMs: 20_000, workers: 20, serviceMs: 100 }, // each call costs twice as much
  ];

  // Over seeds 1-8 this model gives 0.84-0.92 of nominal capacity per phase (the best fixed limit
  // for one phase reaches 0.97 there and fails the others); the assertion keeps a margin.
  it('delivers at least 0.8 of capacity in every phase and keeps the downstream flooded under 5% of the time', () => {
    const { perPhase } = simulate(phases, { seed: 7 });
    for (const ph of perPhase) {
      expect(ph.delivered / ((ph.capacity * ph.ms) / 1000)).toBeGreaterThanOrEqual(0.8);
      expect(ph.floodedMs / ph.ms).toBeLessThanOrEqual(0.05);
    }
  });

  // The field report: a webhook's baseline came from the opening burst (684 ms against a 50 ms
  // service), the pace it gave rounded to no admissions in the gate, and with no answers the law
  // never stepped again. Here the first 2 s answer at 10x the true latency, and the gate is faulty:
  // it admits nothing while paced under 10/s. The law must step on time and find the capacity.
  it('reaches capacity after a cold start answered at 10x the true latency, even through a gate that stalls at slow paces', () => {
    const cold = [
      { durationMs: 2000, workers: 20, serviceMs: 500 },
      { durationMs: 10_000, workers: 20, serviceMs: 50 }, // C = 400/s: recovery
      { durationMs: 10_000, workers: 20, serviceMs: 50 }, // steady
    ];
    for (const seed of [1, 7]) {
      for (const deadBelowRate of [0, 10]) {
        const { perPhase } = simulate(cold, { seed, deadBelowRate });
        const steady = perPhase[2];
        expect(steady.delivered / ((steady.capacity * steady.ms) / 1000), `seed ${seed}, dead below ${deadBelowRate}/s`).toBeGreaterThanOrEqual(0.8);
        expect(steady.floodedMs / steady.ms).toBeLessThanOrEqual(0.05);
        expect(perPhase[1].delivered / ((perPhase[1].capacity * perPhase[1].ms) / 1000)).toBeGreaterThanOrEqual(0.6);
      }
    }
  });

  it('does better than fixed limits, which either flood the downstream or leave capacity unused', () => {
    const tooHigh = simulate(phases, { fixedLimit: 60, seed: 7 }).perPhase;
    const tooLow = simulate(phases, { fixedLimit: 20, seed: 7 }).perPhase;
    expect(tooHigh[1].floodedMs / tooHigh[1].ms).toBeGreaterThan(0.5);
    expect(tooLow[2].delivered / ((tooLow[2].capacity * tooLow[2].ms) / 1000)).toBeLessThan(0.6);
  });
});

describe('the control law, step by step', () => {
  it('cuts the limit by 0.7 on drops, once per round trip', () => {
    const s = steady(100);
    const a = step(s, win({ n: 100, drops: 5, hist: hist(50, 95), inflightMax: 100 }), 1000);
    expect(a.limit).toBeCloseTo(70);
    const b = step(a, win({ n: 100, drops: 5, hist: hist(50, 95), inflightMax: 70 }), 1100);
    expect(b.limit).toBeCloseTo(70); // the same burst of timeouts: no second cut yet
    const c = step(b, win({ n: 100, drops: 5, hist: hist(50, 95), inflightMax: 70 }), 1700);
    expect(c.limit).toBeCloseTo(49);
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

  it('never paces below 1/s, however slow the last answers were', () => {
    expect(enforced({ ...steady(1), p50Ms: 60_000 }).rate).toBe(defaultParams.minRate);
  });

  it('paces admissions at L / p50 with headroom', () => {
    const { limit, rate } = enforced(steady(20));
    expect(limit).toBe(20);
    expect(rate).toBeCloseTo((20 / 0.05) * 1.25);
  });
});
