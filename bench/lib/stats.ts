/** Small number helpers shared by the load worker and the report. */

/** The q-quantile of an ascending array (nearest rank); 0 for an empty one. */
export function percentile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

export const fmtInt = (n: number) => Math.round(n).toLocaleString('en-US');
export const fmtMs = (n: number) => (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2));
export const fmtRatio = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : 'n/a');
export const fmtS = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
