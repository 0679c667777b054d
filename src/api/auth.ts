import { createHash, timingSafeEqual } from 'node:crypto';
import type { MiddlewareHandler } from 'hono';
import type { Actor } from '../catalog/catalog.js';
import { FloodgateError } from '../kernel/errors.js';
import { inScope, parseNamedKey, type KeyScopes } from '../access/keys.js';

export interface KeySets {
  /** Entries as configured: `name:key` or a bare key (access/keys.ts). */
  service: string[];
  operator: string[];
  /** Which items each service key name may use (FLOODGATE_KEY_SCOPES); none = every item. */
  scopes?: KeyScopes;
}

export type AuthEnv = { Variables: { actor: Actor } };

const digest = (s: string) => createHash('sha256').update(s).digest();
/** How many distinct Authorization headers with a valid key a daemon remembers (createAuth's `known`). */
const KNOWN_MAX = 256;

export function bearer(header: string | undefined): string | null {
  const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  return m ? m[1] : null;
}

/**
 * Middleware factory: requires a key of `role` (an operator key also passes where a service key
 * is asked for). Missing or unknown key: 401; a service key where an operator is needed: 403.
 * Every key is compared, always, so the time taken says nothing about which key matched.
 */
export function createAuth(keys: KeySets) {
  const named = (entries: string[]) => entries.map(parseNamedKey).map((k) => ({ ...k, digest: digest(k.key) }));
  const service = named(keys.service);
  const operator = named(keys.operator);
  const scopes = keys.scopes ?? new Map();
  /** The name of the key that matched (every key is compared, whichever matched). */
  const nameOf = (d: Buffer, set: typeof service) => {
    let name: string | null = null;
    for (const k of set) if (timingSafeEqual(d, k.digest)) name ??= k.name;
    return name;
  };
  /**
   * Authorization headers that named a key, as they came, with their actor: the flood's services
   * send the same header on every request, and its SHA-256 and comparisons were ~4% of the
   * daemon's CPU in a flash sale. Only headers that matched are kept (the first KNOWN_MAX), so a
   * header not held is compared in full as before, and a hit tells the sender only what a 202
   * does: that their key is valid. Actors are frozen: every request of a header shares one.
   */
  const known = new Map<string, Actor>();
  /** The actor a bearer key names: null without a key, undefined for an unknown one. */
  const identify = (header: string | undefined): Actor | null | undefined => {
    if (header === undefined) return null;
    const hit = known.get(header);
    if (hit) return hit;
    const key = bearer(header);
    if (!key) return null;
    const d = digest(key);
    const opName = nameOf(d, operator);
    const svcName = nameOf(d, service);
    if (opName === null && svcName === null) return undefined;
    const actor: Actor = Object.freeze({ role: opName !== null ? 'operator' : 'service', key, name: (opName ?? svcName)! });
    if (known.size < KNOWN_MAX) known.set(header, actor);
    return actor;
  };
  const check = (role: 'service' | 'operator'): MiddlewareHandler<AuthEnv> =>
    async (c, next) => {
      const actor = identify(c.req.header('authorization'));
      if (actor === null) throw new FloodgateError('unauthorized', 'A bearer key is required.');
      if (actor === undefined) throw new FloodgateError('unauthorized', 'Unknown key.');
      if (role === 'operator' && actor.role !== 'operator') throw new FloodgateError('forbidden', 'This needs an operator key.');
      c.set('actor', actor);
      await next();
    };
  /** The actor of a request that may act as a service (a service or an operator key), else null. */
  const serviceActor = (header: string | undefined): Actor | null => identify(header) ?? null;
  /** 403 unless the actor's key may use the item (operators may use every item). */
  const requireScope = (actor: Actor, itemId: string) => {
    if (actor.role !== 'operator' && !inScope(scopes, actor.name ?? '', itemId))
      throw new FloodgateError('forbidden', `This key may not use item ${itemId}.`);
  };
  /**
   * Middleware: requireScope for the item the path names (`of`: from its params), before the body
   * is read or validated, so a key outside its scope reads 403 on every route, whatever it sent.
   */
  const scoped = (of: (param: (name: string) => string | undefined) => string | null = (p) => p('itemId') ?? ''): MiddlewareHandler<AuthEnv> =>
    async (c, next) => {
      const itemId = of((name) => c.req.param(name));
      if (itemId !== null) requireScope(c.get('actor'), itemId);
      await next();
    };
  /** Whether a request carries an operator key (for operator-only fields on public answers). */
  const isOperator = (header: string | undefined) => identify(header)?.role === 'operator';
  return Object.assign(check, { requireScope, scoped, isOperator, serviceActor });
}

export type Auth = ReturnType<typeof createAuth>;

export function keyMatches(given: string | null, expected: string): boolean {
  return given !== null && timingSafeEqual(digest(given), digest(expected));
}
