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

export function createHandlerRegistry(specs: HandlerSpec[] = builtinHandlers): HandlerRegistry {
  const map = new Map(specs.map((s) => [s.name, s]));
  return {
    get: (name) => map.get(name),
    names: () => [...map.keys()],
    register(spec) {
      if (!/^[a-z][a-z0-9_-]{0,63}$/.test(spec.name)) throw new Error(`handler name ${JSON.stringify(spec.name)} is not valid`);
      if (map.has(spec.name)) throw new Error(`handler ${spec.name} is already registered`);
      if (!spec.external && !spec.handle) throw new Error(`handler ${spec.name} has no handle()`);
      map.set(spec.name, spec);
    },
  };
}
