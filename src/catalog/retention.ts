import type { ItemsStore } from '../db/items-store.js';
import type { Clock } from '../kernel/clock.js';
import type { Logger } from '../kernel/logger.js';
import { every } from '../kernel/loop.js';
import type { Line } from '../queue/line.js';
import type { ItemSnapshot } from '../queue/snapshot.js';

/**
 * Removes the Redis keys of items that ended (closed or sold out) more than `retentionMs` ago, once
 * nothing of theirs is waiting, admitted or still to be written to the outcome ledger. Their
 * Postgres rows stay (the item row, marked archived so a start does not re-create it; orders,
 * claims, outcomes, audit). Postgres first: an item marked archived whose keys are still there is
 * removed on the next round; the reverse (keys gone, row not marked) would be restored at start.
 * Ticket ids of a removed item are answered from Postgres from then on (queue/lost-tickets.ts).
 * Each round also deletes the Postgres rows of invites' uses whose invites have expired
 * (`purgeInviteUses`, access/invite-uses.ts), which nothing else ends.
 */
export function startRetention(
  deps: {
    queue: Pick<Line, 'items' | 'definitions'>;
    store: Pick<ItemsStore, 'archive'>;
    clock: Clock;
    log: Logger;
    purgeInviteUses?: (nowMs: number) => Promise<number>;
    /**
     * Runs `fn` holding the item's operator lock (catalog's ops.locked), which an operator's write
     * holds too: the check, the archive and the drop are one step against a PUT that reopens or
     * restocks the item meanwhile (without it, the row was archived and the keys of the item just
     * defined again dropped: joins 404 for good, the operator told 200).
     */
    locked?<T>(scope: string, fn: () => Promise<T>): Promise<T>;
  },
  opts: { everyMs: number; retentionMs: number },
) {
  /** Ended (closed or sold out) longer ago than the retention time. */
  const due = (s: ItemSnapshot | undefined, now: number): s is ItemSnapshot & { endedAt: number } =>
    !!s && s.endedAt !== null && (s.closed || s.soldOut) && now - s.endedAt >= opts.retentionMs;
  const locked = deps.locked ?? (<T>(_scope: string, fn: () => Promise<T>) => fn());
  async function round() {
    const now = deps.clock.now();
    // (A failure here holds up no item's removal.)
    if (deps.purgeInviteUses) await deps.purgeInviteUses(now).catch((err) => deps.log.warn({ err: String(err) }, 'expired invite uses not deleted'));
    // An idle item is judged from the view this daemon holds (no Redis call); one it is about to
    // remove is read again first.
    const held = await deps.queue.items.heldViews();
    for (const itemId of await deps.queue.items.itemIds()) {
      if (!due((held(itemId) ?? (await deps.queue.items.item(itemId)))?.snap, now)) continue;
      await locked(itemId, async () => {
        const s = (await deps.queue.items.item(itemId, { fresh: true }))?.snap;
        if (!s || !due(s, now)) return;
        if (s.counts.waiting > 0 || s.counts.admitted > 0) return;
        await deps.store.archive(itemId, new Date(now));
        if (await deps.queue.definitions.drop(itemId)) deps.log.info({ itemId, endedAt: new Date(s.endedAt).toISOString() }, 'ended item removed from redis (retention)');
      });
    }
  }
  return { round, ...every(opts.everyMs, 'item retention', round, deps.log) };
}
