import { createHash, timingSafeEqual } from 'node:crypto';
import type { MiddlewareHandler } from 'hono';
import type { Actor } from '../catalog/catalog.js';
import { FloodgateError } from '../kernel/errors.js';

export interface KeySets {
  service: string[];
  operator: string[];
}

export type AuthEnv = { Variables: { actor: Actor } };

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Compares against every key, always, so the time taken says nothing about which key matched. */
function matchAny(given: Buffer, keys: Buffer[]): boolean {
  let hit = false;
  for (const k of keys) hit = timingSafeEqual(given, k) || hit;
  return hit;
}

export function bearer(header: string | undefined): string | null {
  const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  return m ? m[1] : null;
}

/**
 * Middleware factory: requires a key of `role` (an operator key also passes where a service key
 * is asked for). Missing or unknown key: 401; a service key where an operator is needed: 403.
 */
export function createAuth(keys: KeySets) {
  const service = keys.service.map(digest);
  const operator = keys.operator.map(digest);
  return (role: 'service' | 'operator'): MiddlewareHandler<AuthEnv> =>
    async (c, next) => {
      const key = bearer(c.req.header('authorization'));
      if (!key) throw new FloodgateError('unauthorized', 'A bearer key is required.');
      const d = digest(key);
      const isOperator = matchAny(d, operator);
      const isService = matchAny(d, service);
      if (!isOperator && !isService) throw new FloodgateError('unauthorized', 'Unknown key.');
      if (role === 'operator' && !isOperator) throw new FloodgateError('forbidden', 'This needs an operator key.');
      c.set('actor', { role: isOperator ? 'operator' : 'service', key });
      await next();
    };
}

export function keyMatches(given: string | null, expected: string): boolean {
  return given !== null && timingSafeEqual(digest(given), digest(expected));
}
