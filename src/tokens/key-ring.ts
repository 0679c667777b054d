import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { importJWK, type CryptoKey } from 'jose';
import type { TokenKeyRow, TokenKeyStore } from '../db/token-keys.js';
import { systemClock, type Clock } from '../kernel/clock.js';

/** The longest a token may live (tokenTtlMs's ceiling): a retired key is kept this long, plus slack. */
export const MAX_TOKEN_TTL_MS = 24 * 3600 * 1000;
/** How often every daemon reloads the keys from Postgres (a rotation on one reaches the others). */
export const KEY_REFRESH_MS = 2000;
const KEEP_RETIRED_MS = MAX_TOKEN_TTL_MS + 10 * KEY_REFRESH_MS;
/** The JWKS's Cache-Control max-age (seconds): how long a shop may verify with a copy it fetched. */
export const JWKS_MAX_AGE_S = 60;
/**
 * A rotated-in key signs this long after the rotation: every daemon lists it in the JWKS within
 * one reload (KEY_REFRESH_MS), and a copy fetched before that is stale JWKS_MAX_AGE_S later, so
 * no shop verifying offline with a JWKS it may still use meets a token of a key it lacks.
 */
export const SIGNING_DELAY_MS = JWKS_MAX_AGE_S * 1000 + 2 * KEY_REFRESH_MS;
/** Loads forced by an unknown kid start at most this often (a flood of forged kids is ~5 reads a second). */
export const FORCED_LOAD_GAP_MS = 200;

interface LoadedKey {
  kid: string;
  publicJwk: Record<string, unknown>;
  sign: CryptoKey;
  verify: CryptoKey;
  /** Epoch ms (the daemon's clock) from which it signs; 0: at once. */
  signsFrom: number;
  /** Epoch ms from which it no longer signs (a newer key took over); null: in use. */
  retiredAt: number | null;
}

/** Monotonic ms: when loads started, to tell one begun after a request from one begun before. */
export const monotonicNow = () => performance.now();

/**
 * The signing keys as this daemon knows them: the newest key whose signsFrom has come signs
 * (a rotated-in key is published SIGNING_DELAY_MS before it signs; the key before it signs until
 * then); every key in use, waiting to sign, or retired within the longest token lifetime verifies
 * and is listed in the JWKS. A token signed just before a rotation's key took over expires within
 * MAX_TOKEN_TTL_MS of its signing, so KEEP_RETIRED_MS (that plus reload slack) covers every token
 * an old key signed. `clock` is the daemon's (Redis's time): every daemon switches at one instant.
 */
