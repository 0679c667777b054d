/** What the orchestrator asks of one load-generator child, and what it answers. JSON both ways. */

export type Generator =
  /** The same request every time. */
  | { kind: 'static'; method: 'GET' | 'POST'; path: string; body?: string }
  /** POST {"userId": "<userPrefix><n>"} with n counting up from 0: every request is a new user (to `paths[n % paths.length]` when given: a sale over several items). */
  | { kind: 'join'; path: string; userPrefix: string; sampleEvery?: number; paths?: string[] }
  /** GET /v1/tickets/<id> with an id picked at random from the list. */
  | { kind: 'poll'; ticketIds: string[] };

export interface LoadSpec {
  url: string;
  connections: number;
  pipelining?: number;
  /** Seconds; or use amount. */
  duration?: number;
  /** Total requests to send (then stop). */
  amount?: number;
  headers?: Record<string, string>;
  gen: Generator;
  /** Where to write every latency (ms, Float64Array, ascending) so several loads can be merged. */
  latencyFile?: string;
  /** Processes (name → pid) whose CPU use over the load is reported; the generator adds itself. */
  watchPids?: Record<string, number | undefined>;
  /** Start this load only once this file exists: a generator already warm from earlier loads waits for the orchestrator's go. */
  startWhenFileExists?: string;
  /** Create this file when this load has finished, so the orchestrator knows in the middle of a list. */
  doneFile?: string;
}

/** A ticket id seen in a 202 of a join load, for the requests with n % sampleEvery === 0. */
export interface Sample {
  n: number;
  ticketId: string;
  position: number;
}

export interface LoadResult {
  requests: number;
  /** When the generator started sending (epoch ms). */
  startedAtMs: number;
  durationS: number;
  rps: number;
  /** Latencies in ms, measured per response (sub-millisecond resolution), all status codes. */
  p50: number;
  p90: number;
  p99: number;
  max: number;
  status: Record<string, number>;
  non2xx: number;
  errors: number;
  timeouts: number;
  samples: Sample[];
  /** Cores used during the load by each watched process, the generator (loadgen) and all the rest (other). */
  cpu: Record<string, number>;
}
