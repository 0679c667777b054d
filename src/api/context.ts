import type { Hook } from '@hono/zod-openapi';
import type { Catalog } from '../catalog/catalog.js';
import type { Clock } from '../kernel/clock.js';
import type { Logger } from '../kernel/logger.js';
import type { Metrics } from '../kernel/metrics.js';
import type { Line } from '../queue/line.js';
import type { HandlerRegistry } from '../service/registry.js';
import type { Blocks } from '../access/blocks.js';
import type { Tokens } from '../tokens/tokens.js';
import type { SeriesStore } from '../scheduler/series-store.js';
import type { InviteUses } from '../access/invite-uses.js';
import type { Auth } from './auth.js';

/** What the routes are given: the modules' interfaces, never Redis or SQL. */
export interface ApiContext {
  queue: Line;
  catalog: Catalog;
  handlers: HandlerRegistry;
  metrics: Metrics;
  log: Logger;
  auth: Auth;
  blocks: Blocks;
  /** The console's per-second points. */
  series: SeriesStore;
  /** Single use of invites and proof-of-work challenges. */
  inviteUses: InviteUses;
  /** Admission tokens; absent in an app built without Postgres keys (tests of other parts). */
  tokens?: Tokens;
  /** The time the routes reason with (invite and challenge expiry). */
  clock: Clock;
  /** What a pull, a join, a poll or a cancel waits for before it runs, when there is one (AppDeps.admitHold). */
  admitHold(): Promise<unknown> | null;
  /** How many such holds were raised so far (AppDeps.reconnects). */
  reconnects(): number;
  /** Every header of a ticket's JSON answer (type, no-store, CORS) for a request from this origin. */
  ticketHeaders(origin: string | undefined): Readonly<Record<string, string>>;
  /** (any: one hook serves every route, whatever its schemas) */
  defaultHook: Hook<any, any, any, any>;
}
