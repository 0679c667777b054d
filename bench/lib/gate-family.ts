/**
 * The family of simulated downstreams the gate must hold its targets on (issue #14), fixed in code
 * with seeds so runs compare. One module, used twice: by the deterministic simulation test
 * (gate-sim.ts, the pure control law on a virtual clock) and by the `gate` bench's real HTTP
 * downstream (bench/lib/gate-downstream.ts) driven through the real daemon.
 *
 * A member is K workers with a FIFO backlog. A call that gets a worker takes
 *   s0 × floor(t) × (1 + thrash × backlog / K) × lognormal(σ) ÷ speed(t)   ms
 * (backlog counted when its service starts; the noise has mean 1). Capacity steps with the phase:
 * C → C/4 → C (`STEPS`), times a slow drift where the member has one; the steps change K, and
 * where K is too small to quarter, the speed of each worker. On arrival a call is answered 503 at
 * once when the backlog already holds `shedPerK × K` calls, or, for the member that times out
 * instead of answering, is never answered (the caller gives up) past `hangPerK × K`.
 * Cold start: the first `coldCalls` calls of a run take 10× as long (an opening burst on cold
 * caches): the gate's first samples are 10× the true latency.
 */
export interface Downstream {
  name: string;
  /** What the member stands for, for the report. */
  about: string;
  seed: number;
  workers: number;
  serviceMs: number;
  thrash: number;
  /** Lognormal σ of the service time (0: none). σ = 1 is a heavy tail: p99 ≈ 6 × p50. */
  sigma: number;
  /** 503 at once past this backlog, per worker. */
  shedPerK: number;
  /** Never answers past this backlog, per worker (the caller's timeout ends the call). */
  hangPerK?: number;
  /** Capacity × (1 + amplitude × sin(2πt / periodMs)). */
  drift?: { amplitude: number; periodMs: number };
  /** Service time × `factor` before `fromS` of phase 1, falling linearly to ×1 by `toS` (a cache warming); ×`after` from the middle of phase 3 (a cache flush). */
  floor?: { factor: number; fromS: number; toS: number; after: number };
  /** Capacity per phase (default `STEPS`); `cold: false` leaves out the cold start (both for experiments). */
  steps?: number[];
  cold?: boolean;
}

/** Capacity per phase, as a share of the member's nominal C. */
export const STEPS = [1, 0.25, 1];
/** Calls of the opening burst that answer slowly: 10, or two per worker where there are fewer. */
export const coldCalls = (d: Downstream) => (d.cold === false ? 0 : Math.min(10, 2 * d.workers));
export const COLD_FACTOR = 10;
/** The caller's timeout per call (the webhook's timeoutMs in the bench): room for a cold call. */
export const callTimeoutMs = (d: Downstream) => Math.max(2000, 2 * COLD_FACTOR * d.serviceMs);

// Nominal capacities stay ≤ 400/s: one daemon on this 2-core machine carries ~800 calls/s of
// webhook work, and the gate, not the daemon, must be what limits delivery.
export const FAMILY: Downstream[] = [
  { name: 'fast-2w', about: '5 ms, 2 workers, no thrashing', seed: 11, workers: 2, serviceMs: 5, thrash: 0, sigma: 0.1, shedPerK: 8 },
  { name: 'single', about: '25 ms, 1 worker, mild thrashing', seed: 12, workers: 1, serviceMs: 25, thrash: 0.1, sigma: 0.2, shedPerK: 8 },
  { name: 'thrash', about: '50 ms, 16 workers, strong thrashing', seed: 13, workers: 16, serviceMs: 50, thrash: 0.5, sigma: 0.2, shedPerK: 4 },
  { name: 'slow-64w', about: '500 ms, 64 workers, mild thrashing', seed: 14, workers: 64, serviceMs: 500, thrash: 0.25, sigma: 0.2, shedPerK: 4 },
  { name: 'heavy-tail', about: '100 ms, 24 workers, lognormal σ = 1', seed: 15, workers: 24, serviceMs: 100, thrash: 0.25, sigma: 1, shedPerK: 4 },
  { name: 'shed-503', about: '40 ms, 12 workers, 503 past a backlog of K/4, never slows', seed: 16, workers: 12, serviceMs: 40, thrash: 0, sigma: 0.2, shedPerK: 0.25 },
  { name: 'times-out', about: '80 ms, 10 workers, never answers past a backlog of 2K', seed: 17, workers: 10, serviceMs: 80, thrash: 0.25, sigma: 0.2, shedPerK: 100, hangPerK: 2 },
  { name: 'drift', about: '100 ms, 20 workers, capacity drifting ±30%', seed: 18, workers: 20, serviceMs: 100, thrash: 0.25, sigma: 0.3, shedPerK: 4, drift: { amplitude: 0.3, periodMs: 16_000 } },
  { name: 'cache-warm', about: '50 ms, 10 workers, 3× slower until its cache warms; 2× after a flush', seed: 19, workers: 10, serviceMs: 50, thrash: 0.25, sigma: 0.3, shedPerK: 4, floor: { factor: 3, fromS: 1, toS: 3, after: 2 } },
];

