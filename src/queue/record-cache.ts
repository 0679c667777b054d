import type { CachedRecord as TicketRecord } from './views.js';

/**
 * The immutable part of waiting tickets (user, join time), so a repeated poll needs no Redis
 * read. Bounded; evicts the oldest insert first (Map keeps insertion order).
 */
export function createRecordCache(max: number) {
  const map = new Map<string, TicketRecord>();
  const key = (itemId: string, seq: number) => `${itemId}\n${seq}`;
  return {
    get: (itemId: string, seq: number) => map.get(key(itemId, seq)),
    set(itemId: string, seq: number, rec: TicketRecord) {
      if (map.size >= max) map.delete(map.keys().next().value!);
      map.set(key(itemId, seq), rec);
    },
  };
}
