import type postgres from 'postgres';
import { begin } from './transactions.js';

/** A signing key of admission tokens as Postgres keeps it (private part included: see docs). */
export interface TokenKeyRow {
  kid: string;
  alg: string;
  privateJwk: Record<string, unknown>;
  publicJwk: Record<string, unknown>;
  createdAt: Date;
  retiredAt: Date | null;
}

const toRow = (r: Record<string, unknown>): TokenKeyRow => ({
  kid: r.kid as string,
  alg: r.alg as string,
  privateJwk: r.private_jwk as Record<string, unknown>,
  publicJwk: r.public_jwk as Record<string, unknown>,
  createdAt: new Date(r.created_at as string),
  retiredAt: r.retired_at ? new Date(r.retired_at as string) : null,
});

/** SQL for the token signing keys shared by every daemon. */
export function createTokenKeyStore(sql: postgres.Sql) {
  return {
    /** Keys still in use or retired less than `keepMs` ago, newest first. */
    async live(keepMs: number): Promise<TokenKeyRow[]> {
      const rows = await sql`select * from token_keys where retired_at is null or retired_at > now() - make_interval(secs => ${keepMs / 1000})
        order by created_at desc, kid desc`;
      return rows.map(toRow);
    },
    /**
     * Adds a key. `rotate`: every other key retires now; otherwise only if no key is in use (the
     * first daemon to start makes the key; the advisory lock keeps two starts from making two).
     * Returns the kid that signs from now on.
     */
    async add(key: { kid: string; alg: string; privateJwk: Record<string, unknown>; publicJwk: Record<string, unknown> }, rotate: boolean): Promise<string> {
      return begin(sql, async (tx) => {
        await tx`select pg_advisory_xact_lock(hashtext('floodgate_token_keys'))`;
        if (!rotate) {
          const [cur] = await tx`select kid from token_keys where retired_at is null order by created_at desc, kid desc limit 1`;
          if (cur) return cur.kid as string;
        }
        await tx`update token_keys set retired_at = now() where retired_at is null`;
        await tx`insert into token_keys (kid, alg, private_jwk, public_jwk) values (${key.kid}, ${key.alg}, ${JSON.stringify(key.privateJwk)}::jsonb, ${JSON.stringify(key.publicJwk)}::jsonb)`;
        return key.kid;
      }) as Promise<string>;
    },
  };
}

export type TokenKeyStore = ReturnType<typeof createTokenKeyStore>;
