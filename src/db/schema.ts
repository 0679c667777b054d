import { sql } from 'drizzle-orm';
import { bigint, bigserial, check, index, integer, jsonb, pgTable, primaryKey, text, timestamp, unique, uniqueIndex } from 'drizzle-orm/pg-core';

/** The durable definition of every line; Redis is rebuilt from it after a flush. */
export const items = pgTable('items', {
  itemId: text('item_id').primaryKey(),
  handler: text('handler').notNull(),
  config: jsonb('config').notNull().$type<Record<string, unknown>>(),
  capacity: integer('capacity'),
  abandonAfterMs: integer('abandon_after_ms'),
  opensAt: timestamp('opens_at', { withTimezone: true, mode: 'date' }),
  closesAt: timestamp('closes_at', { withTimezone: true, mode: 'date' }),
  gate: jsonb('gate').notNull().$type<Record<string, unknown>>(),
  /** The waiting page's title and return URL (null: none). */
  waitingRoom: jsonb('waiting_room').$type<{ title: string; returnUrl?: string | null }>(),
  /** Proof of work asked at an invite's join, { difficulty } (null: none). */
  pow: jsonb('pow').$type<{ difficulty: number }>(),
  closedAt: timestamp('closed_at', { withTimezone: true, mode: 'date' }),
  /** { perUser?: {limit, windowMs}, perKey?: {limit, windowMs} } */
  quotas: jsonb('quotas').$type<Record<string, unknown>>(),
  tokenTtlMs: integer('token_ttl_ms'),
  /** { fromMs } */
  preQueue: jsonb('pre_queue').$type<Record<string, unknown>>(),
  /** Sub-lines of the item's line (1–64; fixed once the item exists: ticket ids encode it). */
  lines: integer('lines').notNull().default(1),
  /** Set when the ended item's Redis keys were removed (retention); a start does not restore it. */
  archivedAt: timestamp('archived_at', { withTimezone: true, mode: 'date' }),
  /**
   * The secret that signs the item's ticket ids (hex) and the epoch (ms) their join times count
   * from (drizzle/0016): an item made again after Redis lost it keeps both, so its old ids still
   * verify and are answered from Postgres. Null for an item defined before them, until filled.
   */
  secret: text('secret'),
  epochMs: bigint('epoch_ms', { mode: 'number' }),
  createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
});

/** Every operator change to a gate (and later, every large automatic one). */
export const gateAudit = pgTable(
  'gate_audit',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    itemId: text('item_id').notNull(),
    actor: text('actor').notNull(),
    keyId: text('key_id'),
    before: jsonb('before').$type<Record<string, unknown>>(),
    after: jsonb('after').notNull().$type<Record<string, unknown>>(),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [index('gate_audit_item_time_idx').on(t.itemId, t.createdAt)],
);

/**
 * Postgres's word on an item's stock: `sold` never passes `total` (a CHECK), and every order or
 * coupon claim is written in the same transaction that raises `sold`. Redis counters only filter.
 */
export const itemStock = pgTable(
  'item_stock',
  {
    itemId: text('item_id').primaryKey(),
    total: integer('total').notNull(),
    /** Live orders (reserved + confirmed) or claims. */
    sold: integer('sold').notNull().default(0),
    /** Orders reserved and not yet confirmed (drizzle/0005). */
    reserved: integer('reserved').notNull().default(0),
    /** The stock the operator asked for; `total` = greatest(target, sold), kept so by a trigger (drizzle/0013). */
    target: integer('target'),
  },
  (t) => [
    check('item_stock_sold_within_total', sql`${t.sold} >= 0 and ${t.sold} <= ${t.total}`),
    check('item_stock_reserved_within_sold', sql`${t.reserved} >= 0 and ${t.reserved} <= ${t.sold}`),
  ],
);

/**
 * One row per seckill sale: `reserved` (until `reservedUntil`) → `confirmed` | `released`, or
 * `confirmed` at once for items without reservations. One live (not released) order per user.
 */
