import type { RedisLike } from '../redis/client.js';
import { itemKeys } from '../redis/keys.js';

/**
 * Single use of invites and proof-of-work challenges, shared by every daemon: an invite's nonce
 * maps to the ticket its first use made; a challenge's nonce is taken by one invite. The same
 * invite may present its challenge again: a join that took the challenge and then failed (503
 * while Redis was slow, say) is retried by the page with the solution it already has, and must
 * not be sent back to solve another puzzle for a failure that was ours.
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
    /** Takes a challenge for an invite (by its nonce); false if another invite took it before. */
    async takeChallenge(itemId: string, nonce: string, inviteNonce: string, ttlMs: number): Promise<boolean> {
      const key = itemKeys(prefix, itemId).challenge(nonce);
      if ((await redis.set(key, inviteNonce, 'PX', Math.max(1000, Math.ceil(ttlMs)), 'NX')) === 'OK') return true;
      return (await redis.get(key)) === inviteNonce;
    },
  };
}

export type InviteUses = ReturnType<typeof createInviteUses>;
