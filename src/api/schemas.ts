import { z } from '@hono/zod-openapi';
import { ticketStates } from '../queue/types.js';
import { refineJson, refineText } from './json-guard.js';

/** Request and response schemas: they validate requests and generate /openapi.json. */
export const ITEM_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

export const ItemId = z
  .string()
  .regex(ITEM_ID, '1-128 of A-Z a-z 0-9 . _ : -, starting with a letter or digit')
  .openapi({ param: { name: 'itemId', in: 'path' }, example: 'sku-10001' });

export const TicketId = z.string().openapi({ param: { name: 'ticketId', in: 'path' } });

/** C0 and C1 control characters and DEL: none in what is shown to users and written to logs as it is. */
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const noControl = (s: string) => !CONTROL.test(s);

/**
 * Checked for NUL and lone surrogates before it is normalised to NFC (normalising would hide
 * neither), then measured in code points: `é` typed as one or two code points is one user.
 */
export const UserId = z
  .string()
  .superRefine(refineText)
  // 1-128 code points as given or in NFC, whichever is shorter: 128 decomposed é are 128, and 100
  // U+0958 (two code points each in NFC) were refused as 200.
  .refine((s) => Math.min([...s].length, [...s.normalize('NFC')].length) <= 128, '1-128 characters')
  .overwrite((s) => s.normalize('NFC'))
  .min(1)
  .refine(noControl, 'no control characters')
  // A path segment cannot name them (a URL's `..` is resolved before it is routed): such a user could be neither blocked nor unblocked.
  .refine((s) => s !== '.' && s !== '..', 'not "." or ".."')
  .openapi({ example: 'u-42', minLength: 1, maxLength: 128, description: '1-128 code points, no control characters, not "." or ".."; compared (and shown) in NFC' });
/** A user id as the daemon shows it (it was checked and normalised at the door). */
const UserIdView = z.string().openapi({ minLength: 1, maxLength: 128 });

/**
 * An ISO time with an offset, whose UTC instant lies in the years 0001–9999: Postgres has no year
 * 0 and JavaScript writes a year past 9999 as `+010000`, so a time outside them (also one an
 * offset carries over the edge, `0001-01-01T00:00:00+01:00`) answered 500 from the item's row.
 */
const isoTime = z.iso
  .datetime({ offset: true })
  .refine((s) => {
    const year = new Date(s).getUTCFullYear();
    return year >= 1 && year <= 9999;
  }, 'a time in the years 0001-9999 (UTC)')
  .openapi({ description: 'ISO-8601 with an offset; in UTC, within the years 0001–9999' });

export const GateMode = z.enum(['auto', 'manual', 'closed']);
const GateCeiling = z.enum(['rate', 'maxInFlight']);
export const GatePatch = z
  .object({
    mode: GateMode.optional(),
    // (Below one ticket per 100 s a pace means nothing a user would wait for.) `null` is 400, as
    // the contract says: a ceiling is removed by naming it in `clear`.
    rate: z.number().min(0.01).max(1e6).optional(),
    maxInFlight: z.number().int().min(1).max(1e6).optional(),
    clear: z.array(GateCeiling).max(2).optional().openapi({ description: 'ceilings to remove (no rate cap, no in-flight cap)', example: ['maxInFlight'] }),
  })
  .strict()
  .superRefine(refineJson)
  .superRefine((g, ctx) => {
    for (const f of g.clear ?? []) if (g[f] !== undefined) ctx.addIssue({ code: 'custom', path: ['clear'], message: `${f} is both given and cleared` });
  })
  .openapi('GatePatch', { example: { mode: 'manual', rate: 50, maxInFlight: 20 } });

/** A gate patch as the catalog takes it: `clear`'s ceilings as none (null). */
export function gateChange(p: z.infer<typeof GatePatch>): { mode?: z.infer<typeof GateMode>; rate?: number | null; maxInFlight?: number | null } {
  const { clear, ...rest } = p;
  const out: { mode?: z.infer<typeof GateMode>; rate?: number | null; maxInFlight?: number | null } = { ...rest };
  for (const f of clear ?? []) out[f] = null;
  return out;
}

