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
  /** When it starts signing; null: at once. */
  signsFrom: Date | null;
}

const toRow = (r: Record<string, unknown>): TokenKeyRow => ({
  kid: r.kid as string,
  alg: r.alg as string,
  privateJwk: r.private_jwk as Record<string, unknown>,
  publicJwk: r.public_jwk as Record<string, unknown>,
  createdAt: new Date(r.created_at as string),
  retiredAt: r.retired_at ? new Date(r.retired_at as string) : null,
  signsFrom: r.signs_from ? new Date(r.signs_from as string) : null,
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
     * Adds a key. `rotate`: it signs from `signsFrom` (null: at once), when every other key in use
     * retires; otherwise only if no key is in use (the first daemon to start makes the key; the
     * advisory lock keeps two starts from making two). Returns the kid of the key added, or of the
     * one in use that made adding none.
     */
    async add(key: { kid: string; alg: string; privateJwk: Record<string, unknown>; publicJwk: Record<string, unknown> }, rotate: boolean, signsFrom: Date | null = null): Promise<string> {
      return begin(sql, async (tx) => {
        await tx`select pg_advisory_xact_lock(hashtext('floodgate_token_keys'))`;
        if (!rotate) {
          const [cur] = await tx`select kid from token_keys where retired_at is null order by created_at desc, kid desc limit 1`;
          if (cur) return cur.kid as string;
        }
        const from = signsFrom?.toISOString() ?? null;
        await tx`update token_keys set retired_at = coalesce(${from}::timestamptz, now()) where retired_at is null`;
        // Made now, under the lock, not when its transaction began (created_at's default): the
        // newest key is the one in use. Two rotations at once had the one that began first but
        // took the lock second retired and sorted first: it signed, and its tokens failed checks
        // once the retired key left the JWKS a day later (a review's find: 13 of 40 pairs).
        await tx`insert into token_keys (kid, alg, private_jwk, public_jwk, signs_from, created_at)
          values (${key.kid}, ${key.alg}, ${JSON.stringify(key.privateJwk)}::jsonb, ${JSON.stringify(key.publicJwk)}::jsonb, ${from}::timestamptz, clock_timestamp())`;
        return key.kid;
      }) as Promise<string>;
    },
    /**
     * Keeps a revocation until `expiresAtMs` at least: a repeat keeps the later expiry (a ticket's
     * later token expires later than the one revoked first). A row made longer is written again
     * (`revoked_at` now), so the daemons' next read of what changed since takes its new expiry.
     */
    async revoke(jti: string, expiresAtMs: number): Promise<void> {
      await sql`insert into revoked_tokens (jti, expires_at) values (${jti}, ${new Date(expiresAtMs).toISOString()}::timestamptz)
        on conflict (jti) do update set expires_at = excluded.expires_at, revoked_at = now() where revoked_tokens.expires_at < excluded.expires_at`;
    },
    /**
     * Revocations of tokens not expired yet, made at or after `since` (Postgres's clock; all when
     * null), with Postgres's time now to ask from next; the expired rows are deleted.
     */
    async revokedSince(since: Date | null): Promise<{ rows: { jti: string; expiresAtMs: number }[]; now: Date }> {
      await sql`delete from revoked_tokens where expires_at < now()`;
      const from = since?.toISOString() ?? null;
      // Times as epoch milliseconds: the daemon's connection reads timestamps as text.
      const rows = await sql<{ jti: string; exp_ms: string; now_ms: string }[]>`select jti,
          (extract(epoch from expires_at) * 1000)::bigint::text as exp_ms, (extract(epoch from now()) * 1000)::bigint::text as now_ms
        from revoked_tokens where expires_at >= now() and (${from}::timestamptz is null or revoked_at >= ${from}::timestamptz)`;
      const [{ now_ms }] = rows.length ? rows : await sql<{ now_ms: string }[]>`select (extract(epoch from now()) * 1000)::bigint::text as now_ms`;
      return { rows: rows.map((r) => ({ jti: r.jti, expiresAtMs: Number(r.exp_ms) })), now: new Date(Number(now_ms)) };
    },
  };
}

export type TokenKeyStore = ReturnType<typeof createTokenKeyStore>;
