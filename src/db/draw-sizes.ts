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
      // One round trip: a row recorded before (or by a racing insert, which this one waits for)
      // is updated to itself and returned. (An insert that did nothing and a select after it took
      // two: behind a Postgres at ~1 s a round trip, the daemon that lost the race timed out at
      // 2 s, and its joins at the opening were answered 503 — a review.)
      const [row] = await sql`insert into pre_queue_draws (item_id, seed_hash, size) values (${itemId}, ${seedHash}, ${n}) on conflict (item_id, seed_hash) do update set size = pre_queue_draws.size returning size`;
      if (!row) throw new Error(`pre-queue draw of ${itemId}: its size was neither recorded nor found`);
      return Number(row.size);
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
