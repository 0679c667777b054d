import type { CachedRecord } from './views.js';

/**
 * The immutable part of waiting tickets (user, join time) under their verified ids, so a repeated poll
 * needs no Redis read and no HMAC. Bounded by two generations: inserts go to the young map; when
 * it holds max/2 entries the old one is dropped whole and the young one becomes old. (Evicting one
 * entry at a time from the front of a Map made each eviction slower as the holes piled up: joins
 * fell from ~7k/s to ~2k/s past half a million waiting tickets.)
 */
export function createRecordCache(max: number) {
  let young = new Map<string, CachedRecord>();
  let old = new Map<string, CachedRecord>();
  return {
    /** Keyed by the whole ticket id: a hit means the id's tag was verified when it was stored. */
    get: (ticketId: string) => young.get(ticketId) ?? old.get(ticketId),
    set(ticketId: string, rec: CachedRecord) {
      if (young.size >= max / 2) {
        old = young;
        young = new Map();
      }
      young.set(ticketId, rec);
    },
  };
}
