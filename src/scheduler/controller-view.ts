import type { ItemSnapshot } from '../queue/snapshot.js';

/** What the adaptive controller last published for an item, as operators see it (null before it has run). */
export interface ControllerView {
  limit: number;
  rate: number | null;
  probeStart: number | null;
  baseMs: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
  leader: string | null;
}

const num = (v: string | undefined) => (v === undefined || v === '' ? null : Number(v));

/** From the gate hash's controller fields (gate-store.ts describes them). */
export function controllerView(snap: Pick<ItemSnapshot, 'gateHash'>): ControllerView | null {
  const gate = snap.gateHash;
  if (!gate.aLimit) return null;
  return {
    limit: Number(gate.aLimit),
    rate: num(gate.aRate),
    probeStart: num(gate.aProbeStart),
    baseMs: num(gate.aBase),
    p50Ms: num(gate.aP50),
    p99Ms: num(gate.aP99),
    leader: gate.aLeader || null,
  };
}
