/**
 * A bounded map of what was set lately, in two generations: sets go to the young map; when it
 * holds max/2 entries the old one is dropped whole and the young one becomes old. A get looks in
 * both. (Evicting one entry at a time from the front of a Map — `delete(keys().next().value)` —
 * gets slower as the deleted slots pile up ahead of the live ones, each eviction walking past
 * them until V8 rehashes: joins fell from ~7k/s to ~2k/s past half a million entries.)
 */
export function recentMap<K, V>(max: number) {
  let young = new Map<K, V>();
  let old = new Map<K, V>();
  return {
    get: (key: K): V | undefined => young.get(key) ?? old.get(key),
    set(key: K, value: V): void {
      if (young.size >= max / 2) {
        old = young;
        young = new Map();
      }
      young.set(key, value);
    },
    delete(key: K): void {
      young.delete(key);
      old.delete(key);
    },
    clear(): void {
      young = new Map();
      old = new Map();
    },
  };
}
