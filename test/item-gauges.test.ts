import { describe, expect, it } from 'vitest';
import { itemGaugesText, type ItemGaugeView } from '../src/kernel/item-gauges.js';

/**
 * The adaptive gate's gauges say what the gate does: with no pace published yet the gate does not
 * pace (+Inf, not 0, which read as "admits nobody"), and a closed gate shows no controller limit or
 * pace (its last ones stood for good: a limit of 16 and 678/s four seconds after the close, in a
 * review's run).
 */
const view = (mode: string, rate: number | null, ended = false): ItemGaugeView => ({
  itemId: 'i', waiting: 3, admitted: 0, gate: { mode, rate: null, maxInFlight: null }, stockLeft: null, ended,
  controller: { limit: 16, rate, baseMs: 37.02, p50Ms: 40, p99Ms: 90 },
});
const line = (text: string, name: string) => text.split('\n').find((l) => l.startsWith(`${name}{`)) ?? null;

describe("the adaptive gate's gauges", () => {
  it('show +Inf for a pace not published yet, and the limit', () => {
    const text = itemGaugesText([view('auto', null)]);
    expect(line(text, 'floodgate_gate_rate')).toBe('floodgate_gate_rate{item="i"} +Inf'); // before: 0
    expect(line(text, 'floodgate_gate_limit')).toBe('floodgate_gate_limit{item="i"} 16');
    expect(line(text, 'floodgate_gate_baseline_seconds')).toBe('floodgate_gate_baseline_seconds{item="i"} 0.03702'); // before: 0.037020000000000004
    expect(line(itemGaugesText([view('manual', 12.5)]), 'floodgate_gate_rate')).toBe('floodgate_gate_rate{item="i"} 12.5');
  });
  it('show no limit or pace while the gate is closed', () => {
    const text = itemGaugesText([view('closed', 678.32)]);
    expect([line(text, 'floodgate_gate_rate'), line(text, 'floodgate_gate_limit')]).toEqual([null, null]); // before: 678.32 and 16
  });
  it('show no limit or pace for an item closed or sold out, whatever its gate (a limit of 10 and +Inf stood after a close)', () => {
    const text = itemGaugesText([view('auto', null, true)]);
    expect([line(text, 'floodgate_gate_rate'), line(text, 'floodgate_gate_limit')]).toEqual([null, null]);
    expect(line(text, 'floodgate_line_waiting')).toBe('floodgate_line_waiting{item="i"} 3');
  });
});
