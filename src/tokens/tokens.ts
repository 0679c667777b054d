import { createHmac } from 'node:crypto';
import { SignJWT, decodeJwt, decodeProtectedHeader, jwtVerify, type JWTPayload } from 'jose';
import type { RedisLike } from '../redis/client.js';
import type { Clock } from '../kernel/clock.js';
import type { Logger } from '../kernel/logger.js';
import { every } from '../kernel/loop.js';
import { revokedTokensKey } from '../redis/keys.js';
import type { Line } from '../queue/line.js';
import { DEFAULT_TOKEN_TTL_MS, type TicketView } from '../queue/types.js';
import type { TokenKeyStore } from '../db/token-keys.js';
import { KEY_REFRESH_MS, monotonicNow, type KeyRing } from './key-ring.js';

/**
 * Admission tokens (API.md, "Admission tokens"): a compact JWS, EdDSA (Ed25519), for every
 * admitted or succeeded ticket. Claims: iss, sub = userId, aud = itemId, jti, iat, exp, and
 * `result` where the handler gave one (and it can be serialised).
 *
 * Every claim is a function of the ticket: jti = HMAC-SHA256(item secret, "jti|" + ticketId)
 * (22 base64url chars: unique per ticket, yet not the ticket id nor derivable from it without the
 * secret), iat = when it was admitted (admitted) or finished (succeeded), exp = iat + tokenTtlMs.
 * Ed25519 signatures are deterministic, so two daemons with the same key give the same token, and
 * a daemon signs each admission's token once and keeps it (the poll of an admitted ticket reads a map).
 *
 * Revocation: the jti goes into Postgres (`revoked_tokens`) first, then into a Redis sorted set
 * (score = until when it is kept) read by every introspection, so a revocation holds on every
 * daemon at once. Each daemon also holds the revocations Postgres keeps (read at start and every
 * KEY_REFRESH_MS, only those written since the last read): Redis's set alone went with Redis's
 * data, and after a flush, a restart without its AOF or a rollback a revoked token introspected
 * `active` again.
 *
 * A revocation names the admission, not one token: every token a ticket carries has the same jti,
 * and a ticket gets a new one (a later iat, so a later exp) when it succeeds or is admitted again
 * after its lease ran out. So a revocation is kept until the last token of its ticket expires, never
 * only until the presented one does (that token's successor introspected `active` again once the
 * revocation was trimmed): at the revocation, until `now + the token lifetime` (+ slack), which
 * every token the ticket was given so far expires by; and whenever a daemon signs a token for a
 * revoked jti afterwards, the revocation is pushed to that token's exp, in Postgres (the greater
 * expiry wins), in this daemon's map and in Redis (ZADD GT) before the token is shown.
 */
/** Longer tokens are not ours (ours are ~400 bytes with a modest result); refuse before parsing. */
const MAX_TOKEN_CHARS = 8192;
const CACHE_MAX = 100_000;

export interface Introspection {
  active: boolean;
  sub?: string;
  aud?: string;
  jti?: string;
  exp?: number;
  iat?: number;
  iss?: string;
  token_type?: string;
  result?: unknown;
}

/** Revocations are read again this far back from the last read (a slow insert's revoked_at precedes its commit). */
const REVOCATION_OVERLAP_MS = 60_000;
/**
 * Kept this long past `now + lifetime` at a revocation: a token signed while the revocation was
 * being written (after its Postgres row, before its Redis entry: seen by neither) has an iat of at
 * most that moment; and daemons' clocks (Redis's time) differ by up to 100 ms.
 */
const REVOCATION_SLACK_MS = 2000;
/**
 * How long a revocation is kept at least: a week. It reaches the tokens its ticket is given later
 * (extendIfRevoked) only while it is kept; kept only until the revoked token's expiry, a ticket
 * admitted again after that (a worker's retry, a lease run out, a gate closed meanwhile) carried an
 * active token under the revoked jti. Revocations are few; a week outlasts any line's wait but
 * the longest (an item's window may run longer: then an admission after it is not revoked).
 */
