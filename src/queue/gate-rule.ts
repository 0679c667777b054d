import type { GateSettings } from './types.js';

/**
 * What the adaptive controller published that admission obeys (the gate hash's aLimit and
 * aRate); null before it has run. The rest of what it publishes is scheduler/controller-view.ts.
 */
export interface ControllerPace {
  limit: number | null;
  rate: number | null;
}

export interface EffectiveGate {
  rate: number | null;
  maxInFlight: number | null;
}

const num = (v: string | undefined) => (v === undefined || v === '' ? null : Number(v));

export function paceOf(gateHash: Record<string, string>): ControllerPace | null {
  const limit = num(gateHash.aLimit);
  const rate = num(gateHash.aRate);
  return limit === null && rate === null ? null : { limit, rate };
}

const minOf = (a: number | null, b: number | null) => (a === null ? b : b === null ? a : Math.min(a, b));

/**
 * The gate admission obeys, the rule redis/lua/_gate.lua applies in the admit script (test/
 * redis-scripts.test.ts runs both over one table): closed admits nothing; manual, the operator's
 * rate and maxInFlight; auto, the controller's limit and pace under the operator's ceilings, and
 * before the controller has spoken (or for handlers it never speaks for), `autoCap` under the
 * operator's maxInFlight.
 */
export function effectiveGate(g: GateSettings, pace: ControllerPace | null, autoCap: number | null): EffectiveGate {
  if (g.mode === 'closed') return { rate: 0, maxInFlight: 0 };
  if (g.mode === 'manual') return { rate: g.rate, maxInFlight: g.maxInFlight };
  const limit = pace?.limit ?? null;
  return {
    rate: minOf(g.rate, pace?.rate ?? null),
    maxInFlight: limit !== null ? minOf(g.maxInFlight, limit) : minOf(g.maxInFlight, autoCap),
  };
}

/** The gate hash's fields for settings ('' clears one): what define-5.lua and a gate write store. */
export const gateFields = (g: Partial<GateSettings>): Record<string, string> =>
  Object.fromEntries(Object.entries(g).map(([k, v]) => [k, v === null || v === undefined ? '' : String(v)]));
