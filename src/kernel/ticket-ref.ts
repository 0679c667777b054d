import { createHash } from 'node:crypto';

/**
 * A ticket's public reference: base64url(SHA-256(ticketId)). It names a ticket wherever the id
 * itself must not go (Postgres rows, logs, a downstream's idempotency key): holding the id is what
 * entitles a caller to read or cancel the ticket, and the ref cannot be turned back into it.
 */
export function ticketRef(ticketId: string): string {
  return createHash('sha256').update(ticketId).digest('base64url');
}
