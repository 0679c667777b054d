import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * A ticket id is `<base64url(itemId)>.<seq base36>.<tag>`, where tag is the first 128 bits of
 * HMAC-SHA256(item secret, seq). The item secret is 256 random bits made when the item is created,
 * so an id is a bearer capability nobody can guess, and a status read finds the item and the
 * ticket without any index. It holds no ':' and is never all digits, so it is a valid BullMQ jobId.
 */
export interface ParsedTicketId {
  itemId: string;
  seq: number;
  tag: string;
}

const tagOf = (secret: string, seq: number) =>
  createHmac('sha256', secret).update(String(seq)).digest().subarray(0, 16).toString('base64url');

export function makeTicketId(itemId: string, seq: number, secret: string): string {
  return `${Buffer.from(itemId).toString('base64url')}.${seq.toString(36)}.${tagOf(secret, seq)}`;
}

const shape = /^([A-Za-z0-9_-]{1,172})\.([0-9a-z]{1,11})\.([A-Za-z0-9_-]{22})$/;

export function parseTicketId(id: string): ParsedTicketId | null {
  const m = shape.exec(id);
  if (!m) return null;
  const seq = parseInt(m[2], 36);
  if (!Number.isSafeInteger(seq) || seq < 1) return null;
  const itemId = Buffer.from(m[1], 'base64url').toString('utf8');
  if (!/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/.test(itemId)) return null;
  return { itemId, seq, tag: m[3] };
}

export function verifyTag(parsed: ParsedTicketId, secret: string): boolean {
  const want = Buffer.from(tagOf(secret, parsed.seq));
  const got = Buffer.from(parsed.tag);
  return want.length === got.length && timingSafeEqual(want, got);
}
