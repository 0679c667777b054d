import type { RedisLike } from '../redis/client.js';
import { itemKeys } from '../redis/keys.js';

/**
 * Single use of invites and proof-of-work challenges, shared by every daemon: an invite's nonce
 * maps to the ticket its first use made; a challenge's nonce is taken once.
 */
export function createInviteUses(redis: RedisLike, prefix: string) {
  return {
    /** The ticket an invite's earlier use made, if any. */
    ticketOf: (itemId: string, nonce: string) => redis.get(itemKeys(prefix, itemId).invite(nonce)),
    /** Records the ticket of an invite's first use; if another use got there first, returns that one's ticket. */
    async claim(itemId: string, nonce: string, ticketId: string, ttlMs: number): Promise<string> {
      const key = itemKeys(prefix, itemId).invite(nonce);
      const ok = await redis.set(key, ticketId, 'PX', Math.max(1000, Math.ceil(ttlMs)), 'NX');
      return ok ? ticketId : ((await redis.get(key)) ?? ticketId);
    },
    /** Takes a challenge; false if it was taken before. */
    async takeChallenge(itemId: string, nonce: string, ttlMs: number): Promise<boolean> {
      return (await redis.set(itemKeys(prefix, itemId).challenge(nonce), '1', 'PX', Math.max(1000, Math.ceil(ttlMs)), 'NX')) === 'OK';
    },
  };
}

export type InviteUses = ReturnType<typeof createInviteUses>;
