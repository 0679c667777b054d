import { createHash, createHmac } from 'node:crypto';

/**
 * The fair draw of a pre-queue (API.md, "Pre-queue and a fair draw at open"), specified so that
 * anyone can recompute it from the published seed and size:
 *
 *   seed      32 bytes, fixed when the pre-queue is defined; `seedHash` = hex(SHA-256(seed)) is
 *             shown from then on, `seed` (64 hex chars) once the draw is done. Unpredictable to
 *             users and made again the same (drawSeedOf) from what Postgres keeps of the item.
 *   N         the number of tickets that joined before opensAt: seqs 1..N (a ticket id's second
 *             dot-separated part is its seq in base 36). Shown as `preQueue.size` after the draw.
 *             Kept in Postgres before the draw is shown (queue/admissions.ts runDraw): a draw made
 *             again after a Redis rollback is over the same N, whatever Redis still holds.
 *   stream    SHA-256(seed ‖ uint64be(0)) ‖ SHA-256(seed ‖ uint64be(1)) ‖ …, read as consecutive
 *             big-endian uint32 words.
 *   shuffle   a = [1, 2, …, N]; for i = N down to 2: take words r until r < 2^32 − (2^32 mod i)
 *             (rejection: no modulo bias), j = r mod i, swap a[i−1] and a[j] (0-based).
 *   result    a[0] is first in line, a[1] second, …; every ticket that joined after opensAt comes
 *             after a[N−1], in join order. Cancelled pre-queue tickets keep their place (skipped);
 *             so do seqs of 1..N that Redis lost in a rollback (holes: no ticket, skipped alike).
 */
export function drawOrder(seedHex: string, n: number): Uint32Array {
  const seed = Buffer.from(seedHex, 'hex');
  const a = new Uint32Array(n);
  for (let i = 0; i < n; i++) a[i] = i + 1;
  let block = Buffer.alloc(0);
  let at = 0;
  let counter = 0n;
  const ctr = Buffer.alloc(8);
  const word = () => {
    if (at + 4 > block.length) {
      ctr.writeBigUInt64BE(counter++);
      block = createHash('sha256').update(seed).update(ctr).digest();
      at = 0;
    }
    const w = block.readUInt32BE(at);
    at += 4;
    return w;
  };
  for (let i = n; i >= 2; i--) {
    const limit = 2 ** 32 - (2 ** 32 % i);
    let r = word();
    while (r >= limit) r = word();
    const j = r % i;
    const t = a[i - 1];
    a[i - 1] = a[j];
    a[j] = t;
  }
  return a;
}

/**
 * A pre-queue's seed: HMAC-SHA256 under the item's ticket-id secret (256 random bits, never shown,
 * kept in the item's row) of its draw time. Made again the same from Postgres's row: an item that
 * Redis lost and a daemon made again had a new random seed, so the seedHash its users were shown
 * changed under them (and after the draw, the revealed seed). The message is not a ticket id's
 * ("s…", "u…"), an invite's ("label.…") nor a token id's ("jti|…"), so it reveals none of them;
 * another draw time (a pre-queue moved before anyone joined, an item made again after retention
 * for another sale) is another seed.
 */
export const drawSeedOf = (secret: string, opensAt: number) => createHmac('sha256', secret).update(`draw|${opensAt}`).digest('hex');

export const seedHashOf = (seedHex: string) => createHash('sha256').update(Buffer.from(seedHex, 'hex')).digest('hex');

/** seq → line index (1-based), the inverse of the order; index 0 unused. */
export function drawPositions(order: Uint32Array): Uint32Array {
  const pos = new Uint32Array(order.length + 1);
  for (let i = 0; i < order.length; i++) pos[order[i]] = i + 1;
  return pos;
}
