import { createHash } from 'node:crypto';
import type { Clock } from '../kernel/clock.js';
import { fail } from '../kernel/errors.js';
import type { Logger } from '../kernel/logger.js';
import type { ItemRow, ItemsStore } from '../db/items-store.js';
import type { CachedItem } from '../queue/item-cache.js';
import type { Queue } from '../queue/queue.js';
import { itemState, type ItemState } from '../queue/snapshot.js';
import type { GateSettings, LineDefinition } from '../queue/types.js';
import type { HandlerRegistry, HandlerSpec } from '../service/registry.js';
import { gateView, type GateView } from './gate-view.js';

/**
 * Item definitions: durable in Postgres, live in Redis (the line). Writes go to Redis first,
 * where the conflict check is atomic, then to Postgres; on start `restore()` re-creates in Redis
 * every item Postgres knows and Redis lost.
 */
export interface ItemInput {
  handler: string;
  config?: Record<string, unknown>;
  capacity?: number | null;
  abandonAfterMs?: number | null;
  opensAt?: string | null;
  closesAt?: string | null;
  gate?: Partial<GateSettings>;
}

export interface Actor {
  role: 'service' | 'operator';
  key: string;
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
}

export interface Catalog {
  put(itemId: string, input: ItemInput, actor: Actor): Promise<{ created: boolean; item: ItemView }>;
  get(itemId: string): Promise<ItemView>;
  list(): Promise<ItemView[]>;
  close(itemId: string): Promise<ItemView>;
  /** The signing secret of a webhook item (the item view never shows it). */
  webhookSecret(itemId: string): Promise<string>;
  patchGate(itemId: string, patch: Partial<GateSettings>, actor: Actor): Promise<GateView>;
  restore(): Promise<number>;
  /**
   * Rebuilds the Redis stock of stock items from Postgres (units left = total − rows sold), in
   * both directions, and re-creates items Redis lost. `idleOnly`: touch only items with no sale in
   * flight (safe while a sale is on; an item busy now is reported `changed: false`).
   */
  reconcile(opts?: { itemId?: string; idleOnly?: boolean }): Promise<{ itemId: string; left: number; redisHad: number | null; changed: boolean }[]>;
}

/** Postgres's count of what was sold (db/sales.ts). */
export interface StockLedger {
  define(itemId: string, total: number): Promise<void>;
  recount(table: 'orders' | 'coupon_claims', itemId: string): Promise<{ total: number; sold: number } | null>;
}

const keyId = (key: string) => createHash('sha256').update(key).digest('hex').slice(0, 12);
const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
const ms = (s: string | null | undefined) => (s ? Date.parse(s) : null);
const defaultGate: GateSettings = { mode: 'auto', rate: null, maxInFlight: null };

export interface CatalogDeps {
  queue: Queue;
  store: ItemsStore;
  stock: StockLedger;
  handlers: HandlerRegistry;
  clock: Clock;
  log: Logger;
  /** Tells the gate controller to restart from the observed in-flight (a switch to auto). */
  resetController(itemId: string): Promise<void>;
  /** The in-flight cap of an auto gate before its controller has run (its slow start). */
  autoCap: number;
}

