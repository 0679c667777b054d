import { effectiveGate, type EffectiveGate } from '../queue/gate-rule.js';
import type { ItemSnapshot } from '../queue/snapshot.js';
import type { GateSettings } from '../queue/types.js';
import { controllerView, type ControllerView } from '../scheduler/controller-view.js';

export interface GateView extends GateSettings {
  effective: EffectiveGate;
  /** The adaptive controller's view: obeyed in auto, shown in shadow in manual; null before it ran. */
  controller: (Omit<ControllerView, 'probeStart'> & { probing: boolean }) | null;
}

/**
 * What operators see: the settings, what admission obeys (queue/gate-rule.ts, with the
 * controller's pace rounded to 0.01/s as shown), and the controller's view.
 */
export function gateView(snap: Pick<ItemSnapshot, 'gate' | 'pace' | 'gateHash'>, autoCap: number | null = null): GateView {
  const g = snap.gate;
  const c = controllerView(snap);
  // Durations are whole milliseconds (the contract): the controller keeps them to a hundredth.
  const ms = (v: number | null) => (v === null ? null : Math.round(v));
  const controller = c && { limit: c.limit, rate: c.rate, baseMs: ms(c.baseMs), p50Ms: ms(c.p50Ms), p99Ms: ms(c.p99Ms), leader: c.leader, probing: c.probeStart !== null };
  const pace = snap.pace && { limit: snap.pace.limit, rate: snap.pace.rate === null ? null : Math.round(snap.pace.rate * 100) / 100 };
  return { mode: g.mode, rate: g.rate, maxInFlight: g.maxInFlight, effective: effectiveGate(g, pace, autoCap), controller };
}