export const orders = pgTable(
  'orders',
  {
    orderId: bigserial('order_id', { mode: 'number' }).primaryKey(),
    itemId: text('item_id').notNull(),
    userId: text('user_id').notNull(),
    ticketId: text('ticket_id').notNull().unique('orders_ticket_id_key'),
    payload: jsonb('payload').$type<Record<string, unknown>>(),
    status: text('status').notNull().default('confirmed').$type<'reserved' | 'confirmed' | 'released'>(),
    reservedUntil: timestamp('reserved_until', { withTimezone: true, mode: 'date' }),
    settledAt: timestamp('settled_at', { withTimezone: true, mode: 'date' }),
    /** When a released order's unit went back to the Redis counter. */
    returnedAt: timestamp('returned_at', { withTimezone: true, mode: 'date' }),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex('orders_item_user_live_key').on(t.itemId, t.userId).where(sql`${t.status} <> 'released'`),
    index('orders_reserved_due_idx').on(t.reservedUntil).where(sql`${t.status} = 'reserved'`),
    index('orders_unreturned_idx').on(t.orderId).where(sql`${t.status} = 'released' and ${t.returnedAt} is null`),
    // A cut's look at the item's latest sales (db/sales.ts saleRefs; drizzle/0022).
    index('orders_item_live_order_idx').on(t.itemId, t.orderId).where(sql`${t.status} <> 'released'`),
  ],
);

