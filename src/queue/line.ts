import type { RedisLike } from '../redis/client.js';
import type { Clock } from '../kernel/clock.js';
import { createScriptRunner } from '../redis/scripts.js';
import { createAdmissions, type Admissions, type DrawSizeRecord } from './admissions.js';
import { createDefinitions, type Definitions, type SalesOf } from './definitions.js';
import { createEtaMemory } from './eta-memory.js';
import { createItemDirectory, type LineItems } from './items.js';
import { createLineScripts } from './line-scripts.js';
import { createSplitLine } from './split-line.js';
import { createTicketReader, type ArchivedOutcome } from './ticket-reader.js';
import type { LostTickets } from './lost-tickets.js';
import { createTickets, type Tickets } from './tickets.js';
import type { Outcome } from './types.js';

export type { SettleInput } from './admissions.js';

export interface LineDeps {
  redis: RedisLike;
  /** Cancels read per call from an item's cancel stream (queue/item-cache.ts; tests read in small pages). */
  cxPage?: number;
  /** The connection admissions use (admit, settle, extend, sweep: a late reply must still be read); default `redis`. */
  admitRedis?: RedisLike;
  prefix: string;
  clock: Clock;
  /** How stale the per-process item view may be (ms). */
  cacheMs: number;
  /** Called after a new ticket joined through this process (wakes the dispatcher). */
  onJoined?(itemId: string): void;
  /**
   * A ticket joined and admitted through this process was told `predictedMs` at its join and
   * waited `actualMs`: how good the ETA is (published as a metric).
   */
  onWaited?(itemId: string, predictedMs: number | null, actualMs: number): void;
  /** Joins per second per key name on items without a perKey quota (FLOODGATE_DEFAULT_KEY_QUOTA). */
  defaultKeyQuota?: number;
  /** Whether Redis is near its memory limit: no new tickets (queue/memory-guard.ts). */
  memoryFull?(): boolean;
  archived?: ArchivedOutcome;
  /** The hold after a Redis reconnect, which the scripts that hand tickets out or take a join or a cancel wait for as they are sent (redis/reconnect-fence.ts whenUnheld; the daemon's throws NOT_READY while a connection is down: sendable). */
  admitHold?(): Promise<unknown> | null;
  /** Tickets Redis lost or removed, answered from Postgres (queue/lost-tickets.ts). */
  lost?: LostTickets;
  /**
   * Whether the store a handler sells through is away (Postgres down, for the handlers that sell
   * through it), or the item's own downstream does not answer (a webhook's service): the dispatcher
   * admits none of its tickets meanwhile (but a probe), and its waiting tickets say so (reason
   * `paused`, no ETA) instead of counting down to an admission that will not come.
   */
  storeAway?(handler: string, itemId: string): boolean;
  /** The ends the outcome ledger holds for ticket refs (admissions.dropHeldEnds). */
  heldEnds?(refs: string[]): Promise<Map<string, Outcome>>;
  /** Whether Postgres holds the ticket's (by ref) order as released and its unit given back in Redis (tickets.ts: a join that finds it). */
  saleReleased?(itemId: string, ref: string, userId: string): Promise<boolean>;
  onHeldEndsUnread?(err: unknown): void;
  /** Where a pre-queue draw's size is kept before the draw is shown (admissions.ts runDraw). */
  drawSizes?: DrawSizeRecord;
  /** The sales Postgres holds for an item (definitions.ts: a cut holds their tickets in doubt if Redis has them waiting). */
  salesOf?: SalesOf;
  /** What a cut whose look at the sales failed does: wait (a sell-out, a window's end; not a close) or go on without it. */
  onSalesUnread?(itemId: string, err: unknown): 'wait' | 'go';
  onWindowEndFailed?(itemId: string, err: unknown): void;
}

/**
 * The per-item lines in Redis, in four parts by what they do: the items and their cached views
 * (items.ts), joining and reading tickets (tickets.ts), admitting and settling (admissions.ts),
 * defining, cutting and removing lines (definitions.ts). Consumers take the parts they use.
 */
export interface Line {
  items: LineItems;
  tickets: Tickets;
  admissions: Admissions;
  definitions: Definitions;
}

export function createLine(deps: LineDeps): Line {
  const { redis, prefix, clock } = deps;
  const runner = createScriptRunner(redis, prefix);
  const scripts = createLineScripts(runner.run);
  const items = createItemDirectory({ redis, prefix, clock, cacheMs: deps.cacheMs, storeAway: deps.storeAway, cxPage: deps.cxPage });
  // A hot item's sub-lines (lines > 1): each part below routes such an item's calls to it.
  const split = createSplitLine({ redis, prefix, clock });
  const reader = createTicketReader({ items, scripts, split, clock, archived: deps.archived, lost: deps.lost });
  const eta = createEtaMemory();
  const definitions = createDefinitions({ redis, prefix, clock, items, scripts, split, salesOf: deps.salesOf, onSalesUnread: deps.onSalesUnread, onWindowEndFailed: deps.onWindowEndFailed });
  const tickets = createTickets({ redis, prefix, clock, cacheMs: deps.cacheMs, items, scripts, split, reader, eta, defaultKeyQuota: deps.defaultKeyQuota, memoryFull: deps.memoryFull, onJoined: deps.onJoined, rememberEtas: !!deps.onWaited, saleReleased: deps.saleReleased, hold: deps.admitHold, drawNow: (itemId, dueAt) => admissions.drawBegun(itemId, dueAt) });
  // Admissions read their replies however late, on a connection of their own: split items' too.
  const admitScripts = deps.admitRedis ? createLineScripts(createScriptRunner(deps.admitRedis, prefix).run) : scripts;
  const admitSplit = deps.admitRedis ? createSplitLine({ redis: deps.admitRedis, prefix, clock }) : split;
  const admissions = createAdmissions({ clock, items, scripts: admitScripts, split: admitSplit, reader, eta, onWaited: deps.onWaited, heldEnds: deps.heldEnds, onHeldEndsUnread: deps.onHeldEndsUnread, drawSizes: deps.drawSizes, hold: deps.admitHold, closeLine: (itemId) => definitions.endWindow(itemId) });
  return { items, tickets, admissions, definitions };
}
