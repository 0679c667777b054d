import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { logOutputStats } from './logger.js';

/** Prometheus metrics of one daemon; a registry per instance, so tests never share counters. */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'floodgate_' });
  // prom-client names three gauges `nodejs_active_{handles,requests,resources}_total`, which
  // `promtool check metrics` rejects (`_total` is for counters). Each is the sum of the per-type
  // gauge of the same name without the suffix, so dropping them loses nothing.
  for (const metric of registry.getMetricsAsArray())
    if (metric.name.endsWith('_total') && metric instanceof Gauge) registry.removeSingleMetric(metric.name);
  /** Read at scrape time: what the parts created after the metrics report (set by them). */
  const sources = {
    openStreams: () => 0,
    /** Items whose own downstream this process takes as away (service/downstream-health.ts). */
    downstreamAway: (): string[] => [],
    /** The Postgres pressure signal (scheduler/pg-pressure.ts): one reading for its three gauges. */
    pgPressure: (): { perS: number | null; p50Ms: number | null; cap: number } | null => null,
    /** Age of the oldest sale call to Postgres under way (s; db/health.ts). */
    pgOldestCall: () => 0,
  };
  const pressure = (pick: (p: { perS: number | null; p50Ms: number | null; cap: number }) => number | null) =>
    function (this: Gauge) {
      const p = sources.pgPressure();
      if (!p) return;
      // None measured of late (no sell for 30 s: a sale over, or Postgres away): 0, not the last
      // figure kept for good (a review: 1,800 sells/s read through an outage).
      this.set(pick(p) ?? 0);
    };
  // The per-item gauges of lines and gates are not here: /metrics writes them from the item views
  // (item-gauges.ts). With several processes on one port (FLOODGATE_PROCESSES) a scrape is
  // aggregated over them (cluster-metrics.ts): counters and histograms add up.
  const m = {
    registry,
    sources,
    httpDuration: new Histogram({
      name: 'floodgate_http_request_duration_seconds',
      help: 'HTTP request latency by route and status.',
      labelNames: ['method', 'route', 'status'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    joins: new Counter({ name: 'floodgate_joins_total', help: 'Accepted joins (new or existing ticket).', labelNames: ['item', 'result'] as const, registers: [registry] }),
    rejections: new Counter({ name: 'floodgate_rejections_total', help: 'Requests answered with an error, by error code and the item the request names (empty when none, or not an item this daemon knows).', labelNames: ['code', 'item'] as const, registers: [registry] }),
    quotaRefusals: new Counter({ name: 'floodgate_quota_refusals_total', help: 'Joins refused 429 rate_limited, by item and quota (perUser, perKey).', labelNames: ['item', 'quota'] as const, registers: [registry] }),
    admissions: new Counter({ name: 'floodgate_admissions_total', help: 'Tickets admitted from the head of a line, by this daemon (its dispatcher and external pulls).', labelNames: ['item'] as const, registers: [registry] }),
    settles: new Counter({ name: 'floodgate_settles_total', help: 'Outcomes written back, by status (a repeated write-back, answered 200 as the first, counted once).', labelNames: ['item', 'status'] as const, registers: [registry] }),
    waitSeconds: new Histogram({
      name: 'floodgate_wait_seconds',
      help: 'How long admitted tickets waited in line (join to admission), for tickets joined and admitted through this daemon.',
      labelNames: ['item'] as const,
      buckets: [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800],
      registers: [registry],
    }),
    etaError: new Histogram({
      name: 'floodgate_wait_eta_error_ratio',
      help: 'The accuracy of the etaMs a ticket was told when it joined: |actual wait - predicted| / actual wait, at admission.',
      labelNames: ['item'] as const,
      buckets: [0.05, 0.1, 0.15, 0.25, 0.5, 1, 2, 5],
      registers: [registry],
    }),
    downstreamLatency: new Histogram({
      name: 'floodgate_downstream_latency_seconds',
      help: 'Duration of handler calls (the downstream business action), by item.',
      labelNames: ['item'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    downstreamCalls: new Counter({
      name: 'floodgate_downstream_calls_total',
      help: 'Handler calls by result: ok, rejected (a business no), drop (overload or unreachable), error.',
      labelNames: ['item', 'result'] as const,
      registers: [registry],
    }),
    gateInFlight: new Gauge({ name: 'floodgate_gate_in_flight', help: 'Admitted tickets not yet settled, as the gate controller saw them.', labelNames: ['item'] as const, aggregator: 'max', registers: [registry] }),
    gateProbes: new Counter({ name: 'floodgate_gate_probes_total', help: 'Baseline probes started by this daemon as leader.', labelNames: ['item'] as const, registers: [registry] }),
    doubtResolved: new Counter({
      name: 'floodgate_doubt_resolved_total',
      help: 'Tickets of a closed or sold-out item taken out of doubt (their lease ran out before their outcome was known), by how: sold (Postgres held their sale), cut (it held none: the cut\'s outcome), relaunched (run again).',
      labelNames: ['item', 'how'] as const,
      registers: [registry],
    }),
    ledgerDeadLetters: new Counter({
      name: 'floodgate_ledger_dead_letters_total',
      help: 'Outcome rows (and unreadable done-stream entries) the ledger parked in ticket_outcomes_dead, each once (read again after a lost acknowledgement, neither parked nor counted again).',
      labelNames: ['item'] as const,
      registers: [registry],
    }),
    ticketStreams: new Gauge({
      name: 'floodgate_ticket_streams_open',
      help: 'Ticket event streams (SSE) open on this daemon.',
      registers: [registry],
      collect() {
        this.set(sources.openStreams());
      },
    }),
    downstreamAway: new Gauge({
      name: 'floodgate_downstream_away',
      help: "1 for an item whose own downstream (a webhook's service) this daemon takes as away: calls of five tickets or more went unanswered (refused, cut, timed out, a 5xx with no Retry-After) and none was answered for a second. It admits nobody but a probe now and then (one ticket, then twice as many each time up to 32, every 2 s at most), its waiting tickets read `paused`, and a ticket whose call goes unanswered goes back to the head of the line instead of failing. Absent once a call is answered.",
      labelNames: ['item'] as const,
      aggregator: 'max',
      registers: [registry],
      collect() {
        this.reset();
        for (const item of sources.downstreamAway()) this.set({ item }, 1);
      },
    }),
    logDropped: new Counter({
      name: 'floodgate_log_lines_dropped_total',
      help: 'Log lines this process dropped because its output took nothing (a full disk, a reader that stopped reading) while 16 MiB of lines waited.',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(logOutputStats().dropped);
      },
    }),
    watchPass: new Histogram({
      name: 'floodgate_ticket_watch_pass_seconds',
      help: "Time one pass of the ticket watch spent on an item's open streams (a sell-out's pass writes every waiting stream's last event).",
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    redisMemory: new Gauge({
      name: 'floodgate_redis_memory_used_ratio',
      help: "Redis's used_memory ÷ maxmemory, the highest over its servers (0 without a maxmemory); new joins are refused from FLOODGATE_REDIS_MEMORY_LIMIT on.",
      registers: [registry],
      aggregator: 'max',
    }),
    redisEvicting: new Gauge({
      name: 'floodgate_redis_evicting',
      help: "1 while a Redis server reports a maxmemory-policy other than noeviction (it may drop the lines' keys at its limit; /readyz fails), else 0.",
      registers: [registry],
      aggregator: 'max',
    }),
    pgSellPerS: new Gauge({
      name: 'floodgate_postgres_sells_per_second',
      help: 'Best sells per second Postgres carried over the last 30 s (the pressure signal of seckill and coupon); 0 with no sell answered in that time.',
      registers: [registry],
      collect: pressure((p) => p.perS),
    }),
    pgSellP50: new Gauge({
      name: 'floodgate_postgres_sell_p50_seconds',
      help: "Median time of a sell (request to Postgres's answer, batch and pool wait included), last window with sells in the last 30 s; 0 with none.",
      registers: [registry],
      aggregator: 'average',
      collect: pressure((p) => (p.p50Ms === null ? null : p.p50Ms / 1000)),
    }),
    pgAdmitCap: new Gauge({
      name: 'floodgate_postgres_admit_cap',
      help: 'In-flight cap of the handlers that sell through Postgres (seckill, coupon) under the pressure signal; their own cap (1000) while sells are fast. Over several processes the highest (each checks its own against the item\'s shared count).',
      registers: [registry],
      aggregator: 'max',
      collect: pressure((p) => p.cap),
    }),
    pgOldestCall: new Gauge({
      name: 'floodgate_postgres_oldest_call_seconds',
      help: "Age of the oldest sale call to Postgres under way (seckill, coupon; 0 with none). Past twice FLOODGATE_PG_TIMEOUT_MS it waits on something other than Postgres's answer (each such call is logged once as an error) and may never end: its tickets stay admitted.",
      registers: [registry],
      aggregator: 'max',
      collect(this: Gauge) {
        this.set(sources.pgOldestCall());
      },
    }),
    gateLeaderChanges: new Counter({ name: 'floodgate_gate_leader_changes_total', help: 'Times this daemon took the lead of an item gate.', labelNames: ['item'] as const, registers: [registry] }),
  };
  return m;
}

export type Metrics = ReturnType<typeof createMetrics>;

/**
 * Drops this daemon's own per-item series (counters, histograms, gauges labelled `item`) of the
 * items `keep` says no more (removed by an operator or by retention, on any daemon): kept, a
 * long-running daemon's memory and every scrape grew with each item it had ever served (a
 * histogram is 16 series an item). Returns the series dropped.
 */
export async function forgetItems(registry: Registry, keep: (itemId: string) => boolean): Promise<number> {
  let dropped = 0;
  for (const metric of registry.getMetricsAsArray()) {
    if (!(metric instanceof Counter || metric instanceof Gauge || metric instanceof Histogram)) continue;
    const gone = new Map<string, Record<string, string | number>>();
    for (const { labels } of (await metric.get()).values) {
      const item = labels.item;
      if (typeof item !== 'string' || item === '' || keep(item)) continue;
      // A histogram's bucket lines carry `le` besides the metric's own labels.
      const { le: _le, ...own } = labels as Record<string, string | number>;
      gone.set(JSON.stringify(own), own);
    }
    for (const labels of gone.values()) (metric as Counter<string>).remove(labels);
    dropped += gone.size;
  }
  return dropped;
}
