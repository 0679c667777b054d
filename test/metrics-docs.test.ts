import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Counter, Gauge, Histogram } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { GAUGES_READ, ITEM_GAUGES } from '../src/kernel/item-gauges.js';
import { createMetrics } from '../src/kernel/metrics.js';

const doc = path.resolve(import.meta.dirname, '../docs/metrics.md');
const BEGIN = '<!-- metrics table: generated from src/kernel/metrics.ts by test/metrics-docs.test.ts (UPDATE_DOCS=1 rewrites it) -->';
const END = '<!-- end of metrics table -->';

/** The table of Floodgate's own metrics, as the registry defines them. */
function table(): string {
  const rows = createMetrics()
    .registry.getMetricsAsArray()
    .filter((m) => m.name.startsWith('floodgate_') && !/^floodgate_(process|nodejs)_/.test(m.name))
    .map((m) => {
      const type = m instanceof Counter ? 'counter' : m instanceof Gauge ? 'gauge' : m instanceof Histogram ? 'histogram' : 'summary';
      const labels = (m as unknown as { labelNames: string[] }).labelNames.map((l) => `\`${l}\``).join(', ') || '—';
      const agg = (m as unknown as { aggregator?: string }).aggregator ?? 'sum';
      return `| \`${m.name}\` | ${type} | ${labels} | ${agg} | ${m.help.replace(/\|/g, '\\|')} |`;
    });
  // The per-item gauges of lines and gates: a picture of Redis, the same in every process.
  const items = ITEM_GAUGES.map((g) => `| \`${g.name}\` | gauge | ${['item', ...g.labels].map((l) => `\`${l}\``).join(', ')} | (one picture) | ${g.help.replace(/\|/g, '\\|')} |`);
  const read = `| \`${GAUGES_READ.name}\` | gauge | — | (one answer) | ${GAUGES_READ.help} |`;
  return [BEGIN, '| metric | type | labels | over processes | meaning |', '| --- | --- | --- | --- | --- |', ...items, read, ...rows, END].join('\n');
}

describe('docs/metrics.md', () => {
  it('lists every metric the daemon defines, with its type, labels and meaning', () => {
    const text = readFileSync(doc, 'utf8');
    const at = text.indexOf(BEGIN);
    const end = text.indexOf(END);
    const current = at >= 0 && end > at ? text.slice(at, end + END.length) : '';
    if (process.env.UPDATE_DOCS === '1' && current !== table()) {
      writeFileSync(doc, current ? text.replace(current, table()) : `${text.trimEnd()}\n\n${table()}\n`);
      return;
    }
    expect(current).toBe(table());
  });
});
