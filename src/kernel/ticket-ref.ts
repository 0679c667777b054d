import { createHash } from 'node:crypto';

/**
 * A ticket's public reference: base64url(SHA-256(ticketId)), 43 characters. The ticket id is a
 * bearer capability (whoever holds it reads and cancels the ticket); the ref names the same ticket
 * for anyone who must tell tickets apart (a downstream de-duplicating retries, a stored row)
 * without handing them that power: it cannot be turned back into the id, and it is the same on
 * every retry and every daemon.
 */
export function ticketRef(ticketId: string): string {
  return createHash('sha256').update(ticketId).digest('base64url');
}