export function createKeyRing(store: TokenKeyStore, clock: Clock = systemClock) {
  let keys: LoadedKey[] = [];
  /** When the read of the keys last loaded began (the daemon's clock); -Infinity: never. */
  let loadedAt = -Infinity;
  /** The load in flight and when it began (monotonic). */
  let current: { startedAt: number; done: Promise<void> } | null = null;
  /** A load queued to start after `current` (and the rate gap), shared by every request waiting for it. */
  let next: Promise<void> | null = null;
  let lastStart = -Infinity;

  async function load(rows: TokenKeyRow[], readAt: number) {
    const next: LoadedKey[] = [];
    for (const r of rows) {
      const known = keys.find((k) => k.kid === r.kid);
      const signsFrom = r.signsFrom?.getTime() ?? 0;
      const retiredAt = r.retiredAt?.getTime() ?? null;
      if (known) next.push({ ...known, signsFrom, retiredAt });
      else
        next.push({
          kid: r.kid,
          publicJwk: r.publicJwk,
          sign: (await importJWK({ ...r.privateJwk, alg: 'EdDSA' }, 'EdDSA')) as CryptoKey,
          verify: (await importJWK({ ...r.publicJwk, alg: 'EdDSA' }, 'EdDSA')) as CryptoKey,
          signsFrom,
          retiredAt,
        });
    }
    keys = next;
    loadedAt = Math.max(loadedAt, readAt);
  }

  function startLoad(): Promise<void> {
    const startedAt = monotonicNow();
    lastStart = startedAt;
    const readAt = clock.now();
    const done: Promise<void> = store
      .live(KEEP_RETIRED_MS)
      .then((rows) => load(rows, readAt))
      .finally(() => {
        if (current?.done === done) current = null;
      });
    current = { startedAt, done };
    return done;
  }

  /** The periodic reload: a load in flight will do. */
  const refresh = () => current?.done ?? startLoad();

  /**
   * A load that began at or after `since` (monotonic ms): one in flight that began since, else one
   * started after it (an older read may predate a rotation the caller knows of). Concurrent callers
   * share it; it starts no sooner than FORCED_LOAD_GAP_MS after the last load began.
   */
  function loadSince(since: number): Promise<void> {
    if (current && current.startedAt >= since) return current.done;
    return (next ??= (async () => {
      await Promise.resolve(); // `next` is this promise before the finally below can clear it
      try {
        if (current) await current.done.catch(() => undefined);
        const wait = lastStart + FORCED_LOAD_GAP_MS - monotonicNow();
        if (wait > 0) await sleep(wait);
      } finally {
        next = null;
      }
      // Anything begun now began after every caller waiting on this one asked.
      return current ? current.done : startLoad();
    })());
  }

  function newKey() {
    const { publicKey, privateKey } = generateKeyPairSync('ed25519');
    const kid = randomBytes(12).toString('base64url');
    const publicJwk = { ...publicKey.export({ format: 'jwk' }), kid, alg: 'EdDSA', use: 'sig' };
    return { kid, alg: 'EdDSA', publicJwk, privateJwk: { ...privateKey.export({ format: 'jwk' }), kid } };
  }

  const byKid = (kid: string) => keys.find((k) => k.kid === kid) ?? null;

  return {
    /** Loads the keys, making the first one (it signs at once) if Postgres has none in use. */
    async start() {
      await store.add(newKey(), false);
      await loadSince(monotonicNow());
    },
    refresh,
    /**
     * The key of `kid`; one this daemon does not know is looked for in a load begun at or after
     * `since` (when the request came), so a key another daemon made is found at once.
     */
    async find(kid: string, since: number): Promise<LoadedKey | null> {
      const known = byKid(kid);
      if (known) return known;
      await loadSince(since);
      return byKid(kid);
    },
    /** Makes a new key: listed at once (this daemon's JWKS; the others' within a reload), signing from `signsFrom`. */
    async rotate(): Promise<{ kid: string; signsFrom: Date }> {
      const signsFrom = new Date(clock.now() + SIGNING_DELAY_MS);
      const kid = await store.add(newKey(), true, signsFrom);
      await loadSince(monotonicNow());
      return { kid, signsFrom };
    },
    signing(): LoadedKey {
      if (!keys.length) throw new Error('no token signing key loaded');
      const now = clock.now();
      // The newest key whose time has come and that no newer key retired (keys are newest
      // first); the oldest if none (never so in practice: the key before a rotation's is kept
      // until the new one signs).
      return keys.find((k) => k.signsFrom <= now && (k.retiredAt === null || k.retiredAt > now)) ?? keys[keys.length - 1];
    },
    byKid,
    jwks: () => ({ keys: keys.map((k) => k.publicJwk) }),
    /**
     * How long (s) a shop may keep this daemon's JWKS: until a key rotated in after its last read
     * of the keys (which it does not list) could sign — SIGNING_DELAY_MS after that read began,
     * less a second — and JWKS_MAX_AGE_S at most; 0: not to be kept at all. A daemon cut off from
     * Postgres lacks a key another daemon rotated in. (It was the full minute for 10 s after the
     * last load ended: a copy fetched from a daemon cut off 9 s before a rotation was still in use
     * when the new key signed, 64 s after it — a review.)
     */
    jwksMaxAgeS: () => Math.max(0, Math.min(JWKS_MAX_AGE_S, Math.floor((loadedAt + SIGNING_DELAY_MS - clock.now()) / 1000) - 1)),
  };
}

export type KeyRing = ReturnType<typeof createKeyRing>;
