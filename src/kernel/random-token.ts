import { randomFillSync } from 'node:crypto';

/**
 * `bytes` random bytes as base64url, drawn from a pool the system's CSPRNG refills 4 KiB at a
 * time: each lease prefix (one per admission call) cost a call into the crypto binding of its
 * own, 2% of the daemon's CPU during a sale over 200 items. The same source as randomBytes.
 */
const pool = Buffer.alloc(4096);
let at = pool.length;

export function randomToken(bytes: number): string {
  if (bytes > pool.length) throw new RangeError('randomToken: too many bytes');
  if (at + bytes > pool.length) {
    randomFillSync(pool);
    at = 0;
  }
  const out = pool.toString('base64url', at, at + bytes);
  at += bytes; // never handed out twice: the next refill overwrites the whole pool
  return out;
}
