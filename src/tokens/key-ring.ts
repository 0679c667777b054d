import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { importJWK, type CryptoKey } from 'jose';
import type { TokenKeyRow, TokenKeyStore } from '../db/token-keys.js';

/** The longest a token may live (tokenTtlMs's ceiling): a retired key is kept this long, plus slack. */
export const MAX_TOKEN_TTL_MS = 24 * 3600 * 1000;
/** How often every daemon reloads the keys from Postgres (a rotation on one reaches the others). */
export const KEY_REFRESH_MS = 2000;
const KEEP_RETIRED_MS = MAX_TOKEN_TTL_MS + 10 * KEY_REFRESH_MS;

interface LoadedKey {
  kid: string;
  publicJwk: Record<string, unknown>;
  sign: CryptoKey;
  verify: CryptoKey;
}

/**
 * The signing keys as this daemon knows them: the newest unretired key signs; every key in use or
 * retired within the longest token lifetime verifies, and is listed in the JWKS. A token signed
 * just before a rotation by a daemon that had not reloaded yet expires within MAX_TOKEN_TTL_MS of
 * its signing, so KEEP_RETIRED_MS (that plus reload slack) covers every token an old key signed.
 */
export function createKeyRing(store: TokenKeyStore) {
  let keys: LoadedKey[] = [];
  let lastLoad = 0;
  let loading: Promise<void> | null = null;

  async function load(rows: TokenKeyRow[]) {
    const next: LoadedKey[] = [];
    for (const r of rows) {
      const known = keys.find((k) => k.kid === r.kid);
      if (known) next.push(known);
      else
        next.push({
          kid: r.kid,
          publicJwk: r.publicJwk,
          sign: (await importJWK({ ...r.privateJwk, alg: 'EdDSA' }, 'EdDSA')) as CryptoKey,
          verify: (await importJWK({ ...r.publicJwk, alg: 'EdDSA' }, 'EdDSA')) as CryptoKey,
        });
    }
    keys = next;
    lastLoad = Date.now();
  }

  const refresh = () => (loading ??= store.live(KEEP_RETIRED_MS).then(load).finally(() => (loading = null)));

  function newKey() {
    const { publicKey, privateKey } = generateKeyPairSync('ed25519');
    const kid = randomBytes(12).toString('base64url');
    const publicJwk = { ...publicKey.export({ format: 'jwk' }), kid, alg: 'EdDSA', use: 'sig' };
    return { kid, alg: 'EdDSA', publicJwk, privateJwk: { ...privateKey.export({ format: 'jwk' }), kid } };
  }

  return {
    /** Loads the keys, making the first one if Postgres has none in use. */
    async start() {
      await store.add(newKey(), false);
      await refresh();
    },
    refresh,
    /** Refreshes at most once a second: for a token naming a kid this daemon has not seen. */
    async refreshIfStale() {
      if (Date.now() - lastLoad > 1000) await refresh();
    },
    async rotate(): Promise<string> {
      const kid = await store.add(newKey(), true);
      await refresh();
      return kid;
    },
    signing(): LoadedKey {
      if (!keys.length) throw new Error('no token signing key loaded');
      return keys[0];
    },
    byKid: (kid: string) => keys.find((k) => k.kid === kid) ?? null,
    jwks: () => ({ keys: keys.map((k) => k.publicJwk) }),
  };
}

export type KeyRing = ReturnType<typeof createKeyRing>;