export const GateView = z
  .object({
    mode: GateMode,
    rate: z.number().nullable(),
    maxInFlight: z.number().nullable(),
    effective: z.object({ rate: z.number().nullable(), maxInFlight: z.number().nullable() }).openapi({ description: 'what is being enforced now' }),
    controller: z
      .object({
        limit: z.number(),
        rate: z.number().nullable(),
        baseMs: z.number().int().nullable(),
        p50Ms: z.number().int().nullable(),
        p99Ms: z.number().int().nullable(),
        leader: z.string().nullable(),
        probing: z.boolean(),
      })
      .nullable()
      .optional()
      .openapi({ description: "the adaptive controller's view: obeyed in auto, shown in shadow in manual; null before it has run" }),
  })
  .openapi('Gate');

const Quota = z.object({ limit: z.number().int().min(1).max(1e9), windowMs: z.number().int().min(100).max(7 * 24 * 3600 * 1000) }).strict();
const Quotas = z
  .object({ perUser: Quota.optional(), perKey: Quota.optional() })
  .strict()
  .openapi('Quotas', { description: 'join quotas; every attempt counts (refused and repeated ones too), across all daemons', example: { perUser: { limit: 5, windowMs: 60000 } } });
/** What the waiting page (/wait/{ticketId}) shows, and where it sends an admitted user. */
export const WaitingRoom = z
  .object({
    title: z.string().min(1).max(200).superRefine(refineText),
    returnUrl: z
      .string()
      .max(2000)
      // Looked at before the URL is parsed: the parser takes C0/C1 controls as they are (a page
      // link made of them), and drops tab, CR and LF — an answer of 201 that stored another URL
      // than the one sent (a review's fuzzing).
      .refine(noControl, 'no control characters')
      .pipe(z.url({ protocol: /^https?$/ }))
      .nullable()
      .optional()
      .openapi({ format: 'uri', maxLength: 2000, description: 'on admitted/succeeded the page sends the user here, with ?admission=<admissionToken> when the ticket carries one' }),
  })
  .strict()
  .openapi('WaitingRoom', { example: { title: 'Phone X launch', returnUrl: 'https://shop.example/checkout' } });

/** Proof of work asked of a user joining with an invite: SHA-256(challenge ‖ nonce) with `difficulty` leading zero bits. */
export const Pow = z.object({ difficulty: z.number().int().min(1).max(32) }).strict().openapi('Pow');

export const ItemInput = z
  .object({
    handler: z.string().min(1).max(64).openapi({ description: 'seckill, coupon, webhook, external, or a handler the deployment registered' }),
    // Documented per handler (HandlerConfig, built in openapi.ts); checked by the handler's own schema.
    config: z.record(z.string(), z.unknown()).openapi('HandlerConfig').optional(),
    capacity: z.number().int().min(1).max(1e9).nullable().optional(),
    // At least 3 s: a waiting ticket is told to poll every second at the least, and a poll reaches
    // Redis within a second (batched): under 3 s a holder polling as told was expired (3 of 8 at 1 s).
    abandonAfterMs: z.number().int().min(3000).max(7 * 24 * 3600 * 1000).nullable().optional(),
    opensAt: isoTime.nullable().optional(),
    closesAt: isoTime.nullable().optional(),
    gate: GatePatch.optional(),
    quotas: Quotas.nullable().optional(),
    tokenTtlMs: z.number().int().min(1000).max(24 * 3600 * 1000).nullable().optional().openapi({ description: 'lifetime of admission tokens (default 600000)' }),
    preQueue: z
      .object({ fromMs: z.number().int().min(1000).max(7 * 24 * 3600 * 1000) })
      .strict()
      .nullable()
      .optional()
      .openapi({ description: 'accept joins from opensAt − fromMs into a pre-queue, shuffled into the line at opensAt (needs opensAt)' }),
    waitingRoom: WaitingRoom.nullable().optional(),
    pow: Pow.nullable().optional(),
    lines: z
      .number()
      .int()
      .min(1)
      .max(64)
      .optional()
      .openapi({ description: "a very hot item's line is split into that many sub-lines on different hash slots (so over several masters). Positions stay distinct and never rise; admission follows join order. Fixed once the item exists; default 1" }),
  })
  .strict()
  .superRefine(refineJson)
  .openapi('ItemInput', { example: { handler: 'seckill', config: { stock: 1000 }, capacity: 1200, opensAt: '2026-12-12T02:00:00Z', gate: { mode: 'auto' } } });

