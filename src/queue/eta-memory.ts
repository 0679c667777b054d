/**
 * The ETA each ticket joined through this process was told, until it is admitted here (then
 * `onWaited` publishes how good it was). Bounded by two generations, dropped whole (evicting one
 * entry at a time from a Map's front slows every insert as the holes pile up; record-cache.ts
 * measured it).
 */
export function createEtaMemory(max = 50_000) {
  let told = new Map<string, number | null>();
  let toldOld = new Map<string, number | null>();
  const key = (itemId: string, seq: number) => `${itemId}\u0000${seq}`;
  return {
    remember(itemId: string, seq: number, etaMs: number | undefined) {
      if (told.size >= max) {
        toldOld = told;
        told = new Map();
      }
      told.set(key(itemId, seq), etaMs ?? null);
    },
    /** What the ticket was told (null: no ETA), or undefined if it did not join through this process. */
    recall(itemId: string, seq: number): number | null | undefined {
      const k = key(itemId, seq);
      const v = told.has(k) ? told.get(k) : toldOld.get(k);
      told.delete(k);
      toldOld.delete(k);
      return v;
    },
  };
}

export type EtaMemory = ReturnType<typeof createEtaMemory>;
