import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics of one daemon; a registry per instance, so tests never share counters. */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'floodgate_' });
  const m = {
    registry,
    httpDuration: new Histogram({
      name: 'floodgate_http_request_duration_seconds',
      help: 'HTTP request latency by route and status.',
      labelNames: ['method', 'route', 'status'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    joins: new Counter({ name: 'floodgate_joins_total', help: 'Accepted joins (new or existing ticket).', labelNames: ['item', 'result'] as const, registers: [registry] }),
    rejections: new Counter({ name: 'floodgate_rejections_total', help: 'Requests answered with an error, by error code.', labelNames: ['code'] as const, registers: [registry] }),
    admissions: new Counter({ name: 'floodgate_admissions_total', help: 'Tickets admitted from the head of a line.', labelNames: ['item'] as const, registers: [registry] }),
    settles: new Counter({ name: 'floodgate_settles_total', help: 'Outcomes written back, by status.', labelNames: ['item', 'status'] as const, registers: [registry] }),
    waiting: new Gauge({ name: 'floodgate_line_waiting', help: 'Tickets waiting in the line.', labelNames: ['item'] as const, registers: [registry] }),
    admitted: new Gauge({ name: 'floodgate_line_admitted', help: 'Tickets admitted and not yet settled.', labelNames: ['item'] as const, registers: [registry] }),
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
    gateLimit: new Gauge({ name: 'floodgate_gate_limit', help: 'In-flight limit the adaptive gate enforces (auto) or proposes (manual).', labelNames: ['item'] as const, registers: [registry] }),
    gateRate: new Gauge({ name: 'floodgate_gate_rate', help: 'Admission pace of the adaptive gate, tickets per second.', labelNames: ['item'] as const, registers: [registry] }),
    gateInFlight: new Gauge({ name: 'floodgate_gate_in_flight', help: 'Admitted tickets not yet settled, as the gate controller saw them.', labelNames: ['item'] as const, registers: [registry] }),
    gateBaseline: new Gauge({ name: 'floodgate_gate_baseline_seconds', help: 'Baseline (no-queueing) latency of the downstream, from probes.', labelNames: ['item'] as const, registers: [registry] }),
    gateLatency: new Gauge({ name: 'floodgate_gate_latency_seconds', help: 'Downstream latency quantiles the gate controls on.', labelNames: ['item', 'quantile'] as const, registers: [registry] }),
    gateProbes: new Counter({ name: 'floodgate_gate_probes_total', help: 'Baseline probes started by this daemon as leader.', labelNames: ['item'] as const, registers: [registry] }),
    ledgerDeadLetters: new Counter({
      name: 'floodgate_ledger_dead_letters_total',
      help: 'Outcome rows (and unreadable done-stream entries) the ledger parked in ticket_outcomes_dead.',
      labelNames: ['item'] as const,
      registers: [registry],
    }),
    gateLeaderChanges: new Counter({ name: 'floodgate_gate_leader_changes_total', help: 'Times this daemon took the lead of an item gate.', labelNames: ['item'] as const, registers: [registry] }),
  };
  return m;
}

export type Metrics = ReturnType<typeof createMetrics>;
