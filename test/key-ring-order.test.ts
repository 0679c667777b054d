import { generateKeyPairSync } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { connectDb } from '../src/db/client.js';
import { createTokenKeyStore } from '../src/db/token-keys.js';
import { createKeyRing, JWKS_MAX_AGE_S, SIGNING_DELAY_MS } from '../src/tokens/key-ring.js';
import { manualClock } from '../src/kernel/clock.js';
import { testDb } from './support/db.js';

/**
 * Which token key signs when rotations race: the key in use is the one no rotation retired. Two
 * rotations at once (two daemons, or an operator's retry) had the key whose transaction began
 * first but took the lock second retired and sorted newest (a key was stamped when its transaction
 * began): every daemon signed with it, and its tokens failed checks once the retired key left the
 * JWKS a day later (13 of 40 pairs in a review's run).
 */
const db = await testDb();
// Another daemon's own pool.
const other = connectDb(db.url, { max: 2 });
afterAll(() => other.close());

describe('token keys rotated at once', () => {
  it('leave the newest key the one in use, and it is the one that signs', async () => {
    const a = createTokenKeyStore(db.sql);
    const b = createTokenKeyStore(other.sql);
    const ring = createKeyRing(a);
    await ring.start();
    const newKey = (n: string) => {
      const { publicKey, privateKey } = generateKeyPairSync('ed25519');
      const kid = `k-${n}-${Math.random().toString(36).slice(2)}`;
      return { kid, alg: 'EdDSA', publicJwk: { ...publicKey.export({ format: 'jwk' }), kid }, privateJwk: { ...privateKey.export({ format: 'jwk' }), kid } };
    };
    const bad: string[] = [];
    for (let i = 0; i < 30; i++) {
      await Promise.all([a.add(newKey('a'), true), b.add(newKey('b'), true)]);
      const [newest] = await db.sql`select kid, retired_at from token_keys order by created_at desc, kid desc limit 1`;
      if (newest.retired_at !== null) bad.push(newest.kid);
    }
    expect(bad).toEqual([]);
    const inUse = await db.sql`select kid from token_keys where retired_at is null`;
    expect(inUse.length).toBe(1);
    await ring.refresh();
    expect(ring.signing().kid).toBe(inUse[0].kid);
  });

  it('never sign with a key a newer one retired, whatever the order of their rows', async () => {
    // Rows as the race above left them before: the newest row retired, the one in use older.
    const store = createTokenKeyStore(db.sql);
    await db.sql`delete from token_keys`;
    const ring = createKeyRing(store);
    await ring.start();
    const inUse = ring.signing().kid;
    const retired = (await ring.rotate()).kid;
    // The rotation's key made older than the one it retired, and that one retired now.
    await db.sql`update token_keys set created_at = now() - interval '1 minute', retired_at = null, signs_from = null where kid = ${retired}`;
    await db.sql`update token_keys set created_at = now(), retired_at = now() - interval '1 second' where kid = ${inUse}`;
    await ring.refresh();
    expect(ring.signing().kid).toBe(retired);
  });

  it('say how long their JWKS may be kept: until a key rotated in after their last read could sign (Postgres away: less and less, then not at all)', async () => {
    const clock = manualClock(Date.now());
    const ring = createKeyRing(createTokenKeyStore(db.sql), clock);
    await ring.start();
    expect(ring.jwksMaxAgeS()).toBe(JWKS_MAX_AGE_S);
    const readAt = clock.now();
    // Read 9 s ago, then cut off: a key rotated in now signs 64 s from now (SIGNING_DELAY_MS),
    // and a copy kept the full minute from now would still be in use then — not so (a review:
    // the full minute was served for 10 s after the last read).
    clock.advance(9_000);
    const maxAge = ring.jwksMaxAgeS();
    // (A key rotated in just after the read signs at readAt + SIGNING_DELAY_MS.)
    expect(clock.now() + maxAge * 1000).toBeLessThan(readAt + SIGNING_DELAY_MS);
    expect(maxAge).toBe(Math.floor(SIGNING_DELAY_MS / 1000) - 9 - 1);
    clock.advance(SIGNING_DELAY_MS);
    expect(ring.jwksMaxAgeS()).toBe(0);
    await ring.refresh();
    expect(ring.jwksMaxAgeS()).toBe(JWKS_MAX_AGE_S);
  });
});
