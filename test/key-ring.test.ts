import { createPublicKey, verify } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';
import { manualClock } from '../src/kernel/clock.js';
import { createLogger } from '../src/kernel/logger.js';
import { createTokenKeyStore } from '../src/db/token-keys.js';
import { createKeyRing, FORCED_LOAD_GAP_MS, JWKS_MAX_AGE_S, KEY_REFRESH_MS, SIGNING_DELAY_MS } from '../src/tokens/key-ring.js';
import { createTokens } from '../src/tokens/tokens.js';
import type { TicketView } from '../src/queue/types.js';

const db = await testDb();
const t = testRedis();
const log = createLogger('silent');
const store = createTokenKeyStore(db.sql);
// One clock for every ring (the daemons keep Redis's time), driven by the test.
const clock = manualClock(Date.now());

const part = (token: string, i: number) => JSON.parse(Buffer.from(token.split('.')[i], 'base64url').toString());
function verifyOffline(token: string, jwks: { keys: Record<string, unknown>[] }) {
  const [h, p, s] = token.split('.');
  const jwk = jwks.keys.find((k) => k.kid === part(token, 0).kid);
  return !!jwk && verify(null, Buffer.from(`${h}.${p}`), createPublicKey({ key: jwk as never, format: 'jwk' }), Buffer.from(s, 'base64url'));
}

/** A token service over a ring, as a daemon has one (one item, `it`, whose tickets are all admitted). */
function tokensOver(keys: ReturnType<typeof createKeyRing>, prefix: string) {
  const item = { snap: { secret: 'item-secret', def: { tokenTtlMs: 600_000 } } };
  const queue = { items: { item: async () => item } } as never;
  const tokens = createTokens({ keys, revocations: store, redis: t.redis, prefix, queue, clock, log, issuer: 'floodgate' });
  let n = 0;
  const issue = async () => {
    const at = new Date(clock.now()).toISOString();
    const view = { ticketId: `t${++n}-${Math.random()}`, itemId: 'it', userId: 'u', state: 'admitted', admittedAt: at, updatedAt: at } as TicketView;
    return (await tokens.withToken(view)).admissionToken as string;
  };
  return { tokens, issue };
}

describe('token key ring', () => {
  it('publishes a rotated-in key at once and signs with it only after the JWKS max-age and a reload; another daemon verifies its tokens at once', async () => {
    expect(SIGNING_DELAY_MS).toBeGreaterThanOrEqual(JWKS_MAX_AGE_S * 1000 + KEY_REFRESH_MS);
    const ringA = createKeyRing(store, clock);
    const ringB = createKeyRing(store, clock);
    await ringA.start();
    await ringB.start();
    const prefix = t.newPrefix();
    const A = tokensOver(ringA, prefix);
    const B = tokensOver(ringB, prefix);
    try {
      const oldKid = ringA.signing().kid;
      expect(ringB.signing().kid).toBe(oldKid);
      const jwksBefore = ringA.jwks();

      const { kid, signsFrom } = await ringA.rotate();
      expect(signsFrom.getTime()).toBe(clock.now() + SIGNING_DELAY_MS);
      // Listed at once on the rotating daemon, the old key too.
      expect(ringA.jwks().keys.map((k) => k.kid)).toEqual(expect.arrayContaining([kid, oldKid]));
      // Tokens issued meanwhile use the old key and verify against the JWKS a shop fetched before the rotation.
      for (const ms of [0, 2000, SIGNING_DELAY_MS - 1]) {
        clock.set(signsFrom.getTime() - SIGNING_DELAY_MS + ms);
        const token = await A.issue();
        expect(part(token, 0).kid).toBe(oldKid);
        expect(verifyOffline(token, jwksBefore)).toBe(true);
        expect((await B.tokens.introspect(token)).active).toBe(true);
      }
      // Its time come: the new key signs, on both daemons, and B (which has not reloaded) verifies A's token at once.
      clock.set(signsFrom.getTime());
      const fresh = await A.issue();
      expect(part(fresh, 0).kid).toBe(kid);
      expect(ringB.byKid(kid)).toBeNull();
      expect((await B.tokens.introspect(fresh)).active).toBe(true);
      expect(part(await B.issue(), 0).kid).toBe(kid);
      // A JWKS fetched from B now has it, the old key still listed for the old tokens.
      expect(ringB.jwks().keys.map((k) => k.kid)).toEqual(expect.arrayContaining([kid, oldKid]));
    } finally {
      await A.tokens.stop();
      await B.tokens.stop();
    }
  });

  it('looks an unknown kid up in a load begun after the request, never in one already running, and bounds the loads a flood of forged kids makes', async () => {
    let reads = 0;
    let hold: Promise<void> | null = null;
    const slow = {
      ...store,
      live: async (keepMs: number) => {
        reads++;
        const rows = await store.live(keepMs);
        if (hold) await hold;
        return rows;
      },
    };
    const ringA = createKeyRing(store, clock);
    const ringB = createKeyRing(slow, clock);
    await ringA.start();
    await ringB.start();
    // B's periodic reload is under way (it read Postgres before the rotation) when A rotates.
    let release!: () => void;
    hold = new Promise((r) => (release = r));
    const stale = ringB.refresh();
    await new Promise((r) => setTimeout(r, 50));
    const { kid } = await ringA.rotate();
    const since = performance.now();
    const found = ringB.find(kid, since);
    release();
    hold = null;
    await stale;
    expect(ringB.byKid(kid)).toBeNull(); // the read begun before the rotation
    expect((await found)?.kid).toBe(kid);

    // A flood of forged kids: every one answered null, Postgres read about once per gap, not once per request.
    const before = reads;
    const started = performance.now();
    const answers: (unknown | null)[] = [];
    while (performance.now() - started < 1000) {
      const batch = await Promise.all(Array.from({ length: 20 }, (_, i) => ringB.find(`forged-${answers.length + i}`, performance.now())));
      answers.push(...batch);
    }
    expect(answers.every((a) => a === null)).toBe(true);
    expect(answers.length).toBeGreaterThan(40);
    expect(reads - before).toBeLessThanOrEqual(Math.ceil(1000 / FORCED_LOAD_GAP_MS) + 2);
  });
});
