import { createHash } from 'node:crypto';

/**
 * Named keys and their scopes (API.md, "Quotas and blocks").
 *
 *   FLOODGATE_SERVICE_KEYS=shop:KEY1,app:KEY2,KEY3    KEY3 is named by the first 8 hex digits of its SHA-256
 *   FLOODGATE_KEY_SCOPES=app:sku-*;promo-*,shop:*     per key name, `;`-separated glob patterns (`*`, `?`)
 *
 * A key with no scope entry may use every item; operator keys are never scoped.
 */
export interface NamedKey {
  name: string;
  key: string;
}

const NAME = /^[A-Za-z0-9_.-]{1,64}$/;

export const anonymousKeyName = (key: string) => createHash('sha256').update(key).digest('hex').slice(0, 8);

/** `name:key` or a bare key; a prefix that is not a valid name is part of the key. */
export function parseNamedKey(entry: string): NamedKey {
  const colon = entry.indexOf(':');
  if (colon > 0 && colon < entry.length - 1 && NAME.test(entry.slice(0, colon))) return { name: entry.slice(0, colon), key: entry.slice(colon + 1) };
  return { name: anonymousKeyName(entry), key: entry };
}

/** Key name → the item patterns it may use. */
export type KeyScopes = Map<string, RegExp[]>;

const globToRegExp = (glob: string) => new RegExp(`^${glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);

/**
 * Parses FLOODGATE_KEY_SCOPES; throws on an entry without a name or without patterns, and on a
 * name no service key has (`serviceKeys`, as configured): a typo (`ap:` for the key `app`), or a
 * key renamed at a rotation, left that key unscoped — every item open to it — and said nothing.
 */
export function parseKeyScopes(spec: string | undefined, serviceKeys?: string[]): KeyScopes {
  const names = serviceKeys && new Set(serviceKeys.map((e) => parseNamedKey(e).name));
  const scopes: KeyScopes = new Map();
  for (const entry of (spec ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const colon = entry.indexOf(':');
    const name = entry.slice(0, colon);
    const patterns = entry.slice(colon + 1).split(';').map((p) => p.trim()).filter(Boolean);
    if (colon <= 0 || !NAME.test(name) || !patterns.length) throw new Error(`"${entry}" is not name:pattern;pattern…`);
    if (names && !names.has(name)) throw new Error(`FLOODGATE_KEY_SCOPES names "${name}", which no service key in FLOODGATE_SERVICE_KEYS has (name:key): a key it should scope would use every item`);
    scopes.set(name, [...(scopes.get(name) ?? []), ...patterns.map(globToRegExp)]);
  }
  return scopes;
}

export function inScope(scopes: KeyScopes, name: string, itemId: string): boolean {
  const patterns = scopes.get(name);
  return !patterns || patterns.some((p) => p.test(itemId));
}
