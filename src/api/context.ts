import type { Hook } from '@hono/zod-openapi';
import type { MiddlewareHandler } from 'hono';
import type { Catalog } from '../catalog/catalog.js';
import type { Logger } from '../kernel/logger.js';
import type { Metrics } from '../kernel/metrics.js';
import type { Queue } from '../queue/queue.js';
import type { HandlerRegistry } from '../service/registry.js';
import type { AuthEnv } from './auth.js';

/** What the routes are given: the modules' interfaces, never Redis or SQL. */
export interface ApiContext {
  queue: Queue;
  catalog: Catalog;
  handlers: HandlerRegistry;
  metrics: Metrics;
  log: Logger;
  auth(role: 'service' | 'operator'): MiddlewareHandler<AuthEnv>;
  /** (any: one hook serves every route, whatever its schemas) */
  defaultHook: Hook<any, any, any, any>;
}
