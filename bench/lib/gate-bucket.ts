/** What the simulated downstream counts per 100 ms bucket (shared by the downstream process and the gate scenario). */
export interface BucketCounts {
  arrivals: number;
  ok: number;
  e503: number;
  abandoned: number;
  floodedMs: number;
  backlog: number;
  backlogMax: number;
  inService: number;
  k: number;
  /** The member's true capacity at the bucket's tick (calls/s). */
  capPerS: number;
}
