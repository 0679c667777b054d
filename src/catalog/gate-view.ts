import type { ControllerView } from '../queue/snapshot.js';
import type { GateSettings } from '../queue/types.js';

export interface GateView extends GateSettings {
  effective: { rate: number | null; maxInFlight: number | null };
  /** The adaptive controller's view: obeyed in auto, shown in shadow in manual; null before it ran. */
  controller: (Omit<ControllerView, 'probeStart'> & { probing: boolean }) | null;
}

const minOf = (a: number | null, b: number | null) => (a === null ? b : b === null ? a : Math.min(a, b));

/**
 * What operators see. auto: the controller's limit and pace under the operator's ceilings (before
 * the controller has run: the ceilings, and the daemon's default in-flight cap); manual: the
 * operator's numbers; closed: nothing.
 */
export function gateView(g: GateSettings, c: ControllerView | null = null, autoCap: number | null = null): GateView {
  const controller = c && { limit: c.limit, rate: c.rate, baseMs: c.baseMs, p50Ms: c.p50Ms, p99Ms: c.p99Ms, leader: c.leader, probing: c.probeStart !== null };
  let effective: GateView['effective'];
  if (g.mode === 'closed') effective = { rate: 0, maxInFlight: 0 };
  else if (g.mode === 'manual' || !c) effective = { rate: g.rate, maxInFlight: g.maxInFlight ?? (g.mode === 'auto' ? autoCap : null) };
  else effective = { rate: minOf(g.rate, c.rate === null ? null : Math.round(c.rate * 100) / 100), maxInFlight: minOf(g.maxInFlight, c.limit) };
  return { mode: g.mode, rate: g.rate, maxInFlight: g.maxInFlight, effective, controller };
}
