import { and, desc, eq, gte, inArray, isNotNull, isNull, or, sql } from 'drizzle-orm';
import type { Db } from './client.js';
import { gateAudit, items, preQueueDraws, userBlocks, voidedTickets } from './schema.js';

export type ItemRow = typeof items.$inferSelect;
export type NewItemRow = typeof items.$inferInsert;

/** SQL for item definitions, the operators' blocks and the gate audit log. */
export function createItemsStore(db: Db) {
  return {
    /**
     * Writes the item's row, live (not archived). Its ticket-id secret and epoch, once stored, are
     * kept (the first stored wins: an item made again, or defined by two daemons at once, signs with
     * one secret); returns those the row holds after the write. `asItWas`: the row is put back as
     * `row` says, archived if it was (the undo of a put Redis refused: an archived item came back
     * at the next start).
     */
    async upsert(row: NewItemRow, opts: { asItWas?: boolean } = {}): Promise<{ secret: string | null; epochMs: number | null }> {
      const { itemId, createdAt: _c, secret: _s, epochMs: _e, archivedAt, ...rest } = row;
      const [kept] = await db
        .insert(items)
        .values(row)
        .onConflictDoUpdate({
          target: items.itemId,
          set: { ...rest, archivedAt: opts.asItWas ? (archivedAt ?? null) : null, updatedAt: new Date(), secret: sql`coalesce(${items.secret}, excluded.secret)`, epochMs: sql`case when ${items.secret} is null then excluded.epoch_ms else ${items.epochMs} end` },
        })
        .returning({ secret: items.secret, epochMs: items.epochMs });
      return { secret: kept?.secret ?? null, epochMs: kept?.epochMs === null || kept?.epochMs === undefined ? null : Number(kept.epochMs) };
    },
    /** Stores the secret and epoch the item's live line in Redis signs with (it wins over the row's). */
    async keepSecret(itemId: string, secret: string, epochMs: number): Promise<void> {
      // updated_at moves: the daemons' minute load of secrets reads the rows changed since (lost-tickets.ts).
      await db.update(items).set({ secret, epochMs, updatedAt: new Date() }).where(eq(items.itemId, itemId));
    },
    /** Stores a secret for a row that has none; returns the row's secret and epoch after it. */
    async claimSecret(itemId: string, secret: string, epochMs: number): Promise<{ secret: string; epochMs: number } | null> {
      const [r] = await db
        .update(items)
        .set({ secret: sql`coalesce(${items.secret}, ${secret})`, epochMs: sql`case when ${items.secret} is null then ${epochMs}::bigint else ${items.epochMs} end`, updatedAt: new Date() })
        .where(eq(items.itemId, itemId))
        .returning({ secret: items.secret, epochMs: items.epochMs });
      return r?.secret ? { secret: r.secret, epochMs: Number(r.epochMs ?? epochMs) } : null;
    },
    /**
     * Every item's ticket-id secret (archived items' too), for the ids of items Redis does not hold;
     * `since`: only rows made or changed since then (a secret once set never changes).
     */
    secrets: (since: Date | null = null): Promise<{ itemId: string; secret: string | null; handler: string }[]> =>
      db
        .select({ itemId: items.itemId, secret: items.secret, handler: items.handler })
        .from(items)
        .where(since ? and(isNotNull(items.secret), or(gte(items.updatedAt, since), gte(items.createdAt, since))) : isNotNull(items.secret)),
    async get(itemId: string): Promise<ItemRow | undefined> {
      const [row] = await db.select().from(items).where(eq(items.itemId, itemId));
      return row;
    },
    /** Every item that is not archived (an archived one has no keys in Redis, on purpose). */
    all: (): Promise<ItemRow[]> => db.select().from(items).where(isNull(items.archivedAt)),
    /** The rows of these items that are not archived, as of now. */
    async liveRows(itemIds: string[]): Promise<ItemRow[]> {
      const out: ItemRow[] = [];
      for (let i = 0; i < itemIds.length; i += 5000) out.push(...(await db.select().from(items).where(and(inArray(items.itemId, itemIds.slice(i, i + 5000)), isNull(items.archivedAt)))));
      return out;
    },
    /** The item's keys leave Redis, its blocks with them: an item defined again under its id starts without them, as in Redis. */
    async archive(itemId: string, at: Date): Promise<void> {
      await db.update(items).set({ archivedAt: at }).where(eq(items.itemId, itemId));
      await db.delete(userBlocks).where(eq(userBlocks.scope, itemId));
      // Its voids: a void stops a ticket's late sale (a stalled job, a Redis rollback bringing it
      // back), all long over once its keys go; one row per cancel was kept for good.
      await db.delete(voidedTickets).where(eq(voidedTickets.itemId, itemId));
      // Its draw's recorded size: kept only to draw again over it after a Redis rollback, and an
      // archived item has no line to draw (an older snapshot that brings it back closes it again).
      await db.delete(preQueueDraws).where(eq(preQueueDraws.itemId, itemId));
    },
    /** Keeps (or drops) an operator's block; `scope`: the item id, or '*' for every item. */
    async keepBlock(scope: string, userId: string, on: boolean): Promise<void> {
      if (on) await db.insert(userBlocks).values({ scope, userId }).onConflictDoNothing();
      else await db.delete(userBlocks).where(and(eq(userBlocks.scope, scope), eq(userBlocks.userId, userId)));
    },
    /** The users blocked in `scope` (an item id, or '*'). */
    async blockedIn(scope: string): Promise<string[]> {
      return (await db.select({ userId: userBlocks.userId }).from(userBlocks).where(eq(userBlocks.scope, scope))).map((r) => r.userId);
    },
    /** Takes back a row whose Redis side could not be written (catalog.put's undo). */
    async remove(itemId: string): Promise<void> {
      await db.delete(items).where(eq(items.itemId, itemId));
    },
    async markClosed(itemId: string, at: Date): Promise<void> {
      await db.update(items).set({ closedAt: at, updatedAt: at }).where(eq(items.itemId, itemId));
    },
    async updateGate(itemId: string, gate: Record<string, unknown>): Promise<void> {
      await db.update(items).set({ gate, updatedAt: new Date() }).where(eq(items.itemId, itemId));
    },
    /** Returns the entry's id. */
    async audit(entry: { itemId: string; actor: string; keyId: string | null; before: Record<string, unknown> | null; after: Record<string, unknown> }): Promise<number> {
      const [row] = await db.insert(gateAudit).values(entry).returning({ id: gateAudit.id });
      return row!.id;
    },
    /** Takes back an entry whose change did not happen. */
    async unaudit(id: number): Promise<void> {
      await db.delete(gateAudit).where(eq(gateAudit.id, id));
    },
    /** Newest first. */
    recentAudit: (itemId: string, limit: number) => db.select().from(gateAudit).where(eq(gateAudit.itemId, itemId)).orderBy(desc(gateAudit.id)).limit(limit),
    auditLog: (itemId: string) => db.select().from(gateAudit).where(eq(gateAudit.itemId, itemId)).orderBy(gateAudit.id),
  };
}

export type ItemsStore = ReturnType<typeof createItemsStore>;