export function createCatalog(deps: CatalogDeps): Catalog {
  const { queue, store, handlers } = deps;

  /**
   * Units left per Postgres, pushed into Redis; null for items without stock. `idleOnly`: only
   * while no ticket of the item is admitted (no sale in flight), when total − sold is exactly
   * what the counter must hold, so it is corrected in both directions; otherwise left as it is.
   */
  async function syncStock(def: LineDefinition, idleOnly: boolean) {
    const spec = handlers.get(def.handler);
    if (!spec?.initialStock) return null;
    await deps.stock.define(def.itemId, spec.initialStock(def.config));
    const counted = spec.stockTable ? await deps.stock.recount(spec.stockTable, def.itemId) : null;
    const left = counted ? counted.total - counted.sold : spec.initialStock(def.config);
    const redisHad = (await queue.item(def.itemId, { fresh: true }))?.snap.stockLeft ?? null;
    const changed = await queue.stock.set(def.itemId, left, spec.stockShards?.(def.config) ?? 1, { idleOnly });
    if (changed && left <= 0) await queue.cut(def.itemId, 'sold_out');
    return { itemId: def.itemId, left, redisHad, changed };
  }

  /** `defining`: an operator defines the item, `previous` is how it stands (HandlerSpec.fillIn). */
  function lineDefinition(itemId: string, input: ItemInput, defining?: { previous: LineDefinition | null }): LineDefinition {
    const spec = handlers.get(input.handler) ?? fail('invalid_request', `Unknown handler "${input.handler}".`, { issues: [{ path: 'handler', message: `one of ${handlers.names().join(', ')}` }] });
    const given = input.config ?? {};
    const previous = defining?.previous?.handler === spec.name ? defining.previous.config : null;
    const config = defining && spec.fillIn ? spec.fillIn(given, previous) : given;
    const parsed = spec.config.safeParse(config);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((i) => ({ path: ['config', ...i.path].join('.'), message: i.message }));
      fail('invalid_request', `The config does not suit the ${spec.name} handler.`, { issues });
    }
    const opensAt = ms(input.opensAt);
    const closesAt = ms(input.closesAt);
    if (opensAt !== null && closesAt !== null && closesAt <= opensAt)
      fail('invalid_request', 'closesAt must be after opensAt.', { issues: [{ path: 'closesAt', message: 'must be after opensAt' }] });
    return {
      itemId,
      handler: spec.name,
      config: parsed.data!,
      capacity: input.capacity ?? null,
      abandonAfterMs: input.abandonAfterMs ?? null,
      opensAt,
      closesAt,
      rejoin: spec.rejoin(parsed.data!),
    };
  }

  /** What an auto gate admits before (or, for self-limited handlers, instead of) its controller. */
  const autoCapOf = (spec: HandlerSpec | undefined) => (spec?.handle ? (spec.selfLimited?.maxInFlight ?? deps.autoCap) : null);

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
      state: itemState(s, deps.clock.now()),
      gate: gateView(s.gate, s.controller, autoCapOf(spec)),
      counts: s.counts,
      remaining: s.stockLeft,
    };
  }

  async function current(itemId: string): Promise<CachedItem> {
    return (await queue.item(itemId, { fresh: true })) ?? fail('item_not_found', 'No such item.');
  }

  async function audit(itemId: string, actor: Actor, before: GateSettings | null, after: GateSettings) {
    await store.audit({ itemId, actor: actor.role, keyId: keyId(actor.key), before: before as Record<string, unknown> | null, after: after as unknown as Record<string, unknown> });
  }

  return {
    async put(itemId, input, actor) {
      const existing = await queue.item(itemId, { fresh: true });
      const def = lineDefinition(itemId, input, { previous: existing?.snap.def ?? null });
      const before = existing?.snap.gate ?? null;
      const gate: GateSettings = { ...defaultGate, ...input.gate };
      const { created } = await queue.define(def, gate, { reopen: true });
      await syncStock(def, false);
      await store.upsert({
        itemId,
        handler: def.handler,
        config: def.config,
        capacity: def.capacity,
        abandonAfterMs: def.abandonAfterMs,
        opensAt: def.opensAt === null ? null : new Date(def.opensAt),
        closesAt: def.closesAt === null ? null : new Date(def.closesAt),
        gate: gate as unknown as Record<string, unknown>,
        closedAt: null,
      });
      if (JSON.stringify(before) !== JSON.stringify(gate)) await audit(itemId, actor, before, gate);
      deps.log.info({ itemId, handler: def.handler, created }, 'item defined');
      return { created, item: view(await current(itemId)) };
    },

    get: async (itemId) => view(await current(itemId)),

    async list() {
      const ids = (await queue.itemIds()).sort();
      const found = await Promise.all(ids.map((id) => queue.item(id)));
      return found.filter((x): x is CachedItem => x !== null).map(view);
    },

    async close(itemId) {
      await current(itemId);
      const ended = await queue.cut(itemId, 'closed');
      await store.markClosed(itemId, new Date(deps.clock.now()));
      deps.log.info({ itemId, ended }, 'item closed');
      return view(await current(itemId));
    },

    async webhookSecret(itemId) {
      const { def } = (await current(itemId)).snap;
      if (def.handler !== 'webhook') fail('conflict', `Item ${itemId} is not a webhook item.`);
      if (typeof def.config.secret !== 'string') fail('conflict', `Item ${itemId} was defined before webhook secrets; replace it (PUT) to make one.`);
      deps.log.info({ itemId }, 'webhook secret read');
      return def.config.secret as string;
    },

    async patchGate(itemId, patch, actor) {
      const item = await current(itemId);
      const before = item.snap.gate;
      if (!Object.keys(patch).length) return gateView(before, item.snap.controller, autoCapOf(handlers.get(item.snap.def.handler)));
      const after: GateSettings = { ...before, ...patch };
      await queue.setGate(itemId, patch);
      if (after.mode === 'auto' && before.mode !== 'auto') await deps.resetController(itemId);
      await store.updateGate(itemId, after as unknown as Record<string, unknown>);
      await audit(itemId, actor, before, after);
      deps.log.info({ itemId, ...after }, 'gate changed');
      const now = await current(itemId);
      return gateView(now.snap.gate, now.snap.controller, autoCapOf(handlers.get(now.snap.def.handler)));
    },

    async reconcile(opts = {}) {
      const rows = opts.itemId ? [await store.get(opts.itemId)] : await store.all();
      const out = [];
      for (const row of rows) {
        if (!row) fail('item_not_found', 'No such item.');
        if (!(await queue.item(row!.itemId, { fresh: true }))) await restoreRow(row!);
        const r = await syncStock(rowDefinition(row!), opts.idleOnly ?? false);
        if (r) out.push(r);
        if (r?.changed && r.redisHad !== r.left) deps.log.warn(r, 'stock reconciled from postgres');
      }
      return out;
    },

    async restore() {
      let restored = 0;
      for (const row of await store.all()) {
        if (await queue.item(row.itemId, { fresh: true })) continue;
        await restoreRow(row);
        restored++;
      }
      return restored;
    },
  };

  function rowDefinition(row: ItemRow) {
    return lineDefinition(row.itemId, {
      handler: row.handler,
      config: row.config,
      capacity: row.capacity,
      abandonAfterMs: row.abandonAfterMs,
      opensAt: row.opensAt?.toISOString() ?? null,
      closesAt: row.closesAt?.toISOString() ?? null,
    });
  }

  async function restoreRow(row: ItemRow) {
    const def = rowDefinition(row);
    await queue.define(def, { ...defaultGate, ...(row.gate as Partial<GateSettings>) }, { reopen: false });
    if (row.closedAt) await queue.cut(row.itemId, 'closed');
    await syncStock(def, false);
    deps.log.warn({ itemId: row.itemId }, 'item restored from postgres');
  }
}
