import type { GateSettings } from '../queue/types.js';

export interface GateView extends GateSettings {
  effective: { rate: number | null; maxInFlight: number | null };
}

/**
 * What operators see. Until the adaptive controller lands, `auto` enforces the operator's
 * ceilings as they are, so effective = the ceilings; `closed` admits nothing.
 */
export function gateView(g: GateSettings): GateView {
  const effective = g.mode === 'closed' ? { rate: 0, maxInFlight: 0 } : { rate: g.rate, maxInFlight: g.maxInFlight };
  return { mode: g.mode, rate: g.rate, maxInFlight: g.maxInFlight, effective };
}
