import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Invites and proof-of-work challenges: `<base64url(JSON)>.<base64url(128-bit HMAC)>`, signed
 * with the item's secret (256 random bits, the same key that signs ticket ids, under a different
 * label), so every daemon can check what any daemon issued. The secret is kept in Postgres with
 * the item (drizzle/0016) and outlives Redis's data: an item restored after a flush, or made again
 * after retention removed it, keeps it, so an invite issued before still verifies until it expires
 * (up to 7 days). Re-creating an item does not void its invites. What keeps an invite single-use
 * across such losses is its use, recorded in Postgres (access/invite-uses.ts, drizzle/0020).
 *
 *   invite    { i: itemId, u: userId, e: expiry ms, n: nonce }
 *   challenge { i: itemId, e: expiry ms, n: nonce, d: difficulty }
 */
export interface InviteClaims {
  i: string;
  u: string;
  e: number;
  n: string;
  /** The name of the key that issued it (absent in invites of earlier versions): the join's source. */
  k?: string;
}
export interface ChallengeClaims {
  i: string;
  e: number;
  n: string;
  d: number;
}

const b64 = (b: Buffer | string) => Buffer.from(b).toString('base64url');
const mac = (secret: string, label: string, body: string) => createHmac('sha256', secret).update(`${label}.${body}`).digest().subarray(0, 16);

export function sign(secret: string, label: 'invite' | 'challenge', claims: object): string {
  const body = b64(JSON.stringify(claims));
  return `${body}.${b64(mac(secret, label, body))}`;
}

/** The claims a token carries, unverified (to find the item whose secret checks it); null if not of our shape. */
export function peek<T>(token: string): T | null {
  if (token.length > 2048) return null;
  const dot = token.indexOf('.');
  if (dot <= 0) return null;
  try {
    const v = JSON.parse(Buffer.from(token.slice(0, dot), 'base64url').toString('utf8'));
    return v && typeof v === 'object' ? (v as T) : null;
  } catch {
    return null;
  }
}

export function verify(secret: string, label: 'invite' | 'challenge', token: string): boolean {
  const dot = token.indexOf('.');
  if (dot <= 0) return false;
  const given = Buffer.from(token.slice(dot + 1), 'base64url');
  const want = mac(secret, label, token.slice(0, dot));
  // Only the spelling sign() makes: Node's decoder skips what is not base64url and padding, so
  // `…!!` and `…==` after a MAC verified as the token itself (a review; its use stayed single, keyed by the nonce).
  if (given.toString('base64url') !== token.slice(dot + 1)) return false;
  return given.length === want.length && timingSafeEqual(given, want);
}

export const nonce = () => randomBytes(12).toString('base64url');

/** Whether SHA-256(challenge ‖ nonce) starts with `difficulty` zero bits. */
export function solves(challenge: string, powNonce: string, difficulty: number): boolean {
  const h = createHash('sha256').update(challenge + powNonce).digest();
  let bits = difficulty;
  for (const byte of h) {
    if (bits <= 0) return true;
    if (bits >= 8) {
      if (byte !== 0) return false;
      bits -= 8;
    } else return byte >> (8 - bits) === 0;
  }
  return true;
}
