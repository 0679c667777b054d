import { createHmac, timingSafeEqual } from 'node:crypto';
import { recentMap } from '../kernel/recent-map.js';

/**
 * A ticket id is `<base64url(itemId)>.<seq base36>.<tag>`, where tag is 128 bits of MAC under the
 * item secret (256 random bits made when the item is first created, kept in its Postgres row and
 * reused when the item is made again after a Redis loss), in two halves:
 *
 * - 64 bits of HMAC-SHA256(secret, "s" ‖ seq): checked before anything is read, so a forged or
 *   mistyped id costs no Redis call;
 * - 64 bits of HMAC-SHA256(secret, "u" ‖ seq ‖ joinedAt ‖ userId): checked against the ticket's
 *   record once it is read, so an id names one user's ticket, never just a seq. A Redis rollback
 *   (AOF losing its last second, a restored snapshot, a lagging replica promoted) rewinds the seq
 *   counter and hands the same seq to the next joiner; the binding half makes that joiner's id
 *   differ from the lost one's, and the lost id answers 404 (or its own end, from Postgres by its
 *   ref: lost-tickets.ts) instead of naming someone else's ticket.
 *
 * It holds no ':' and is never all digits, so it is a valid BullMQ jobId.
 */
export interface ParsedTicketId {
  itemId: string;
  seq: number;
  tag: string;
}

/** What the binding half of the tag covers: the record's join time (ms after the item's epoch) and user. */
export interface TicketBinding {
  joinedRel: number;
  userId: string;
}

const mac = (secret: string, msg: string) => createHmac('sha256', secret).update(msg).digest().subarray(0, 8);

const seqHalf = (secret: string, seq: number) => mac(secret, `s${seq}`);
const bindHalf = (secret: string, seq: number, b: TicketBinding) => mac(secret, `u${seq}|${b.joinedRel}|${b.userId}`);

/**
 * Ids made lately (a pure function of its arguments, so this is only a cache): a ticket's id is
 * made at its join, again at its admission and again by the outcome ledger, and its two MACs
 * (~2.7 µs each, native) were ~10% of the daemon's CPU per ticket sold (accepted-joins bench).
 * 20,000 entries in two generations: a few MB.
 */
const made = recentMap<string, { secret: string; id: string }>(20_000);

export function makeTicketId(itemId: string, seq: number, secret: string, binding: TicketBinding): string {
  const key = `${seq}|${binding.joinedRel}|${itemId}|${binding.userId}`;
  const hit = made.get(key);
  if (hit?.secret === secret) return hit.id;
  const tag = Buffer.concat([seqHalf(secret, seq), bindHalf(secret, seq, binding)]).toString('base64url');
  const id = `${Buffer.from(itemId).toString('base64url')}.${seq.toString(36)}.${tag}`;
  made.set(key, { secret, id });
  return id;
}

const shape = /^([A-Za-z0-9_-]{1,172})\.([0-9a-z]{1,11})\.([A-Za-z0-9_-]{22})$/;

export function parseTicketId(id: string): ParsedTicketId | null {
  const m = shape.exec(id);
  if (!m) return null;
  const seq = parseInt(m[2], 36);
  if (!Number.isSafeInteger(seq) || seq < 1) return null;
  const itemId = Buffer.from(m[1], 'base64url').toString('utf8');
  if (!/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/.test(itemId)) return null;
  // Only the spelling makeTicketId makes: a seq with leading zeros, or base64url whose last
  // character's unused bits are set, decodes to the same ticket and passes both MACs — one ticket
  // had thousands of ids, each its own admission token (jti) that a revocation did not reach.
  if (seq.toString(36) !== m[2] || Buffer.from(itemId).toString('base64url') !== m[1] || Buffer.from(m[3], 'base64url').toString('base64url') !== m[3]) return null;
  return { itemId, seq, tag: m[3] };
}

const tagBytes = (parsed: ParsedTicketId) => Buffer.from(parsed.tag, 'base64url');

/** The first half: the id was made by a daemon that knows the item's secret, for this seq. */
export function verifySeq(parsed: ParsedTicketId, secret: string): boolean {
  const got = tagBytes(parsed);
  return got.length === 16 && timingSafeEqual(got.subarray(0, 8), seqHalf(secret, parsed.seq));
}

/** The second half: the id was made for the ticket whose record this is. */
export function verifyBinding(parsed: ParsedTicketId, secret: string, binding: TicketBinding): boolean {
  const got = tagBytes(parsed);
  return got.length === 16 && timingSafeEqual(got.subarray(8), bindHalf(secret, parsed.seq, binding));
}
