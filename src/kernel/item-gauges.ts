/**
 * The per-item gauges of /metrics, written straight from the item views the daemon holds.
 *
 * They are a picture of Redis (the same on every daemon), rebuilt at each scrape so a removed item
 * leaves no series. Through prom-client that meant, per scrape, resetting and setting ~14 labelled
 * series per item and then serialising them: 10,000 items took ~0.6 s and 6.7 MB. Written here in
 * one pass, with the label values escaped once per item, the same text costs a fraction of that
 * (docs/benchmarks.md, many-items). Counters and histograms stay in prom-client: they are this
 * daemon's own, and few items have any.
 */

/** What the per-item gauges show: an item's view as the daemon already holds it. */
export interface ItemGaugeView {
  itemId: string;
  waiting: number;
  admitted: number;
  gate: { mode: string; rate: number | null; maxInFlight: number | null };
  /** Closed or sold out: it admits nobody, whatever its gate says. */
  ended: boolean;
  /** What the adaptive controller last published, if it has run. */
  controller: { limit: number; rate: number | null; baseMs: number | null; p50Ms: number | null; p99Ms: number | null } | null;
  stockLeft: number | null;
}

type Sample = [extra: string, value: number];

const admitsNobody = (v: ItemGaugeView) => v.ended || v.gate.mode === 'closed';

interface ItemGauge {
  name: string;
  help: string;
  /** Labels besides `item`. */
  labels: string[];
  /** The samples of one item: [the extra labels' text, value]; none for an item without it. */
  samples(v: ItemGaugeView): Sample[];
}

const gateModes = ['auto', 'manual', 'closed'] as const;

/** The scrape's own word on its item gauges (not a registry metric: a fact of the answer, whichever process gives it). */
export const GAUGES_READ = {
  name: 'floodgate_item_gauges_read',
  help: "1 when this answer's per-item gauges were read from Redis now; 0 when Redis could not be read and they are the last ones read (none before any).",
};

/** Every per-item gauge, in the order written (docs/metrics.md lists them from here). */
export const ITEM_GAUGES: ItemGauge[] = [
  { name: 'floodgate_line_waiting', help: 'Tickets waiting in the line.', labels: [], samples: (v) => [['', v.waiting]] },
  { name: 'floodgate_line_admitted', help: 'Tickets admitted and not yet settled.', labels: [], samples: (v) => [['', v.admitted]] },
  {
    name: 'floodgate_gate_mode',
    help: 'The gate mode an operator set: 1 for the current mode, 0 for the others.',
    labels: ['mode'],
    samples: (v) => gateModes.map((m): Sample => [`,mode="${m}"`, v.gate.mode === m ? 1 : 0]),
  },
  {
    name: 'floodgate_gate_manual_rate',
    help: 'The admission rate an operator set (manual: the rate; auto: a ceiling), tickets per second; +Inf when none.',
    labels: [],
    samples: (v) => [['', v.gate.rate ?? Infinity]],
  },
  {
    name: 'floodgate_gate_max_in_flight',
    help: 'The in-flight cap an operator set (manual: the cap; auto: a ceiling); +Inf when none.',
    labels: [],
    samples: (v) => [['', v.gate.maxInFlight ?? Infinity]],
  },
  {
    name: 'floodgate_stock_remaining',
    help: 'Units left in the Redis stock counters (items whose handler keeps stock).',
    labels: [],
    samples: (v) => (v.stockLeft === null ? [] : [['', v.stockLeft]]),
  },
  {
    name: 'floodgate_gate_limit',
    help: 'In-flight limit the adaptive gate enforces (auto) or proposes (manual); none while the gate or the item is closed (or sold out).',
    labels: [],
    // (Closed, the controller's last figures stood for good, as though a gate admitting nobody
    // paced; so they did on an item closed or sold out, minutes after.)
    samples: (v) => (v.controller && !admitsNobody(v) ? [['', v.controller.limit]] : []),
  },
  {
    name: 'floodgate_gate_rate',
    help: 'Admission pace of the adaptive gate, tickets per second (+Inf: not pacing yet, the in-flight limit alone); none while the gate or the item is closed (or sold out).',
    labels: [],
    // (0 read as "admits nobody" while the controller had no pace yet and the gate did not pace at all.)
    samples: (v) => (v.controller && !admitsNobody(v) ? [['', v.controller.rate ?? Infinity]] : []),
  },
  {
    name: 'floodgate_gate_baseline_seconds',
    help: 'Baseline (no-queueing) latency of the downstream, from probes.',
    labels: [],
    // (In whole microseconds: 37.02 ms / 1000 read 0.037020000000000004.)
    samples: (v) => (v.controller?.baseMs != null ? [['', Math.round(v.controller.baseMs * 1000) / 1e6]] : []),
  },
  {
    name: 'floodgate_gate_latency_seconds',
    help: 'Downstream latency quantiles the gate controls on.',
    labels: ['quantile'],
    samples: (v) => {
      const out: Sample[] = [];
      if (v.controller?.p50Ms != null) out.push([',quantile="0.5"', Math.round(v.controller.p50Ms * 1000) / 1e6]);
      if (v.controller?.p99Ms != null) out.push([',quantile="0.99"', Math.round(v.controller.p99Ms * 1000) / 1e6]);
      return out;
    },
  },
];

const escapeLabel = (s: string) => s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
const formatValue = (n: number) => (n === Infinity ? '+Inf' : n === -Infinity ? '-Inf' : Number.isNaN(n) ? 'NaN' : String(n));

/**
 * Each view's text, one string per gauge, kept as long as the view object lives: a daemon hands the
 * same object for an item whose view it has not read again (daemon.ts), so a scrape of 10,000 idle
 * items formats nothing and only joins (~60-80 ms → ~10 ms for 4 MB on a busy machine).
 */
const written = new WeakMap<ItemGaugeView, string[]>();
function textOf(v: ItemGaugeView): string[] {
  let t = written.get(v);
  if (!t) {
    const item = `{item="${escapeLabel(v.itemId)}"`;
    t = ITEM_GAUGES.map((g) => g.samples(v).map(([extra, value]) => `${g.name}${item}${extra}} ${formatValue(value)}\n`).join(''));
    written.set(v, t);
  }
  return t;
}

/** The last scrape's views and text: the same views again (idle items) give the same text at once. */
let last: { views: ItemGaugeView[]; text: string } = { views: [], text: '' };

/** The gauges of these items in the Prometheus text format (0.0.4), ending with a newline. */
export function itemGaugesText(views: ItemGaugeView[]): string {
  if (views.length === last.views.length && views.length > 0 && views.every((v, i) => v === last.views[i])) return last.text;
  const texts = views.map(textOf);
  const parts: string[] = [];
  ITEM_GAUGES.forEach((g, i) => {
    parts.push(`# HELP ${g.name} ${g.help}\n# TYPE ${g.name} gauge\n`);
    for (const t of texts) if (t[i]) parts.push(t[i]);
  });
  last = { views, text: parts.join('') };
  return last.text;
}