const REVOCATION_KEEP_MS = 7 * 24 * 3600_000;

export interface TokensDeps {
  keys: KeyRing;
  revocations: Pick<TokenKeyStore, 'revoke' | 'revokedSince'>;
  redis: RedisLike;
  prefix: string;
  queue: Pick<Line, 'items'>;
  clock: Clock;
  log: Logger;
  issuer: string;
}

export function createTokens(deps: TokensDeps) {
  const { keys, redis, clock } = deps;
  const revoked = revokedTokensKey(deps.prefix);
  const cache = new Map<string, string>();
  /** Revocations Postgres keeps (jti → expiry, ms), as of the last read. */
  const durable = new Map<string, number>();
  let readFrom: Date | null = null;
  /** Extensions Postgres did not take yet (it was away): written again by the loop. */
  const unwritten = new Map<string, number>();
  const keep = (jti: string, untilMs: number) => durable.set(jti, Math.max(durable.get(jti) ?? 0, untilMs));
  /**
   * Redis connections made anew (a restart, which may be a rollback: revocations it lost), and the
   * count as of the start of the last read from Postgres that completed: an introspection about
   * to answer `active` after a reconnect first reads Postgres's revocations again. Between a
   * revoke on another daemon and this daemon's next read (2 s, longer with Postgres slow) a Redis
   * rolled back to before it had this daemon answer `active` for the revoked token (a review).
   */
  let reconnects = 0;
  let readAsOf = 0;
  let rereading: Promise<void> | null = null;
  deps.redis.on('ready', () => void reconnects++);
  async function readRevocations() {
    const asOf = reconnects;
    const { rows, now } = await deps.revocations.revokedSince(readFrom);
    for (const r of rows) keep(r.jti, r.expiresAtMs);
    for (const [jti, exp] of durable) if (exp < clock.now()) durable.delete(jti);
    readFrom = new Date(now.getTime() - REVOCATION_OVERLAP_MS);
    readAsOf = Math.max(readAsOf, asOf);
  }
  // Read before the first introspection is answered; a Postgres away at start leaves it to the loop.
  const firstRead = readRevocations().catch((err) => deps.log.warn({ err: String(err) }, 'revoked tokens not read from postgres yet'));

  async function sign(view: TicketView): Promise<{ token: string; jti: string; expMs: number } | null> {
    const item = await deps.queue.items.item(view.itemId);
    if (!item) return null;
    const at = view.state === 'admitted' ? view.admittedAt : view.updatedAt;
    const atMs = Date.parse(at ?? view.updatedAt);
    const iat = Math.floor(atMs / 1000);
    // A whole tokenTtlMs from the admission at least: counted from the second it was floored to
    // (iat + the ttl in seconds), a 1 s token of an admission at x.95 s expired 50 ms after it.
    const expSec = Math.ceil((atMs + (item.snap.def.tokenTtlMs ?? DEFAULT_TOKEN_TTL_MS)) / 1000);
    const key = keys.signing();
    const jti = jtiOf(item.snap.secret, view.ticketId);
    const claims: JWTPayload = { jti };
    const signed = async (c: JWTPayload) =>
      new SignJWT(c)
        .setProtectedHeader({ alg: 'EdDSA', kid: key.kid, typ: 'JWT' })
        .setIssuer(deps.issuer)
        .setSubject(view.userId)
        .setAudience(view.itemId)
        .setIssuedAt(iat)
        .setExpirationTime(expSec)
        .sign(key.sign);
    const result = view.outcome?.result;
    const out = (token: string) => ({ token, jti, expMs: expSec * 1000 });
    if (result === undefined) return out(await signed(claims));
    // A result the claims cannot be serialised with (nested a few thousand levels deep: jose's
    // JSON.stringify overflows the stack) must not cost the holder the token, nor the ticket its
    // view (a throw here is a 500 on every poll): the token goes without it. Any other fault
    // throws again from the second signing. A result that makes the token longer than ours may be
    // (an outside worker's few kilobytes of order details) goes too: introspection and verification
    // refuse such a token unread, so the shop was told "not active" of a user the daemon let in.
    // The result stays on the ticket's view.
    const full = await signed({ ...claims, result }).catch(() => null);
    return out(full !== null && full.length <= MAX_TOKEN_CHARS ? full : await signed(claims));
  }

  /**
   * Keeps a revocation of `jti` until `untilMs` at least: Postgres, this daemon, Redis. Postgres
   * refusing it throws and leaves nothing behind (a revoke answered 503 said nothing was revoked,
   * and the loop wrote it two seconds later); an extension keeps what failed for the loop itself.
   */
  async function keepRevoked(jti: string, untilMs: number) {
    await deps.revocations.revoke(jti, untilMs);
    if ((unwritten.get(jti) ?? 0) <= untilMs) unwritten.delete(jti);
    keep(jti, untilMs);
    await redis.zadd(revoked, 'GT', untilMs, jti);
  }

  /**
   * A token just signed for a ticket whose admission was revoked: the revocation is pushed to its
   * exp before anyone is shown it. Postgres away: this daemon and Redis keep it, the loop writes it
   * to Postgres later (the token is shown anyway: the revocation holds everywhere meanwhile).
   */
  async function extendIfRevoked(jti: string, expMs: number) {
    let until = durable.get(jti);
    try {
      const inRedis = await redis.zscore(revoked, jti);
      if (inRedis !== null) until = Math.max(until ?? 0, Number(inRedis));
    } catch (err) {
      deps.log.warn({ err: String(err) }, 'revocations not read from redis; this daemon\'s copy of postgres\'s taken alone');
    }
    if (until === undefined || until >= expMs) return;
    await keepRevoked(jti, expMs).catch((err) => {
      unwritten.set(jti, Math.max(unwritten.get(jti) ?? 0, expMs));
      keep(jti, expMs);
      deps.log.warn({ err: String(err) }, 'a revocation not extended in postgres yet; retried');
      return redis.zadd(revoked, 'GT', expMs, jti).catch(() => undefined);
    });
  }

  async function verify(token: unknown): Promise<JWTPayload | null> {
    const arrived = monotonicNow();
    if (typeof token !== 'string' || token.length > MAX_TOKEN_CHARS || !signersSpelling(token)) return null;
    let kid: unknown;
    try {
      kid = decodeProtectedHeader(token).kid;
    } catch {
      return null;
    }
    if (typeof kid !== 'string') return null;
    // A kid this daemon does not know: looked for in a load begun after this request came (a key
    // another daemon just made), at most one load per FORCED_LOAD_GAP_MS for every such request.
    // A load that fails (Postgres away) throws: the caller answers 503, not "inactive" for a valid
    // token of a key rotated in on another daemon while this one could not read it.
    const key = await keys.find(kid, arrived);
    if (!key) return null;
    try {
      const { payload } = await jwtVerify(token, key.verify, { algorithms: ['EdDSA'], issuer: deps.issuer, currentDate: new Date(clock.now()) });
      if (typeof payload.jti !== 'string' || typeof payload.sub !== 'string' || typeof payload.aud !== 'string' || typeof payload.exp !== 'number') return null;
      return payload;
    } catch {
      return null;
    }
  }

  const loop = every(KEY_REFRESH_MS, 'token keys', async () => {
    await keys.refresh();
    for (const [jti, until] of unwritten) await deps.revocations.revoke(jti, until).then(() => unwritten.get(jti) === until && unwritten.delete(jti));
    await redis.zremrangebyscore(revoked, '-inf', clock.now());
    await readRevocations();
  }, deps.log);

  return {
    /** The view with its admissionToken, for admitted and succeeded tickets (signed once per ticket and state, and per admission). */
    async withToken(view: TicketView): Promise<TicketView> {
      if (view.state !== 'admitted' && view.state !== 'succeeded') return view;
      // An admitted ticket's token is that admission's (its iat): a ticket admitted again, after its
      // lease ran out, gets a new one, as the first may have expired already.
      const k = view.state === 'admitted' ? `admitted|${view.ticketId}|${view.admittedAt}` : `${view.state}|${view.ticketId}`;
      let token = cache.get(k);
      if (!token) {
        const signed = await sign(view);
        if (!signed) return view;
        await extendIfRevoked(signed.jti, signed.expMs);
        token = signed.token;
        if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value!);
        cache.set(k, token);
      }
      return { ...view, admissionToken: token };
    },
    /** RFC 7662: inactive for anything that is not a valid, unexpired, unrevoked token of ours. */
    async introspect(token: unknown): Promise<Introspection> {
      const p = await verify(token);
      if (!p) return { active: false };
      await firstRead;
      if (durable.has(p.jti!) || (await redis.zscore(revoked, p.jti!)) !== null) return { active: false };
      // (Postgres away then: 503, not `active` on Redis's word alone.)
      if (readAsOf < reconnects) {
        await (rereading ??= readRevocations().finally(() => (rereading = null)));
        if (durable.has(p.jti!)) return { active: false };
      }
      const out: Introspection = { active: true, iss: p.iss, sub: p.sub, aud: p.aud as string, jti: p.jti, iat: p.iat, exp: p.exp, token_type: 'admission' };
      if (p.result !== undefined) out.result = p.result;
      return out;
    },
    /**
     * The item a token names (its `aud`), read without verifying it: what anyone holding the token
     * can read, so a key's scope can be checked on it (routes/access.ts) before anything about
     * the token — valid, expired, revoked — is told. Null for a token that names no one item
     * (garbage, too long, an `aud` that is not a string): it is none of ours, inactive for every key.
     */
    audienceOf(token: string): string | null {
      if (token.length > MAX_TOKEN_CHARS) return null;
      try {
        const { aud } = decodeJwt(token);
        return typeof aud === 'string' ? aud : null;
      } catch {
        return null;
      }
    },
    /**
     * Revokes the admission a valid token of ours names (anything else is already inactive:
     * nothing to do): every token its ticket was given so far expires by `now + lifetime`, the
     * longer of the presented token's and the item's tokenTtlMs now; later ones extend it (above).
     */
    async revoke(token: unknown): Promise<boolean> {
      const p = await verify(token);
      if (!p) return false;
      const item = await deps.queue.items.item(p.aud as string);
      const lifetimeSec = Math.max(typeof p.iat === 'number' ? p.exp! - p.iat : 0, Math.ceil((item?.snap.def.tokenTtlMs ?? 0) / 1000));
      const until = Math.max(p.exp! * 1000, (Math.floor(clock.now() / 1000) + lifetimeSec) * 1000 + REVOCATION_SLACK_MS, clock.now() + REVOCATION_KEEP_MS);
      // Postgres first: a revocation answered 200 outlives whatever Redis loses.
      await keepRevoked(p.jti!, until);
      return true;
    },
    jwks: () => keys.jwks(),
    /** How long (s) a shop may keep this daemon's JWKS (tokens/key-ring.ts); 0: not at all. */
    jwksMaxAgeS: () => keys.jwksMaxAgeS(),
    rotate: () => keys.rotate(),
    stop: async () => {
      await firstRead;
      await loop.stop();
    },
  };
}

export const jtiOf = (secret: string, ticketId: string) => createHmac('sha256', secret).update(`jti|${ticketId}`).digest('base64url').slice(0, 22);

export type Tokens = ReturnType<typeof createTokens>;

/**
 * Whether a compact JWS is spelt as a signer spells it: three parts, each base64url with no
 * padding and no stray bits. The decoder under the verification skips padding and ignores the
 * unused low bits of a part's last character, so the token with `==` after its signature, or its
 * last character's spare bits changed, was active too (a review's fuzzing): one token, many
 * strings, where the contract says anything but the token itself is inactive.
 */
function signersSpelling(token: string): boolean {
  const parts = token.split('.');
  return parts.length === 3 && parts.every((p) => p.length > 0 && Buffer.from(p, 'base64url').toString('base64url') === p);
}
