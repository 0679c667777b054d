import { z } from 'zod';
import type { HandlerSpec } from './handler.js';
import { coupon } from './handlers/coupon.js';
import { seckill } from './handlers/seckill.js';
import { webhook } from './handlers/webhook.js';

export type { HandlerSpec } from './handler.js';

/** external: nothing runs in-process; outside workers pull and write back. */
const external: HandlerSpec = { name: 'external', config: z.object({}).strict(), rejoin: () => 'any', external: true };

export const builtinHandlers: HandlerSpec[] = [seckill, coupon, webhook, external];

/** Which handler names an item may name; a deployment adds its own through `register()`. */
export interface HandlerRegistry {
  get(name: string): HandlerSpec | undefined;
  names(): string[];
  register(spec: HandlerSpec): void;
}

/** The name of a handler's config schema in the OpenAPI document (`my-shop` → `MyShopConfig`). */
export const configSchemaName = (handler: string) => `${handler.replace(/(^|[^A-Za-z0-9])([A-Za-z0-9])/g, (_, _sep, ch: string) => ch.toUpperCase())}Config`;

const isFn = (v: unknown) => typeof v === 'function';

/**
 * Why a deployment's spec cannot be registered, or null. Checked here, at the start, what the
 * daemon calls later: a spec without `config` or `rejoin` was taken, and every PUT of an item
 * naming it answered 500.
 */
function specIssue(spec: unknown, map: Map<string, HandlerSpec>): string | null {
  if (typeof spec !== 'object' || spec === null) return 'is not an object';
  const s = spec as Partial<HandlerSpec>;
  if (typeof s.name !== 'string' || !/^[a-z][a-z0-9_-]{0,63}$/.test(s.name)) return `has a name that is not valid (${JSON.stringify(s.name)}: a-z, then a-z, 0-9, _ or -, at most 64)`;
  if (map.has(s.name)) return `is named ${s.name}, which is already registered`;
  const twin = [...map.keys()].find((n) => configSchemaName(n) === configSchemaName(s.name!));
  if (twin) return `is named ${s.name}, too like ${twin} (both would be ${configSchemaName(s.name)} in the API document)`;
  if (!s.config || !isFn((s.config as { safeParse?: unknown }).safeParse)) return 'has no config schema (a zod schema)';
  if (!isFn(s.rejoin)) return 'has no rejoin(config)';
  if (typeof s.external !== 'boolean') return 'has no external (true or false)';
  if (!s.external && !isFn(s.handle)) return 'has no handle()';
  for (const k of ['fillIn', 'newConfigIssues', 'redact', 'initialStock', 'saleResult', 'stockShards', 'deadlineMs'] as const) if (s[k] !== undefined && !isFn(s[k])) return `has ${k} that is not a function`;
  if (s.stockTable !== undefined && s.stockTable !== 'orders' && s.stockTable !== 'coupon_claims') return 'has a stockTable other than orders or coupon_claims';
  return null;
}

export function createHandlerRegistry(specs: HandlerSpec[] = builtinHandlers): HandlerRegistry {
  const map = new Map(specs.map((s) => [s.name, s]));
  return {
    get: (name) => map.get(name),
    names: () => [...map.keys()],
    register(spec) {
      const issue = specIssue(spec, map);
      if (issue) throw new Error(`a handler spec ${issue}`);
      map.set(spec.name, spec);
    },
  };
}
