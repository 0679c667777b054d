import type postgres from 'postgres';

/** A draw's size as Postgres keeps it (drizzle/0025). */
export interface RecordedDraw {
  itemId: string;
  seedHash: string;
  size: number;
}

/**
 * Postgres's side of a pre-queue draw's size (drizzle/0025; queue/admissions.ts runDraw says why):
 * the N a draw is made over, recorded before anything of the draw is shown.
 */
export interface DrawSizes {
  /**
   * Records `n` as the size of the item's draw with this seed, unless one is recorded already
   * (the first wins: a daemon that draws again after a Redis rollback, or a second daemon racing
   * the first, draws over what was recorded). Returns the recorded size.
   */
  keep(itemId: string, seedHash: string, n: number): Promise<number>;
  /** The draws recorded for items that are neither archived nor closed (a closed item's tickets have all ended: no place to keep). */
  recorded(): Promise<RecordedDraw[]>;
}

export function createDrawSizes(sql: postgres.Sql): DrawSizes {
  return {
    async keep(itemId, seedHash, n) {
      const [ins] = await sql`insert into pre_queue_draws (item_id, seed_hash, size) values (${itemId}, ${seedHash}, ${n}) on conflict (item_id, seed_hash) do nothing returning size`;
      if (ins) return Number(ins.size);
      // Recorded before: read in a statement of its own (one that raced this insert committed
      // after this statement's snapshot, which a select in the same statement would not see).
      const [had] = await sql`select size from pre_queue_draws where item_id = ${itemId} and seed_hash = ${seedHash}`;
      if (!had) throw new Error(`pre-queue draw of ${itemId}: its size was neither recorded nor found`);
      return Number(had.size);
    },
    async recorded() {
      const rows = await sql`
        select d.item_id, d.seed_hash, d.size from pre_queue_draws d
        join items i on i.item_id = d.item_id
        where i.archived_at is null and i.closed_at is null`;
      return rows.map((r) => ({ itemId: String(r.item_id), seedHash: String(r.seed_hash), size: Number(r.size) }));
    },
  };
}
