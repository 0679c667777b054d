/**
 * A JSON value with every object's keys sorted (UTF-16 order, as Array.prototype.sort), arrays as
 * they are: how a result is kept and shown (docs/api.md), whether it comes from Redis or from
 * Postgres's jsonb (which orders keys shorter first).
 */
export function canonicalJson(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(canonicalJson);
  if (v === null || typeof v !== 'object') return v;
  return Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonicalJson((v as Record<string, unknown>)[k])]));
}
