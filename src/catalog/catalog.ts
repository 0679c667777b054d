import { createHash } from 'node:crypto';
import type { Clock } from '../kernel/clock.js';
import { fail, FloodgateError } from '../kernel/errors.js';
import type { Logger } from '../kernel/logger.js';
import { isPostgresUnavailable } from '../db/faults.js';
import { LockBusy } from '../db/op-revs.js';
import type { ItemRow, ItemsStore } from '../db/items-store.js';
import type { CachedItem } from '../queue/item-cache.js';
import type { Line } from '../queue/line.js';
import { LINES_CHANGE, PRE_QUEUE_AFTER_CUT, PRE_QUEUE_AFTER_TICKETS, PRE_QUEUE_AWAITED, PRE_QUEUE_DRAWN } from '../queue/line-scripts.js';
import { newItemSecret } from '../queue/definitions.js';
import { itemState, type ItemState } from '../queue/snapshot.js';
import { seedHashOf } from '../queue/draw.js';
import { DEFAULT_TOKEN_TTL_MS, rejoinOf, type GateSettings, type LineDefinition, type Quotas, type WaitingRoom } from '../queue/types.js';
import type { HandlerRegistry, HandlerSpec } from '../service/registry.js';
import { gateView, type GateView } from './gate-view.js';
import type { GateStore } from '../scheduler/gate-store.js';
import type { StockCounters } from '../service/stock-counters.js';
import { createStockSync, type StockRows } from './stock-sync.js';

/**
 * Item definitions: durable in Postgres, live in Redis (the line). Writes go to Postgres first, so
 * that an item is never live in Redis without its row: if Postgres is down nothing changes (503);
 * if Redis then refuses (the atomic conflict check, or an outage) the Postgres row is put back.
 * `restore()` re-creates in Redis every item Postgres knows and Redis lost: on start, and through
 * `restoreIfLost()` whenever Redis comes back empty.
 */
export interface ItemInput {
  handler: string;
  config?: Record<string, unknown>;
  capacity?: number | null;
  abandonAfterMs?: number | null;
  opensAt?: string | null;
  closesAt?: string | null;
  gate?: Partial<GateSettings>;
  quotas?: Quotas | null;
  tokenTtlMs?: number | null;
  preQueue?: { fromMs: number } | null;
  waitingRoom?: WaitingRoom | null;
  pow?: { difficulty: number } | null;
  lines?: number;
}

export interface Actor {
  role: 'service' | 'operator';
  key: string;
  /** The key's name (FLOODGATE_SERVICE_KEYS `name:key`, else the first 8 hex digits of its SHA-256). */
  name?: string;
}

export interface ItemView {
  itemId: string;
  handler: string;
  config: Record<string, unknown>;
  capacity: number | null;
  abandonAfterMs: number | null;
  opensAt: string | null;
  closesAt: string | null;
  state: ItemState;
  gate: GateView;
  counts: CachedItem['snap']['counts'];
  remaining: number | null;
  quotas: Quotas | null;
  tokenTtlMs: number;
  /** The pre-queue and its draw (queue/draw.ts): the seed's hash from the start, the seed and size once drawn. */
  preQueue: { fromMs: number | null; seedHash: string; seed?: string; size?: number; drawnAt?: string } | null;
  waitingRoom: WaitingRoom | null;
  pow: { difficulty: number } | null;
  lines: number;
}

export interface AuditEntry {
  at: string;
  actor: string;
  keyId: string | null;
  from: Record<string, unknown> | null;
  to: Record<string, unknown>;
  reason: string;
}

export interface Catalog {
  put(itemId: string, input: ItemInput, actor: Actor): Promise<{ created: boolean; item: ItemView }>;
  get(itemId: string): Promise<ItemView>;
  list(): Promise<ItemView[]>;
  close(itemId: string): Promise<ItemView>;
  /** The signing secret of a webhook item (the item view never shows it). */
  webhookSecret(itemId: string): Promise<string>;
  patchGate(itemId: string, patch: Partial<GateSettings>, actor: Actor): Promise<GateView>;
  /** The gate as operators see it, from a cached item view (no Redis). */
  gateOf(item: CachedItem): GateView;
  /** The item's gate changes, newest first (operators and the controller's large moves). */
  audit(itemId: string, limit: number): Promise<AuditEntry[]>;
  /**
   * Keeps an operator's block in Postgres (`itemId` null: every item), before the line's copy is
   * written: a restore after Redis lost its data puts it back (api: access/blocks.ts).
   */
  keepBlock(itemId: string | null, userId: string, on: boolean): Promise<void>;
  restore(): Promise<number>;
  /**
   * Puts Postgres's state of an item (its definition, gate, close and blocks; '*': the blocks of
   * every item) into Redis again, as the operators last wrote it; false when Redis does not hold
   * the item (restore's work). catalog/op-revs.ts calls it for a write a Redis rollback took.
   */
  reapply(scope: string): Promise<boolean>;
  /** Runs another operator write of `scope` (a block; '*': every item's) as put, close and patchGate run (CatalogOps.within). */
  guard<T>(scope: string, write: () => Promise<T>): Promise<T>;
  /** restore(), if Redis lacks an item Postgres had at the last restore or was given since. */
  restoreIfLost(): Promise<number>;
  /** Closes and drops the items Redis lists that Postgres has no live row for (an old snapshot brought back a removed item). */
  retireUnknown(): Promise<void>;
  /**
   * Rebuilds the Redis stock of stock items from Postgres (units left = total − rows sold), in
   * both directions, and re-creates items Redis lost. `idleOnly`: touch only items with no sale in
   * flight (safe while a sale is on; an item busy now is reported `changed: false`).
   */
  /**
   * Per item: `left` what Postgres counts, `redisHad` what Redis held before (null: Redis had lost
   * the item, `restored`), `changed` whether the counter was set to another value.
   */
  reconcile(opts?: { itemId?: string; idleOnly?: boolean; /** Ends the walk between items (a stop). */ signal?: AbortSignal }): Promise<{ itemId: string; left: number; redisHad: number | null; changed: boolean; restored?: true }[]>;
}

export type { StockRows } from './stock-sync.js';

/** How long an item must be seen unlisted with its keys before it is listed again (a deletion under way is over by then). */
const UNLISTED_FOR_MS = 10_000;