/** Phase length: enough round trips for the slow members to settle. */
export const phaseMs = (d: Downstream) => Math.max(8000, 30 * d.serviceMs);

/** A seeded PRNG (mulberry32). */
export function rng(seed: number) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Workers and per-worker speed at `tMs` into a run (steps and drift). */
export function capacityAt(d: Downstream, tMs: number): { workers: number; speed: number } {
  const steps = d.steps ?? STEPS;
  const phase = Math.min(steps.length - 1, Math.floor(tMs / phaseMs(d)));
  let share = steps[phase];
  if (d.drift) share *= 1 + d.drift.amplitude * Math.sin((2 * Math.PI * tMs) / d.drift.periodMs);
  const exact = d.workers * share;
  const workers = Math.max(1, Math.round(exact));
  return { workers, speed: exact / workers };
}

/** The service-time multiplier of the latency floor at `tMs`. */
export function floorAt(d: Downstream, tMs: number): number {
  const f = d.floor;
  if (!f) return 1;
  const ph = phaseMs(d);
  if (tMs >= 2.5 * ph) return f.after;
  const s = tMs / 1000;
  if (s <= f.fromS) return f.factor;
  if (s >= f.toS) return 1;
  return f.factor + ((1 - f.factor) * (s - f.fromS)) / (f.toS - f.fromS);
}

/** True capacity (calls/s) at `tMs`, with no backlog. */
export function capacityPerS(d: Downstream, tMs: number): number {
  const { workers, speed } = capacityAt(d, tMs);
  return ((workers * speed) / (d.serviceMs * floorAt(d, tMs))) * 1000;
}

/** A standard normal from two uniforms (Box–Muller). */
function normal(random: () => number): number {
  const u = Math.max(random(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}

/** What happens to a call arriving with `backlog` calls queued and `busy` workers busy. */
export function onArrival(d: Downstream, tMs: number, backlog: number, busy: number): 'serve' | 'shed' | 'hang' {
  const { workers } = capacityAt(d, tMs);
  if (busy < workers) return 'serve';
  if (backlog >= Math.max(1, d.shedPerK * workers)) return 'shed';
  if (d.hangPerK !== undefined && backlog >= d.hangPerK * workers) return 'hang';
  return 'serve';
}

/** Service time (ms) of a call starting now; `nth` counts the run's calls from 1 (cold start). */
export function serviceTime(d: Downstream, tMs: number, backlog: number, nth: number, random: () => number): number {
  const { workers, speed } = capacityAt(d, tMs);
  const noise = d.sigma > 0 ? Math.exp(d.sigma * normal(random) - (d.sigma * d.sigma) / 2) : 1;
  const cold = nth <= coldCalls(d) ? COLD_FACTOR : 1;
  return (d.serviceMs * floorAt(d, tMs) * (1 + (d.thrash * backlog) / workers) * noise * cold) / speed;
}

/** Total run length of a member: its phases back to back. */
export const runMs = (d: Downstream) => (d.steps ?? STEPS).length * phaseMs(d);

/** The members named in a comma list (all when empty). */
export function pickFamily(names: string | undefined): Downstream[] {
  if (!names) return FAMILY;
  const want = names.split(',').map((s) => s.trim());
  const unknown = want.filter((n) => !FAMILY.some((d) => d.name === n));
  if (unknown.length) throw new Error(`unknown downstream(s) ${unknown.join(', ')}; the family: ${FAMILY.map((d) => d.name).join(', ')}`);
  return FAMILY.filter((d) => want.includes(d.name));
}
