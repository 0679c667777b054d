import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import type { InviteUseRows } from '../db/invite-uses.js';
import type { RedisLike } from '../redis/client.js';
import { itemKeys } from '../redis/keys.js';

/** How long an invite's use is kept after the invite expires (a repeat just after still answers its ticket). */
export const USE_KEPT_AFTER_EXPIRY_MS = 60_000;

/**
 * A ticket id is a bearer capability Postgres never holds (it keeps refs): the row holds it sealed
 * (AES-256-GCM) under a key derived from the invite's MAC (its bytes: another spelling of the
 * same base64url verifies too), which only the invite's holder has.
 */
const useKey = (invite: string) => createHmac('sha256', 'floodgate invite use').update(Buffer.from(invite.slice(invite.indexOf('.') + 1), 'base64url')).digest();
function seal(invite: string, ticketId: string): string {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', useKey(invite), iv);
  const body = Buffer.concat([c.update(ticketId, 'utf8'), c.final()]);
  return Buffer.concat([iv, c.getAuthTag(), body]).toString('base64url');
}
function unseal(invite: string, sealed: string): string {
  const b = Buffer.from(sealed, 'base64url');
  const d = createDecipheriv('aes-256-gcm', useKey(invite), b.subarray(0, 12));
  d.setAuthTag(b.subarray(12, 28));
  return Buffer.concat([d.update(b.subarray(28)), d.final()]).toString('utf8');
}

/**
 * Single use of invites and proof-of-work challenges, shared by every daemon: an invite's nonce
 * maps to the ticket its first use made; a challenge's nonce is taken by one invite. The same
 * invite may present its challenge again: a join that took the challenge and then failed (503
 * while Redis was slow, say) is retried by the page with the solution it already has, and must
 * not be sent back to solve another puzzle for a failure that was ours.
 *
 * An invite's use is kept in Postgres (`invite_uses`, written before the first use is answered)
 * and copied into Redis under the item, which answers repeats without a query. Redis alone did
 * not keep it: the item's secret outlives Redis's data (drizzle/0016), so after retention removed
 * an ended item's keys and the item was made again, or after a flush restored the item from
 * Postgres, a used invite still verified and its use was gone, and it made a second ticket. A use
 * Redis does not hold is looked up in Postgres (one primary-key read: every first use, and a
 * repeat after such a loss, which puts the copy back).
 */
export function createInviteUses(redis: RedisLike, prefix: string, rows: InviteUseRows) {
  const keptUntil = (expiresAtMs: number) => expiresAtMs + USE_KEPT_AFTER_EXPIRY_MS;
  const ttl = (expiresAtMs: number, nowMs: number) => Math.max(1000, Math.ceil(keptUntil(expiresAtMs) - nowMs));
  return {
    /** The ticket an invite's earlier use made, if any: Redis's copy, else Postgres's row (copied back into Redis). `invite`: the verified invite (its MAC unseals the row). */
    async ticketOf(invite: string, itemId: string, nonce: string, expiresAtMs: number, nowMs: number): Promise<string | null> {
      const key = itemKeys(prefix, itemId).invite(nonce);
      const held = await redis.get(key);
      if (held || keptUntil(expiresAtMs) <= nowMs) return held;
      const sealed = await rows.ticketOf(itemId, nonce, nowMs);
      if (!sealed) return null;
      const kept = unseal(invite, sealed);
      await redis.set(key, kept, 'PX', ttl(expiresAtMs, nowMs), 'NX');
      return kept;
    },
    /**
     * Records the ticket of an invite's first use, in Postgres first (a use answered is one no loss
     * of Redis's data forgets), then in Redis; if another use got there first, returns that one's
     * ticket.
     */
    async claim(invite: string, itemId: string, nonce: string, ticketId: string, expiresAtMs: number, nowMs: number): Promise<string> {
      const first = unseal(invite, await rows.claim(itemId, nonce, seal(invite, ticketId), keptUntil(expiresAtMs)));
      await redis.set(itemKeys(prefix, itemId).invite(nonce), first, 'PX', ttl(expiresAtMs, nowMs), 'NX');
      return first;
    },
    /** Deletes the uses of invites expired (the retention loop's round). */
    purge: (nowMs: number) => rows.purge(nowMs),
    /** Takes a challenge for an invite (by its nonce); false if another invite took it before. */
    async takeChallenge(itemId: string, nonce: string, inviteNonce: string, ttlMs: number): Promise<boolean> {
      const key = itemKeys(prefix, itemId).challenge(nonce);
      if ((await redis.set(key, inviteNonce, 'PX', Math.max(1000, Math.ceil(ttlMs)), 'NX')) === 'OK') return true;
      return (await redis.get(key)) === inviteNonce;
    },
  };
}

export type InviteUses = ReturnType<typeof createInviteUses>;