/**
 * How long an operator's change of the stock holds back sell-outs decided by sales at most (its
 * set reaching Redis ends it sooner): past the Postgres statement's own limit (15 s by default),
 * after which the change failed and the stock keeper's count decides.
 */
const STOCK_CHANGE_MS = 30_000;
/** Swallows a Postgres that takes no writes now (the write is done at a later restore); throws anything else. */
const unlessUnavailable = (err: unknown) => {
  if (!isPostgresUnavailable(err)) throw err;
};
const keyId = (key: string) => createHash('sha256').update(key).digest('hex').slice(0, 12);
const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
const ms = (s: string | null | undefined) => (s ? Date.parse(s) : null);
const defaultGate: GateSettings = { mode: 'auto', rate: null, maxInFlight: null };

export interface CatalogDeps {
  queue: Pick<Line, 'items' | 'definitions'>;
  store: ItemsStore;
  /** Postgres's stock rows (db/stock-rows.ts). */
  stockRows: StockRows;
  /** Redis's stock counters. */
  counters: StockCounters;
  /** The gate's settings in Redis, and the controller's restart on a switch to auto. */
  gates: Pick<GateStore, 'writeSettings' | 'requestReset'>;
  handlers: HandlerRegistry;
  clock: Clock;
  log: Logger;
  /** The in-flight cap of an auto gate before its controller has run (its slow start). */
  autoCap: number;
  /** A self-limited handler's in-flight cap now, from its own (Postgres pressure: what the dispatcher enforces). */
  selfLimitedCap?: (handlerCap: number) => number;
  /** Operators' write revisions (catalog/op-revs.ts); without them writes and restores run as they are. */
  ops?: CatalogOps;
}

/**
 * What the catalog asks of the operators' write revisions (catalog/op-revs.ts: Redis's copy of a
 * write is applied again from Postgres after a rollback took it).
 */
export interface CatalogOps {
  /** Runs an operator's write of `scope` (an item, or '*') under its lock and records its revision. */
  within<T>(scope: string, write: () => Promise<T>): Promise<T>;
  /** Runs `fn` holding the scope's lock alone, without a revision (restores and repairs). */
  locked<T>(scope: string, fn: () => Promise<T>): Promise<T>;
  /** The scopes' revisions; a restore reads them before their rows, so a mark never says more than the row it made. */
  revs(scopes: string[]): Promise<Map<string, number>>;
  /** Marks an item a restore made again with the revision read before its row. */
  mark(scope: string, rev: number): Promise<void>;
}

const asIs = <T>(_scope: string, fn: () => Promise<T>) => fn();

