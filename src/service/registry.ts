import { z } from 'zod';

/**
 * The handler catalogue: which handler names an item may name, how each validates its config,
 * and what each allows. The code that runs each handler is registered in the service module;
 * a deployment adds its own through `register()`.
 */
export interface HandlerSpec {
  name: string;
  /** Validates and normalises the item's `config`. */
  config: z.ZodType<Record<string, unknown>>;
  /** May a user whose earlier ticket ended join again? seckill/coupon: not after a success. */
  rejoin: 'any' | 'unless_succeeded';
  /** Outside workers pull and write back (the only handler for which pull is allowed). */
  external: boolean;
  /** Stock or coupons at definition time, when the handler has such a notion. */
  initialStock?(config: Record<string, unknown>): number;
}

const headerName = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

export const builtinHandlers: HandlerSpec[] = [
  {
    name: 'seckill',
    config: z.object({ stock: z.number().int().min(0).max(1e9) }).strict(),
    rejoin: 'unless_succeeded',
    external: false,
    initialStock: (c) => Number(c.stock),
  },
  {
    name: 'coupon',
    config: z.object({ total: z.number().int().min(0).max(1e9), perUser: z.number().int().min(1).max(1e6).default(1) }).strict(),
    rejoin: 'unless_succeeded',
    external: false,
    initialStock: (c) => Number(c.total),
  },
  {
    name: 'webhook',
    config: z
      .object({
        url: z.url({ protocol: /^https?$/ }),
        timeoutMs: z.number().int().min(1).max(600_000).default(5000),
        headers: z.record(z.string().regex(headerName).max(256), z.string().max(4096)).default({}),
      })
      .strict(),
    rejoin: 'any',
    external: false,
  },
  { name: 'external', config: z.object({}).strict(), rejoin: 'any', external: true },
];

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
      if (map.has(spec.name)) throw new Error(`handler ${spec.name} is already registered`);
      map.set(spec.name, spec);
    },
  };
}