const Counts = z.object(Object.fromEntries(['waiting', 'admitted', 'succeeded', 'rejected', 'failed', 'cancelled', 'expired'].map((k) => [k, z.number().int()])));

export const ItemView = z
  .object({
    itemId: z.string(),
    handler: z.string(),
    config: z.record(z.string(), z.unknown()).openapi({ description: "The handler's config with its defaults filled in; secrets left out (webhook: no secret, header values shown as [redacted])" }),
    capacity: z.number().nullable(),
    abandonAfterMs: z.number().nullable(),
    opensAt: z.string().nullable(),
    closesAt: z.string().nullable(),
    state: z.enum(['scheduled', 'open', 'paused', 'held', 'sold_out', 'closed']),
    gate: GateView,
    counts: Counts,
    remaining: z.number().nullable(),
    quotas: Quotas.nullable(),
    tokenTtlMs: z.number().int(),
    preQueue: z
      .object({ fromMs: z.number().int().nullable(), seedHash: z.string(), seed: z.string().optional(), size: z.number().int().optional(), drawnAt: z.string().nullable().optional() })
      .nullable()
      .openapi({ description: 'seedHash = hex SHA-256 of the seed, shown before the draw; seed and size after it (docs/design-notes.md, "The pre-queue draw"); once drawn it stays, fromMs null if the pre-queue was removed since' }),
    waitingRoom: WaitingRoom.nullable(),
    pow: Pow.nullable(),
    lines: z.number().int(),
  })
  .openapi('Item');

export const ItemStatus = z
  .object({
    itemId: z.string(),
    state: ItemView.shape.state,
    opensAt: z.string().nullable(),
    closesAt: z.string().nullable(),
    remaining: z.number().nullable().openapi({ description: 'stock or coupons left; null where the handler has no such notion' }),
    waiting: z.number().int().openapi({ description: 'tickets waiting in the line' }),
  })
  .openapi('ItemStatus', { example: { itemId: 'sku-10001', state: 'open', opensAt: '2026-12-12T02:00:00.000Z', closesAt: null, remaining: 843, waiting: 812 } });

export const JoinInput = z
  .object({ userId: UserId, payload: z.record(z.string(), z.unknown()).optional() })
  .strict()
  .superRefine(refineJson)
  .openapi('JoinInput', { example: { userId: 'u-42', payload: { addressId: 7 } } });

export const Outcome = z.object({
  status: z.enum(['succeeded', 'rejected', 'failed', 'cancelled', 'expired']),
  result: z.unknown().optional().openapi({
    description:
      "The handler's result: seckill { orderId }, coupon { claimId }, webhook the downstream's JSON answer (a body that is not JSON: its first 1000 characters as a string), external what the worker wrote.",
    example: { orderId: '01JF4Z7Q3X' },
  }),
  reason: z.string().optional().openapi({ description: 'a code for rejected, failed, cancelled and expired tickets, e.g. sold_out, already_purchased, http_409, timeout' }),
});

