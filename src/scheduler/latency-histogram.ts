/**
 * Log-bucket latency histogram: bucket i holds samples in [1.1^i, 1.1^(i+1)) ms, so any quantile
 * is known to within 10% (closer, interpolated, with many samples), and histograms from many
 * daemons merge by adding counts.
 */
export type Histogram = Map<number, number>;

const LOG_STEP = Math.log(1.1);

export const bucketOf = (ms: number): number => Math.max(0, Math.floor(Math.log(Math.max(ms, 1)) / LOG_STEP));
/** The geometric middle of a bucket, as the value a quantile reports. */
const valueOf = (bucket: number): number => Math.pow(1.1, bucket + 0.5);

export function add(h: Histogram, bucket: number, count = 1): void {
  h.set(bucket, (h.get(bucket) ?? 0) + count);
}

export function merge(into: Histogram, from: Histogram): void {
  for (const [b, c] of from) add(into, b, c);
}

export function count(h: Histogram): number {
  let n = 0;
  for (const c of h.values()) n += c;
  return n;
}

export function quantile(h: Histogram, q: number): number | null {
  const n = count(h);
  if (n === 0) return null;
  const rank = Math.max(1, Math.ceil(q * n));
  let seen = 0;
  for (const b of [...h.keys()].sort((a, c) => a - c)) {
    const c = h.get(b)!;
    // Interpolated within the bucket (geometrically, by the rank's place among its samples): a
    // bucket is 10% wide, and the gate compares latencies a few percent apart.
    if (seen + c >= rank) return Math.pow(1.1, b + (rank - seen - 0.5) / c);
    seen += c;
  }
  return null;
}

/** The mean (by bucket middles): what Little's law relates to in-flight and throughput. */
export function mean(h: Histogram): number | null {
  let n = 0;
  let sum = 0;
  for (const [b, c] of h) {
    n += c;
    sum += c * valueOf(b);
  }
  return n ? sum / n : null;
}
