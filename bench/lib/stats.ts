/** Small number helpers shared by the load worker and the report. */

/** The q-quantile of an ascending array (nearest rank); 0 for an empty one. */
export function percentile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

/** The median of a list (NaN when empty). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length ? (s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2) : NaN;
}

export const fmtInt = (n: number) => Math.round(n).toLocaleString('en-US');
export const fmtMs = (n: number) => (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2));
export const fmtRatio = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : 'n/a');
export const fmtS = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** Counts by key (HTTP statuses, say) added up; undefined ones count as none. */
export function sumCounts(...xs: (Record<string, number> | undefined)[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of xs) for (const [k, v] of Object.entries(s ?? {})) out[k] = (out[k] ?? 0) + v;
  return out;
}

/** `k` items spread evenly over `xs`. */
export function spread<T>(xs: T[], k: number): T[] {
  if (xs.length <= k) return xs;
  return Array.from({ length: k }, (_, i) => xs[Math.round((i * (xs.length - 1)) / (k - 1))]);
}
