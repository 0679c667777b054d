import type { Line } from '../queue/line.js';
import type { LineDefinition } from '../queue/types.js';
import type { HandlerRegistry } from '../service/registry.js';
import type { StockCounters } from '../service/stock-counters.js';

/** Postgres's stock rows and its count of what was sold (db/stock-rows.ts). */
export interface StockRows {
  define(itemId: string, total: number): Promise<void>;
  recount(table: 'orders' | 'coupon_claims', itemId: string): Promise<{ total: number; sold: number; reserved: number } | null>;
  /** Orders of the item reserved and not yet confirmed or released, or released with their unit not yet back in Redis. */
  reservedOrders(itemId: string): Promise<number>;
}

/**
 * Stock of items that have it: Postgres counts (`countStock`, a write: it defines the stock row
 * and recounts what was sold), Redis follows (`pushStock`). Split so that an item change can do
 * its Postgres part before it touches Redis.
 */
export function createStockSync(deps: { queue: Pick<Line, 'items' | 'definitions'>; counters: StockCounters; handlers: HandlerRegistry; stockRows: StockRows }) {
  const { queue, handlers } = deps;

  /** Postgres's stock row for the item (written), and the units it leaves; null for items without stock. */
  async function countStock(def: LineDefinition) {
    const spec = handlers.get(def.handler);
    if (!spec?.initialStock) return null;
    const total = spec.initialStock(def.config);
    await deps.stockRows.define(def.itemId, total);
    const counted = spec.stockTable ? await deps.stockRows.recount(spec.stockTable, def.itemId) : null;
    return { left: counted ? counted.total - counted.sold : total, reserved: counted?.reserved ?? 0, shards: spec.stockShards?.(def.config) ?? 1 };
  }

  /**
   * Sets Redis's stock to Postgres's count. `idleOnly`: only while no ticket of the item is
   * admitted (no sale in flight), when total − sold is exactly what the counter must hold, so it is
   * corrected in both directions; otherwise left as it is (`changed: false`). A count of zero with
   * nothing reserved is Postgres saying "sold out": the line is cut (with reservations pending, the
   * item is held: a released unit comes back to the line). `before`: the item's admissions counter
   * and units left before Postgres counted; if either moved since, the count may be old, and
   * nothing is set.
   */
  async function pushStock(itemId: string, counted: { left: number; reserved?: number; shards: number }, idleOnly: boolean, before?: { admissions: number; units: number | null }) {
    const { left } = counted;
    const redisHad = (await queue.items.item(itemId, { fresh: true }))?.snap.stockLeft ?? null;
    const changed = await deps.counters.set(itemId, left, counted.shards, { idleOnly, unless: before });
    if (changed && left <= 0 && !counted.reserved) await queue.definitions.cut(itemId, 'sold_out');
    // The counter moved: every daemon reads the item again (their views of it are old). Tickets
    // waiting for units keep the item active already, so the dispatcher sees them.
    if (changed && redisHad !== left) await queue.items.announce(itemId);
    return { itemId, left, redisHad, changed };
  }

  /**
   * Postgres's count pushed to Redis. Idle only: the count is taken after reading the admissions
   * counter and the units left, and set only if neither has moved, so a sale (or a release) that
   * happens between the count and the set (a busy machine's stock keeper took that long) is never
   * undone by a count from before it.
   */
  async function syncStock(def: LineDefinition, idleOnly: boolean) {
    const snap = idleOnly ? (await queue.items.item(def.itemId, { fresh: true }))?.snap : undefined;
    const before = snap ? { admissions: snap.admissions, units: snap.stockLeft } : undefined;
    const counted = await countStock(def);
    return counted && pushStock(def.itemId, counted, idleOnly, before);
  }

  return { countStock, pushStock, syncStock };
}
