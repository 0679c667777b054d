import { fail } from '../kernel/errors.js';
import type { Line } from '../queue/line.js';

/**
 * Operator blocks (API.md, "Quotas and blocks"). A block for one item lives in that item's
 * `blocked` hash; a block everywhere lives in the global set and is copied into every item's hash
 * (and into each item defined later), so the join and admit scripts read one key on the item's own
 * slot; a split item's block is also copied to the user's sub-line, whose admit script reads it
 * on that sub-line's slot (queue/definitions.ts). A blocked user's join is 403 blocked; a waiting
 * ticket of theirs ends rejected/blocked when it reaches the head, instead of being admitted.
 */
export function createBlocks(queue: Pick<Line, 'items' | 'definitions'>) {
  return {
    async item(itemId: string, userId: string, on: boolean) {
      if (!(await queue.items.item(itemId))) fail('item_not_found', 'No such item.');
      await queue.definitions.blocks.set(itemId, userId, 'item', on);
    },
    /** The set first, then each item's copy: an item defined meanwhile copies the set itself. */
    async everywhere(userId: string, on: boolean) {
      await queue.definitions.blocks.setGlobal(userId, on);
      for (const itemId of await queue.items.itemIds()) await queue.definitions.blocks.set(itemId, userId, 'global', on);
    },
  };
}

export type Blocks = ReturnType<typeof createBlocks>;
