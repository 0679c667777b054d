/**
 * The `gate` bench's analysis: from the downstream's 100 ms buckets, per phase of a family member,
 * delivered ÷ capacity (200s over the true capacity integrated over the phase), share of time
 * flooded (backlog > K), and recovery: from the phase's start (phase 1: from the first answer, the
 * cold start) to the first 2 s stretch in which every 1 s window delivered ≥ 0.85 of capacity with
 * the downstream flooded < 5% of it. The same rules as the simulation (gate-sim.ts).
 */
import type { BucketCounts } from './gate-bucket.js';
import { phaseMs, STEPS, type Downstream } from './gate-family.js';

export interface DsBucket extends BucketCounts {
  p50: number | null;
  p99: number | null;
}

export interface DsSeries {
  startedAtEpoch: number;
  bucketMs: number;
  zombies: number;
  buckets: DsBucket[];
}

export interface PhaseResult {
  phase: number;
  share: number;
  delivered: number;
  flooded: number;
  recoveryS: number | null;
  e503: number;
  p50: number | null;
}

export const T_DELIVERED = 0.85;
export const T_FLOODED = 0.05;
export const T_RECOVERY_S = 2;
/** The recovery target of a phase: 2 s, and from a cold start 5 round trips where that is longer. */
export const recoveryTarget = (d: Downstream, phase: number) => (phase === 0 ? Math.max(T_RECOVERY_S, (5 * d.serviceMs) / 1000) : T_RECOVERY_S);

export function analyse(d: Downstream, s: DsSeries): PhaseResult[] {
  const per = s.bucketMs;
  const b = (i: number) => s.buckets[i];
  const ph = phaseMs(d) / per;
  const firstOk = s.buckets.findIndex((x) => x.ok > 0);
  return STEPS.map((share, i) => {
    const i0 = i === 0 ? Math.min(ph - 20, Math.max(0, firstOk)) : i * ph;
    const i1 = (i + 1) * ph;
    let ok = 0;
    let cap = 0;
    let flood = 0;
    let e503 = 0;
    const p50s: number[] = [];
    for (let j = i0; j < i1; j++) {
      const x = b(j);
      if (!x) continue;
      ok += x.ok;
      cap += (x.capPerS * per) / 1000;
      flood += x.floodedMs;
      e503 += x.e503;
      if (x.p50 !== null) p50s.push(x.p50);
    }
    p50s.sort((a, c) => a - c);
    return { phase: i + 1, share, delivered: cap ? ok / cap : 0, flooded: flood / ((i1 - i0) * per), recoveryS: recovery(i0, i1), e503, p50: p50s.length ? p50s[Math.floor(p50s.length / 2)] : null };
  });

  function recovery(from: number, to: number): number | null {
    const win = Math.round(1000 / per);
    const good = (i: number) => {
      let ok = 0;
      let cap = 0;
      let flood = 0;
      for (let j = i; j < i + win; j++) {
        ok += b(j)?.ok ?? 0;
        cap += ((b(j)?.capPerS ?? 0) * per) / 1000;
        flood += b(j)?.floodedMs ?? 0;
      }
      return ok >= T_DELIVERED * cap && flood < T_FLOODED * 1000;
    };
    for (let i = from; i + 2 * win <= to; i++) {
      let all = true;
      for (let j = i; j <= i + win && all; j++) all = good(j);
      if (all) return ((i - from) * per) / 1000;
    }
    return null;
  }
}

/** Whether a row meets the targets. */
export function meets(d: Downstream, r: PhaseResult): boolean {
  return r.delivered >= T_DELIVERED && r.flooded <= T_FLOODED && r.recoveryS !== null && r.recoveryS <= recoveryTarget(d, r.phase - 1);
}