export const TicketView = z
  .object({
    ticketId: z.string(),
    itemId: z.string(),
    userId: UserIdView,
    state: z.enum(ticketStates),
    position: z.number().int().nullable().optional().openapi({ description: 'null for a pre-queued ticket until the draw' }),
    drawAt: z.string().optional().openapi({ description: 'when a pre-queued ticket gets its place (opensAt)' }),
    etaMs: z.number().int().optional(),
    pollAfterMs: z.number().int().optional(),
    reason: z.enum(['not_open', 'paused', 'awaiting_returns']).optional().openapi({ description: 'Why a waiting ticket is not moving (absent while the line moves).' }),
    returnsFrom: z
      .enum(['reservations', 'sales'])
      .optional()
      .openapi({ description: 'With reason awaiting_returns: reservations (units reserved and not yet paid for may come back) or sales (no reservations: the last units are being sold to tickets ahead, and come back if a sale fails).' }),
    outcome: Outcome.optional(),
    createdAt: z.string(),
    updatedAt: z.string(),
    admittedAt: z.string().optional(),
    source: z.string().optional().openapi({ description: 'the name of the key that created the ticket (shown to operators only)' }),
    admissionToken: z.string().optional().openapi({ description: 'compact JWS (EdDSA) for admitted and succeeded tickets; verify with /.well-known/jwks.json' }),
  })
  .openapi('Ticket');

export const PullInput = z
  .object({ max: z.number().int().min(1).max(1000).default(1), leaseMs: z.number().int().min(1000).max(600_000).default(30_000) })
  .strict()
  .superRefine(refineJson)
  .openapi('PullInput');

export const PulledTicket = z.object({
  ticketId: z.string(),
  userId: UserIdView,
  payload: z.record(z.string(), z.unknown()).nullable(),
  position: z.number().int(),
  leaseId: z.string(),
  leaseExpiresAt: z.string(),
});

// Shown to the ticket's user and to operators as it is: a code, so no control characters (a tab
// or an escape sequence in a log line or a console cell), as in a user id.
const Reason = z
  .string()
  .min(1)
  .max(128)
  .refine(noControl, 'no control characters')
  .openapi({ minLength: 1, maxLength: 128, description: 'a code (1-128 characters, no control characters), e.g. sold_out' });
export const OutcomeInput = z
  .discriminatedUnion('status', [
    z.object({ leaseId: z.string().min(1).max(256), status: z.literal('succeeded'), result: z.unknown().optional() }).strict(),
    z.object({ leaseId: z.string().min(1).max(256), status: z.literal('rejected'), reason: Reason, result: z.unknown().optional() }).strict(),
    z.object({ leaseId: z.string().min(1).max(256), status: z.literal('failed'), reason: Reason, retry: z.boolean().optional(), result: z.unknown().optional() }).strict(),
  ])
  .superRefine(refineJson)
  .openapi('OutcomeInput', { example: { leaseId: '…', status: 'succeeded', result: { orderId: 'A1' } } });

export const Health = z.object({ status: z.literal('ok') }).openapi('Health');
export const Readiness = z
  .object({ status: z.enum(['ready', 'unavailable']), checks: z.object({ redis: z.enum(['ok', 'fail']), postgres: z.enum(['ok', 'fail']) }) })
  .openapi('Readiness');

export const ErrorBody = z
  .object({ error: z.object({ code: z.string(), message: z.string(), details: z.record(z.string(), z.unknown()).optional() }) })
  .openapi('Error');

/** An order id as the ticket's result gives it: decimal digits (a bigint in Postgres). */
export const OrderId = z
  .string()
  .regex(/^[1-9][0-9]{0,17}$/, 'an order id is 1-18 decimal digits, the first not 0')
  .openapi({ param: { name: 'orderId', in: 'path' }, example: '1042' });

export const OrderSettled = z
  .object({ orderId: z.string(), status: z.enum(['confirmed', 'released']) })
  .openapi('OrderSettled', { example: { orderId: '1042', status: 'confirmed' } });