/** One row per claimed coupon; the per-user limit is a constraint (claim_no is 1..per_user). */
export const couponClaims = pgTable(
  'coupon_claims',
  {
    claimId: bigserial('claim_id', { mode: 'number' }).primaryKey(),
    itemId: text('item_id').notNull(),
    userId: text('user_id').notNull(),
    ticketId: text('ticket_id').notNull().unique('coupon_claims_ticket_id_key'),
    claimNo: integer('claim_no').notNull(),
    perUser: integer('per_user').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [
    unique('coupon_claims_item_user_no_key').on(t.itemId, t.userId, t.claimNo),
    check('coupon_claims_within_per_user', sql`${t.claimNo} >= 1 and ${t.claimNo} <= ${t.perUser}`),
    index('coupon_claims_item_claim_idx').on(t.itemId, t.claimId),
  ],
);

/**
 * A pre-queue draw's size N (drizzle/0025; queue/admissions.ts runDraw), per item and the hash of
 * the seed it was drawn with: recorded before the draw is revealed, so that a draw made again
 * after a Redis rollback is over the N its users were shown.
 */
export const preQueueDraws = pgTable(
  'pre_queue_draws',
  {
    itemId: text('item_id').notNull(),
    seedHash: text('seed_hash').notNull(),
    size: integer('size').notNull(),
    recordedAt: timestamp('recorded_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.itemId, t.seedHash] })],
);

/**
 * Tickets ended without a sale while in doubt (service/doubt-resolver.ts): a trigger on `orders`
 * and `coupon_claims` skips any later insert of theirs (drizzle/0010), so a stalled job cannot sell
 * to a user already told "sold out" or "closed".
 */
export const voidedTickets = pgTable(
  'voided_tickets',
  {
    ticketId: text('ticket_id').primaryKey(),
    itemId: text('item_id').notNull(),
    voidedAt: timestamp('voided_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  // Retention deletes an archived item's rows (db/items-store.ts archive; drizzle/0021).
  (t) => [index('voided_tickets_item_id').on(t.itemId)],
);

/** The terminal outcome of every ticket, with its times: audit and wait-time analytics. */
export const ticketOutcomes = pgTable(
  'ticket_outcomes',
  {
    ticketId: text('ticket_id').primaryKey(),
    itemId: text('item_id').notNull(),
    userId: text('user_id').notNull(),
    status: text('status').notNull(),
    reason: text('reason'),
    result: jsonb('result'),
    joinedAt: timestamp('joined_at', { withTimezone: true, mode: 'date' }).notNull(),
    admittedAt: timestamp('admitted_at', { withTimezone: true, mode: 'date' }),
    finishedAt: timestamp('finished_at', { withTimezone: true, mode: 'date' }).notNull(),
    /** The name of the key that created the ticket. */
    source: text('source'),
  },
  (t) => [
    index('ticket_outcomes_item_finished_idx').on(t.itemId, t.finishedAt),
    // A cut's look at the item's latest succeeded ends (db/outcomes.ts succeededRefs; drizzle/0022).
    index('ticket_outcomes_item_succeeded_idx').on(t.itemId, t.finishedAt).where(sql`${t.status} = 'succeeded'`),
  ],
);

/**
 * Outcome rows the ledger could not insert (Postgres refused them: NUL in a result, say) and done
 * stream entries it could not read, parked so the ledger acknowledges them and goes on. `fields`
 * is the row or entry as JSON text: JSON.stringify keeps NUL and lone surrogates \u-escaped, so it
 * always fits a text column and loses nothing. `ticketId` is null for an entry that was unreadable.
 */
export const ticketOutcomesDead = pgTable(
  'ticket_outcomes_dead',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    itemId: text('item_id').notNull(),
    ticketId: text('ticket_id'),
    fields: text('fields').notNull(),
    error: text('error').notNull(),
    failedAt: timestamp('failed_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [uniqueIndex('ticket_outcomes_dead_ticket_key').on(t.ticketId), index('ticket_outcomes_dead_item_failed_idx').on(t.itemId, t.failedAt)],
);

/** Signing keys of admission tokens, shared by every daemon; the newest one whose signs_from has come signs. */
export const tokenKeys = pgTable('token_keys', {
  kid: text('kid').primaryKey(),
  alg: text('alg').notNull(),
  privateJwk: jsonb('private_jwk').notNull().$type<Record<string, unknown>>(),
  publicJwk: jsonb('public_jwk').notNull().$type<Record<string, unknown>>(),
  createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  /** When a newer key took over; the key stays in the JWKS until its last token expired. */
  retiredAt: timestamp('retired_at', { withTimezone: true, mode: 'date' }),
  /** When it starts signing (drizzle/0019): a rotated-in key is published that long before; null: at once. */
  signsFrom: timestamp('signs_from', { withTimezone: true, mode: 'date' }),
});

/**
 * Revoked admissions by jti (drizzle/0014), kept until the ticket's last token would have expired
 * anyway (a later token pushes expires_at on; revoked_at is when the row was last made longer).
 */
export const revokedTokens = pgTable(
  'revoked_tokens',
  {
    jti: text('jti').primaryKey(),
    expiresAt: timestamp('expires_at', { withTimezone: true, mode: 'date' }).notNull(),
    revokedAt: timestamp('revoked_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [index('revoked_tokens_expires_at').on(t.expiresAt)],
);

/** Operator blocks (drizzle/0015): scope is an item id, or '*' for every item. */
export const userBlocks = pgTable(
  'user_blocks',
  {
    scope: text('scope').notNull(),
    userId: text('user_id').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.scope, t.userId] })],
);

/**
 * Each invite's use (drizzle/0020): the ticket its first use made, until a minute after the
 * invite expires. Redis's copy under the item went with a flush or with retention, while the
 * item's secret, kept here, still verified the invite.
 */
export const inviteUses = pgTable(
  'invite_uses',
  {
    itemId: text('item_id').notNull(),
    nonce: text('nonce').notNull(),
    /** The ticket id, sealed with a key only the invite gives (access/invite-uses.ts). */
    ticketSealed: text('ticket_sealed').notNull(),
    expiresAt: timestamp('expires_at', { withTimezone: true, mode: 'date' }).notNull(),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.itemId, t.nonce] }), index('invite_uses_expires_at').on(t.expiresAt)],
);
