import { fail } from '../kernel/errors.js';
import type { Line } from '../queue/line.js';

/**
 * Operator blocks (API.md, "Quotas and blocks"). A block for one item lives in that item's
 * `blocked` hash; a block everywhere lives in the global set and is copied into every item's hash
 * (and into each item defined later), so the join and admit scripts read one key on the item's own
 * slot; a split item's block is also copied to the user's sub-line, whose admit script reads it
 * on that sub-line's slot (queue/definitions.ts). A blocked user's join is 403 blocked; a waiting
 * ticket of theirs ends rejected/blocked when it reaches the head, instead of being admitted.
 * Postgres keeps every block too (written first), so the items a restore re-creates after Redis
 * lost its data come back with their blocks (catalog.restore), and a block a Redis rollback took
 * is set again (catalog/op-revs.ts).
 */
export function createBlocks(
  queue: Pick<Line, 'items' | 'definitions'>,
  /** Keeps the block where Redis's data cannot take it (catalog.keepBlock: Postgres); `itemId` null for every item. */
  keep: (itemId: string | null, userId: string, on: boolean) => Promise<void>,
  /** Runs the write as an operator's write of its scope (catalog.guard: its revision survives a Redis rollback). */
  guard: <T>(scope: string, write: () => Promise<T>) => Promise<T> = (_scope, write) => write(),
) {
  return {
    item: (itemId: string, userId: string, on: boolean) =>
      guard(itemId, async () => {
        // Read afresh: a view from before the item's removal (retention, up to FLOODGATE_CACHE_MS
        // old on this daemon) took the block (200) and wrote it where the item's next life found it.
        if (!(await queue.items.item(itemId, { fresh: true }))) fail('item_not_found', 'No such item.');
        // Kept first: a block answered 200 is one a restore from Postgres puts back.
        await keep(itemId, userId, on);
        await queue.definitions.blocks.set(itemId, userId, 'item', on);
      }),
    /** The set first, then each item's copy: an item defined meanwhile copies the set itself. */
    everywhere: (userId: string, on: boolean) =>
      guard('*', async () => {
        await keep(null, userId, on);
        await queue.definitions.blocks.setGlobal(userId, on);
        // Read afresh, not this daemon's copy of the set (up to FLOODGATE_CACHE_MS old): an item
        // another daemon made a moment ago copied the set before this block (queue/definitions.ts).
        for (const itemId of await queue.items.itemIds({ fresh: true })) await queue.definitions.blocks.set(itemId, userId, 'global', on);
      }),
  };
}

export type Blocks = ReturnType<typeof createBlocks>;