export function createCatalog(deps: CatalogDeps): Catalog {
  const { queue, store, handlers } = deps;
  const guard = deps.ops?.within ?? asIs;
  const locked = deps.ops?.locked ?? asIs;

  /**
   * Item ids Postgres had (not archived) at the last restore, plus those defined since: what Redis
   * must hold. A restore replaces it, so an item that retention archived (here or on another
   * daemon) drops out at the next one instead of looking lost at every check.
   */
  let known = new Set<string>();
  /** Ids defined while a restore runs (its rows may predate them): kept when it replaces `known`. */
  let definedDuring: Set<string> | null = null;
  /** Bumped when `known` changes; with Redis's id set unchanged too, the loss check has nothing to look at. */
  let knownGen = 0;
  let lastSeen: { held: ReadonlySet<string>; gen: number } | null = null;
  /** Items seen with keys but unlisted (restoreMissing), since when: registered again only after UNLISTED_FOR_MS. */
  const unlistedSince = new Map<string, number>();
  /** Items Redis lists that Postgres has no live row for (retireRemoved): closed and dropped, checked each round until gone. */
  const retiring = new Set<string>();
  let restoring: Promise<number> | null = null;
  /** Items a restore left for later because Postgres took no writes (counted up, never down). */
  let postponed = 0;
  let restoringSome: Promise<number> | null = null;

  const { countStock, pushStock, syncStock } = createStockSync({ queue, counters: deps.counters, handlers, stockRows: deps.stockRows });

  /** Puts back the Postgres side of a put that Redis refused; best effort (Postgres may be what failed). */
  async function undoPut(itemId: string, prev: ItemRow | undefined, cause: unknown) {
    try {
      if (!prev) {
        // No row before this put, yet Redis holds the item: another put created it meanwhile (its
        // row written before or after this one's), and Redis refused this one against it (another
        // `lines`). The row must say what Redis holds; removing it left a live item without one.
        const held = cause instanceof FloodgateError && cause.code === 'conflict' ? await queue.items.item(itemId, { fresh: true }) : null;
        if (!held) return await store.remove(itemId);
        await store.upsert(itemRow(held.snap.def, held.snap.gate));
        await countStock(held.snap.def);
        return;
      }
      await store.upsert(prev, { asItWas: true });
      await countStock(rowDefinition(prev));
    } catch (err) {
      deps.log.warn({ itemId, cause: String(cause), err: String(err) }, 'item row not put back after a failed define');
    }
  }

  /** `defining`: an operator defines the item, `previous` is how it stands (HandlerSpec.fillIn). */
  function lineDefinition(itemId: string, input: ItemInput, defining?: { previous: LineDefinition | null; storedLines?: number }): LineDefinition {
    const spec = handlers.get(input.handler) ?? fail('invalid_request', `Unknown handler "${input.handler}".`, { issues: [{ path: 'handler', message: `one of ${handlers.names().join(', ')}` }] });
    const given = input.config ?? {};
    const previous = defining?.previous?.handler === spec.name ? defining.previous.config : null;
    const config = defining && spec.fillIn ? spec.fillIn(given, previous) : given;
    const parsed = spec.config.safeParse(config);
    const newIssues = parsed.success && defining && spec.newConfigIssues ? spec.newConfigIssues(parsed.data as Record<string, unknown>) : [];
    if (!parsed.success || newIssues.length) {
      const issues = (parsed.success ? newIssues : parsed.error.issues).map((i) => ({ path: ['config', ...i.path].join('.'), message: i.message }));
      fail('invalid_request', `The config does not suit the ${spec.name} handler.`, { issues });
    }
    const opensAt = ms(input.opensAt);
    const closesAt = ms(input.closesAt);
    if (opensAt !== null && closesAt !== null && closesAt <= opensAt)
      fail('invalid_request', 'closesAt must be after opensAt.', { issues: [{ path: 'closesAt', message: 'must be after opensAt' }] });
    if (input.preQueue && opensAt === null)
      fail('invalid_request', 'A pre-queue needs opensAt.', { issues: [{ path: 'preQueue', message: 'needs opensAt (the draw happens then)' }] });
    // Absent keeps what the item has; ticket ids encode it, so it never changes under an existing item.
    const lines = input.lines ?? defining?.previous?.lines ?? defining?.storedLines ?? 1;
    if (defining?.previous && (defining.previous.lines ?? 1) !== lines) fail('conflict', LINES_CHANGE);
    if (lines > 1) {
      const unsplit: string[] = (['capacity', 'abandonAfterMs', 'quotas', 'preQueue'] as const).filter((f) => input[f] !== undefined && input[f] !== null);
      if (parsed.data!.reserveMs !== undefined) unsplit.push('config.reserveMs');
      if (unsplit.length) fail('invalid_request', 'An item split into sub-lines takes no capacity, abandonAfterMs, quotas, preQueue or reservations yet.', { issues: unsplit.map((path) => ({ path, message: 'not with lines > 1' })) });
    }
    return {
      itemId,
      handler: spec.name,
      config: parsed.data!,
      capacity: input.capacity ?? null,
      abandonAfterMs: input.abandonAfterMs ?? null,
      opensAt,
      closesAt,
      rejoin: rejoinOf(spec.rejoin(parsed.data!)), // a module's own handler may answer anything
      quotas: input.quotas && (input.quotas.perUser || input.quotas.perKey) ? input.quotas : null,
      tokenTtlMs: input.tokenTtlMs ?? null,
      preQueueFromMs: input.preQueue?.fromMs ?? null,
      waitingRoom: input.waitingRoom ?? null,
      pow: input.pow ?? null,
      lines,
    };
  }

  /** The row of an item defined as `def` (open) with `gate`. */
  function itemRow(def: LineDefinition, gate: GateSettings) {
    return {
      itemId: def.itemId,
      handler: def.handler,
      config: def.config,
      capacity: def.capacity,
      abandonAfterMs: def.abandonAfterMs,
      opensAt: def.opensAt === null ? null : new Date(def.opensAt),
      closesAt: def.closesAt === null ? null : new Date(def.closesAt),
      gate: gate as unknown as Record<string, unknown>,
      waitingRoom: def.waitingRoom ?? null,
      pow: def.pow ?? null,
      closedAt: null,
      quotas: (def.quotas ?? null) as Record<string, unknown> | null,
      tokenTtlMs: def.tokenTtlMs ?? null,
      preQueue: def.preQueueFromMs ? { fromMs: def.preQueueFromMs } : null,
      lines: def.lines ?? 1,
    };
  }

  /** What an auto gate admits before (or, for self-limited handlers, instead of) its controller. */
  const autoCapOf = (spec: HandlerSpec | undefined) => {
    if (!spec?.handle) return null;
    // (As the dispatcher holds it: the view's effective maxInFlight stayed at 1000 while a slow
    // Postgres held the item at 893.)
    if (spec.selfLimited) return deps.selfLimitedCap?.(spec.selfLimited.maxInFlight) ?? spec.selfLimited.maxInFlight;
    return deps.autoCap;
  };

  /**
   * The item's state, `paused` too while the store its handler sells through (Postgres) is away:
   * nothing is admitted then, and its waiting tickets read reason `paused` — the item read `open`.
   */
  function shownState(item: CachedItem): ItemState {
    const state = itemState(item.snap, deps.clock.now());
    return (state === 'open' || state === 'held') && item.storeAway() ? 'paused' : state;
  }

  function view(item: CachedItem): ItemView {
    const s = item.snap;
    const spec = handlers.get(s.def.handler);
    return {
      itemId: s.def.itemId,
      handler: s.def.handler,
      config: spec?.redact ? spec.redact(s.def.config) : s.def.config,
      capacity: s.def.capacity,
      abandonAfterMs: s.def.abandonAfterMs,
      opensAt: iso(s.def.opensAt),
      closesAt: iso(s.def.closesAt),
      state: shownState(item),
      gate: gateView(s, autoCapOf(spec)),
      counts: s.counts,
      remaining: s.stockLeft,
      quotas: s.def.quotas ?? null,
      tokenTtlMs: s.def.tokenTtlMs ?? DEFAULT_TOKEN_TTL_MS,
      preQueue: preQueueView(s),
      waitingRoom: s.def.waitingRoom ?? null,
      pow: s.def.pow ?? null,
      lines: s.def.lines ?? 1,
    };
  }

  function preQueueView(s: CachedItem['snap']): ItemView['preQueue'] {
    // Once drawn, shown for good (fromMs null if the pre-queue was removed since): the tickets keep
    // the drawn order, and their users check their places against the revealed seed.
    if (!s.draw || (!s.def.preQueueFromMs && !s.draw.drawn)) return null;
    const out: NonNullable<ItemView['preQueue']> = { fromMs: s.def.preQueueFromMs ?? null, seedHash: seedHashOf(s.draw.seed) };
    if (s.draw.drawn) Object.assign(out, { seed: s.draw.seed, size: s.draw.n ?? 0, drawnAt: iso(s.draw.drawnAt) });
    return out;
  }

  async function current(itemId: string): Promise<CachedItem> {
    return (await queue.items.item(itemId, { fresh: true })) ?? fail('item_not_found', 'No such item.');
  }

  async function audit(itemId: string, actor: Actor, before: GateSettings | null, after: GateSettings) {
    return await store.audit({ itemId, actor: actor.role, keyId: keyId(actor.key), before: before as Record<string, unknown> | null, after: after as unknown as Record<string, unknown> });
  }

  async function put(itemId: string, input: ItemInput, actor: Actor): Promise<{ created: boolean; item: ItemView }> {
    const existing = await queue.items.item(itemId, { fresh: true });
    // An item Redis lost and Postgres still has (its restore not done yet) keeps its row's lines
    // unless others are given: an operator's replacement in that moment made a split item one line.
    const stored = existing ? undefined : await store.get(itemId);
    const def = lineDefinition(itemId, input, { previous: existing?.snap.def ?? null, storedLines: stored && !stored.archivedAt ? stored.lines : undefined });
    // (Such an item's gate is its row's: a replacement in that moment opened a paused sale, audited as a creation.)
    const before = existing?.snap.gate ?? (stored && !stored.archivedAt ? rowGate(stored) : null);
    // A replacement that names no gate keeps the item's: an operator raising the stock of a
    // paused sale (gate closed) did not mean to open it, and a PUT without `gate` reset it to auto.
    const gate: GateSettings = input.gate === undefined && before ? before : { ...defaultGate, ...input.gate };
    // define-5.lua's rule, checked first so that the usual conflict costs Postgres nothing.
    const live = existing ? existing.snap.counts.waiting + existing.snap.counts.admitted : 0;
    if (existing && existing.snap.def.handler !== def.handler && live > 0) fail('conflict', 'The handler of an item with live tickets cannot change.');
    // Nor of one with reservations pending: their confirm or release settles them as orders of the
    // item's stock, so under coupon a release gave a unit back to the coupons (one coupon past the
    // total per reservation), and the recount of the claims put `sold` under `reserved` (500).
    if (existing && existing.snap.def.handler !== def.handler && (await deps.stockRows.reservedOrders(itemId)) > 0) fail('conflict', 'The handler of an item with reservations pending cannot change; wait until they are confirmed or released (and a released unit is back).');
    // The draw shuffles seqs 1..N into line places 1..N and admission walks places from the head
    // (served + 1): a pre-queue must hold the line from its first ticket, and its draw must find
    // the head at the start. Tickets that joined in order before it were shown places the draw
    // would take away, and a cut before the draw (a close) moved the head past every seq it ended:
    // drawn into places at or behind it, waiting tickets would never be admitted, and ended ones
    // would be admitted ahead of it. (Once drawn, a pre-queue is never drawn again.)
    if (def.preQueueFromMs !== null && existing && !existing.snap.draw?.drawn) {
      if (!existing.snap.draw && existing.snap.seq > 0) fail('conflict', PRE_QUEUE_AFTER_TICKETS);
      if (existing.snap.served > 0) fail('conflict', PRE_QUEUE_AFTER_CUT);
    }
    // Nor may a pre-queue not drawn yet go, or its draw (opensAt) move, once tickets joined for it:
    // they were told a draw at that time, with the seed's hash as its commitment. Removed, the
    // line ran first-come-first-served and the seed was never revealed; moved, the draw was not
    // the one shown. Until a cut ends them (the head moves only by cuts before the draw): an item
    // closed or sold out before its draw opens again without it (above, keeping it is refused).
    if (existing?.snap.def.preQueueFromMs && existing.snap.draw && !existing.snap.draw.drawn && existing.snap.seq > 0 && existing.snap.served === 0) {
      if (def.preQueueFromMs === null || def.opensAt !== existing.snap.def.opensAt) fail('conflict', PRE_QUEUE_AWAITED);
    }
    // A pre-queue is drawn once per item: another window on an item whose draw is done was taken
    // (200, `scheduled`, joins told a draw at the new opensAt) and never drawn — its line ran
    // first come, first served. A sale of its own is another item id.
    if (existing?.snap.draw?.drawn && def.preQueueFromMs !== null && def.opensAt !== null && def.opensAt > deps.clock.now()) fail('conflict', PRE_QUEUE_DRAWN);
    // (Read above already when Redis lacked the item.)
    const prev = existing ? await store.get(itemId) : stored;
    // The ticket-id secret: the live item's, else the one its row keeps (an item made again
    // after a loss, or after retention, signs as before: its old ids still verify and are
    // answered from Postgres), else a new one. The row keeps the first one stored.
    const kept = await store.upsert({
      ...itemRow(def, gate),
      secret: existing?.snap.secret ?? prev?.secret ?? newItemSecret(),
      epochMs: existing ? existing.snap.epoch : (prev?.epochMs ?? deps.clock.now()),
    });
    let created: boolean;
    let counted: Awaited<ReturnType<typeof countStock>>;
    // Audited before the define (a Postgres outage after it would lose the entry of a change made)
    // and taken back if the define is refused (409: a split item's handler change racing a join),
    // which left an entry for a change that did not happen. Not on any other failure: a define
    // whose reply was lost (503) may have taken effect, as a PATCH's that Redis refused was asked for.
    let audited: number | null = null;
    let marked = false;
    try {
      // A change of a live item's stock: sell-outs a sale decides until it reaches Redis are held
      // back (cut-8.lua). A restock that committed in Postgres while the batch selling the last units
      // waited on the stock row, and reached Redis after that batch's cut, left every waiting user
      // told sold_out with the new units on sale (a review: 170 users, 30 units).
      if (existing && handlers.get(def.handler)?.initialStock) {
        await deps.counters.changing(itemId, STOCK_CHANGE_MS);
        marked = true;
      }
      counted = await countStock(def);
      if (JSON.stringify(before) !== JSON.stringify(gate)) audited = await audit(itemId, actor, before, gate);
      // A split item's handler change, checked again on a fresh read just before the define:
      // define-5.lua sees only sub-line 0's tickets, and a join and a pull on another sub-line
      // since the check above (the Postgres writes between) kept a ticket out under the old
      // handler, to be run again under the new one. (A window of one Redis round trip remains.)
      if (existing && existing.snap.def.handler !== def.handler && (def.lines ?? 1) > 1) {
        const now = (await queue.items.item(itemId, { fresh: true }))?.snap;
        if (now && now.counts.waiting + now.counts.admitted > 0) fail('conflict', 'The handler of an item with live tickets cannot change.');
      }
      const made = await queue.definitions.define(def, gate, { reopen: true, secret: kept.secret ?? undefined, epoch: kept.epochMs, everywhere: (fn) => locked('*', fn) });
      created = made.created;
      await keepLiveSecret(itemId, kept, made);
    } catch (err) {
      // Left, the mark held back the sale's sell-out cut of an item that sold its last unit: it
      // read open with nothing left, past the mark's 30 s (a review; nothing cuts it again).
      if (marked) await deps.counters.changeFailed(itemId).catch((e: unknown) => deps.log.warn({ itemId, err: String(e) }, 'stock change mark not taken away after a failed PUT; it lapses in 30 s'));
      await undoPut(itemId, prev, err);
      if (audited !== null && err instanceof FloodgateError && err.code === 'conflict') await store.unaudit(audited).catch((e) => deps.log.warn({ itemId, err: String(e) }, 'audit entry of a refused define not taken back'));
      throw err;
    }
    known.add(itemId);
    definedDuring?.add(itemId);
    knownGen++;
    if (counted) await pushStock(itemId, counted, false);
    // A switch to auto starts the controller afresh, as a PATCH does: the state it kept in shadow
    // (a probe's pin, a cut limit of 2, hours old after a long pause) held admissions back for seconds.
    if (existing && gate.mode === 'auto' && before?.mode !== 'auto') await deps.gates.requestReset(itemId);
    deps.log.info({ itemId, handler: def.handler, created }, 'item defined');
    return { created, item: view(await current(itemId)) };
  }

  async function patchGate(itemId: string, patch: Partial<GateSettings>, actor: Actor): Promise<GateView> {
    const item = await current(itemId);
    const before = item.snap.gate;
    if (!Object.keys(patch).length) return gateView(item.snap, autoCapOf(handlers.get(item.snap.def.handler)));
    const after: GateSettings = { ...before, ...patch };
    // Postgres first (row, then audit), so a Postgres outage changes nothing; a Redis failure
    // after it puts the row back (the audit row stays: the change was asked for).
    await store.updateGate(itemId, after as unknown as Record<string, unknown>);
    // Written still (the row may differ from what Redis shows: a rollback not yet applied again),
    // but audited only as a change: a retried PATCH, or one clearing what was not set, left rows
    // whose before and after were the same (as a PUT audits only a gate that differs).
    if (JSON.stringify(before) !== JSON.stringify(after)) await audit(itemId, actor, before, after);
    try {
      await deps.gates.writeSettings(itemId, patch);
      // Every daemon reads the item again (a change notice). A gate that admits now makes its
      // item active: a line waiting behind a closed gate is not (queue/items.ts loopNeed), and this
      // is what wakes it; an empty line leaves the active set again after a minute.
      await queue.items.announce(itemId);
      if (after.mode !== 'closed') queue.items.keepActive(itemId);
    } catch (err) {
      await store.updateGate(itemId, before as unknown as Record<string, unknown>).catch((e) => deps.log.warn({ itemId, err: String(e) }, 'gate row not put back'));
      throw err;
    }
    if (after.mode === 'auto' && before.mode !== 'auto') await deps.gates.requestReset(itemId);
    deps.log.info({ itemId, ...after }, 'gate changed');
    const now = await current(itemId);
    return gateView(now.snap, autoCapOf(handlers.get(now.snap.def.handler)));
  }

  /**
   * Postgres's state of `scope` into Redis again (Catalog.reapply). The definition and gate as the
   * row holds them (define-5.lua keeps the tickets and counters; a row that is not closed reopens
   * the item, as a PUT does), the close (its waiting tickets end as a close ends them), and the
   * blocks: both bits of each user in the item's hash, from the item's rows and the global ones.
   */
  async function reapply(scope: string): Promise<boolean> {
    if (scope === '*') {
      const everywhere = new Set(await store.blockedIn('*'));
      const held = new Set(await queue.definitions.blocks.global());
      for (const u of everywhere) if (!held.has(u)) await queue.definitions.blocks.setGlobal(u, true);
      for (const u of held) if (!everywhere.has(u)) await queue.definitions.blocks.setGlobal(u, false);
      for (const itemId of await queue.items.itemIds()) await syncBlocks(itemId, null, everywhere);
      return true;
    }
    const row = await store.get(scope);
    const live = await queue.items.item(scope, { fresh: true });
    if (!row || row.archivedAt || !live) return false;
    const gate = rowGate(row);
    const kept = keptSecret(row);
    try {
      const made = await queue.definitions.define(rowDefinition(row), gate, { reopen: !row.closedAt, secret: kept?.secret, epoch: kept?.epochMs ?? null });
      await keepLiveSecret(scope, kept ?? { secret: null, epochMs: null }, made);
    } catch (err) {
      // A stored definition today's rules or the live line refuse (a handler change with live
      // tickets, a pre-queue the line has moved past): the rest of what the operator wrote still holds.
      if (!refusedDefinition(err)) throw err;
      deps.log.error({ itemId: scope, err: (err as Error).message }, 'stored definition not applied again (refused now); its gate, close and blocks are');
      await deps.gates.writeSettings(scope, gate);
      await queue.items.announce(scope);
    }
    // A switch to auto the rollback took starts the controller afresh, as the operator's did.
    if (gate.mode === 'auto' && live.snap.gate.mode !== 'auto') await deps.gates.requestReset(scope);
    // A split item's close cuts its sub-lines one call each: one cut short (a Redis error, a
    // daemon stopped mid-way) left the item's own flag set and tickets waiting on the others, which
    // were admitted after the close, and never cut (a review). Cut again while any waits.
    const cutShort = (live.snap.def.lines ?? 1) > 1 && live.snap.counts.waiting > 0;
    if (row.closedAt && (!live.snap.closed || cutShort)) await queue.definitions.cut(scope, 'closed');
    await syncBlocks(scope, new Set(await store.blockedIn(scope)), null);
    // The blocks everywhere under their own lock: a block everywhere written meanwhile is not undone by an older read.
    await locked('*', async () => syncBlocks(scope, null, new Set(await store.blockedIn('*'))));
    return true;
  }

  /**
   * Sets each user's block bits in the item's hash to Postgres's: bit 1 from `item`, bit 2 from
   * `everywhere` (null: that bit left as it is). On a split item, also the users whose sub-line's
   * copy differs from the item's (blocks.drift), written again whole: the item's hash alone was
   * compared, and a copy lost on a sub-line let a blocked user's waiting ticket be admitted (a
   * review), a stale one refused an unblocked user's new ticket.
   */
  async function syncBlocks(itemId: string, item: Set<string> | null, everywhere: Set<string> | null) {
    const held = await queue.definitions.blocks.of(itemId);
    const drift = await queue.definitions.blocks.drift(itemId);
    const users = new Set([...held.keys(), ...(everywhere ?? []), ...(item ?? []), ...drift]);
    for (const u of users) {
      const bits = held.get(u) ?? 0;
      const again = drift.has(u);
      if (item && (again || item.has(u) !== ((bits & 1) === 1))) await queue.definitions.blocks.set(itemId, u, 'item', item.has(u));
      if (everywhere && (again || everywhere.has(u) !== ((bits & 2) === 2))) await queue.definitions.blocks.set(itemId, u, 'global', everywhere.has(u));
    }
  }

  return {
    put: (itemId, input, actor) => guard(itemId, () => put(itemId, input, actor)),

    get: async (itemId) => view(await current(itemId)),

    async list() {
      return (await queue.items.allViews()).map(view);
    },

    close: (itemId) =>
      guard(itemId, async () => {
        await current(itemId);
        // Postgres first: a cut that then fails leaves the row closed and Redis open until the
        // operator's retry or the next check of the operators' writes (op-revs.ts), and an item
        // restored meanwhile comes back closed, as asked.
        await store.markClosed(itemId, new Date(deps.clock.now()));
        const ended = await queue.definitions.cut(itemId, 'closed');
        deps.log.info({ itemId, ended }, 'item closed');
        return view(await current(itemId));
      }),

    async webhookSecret(itemId) {
      const { def } = (await current(itemId)).snap;
      if (def.handler !== 'webhook') fail('conflict', `Item ${itemId} is not a webhook item.`);
      if (typeof def.config.secret !== 'string') fail('conflict', `Item ${itemId} was defined before webhook secrets; replace it (PUT) to make one.`);
      deps.log.info({ itemId }, 'webhook secret read');
      return def.config.secret as string;
    },

    patchGate: (itemId, patch, actor) => guard(itemId, () => patchGate(itemId, patch, actor)),

    gateOf: (item) => gateView(item.snap, autoCapOf(handlers.get(item.snap.def.handler))),

    async audit(itemId, limit) {
      await current(itemId);
      const rows = await store.recentAudit(itemId, limit);
      return rows.map((r) => ({
        at: r.createdAt.toISOString(),
        actor: r.actor,
        keyId: r.keyId,
        from: r.before ?? null,
        to: r.after,
        reason: r.actor === 'controller' ? 'controller_large_change' : 'operator_change',
      }));
    },

    reapply,
    guard,

    async reconcile(opts = {}) {
      const rows = opts.itemId ? [await store.get(opts.itemId)] : await store.all();
      const out = [];
      for (const listed of rows) {
        if (opts.signal?.aborted) break;
        if (!listed) fail('item_not_found', 'No such item.');
        const itemId = listed!.itemId;
        // A lost item comes back as the loss check restores it: under its lock, from its row as it
        // is then (read before this loop, it may have been archived since, and dropped on purpose).
        const busy = (err: unknown) => {
          // An item whose lock stays taken (a daemon cut off from Postgres holds it until Postgres
          // notices) is left to the next reconcile; asked by name, it is the answer.
          if (opts.itemId || !(err instanceof LockBusy)) throw err;
          deps.log.warn({ itemId }, 'item not reconciled now: its lock is held; the next reconcile counts it');
          return null;
        };
        const restored = await restoreMissing([itemId]).catch(busy);
        if (!restored || restored.gone.has(itemId)) continue;
        // Nothing to count for an item without stock (webhook, external): no lock, no reads.
        if (!handlers.get(listed!.handler)?.initialStock) continue;
        // The count writes the stock row's target from the definition: under the item's lock, from
        // its row as it is now. From the row listed before the loop (a start's reconcile walks
        // thousands of items), an operator's restock in between was set back — the item cut
        // `sold_out` with its config saying 5 — and a lowered stock raised again.
        const count = () => locked(itemId, async () => {
          const row = await store.get(itemId);
          if (!row || row.archivedAt) return null;
          let def: LineDefinition;
          try {
            def = rowDefinition(row);
          } catch (err) {
            // One stored definition today's rules refuse does not stop the others (asked by name, it is the answer).
            if (opts.itemId || !refusedDefinition(err)) throw err;
            deps.log.error({ itemId, err: (err as Error).message }, 'item not reconciled: its stored definition is refused now; define it again');
            return null;
          }
          return syncStock(def, opts.idleOnly ?? false);
        });
        const r = await count().catch(busy);
        if (!r) continue;
        // As it was before this reconcile: an item it made again had nothing in Redis (its count
        // was read after the restore, and every item read `changed` whether or not it differed).
        const report = restored.restored ? { ...r, redisHad: null, changed: true, restored: true as const } : { ...r, changed: r.changed && r.redisHad !== r.left };
        out.push(report);
        if (report.changed) deps.log.warn(report, 'stock reconciled from postgres');
      }
      return out;
    },

    keepBlock: (itemId, userId, on) => store.keepBlock(itemId ?? '*', userId, on),

    restore,

    retireUnknown: () => retireUnknown(),

    async restoreIfLost() {
      // Once a second on every daemon: O(1) while neither Redis's set of items nor `known` moved
      // (the scan of 10,000 ids each second was most of an idle daemon's CPU).
      const held = await queue.items.itemIdSet();
      if (lastSeen?.held === held && lastSeen.gen === knownGen && !retiring.size) return 0;
      // Every id Redis holds has its Postgres row (a put writes the row first): items defined on
      // other daemons since this one's last restore join `known`, so their loss is seen here too
      // (a daemon that started before them, or with no items, saw nothing missing after a flush).
      // One whose row is not live — removed by retention, or unknown to Postgres — is Redis gone
      // back past the removal (a snapshot older than it): it is closed and dropped, as retention
      // left it. Taken for a live item, it sold on, open, after its operator had closed it.
      await retireUnknown(held);
      const missing = [...known].filter((id) => !held.has(id));
      const lastGen = knownGen;
      const lastPostponed = postponed;
      if (!missing.length) {
        if (!retiring.size) lastSeen = { held, gen: knownGen };
        return 0;
      }
      // A few missing while Redis holds the rest is retention's work (here or on another daemon)
      // or a loss one by one: only their rows are read (a full restore on every daemon after each
      // item a retention round archived was that round's cost many times over). More is a Redis
      // that lost much or all (a flush, a restart without its data, perhaps with some items put
      // back already by another daemon): every row comes back, those this daemon never knew too.
      if (missing.length > Math.max(1, known.size / 10) || !held.size) return restore();
      const restored = await restoreSome(missing);
      // Nothing to restore and nothing archived (an item whose keys are there while the set lacks
      // its id): quiet until either side moves, not a read of their rows every second.
      // (Not while an unlisted item waits out UNLISTED_FOR_MS: it is looked at again until then.)
      if (!restored && lastGen === knownGen && lastPostponed === postponed && !unlistedSince.size) lastSeen = { held, gen: knownGen };
      return restored;
    },
  };

  /**
   * Items Redis lists that this daemon does not know: those with a live row join `known`, the
   * others are retired (retireRemoved). Also run before anything is admitted, at a start and on a
   * reconnect (daemon.ts): from the loss check alone, a second after, the waiting tickets of such an
   * item were admitted and sold first.
   */
  async function retireUnknown(held?: ReadonlySet<string>): Promise<void> {
    const ids = held ?? (await queue.items.itemIdSet());
    const unknown = [...ids].filter((id) => !known.has(id) && !retiring.has(id));
    if (unknown.length) {
      const live = new Set((await store.liveRows(unknown)).map((r) => r.itemId));
      for (const id of unknown) if (live.has(id)) (known.add(id), knownGen++);
      else retiring.add(id);
    }
    if (retiring.size) await retireRemoved();
  }

  /**
   * Items Redis lists with no live row in Postgres (restoreIfLost): each, under its lock and only if
   * its row is still not live (an operator may be making it again), is cut `closed` — its waiting
   * tickets end as a close ends them — and its keys dropped once nothing of it runs.
   */
  async function retireRemoved() {
    for (const id of [...retiring]) {
      await locked(id, async () => {
        if ((await store.liveRows([id])).length) {
          retiring.delete(id);
          known.add(id);
          knownGen++;
          return;
        }
        const held = await queue.items.item(id, { fresh: true });
        if (!held) return void retiring.delete(id);
        if (!held.snap.closed && !held.snap.soldOut) {
          await queue.definitions.cut(id, 'closed');
          deps.log.warn({ itemId: id }, 'item redis held without a live row in postgres (removed, or unknown): closed');
        }
        if (await queue.definitions.drop(id)) {
          retiring.delete(id);
          deps.log.warn({ itemId: id }, 'keys of an item postgres has no live row for dropped');
        }
      }).catch((err: unknown) => deps.log.warn({ itemId: id, err: String(err) }, 'item without a live row not retired yet: tried again at the next check'));
    }
  }

  /**
   * Every row; `known` becomes what Postgres has. Single-flight (a reconnect and the loss check
   * may ask at once), and never answered by a partial restore: one running is waited for, then
   * this runs whole.
   */
  function restore(): Promise<number> {
    return (restoring ??= (async () => {
      await restoringSome?.catch(() => {});
      const during = (definedDuring = new Set());
      try {
        // The blocks everywhere first: an item re-created below copies them from this set.
        // (Only added: the set is not marked as Postgres's, so the next check compares it whole.)
        for (const userId of await store.blockedIn('*')) await queue.definitions.blocks.setGlobal(userId, true);
        const rows = await store.all();
        const ids = rows.map((r) => r.itemId);
        const { restored, gone } = await restoreMissing(ids);
        // Items defined before their secret was kept in Postgres: the live item's, kept now.
        for (const row of rows) {
          if (row.secret) continue;
          const live = await queue.items.item(row.itemId);
          // (A Postgres that takes no writes now: kept at a later restore.)
          if (live) await store.keepSecret(row.itemId, live.snap.secret, live.snap.epoch).catch(unlessUnavailable);
        }
        known = new Set([...ids.filter((id) => !gone.has(id)), ...during]);
        knownGen++;
        return restored;
      } finally {
        definedDuring = null;
      }
    })().finally(() => (restoring = null)));
  }

  /**
   * These items only; those Postgres has archived leave `known` (unless defined again meanwhile).
   * A full restore running answers for it.
   */
  function restoreSome(ids: string[]): Promise<number> {
    if (restoring) return restoring;
    return (restoringSome ??= (async () => {
      const during = (definedDuring = new Set());
      try {
        const { restored, gone } = await restoreMissing(ids);
        for (const id of gone) if (!during.has(id)) known.delete(id);
        if (gone.size) knownGen++;
        return restored;
      } finally {
        definedDuring = null;
      }
    })().finally(() => (restoringSome = null)));
  }

  /**
   * Re-creates those of `ids` that Redis lacks. Redis is asked first and Postgres after: retention
   * archives an item's row before it drops its keys, so an item found missing whose row is archived
   * by then was removed on purpose (perhaps after the caller listed it), not lost, and must not
   * come back. `gone`: the missing ones Postgres has no live row for.
   */
  async function restoreMissing(ids: string[]): Promise<{ restored: number; gone: Set<string> }> {
    const missing: string[] = [];
    // An item whose keys are there while the shared set lacks its id: a new item whose daemon was
    // killed between its define and its registration (it was listed nowhere, blocks everywhere
    // and retention passed it by, for good), or one going (retention archives the row first; a
    // flush or a scan-and-unlink under way, which takes the set before the keys). Registered
    // below, under its lock, only once it was seen so at least UNLISTED_FOR_MS before (keys
    // being deleted are gone by then), while its row is live and it is still unlisted.
    const unlisted: string[] = [];
    const listed = await queue.items.itemIdSet();
    const now = deps.clock.now();
    for (const id of ids) {
      if (!(await queue.items.item(id, { fresh: true }))) (missing.push(id), unlistedSince.delete(id));
      else if (!listed.has(id)) {
        const since = unlistedSince.get(id);
        if (since === undefined) unlistedSince.set(id, now);
        else if (now - since >= UNLISTED_FOR_MS) unlisted.push(id);
      } else unlistedSince.delete(id);
    }
    // Their revisions before their rows: the marks say no more than the rows restored hold.
    const revs = missing.length && deps.ops ? await deps.ops.revs(missing) : null;
    const rows = missing.length ? await store.liveRows(missing) : [];
    const unlistedRows = unlisted.length ? await store.liveRows(unlisted) : [];
    // Keys that outlived their item's removal (a daemon killed between retention's archive and its
    // drop): no live row, so never registered again. Removed as retention would have (retention
    // walks the set of items, which lacks them: they stayed for good), and no longer this daemon's
    // to watch — kept, each one was read from Postgres every second (`known` kept the loss check awake).
    const stillLive = new Set(unlistedRows.map((r) => r.itemId));
    for (const id of unlisted)
      if (!stillLive.has(id)) {
        unlistedSince.delete(id);
        if (known.delete(id)) knownGen++;
        await locked(id, async () => {
          // (Under its lock, and only if still so: an operator may be making it again.)
          if ((await store.liveRows([id])).length || (await queue.items.listed(id))) return;
          if (await queue.definitions.drop(id)) deps.log.warn({ itemId: id }, 'keys of a removed item dropped: its removal had stopped part-way');
        }).catch((err: unknown) => deps.log.warn({ itemId: id, err: String(err) }, 'keys of a removed item not dropped yet'));
      }
    for (const row of unlistedRows) {
      await locked(row.itemId, async () => {
        unlistedSince.delete(row.itemId);
        // (One SISMEMBER, not a read of the whole set per item: the set lost alone unlists them all.)
        if (!(await queue.items.item(row.itemId, { fresh: true })) || (await queue.items.listed(row.itemId))) return;
        if (!(await store.liveRows([row.itemId])).length) return; // archived meanwhile: going
        await queue.definitions.register(row.itemId, (fn) => locked('*', fn));
        deps.log.warn({ itemId: row.itemId }, 'item registered again: redis held it, its set of items did not (a define cut short)');
      }).catch((err: unknown) => deps.log.warn({ itemId: row.itemId, err: String(err) }, 'unlisted item not registered yet: tried again at the next check'));
    }
    let restored = 0;
    const refused = new Set<string>();
    for (const row of rows) {
      try {
        // Under the item's lock, and only if still missing: an operator's write (here or on another
        // daemon) may have made it again since the row was read, and a restore must not put the
        // older row over it.
        // Marked before the lock is let go: a check waiting on it must find the mark, not apply the row again.
        const made = await locked(row.itemId, async () => {
          if ((await queue.items.item(row.itemId, { fresh: true })) || !(await restoreRow(row))) return false;
          const rev = revs?.get(row.itemId);
          if (rev) await deps.ops!.mark(row.itemId, rev);
          return true;
        });
        if (made) restored++;
      } catch (err) {
        // Postgres refusing the restore's writes (a read-only standby after a failover: the stock
        // row's recount, a secret to claim) or gone mid-way: this item waits for the next check,
        // and the others — an item that needs no write — are restored meanwhile. (It ended the
        // restore: every item answered 404 for as long as Postgres took no writes.)
        if (isPostgresUnavailable(err)) {
          postponed++;
          // (Not `known` again each round while it is quiet: the loss check's quiet mark waits for it.)
          deps.log.warn({ itemId: row.itemId, err: String(err) }, 'item not restored yet: postgres takes no writes now; tried again at the next check');
          continue;
        }
        // A stored definition today's rules refuse (a webhook URL with a password, say) is left
        // out, loudly; it used to end the restore, and every item after it stayed lost. It counts
        // as gone (out of `known`), so the loss check does not restore everything every second for it.
        if (!refusedDefinition(err)) throw err;
        refused.add(row.itemId);
        deps.log.error({ itemId: row.itemId, err: (err as Error).message }, 'item not restored: its stored definition is refused now; define it again');
      }
    }
    const live = new Set(rows.map((r) => r.itemId).filter((id) => !refused.has(id)));
    return { restored, gone: new Set(missing.filter((id) => !live.has(id))) };
  }

  /** The gate a row keeps, over the defaults. */
  function rowGate(row: ItemRow): GateSettings {
    return { ...defaultGate, ...(row.gate as Partial<GateSettings>) };
  }

  /** The ticket-id secret and epoch a row keeps (null: none kept yet). */
  function keptSecret(row: ItemRow): { secret: string; epochMs: number | null } | null {
    return row.secret ? { secret: row.secret, epochMs: row.epochMs === null ? null : Number(row.epochMs) } : null;
  }

  function rowDefinition(row: ItemRow) {
    return lineDefinition(row.itemId, {
      handler: row.handler,
      config: row.config,
      capacity: row.capacity,
      abandonAfterMs: row.abandonAfterMs,
      opensAt: row.opensAt?.toISOString() ?? null,
      closesAt: row.closesAt?.toISOString() ?? null,
      quotas: row.quotas as Quotas | null,
      tokenTtlMs: row.tokenTtlMs,
      preQueue: row.preQueue as { fromMs: number } | null,
      waitingRoom: row.waitingRoom ?? null,
      pow: row.pow ?? null,
      lines: row.lines,
    });
  }

  /** A stored row whose definition the handler or the item rules refuse now (they were stricter when it was stored, or it predates a rule). */
  function refusedDefinition(err: unknown): boolean {
    return err instanceof FloodgateError && (err.code === 'invalid_request' || err.code === 'conflict');
  }

  /**
   * The row must hold the secret the live item signs with (Redis's wins: an item defined before
   * secrets were kept, or by a daemon of an older version), or a later loss would make the item
   * again with another one and its ids would stop verifying.
   */
  async function keepLiveSecret(itemId: string, row: { secret: string | null; epochMs: number | null }, live: { secret: string; epoch: number }) {
    if (live.secret && (row.secret !== live.secret || row.epochMs !== live.epoch)) await store.keepSecret(itemId, live.secret, live.epoch);
  }

  /** Re-creates a lost item; false if it exists again already (another daemon restored it). */
  async function restoreRow(row: ItemRow): Promise<boolean> {
    const def = rowDefinition(row);
    // Stock before the line: a join the re-created item accepts must find its units, and a
    // restore cut short cannot leave an item live without them.
    const counted = await countStock(def);
    if (counted) await deps.counters.set(row.itemId, counted.left, counted.shards);
    // Its ticket-id secret and epoch as they were: the ids issued before the loss still verify,
    // and are answered from Postgres (queue/lost-tickets.ts). A row without one gets one first.
    const kept = keptSecret(row) ?? (await store.claimSecret(row.itemId, newItemSecret(), deps.clock.now()));
    const soldOut = !!counted && counted.left <= 0 && !counted.reserved;
    const ended = row.closedAt ? 'closed' : soldOut ? 'sold_out' : undefined;
    const made = await queue.definitions.define(def, rowGate(row), { reopen: false, secret: kept?.secret, epoch: kept?.epochMs ?? null, everywhere: (fn) => locked('*', fn), ended });
    const { created } = made;
    if (kept) await keepLiveSecret(row.itemId, kept, made);
    if (!created) return false;
    // Its blocks (those everywhere it copied from the global set as it was made).
    for (const userId of await store.blockedIn(row.itemId)) await queue.definitions.blocks.set(row.itemId, userId, 'item', true);
    if (row.closedAt) await queue.definitions.cut(row.itemId, 'closed');
    // Units reserved may be released: the item is held (its line stays), as pushStock leaves it.
    if (soldOut) await queue.definitions.cut(row.itemId, 'sold_out');
    deps.log.warn({ itemId: row.itemId }, 'item restored from postgres');
    return true;
  }
}
